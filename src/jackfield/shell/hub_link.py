"""A job's connection to the hub, kept alive by one owner task.

The hub is the job's only door to the tools, the instructions and the agent view. It may go
away (a controller restart, a crash) while a caller is on the line, so the link reconnects with
backoff and jitter, and every failure reaches the caller as one speakable sentence rather than a
crashed job. While the hub is unreachable, calls fail at once with that sentence; when it is
back, `changed` is set so the agent refetches its tools and instructions.

The MCP client context is entered and left only in the owner task (STYLE.md habit 4); calls
from tool functions only use the connected client. The link declares elicitation: a server's
question during a call reaches `elicit` (the job asks the caller, shell/voice_forms.py), and
`cancel_calls` ends every call in flight when the caller hangs up (the SDK sends the hub
`notifications/cancelled`, and the hub cancels upstream).

**Caller context.** Every request carries the session's `CallerContext` (CONTEXT_HEADER) beside
the hub token and the session id; the hub reads it per connection. `set_context` with a
different context reconnects, so the hub sees it: at once when no call is in flight, else as
soon as the last one finishes (a call is never cut off for it). Until then, new requests wait
for the new connection (bounded), so nothing after a change runs under the context before it;
`changed` is set by the reconnect, and the agent refetches its tools and instructions, which
now are the new caller's. The context's values never reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

import mcp_types
from mcp import Client
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.dispatcher import ProgressFnT
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from jackfield import __version__
from jackfield.core.agent_view import AGENT_VIEW_URI, EVENTS_PATH, SESSION_HEADER
from jackfield.core.caller_context import ANONYMOUS, CONTEXT_HEADER, CallerContext
from jackfield.shell import tracing

log = logging.getLogger(__name__)

PING_EVERY = 2.0
"""Seconds between liveness pings while connected: how soon a vanished hub is noticed."""
PING_TIMEOUT = 3.0
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
CLOSE_TIMEOUT = 3.0
MAX_PAGES = 1000
"""Pages of `tools/list` read before the rest is left out (a hub whose cursor never ends)."""
CONTEXT_WAIT = 10.0
"""Seconds a request waits for the reconnect that carries a new caller context."""
UNREACHABLE = "I can't reach my tools right now. Please try again in a moment."

Elicit = Callable[[mcp_types.ElicitRequestParams], Awaitable[mcp_types.ElicitResult]]
"""Answers a server's question (`elicitation/create`) that arrived during one of our calls."""


