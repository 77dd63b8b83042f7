"""One supervisor per MCP server: the single owner task of its connection, and the call path.

The owner task connects (shell/transports.py), lists tools, then waits for whatever ends the
connection (stop, the process exiting, the server closing the stream, a failed health check, an
expired HTTP session) and backs off before the next attempt. Other tasks only *use* the
connection (calls) and never enter or exit its context (STYLE.md habit 4). What each event
means for the server's state, backoff and grace is core/lifecycle.py's to say; state changes
are announced through `on_change`.

During a call the server may talk back (docs/voice.md): its progress notices and its questions
(elicitation, which jackfield's client declares) go to the call's `CallChannel`; its sampling
requests are refused in words (jackfield declares no sampling). Each is counted in `voice`.

docs/manager.md has the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import mcp_types
from mcp import Client
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REQUEST_TIMEOUT,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from jackfield.core import lifecycle
from jackfield.core import tool_results as results
from jackfield.core.catalog import UpstreamTool
from jackfield.core.connection import Connection
from jackfield.core.failures import failure_of
from jackfield.core.lifecycle import DEFAULT_TIMING, Life, Timing
from jackfield.core.status import SERVING_STATES, ServerState, ServerStatus, utcnow
from jackfield.errors import ConnectionLost, PermanentError, SessionExpired
from jackfield.shell import tracing
from jackfield.shell.call_channel import (
    NO_CHANNEL,
    NO_QUESTIONS,
    SAMPLING_REFUSED,
    UNROUTED_ELICITATION,
    CallChannel,
    CallProgress,
    VoiceCounts,
    calling_now,
)
from jackfield.shell.credentials import Credentials
from jackfield.shell.redaction import redact, redact_tree, register_secrets
from jackfield.shell.stdio import Tail, Warden
from jackfield.shell.transports import Link, connect, short
from jackfield.spec.models import MCPServerSpec

__all__ = ["DEFAULT_TIMING", "ProtocolMode", "Supervisor", "Timing", "Unavailable"]

log = logging.getLogger(__name__)

UPSTREAM_MESSAGE_MAX = 200
"""An upstream error message is cut to this many characters in a call's result."""
SDK_ERRORS: tuple[tuple[int, str], ...] = (
    (CONNECTION_CLOSED, "Connection closed"),
    (CONNECTION_CLOSED, "SSE stream "),
    (CONNECTION_CLOSED, "server answered a request with 202"),
    (INTERNAL_ERROR, "Server returned an error response"),
    (INVALID_REQUEST, "Session terminated"),
    (INVALID_REQUEST, "Unexpected content type"),
    (METHOD_NOT_FOUND, "Not Found"),
    (PARSE_ERROR, "Failed to parse"),
)
"""(code, message start) of the errors the SDK makes up itself for a request that got no
JSON-RPC answer (mcp/shared/jsonrpc_dispatcher.py, mcp/client/streamable_http.py): the
connection closed, the HTTP exchange broke. Any other error response is the server answering,
even with -32000 (the start of JSON-RPC's range for server errors, which the SDK reuses)."""

STOP_TIMEOUT = 20.0
"""A stop that takes longer than this (a hung HTTP teardown) cancels the owner task. A stdio
shutdown is bounded by stdio.STDIN_GRACE + 2 * TERM_GRACE, well within it."""

ProtocolMode = Literal["auto", "legacy"]
"""How to negotiate the protocol: `auto` tries 2026-07-28 (`server/discover`) first and falls
back to the initialize handshake; `legacy` uses the handshake only."""


def _traced() -> mcp_types.RequestParamsMeta | None:
    """The upstream request's `_meta`: the current span's `traceparent` (SEP-414)."""
    return cast(mcp_types.RequestParamsMeta | None, tracing.inject(None))


