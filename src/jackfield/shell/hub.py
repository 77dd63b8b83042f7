"""The tool hub: the live catalog served as one aggregated MCP server (streamable HTTP).

LiveKit runs each agent session in its own process, away from the manager, so the sessions
reach the tools through this server on 127.0.0.1 with a bearer token. It lists the catalog,
forwards calls through the manager (limits, timeouts, caps included), serves the agent's
effective instructions as the prompt `agent-instructions`, and announces changes the way each
client's protocol expects: `notifications/*/list_changed` to handshake-era sessions (such as
livekit-agents' MCP client), `subscriptions/listen` events to 2026-07-28 clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import mcp_types
import uvicorn
from mcp.server import Server
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ToolsListChanged,
)

from jackfield import __version__
from jackfield.core import instructions
from jackfield.core.catalog import CatalogChange
from jackfield.core.desired import Snapshot
from jackfield.core.status import HubStatus
from jackfield.shell.manager import ServerManager, error_result

log = logging.getLogger(__name__)

PROMPT_NAME = "agent-instructions"
MODERN = "2026-07-28"
SESSION_HEADER = "x-jackfield-session"
"""Sent by jackfield's own agent: the LiveKit job/room, for the audit trail."""

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]  # fmt: skip


def _bearer(token: str, app: ASGIApp) -> ASGIApp:
    """401 for every HTTP request without `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="jackfield-hub"'),
                ]})  # fmt: skip
                await send({"type": "http.response.body", "body": b'{"error":"unauthorized"}'})
                return
        await app(scope, receive, send)

    return guarded


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the app owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class ToolHub:
    def __init__(self, manager: ServerManager, *, host: str, port: int, token: str) -> None:
        self.manager = manager
        self.host = host
        self.port = port
        self.token = token
        self.snapshot: Snapshot | None = None
        self.instructions = ""
        self.instructions_revision: str | None = None
        self._connections: dict[Connection, str] = {}
        self._ids = itertools.count(1)
        self._bus = InMemorySubscriptionBus()
        self._server = self._mcp_server()
        self._uvicorn: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.serving = False
        self.announcements = 0
        manager.listeners.append(self._on_catalog)

    # --- what is served -------------------------------------------------------------------------

    def _selected(self, server: str) -> bool:
        if self.snapshot is None:
            return False
        return instructions.selects(self.snapshot.agent.document.spec.servers, server)

    def tools(self) -> list[mcp_types.Tool]:
        return [
            mcp_types.Tool(
                name=e.name,
                description=e.description or None,
                inputSchema=dict(e.input_schema),
            )
            for e in sorted(self.manager.catalog.entries.values(), key=lambda e: e.name)
            if self._selected(e.server)
        ]

    def _mcp_server(self) -> Server[Any]:
        async def list_tools(
            ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListToolsResult:
            self._track(ctx)
            return mcp_types.ListToolsResult(tools=self.tools())

        async def call_tool(
            ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
        ) -> mcp_types.CallToolResult:
            session = self._track(ctx)
            entry = self.manager.catalog.entries.get(params.name)
            if entry is not None and not self._selected(entry.server):
                return error_result(f"There is no tool called {params.name}.")
            return await self.manager.call(params.name, params.arguments or {}, session=session)

        async def list_prompts(
            ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListPromptsResult:
            self._track(ctx)
            prompt = mcp_types.Prompt(
                name=PROMPT_NAME,
                description=f"The agent's effective instructions ({self.instructions_revision})",
            )
            return mcp_types.ListPromptsResult(prompts=[prompt])

        async def get_prompt(
            ctx: ServerRequestContext[Any], params: mcp_types.GetPromptRequestParams
        ) -> mcp_types.GetPromptResult:
            self._track(ctx)
            if params.name != PROMPT_NAME:
                from mcp.shared.exceptions import MCPError

                raise MCPError(mcp_types.INVALID_PARAMS, f"unknown prompt {params.name!r}")
            text = mcp_types.TextContent(type="text", text=self.instructions)
            return mcp_types.GetPromptResult(
                description=self.instructions_revision,
                messages=[mcp_types.PromptMessage(role="user", content=text)],
            )

        return Server(
            "jackfield-hub",
            version=__version__,
            instructions="Tools of the MCP servers that jackfield manages.",
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_list_prompts=list_prompts,
            on_get_prompt=get_prompt,
            on_subscriptions_listen=ListenHandler(self._bus),
        )

    def _track(self, ctx: ServerRequestContext[Any]) -> str:
        """Remember the client connection for announcements; return its key (audit, scope)."""
        # The SDK hands handlers a per-request proxy; the per-client Connection behind it is
        # what carries standalone notifications and a teardown hook.
        connection: Connection = ctx.session._connection  # noqa: SLF001
        key = self._connections.get(connection)
        if key is None:
            headers = getattr(ctx.request, "headers", None) or {}
            key = headers.get(SESSION_HEADER) or connection.session_id or f"c{next(self._ids)}"
            self._connections[connection] = key
            connection.exit_stack.callback(self._connection_gone, connection, key)
        return key

    def _connection_gone(self, connection: Connection, key: str) -> None:
        self._connections.pop(connection, None)
        self._spawn(self.manager.close_session(key))

    # --- announcements ----------------------------------------------------------------------------

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """A new applied config: the agent's selectors and prompt texts may have changed."""
        old_selection = self.snapshot.agent.document.spec.servers if self.snapshot else None
        self.snapshot = snapshot
        if old_selection != snapshot.agent.document.spec.servers:
            self._announce(tools=True, prompts=False)
        self._refresh_instructions()

    def _on_catalog(self, change: CatalogChange) -> None:
        if not change.empty:
            self._announce(tools=True, prompts=False)
        self._refresh_instructions()

    def _refresh_instructions(self) -> None:
        if self.snapshot is None:
            return
        ready = {n for n, state in self.manager.states().items() if state in ("Ready", "Degraded")}
        text = instructions.compose(self.snapshot, ready)
        if text != self.instructions:
            self.instructions = text
            self.instructions_revision = instructions.revision(text)
            self._announce(tools=False, prompts=True)

    def _announce(self, *, tools: bool, prompts: bool) -> None:
        self.announcements += 1
        self._spawn(self._broadcast(tools=tools, prompts=prompts))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _broadcast(self, *, tools: bool, prompts: bool) -> None:
        if tools:
            await self._bus.publish(ToolsListChanged())
        if prompts:
            await self._bus.publish(PromptsListChanged())
        for connection in list(self._connections):
            if connection.protocol_version >= MODERN:
                continue  # told through the subscription bus above
            try:
                if tools:
                    await connection.send_tool_list_changed()
                if prompts:
                    await connection.send_prompt_list_changed()
            except Exception as e:  # a connection going away: it will not be told again
                log.debug("announcement not delivered: %r", e)
                self._connections.pop(connection, None)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    def status(self) -> HubStatus:
        return HubStatus(url=self.url, tools=len(self.tools()), sessions=len(self._connections))

    def agent_sessions(self) -> int:
        """Connections of jackfield's own agent jobs (they identify themselves by header)."""
        return sum(1 for key in self._connections.values() if key.startswith("job-"))

    async def start(self) -> None:
        app = self._server.streamable_http_app(host=self.host)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            _bearer(self.token, app), log_level="warning", lifespan="on", access_log=False,
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._uvicorn = _QuietServer(config)
        self._task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]), name="hub")
        while not self._uvicorn.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the hub stopped while starting")
            await asyncio.sleep(0.005)
        self.serving = True

    async def drain(self) -> None:
        """Wait for calls in flight to finish (the caller bounds the wait)."""
        while self.manager.in_flight:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.serving = False
        if self._uvicorn is not None and self._task is not None:
            self._uvicorn.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