async def decline(params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
    """The answer of a link nobody asks the caller through."""
    return mcp_types.ElicitResult(action="decline")


def _describe(e: BaseException) -> str:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"


class HubUnavailable(Exception):
    """The hub cannot be reached now; the message is speakable."""

    def __init__(self, message: str = UNREACHABLE) -> None:
        super().__init__(message)


class HubLink:
    """One agent session's connection to the hub (identified by `session_id`)."""

    def __init__(
        self, url: str, token: str, *, session_id: str, context: CallerContext = ANONYMOUS
    ) -> None:
        self.url = url
        self.token = token
        self.session_id = session_id
        self.changed = asyncio.Event()
        """Set on every announcement and on every (re)connect: refetch what the agent shows."""
        self.up = asyncio.Event()
        self.in_flight = 0
        self.call_finished: Callable[[], None] = lambda: None
        self.connects = 0
        self.last_error: str | None = None
        self.elicit: Elicit = decline
        """Where a server's question goes; the job's voice sets it (shell/voice_forms.py)."""
        self._calls: set[asyncio.Task[Any]] = set()
        self._client: Client | None = None
        self._broken = asyncio.Event()
        self._was_up = False
        self.context = ANONYMOUS
        """Who the session is for, as the hub is told (`set_context`)."""
        self._header: str | None = None
        self._told_too_large = False
        self._opened_with: str | None = None
        """The context header of the open connection (what the hub knows)."""
        self._current = asyncio.Event()
        """Up, with the hub knowing the current context."""
        self._switching = False
        """A reconnect for a new context is under way: requests wait for it."""
        self._set_header(context)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", SESSION_HEADER: self.session_id}
        if self._header is not None:
            headers[CONTEXT_HEADER] = self._header
        return headers

    # --- the caller context -------------------------------------------------------------------

    def set_context(self, context: CallerContext) -> bool:
        """Tell the hub the session's caller is now `context`; True when it changed. The link
        reconnects when no call is in flight (the hub reads the context per connection); once
        reconnected, `changed` is set as on every connect."""
        if context == self.context:
            return False
        self._set_header(context)
        if self._stale():
            self._current.clear()
        elif self._client is not None and not self._switching:
            self._current.set()  # back to the context the connection has: nothing to redo
        self._reconnect_if_idle()
        return True

    def _set_header(self, context: CallerContext) -> None:
        self.context = context
        try:
            self._header = context.to_header() if context != ANONYMOUS else None
        except ValueError as e:  # the message gives sizes, never values
            self._header = None
            if not self._told_too_large:
                self._told_too_large = True
                log.warning("hub link %s: sending no caller context: %s", self.session_id, e)

    def _stale(self) -> bool:
        """Connected, but the hub has a context older than the current one."""
        return self._client is not None and self._opened_with != self._header

    def _reconnect_if_idle(self) -> None:
        if self._stale() and self.in_flight == 0:
            self._switching = True
            self._broken.set()  # the owner task leaves `_watch` and reconnects, no backoff

    async def wait_current(self, timeout: float) -> bool:
        """Wait until the link is up with the current context (the hub knows who the session
        is for now); False after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._current.wait()
        return self._current.is_set()

    # --- the owner task -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stay connected, reconnect; until cancelled."""
        delay = BACKOFF_FIRST
        while True:
            deliberate = False
            try:
                async with self._connected():
                    delay = BACKOFF_FIRST
                    await self._watch()
                    deliberate = self._switching
            except asyncio.CancelledError as e:
                # the transport's task group cancels its host when the hub vanishes; only a
                # cancellation of this task itself ends the link
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                self.last_error = f"the hub connection was torn down ({e!r})"
                self._switching = False
            except Exception as e:
                self.last_error = _describe(e)
                self._switching = False
                log.debug("hub link %s: %s", self.session_id, self.last_error)
            if deliberate:
                log.debug("hub link %s: reconnecting with a new caller context", self.session_id)
                continue
            if self._was_up:
                self._was_up = False
                log.warning("lost the hub (%s); reconnecting", self.last_error)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, BACKOFF_MAX)

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[None]:
        opened_with = self._header
        http = create_mcp_http_client(headers=self.headers)
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(http)
            client = await stack.enter_async_context(
                Client(
                    streamable_http_client(self.url, http_client=http),
                    mode="legacy",
                    cache=None,
                    message_handler=self._on_message,
                    elicitation_callback=self._on_elicitation,
                    client_info=mcp_types.Implementation(
                        name="jackfield-agent", version=__version__
                    ),
                )
            )
            self._client = client
            self._opened_with = opened_with
            self._broken.clear()
            self.connects += 1
            self._was_up = True
            self._switching = False
            self.up.set()
            if not self._stale():
                self._current.set()
            self.changed.set()
            yield
        finally:
            self._client = None
            self.up.clear()
            self._current.clear()
            # a vanished hub can leave the transport's shutdown waiting on a dead socket
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await stack.aclose()

    async def _watch(self) -> None:
        """Return when the connection is broken (a failed ping or a failed call says so), or
        outdated (a new caller context, no call in flight)."""
        self._reconnect_if_idle()  # the context changed while this connection opened
        while not self._broken.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_EVERY):
                    await self._broken.wait()
                    return
            try:
                async with asyncio.timeout(PING_TIMEOUT):
                    await self.client.list_prompts()  # cheap; `ping` is gone in 2026-07-28
            except Exception as e:
                self.last_error = f"ping failed: {type(e).__name__}: {e}"
                return

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(
            message,
            mcp_types.ToolListChangedNotification | mcp_types.PromptListChangedNotification,
        ):
            self.changed.set()

    async def _on_elicitation(
        self, context: ClientRequestContext, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        try:
            return await self.elicit(params)
        except Exception:
            log.exception("answering a server's question failed; it is told: cancel")
            return mcp_types.ElicitResult(action="cancel")

    # --- what the agent uses --------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            raise HubUnavailable()
        return self._client

    async def _current_client(self) -> Client:
        """The client, once the hub knows the current context (a change reconnects first).

        Raises:
            HubUnavailable: not connected, or still not with the current context after
                CONTEXT_WAIT seconds (nothing runs under a caller's context after it changed).
        """
        if (self._stale() or self._switching) and not await self.wait_current(CONTEXT_WAIT):
            raise HubUnavailable()
        return self.client

    def _lost(self, e: BaseException, client: Client | None) -> HubUnavailable:
        """A request on `client` failed: that connection is broken (not a newer one, when a
        context change replaced it meanwhile)."""
        self.last_error = _describe(e)
        if client is not None and client is self._client:
            self._broken.set()
        return HubUnavailable()

    async def wait_up(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.up.wait()
        return self.up.is_set()

    async def view(self) -> dict[str, Any]:
        """The agent view (spec, instructions, revision), as the hub serves it.

        Raises:
            HubUnavailable: not connected, or the connection broke.
        """
        client = await self._current_client()
        try:
            result = await client.read_resource(AGENT_VIEW_URI)
        except Exception as e:
            raise self._lost(e, client) from e
        content = result.contents[0] if result.contents else None
        if not isinstance(content, mcp_types.TextResourceContents):
            raise HubUnavailable("The hub sent no agent view.")
        view: dict[str, Any] = json.loads(content.text)
        return view

    async def tools(self) -> list[mcp_types.Tool]:
        """The hub's whole catalog, page by page: the hub pages it so that no one response has
        to hold every tool (an SSE event has a size limit)."""
        client = await self._current_client()
        try:
            tools: list[mcp_types.Tool] = []
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                if not page.next_cursor or page.next_cursor == cursor:
                    break
                cursor = page.next_cursor
            return tools
        except Exception as e:
            raise self._lost(e, client) from e

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        progress: ProgressFnT | None = None,
        meta: dict[str, Any] | None = None,
    ) -> mcp_types.CallToolResult:
        """Forward one tool call; the hub answers every failure with a result. `progress`
        hears the server's progress notices; `meta` goes in the request's `_meta`.

        Raises:
            HubUnavailable: the hub is not reachable (before or during the call).
            asyncio.CancelledError: `cancel_calls` (a hang-up) or the caller's own cancel.
        """
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        try:
            client = await self._current_client()  # not counted: a reconnect waits for none
            self.in_flight += 1
            try:
                with tracing.span(
                    f"tools/call {name}", kind=SpanKind.CLIENT, attributes=self._attributes(name)
                ) as span:
                    # the current span (the turn's tool call) is the hub span's parent
                    result = await client.call_tool(
                        name, arguments, progress_callback=progress,
                        meta=cast(mcp_types.RequestParamsMeta | None, tracing.inject(meta)),
                    )  # fmt: skip
                    tracing.tool_result(span, result)
                    return result
            except Exception as e:
                raise self._lost(e, client) from e
            finally:
                self.in_flight -= 1
                self._reconnect_if_idle()
                self.call_finished()
        finally:
            if task is not None:
                self._calls.discard(task)

    def _attributes(self, name: str) -> dict[str, AttributeValue]:
        attributes = tracing.call_attributes(name, session=self.session_id)
        attributes.update({"network.transport": "tcp", "network.protocol.name": "http"})
        where = urlsplit(self.url)
        if where.hostname:
            attributes["server.address"] = where.hostname
        if where.port:
            attributes["server.port"] = where.port
        return attributes

    def cancel_calls(self) -> list[asyncio.Task[Any]]:
        """Cancel every call in flight: the caller hung up. Each call's task tells the hub as
        it unwinds (the SDK sends `notifications/cancelled`); await them to be sure."""
        running = [t for t in self._calls if not t.done()]
        for task in running:
            task.cancel()
        return running

    async def report(self, event: dict[str, Any]) -> None:
        """Tell the hub what only the job knows (a fallback); best effort."""
        url = self.url.rsplit("/", 1)[0] + EVENTS_PATH
        try:
            async with create_mcp_http_client(headers=self.headers) as http:
                await http.post(url, json=event, timeout=5.0)
        except Exception as e:
            log.warning("could not report %s to the hub: %s", event.get("event"), e)


@contextlib.asynccontextmanager
async def linked(
    url: str,
    token: str,
    *,
    session_id: str,
    wait: float = 10.0,
    context: CallerContext = ANONYMOUS,
) -> AsyncIterator[HubLink]:
    """A running link, connected (or HubUnavailable after `wait` seconds), closed on exit."""
    link = HubLink(url, token, session_id=session_id, context=context)
    owner = asyncio.create_task(link.run(), name="hub-link")
    try:
        if not await link.wait_up(wait):
            raise HubUnavailable(f"the hub at {url} did not answer: {link.last_error}")
        yield link
    finally:
        owner.cancel()
        await asyncio.gather(owner, return_exceptions=True)
