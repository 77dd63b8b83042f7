"""The tool hub: the live catalog served as one aggregated MCP server (streamable HTTP).

LiveKit runs each agent session in its own process, away from the manager, so the sessions
reach the tools through this server on 127.0.0.1 with a bearer token. It lists the catalog,
forwards calls through the manager (limits, timeouts, caps included), serves the agent's
effective instructions as the prompt `agent-instructions`, and announces changes the way each
client's protocol expects: `notifications/*/list_changed` to handshake-era sessions (such as
livekit-agents' MCP client), `subscriptions/listen` events to 2026-07-28 clients.

A hub session is what `scope: session` servers are opened for and closed with: the
`x-jackfield-session` header when the client sends one, else the handshake-era
`Mcp-Session-Id`, else (a 2026-07-28 client, which has no session) the single request. It
lasts while any connection or request carrying it is open. At most `max_sessions` handshake-era
sessions are open at once (a new one beyond is refused with 503 and a sentence, and counted),
and one with no request in flight and no open stream for `session_idle` seconds is closed.

`tools/list` is paged (`nextCursor`), each page at most HUB_PAGE_BYTES of tools: clients read
an answer as one SSE event and the SDK's client fails one over 1 MiB, so however large the
catalog grows, no page approaches that.

Each tool carries what a voice client needs (docs/voice.md): its title, the upstream's
annotations, and under `_meta[VOICE_META]` the ToolVoice the config makes of them. During a
call the upstream's progress notices and questions reach the client that made it
(shell/hub_questions.py). A client that cancels a call cancels it upstream. A call's
`_meta[CONFIRMATION_META]` (the caller said yes) goes on its audit row; a job that heard no (or
nothing) reports it on EVENTS_PATH, and no call is made.

A hub session has a caller (core/caller_context.py): the job sends it in CONTEXT_HEADER, read
on each connection's first request (an invalid one is refused with 400 before MCP sees it; none
is ANONYMOUS). Its calls go to the manager with it, and what it lists and reads leaves out the
servers whose `access` does not admit it (shell/hub_sessions.py). A new connection of a session
with another context replaces it and closes the session's `scope: session` servers, so they
reopen for the new caller. Context values are secrets: the hub never logs them.

Each call is a SERVER span that continues the trace of the `traceparent` in its `_meta`
(shell/tracing.py, docs/tracing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import mcp_types
import uvicorn
from mcp.server import Server
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from jackfield import __version__
from jackfield.core import tool_results as results
from jackfield.core.agent_view import (
    AGENT_VIEW_URI,
    EVENTS_PATH,
    PROMPT_NAME,
    SESSION_HEADER,
    AgentView,
    RealtimeCooldown,
)
from jackfield.core.caller_context import ANONYMOUS, CONTEXT_HEADER, CallerContext
from jackfield.core.catalog import CatalogChange
from jackfield.core.desired import Snapshot
from jackfield.core.status import SERVING_STATES, HubStatus
from jackfield.shell import tracing
from jackfield.shell.call_channel import NO_CHANNEL, CallChannel
from jackfield.shell.hub_questions import Rounds, channel_of
from jackfield.shell.hub_sessions import Served, Views
from jackfield.shell.redaction import redact
from jackfield.shell.servers import ServerManager, confirmation_of, error_result

log = logging.getLogger(__name__)

__all__ = ["PROMPT_NAME", "SESSION_HEADER", "ToolHub"]

MAX_EVENT_BYTES = 16 * 1024
ANNOUNCE_TIMEOUT = 2.0
"""Seconds one client may hold up an announcement before it is skipped for that client."""
STOP_GRACE = 5.0
"""Seconds `stop` waits for session clean-ups (closing `scope: session` servers)."""
DEFAULT_MAX_SESSIONS = 256
DEFAULT_SESSION_IDLE = 300.0
_RESERVED_META = "io.modelcontextprotocol/"
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]  # fmt: skip


AgentEventHandler = Callable[[str, dict[str, Any], CallerContext | None], None]
"""A job's report: its hub session, the event, the context its request carried (if any)."""


async def _read_body(receive: Callable[[], Awaitable[Any]], limit: int) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return body


