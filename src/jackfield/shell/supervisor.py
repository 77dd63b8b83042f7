"""One supervisor per MCP server: the single owner task of its connection.

The owner task connects, lists tools, then waits for whatever ends the connection (stop, the
process exiting, the server closing the stream, a failed health check, an expired HTTP session)
and backs off before the next attempt. Other tasks only *use* the connection (calls) and never
enter or exit its context (STYLE.md habit 4). State changes are announced through `on_change`.

    Pending -> Connecting -> Ready <-> Degraded
                   ^           |
                   +- Backoff <+        Failed (retrying cannot help)     Disabled

docs/manager.md has the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import aiohttp
import anyio
import httpx2
import mcp_types
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from jackfield import __version__
from jackfield.core import results
from jackfield.core.catalog import UpstreamTool
from jackfield.core.connection import Connection, redact
from jackfield.core.status import ServerState, ServerStatus, utcnow
from jackfield.errors import PermanentError
from jackfield.shell.stdio import StdioTransport, Tail, Warden, describe_exit
from jackfield.shell.websocket import websocket_client
from jackfield.spec.models import MCPServerSpec

log = logging.getLogger(__name__)

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
STOP_TIMEOUT = 20.0
"""A stop that takes longer than this (a hung HTTP teardown) cancels the owner task. A stdio
shutdown is bounded by stdio.STDIN_GRACE + 2 * TERM_GRACE, well within it."""
SESSION_HEADER = "mcp-session-id"

ProtocolMode = Literal["auto", "legacy"]
"""How to negotiate the protocol: `auto` tries 2026-07-28 (`server/discover`) first and falls
back to the initialize handshake; `legacy` uses the handshake only."""


@dataclass(frozen=True)
class Timing:
    """Supervision clocks (seconds); tests shrink them."""

    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    backoff_reset: float = 600.0
    """Ready this long, and the next failure backs off from `backoff_base` again."""
    health_interval: float = 30.0
    """An idle connection is checked this often (ping, or `server/discover` on 2026-07-28)."""
    health_timeout: float = 10.0
    grace: float = 30.0
    """Tools of a server that left Ready stay listed this long (calls fail fast meanwhile)."""
    degraded_after: int = 3
    """Consecutive failed calls that mark a connected server Degraded."""


DEFAULT_TIMING = Timing()


class ConnectionLost(Exception):
    """The connection ended underneath us; the message says how."""


class SessionExpired(ConnectionLost):
    """The HTTP server forgot our session (404): reconnect at once, not after a backoff."""


class Unavailable(Exception):
    """A call that cannot be made now; the message is speakable.

    `reason` is `timeout` (the tool did not answer in time) or `unavailable` (anything else).
    """

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


def backoff(attempt: int, timing: Timing, rand: Callable[[], float] = random.random) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)]."""
    return float(rand() * min(timing.backoff_cap, timing.backoff_base * 2**attempt))


def _tool(t: mcp_types.Tool) -> UpstreamTool:
    annotations = t.annotations.model_dump(exclude_none=True) if t.annotations else None
    return UpstreamTool(t.name, t.description or "", t.input_schema, annotations)


