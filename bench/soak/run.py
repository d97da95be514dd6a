#!/usr/bin/env python3
"""The soak phases behind bench/soak.sh: starts the release server in demo mode on loopback,
drives it with wrk and bench/soak/hold.py, samples its memory and file descriptors, and
prints a markdown table. Exit status 1 when a goal is missed or a phase failed to run.

Run it through bench/soak.sh (which installs wrk, raises the fd limit and builds the
binary). Knobs (environment):

  SOAK_REQUESTS=1000000        keep-alive requests (wrk)
  SOAK_CLOSE_REQUESTS=100000   requests over new connections (wrk, Connection: close)
  SOAK_WRK_CONNECTIONS=64      SOAK_WRK_THREADS=2
  SOAK_WRK_MAX_SECONDS=420     SOAK_CLOSE_MAX_SECONDS=150   (caps on each wrk run)
  SOAK_CONNECTIONS=10000       idle keep-alive connections held
  SOAK_TUNNELS=1000            idle WebSocket tunnels held
  SOAK_HOLD=20                 seconds connections and tunnels are held
  SOAK_POOL_IDLE=5             the server's --proxy-pool-idle-timeout (seconds)
  SOAK_SETTLE_MAX=15           longest wait for figures to return after a phase (seconds)
  SOAK_ROUNDS=2                rounds of phases 2 and 3b on the same server (leak or reuse?)
  SOAK_PHASES=1,2,3            which phases to run (3 is 3a and 3b)
  SOAK_SERVER_ENV=             extra server environment, e.g.
                               "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"

Everything here talks to 127.0.0.0/8 only.
"""

import ipaddress
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ECHO_PATH = "/api/v1/namespaces/demo/services/echo:http/proxy/whoami"
WS_PATH = "/api/v1/namespaces/demo/services/web:http/proxy/ws"
GOAL_RETURN = 0.10  # after a phase, RSS and fds back to at most 10 % above its start
GOAL_TUNNEL_KIB = 64.0
GOAL_KEEPALIVE_KIB = 16.0


def knob(name, default):
    return type(default)(os.environ.get(name, default))


REQUESTS = knob("SOAK_REQUESTS", 1_000_000)
CLOSE_REQUESTS = knob("SOAK_CLOSE_REQUESTS", 100_000)
WRK_CONNECTIONS = knob("SOAK_WRK_CONNECTIONS", 64)
WRK_THREADS = knob("SOAK_WRK_THREADS", 2)
WRK_MAX_SECONDS = knob("SOAK_WRK_MAX_SECONDS", 420)
CLOSE_MAX_SECONDS = knob("SOAK_CLOSE_MAX_SECONDS", 150)
CONNECTIONS = knob("SOAK_CONNECTIONS", 10_000)
TUNNELS = knob("SOAK_TUNNELS", 1_000)
HOLD = knob("SOAK_HOLD", 20)
POOL_IDLE = knob("SOAK_POOL_IDLE", 5)
SETTLE_MAX = knob("SOAK_SETTLE_MAX", 15)
ROUNDS = knob("SOAK_ROUNDS", 2)
PHASES = {p.strip() for p in knob("SOAK_PHASES", "1,2,3").split(",")}
SERVER_ENV = dict(kv.split("=", 1) for kv in knob("SOAK_SERVER_ENV", "").split() if "=" in kv)

# Direct connections only: never an HTTP proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(*args):
    print("[soak]", *args, file=sys.stderr, flush=True)