class Unavailable(Exception):
    """A call that cannot be made now; the message is speakable.

    `reason` is `timeout` (the tool did not answer in time) or `unavailable` (anything else).
    """

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class Supervisor:
    def __init__(
        self,
        name: str,
        spec: MCPServerSpec,
        connection: Connection,
        *,
        on_change: Callable[[], None],
        warden: Warden | None = None,
        timing: Timing = DEFAULT_TIMING,
        mode: ProtocolMode = "auto",
        voice: VoiceCounts | None = None,
        fresh: Callable[[], Connection | None] = lambda: None,
    ) -> None:
        """`fresh`: this server's connection resolved anew (its secret files read now), for
        the credentials to try after a 401."""
        self.name = name
        self.spec = spec
        self.connection = connection
        self.on_change = on_change
        self.warden = warden
        self.timing = timing
        self.mode = mode
        # before any connect can log the URL, args or headers these values are in
        register_secrets(connection.secrets)
        self.tail = Tail(secrets=connection.secrets)
        self.credentials = (
            Credentials(name, connection, fresh=fresh, adopt=self._adopt)
            if connection.transport != "stdio"
            else None
        )
        self.life: Life = lifecycle.start(spec.enabled, _now())
        self.calls_in_flight = 0
        self.voice: VoiceCounts = voice if voice is not None else Counter()
        """What the voice features saw of this server (shared by its session connections)."""
        self._channels: list[CallChannel] = []
        """One per call in flight, in the order they started."""
        self.health_checks = 0
        """Health checks passed (over every connection)."""
        self._link: Link | None = None
        """The connection the owner task is making or serving; None between attempts."""
        self._served: Link | None = None
        """The last connection that got Ready: its tools stay listed through the grace."""
        self._checking = False
        """A health check or tools refresh is waiting for the server."""
        self._last_activity = time.monotonic()
        self._stopping = False
        self._refresh = False
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None

    # --- lifecycle (called by the manager) ----------------------------------------------------

    def start(self) -> None:
        if self.spec.enabled:
            with tracing.untraced():  # the connection outlives the pass or call starting it
                self._task = asyncio.create_task(self._own(), name=f"server-{self.name}")

    async def stop(self) -> None:
        """Close the connection (stdio: the MCP shutdown of the whole process group) and end
        the owner task. A connection attempt in progress is abandoned at once."""
        self._stopping = True
        self._wake.set()
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        task = self._task
        if task is not None:
            link = self._link
            if self._checking or (link is not None and link.phase == "connecting"):
                task.cancel()  # do not wait out a deadline
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
            if not done:
                log.warning("server %s: no clean stop within %g s", self.name, STOP_TIMEOUT)
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._served = None
        if self.credentials is not None:
            await self.credentials.aclose()

    def rotate(self, connection: Connection) -> bool:
        """New values for the same connection fields (a secret file changed). An HTTP server
        gets them from its next request on, keeping its session: True. Anything else needs a
        reconnect (a process's env, a WebSocket's handshake): False, the manager restarts it."""
        if self.credentials is None or connection.transport == "websocket":
            return False
        self._adopt(connection)
        return True

    def _adopt(self, connection: Connection) -> None:
        """Take new values of the connection into the credentials (the next request's)."""
        register_secrets(connection.secrets)
        self.connection = connection
        self.tail.secrets = connection.secrets
        assert self.credentials is not None
        self.credentials.rotate(connection)

    def update(self, spec: MCPServerSpec) -> None:
        """A change that needs no reconnect (filters, prompt, limits, call timeout)."""
        self.spec = spec
        self.on_change()

    # --- what the catalog and status see ------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self.life.state

    @property
    def restarts(self) -> int:
        return self.life.restarts

    @property
    def last_error(self) -> str | None:
        return self.life.last_error

    @property
    def last_connected(self) -> datetime | None:
        return self.life.last_connected

    @property
    def grace_until(self) -> float | None:
        """Monotonic, like the event loop's clock."""
        return self.life.grace_until

    @property
    def tools(self) -> tuple[UpstreamTool, ...]:
        return self._served.tools if self._served is not None else ()

    @property
    def protocol(self) -> str | None:
        return self._served.protocol if self._served is not None else None

    @property
    def server_info(self) -> dict[str, Any]:
        return self._served.server_info if self._served is not None else {}

    @property
    def pid(self) -> int | None:
        return self._link.pid if self._link is not None else None

    @property
    def offered(self) -> tuple[UpstreamTool, ...]:
        """Tools to list: while connected, and during the grace after leaving Ready."""
        return self.tools if lifecycle.lists_tools(self.life, time.monotonic()) else ()

    def status(self, exposed: tuple[str, ...], conflicts: tuple[str, ...]) -> ServerStatus:
        """What status shows; every string the server supplied (its serverInfo, capabilities,
        protocol version, stderr, the errors it caused) with every secret masked."""
        secrets = self.connection.secrets
        extra: dict[str, Any] = {"calls_in_flight": self.calls_in_flight}
        if self._served is not None and self._served.capabilities:
            extra["capabilities"] = redact_tree(self._served.capabilities, secrets)
        if self.server_info:
            extra["server_info"] = redact_tree(self.server_info, secrets)
        if self.protocol:
            extra["protocol_version"] = redact(self.protocol, secrets)
        if self.pid is not None:
            extra["pid"] = self.pid
        if self.credentials is not None and self.credentials.auth_status is not None:
            extra["auth"] = self.credentials.auth_status.to_json()
        life = self.life
        return ServerStatus(
            name=self.name,
            transport=self.spec.transport,
            state=life.state,
            since=life.since,
            tools=exposed,
            restarts=life.restarts,
            next_retry_at=life.next_retry_at,
            last_error=redact(life.last_error, secrets) if life.last_error else None,
            stderr_tail=self.tail.text(),
            conflicts=conflicts,
            last_connected=life.last_connected,
            description=self.spec.description,
            extra=extra,
        )

    # --- calls --------------------------------------------------------------------------------

    async def call(
        self, tool: str, arguments: dict[str, Any], channel: CallChannel = NO_CHANNEL
    ) -> mcp_types.CallToolResult:
        """Forward one call, within `timeouts.call` (the upstream request is cancelled after,
        and when the caller cancels: `notifications/cancelled`, or the request closed on a
        2026-07-28 connection). The server's progress notices and questions during the call
        go to `channel`.

        An HTTP session that expired is renewed and the call sent once more: the server
        answered 404 without running it.

        Raises:
            Unavailable: the server cannot take the call, or it failed or timed out; the
                message is speakable and free of secrets.
        """
        progressed = CallProgress(channel, self.voice, self.connection.secrets, server=self.name)
        for attempt in range(2):
            link = self._link
            client = link.client if link is not None else None
            if link is None or client is None or self.state not in SERVING_STATES:
                raise Unavailable(results.unavailable(self.name, self.state))
            expiries = link.expiries
            self.calls_in_flight += 1
            self._channels.append(channel)
            calling = calling_now.set((self, channel))
            self._last_activity = time.monotonic()
            timeout = self.spec.timeouts.call
            try:
                with tracing.span(
                    f"tools/call {tool}", kind=SpanKind.CLIENT,
                    attributes=self._span_attributes(tool),
                ) as upstream:  # fmt: skip
                    # in case the SDK's own deadline hangs
                    async with asyncio.timeout(timeout + 1):
                        result = await self._request(upstream, client, tool, arguments, progressed)
            except TimeoutError:
                self._enter(lifecycle.CallFailed())
                raise Unavailable(results.timed_out(self.name, tool, timeout), "timeout") from None
            except MCPError as e:
                # a 404 for our session came back as an error: the server never ran the call
                refused = e.code not in (CONNECTION_CLOSED, REQUEST_TIMEOUT)
                if attempt == 0 and link.expiries != expiries and refused:
                    await self._renewed(link)
                    continue
                raise self._call_error(tool, link, e) from None
            except Exception as e:
                raise self._call_error(tool, link, e) from e
            finally:
                calling_now.reset(calling)
                self._channels.remove(channel)
                self.calls_in_flight -= 1
                self._last_activity = time.monotonic()
            self._enter(lifecycle.CallSucceeded())
            await progressed.settled()  # the notices sent before the result go before it
            return result
        raise Unavailable(results.unavailable(self.name, self.state))

    async def _request(
        self,
        upstream: Span,
        client: Client,
        tool: str,
        arguments: dict[str, Any],
        progressed: CallProgress,
    ) -> mcp_types.CallToolResult:
        """The `tools/call` itself, within its span: `traceparent` in its `_meta`."""
        try:
            result = await client.call_tool(
                tool, arguments, read_timeout_seconds=self.spec.timeouts.call,
                progress_callback=progressed, meta=_traced(),
            )  # fmt: skip
        except MCPError as e:
            upstream.set_attribute("rpc.response.status_code", str(e.code))
            tracing.error(upstream, str(e.code))
            raise
        tracing.tool_result(upstream, result)
        return result

    def _span_attributes(self, tool: str) -> dict[str, AttributeValue]:
        """The upstream request's span: the MCP conventions' attributes, the server's name, and
        where it is when the URL names no secret."""
        link = self._link
        attributes = tracing.call_attributes(tool, protocol=link.protocol if link else None)
        attributes["jackfield.server.name"] = self.name
        if self.spec.transport == "stdio":
            attributes["network.transport"] = "pipe"
            return attributes
        attributes["network.transport"] = "tcp"
        attributes["network.protocol.name"] = (
            "websocket" if self.spec.transport == "websocket" else "http"
        )
        url = self.spec.url or ""
        if "${" not in url:
            with contextlib.suppress(ValueError):
                where = urlsplit(url)
                if where.hostname:
                    attributes["server.address"] = where.hostname
                if where.port:
                    attributes["server.port"] = where.port
        return attributes

    # --- what the server asks of us during a call -----------------------------------------------

    def _caller(self) -> CallChannel | None:
        """Whose call a server-to-client request belongs to: the calling task's, when the SDK
        runs the callback in its context; else the only call in flight; else no one's."""
        calling = calling_now.get()
        if calling is not None and calling[0] is self and calling[1] in self._channels:
            return calling[1]
        return self._channels[0] if len(self._channels) == 1 else None

    async def on_elicit(
        self, context: ClientRequestContext, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        """An `elicitation/create` (handshake era) or an `input_required` elicitation
        (2026-07-28): handed, as it came, to the caller whose call it belongs to. When that
        cannot be known, or the caller takes no questions, the server gets an error saying so.
        """
        channel = self._caller()
        if channel is None or channel.elicit is None:
            why = UNROUTED_ELICITATION if channel is None else NO_QUESTIONS
            self.voice["elicitation", "refused"] += 1
            log.info("server %s: elicitation refused: %s", self.name, why)
            return mcp_types.ErrorData(code=INVALID_REQUEST, message=why)
        try:
            # bounded like the call: on stdio this runs in the reader task, which the call's
            # own deadline does not reach
            async with asyncio.timeout(self.spec.timeouts.call):
                answer = await channel.elicit(params)
        except Exception as e:  # the caller went away mid-question, or never answered
            log.debug("server %s: elicitation not answered: %s", self.name, short(e))
            answer = mcp_types.ErrorData(
                code=INTERNAL_ERROR, message="the question could not reach the caller"
            )
        outcome = answer.action if isinstance(answer, mcp_types.ElicitResult) else "refused"
        self.voice["elicitation", outcome] += 1
        return answer

    async def on_sample(
        self, context: ClientRequestContext, params: mcp_types.CreateMessageRequestParams
    ) -> (
        mcp_types.CreateMessageResult | mcp_types.CreateMessageResultWithTools | mcp_types.ErrorData
    ):
        """Every `sampling/createMessage` is refused, in words, and counted."""
        self.voice["sampling", "refused"] += 1
        log.info("server %s asked to sample the agent's model: refused", self.name)
        return mcp_types.ErrorData(code=INVALID_REQUEST, message=SAMPLING_REFUSED)

    def _call_error(self, tool: str, link: Link, e: Exception) -> Unavailable:
        timeout = self.spec.timeouts.call
        if isinstance(e, MCPError) and e.code == REQUEST_TIMEOUT:
            self._enter(lifecycle.CallFailed())
            return Unavailable(results.timed_out(self.name, tool, timeout), "timeout")
        if isinstance(e, MCPError) and e.code == INVALID_PARAMS:
            problem = e.message  # the caller's mistake, not the server's
        elif isinstance(e, MCPError) and e.message in (
            SAMPLING_REFUSED, UNROUTED_ELICITATION, NO_QUESTIONS
        ):  # fmt: skip
            # our own refusal of an `input_required` round, raised by the SDK's client
            problem = e.message
        elif isinstance(e, MCPError) and answered(e):
            # the server answered: its connection works, whatever the answer says
            message = " ".join(redact(e.message, self.connection.secrets).split())
            if len(message) > UPSTREAM_MESSAGE_MAX:
                message = message[: UPSTREAM_MESSAGE_MAX - 3] + "..."
            problem = f"the server answered with an error: {message or f'code {e.code}'}"
        else:
            self._enter(lifecycle.CallFailed())
            lost = (isinstance(e, MCPError) and e.code == CONNECTION_CLOSED) or (
                not isinstance(e, MCPError) and self._link is not link
            )
            problem = "the connection to the server was lost" if lost else short(e)
        return Unavailable(
            results.speakable(self.name, tool, redact(problem, self.connection.secrets))
        )

    async def wait_ready(self, timeout: float) -> None:
        """Wait, bounded, for the first connection (a session-scoped server on first use)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    async def _renewed(self, stale: Link) -> None:
        """Have the owner task reconnect (unless it already did) and wait, bounded, until the
        new connection is Ready."""
        if self._link is stale:
            self._ready.clear()
            stale.expire()
        await self.wait_ready(self.spec.timeouts.connect)

    # --- the owner task -----------------------------------------------------------------------

    async def _own(self) -> None:
        try:
            while not self._stopping:
                self._enter(lifecycle.Connect(listed=bool(self.tools)))
                link = self._link = Link(
                    self.connection, wake=self._wake.set, credentials=self.credentials
                )
                error: Exception | None = None
                try:
                    async with connect(
                        link,
                        mode=self.mode,
                        on_message=self._on_message,
                        on_elicit=self.on_elicit,
                        on_sample=self.on_sample,
                        tail=self.tail,
                        warden=self.warden,
                    ):
                        self._served = link
                        self._last_activity = time.monotonic()
                        self._enter(lifecycle.Connected())
                        self._ready.set()
                        await self._serve(link)
                except Exception as e:  # ours: transports.connect words every failure
                    error = e
                finally:
                    self._link = None
                    self._ready.clear()
                if self._stopping:
                    break
                assert error is not None  # serving ends with an error unless we stop
                self._enter(lifecycle.Ended(failure_of(error), listed=bool(self.tools)))
                if self.state == "Failed":
                    log.warning("server %s failed: %s", self.name, self.last_error)
                    await self._wait_stop()
                    return
                if self.state == "Backoff":
                    log.warning("server %s: %s", self.name, self.last_error)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_stop(), self.life.delay)
                else:
                    log.info("server %s: %s", self.name, self.last_error)
        except Exception as e:  # a bug of ours: say so rather than sit in Connecting forever
            log.exception("server %s: the supervisor failed", self.name)
            error_text = f"internal error: {type(e).__name__}: {e}"
            self.life = dataclasses.replace(self.life, state="Failed", last_error=error_text)
            self.on_change()
        finally:
            self._link = None

    async def _wait_stop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _serve(self, link: Link) -> None:
        """Until something ends the connection: refresh tools on change, check health when idle.

        Raises:
            ConnectionLost: the process exited, the stream closed, or the health check failed.
            SessionExpired: the HTTP server forgot our session.
        """
        listener = None
        if link.protocol in MODERN_PROTOCOL_VERSIONS:
            listener = asyncio.create_task(self._listen(link), name=f"listen-{self.name}")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.timing.health_interval)
                self._wake.clear()
                if self._stopping:
                    return
                if link.fatal is not None:
                    raise PermanentError(link.fatal)
                if link.lost is not None:
                    raise ConnectionLost(link.lost)
                if link.expired:
                    raise SessionExpired()
                self._checking = True
                if self._refresh:
                    self._refresh = False
                    await link.refresh()
                    self.on_change()
                idle = time.monotonic() - self._last_activity
                if idle >= self.timing.health_interval and self.calls_in_flight == 0:
                    await link.check(self.timing.health_timeout)
                    self.health_checks += 1
                    self._last_activity = time.monotonic()
                self._checking = False
        finally:
            self._checking = False
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, link: Link) -> None:
        """2026-07-28 servers announce changes on a `subscriptions/listen` stream."""
        assert link.client is not None
        try:
            async with link.client.listen(tools_list_changed=True) as subscription:
                self._request_refresh()  # a change between our tools/list and the ack
                async for _event in subscription:
                    self._request_refresh()
        except Exception as e:  # the stream is optional: the connection itself may be fine
            log.debug("server %s: no change stream: %s", self.name, short(e))

    def _request_refresh(self) -> None:
        self._refresh = True
        self._wake.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._request_refresh()
        elif isinstance(message, Exception):
            log.debug("server %s: transport error: %s", self.name, short(message))

    # --- state --------------------------------------------------------------------------------

    def _enter(self, event: lifecycle.Event) -> None:
        """Apply one lifecycle event; announce it if status shows the difference."""
        before, now = self.life, _now()
        self.life = life = lifecycle.step(before, event, now, self.timing, random.random)
        if life.grace_until != before.grace_until:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
            if life.grace_until is not None:  # withdraw the tools when the grace ends
                loop = asyncio.get_running_loop()
                delay = life.grace_until - now.mono + 0.01
                self._grace_timer = loop.call_later(delay, self.on_change)
        if dataclasses.replace(life, failures=before.failures) != before:
            self.on_change()

    def __repr__(self) -> str:
        return f"Supervisor({self.name!r}, {self.state})"


def answered(e: MCPError) -> bool:
    """Whether `e` is the server's JSON-RPC error response, not one the SDK made up."""
    return not any(e.code == code and e.message.startswith(start) for code, start in SDK_ERRORS)


def _now() -> lifecycle.Instant:
    return lifecycle.Instant(mono=time.monotonic(), wall=utcnow())