def leaves(e: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, in order; `e` itself if not a group."""
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            yield from leaves(inner)
    else:
        yield e


def root_cause(e: BaseException) -> BaseException:
    """The exception that says what happened: anyio task groups wrap the real error (often
    next to the cancellations it caused) in ExceptionGroups."""
    found = [x for x in leaves(e) if not isinstance(x, asyncio.CancelledError)] or [e]
    for kind in (PermanentError, ConnectionLost):
        for x in found:
            if isinstance(x, kind):
                return x
    return found[0]


def _short(e: BaseException) -> str:
    e = root_cause(e)
    if isinstance(e, MCPError):
        return e.message
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:300]


def _what(e: BaseException) -> str:
    """`ReadError`, or `RemoteProtocolError: Server disconnected` when the message says more."""
    name, detail = type(e).__name__, _short(e)
    return name if detail in ("", name) else f"{name}: {detail}"


def _in_chain(e: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = e
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _WatchedRead:
    """A transport's read stream that reports its end: a server that closes the connection
    is noticed at once, whatever the transport."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedRead:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedRead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _watched(transport: Any, on_end: Callable[[], None]) -> AsyncIterator[Any]:
    async with transport as (read, write):
        yield _WatchedRead(read, on_end), write


Phase = Literal["idle", "connecting", "serving", "closing"]


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
    ) -> None:
        self.name = name
        self.spec = spec
        self.connection = connection
        self.on_change = on_change
        self.warden = warden
        self.timing = timing
        self.mode = mode
        self.state: ServerState = "Pending" if spec.enabled else "Disabled"
        self.since = utcnow()
        self.restarts = 0
        self.next_retry_at: datetime | None = None
        self.last_error: str | None = None
        self.last_connected: datetime | None = None
        self.tools: tuple[UpstreamTool, ...] = ()
        self.capabilities: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}
        self.protocol: str | None = None
        self.tail = Tail(secrets=connection.secrets)
        self.grace_until: float | None = None
        self.calls_in_flight = 0
        self.health_checks = 0
        """Health checks passed (over every connection)."""
        self._client: Client | None = None
        self._transport: StdioTransport | None = None
        self._phase: Phase = "idle"
        self._checking = False
        """A health check or tools refresh is waiting for the server."""
        self._deadline: asyncio.Timeout | None = None
        self._http_status: int | None = None
        self._lost: str | None = None
        self._cut_short = False
        """The connect deadline was brought forward because the connection ended."""
        self._failures = 0
        self._last_activity = time.monotonic()
        self._stopping = False
        self._wake = asyncio.Event()
        self._refresh = False
        self._expired = False
        self._expiries = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None

    # --- lifecycle (called by the manager) ----------------------------------------------------

    def start(self) -> None:
        if self.spec.enabled:
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
            if self._phase == "connecting" or self._checking:  # do not wait out a deadline
                task.cancel()
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
            if not done:
                log.warning("server %s: no clean stop within %g s", self.name, STOP_TIMEOUT)
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.tools = ()

    def update(self, spec: MCPServerSpec) -> None:
        """A change that needs no reconnect (filters, prompt, limits, call timeout)."""
        self.spec = spec
        self.on_change()

    # --- what the catalog sees ----------------------------------------------------------------

    @property
    def offered(self) -> tuple[UpstreamTool, ...]:
        """Tools to list: while connected, and during the grace after leaving Ready."""
        if self.state in ("Ready", "Degraded"):
            return self.tools
        if self.grace_until is not None and time.monotonic() < self.grace_until:
            return self.tools
        return ()

    def status(self, exposed: tuple[str, ...], conflicts: tuple[str, ...]) -> ServerStatus:
        extra: dict[str, Any] = {"calls_in_flight": self.calls_in_flight}
        if self.capabilities:
            extra["capabilities"] = self.capabilities
        if self.server_info:
            extra["server_info"] = self.server_info
        if self.protocol:
            extra["protocol_version"] = self.protocol
        if self.pid is not None:
            extra["pid"] = self.pid
        return ServerStatus(
            name=self.name,
            transport=self.spec.transport,
            state=self.state,
            since=self.since,
            tools=exposed,
            restarts=self.restarts,
            next_retry_at=self.next_retry_at,
            last_error=self.last_error,
            stderr_tail=self.tail.text(),
            conflicts=conflicts,
            last_connected=self.last_connected,
            description=self.spec.description,
            extra=extra,
        )

    @property
    def pid(self) -> int | None:
        transport = self._transport
        return transport.pid if transport is not None and not transport.exited.is_set() else None

    # --- calls --------------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Forward one call, within `timeouts.call` (the upstream request is cancelled after).

        An HTTP session that expired is renewed and the call sent once more: the server
        answered 404 without running it.

        Raises:
            Unavailable: the server cannot take the call, or it failed or timed out; the
                message is speakable and free of secrets.
        """
        for attempt in range(2):
            client = self._client
            if client is None or self.state not in ("Ready", "Degraded"):
                raise Unavailable(results.unavailable(self.name, self.state))
            expiries = self._expiries
            self.calls_in_flight += 1
            self._last_activity = time.monotonic()
            timeout = self.spec.timeouts.call
            try:
                async with asyncio.timeout(timeout + 1):  # in case the SDK's own deadline hangs
                    result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout)
            except TimeoutError:
                self._call_failed()
                raise Unavailable(results.timed_out(self.name, tool, timeout), "timeout") from None
            except MCPError as e:
                # a 404 for our session came back as an error: the server never ran the call
                refused = e.code not in (CONNECTION_CLOSED, REQUEST_TIMEOUT)
                if attempt == 0 and self._expiries != expiries and refused:
                    await self._renewed(client)
                    continue
                raise self._call_error(tool, client, e) from None
            except Exception as e:
                raise self._call_error(tool, client, e) from e
            finally:
                self.calls_in_flight -= 1
                self._last_activity = time.monotonic()
            self._call_succeeded()
            return result
        raise Unavailable(results.unavailable(self.name, self.state))

    def _call_error(self, tool: str, client: Client, e: Exception) -> Unavailable:
        timeout = self.spec.timeouts.call
        if isinstance(e, MCPError) and e.code == REQUEST_TIMEOUT:
            self._call_failed()
            return Unavailable(results.timed_out(self.name, tool, timeout), "timeout")
        if isinstance(e, MCPError) and e.code == INVALID_PARAMS:
            problem = e.message  # the caller's mistake, not the server's
        else:
            self._call_failed()
            lost = (isinstance(e, MCPError) and e.code == CONNECTION_CLOSED) or (
                not isinstance(e, MCPError) and self._client is not client
            )
            problem = "the connection to the server was lost" if lost else _short(e)
        return Unavailable(
            results.speakable(self.name, tool, redact(problem, self.connection.secrets))
        )

    async def wait_ready(self, timeout: float) -> None:
        """Wait, bounded, for the first connection (a session-scoped server on first use)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    async def _renewed(self, stale: Client) -> None:
        """Have the owner task reconnect (unless it already did) and wait, bounded, until the
        new connection is Ready."""
        if self._client is stale:
            self._expired = True
            self._ready.clear()
            self._wake.set()
        await self.wait_ready(self.spec.timeouts.connect)

    def _call_failed(self) -> None:
        self._failures += 1
        if self._failures >= self.timing.degraded_after and self.state == "Ready":
            self._set("Degraded", f"{self._failures} calls in a row failed")

    def _call_succeeded(self) -> None:
        self._failures = 0
        if self.state == "Degraded":
            self._set("Ready")

    # --- the owner task -----------------------------------------------------------------------

    async def _own(self) -> None:
        attempt = 0
        try:
            while not self._stopping:
                self._set("Connecting")
                ready_at: float | None = None
                error: Exception | None = None
                try:
                    async with self._connected() as client:
                        ready_at = time.monotonic()
                        self._client = client
                        self._became_ready()
                        await self._serve(client)
                except Exception as e:
                    error = e
                finally:
                    self._client = None
                    self._ready.clear()
                    self._phase = "idle"
                if self._stopping:
                    break
                assert error is not None  # serving ends with an error unless we stop
                text, permanent = self._describe(error)
                if permanent:
                    log.warning("server %s failed: %s", self.name, text)
                    self._set("Failed", text)
                    await self._wait_stop()
                    return
                lasted = time.monotonic() - ready_at if ready_at is not None else 0.0
                if isinstance(root_cause(error), SessionExpired) and (
                    lasted >= self.timing.backoff_base
                ):
                    log.info("server %s: the HTTP session expired; reconnecting", self.name)
                    self.last_error = "the HTTP session expired; reconnected"
                    continue
                log.warning("server %s: %s", self.name, text)
                if lasted >= self.timing.backoff_reset:
                    attempt = 0
                delay = backoff(attempt, self.timing)
                attempt += 1
                self.restarts += 1
                self.next_retry_at = utcnow() + timedelta(seconds=delay)
                self._set("Backoff", text)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_stop(), delay)
                self.next_retry_at = None
        except Exception as e:  # a bug of ours: say so rather than sit in Connecting forever
            log.exception("server %s: the supervisor failed", self.name)
            self.state, self.last_error = "Failed", f"internal error: {type(e).__name__}: {e}"
            self.on_change()
        finally:
            self._client = None
            self._phase = "idle"

    async def _wait_stop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[Client]:
        """Spawn or dial, handshake and list tools, all within the connect timeout (cut short
        the moment the process exits or the server closes the stream)."""
        self._phase = "connecting"
        self._lost = None
        self._cut_short = False
        self._expired = False
        self._http_status = None
        self._transport = None
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(self.spec.timeouts.connect) as deadline:
                    self._deadline = deadline
                    transport = await self._transport_for(stack)
                    client = Client(
                        _watched(transport, self._stream_ended),
                        mode=self.mode,
                        cache=None,
                        message_handler=self._on_message,
                        client_info=mcp_types.Implementation(name="jackfield", version=__version__),
                    )
                    await stack.enter_async_context(client)
                    await self._list_tools(client)
                self._deadline = None
                yield client
            finally:
                self._deadline = None
                self._phase = "closing"  # from here on, a closing stream is our own doing

    async def _transport_for(self, stack: contextlib.AsyncExitStack) -> Any:
        c = self.connection
        if c.transport == "stdio":
            self._transport = StdioTransport(c, self.tail, self.warden, on_exit=self._on_exit)
            return self._transport
        url = c.url.reveal() if c.url is not None else ""
        headers = {k: v.reveal() for k, v in c.headers.items()}
        if c.transport == "websocket":
            return websocket_client(
                url, headers, timeout=c.connect_timeout, on_closed=self._connection_ended
            )
        if c.transport == "http":
            http = create_mcp_http_client(headers=headers, timeout=self._http_timeout())
            http.event_hooks["response"].append(self._on_response)
            await stack.enter_async_context(http)
            return streamable_http_client(url, http_client=http)
        return sse_client(url, headers=headers, timeout=c.connect_timeout,
                          httpx_client_factory=self._sse_client_factory)  # fmt: skip

    def _http_timeout(self) -> httpx2.Timeout:
        return httpx2.Timeout(self.connection.connect_timeout, read=300.0)

    def _sse_client_factory(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        """`sse_client` calls this with keyword arguments (headers, auth, timeout)."""
        http = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        http.event_hooks["response"].append(self._on_response)
        return http

    async def _on_response(self, response: httpx2.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        if self._phase == "connecting" or status in (401, 403):
            self._http_status = status
        if self._phase != "serving":
            return
        request = response.request
        sse_post = self.spec.transport == "sse" and request.method == "POST"
        if status == 404 and (SESSION_HEADER in request.headers or sse_post):
            # The server forgot our session (streamable HTTP: the spec's 404 for an unknown
            # Mcp-Session-Id; SSE: the message endpoint no longer knows our session id).
            self._expiries += 1
            self._expired = True
            # A streamable HTTP POST gets the 404 back as its error, and the caller renews
            # the session and retries; reconnecting now would cut that answer off.
            if request.method != "POST" or sse_post:
                self._wake.set()
        elif sse_post:  # the SDK's SSE writer stops at the first failed POST: we are cut off
            self._connection_ended(f"HTTP {status} from the server's message endpoint")

    async def _list_tools(self, client: Client) -> None:
        tools: list[UpstreamTool] = []
        cursor: str | None = None
        for _ in range(100):  # a paginator that never ends cannot hang us
            page = await client.list_tools(cursor=cursor)
            tools.extend(_tool(t) for t in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        self.tools = tuple(tools)
        caps = client.server_capabilities
        self.capabilities = caps.model_dump(mode="json", exclude_none=True, by_alias=True)
        info = client.server_info
        self.server_info = info.model_dump(mode="json", exclude_none=True) if info else {}
        self.protocol = client.protocol_version

    async def _serve(self, client: Client) -> None:
        """Until something ends the connection: refresh tools on change, check health when idle.

        Raises:
            ConnectionLost: the process exited, the stream closed, or the health check failed.
            SessionExpired: the HTTP server forgot our session.
        """
        self._phase = "serving"
        listener = None
        if self.protocol in MODERN_PROTOCOL_VERSIONS:
            listener = asyncio.create_task(self._listen(client), name=f"listen-{self.name}")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.timing.health_interval)
                self._wake.clear()
                if self._stopping:
                    return
                if self._lost is not None:
                    raise ConnectionLost(self._lost)
                if self._expired:
                    raise SessionExpired("the HTTP session expired")
                self._checking = True
                if self._refresh:
                    self._refresh = False
                    await self._refresh_tools(client)
                idle = time.monotonic() - self._last_activity
                if idle >= self.timing.health_interval and self.calls_in_flight == 0:
                    await self._health_check(client)
                self._checking = False
        finally:
            self._checking = False
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _refresh_tools(self, client: Client) -> None:
        expiries = self._expiries
        try:
            async with asyncio.timeout(self.spec.timeouts.connect):
                await self._list_tools(client)
        except TimeoutError:
            raise ConnectionLost(
                f"no answer to tools/list within {self.spec.timeouts.connect:g} s"
            ) from None
        except MCPError as e:
            if self._expiries != expiries:
                raise SessionExpired("the HTTP session expired") from e
            raise ConnectionLost(f"tools/list failed: {e.message}") from e
        self.on_change()

    async def _health_check(self, client: Client) -> None:
        """A cheap request: `ping` (handshake era) or `server/discover` (2026-07-28, which
        removed ping). A server that does not know the method has still answered."""
        expiries = self._expiries
        try:
            async with asyncio.timeout(self.timing.health_timeout):
                if self.protocol in MODERN_PROTOCOL_VERSIONS:
                    await client.session.send_discover(self.protocol or "")
                else:
                    await client.session.send_ping()
        except TimeoutError:
            raise ConnectionLost(
                f"health check: no answer within {self.timing.health_timeout:g} s"
            ) from None
        except MCPError as e:
            if self._expiries != expiries:
                raise SessionExpired("the HTTP session expired") from e
            if e.code != METHOD_NOT_FOUND:
                raise ConnectionLost(f"health check failed: {e.message}") from e
        self.health_checks += 1
        self._last_activity = time.monotonic()

    async def _listen(self, client: Client) -> None:
        """2026-07-28 servers announce changes on a `subscriptions/listen` stream."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                self._request_refresh()  # a change between our tools/list and the ack
                async for _event in subscription:
                    self._request_refresh()
        except Exception as e:  # the stream is optional: the connection itself may be fine
            log.debug("server %s: no change stream: %s", self.name, _short(e))

    def _request_refresh(self) -> None:
        self._refresh = True
        self._wake.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._request_refresh()
        elif isinstance(message, Exception):
            log.debug("server %s: transport error: %s", self.name, _short(message))

    def _on_exit(self, returncode: int) -> None:
        self._connection_ended(describe_exit(returncode, self.tail))

    def _stream_ended(self) -> None:
        if self.connection.transport == "stdio":
            self._connection_ended("the server closed its stdout")
        else:
            self._connection_ended("the server closed the connection")

    def _connection_ended(self, reason: str) -> None:
        """The process exited or the stream closed by itself: stop waiting for it."""
        if self._phase not in ("connecting", "serving"):
            return
        if self._lost is None:
            self._lost = reason
        deadline = self._deadline
        if deadline is not None and not deadline.expired():
            self._cut_short = True
            with contextlib.suppress(RuntimeError):  # already expiring
                deadline.reschedule(asyncio.get_running_loop().time())
        self._wake.set()

    # --- state --------------------------------------------------------------------------------

    def _became_ready(self) -> None:
        self.last_connected = utcnow()
        self.grace_until = None
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        self._failures = 0
        self._last_activity = time.monotonic()
        self._set("Ready")
        self._ready.set()

    def _set(self, state: ServerState, error: str | None = None) -> None:
        if state != self.state:
            serving = ("Ready", "Degraded")
            if self.state in serving and state not in serving and self.tools:
                self.grace_until = time.monotonic() + self.timing.grace
                if self._grace_timer is not None:
                    self._grace_timer.cancel()
                loop = asyncio.get_running_loop()
                self._grace_timer = loop.call_later(self.timing.grace + 0.01, self.on_change)
            self.state = state
            self.since = utcnow()
        if error is not None:
            self.last_error = error
        self.on_change()

    def _describe(self, e: BaseException) -> tuple[str, bool]:
        """One line saying what ended the connection, with no secret in it; and whether
        retrying is futile (the error's class decides: STYLE.md habit 6)."""
        cause = root_cause(e)
        if isinstance(cause, PermanentError):
            return redact(str(cause), self.connection.secrets), True
        permanent = False
        transport = self._transport
        status = self._http_status
        if status in (401, 403):
            text, permanent = f"HTTP {status}: the server refused our credentials", True
        elif transport is not None and transport.died:
            text = describe_exit(transport.returncode or 0, self.tail)
        elif isinstance(cause, ConnectionLost):
            text = str(cause)
        elif isinstance(cause, TimeoutError) and not self._cut_short:
            text = f"no answer within {self.spec.timeouts.connect:g} s (connect timeout)"
            if status is not None:
                text += f"; HTTP {status} from the server"
        elif self._lost is not None:
            text = self._lost
        elif isinstance(cause, aiohttp.WSServerHandshakeError):
            text = f"WebSocket handshake refused: HTTP {cause.status}"
            permanent = cause.status in (401, 403)
            if permanent:
                text = f"HTTP {cause.status}: the server refused our credentials"
        elif isinstance(cause, httpx2.UnsupportedProtocol | httpx2.InvalidURL):
            text, permanent = f"invalid URL: {_short(cause)}", True
        elif _in_chain(cause, ConnectionRefusedError):
            text = f"connection refused ({_short(cause)})"
        elif isinstance(cause, httpx2.ConnectError | aiohttp.ClientConnectorError | OSError):
            text = f"cannot connect: {_short(cause)}"
        elif isinstance(cause, httpx2.TimeoutException):
            text = f"the server stopped answering ({_what(cause)})"
        elif isinstance(cause, httpx2.TransportError | aiohttp.ClientError):
            text = f"the connection to the server broke ({_what(cause)})"
        elif status is not None:
            text = f"HTTP {status} from the server ({_short(cause)})"
        elif isinstance(cause, MCPError) and cause.code == CONNECTION_CLOSED:
            text = "the connection was closed"
        elif isinstance(cause, MCPError):
            text = f"the server answered with an error: {cause.message}"
        else:
            text = f"{type(cause).__name__}: {_short(cause)}"
        if transport is not None and transport.garbage:
            text += (
                f"; the server wrote {transport.garbage} non-JSON-RPC line(s) to stdout"
                f" (first: {transport.first_garbage!r})"
            )
        return redact(text, self.connection.secrets), permanent

    def __repr__(self) -> str:
        return f"Supervisor({self.name!r}, {self.state})"