def figures(pid):
    """(VmRSS KiB, open fds) of pid."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """Background sampler: peak RSS and fds every 0.5 s while running."""

    def __init__(self, pid, interval=0.5, max_seconds=900):
        self.pid, self.interval, self.max_seconds = pid, interval, max_seconds
        self.peak_rss = self.peak_fds = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                rss, fds = figures(self.pid)
            except (OSError, StopIteration):
                return
            self.peak_rss, self.peak_fds = max(self.peak_rss, rss), max(self.peak_fds, fds)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_prefixes():
    """Loopback /24 prefixes that already have a TCP listener (to pick a free demo network)."""
    try:
        out = subprocess.run(["ss", "-Htln"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {m.group(1) for m in re.finditer(r"(127\.\d+\.\d+)\.\d+:\d+", out)}


class Server:
    """The release binary in demo mode on a free loopback port and a free demo /24."""

    def __init__(self, binary, workdir, pidfile, extra_flags):
        self.binary, self.workdir, self.pidfile = binary, workdir, pidfile
        self.extra_flags = extra_flags
        self.proc = None
        self.port = None
        self.network = None

    def start(self, label):
        busy = listening_prefixes()
        for attempt in range(8):
            prefix = f"127.{random.randint(100, 199)}.{random.randint(1, 254)}"
            if prefix in busy:
                continue
            self.network = prefix
            self.port = free_port()
            cmd = [
                self.binary,
                "--listen", f"127.0.0.1:{self.port}",
                "--demo-network", f"{prefix}.0/24",
                "--proxy-pool-idle-timeout", str(POOL_IDLE),
            ] + self.extra_flags
            logfile = open(os.path.join(self.workdir, f"server-{label}.log"), "w")
            env = dict(os.environ, RUST_LOG=os.environ.get("SOAK_RUST_LOG", "warn"), **SERVER_ENV)
            self.proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env)
            with open(self.pidfile, "w") as f:
                f.write(f"{self.proc.pid}\n")
            env_text = " ".join(f"{k}={v}" for k, v in SERVER_ENV.items())
            log(f"server ({label}): pid {self.proc.pid}: {env_text} {' '.join(cmd)}".replace(":  ", ": "))
            if self._wait_ready():
                return
            self.stop()
            log(f"server did not start (attempt {attempt + 1}); see {logfile.name}")
        raise RuntimeError("the server did not start")

    def _wait_ready(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.get("/healthz").startswith(b"ok"):
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def get(self, path):
        with OPENER.open(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return r.read()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def figures(self):
        return figures(self.proc.pid)

    def proxy_codes(self):
        """kube_bastion_requests_total for subresource proxy, summed by code."""
        codes = {}
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith("kube_bastion_requests_total{") and 'subresource="proxy"' in line:
                code = re.search(r'code="(\d+)"', line).group(1)
                codes[code] = codes.get(code, 0) + int(float(line.rsplit(" ", 1)[1]))
        return codes

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if os.path.exists(self.pidfile):
            os.remove(self.pidfile)


def settle(server, start, minimum=3.0):
    """Waits (at least `minimum`, at most SETTLE_MAX seconds) until RSS and fds are within
    the goal of `start`; returns ((rss, fds), seconds waited)."""
    t0 = time.monotonic()
    time.sleep(minimum)
    while True:
        now = server.figures()
        waited = time.monotonic() - t0
        if within(now[0], start[0]) and within(now[1], start[1]) or waited >= SETTLE_MAX:
            return now, round(waited, 1)
        time.sleep(1)


def within(value, start):
    # Back to the start or below: memory returned below the phase's start (its warm-up
    # left some behind) is not retention.
    return value <= start * (1 + GOAL_RETURN)


def diff_codes(after, before):
    return {c: n - before.get(c, 0) for c, n in after.items() if n - before.get(c, 0)}


def run_wrk(server, total, max_seconds, close, label):
    per_thread = math.ceil(total / WRK_THREADS) + math.ceil(WRK_CONNECTIONS / WRK_THREADS)
    cmd = ["wrk", "-t", str(WRK_THREADS), "-c", str(WRK_CONNECTIONS), "-d", f"{max_seconds}s",
           "--timeout", "10s", "-s", os.path.join(HERE, "count.lua")]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(server.url(ECHO_PATH))
    env = dict(os.environ, SOAK_WRK_LIMIT=str(per_thread))
    log(f"{label}: {' '.join(cmd)} (each thread stops after {per_thread} requests)")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # A watchdog: wrk ends by itself after -d; this only guards against a stuck wrk.
    watchdog = threading.Timer(max_seconds + 60, proc.kill)
    watchdog.start()
    done_threads, json_line = 0, None
    try:
        for line in proc.stdout:
            if line.startswith("SOAK_THREAD_DONE"):
                done_threads += 1
                if done_threads == WRK_THREADS:
                    proc.send_signal(signal.SIGINT)  # ends wrk now, with the real duration
                continue
            sys.stderr.write(line)
            if line.startswith("SOAK_JSON "):
                json_line = line
        rc = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0 or json_line is None:
        raise RuntimeError(f"wrk failed ({rc}): {proc.stderr.read().strip()[:300]}")
    return json.loads(json_line[len("SOAK_JSON "):])


def run_hold(mode, host, port, path, count, pid, label, hold=None):
    cmd = [sys.executable, os.path.join(HERE, "hold.py"), mode, "--host", host, "--port",
           str(port), "--path", path, "--count", str(count), "--hold", str(hold or HOLD)]
    if pid:
        cmd += ["--pid", str(pid)]
    log(f"{label}: {' '.join(cmd)}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=(hold or HOLD) + 300)
    sys.stderr.write(out.stderr)
    if not out.stdout.strip():
        raise RuntimeError(f"hold.py printed nothing (exit {out.returncode})")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["exit"] = out.returncode
    log(f"{label}: opened {result['opened']}/{count} in {result['open_seconds']} s, "
        f"closed by server {result['closed_by_server_during_hold']}, "
        f"alive {result['verified_alive']}/{result['verified']}, errors {result['errors']}")
    return result


def wrk_warmup(server):
    subprocess.run(["wrk", "-t", "1", "-c", str(WRK_CONNECTIONS), "-d", "2s", server.url(ECHO_PATH)],
                   capture_output=True, timeout=60)


def quiet_start(server):
    """Figures once the warm-up's pooled backend connections expired."""
    time.sleep(POOL_IDLE + 2)
    return server.figures()


