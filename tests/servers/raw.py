"""Servers that are not valid MCP, for fault tests.

python -m tests.servers.raw --mode partial-json [--delay SECONDS]
    stdio. Answers `server/discover` with "method not found" (so a client falls back to the
    handshake), answers `initialize` with a valid JSON line split in two writes `--delay`
    apart, then answers every later request with a truncated JSON line. Exits on stdin EOF.
python -m tests.servers.raw --mode tcp-blackhole --port 0
    Accepts TCP connections and never reads or answers; prints `LISTENING <port>`.
python -m tests.servers.raw --mode leak [--leak-mb-per-sec N] [--leak-max-mb M]
    Allocates (and touches) N MB a second up to M MB, then holds it; never reads stdin and
    never answers.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.servers.raw", description=__doc__)
    p.add_argument("--mode", required=True, choices=("partial-json", "tcp-blackhole", "leak"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.2, help="partial-json: gap between halves")
    p.add_argument("--leak-mb-per-sec", type=float, default=20.0)
    p.add_argument("--leak-max-mb", type=int, default=1024)
    return p.parse_args(argv)


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _initialize_result(request: dict[str, Any]) -> dict[str, Any]:
    params = request.get("params") or {}
    return {
        "protocolVersion": params.get("protocolVersion", "2025-06-18"),
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "partial-json", "version": "0"},
    }


def partial_json(delay: float) -> None:
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(request, dict) or "id" not in request:
            continue  # notifications need no answer
        rid, method = request["id"], request.get("method")
        if method == "server/discover":
            error = {"code": -32601, "message": "Method not found"}
            _write(json.dumps({"jsonrpc": "2.0", "id": rid, "error": error}).encode() + b"\n")
        elif method == "initialize":
            line = json.dumps({"jsonrpc": "2.0", "id": rid, "result": _initialize_result(request)})
            half = len(line) // 2
            _write(line[:half].encode())
            time.sleep(delay)
            _write(line[half:].encode() + b"\n")
        else:
            line = json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"tools": []}})
            _write(line[: len(line) // 2].encode() + b"\n")


def tcp_blackhole(host: str, port: int) -> NoReturn:
    listener = socket.create_server((host, port))
    sys.stdout.write(f"LISTENING {listener.getsockname()[1]}\n")
    sys.stdout.flush()
    held: list[socket.socket] = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)  # never read, never answered, never closed


def leak(mb_per_sec: float, max_mb: int) -> NoReturn:
    chunk_mb = 1
    held: list[bytearray] = []
    sys.stderr.write("leaking\n")
    sys.stderr.flush()
    while True:
        if len(held) * chunk_mb < max_mb:
            held.append(bytearray(b"\x01") * (chunk_mb << 20))  # written, so resident
        time.sleep(chunk_mb / mb_per_sec)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode == "partial-json":
        partial_json(args.delay)
    elif args.mode == "tcp-blackhole":
        tcp_blackhole(args.host, args.port)
    else:
        leak(args.leak_mb_per_sec, args.leak_max_mb)


if __name__ == "__main__":
    main()
