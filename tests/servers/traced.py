"""An MCP server for jackfield's trace tests, built on the SDK's `MCPServer`: it records the
trace context (`_meta.traceparent`, `_meta.tracestate`, SEP-414) of every call it gets.

Run from the repo root:

    python -m tests.servers.traced --record PATH [--transport stdio|http] [--port 0]

`--record PATH`: a file the server appends one JSON object per call to (flushed at once):

    {"event": "called", "tool": "lookup", "meta": {"traceparent": "00-...-01"}}

`meta` holds only those two keys, when the request carried them.

Tools (stable; tests rely on them):

- `lookup(query: str, api_key: str = "")`: answers "found <query>" (`api_key` is for a hidden
  argument: the server only says whether it got one, "found <query> (key)").
- `broken(query: str)`: a tool error result, "no such thing: <query>".
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from tests.servers.echo import serve_mcp

TRACE_KEYS = ("traceparent", "tracestate")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.servers.traced", description=__doc__)
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="http; 0 picks a free port")
    p.add_argument("--record", required=True, metavar="PATH")
    return p.parse_args(argv)


def build_server(args: argparse.Namespace) -> MCPServer:
    mcp = MCPServer("traced", version="1.0", log_level="WARNING")

    def record(tool: str, ctx: Context) -> None:
        meta = dict(ctx.request_context.meta or {})
        line = {"event": "called", "tool": tool,
                "meta": {k: meta[k] for k in TRACE_KEYS if k in meta}}  # fmt: skip
        with open(args.record, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()

    @mcp.tool(description="Look something up.")
    def lookup(ctx: Context, query: str, api_key: str = "") -> str:
        record("lookup", ctx)
        return f"found {query}" + (" (key)" if api_key else "")

    @mcp.tool(description="Always fails.")
    def broken(ctx: Context, query: str) -> str:
        record("broken", ctx)
        raise ToolError(f"no such thing: {query}")

    return mcp


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    serve_mcp(build_server(args), args.transport, args.host, args.port)


if __name__ == "__main__":
    main()
