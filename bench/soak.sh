#!/usr/bin/env bash
# Soak test of the kube-bastion server (release build, demo mode, loopback only):
#   1. 1,000,000 proxied requests over keep-alive (wrk), then 100,000 over a new
#      connection each (wrk, Connection: close);
#   2. 10,000 idle keep-alive client connections held open;
#   3. 1,000 idle WebSocket tunnels held open (and, to separate the proxy's share, 1,000
#      WebSockets straight to the in-process demo backend).
# Each phase reports the server's RSS and open fds before, during (peak, sampled every
# 0.5 s) and after; a markdown table at the end. Exits non-zero when a goal is missed or a
# phase failed to run. Phases 1, 2, 3a and 3b each run on a fresh server (so one phase's
# freed heap does not hide the next one's cost; 2 and 3b run twice on theirs, to tell a
# leak from memory the allocator keeps), started with --proxy-pool-idle-timeout 5 so idle
# pooled backend connections are gone when "after" is measured. Only one demo server runs
# at a time, on a random free 127.x.y.0/24 demo network.
#
# Usage: bench/soak.sh            (from any directory)
# Knobs: SOAK_* variables, see bench/soak/run.py (e.g. SOAK_REQUESTS=200000 for a quick run).
# Needs: wrk (installed with apt-get when missing, as root or through sudo), Python 3 (stdlib
# only), cargo, iproute2's ss (optional: picks a free demo network).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kube-bastion-soak.XXXXXX")
pidfile="$work/server.pid"

say() { printf '[soak] %s\n' "$*" >&2; }

runner=
cleanup() {
  if [[ -n $runner ]] && kill -0 "$runner" 2>/dev/null; then
    kill -TERM "$runner" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
  fi
  # The server this script started, if still running (run.py stops it too).
  if [[ -s $pidfile ]]; then
    local pid
    pid=$(<"$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
      && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */kube-bastion* ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  say "logs kept in $work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root to run: $*"; return 1
  fi
}

if ! command -v wrk >/dev/null; then
  say "installing wrk"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if ! command -v python3 >/dev/null; then
  say "installing python3"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi

# File descriptors: 10,000 held connections need as many on each side. Raise the soft
# limit to 65536, or as far as the hard limit allows; children (server, clients) inherit it.
want=65536
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt $want ]]; then want=$hard; fi
ulimit -n "$want" || true
say "open files limit: $(ulimit -n) (hard $(ulimit -Hn))"
need=$(( ${SOAK_CONNECTIONS:-10000} + 2000 ))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $need ]]; then
  say "the open files limit $(ulimit -n) is below the $need this soak needs"
  exit 1
fi

say "building the release binary"
(cd "$repo" && cargo build --release --locked -p kube-bastion-server)
bin="$repo/target/release/kube-bastion"

say "machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1); $(date -u +%FT%TZ)"
status=0
# In the background so that a signal reaches the trap at once (bash defers traps while a
# foreground command runs); run.py stops its server on SIGTERM.
python3 "$here/soak/run.py" "$bin" "$work" "$pidfile" >"$work/table.md" &
runner=$!
wait "$runner" || status=$?
runner=
cat "$work/table.md"
exit "$status"