def phase_wrk(server, results):
    wrk_warmup(server)
    start = quiet_start(server)
    for label, total, cap, close in [
        ("1a keep-alive", REQUESTS, WRK_MAX_SECONDS, False),
        ("1b new connection per request", CLOSE_REQUESTS, CLOSE_MAX_SECONDS, True),
    ]:
        before = server.figures()
        codes_before = server.proxy_codes()
        with Sampler(server.proc.pid) as s:
            w = run_wrk(server, total, cap, close, label)
        codes = diff_codes(server.proxy_codes(), codes_before)
        after, waited = settle(server, start)
        rate = w["requests"] / (w["duration_us"] / 1e6)
        errors = w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"]
        # 499: requests wrk abandoned in flight when its threads stopped (at most one per
        # connection); anything else outside 2xx is an error.
        abandoned = codes.get("499", 0)
        non2xx = sum(n for c, n in codes.items() if not c.startswith("2") and c != "499")
        checks = {
            f"{total:,} requests": w["requests"] >= total,
            "no socket errors": errors == 0,
            "no non-2xx": w["http_errors"] == 0 and non2xx == 0 and abandoned <= WRK_CONNECTIONS,
        }
        results.append({
            "phase": label, "start": start, "before": before, "peak": (s.peak_rss, s.peak_fds),
            "after": after, "settled_s": waited,
            "load": f"{w['requests']:,} req in {w['duration_us'] / 1e6:.1f} s = {rate:,.0f} req/s; "
                    f"p50 {w['p50_us'] / 1000:.2f} ms, p99 {w['p99_us'] / 1000:.2f} ms; "
                    f"socket errors {errors} (connect {w['connect_errors']}, read {w['read_errors']}, "
                    f"write {w['write_errors']}, timeout {w['timeouts']}); non-2xx {non2xx} "
                    f"(wrk >=400: {w['http_errors']}); the server counted "
                    + ", ".join(f"{n:,} × {c}" for c, n in sorted(codes.items()))
                    + (f" ({abandoned} × 499: in flight when wrk stopped)" if abandoned else ""),
            "checks": checks,
        })