async def _respond(send: Callable[[Any], Awaitable[None]], status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _authorized(header: bytes, token: bytes) -> bool:
    """`Bearer <token>`, the scheme in any case (RFC 7235: auth schemes are case-insensitive)."""
    scheme, _, credentials = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.lstrip(b" "), token)


def _context_of(headers: Mapping[bytes, bytes]) -> CallerContext | None:
    """The CONTEXT_HEADER of a request, None when it has none (or an empty one).

    Raises:
        ValueError: the header is not a context (the message says why, without its value).
    """
    raw = headers.get(CONTEXT_HEADER.encode())
    return CallerContext.from_header(raw.decode("latin-1")) if raw else None


def _bearer(token: str, app: ASGIApp, on_event: AgentEventHandler) -> ASGIApp:
    """401 for every HTTP request without `Authorization: Bearer <token>`; no WebSockets. Then
    400 for one whose CONTEXT_HEADER is not a caller context (the token first: a client
    without it learns nothing of contexts). `POST /agent/events` (a job's report, JSON with
    `event`) goes to `on_event`."""
    expected = token.encode()

    async def guarded(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not _authorized(given, expected):
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="jackfield-hub"'),
                ]})  # fmt: skip
                await send({"type": "http.response.body", "body": b'{"error":"unauthorized"}'})
                return
            try:
                context = _context_of(dict(scope.get("headers") or []))
            except ValueError as e:
                sentence = f"The {CONTEXT_HEADER} header was refused: {e}."
                await _respond(send, 400, json.dumps({"error": sentence}).encode())
                return
            if scope.get("path") == EVENTS_PATH:
                await _agent_event(scope, receive, send, lambda s, e: on_event(s, e, context))
                return
        await app(scope, receive, send)

    return guarded


