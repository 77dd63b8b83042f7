"""A configurable MCP server for jackfield's tests, built on the SDK's `MCPServer`.

Run from the repo root:

    python -m tests.servers.echo [flags]        # or: python tests/servers/echo.py [flags]

Tools: echo, add, slow, big, env, fail, pid, count (see `build_server`). Transports: stdio
(default), streamable HTTP (`--transport http`, endpoint `/mcp`) and SSE (`--transport sse`,
endpoints `/sse` + `/messages/`). For http/sse the server prints `LISTENING <port>` on stdout
once it accepts requests (`--port 0` picks a free port). Fault flags (crash, hang, flood, ...)
are described in `parse_args`.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio
import uvicorn
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ToolsListChanged
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALL_TOOLS = ("echo", "add", "slow", "big", "env", "fail", "pid", "count")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.servers.echo", description=__doc__)
    p.add_argument("--transport", choices=("stdio", "http", "sse"), default="stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="http/sse; 0 picks a free port")
    p.add_argument("--name", default="echo", help="server name reported in serverInfo")
    p.add_argument(
        "--tools", default=None, help="comma-separated tool names to expose (default all)"
    )
    p.add_argument("--crash-on-start", action="store_true", help="write 'boom on start', exit 3")
    p.add_argument("--crash-after", type=float, metavar="SECONDS", help="exit 4 after SECONDS")
    p.add_argument(
        "--exit-on-call", action="store_true", help="any tools/call exits the process (5)"
    )
    p.add_argument("--hang", action="store_true", help="stay alive but never answer anything")
    p.add_argument("--flood-stdout", action="store_true", help="write non-JSON lines forever")
    p.add_argument("--stderr-lines", type=int, default=0, metavar="N", help="write N stderr lines")
    p.add_argument("--require-token", metavar="TOKEN", help="http/sse: 401 without Bearer TOKEN")
    p.add_argument(
        "--list-changing",
        type=float,
        metavar="SECONDS",
        help="toggle a tool named 'extra' every SECONDS and announce tools/list_changed",
    )
    p.add_argument(
        "--spawn-grandchild", action="store_true", help="start `sleep 600`, log its pid to stderr"
    )
    p.add_argument(
        "--session-expiry",
        type=float,
        metavar="SECONDS",
        help="http: a session id answers 404 once it is SECONDS old",
    )
    p.add_argument(
        "--close-stdout", action="store_true", help="stdio: close fd 1 at start, keep running"
    )
    p.add_argument(
        "--start-delay", type=float, default=0.0, metavar="SECONDS",
        help="sleep SECONDS before serving (a slow-starting server)",
    )  # fmt: skip
    return p.parse_args(argv)


# --------------------------------------------------------------------------- the server


@dataclass
class EchoServer:
    """The `MCPServer` plus the state the list-changing toggler needs."""

    mcp: MCPServer
    bus: InMemorySubscriptionBus
    exit_on_call: bool = False
    # Handshake-era connections, captured at `notifications/initialized`; list_changed is sent
    # to each on its standalone channel. 2026-era clients get it through `subscriptions/listen`
    # (fed by `bus`).
    sessions: set[ServerSession] = field(default_factory=set)
    extra_on: bool = False

    async def middleware(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if self.exit_on_call and ctx.method == "tools/call":
            _die(5, "exit on call")
        result = await call_next(ctx)
        if ctx.method == "notifications/initialized":
            self.sessions.add(ctx.session)
        elif ctx.method == "initialize" and isinstance(result, dict):
            # The handshake capabilities come from `NotificationOptions`, which MCPServer does not
            # expose; advertise tools.listChanged (we do send it) by amending the result.
            tools = result.get("capabilities", {}).get("tools")
            if isinstance(tools, dict):
                tools["listChanged"] = True
        return result

    async def toggle_extra_forever(self, every: float) -> None:
        while True:
            await anyio.sleep(every)
            if self.extra_on:
                self.mcp.remove_tool("extra")
            else:
                self.mcp.add_tool(_extra, name="extra", description="Appears and disappears.")
            self.extra_on = not self.extra_on
            await self.bus.publish(ToolsListChanged())
            for session in list(self.sessions):
                try:
                    with anyio.fail_after(2):
                        await session.send_tool_list_changed()
                except Exception:  # closed, broken or stuck connection: forget it
                    self.sessions.discard(session)

    async def run_on_streams(
        self,
        read_stream: ReadStream[SessionMessage | Exception],
        write_stream: WriteStream[SessionMessage],
    ) -> None:
        """Serve one connection over a stream pair (used by the WebSocket bridge)."""
        lowlevel = self.mcp._lowlevel_server  # the SDK's own in-memory transport does the same
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def _extra() -> str:
    return "extra"


def build_server(args: argparse.Namespace) -> EchoServer:
    bus = InMemorySubscriptionBus()
    mcp = MCPServer(args.name, version="1.0", log_level="WARNING", subscriptions=bus)
    state = EchoServer(mcp=mcp, bus=bus, exit_on_call=args.exit_on_call)
    mcp.middleware.append(state.middleware)

    @mcp.tool(description="Return the text unchanged.")
    def echo(text: str) -> str:
        return text

    @mcp.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @mcp.tool(description="Sleep for the given seconds, then answer 'slept N'.")
    async def slow(seconds: float) -> str:
        await anyio.sleep(seconds)
        return f"slept {seconds:g}"

    @mcp.tool(description="Return max(n, 8) characters: 'BEGIN' + 'x' * (n - 8) + 'END'.")
    def big(n: int) -> str:
        return "BEGIN" + "x" * max(0, n - 8) + "END"

    @mcp.tool(description="Return the value of an environment variable ('' when unset).")
    def env(name: str) -> str:
        return os.environ.get(name, "")

    @mcp.tool(description="Always fails with the given message (isError result).")
    def fail(message: str) -> str:
        raise ToolError(message)

    @mcp.tool(description="The server's process id.")
    def pid() -> int:
        return os.getpid()

    calls = 0

    @mcp.tool(description="Count calls of this tool in this process: answer '<key> <n>'.")
    def count(key: str) -> str:
        nonlocal calls
        calls += 1
        return f"{key} {calls}"

    if args.tools is not None:
        keep = {t.strip() for t in args.tools.split(",") if t.strip()}
        for name in ALL_TOOLS:
            if name not in keep:
                mcp.remove_tool(name)
    return state


# --------------------------------------------------------------------------- ASGI wrappers


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class RequireToken:
    """Answer 401 to any HTTP request without `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _header(scope, b"authorization") != self.expected:
            response = PlainTextResponse(
                "unauthorized", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SessionExpiry:
    """Forget each `Mcp-Session-Id` `ttl` seconds after it was issued: later requests get 404.

    The SDK session behind the id is left to its own idle timeout; only the id stops working.
    """

    def __init__(self, app: ASGIApp, ttl: float) -> None:
        self.app = app
        self.ttl = ttl
        self.issued: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = _header(scope, b"mcp-session-id")
        issued = self.issued.get(sid) if sid is not None else None
        if issued is not None and time.monotonic() - issued >= self.ttl:
            body = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": "Session expired"},
            }
            await JSONResponse(body, status_code=404)(scope, receive, send)
            return

        async def record_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                new = _header(message, b"mcp-session-id")
                if new is not None:
                    self.issued.setdefault(new, time.monotonic())
            await send(message)

        await self.app(scope, receive, record_session)


# --------------------------------------------------------------------------- running


def _die(code: int, why: str) -> NoReturn:
    sys.stderr.write(f"{why}\n")
    sys.stderr.flush()
    os._exit(code)


def _sleep_forever() -> NoReturn:
    while True:
        time.sleep(3600)


def announce(port: int) -> None:
    sys.stdout.write(f"LISTENING {port}\n")
    sys.stdout.flush()


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _flood_stdout() -> NoReturn:
    out = sys.stdout.buffer
    i = 0
    try:
        while True:
            out.write(b"garbage line %d {not json\n" % i)
            out.flush()
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)
    except (BrokenPipeError, OSError):
        os._exit(0)


def build_http_app(state: EchoServer, args: argparse.Namespace) -> ASGIApp:
    app: ASGIApp
    if args.transport == "http":
        app = state.mcp.streamable_http_app(host=args.host)
        if args.session_expiry is not None:
            app = SessionExpiry(app, args.session_expiry)
    else:
        app = state.mcp.sse_app(host=args.host)
    if args.require_token:
        app = RequireToken(app, args.require_token)
    return app


def serve_mcp(mcp: MCPServer, transport: str, host: str, port: int) -> None:
    """Run a small test server: over stdio, or streamable HTTP on `host:port` (announced)."""
    if transport == "stdio":
        anyio.run(mcp.run_stdio_async)
    else:
        anyio.run(serve_announced, mcp.streamable_http_app(host=host), bind_socket(host, port))


async def serve_announced(
    app: ASGIApp, sock: socket.socket, *beside: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Serve `app` on `sock`, print `LISTENING <port>` once up, run `beside` meanwhile."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))

    async def announce_when_started() -> None:
        while not server.started:
            await anyio.sleep(0.01)
        announce(sock.getsockname()[1])

    async with anyio.create_task_group() as tg:
        tg.start_soon(announce_when_started)
        for task in beside:
            tg.start_soon(task)
        await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


async def serve_http(state: EchoServer, args: argparse.Namespace) -> None:
    beside = [functools.partial(state.toggle_extra_forever, args.list_changing)]
    await serve_announced(build_http_app(state, args), bind_socket(args.host, args.port),
                          *(beside if args.list_changing else []))  # fmt: skip


async def serve_stdio(state: EchoServer, args: argparse.Namespace) -> None:
    async with anyio.create_task_group() as tg:
        if args.list_changing:
            tg.start_soon(state.toggle_extra_forever, args.list_changing)
        await state.mcp.run_stdio_async()
        tg.cancel_scope.cancel()


def start_faults(args: argparse.Namespace) -> None:
    """The start-up side effects shared by every transport (and the WebSocket server)."""
    if args.crash_on_start:
        _die(3, "boom on start")
    for i in range(args.stderr_lines):
        sys.stderr.write(f"line {i}\n")
    sys.stderr.flush()
    if args.spawn_grandchild:
        child = subprocess.Popen(
            ["sh", "-c", "sleep 600"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sys.stderr.write(f"grandchild {child.pid}\n")
        sys.stderr.flush()
    if args.crash_after is not None:
        timer = threading.Timer(args.crash_after, _die, (4, f"crash after {args.crash_after:g}s"))
        timer.daemon = True
        timer.start()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start_faults(args)
    if args.close_stdout:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # closes the original fd 1: the reader sees EOF
        os.close(devnull)
        _sleep_forever()
    if args.flood_stdout:
        _flood_stdout()
    if args.hang:
        if args.transport != "stdio":
            sock = bind_socket(args.host, args.port)  # connections queue, nothing ever answers
            announce(sock.getsockname()[1])
        _sleep_forever()

    time.sleep(args.start_delay)
    state = build_server(args)
    if args.transport == "stdio":
        anyio.run(serve_stdio, state, args)
    else:
        anyio.run(serve_http, state, args)


if __name__ == "__main__":
    main()