def phase_hold(server, results, label, mode, host, port, path, count, rounds=1):
    """Holds `count` connections, `rounds` times on the same server. The memory per
    connection comes from the first round (a fresh heap); a second round shows whether what
    the first left behind is reused (allocator retention) or grows again (a leak)."""
    # Warm up with a small batch of the same kind (lazy initialisation, thread caches).
    run_hold(mode, host, port, path, min(count, 200), None, f"{label} warm-up", hold=1)
    start = quiet_start(server)
    per_kib = None
    before = start
    for round_no in range(1, rounds + 1):
        name = label if rounds == 1 else f"{label}, round {round_no}"
        with Sampler(server.proc.pid) as s:
            h = run_hold(mode, host, port, path, count, server.proc.pid, name)
        after, waited = settle(server, start)
        during = (h["rss_kib_during"], h["fds_during"])
        if round_no == 1 and during[0]:
            per_kib = (during[0] - start[0]) / count
        results.append({
            "phase": name, "start": start, "before": before, "during": during,
            "peak": (s.peak_rss, s.peak_fds), "after": after, "settled_s": waited,
            "round": round_no,
            "load": f"{h['opened']:,}/{count:,} opened in {h['open_seconds']} s, held {HOLD} s; "
                    f"closed by the server while held: {h['closed_by_server_during_hold']}; "
                    f"used again after the hold: {h['verified_alive']}/{h['verified']} answered; "
                    f"errors {h['errors'] or 0}",
            "checks": {
                "all opened": h["opened"] == count,
                "none closed while held": h["closed_by_server_during_hold"] == 0,
                "alive after the hold": h["verified_alive"] == h["verified"],
            },
        })
        before = after
    return per_kib


def kib(v):
    return f"{v / 1024:.1f} MiB" if v >= 1024 else f"{v} KiB"