def _refusals(app: ASGIApp, refusal: Callable[[], bytes]) -> ASGIApp:
    """The SDK's answer to a new session over its `max_sessions` (503) with our sentence in the
    JSON-RPC error, a Retry-After, and `refusal` told (it counts and words them)."""

    async def counted(scope: Scope, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        if b"mcp-session-id" in headers or scope["type"] != "http":
            await app(scope, receive, send)
            return
        refused = False

        async def reworded(message: Any) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 503:
                refused = True
                await send({"type": "http.response.start", "status": 503, "headers": [
                    (b"content-type", b"application/json"), (b"retry-after", b"5"),
                ]})  # fmt: skip
                await send({"type": "http.response.body", "body": refusal()})
            elif not refused:
                await send(message)

        await app(scope, receive, reworded)

    return counted


async def _agent_event(
    scope: Scope, receive: Any, send: Any, on_event: Callable[[str, dict[str, Any]], None]
) -> None:
    if scope.get("method") != "POST":
        await _respond(send, 405, b'{"error":"POST only"}')
        return
    body = await _read_body(receive, MAX_EVENT_BYTES)
    try:
        event = json.loads(body) if body is not None else None
    except ValueError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        await _respond(send, 400, b'{"error":"expected a JSON object with an event"}')
        return
    headers = dict(scope.get("headers") or [])
    session = headers.get(SESSION_HEADER.encode(), b"").decode(errors="replace") or "unknown"
    on_event(session, event)
    await _respond(send, 202, b"{}")


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the app owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class _HubServer(Server[Any]):
    """Says `listChanged` to handshake-era clients: the hub does send those notifications.

    (The SDK derives the flags from `NotificationOptions`, which its HTTP transport leaves at
    the defaults; 2026-07-28 clients see them from the `subscriptions/listen` handler.)
    """

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(
            prompts_changed=True, tools_changed=True
        )
        return super().create_initialization_options(options, experimental_capabilities, extensions)


def _own(result: mcp_types.CallToolResult) -> mcp_types.CallToolResult:
    """An upstream result as the hub's: the upstream's protocol metadata (its serverInfo) goes."""
    if not result.meta:
        return result
    meta = {k: v for k, v in result.meta.items() if not k.startswith(_RESERVED_META)}
    return result.model_copy(update={"meta": meta or None})


class ToolHub:
    def __init__(
        self,
        manager: ServerManager,
        *,
        host: str,
        port: int,
        token: str,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        session_idle: float = DEFAULT_SESSION_IDLE,
    ) -> None:
        self.manager = manager
        self.host = host
        self.port = port
        self.token = token
        self.max_sessions = max_sessions
        self.session_idle = session_idle
        self.refused_sessions = 0
        """New hub sessions refused because `max_sessions` were open."""
        self.snapshot: Snapshot | None = None
        self.cooldown = RealtimeCooldown()
        self.fallbacks: Counter[str] = Counter()
        """Sessions that moved to the fallback pipeline, by reason."""
        self.rejected_updates = 0
        """Session updates (tools, instructions) a realtime model refused."""
        self.last_rejected_update: str | None = None
        self._revisions: dict[str, str] = {}
        """Hub session -> the agent view revision it last read."""
        self._cooldown_timer: asyncio.TimerHandle | None = None
        self._connections: dict[Connection, str] = {}
        self._holders: Counter[str] = Counter()
        self._contexts: dict[str, CallerContext] = {}
        """Hub session -> its caller, as its latest connection said."""
        self._reopening: dict[str, asyncio.Task[None]] = {}
        """Hub sessions whose `scope: session` servers are closing for a new caller."""
        self._ids = itertools.count(1)
        self._views = Views()
        self._bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self._bus)
        self._server = self._mcp_server()
        self._server.middleware.append(self._middleware)
        self._uvicorn: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._rounds = Rounds()
        """2026-07-28 calls waiting for their client's next round."""
        self.serving = False
        self.announcements = 0
        manager.listeners.append(self._on_catalog)

    # --- what is served -------------------------------------------------------------------------

    @property
    def view(self) -> AgentView | None:
        """The agent view of a caller every server admits (None before a config is applied)."""
        return self._views.full.view

    @property
    def instructions(self) -> str:
        """The effective instructions of that view ("" before a config is applied)."""
        return self.view.instructions if self.view is not None else ""

    @property
    def instructions_revision(self) -> str | None:
        return self.view.instructions_revision if self.view is not None else None

    def tools(self) -> list[mcp_types.Tool]:
        """Every tool the agent gets, all pages, whoever the caller: built once per change."""
        return list(self._views.full.tools)

    def context(self, session: str) -> CallerContext:
        """The caller of a hub session (ANONYMOUS when its connections sent none)."""
        return self._contexts.get(session, ANONYMOUS)

    def served(self, session: str) -> Served:
        """What a hub session lists and reads: without the servers its caller may not use."""
        return self._views.of(self.context(session))

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        # The SDK asks without a session: any caller's schema (a hidden server's tool is
        # refused by the manager, with its audit row).
        entry = self._views.full.by_name.get(name)
        return entry.input_schema if entry is not None else None

    async def _call(
        self,
        name: str,
        arguments: dict[str, Any],
        session: str,
        *,
        channel: CallChannel = NO_CHANNEL,
        meta: Mapping[str, Any] | None = None,
        request: Mapping[str, AttributeValue] | None = None,
    ) -> mcp_types.CallToolResult:
        """Forward a call; every failure is a result whose text the agent can say. A caller
        that cancels cancels the call (the manager records it, the upstream request ends).
        Its SERVER span continues the trace of the `traceparent` in `meta`; `request` adds
        the request's attributes (id, protocol version)."""
        attributes = {**tracing.call_attributes(name, session=session), **(request or {}),
                      "network.transport": "tcp", "network.protocol.name": "http"}  # fmt: skip
        with tracing.span(
            f"tools/call {name}", kind=SpanKind.SERVER, attributes=attributes,
            context=tracing.extract(meta),
        ) as span:  # fmt: skip
            result = await self._forward(name, arguments, session, channel=channel, meta=meta)
            tracing.tool_result(span, result)
            return result

    async def _forward(
        self,
        name: str,
        arguments: dict[str, Any],
        session: str,
        *,
        channel: CallChannel,
        meta: Mapping[str, Any] | None,
    ) -> mcp_types.CallToolResult:
        if name not in self._views.full.by_name and name in self.manager.catalog.entries:
            return error_result(results.unknown_tool(name))  # a server the agent does not select
        # One of a server this caller may not use goes on: the manager refuses and audits it.
        try:
            result = await self.manager.call(
                name, arguments, session=session, channel=channel,
                confirmation=confirmation_of(meta), context=self.context(session),
            )  # fmt: skip
        except Exception:  # e.g. the server went away between lookup and call
            log.exception("tool call %s failed in the hub", name)
            return error_result(f"The {name} tool is unavailable right now.")
        return _own(result)

    def _mcp_server(self) -> Server[Any]:
        async def list_tools(
            ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListToolsResult:
            served = self.served(self._track(ctx))
            return served.page(params.cursor if params is not None else None)

        async def call_tool(
            ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
        ) -> mcp_types.CallToolResult | mcp_types.InputRequiredResult:
            protocol = ctx.session.protocol_version
            request: dict[str, AttributeValue] = {"jsonrpc.request.id": str(ctx.request_id)}
            if protocol:
                request["mcp.protocol.version"] = protocol
            if protocol in MODERN_PROTOCOL_VERSIONS:
                session = self._track(ctx)
                return await self._rounds.serve(ctx, params, lambda channel: self._call(
                    params.name, dict(params.arguments or {}), session, channel=channel,
                    meta=params.meta, request=request,
                ))  # fmt: skip
            return await self._call(
                params.name, dict(params.arguments or {}), self._track(ctx),
                channel=channel_of(ctx), meta=params.meta, request=request,
            )  # fmt: skip

        async def list_prompts(
            ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListPromptsResult:
            view = self.served(self._track(ctx)).view
            revision = view.instructions_revision if view is not None else None
            prompt = mcp_types.Prompt(
                name=PROMPT_NAME, description=f"The agent's effective instructions ({revision})"
            )
            return mcp_types.ListPromptsResult(prompts=[prompt])

        async def get_prompt(
            ctx: ServerRequestContext[Any], params: mcp_types.GetPromptRequestParams
        ) -> mcp_types.GetPromptResult:
            if params.name != PROMPT_NAME:
                raise MCPError(mcp_types.INVALID_PARAMS, f"unknown prompt {params.name!r}")
            view = self.served(self._track(ctx)).view
            text = mcp_types.TextContent(type="text", text=view.instructions if view else "")
            return mcp_types.GetPromptResult(
                description=view.instructions_revision if view is not None else None,
                messages=[mcp_types.PromptMessage(role="user", content=text)],
            )

        async def list_resources(
            ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListResourcesResult:
            resource = mcp_types.Resource(
                uri=AGENT_VIEW_URI, name="agent", mimeType="application/json",
                description="The agent view for jobs: spec, instructions, revision",
            )  # fmt: skip
            return mcp_types.ListResourcesResult(resources=[resource])

        async def read_resource(
            ctx: ServerRequestContext[Any], params: mcp_types.ReadResourceRequestParams
        ) -> mcp_types.ReadResourceResult:
            if params.uri != AGENT_VIEW_URI:
                raise MCPError(mcp_types.INVALID_PARAMS, f"unknown resource {params.uri!r}")
            session = self._track(ctx)
            view = self.served(session).view
            if view is None:
                raise MCPError(mcp_types.INTERNAL_ERROR, "no config applied yet")
            self._revisions[session] = view.revision
            text = json.dumps(view.to_json())
            contents = mcp_types.TextResourceContents(
                uri=AGENT_VIEW_URI, mimeType="application/json", text=text
            )
            return mcp_types.ReadResourceResult(contents=[contents])

        return _HubServer(
            "jackfield-hub",
            version=__version__,
            instructions="Tools of the MCP servers that jackfield manages.",
            get_tool_input_schema=self._input_schema,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_list_prompts=list_prompts,
            on_get_prompt=get_prompt,
            on_list_resources=list_resources,
            on_read_resource=read_resource,
            on_subscriptions_listen=self._listen,
        )

    # --- hub sessions -----------------------------------------------------------------------------

    async def _middleware(
        self, ctx: ServerRequestContext[Any], call_next: CallNext
    ) -> HandlerResult:
        key = self._track(ctx)
        reopening = self._reopening.get(key)
        if reopening is not None:
            # The old caller's `scope: session` servers go before this request can reach one
            # (a 2026-07-28 request is its connection's first: its call follows right away).
            await asyncio.wait([reopening])
        return await call_next(ctx)

    def _track(self, ctx: ServerRequestContext[Any]) -> str:
        """Remember the client connection for announcements and its session's caller context;
        return its hub session key."""
        # The SDK hands handlers a per-request proxy; the per-client Connection behind it is
        # what carries standalone notifications and a teardown hook.
        connection: Connection = ctx.session._connection  # noqa: SLF001
        key = self._connections.get(connection)
        if key is None:
            headers = getattr(ctx.request, "headers", None) or {}
            key = headers.get(SESSION_HEADER) or connection.session_id or f"c{next(self._ids)}"
            self._connections[connection] = key
            self._holders[key] += 1
            connection.exit_stack.callback(self._connection_gone, connection)
            self._caller(key, headers.get(CONTEXT_HEADER))
        return key

    def _caller(self, key: str, header: str | None) -> None:
        """A new connection of session `key` says who its caller is (the guard checked it)."""
        try:
            context = CallerContext.from_header(header) if header else ANONYMOUS
        except ValueError:  # not through the guard (it answers 400): the least it can be
            context = ANONYMOUS
        known = self._contexts.get(key)
        self._contexts[key] = context
        if known is None or known == context:
            return
        # never the values: they are secrets
        log.info("hub session %s has a new caller context: its scope: session servers reopen",
                 key)  # fmt: skip
        task = self._spawn(self.manager.close_session(key))
        self._reopening[key] = task
        task.add_done_callback(lambda t: self._reopened(key, t))

    def _reopened(self, key: str, task: asyncio.Task[None]) -> None:
        if self._reopening.get(key) is task:
            del self._reopening[key]

    def _connection_gone(self, connection: Connection) -> None:
        key = self._connections.pop(connection, None)
        if key is None:
            return
        self._holders[key] -= 1
        if self._holders[key] <= 0:
            del self._holders[key]
            self._revisions.pop(key, None)
            self._contexts.pop(key, None)
            self._spawn(self.manager.close_session(key))

    # --- announcements ----------------------------------------------------------------------------

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """A new applied config: the agent's selectors and prompt texts may have changed."""
        self.snapshot = snapshot
        self._rebuild()

    def _on_catalog(self, change: CatalogChange) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        """The agent views, once per applied snapshot and catalog change; announce what moved:
        `tools` when what a client would list changed (not for unselected servers), `prompts`
        when a view (instructions, spec) did. Every client hears it and rereads its own."""
        if self.snapshot is None:
            return
        ready = {n for n, state in self.manager.states().items() if state in SERVING_STATES}
        now = asyncio.get_running_loop().time()
        moved = self._views.rebuild(
            self.snapshot, ready, self.manager.catalog.entries.values(), self.manager.specs(),
            realtime=not self.cooldown.active(now),
        )  # fmt: skip
        if moved.tools:
            self._announce(tools=True, prompts=False)
        if moved.prompts:
            self._announce(tools=False, prompts=True)

    # --- what jobs report -------------------------------------------------------------------------

    def _on_agent_event(
        self, session: str, event: dict[str, Any], context: CallerContext | None = None
    ) -> None:
        if event["event"] == "confirmation":
            # the caller who was asked: the report's own context, else its session's
            asked = context if context is not None else self.context(session)
            self._confirmation_refused(session, event, asked)
            return
        if event["event"] == "update_rejected":
            self.rejected_updates += 1
            # upstream text, shown in /status: masked like everything jackfield shows
            self.last_rejected_update = redact(str(event.get("message") or ""))[:300]
            if session in self._revisions:
                self._revisions[session] = f"rejected:{self._revisions[session]}"
            return
        if event["event"] != "fallback":
            log.debug("ignored agent event %r from %s", event["event"], session)
            return
        reason = str(event.get("reason") or "unknown")[:64]
        self.fallbacks[reason] += 1
        log.warning("session %s moved to the fallback pipeline: %s", session, reason)
        if not event.get("realtime_failed"):
            return
        loop = asyncio.get_running_loop()
        if self.cooldown.failed(loop.time()):
            log.warning(
                "realtime failed %d times in %.0f s: new sessions start on the fallback for %.0f s",
                self.cooldown.failures, self.cooldown.window, self.cooldown.cooldown,
            )  # fmt: skip
            if self._cooldown_timer is not None:
                self._cooldown_timer.cancel()
            self._cooldown_timer = loop.call_later(self.cooldown.cooldown + 0.01, self._rebuild)
            self._rebuild()

    def _confirmation_refused(
        self, session: str, event: dict[str, Any], context: CallerContext = ANONYMOUS
    ) -> None:
        """A job asked the caller to confirm a call and heard no, or nothing: no call was made.
        (A yes travels with the call itself, in its `_meta`.)"""
        tool, question, answer = event.get("tool"), event.get("question"), event.get("answer")
        if not isinstance(tool, str) or not isinstance(question, str) or answer not in (
                "no", "timeout"):  # fmt: skip
            log.debug("ignored a malformed confirmation report from %s", session)
            return
        if not self.manager.confirmation_refused(
            tool, question, answer, session=session, context=context
        ):
            log.debug("confirmation report for unknown tool %r from %s", tool[:100], session)

    def agent_sessions_by_revision(self) -> dict[str, int]:
        """Open agent jobs per agent view revision they were built from."""
        counts: Counter[str] = Counter()
        for key in set(self._connections.values()):
            if key.startswith("job-"):
                counts[self._revisions.get(key, "unknown")] += 1
        return dict(counts)

    def _announce(self, *, tools: bool, prompts: bool) -> None:
        self.announcements += 1
        self._spawn(self._broadcast(tools=tools, prompts=prompts))

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _broadcast(self, *, tools: bool, prompts: bool) -> None:
        # 2026-07-28 clients hear it on their `subscriptions/listen` streams, fed by the bus.
        if tools:
            await self._bus.publish(ToolsListChanged())
        if prompts:
            await self._bus.publish(PromptsListChanged())
        handshake_era = [
            c
            for c in self._connections
            if c.protocol_version not in MODERN_PROTOCOL_VERSIONS and c.initialized.is_set()
        ]
        await asyncio.gather(*(self._tell(c, tools=tools, prompts=prompts) for c in handshake_era))

    @staticmethod
    async def _tell(connection: Connection, *, tools: bool, prompts: bool) -> None:
        """One handshake-era client, bounded: a client that stopped reading holds up no one."""
        try:
            async with asyncio.timeout(ANNOUNCE_TIMEOUT):
                if tools:
                    await connection.send_tool_list_changed()
                if prompts:
                    await connection.send_prompt_list_changed()
        except TimeoutError:
            log.debug(
                "announcement to %s skipped: the client is not reading", connection.session_id
            )

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    def status(self) -> HubStatus:
        return HubStatus(
            url=self.url, tools=len(self.tools()), sessions=len(self._connections),
            max_sessions=self.max_sessions, refused_sessions=self.refused_sessions,
        )  # fmt: skip

    def _refused(self) -> bytes:
        self.refused_sessions += 1
        log.warning("refused a new hub session: %d are open, the limit", self.max_sessions)
        message = (
            f"The hub has {self.max_sessions} open sessions, its limit"
            " (JACKFIELD_HUB_MAX_SESSIONS): close an unused session or try again shortly."
        )
        error = {"code": mcp_types.INTERNAL_ERROR, "message": message}
        return json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()

    def agent_sessions(self) -> int:
        """Connections of jackfield's own agent jobs (they identify themselves by header)."""
        return sum(1 for key in self._connections.values() if key.startswith("job-"))

    async def start(self) -> None:
        app = _refusals(
            self._server.streamable_http_app(
                host=self.host, max_sessions=self.max_sessions,
                session_idle_timeout=self.session_idle,
            ),
            self._refused,
        )  # fmt: skip
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            _bearer(self.token, app, self._on_agent_event), log_level="warning", lifespan="on",
            access_log=False, timeout_graceful_shutdown=2,
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
        await self._rounds.stop()
        if self._cooldown_timer is not None:
            self._cooldown_timer.cancel()
        self._listen.close()  # listen streams end gracefully rather than hold up the shutdown
        if self._uvicorn is not None and self._task is not None:
            self._uvicorn.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
        # Ended sessions close their `scope: session` servers; let that finish, bounded.
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=STOP_GRACE)
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
