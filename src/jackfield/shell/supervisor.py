"""One supervisor per MCP server: the single owner task of its connection.

The owner task connects, lists tools, then waits for whatever ends the connection (stop, the
process exiting, a failed health check, an expired HTTP session) and backs off before the next
attempt. Other tasks only *use* the connection (calls, tool refreshes) and never enter or exit
its context (STYLE.md habit 4). State changes are announced through `on_change`.

    Pending -> Connecting -> Ready <-> Degraded
                   ^           |
                   +- Backoff <+        Failed (retrying cannot help)     Disabled
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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


@dataclass(frozen=True)
class Timing:
    """Supervision clocks (seconds); tests shrink them."""

    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    backoff_reset: float = 600.0
    health_interval: float = 30.0
    health_timeout: float = 10.0
    grace: float = 30.0
    degraded_after: int = 3
    """Consecutive failed calls that mark a connected server Degraded."""


DEFAULT_TIMING = Timing()


class ConnectionLost(Exception):
    """The connection ended underneath us; the message says how."""


class SessionExpired(ConnectionLost):
    """The HTTP server forgot our session (404): reconnect at once, not after a backoff."""


class Unavailable(Exception):
    """A call that cannot be made now; the message is speakable."""


def backoff(attempt: int, timing: Timing, rand: Callable[[], float] = random.random) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)]."""
    return float(rand() * min(timing.backoff_cap, timing.backoff_base * 2**attempt))


def _tool(t: mcp_types.Tool) -> UpstreamTool:
    annotations = t.annotations.model_dump(exclude_none=True) if t.annotations else None
    return UpstreamTool(t.name, t.description or "", t.input_schema, annotations)


