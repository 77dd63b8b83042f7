"""The echo MCP server over WebSocket, for jackfield's tests.

    python -m tests.servers.ws --port 0 [--require-token TOKEN] [--name NAME] [--tools a,b]
                               [--list-changing SECONDS]

Prints `LISTENING <port>` once it accepts connections. `GET /mcp` upgrades to a WebSocket with
subprotocol `mcp`; each text frame carries one JSON-RPC message. Each connection is bridged
into the SDK server from `tests.servers.echo` through a pair of memory streams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence

import anyio
import mcp_types as types
from aiohttp import WSMsgType, web
from mcp.shared.message import SessionMessage

from tests.servers import echo


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.servers.ws", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--require-token", metavar="TOKEN", help="401 without Bearer TOKEN")
    p.add_argument("--name", default="echo")
    p.add_argument("--tools", default=None, help="comma-separated tool names to expose")
    p.add_argument("--list-changing", type=float, metavar="SECONDS")
    return p.parse_args(argv)


async def bridge(ws: web.WebSocketResponse, server: echo.EchoServer) -> None:
    """Pump frames into the server's read stream and its write stream back out as frames."""
    to_server, server_reads = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    server_writes, from_server = anyio.create_memory_object_stream[SessionMessage](0)

    async def frames_in() -> None:
        async with to_server:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    message = types.jsonrpc_message_adapter.validate_json(msg.data, by_name=False)
                except ValueError as exc:
                    await to_server.send(exc)
                    continue
                await to_server.send(SessionMessage(message))

    async def frames_out() -> None:
        async with from_server:
            async for item in from_server:
                data = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                await ws.send_str(data)

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.run_on_streams, server_reads, server_writes)
        tg.start_soon(frames_out)
        with contextlib.suppress(ConnectionError):
            await frames_in()
        # The peer is gone: answers in flight have nowhere to go.
        tg.cancel_scope.cancel()


def make_app(server: echo.EchoServer, token: str | None) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            return web.Response(status=401, text="unauthorized")
        ws = web.WebSocketResponse(protocols=("mcp",))
        await ws.prepare(request)
        await bridge(ws, server)
        return ws

    app = web.Application()
    app.router.add_get("/mcp", handle)
    return app


async def serve(args: argparse.Namespace) -> None:
    echo_argv = ["--name", args.name] + (["--tools", args.tools] if args.tools else [])
    server = echo.build_server(echo.parse_args(echo_argv))
    runner = web.AppRunner(make_app(server, args.require_token))
    await runner.setup()
    sock = echo.bind_socket(args.host, args.port)
    await web.SockSite(runner, sock).start()
    echo.announce(sock.getsockname()[1])
    try:
        if args.list_changing:
            await server.toggle_extra_forever(args.list_changing)
        else:
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