def table(results, goals):
    lines = [
        "| phase | load | RSS before | RSS during (peak) | RSS after | fds before | fds during (peak) | fds after | settled after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        during = r.get("during")
        rss_during = f"{kib(during[0])} ({kib(r['peak'][0])})" if during else f"peak {kib(r['peak'][0])}"
        fds_during = f"{during[1]} ({r['peak'][1]})" if during else f"peak {r['peak'][1]}"
        lines.append(
            f"| {r['phase']} | {r['load']} | {kib(r['before'][0])} | {rss_during} | {kib(r['after'][0])} "
            f"| {r['before'][1]} | {fds_during} | {r['after'][1]} | {r['settled_s']} s |"
        )
    lines += ["", "| goal | measured | result |", "|---|---|---|"]
    for name, measured, ok in goals:
        verdict = "info" if ok is None else "met" if ok else "**MISSED**"
        lines.append(f"| {name} | {measured} | {verdict} |")
    return "\n".join(lines)


def main():
    binary, workdir, pidfile = sys.argv[1:4]
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    extra = []
    # Flags added while this script was written: pass them only when the binary has them.
    for flag, value in [
        ("--max-connections", str(max(20000, 2 * CONNECTIONS))),
        ("--max-requests-inflight", str(max(20000, 2 * CONNECTIONS))),
        ("--idle-connection-timeout", str(max(90, 4 * HOLD))),
        ("--connection-setup-timeout", "10"),
    ]:
        if re.search(rf"(^|\s){re.escape(flag)}[\s=]", help_text):
            extra += [flag, value]
    log("optional server flags present:", extra or "none")

    results, goals, failures = [], [], []
    server = Server(binary, workdir, pidfile, extra)

    def guarded(name, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a phase that did not run is a failure
            failures.append(f"{name}: {type(e).__name__}: {e}")
            log(f"phase {name} failed: {e}")
        finally:
            server.stop()

    def phase1():
        server.start("phase1")
        answer = server.get(ECHO_PATH)
        if not answer.startswith(b"echo-"):
            raise RuntimeError(f"unexpected answer from {ECHO_PATH}: {answer[:80]!r}")
        phase_wrk(server, results)

    per = {}

    def phase2():
        server.start("phase2")
        per["keepalive"] = phase_hold(server, results, "2 idle keep-alive connections", "http",
                                      "127.0.0.1", server.port, ECHO_PATH, CONNECTIONS,
                                      rounds=ROUNDS)

    def phase3a():
        server.start("phase3a")
        host = f"{server.network}.21"
        ipaddress.ip_address(host)  # a loopback literal
        per["backend"] = phase_hold(server, results, "3a WebSockets straight to the demo backend",
                                    "ws", host, 8080, "/ws", TUNNELS)

    def phase3b():
        server.start("phase3b")
        per["tunnel"] = phase_hold(server, results, "3b idle WebSocket tunnels through the proxy",
                                   "ws", "127.0.0.1", server.port, WS_PATH, TUNNELS, rounds=ROUNDS)

    if "1" in PHASES:
        guarded("1 wrk", phase1)
    if "2" in PHASES:
        guarded("2 keep-alive", phase2)
    if "3" in PHASES:
        guarded("3a backend WebSockets", phase3a)
        guarded("3b tunnels", phase3b)

    infos = []
    for r in results:
        if r.get("round", 1) > 1:
            b, a = r["before"], r["after"]
            infos.append((f"{r['phase']}: RSS after vs the previous round's after",
                          f"{kib(b[0])} → {kib(a[0])} ({(a[0] - b[0]) / b[0]:+.1%}); flat: "
                          "the allocator reuses what it kept; growing: a leak or allocator "
                          "fragmentation (rerun with SOAK_SERVER_ENV=\"LD_PRELOAD=<libjemalloc."
                          "so.2> MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\" "
                          "to tell)",
                          None))
    for r in results:
        start, after = r["start"], r["after"]
        goals.append((f"{r['phase']}: RSS after at most 10 % above start",
                      f"{kib(start[0])} → {kib(after[0])} ({(after[0] - start[0]) / start[0]:+.1%})",
                      within(after[0], start[0])))
        goals.append((f"{r['phase']}: fds after at most 10 % above start",
                      f"{start[1]} → {after[1]}", within(after[1], start[1])))
        for name, ok in r["checks"].items():
            goals.append((f"{r['phase']}: {name}", "yes" if ok else "no", ok))
    if per.get("keepalive") is not None:
        v = per["keepalive"]
        goals.append(("memory per idle keep-alive connection < 16 KiB",
                      f"{v:.1f} KiB (ΔRSS / {CONNECTIONS:,})", v < GOAL_KEEPALIVE_KIB))
    if per.get("tunnel") is not None:
        v = per["tunnel"]
        b = per.get("backend")
        if b is not None:
            goals.append(("memory per idle tunnel < 64 KiB (proxy's share: tunnel − backend)",
                          f"{v - b:.1f} KiB ({v:.1f} KiB per tunnel incl. the in-process demo "
                          f"backend, which alone costs {b:.1f} KiB per WebSocket)",
                          v - b < GOAL_TUNNEL_KIB))
        else:
            goals.append(("memory per idle tunnel < 64 KiB (incl. the in-process backend)",
                          f"{v:.1f} KiB", v < GOAL_TUNNEL_KIB))
    for f in failures:
        goals.append((f"phase ran: {f.split(':')[0]}", f, False))

    print(table(results, goals + infos))
    if failures:
        print("\nphases that failed to run:\n" + "\n".join(f"- {f}" for f in failures))
    missed = [g for g in goals if not g[2]]
    print(f"\n{len(goals) - len(missed)} of {len(goals)} goals and checks met.")
    return 1 if missed else 0


def on_term(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    sys.exit(main())
