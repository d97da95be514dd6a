#!/usr/bin/env python3
"""Opens many connections to a loopback server, makes each a real one, holds them idle,
samples the server's memory and file descriptors while they are held, then closes them.

Modes:
  http  one keep-alive HTTP/1.1 request per connection (GET PATH), then idle;
  ws    one WebSocket upgrade per connection (GET PATH, expects 101 and a first message
        from the server), then idle.

Before closing, a sample of the connections is used again (a second request, or a text
message expecting the demo app's "echo: ..." reply) to show they were still alive.

Prints one JSON object on stdout. Python 3 standard library only; loopback addresses only.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import statistics
import sys
import time

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def proc_figures(pid):
    """(VmRSS KiB, open fds) of `pid`, or (None, None) when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds
    except (OSError, StopIteration):
        return None, None


def check_loopback(host):
    import ipaddress

    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"hold.py: {host} is not a loopback address; refusing")


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_body(reader, headers):
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return b""


def ws_frame(opcode, payload):
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_read(reader):
    """(opcode, payload) of one unmasked server frame."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    if b1 & 0x80:
        await reader.readexactly(4)
    return b0 & 0x0F, await reader.readexactly(n)


def tally(errors, what):
    key = what[:120]
    errors[key] = errors.get(key, 0) + 1


class Conn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer


async def open_one(args, i, sem, errors):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port, limit=1 << 16), args.timeout
            )
        except Exception as e:  # noqa: BLE001 - tallied
            tally(errors, f"connect: {type(e).__name__}: {e}")
            return None
        host = f"{args.host}:{args.port}"
        try:
            if args.mode == "http":
                writer.write(
                    f"GET {args.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: soak-hold\r\n\r\n".encode()
                )
                await writer.drain()
                status, headers = await asyncio.wait_for(read_head(reader), args.timeout)
                await asyncio.wait_for(read_body(reader, headers), args.timeout)
                if status != 200:
                    raise RuntimeError(f"status {status}")
                if headers.get("connection", "").lower() == "close":
                    raise RuntimeError("server asked to close")
            else:
                key = base64.b64encode(os.urandom(16))
                writer.write(
                    (
                        f"GET {args.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: soak-hold\r\n"
                        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                        f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
                    ).encode()
                )
                await writer.drain()
                status, headers = await asyncio.wait_for(read_head(reader), args.timeout)
                if status != 101:
                    raise RuntimeError(f"status {status}")
                accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
                if headers.get("sec-websocket-accept") != accept:
                    raise RuntimeError("bad Sec-WebSocket-Accept")
                opcode, payload = await asyncio.wait_for(ws_read(reader), args.timeout)
                if opcode != 1 or not payload.startswith(b"connected to "):
                    raise RuntimeError(f"unexpected first message {opcode} {payload[:40]!r}")
        except Exception as e:  # noqa: BLE001 - tallied
            tally(errors, f"{type(e).__name__}: {e}")
            writer.close()
            return None
        return Conn(reader, writer)


async def reuse(args, conn, i):
    """Uses a held connection once more; True when it answered as expected."""
    try:
        if args.mode == "http":
            conn.writer.write(
                f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()
            )
            await conn.writer.drain()
            status, headers = await asyncio.wait_for(read_head(conn.reader), args.timeout)
            await asyncio.wait_for(read_body(conn.reader, headers), args.timeout)
            return status == 200
        text = f"soak-{i}".encode()
        conn.writer.write(ws_frame(1, text))
        await conn.writer.drain()
        opcode, payload = await asyncio.wait_for(ws_read(conn.reader), args.timeout)
        return opcode == 1 and payload == b"echo: " + text
    except Exception:  # noqa: BLE001 - counted as not alive
        return False


async def close_one(args, conn):
    try:
        if args.mode == "ws" and not conn.writer.is_closing():
            conn.writer.write(ws_frame(8, (1000).to_bytes(2, "big")))
        conn.writer.close()
        await asyncio.wait_for(conn.writer.wait_closed(), 5)
    except Exception:  # noqa: BLE001 - closing anyway
        pass


async def main(args):
    check_loopback(args.host)
    errors = {}
    sem = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()
    tasks = [open_one(args, i, sem, errors) for i in range(args.count)]
    conns = [c for c in await asyncio.gather(*tasks) if c is not None]
    opened_s = time.monotonic() - started

    # Hold, sampling the server every `--sample-interval` seconds after a short settle.
    samples = []
    hold_end = time.monotonic() + args.hold
    await asyncio.sleep(min(args.settle, args.hold))
    while True:
        rss, fds = proc_figures(args.pid) if args.pid else (None, None)
        if rss is not None:
            samples.append((rss, fds))
        left = hold_end - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(args.sample_interval, left))

    closed_by_server = sum(1 for c in conns if c.reader.at_eof() or c.writer.is_closing())
    sample = [c for c in conns if not (c.reader.at_eof() or c.writer.is_closing())][: args.verify]
    alive = sum(await asyncio.gather(*(reuse(args, c, i) for i, c in enumerate(sample))))

    await asyncio.gather(*(close_one(args, c) for c in conns))
    result = {
        "mode": args.mode,
        "requested": args.count,
        "opened": len(conns),
        "errors": errors,
        "open_seconds": round(opened_s, 2),
        "held_seconds": args.hold,
        "closed_by_server_during_hold": closed_by_server,
        "verified": len(sample),
        "verified_alive": alive,
        "rss_kib_samples": [s[0] for s in samples],
        "fds_samples": [s[1] for s in samples],
        "rss_kib_during": int(statistics.median([s[0] for s in samples])) if samples else None,
        "fds_during": int(statistics.median([s[1] for s in samples])) if samples else None,
    }
    print(json.dumps(result))
    ok = len(conns) == args.count and closed_by_server == 0 and alive == len(sample)
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["http", "ws"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=200, help="connections being opened at once")
    p.add_argument("--hold", type=float, default=20.0, help="seconds to hold after all are open")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before the first sample")
    p.add_argument("--sample-interval", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=15.0, help="per step, seconds")
    p.add_argument("--verify", type=int, default=100, help="held connections used again")
    p.add_argument("--pid", type=int, help="server process to sample")
    a = p.parse_args()
    a.hold = min(max(a.hold, 1.0), 120.0)
    a.count = min(max(a.count, 1), 50000)
    sys.exit(asyncio.run(main(a)))
