"""A small closed-loop HTTP/1.1 load generator, run as its own process by bench.status_load:

    python -m bench.loadgen URL --connections 32 --seconds 5 [--warmup 1] [--cpu 1]

Each connection is kept alive and sends one GET at a time. Prints one JSON line: requests and
errors counted after the warm-up, the measured seconds, and every latency in ms. Hand-written on
asyncio streams (no client library) so that the generator is cheaper than the server it loads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from urllib.parse import urlsplit


async def connection(
    host: str,
    port: int,
    request: bytes,
    stop_at: float,
    warm_at: float,
    out: dict[str, list[float]],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (now := time.perf_counter()) < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if now >= warm_at:
                key = "latencies" if status == 200 else "errors"
                out[key].append((time.perf_counter() - now) * 1000)
    finally:
        writer.close()


async def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("url")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = url.path or "/"
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode()
    out: dict[str, list[float]] = {"latencies": [], "errors": []}
    start = time.perf_counter()
    warm_at = start + args.warmup
    stop_at = warm_at + args.seconds
    await asyncio.gather(
        *(connection(host, port, request, stop_at, warm_at, out) for _ in range(args.connections))
    )
    measured = time.perf_counter() - warm_at
    print(
        json.dumps(
            {
                "requests": len(out["latencies"]),
                "errors": len(out["errors"]),
                "seconds": measured,
                "latencies_ms": [round(v, 3) for v in out["latencies"]],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
