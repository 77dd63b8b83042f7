"""MCP servers with oversized or invalid catalogs, for the catalog fault tests.

python -m tests.servers.catalog [--transport stdio|http] [--port 0] [shape flags]
    An SDK (low-level `Server`) server. Its tools: `ok` (answers "ok"), plus what the flags ask:
    --description-bytes N   a tool `long_doc` whose description is N bytes
    --schema-bytes N        a tool `huge_schema` whose inputSchema is about N bytes (an enum)
    --tools N               N more tools `t0000` ... each with a small description
    --description-each N    the description of each of those N tools, in bytes (default 40)
    Every tool answers a call with its own name. For http the server prints `LISTENING <port>`
    and, like a server of the handshake era, answers `server/discover` with "method not found"
    (so a client handshakes, and gets its answers as SSE events).
python -m tests.servers.catalog --invalid
    stdio, raw JSON-RPC (the SDK cannot send an invalid tool): lists `ok` and `also_ok`, which
    answer calls with their name, next to tools that fail validation: `bad_schema` (inputSchema
    is a string), `bad_type` (inputSchema of type "string"), `bad_hint` (a non-boolean
    annotation) and one without a name.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import mcp_types
import uvicorn
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server

OBJECT = {"type": "object", "properties": {}}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.servers.catalog", description=__doc__)
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--description-bytes", type=int, default=0)
    p.add_argument("--schema-bytes", type=int, default=0)
    p.add_argument("--tools", type=int, default=0)
    p.add_argument("--description-each", type=int, default=40)
    p.add_argument("--invalid", action="store_true")
    return p.parse_args(argv)


class HandshakeOnly:
    """ASGI: `server/discover` is an unknown method (a server from before 2026-07-28)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("method") == "server/discover":
            error = {"code": -32601, "message": "Method not found"}
            answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "error": error})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": answer.encode()})
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def catalog(args: argparse.Namespace) -> list[mcp_types.Tool]:
    tools = [mcp_types.Tool(name="ok", description="Answers ok.", inputSchema=OBJECT)]
    if args.description_bytes:
        text = ("A very long description. " * (args.description_bytes // 25 + 1))[
            : args.description_bytes
        ]
        tools.append(mcp_types.Tool(name="long_doc", description=text, inputSchema=OBJECT))
    if args.schema_bytes:
        values = [f"value-{i:07d}" for i in range(args.schema_bytes // 16 + 1)]
        schema = {"type": "object", "properties": {"choice": {"type": "string", "enum": values}}}
        tools.append(mcp_types.Tool(name="huge_schema", description="Huge.", inputSchema=schema))
    for i in range(args.tools):
        text = (f"Tool number {i}. " * (args.description_each // 10 + 1))[: args.description_each]
        tools.append(mcp_types.Tool(name=f"t{i:04d}", description=text, inputSchema=OBJECT))
    return tools


def build_server(args: argparse.Namespace) -> Server[Any]:
    tools = catalog(args)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        content = mcp_types.TextContent(type="text", text=params.name)
        return mcp_types.CallToolResult(content=[content])

    return Server("catalog", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(server: Server[Any], host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    app = HandshakeOnly(server.streamable_http_app(host=host))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    http = uvicorn.Server(config)

    async def announce_when_started() -> None:
        while not http.started:
            await anyio.sleep(0.01)
        sys.stdout.write(f"LISTENING {sock.getsockname()[1]}\n")
        sys.stdout.flush()

    async with anyio.create_task_group() as tg:
        tg.start_soon(announce_when_started)
        await http.serve(sockets=[sock])
        tg.cancel_scope.cancel()


# --- the raw server with invalid tools -----------------------------------------------------------

INVALID_TOOLS: list[Any] = [
    {"name": "ok", "description": "Answers ok.", "inputSchema": OBJECT},
    {"name": "bad_schema", "description": "Its schema is a string.", "inputSchema": "object"},
    {"name": "bad_type", "inputSchema": {"type": "string"}},
    {"name": "bad_hint", "inputSchema": OBJECT, "annotations": {"readOnlyHint": "sometimes"}},
    {"description": "No name at all.", "inputSchema": OBJECT},
    {"name": "also_ok", "inputSchema": OBJECT},
]


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    rid, method = request["id"], request.get("method")
    params = request.get("params") or {}
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "invalid-tools", "version": "0"},
        }
    elif method == "tools/list":
        result = {"tools": INVALID_TOOLS}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": params.get("name")}]}
    elif method == "ping":
        result = {}
    else:
        error = {"code": -32601, "message": "Method not found"}
        return {"jsonrpc": "2.0", "id": rid, "error": error}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def serve_invalid() -> None:
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
        except ValueError:
            continue
        if isinstance(request, dict) and "id" in request and "method" in request:
            sys.stdout.write(json.dumps(_answer(request)) + "\n")
            sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.invalid:
        serve_invalid()
    elif args.transport == "stdio":
        anyio.run(serve_stdio, build_server(args))
    else:
        anyio.run(serve_http, build_server(args), args.host, args.port)


if __name__ == "__main__":
    main()
