"""An MCP server for jackfield's caller-context tests (issue #16), built on the SDK's `MCPServer`.

Run from the repo root:

    python -m tests.servers.caller [--transport stdio|http] [--port 0] [--env NAME]...
                                   [--header NAME]... [--record PATH] [--name caller]

It reports what it observed of who it is serving, so a test can tell whose process or whose
credentials a call reached:

- `--env NAME` (repeatable): environment variables to observe (the process's own env, read
  once at start: an identity-scoped stdio server gets its caller's values there).
- `--header NAME` (repeatable, http): request headers to observe on every call (an
  identity-scoped http server gets its caller's credentials there). Names are matched without
  regard to case and reported lower-case.
- `--record PATH` (or the environment variable CALLER_RECORD): a file the server appends one
  JSON object per line to (flushed at once), e.g.

      {"event": "started", "pid": 123, "env": {"USER_ID": "alice"}}
      {"event": "called", "tool": "whoami", "pid": 123, "env": {...}, "headers": {...}}
      {"event": "called", "tool": "lookup", "pid": 123, "arguments": {"user_id": "alice", ...}}

  `started` is written once per process (stdio: once per connection), `called` once per call.

Transports: stdio (default) and streamable HTTP (`--transport http`, endpoint `/mcp`; the
server prints `LISTENING <port>` once it accepts requests, `--port 0` picks a free port, so
tests/servers/launch.py `spawn` works as for echo.py).

Tools (names, arguments and answers are stable; tests rely on them):

- `whoami()`, read-only: a JSON object `{"env": {NAME: value}, "headers": {name: value},
  "pid": <pid>}` of the observed env vars (unset: "") and this request's observed headers
  (absent: not in the object; stdio: `{}`).
- `lookup(user_id: str, query: str = "")`, read-only: answers "user_id=<user_id>
  query=<query>".
- `orders(user_id: str = "", tenant: str = "", query: str = "")`, read-only: answers
  "orders user_id=<user_id> tenant=<tenant> query=<query>".
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import mcp_types
from mcp.server.mcpserver import Context, MCPServer

from tests.servers.echo import serve_mcp

READ_ONLY = mcp_types.ToolAnnotations(readOnlyHint=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.servers.caller", description=__doc__)
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="http; 0 picks a free port")
    p.add_argument("--name", default="caller", help="server name reported in serverInfo")
    p.add_argument("--env", action="append", default=[], metavar="NAME", help="env var to observe")
    p.add_argument(
        "--header", action="append", default=[], metavar="NAME", help="header to observe (http)"
    )
    p.add_argument("--record", default=os.environ.get("CALLER_RECORD"), metavar="PATH")
    return p.parse_args(argv)


def build_server(args: argparse.Namespace) -> MCPServer:
    mcp = MCPServer(args.name, version="1.0", log_level="WARNING")
    observed_env = {name: os.environ.get(name, "") for name in args.env}
    wanted_headers = [h.lower() for h in args.header]

    def record(event: str, **fields: Any) -> None:
        if not args.record:
            return
        line = {"event": event, "pid": os.getpid(), **fields, "at": time.monotonic()}
        with open(args.record, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()

    def headers_of(ctx: Context) -> dict[str, str]:
        got: Mapping[str, str] | None = ctx.headers
        if not got:
            return {}
        lowered = {k.lower(): v for k, v in got.items()}
        return {h: lowered[h] for h in wanted_headers if h in lowered}

    record("started", env=observed_env)

    @mcp.tool(description="Who this server serves: observed env vars and headers.",
              annotations=READ_ONLY)  # fmt: skip
    def whoami(ctx: Context) -> str:
        headers = headers_of(ctx)
        record("called", tool="whoami", env=observed_env, headers=headers)
        return json.dumps({"env": observed_env, "headers": headers, "pid": os.getpid()})

    @mcp.tool(description="Look something up for a user.", annotations=READ_ONLY)
    def lookup(ctx: Context, user_id: str, query: str = "") -> str:
        record("called", tool="lookup", arguments={"user_id": user_id, "query": query},
               headers=headers_of(ctx))  # fmt: skip
        return f"user_id={user_id} query={query}"

    @mcp.tool(description="List a user's orders.", annotations=READ_ONLY)
    def orders(ctx: Context, user_id: str = "", tenant: str = "", query: str = "") -> str:
        got = {"user_id": user_id, "tenant": tenant, "query": query}
        record("called", tool="orders", arguments=got, headers=headers_of(ctx))
        return f"orders user_id={user_id} tenant={tenant} query={query}"

    return mcp


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    serve_mcp(build_server(args), args.transport, args.host, args.port)


if __name__ == "__main__":
    main()