def _short(e: BaseException) -> str:
    if isinstance(e, MCPError):
        return e.message
    if isinstance(e, ExceptionGroup) and e.exceptions:
        return _short(e.exceptions[0])
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:300]


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
    ) -> None:
        self.name = name
        self.spec = spec
        self.connection = connection
        self.on_change = on_change
        self.warden = warden
        self.timing = timing
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
        self._client: Client | None = None
        self._transport: StdioTransport | None = None
        self._http_status: int | None = None
        self._failures = 0
        self._last_activity = time.monotonic()
        self._stopping = False
        self._wake = asyncio.Event()
        self._refresh = False
        self._expired = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None

    # --- lifecycle (called by the manager) ----------------------------------------------------

    def start(self) -> None:
        if self.spec.enabled:
            self._task = asyncio.create_task(self._own(), name=f"server-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
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
        """Forward one call. Raises Unavailable (speakable) when the server cannot take it."""
        for attempt in range(2):
            client = self._client
            if client is None or self.state not in ("Ready", "Degraded"):
                raise Unavailable(results.unavailable(self.name, self.state))
            self.calls_in_flight += 1
            self._last_activity = time.monotonic()
            timeout = self.spec.timeouts.call
            try:
                async with asyncio.timeout(timeout + 1):
                    result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout)
            except TimeoutError:
                self._call_failed()
                raise Unavailable(results.timed_out(self.name, tool, timeout)) from None
            except MCPError as e:
                if e.message == "Session terminated" and attempt == 0:
                    await self._renew_session()
                    continue
                if e.code == -32001 or "timed out" in e.message.lower():  # the SDK's timeout
                    self._call_failed()
                    raise Unavailable(results.timed_out(self.name, tool, timeout)) from None
                self._call_failed()
                problem = redact(e.message, self.connection.secrets)
                raise Unavailable(results.speakable(self.name, tool, problem)) from None
            except (ConnectionError, anyio.ClosedResourceError, anyio.BrokenResourceError) as e:
                self._call_failed()
                raise Unavailable(
                    results.speakable(self.name, tool, "the connection was lost")
                ) from e
            finally:
                self.calls_in_flight -= 1
            self._call_succeeded()
            return result
        raise Unavailable(results.unavailable(self.name, self.state))

    async def wait_ready(self, timeout: float) -> None:
        """Wait, bounded, for the first connection (a session-scoped server on first use)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    async def _renew_session(self) -> None:
        """Reconnect now (the owner task does it) and wait, bounded, until Ready again."""
        self._expired = True
        self._ready.clear()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.spec.timeouts.connect):
                await self._ready.wait()

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
        while not self._stopping:
            self._set("Connecting")
            ready_at: float | None = None
            try:
                async with self._connected() as client:
                    ready_at = time.monotonic()
                    self._client = client
                    self._became_ready()
                    await self._serve(client)
            except PermanentError as e:
                self._client = None
                self._set("Failed", redact(str(e), self.connection.secrets))
                await self._wait_stop()
                return
            except SessionExpired:
                self._client = None
                self.last_error = "the HTTP session expired; reconnected"
                continue
            except Exception as e:
                self._client = None
                self.last_error, permanent = self._describe(e)
                log.warning("server %s: %s", self.name, self.last_error)
                if permanent:
                    self._set("Failed", self.last_error)
                    await self._wait_stop()
                    return
            self._client = None
            if self._stopping:
                break
            if ready_at is not None and time.monotonic() - ready_at >= self.timing.backoff_reset:
                attempt = 0
            delay = backoff(attempt, self.timing)
            attempt += 1
            self.restarts += 1
            self.next_retry_at = utcnow() + timedelta(seconds=delay)
            self._set("Backoff", self.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_stop(), delay)
            self.next_retry_at = None
        self._client = None

    async def _wait_stop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[Client]:
        """Spawn or dial, handshake and list tools, all within the connect timeout."""
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self.spec.timeouts.connect):
                transport = await self._transport_for(stack)
                client = Client(
                    transport,
                    mode="auto",
                    cache=None,
                    message_handler=self._on_message,
                    client_info=mcp_types.Implementation(name="jackfield", version=__version__),
                )
                await stack.enter_async_context(client)
                await self._list_tools(client)
            yield client

    async def _transport_for(self, stack: contextlib.AsyncExitStack) -> Any:
        c = self.connection
        if c.transport == "stdio":
            self._transport = StdioTransport(c, self.tail, self.warden, on_exit=self._on_exit)
            return self._transport
        url = c.url.reveal() if c.url is not None else ""
        headers = {k: v.reveal() for k, v in c.headers.items()}
        if c.transport == "websocket":
            return websocket_client(url, headers, timeout=c.connect_timeout)
        self._http_status = None
        if c.transport == "http":
            http = create_mcp_http_client(headers=headers, timeout=self._http_timeout())
            http.event_hooks = {"response": [self._on_response]}
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
        http = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        http.event_hooks = {"response": [self._on_response]}
        return http

    async def _on_response(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            self._http_status = response.status_code
            if response.status_code == 404 and self._client is not None:
                self._expired = True  # our session id is gone; the call path renews it

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
        """Until something ends the connection: refresh tools on change, check health when idle."""
        listener = None
        if self.protocol is not None and self.protocol >= "2026-07-28":
            listener = asyncio.create_task(self._listen(client), name=f"listen-{self.name}")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.timing.health_interval)
                self._wake.clear()
                if self._stopping:
                    return
                if self._transport is not None and self._transport.exited.is_set():
                    code = self._transport.returncode or 0
                    raise ConnectionLost(describe_exit(code, self.tail))
                if self._expired:
                    self._expired = False
                    raise SessionExpired("the HTTP session expired")
                if self._refresh:
                    self._refresh = False
                    await self._list_tools(client)
                    self.on_change()
                idle = time.monotonic() - self._last_activity
                if idle >= self.timing.health_interval and self.calls_in_flight == 0:
                    await self._health_check(client)
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _health_check(self, client: Client) -> None:
        try:
            async with asyncio.timeout(self.timing.health_timeout):
                await client.send_ping()
        except TimeoutError:
            raise ConnectionLost(
                f"health check: no answer to ping within {self.timing.health_timeout:g} s"
            ) from None
        except MCPError as e:
            if e.message == "Session terminated":
                raise SessionExpired(e.message) from e
            if e.code != -32601:  # a server without ping is still alive
                raise ConnectionLost(f"health check failed: {e.message}") from e
        self._last_activity = time.monotonic()

    async def _listen(self, client: Client) -> None:
        """2026-07-28 servers announce changes on a `subscriptions/listen` stream."""
        with contextlib.suppress(Exception):
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._refresh = True
                    self._wake.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._refresh = True
            self._wake.set()

    def _on_exit(self, returncode: int) -> None:
        self._wake.set()

    # --- state --------------------------------------------------------------------------------

    def _became_ready(self) -> None:
        self.last_connected = utcnow()
        self.grace_until = None
        self._failures = 0
        self._last_activity = time.monotonic()
        self._set("Ready")
        self._ready.set()

    def _set(self, state: ServerState, error: str | None = None) -> None:
        if state != self.state:
            leaving_service = self.state in ("Ready", "Degraded") and state not in (
                "Ready",
                "Degraded",
            )
            if leaving_service and self.tools:
                self.grace_until = time.monotonic() + self.timing.grace
                loop = asyncio.get_running_loop()
                self._grace_timer = loop.call_later(self.timing.grace + 0.01, self.on_change)
            self.state = state
            self.since = utcnow()
        if error is not None:
            self.last_error = error
        self.on_change()

    def _describe(self, e: BaseException) -> tuple[str, bool]:
        """One line saying what happened, with no secret in it; and whether retrying is futile."""
        if self._transport is not None and self._transport.exited.is_set():
            text = describe_exit(self._transport.returncode or 0, self.tail)
        elif isinstance(e, TimeoutError):
            text = f"no answer within {self.spec.timeouts.connect:g} s (connect timeout)"
        elif isinstance(e, aiohttp.WSServerHandshakeError):
            text = f"WebSocket handshake refused: HTTP {e.status}"
            self._http_status = e.status
        elif isinstance(e, aiohttp.ClientConnectorError | ConnectionRefusedError):
            text = f"connection refused: {e}"
        elif self._http_status is not None:
            text = f"HTTP {self._http_status} from server ({_short(e)})"
        else:
            text = (
                f"{type(e).__name__}: {_short(e)}" if not isinstance(e, ConnectionLost) else str(e)
            )
        if self._http_status in (401, 403):
            text = f"HTTP {self._http_status}: the server refused our credentials"
        elif isinstance(e, httpx2.UnsupportedProtocol | httpx2.InvalidURL):
            return f"invalid URL: {_short(e)}", True
        return redact(text, self.connection.secrets), self._http_status in (401, 403)

    def __repr__(self) -> str:
        return f"Supervisor({self.name!r}, {self.state})"
