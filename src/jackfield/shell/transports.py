"""The MCP transports a supervisor connects through, and the boundary where their errors become
ours.

One function per transport (`stdio`, `streamable_http`, `sse`, `websocket`) opens it and
yields the SDK's stream pair, recording on the connection's `Link` what it notices: the process
exit, an HTTP error status, the stream closing, an expired HTTP session. `connect` runs one of
them, handshakes and lists tools within the connect timeout, and turns whatever ends the
connection into PermanentError, SessionExpired or ConnectionLost, worded by
`core.failures.describe`: callers never decode a third-party exception.

A `tools/list` answer is screened tool by tool on its way in (`Link.screen`): the SDK
validates the whole result at once, so one malformed tool would fail its whole server, naming
none. A tool that fails validation is taken out of the answer and listed with its reason, and
the catalog withholds and reports it (core/catalog.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import anyio
import httpx2
import mcp_types
import pydantic
from mcp import Client
from mcp.client.session import ElicitationFnT, MessageHandlerFnT, SamplingFnT
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import find_invalid_x_mcp_header
from mcp.shared.message import SessionMessage
from mcp_types import METHOD_NOT_FOUND
from mcp_types.jsonrpc import JSONRPCRequest, JSONRPCResponse, RequestId
from mcp_types.methods import validate_server_result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from jackfield import __version__
from jackfield.core.catalog import UpstreamTool
from jackfield.core.connection import Connection, redact
from jackfield.core.failures import Fault, Tag, describe
from jackfield.errors import ConnectionLost, PermanentError, SessionExpired, TemporaryError
from jackfield.shell.credentials import Credentials, CredentialsAuth
from jackfield.shell.stdio import MAX_LINE, StdioTransport, Tail, Warden, describe_exit
from jackfield.shell.websocket import websocket_client

SESSION_HEADER = "mcp-session-id"
MAX_PAGES = 100
"""tools/list pages read at most: a paginator that never ends cannot hang us."""
MAX_SSE_EVENT = MAX_LINE
"""Bytes of one SSE event from a streamable HTTP server, as for a stdio line: the SDK's 1 MiB
default would fail a large `tools/list` whole, where the catalog withholds just the tools over
its limits. (The legacy SSE transport keeps the SDK's fixed 1 MiB.)"""
FALLBACK_PROTOCOL = "2025-11-25"
"""What the SDK validates a result against before the version is negotiated."""

TAGS: tuple[tuple[Tag, tuple[type[BaseException], ...]], ...] = (
    ("permanent", (PermanentError,)),
    ("temporary", (TemporaryError,)),
    ("timeout", (TimeoutError,)),
    ("websocket-refused", (aiohttp.WSServerHandshakeError,)),
    ("invalid-url", (httpx2.UnsupportedProtocol, httpx2.InvalidURL)),
    ("cannot-connect", (httpx2.ConnectError, aiohttp.ClientConnectorError, OSError)),
    ("stalled", (httpx2.TimeoutException,)),
    ("broken", (httpx2.TransportError, aiohttp.ClientError)),
    ("mcp", (MCPError,)),
)
"""Which exception classes make up each family core/failures.py words."""

Phase = Literal["connecting", "serving", "closing"]


# --- exceptions, read into plain values ---------------------------------------------------------


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
    for kind in (PermanentError, TemporaryError):
        for x in found:
            if isinstance(x, kind):
                return x
    return found[0]


def short(e: BaseException) -> str:
    """One line saying what `e` (its root cause) is about."""
    e = root_cause(e)
    if isinstance(e, MCPError):
        return e.message
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:300]


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = e
    for _ in range(10):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _errno(e: BaseException) -> int | None:
    chain = list(_chain(e))
    if any(isinstance(x, ConnectionRefusedError) for x in chain):
        return errno.ECONNREFUSED
    return next((x.errno for x in chain if isinstance(x, OSError) and x.errno), None)


def fault_of(e: BaseException, link: Link | None = None) -> Fault:
    """What `e` is, and what `link`'s transport noticed, as plain values."""
    cause = root_cause(e)
    ours = isinstance(cause, PermanentError | TemporaryError)
    status = link.http_status if link is not None else None
    if isinstance(cause, aiohttp.WSServerHandshakeError):
        status = cause.status
    process = link.process if link is not None else None
    exited = process is not None and process.died
    return Fault(
        tags=frozenset(tag for tag, classes in TAGS if isinstance(cause, classes)),
        error=type(cause).__name__,
        message=str(cause) if ours else short(cause),
        code=cause.code if isinstance(cause, MCPError) else None,
        errno=_errno(cause),
        delay=cause.delay if isinstance(cause, TemporaryError) else None,
        status=status,
        exit=describe_exit(process.returncode or 0, process.tail) if process and exited else None,
        lost=link.lost if link is not None else None,
        cut_short=link.cut_short if link is not None else False,
        timeout=link.connection.connect_timeout if link is not None else 0.0,
        garbage=process.garbage if process is not None else 0,
        first_garbage=process.first_garbage if process is not None else None,
    )


def translated(e: BaseException, link: Link) -> PermanentError | ConnectionLost:
    """Our error for whatever ended `link`: worded by core.failures, secrets masked."""
    failure = describe(fault_of(e, link))
    message = redact(failure.message, link.connection.secrets)
    if not failure.retry:
        return PermanentError(message)
    if failure.delay == 0:
        return SessionExpired(message)
    return ConnectionLost(message, failure.delay)


# --- one connection ---------------------------------------------------------------------------


@dataclass(eq=False)
class Link:
    """One connection to an MCP server, from dial to close: the client, what the server said
    about itself, and what the transport noticed. A supervisor makes one per attempt."""

    connection: Connection
    wake: Callable[[], None]
    """Told when `lost` or `expired` is set: whoever serves the connection should look."""
    credentials: Credentials | None = None
    """What each HTTP request carries (the supervisor's, across its connections); None: the
    connection's own headers, fixed."""
    phase: Phase = "connecting"
    client: Client | None = None
    """Set once the handshake is done."""
    process: StdioTransport | None = None
    tools: tuple[UpstreamTool, ...] = ()
    capabilities: dict[str, Any] = field(default_factory=dict)
    server_info: dict[str, Any] = field(default_factory=dict)
    protocol: str | None = None
    lost: str | None = None
    """How the connection ended underneath us (the process exited, the stream closed)."""
    fatal: str | None = None
    """Why it can never work as configured (the credentials were refused): Failed."""
    expired: bool = False
    """The HTTP server forgot our session: reconnect."""
    expiries: int = 0
    """Times the server said so (a call that saw one may be resent: it never ran)."""
    http_status: int | None = None
    cut_short: bool = False
    deadline: asyncio.Timeout | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    """Tool name -> why it failed validation, from the `tools/list` answers screened since the
    last listing began."""
    _listings: set[RequestId] = field(default_factory=set)
    """Ids of `tools/list` requests sent and not yet answered."""

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and not process.exited.is_set() else None

    def ended(self, reason: str) -> None:
        """The process exited or the stream closed by itself: stop waiting for it."""
        if self.phase == "closing":  # from here on, a closing stream is our own doing
            return
        if self.lost is None:
            self.lost = reason
        deadline = self.deadline
        if deadline is not None and not deadline.expired():
            self.cut_short = True
            with contextlib.suppress(RuntimeError):  # already expiring
                deadline.reschedule(asyncio.get_running_loop().time())
        self.wake()

    def refused(self, status: int) -> None:
        """The server refused our credentials, after one retry with new ones. A 401 while
        serving ends the connection for good: each request would buy a token in vain (a 403
        may be about one tool only, so it stays that request's)."""
        self.http_status = status
        if status == 401 and self.phase == "serving" and self.fatal is None:
            self.fatal = "HTTP 401: the server refused our credentials, new ones too"
            self.wake()

    def auth_failed(self, error: Exception) -> None:
        """Getting a token failed: refused credentials end the connection for good."""
        if isinstance(error, PermanentError):
            self.fatal = str(error)
            self.wake()
        else:
            self.ended(str(error))

    def auth(self) -> httpx2.Auth | None:
        if self.credentials is None:
            return None
        return CredentialsAuth(self.credentials, self.refused, self.auth_failed)

    async def headers(self) -> dict[str, str]:
        """The headers of a handshake that cannot be retried (WebSocket): with a token got
        beforehand, discovered from the server's well-known metadata if need be."""
        if self.credentials is None:
            return _headers(self.connection)
        return await self.credentials.headers(eager=True)

    def expire(self) -> None:
        """Have the connection renewed (its HTTP session is gone)."""
        self.expired = True
        self.wake()

    def stream_ended(self) -> None:
        if self.connection.transport == "stdio":
            self.ended("the server closed its stdout")
        else:
            self.ended("the server closed the connection")

    async def on_response(self, response: httpx2.Response) -> None:
        """An httpx response hook: notes the statuses that say what went wrong."""
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403) and self.credentials is not None:
            return  # CredentialsAuth retries a 401 first, and tells `refused` if that failed
        if self.phase == "connecting" or status in (401, 403):
            self.http_status = status
        if self.phase != "serving":
            return
        request = response.request
        sse_post = self.connection.transport == "sse" and request.method == "POST"
        if status == 404 and (SESSION_HEADER in request.headers or sse_post):
            # The server forgot our session (streamable HTTP: the spec's 404 for an unknown
            # Mcp-Session-Id; SSE: the message endpoint no longer knows our session id).
            self.expiries += 1
            # A streamable HTTP POST gets the 404 back as its error, and the caller renews
            # the session and retries; reconnecting now would cut that answer off.
            if request.method != "POST" or sse_post:
                self.expire()
            else:
                self.expired = True
        elif sse_post:  # the SDK's SSE writer stops at the first failed POST: we are cut off
            self.ended(f"HTTP {status} from the server's message endpoint")

    # --- screening tools/list answers (the transport's streams call these) ---------------------

    def sent(self, item: SessionMessage) -> None:
        message = item.message
        if isinstance(message, JSONRPCRequest) and message.method == "tools/list":
            self._listings.add(message.id)

    def screen(self, item: SessionMessage) -> SessionMessage:
        """A `tools/list` answer without the tools that fail validation (noted in `rejected`);
        anything else as it came."""
        message = item.message
        if not isinstance(message, JSONRPCResponse) or message.id not in self._listings:
            return item
        self._listings.discard(message.id)
        version = (self.client.protocol_version if self.client else None) or FALLBACK_PROTOCOL
        kept, rejected = screened(message.result, version)
        if not rejected:
            return item
        self.rejected.update(rejected)
        result = {**message.result, "tools": kept}
        return SessionMessage(message.model_copy(update={"result": result}), item.metadata)

    # --- requests on the connection (the owner task's) ----------------------------------------

    async def list_tools(self) -> None:
        client = self._client()
        tools: list[UpstreamTool] = []
        cursor: str | None = None
        self.rejected = {}
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(_tool(t) for t in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        listed = {t.name for t in tools}
        invalid = [UpstreamTool(name, "", {}, problem=reason)
                   for name, reason in self.rejected.items() if name not in listed]  # fmt: skip
        self.tools = (*tools, *invalid)
        caps = client.server_capabilities
        self.capabilities = caps.model_dump(mode="json", exclude_none=True, by_alias=True)
        info = client.server_info
        self.server_info = info.model_dump(mode="json", exclude_none=True) if info else {}
        self.protocol = client.protocol_version

    async def refresh(self) -> None:
        """List the tools again (the server said they changed).

        Raises:
            SessionExpired: the HTTP server forgot our session meanwhile.
            ConnectionLost: no answer within the connect timeout, or an error.
        """
        expiries, timeout = self.expiries, self.connection.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                await self.list_tools()
        except TimeoutError:
            raise ConnectionLost(f"no answer to tools/list within {timeout:g} s") from None
        except MCPError as e:
            if self.expiries != expiries:
                raise SessionExpired() from e
            raise ConnectionLost(f"tools/list failed: {e.message}") from e

    async def check(self, timeout: float) -> None:
        """A cheap request: `ping` (handshake era) or `server/discover` (2026-07-28, which
        removed ping). A server that does not know the method has still answered.

        Raises:
            SessionExpired: the HTTP server forgot our session meanwhile.
            ConnectionLost: no answer within `timeout`, or an error.
        """
        client, expiries = self._client(), self.expiries
        try:
            async with asyncio.timeout(timeout):
                if self.protocol in MODERN_PROTOCOL_VERSIONS:
                    await client.session.send_discover(self.protocol or "")
                else:
                    await client.session.send_ping()
        except TimeoutError:
            raise ConnectionLost(f"health check: no answer within {timeout:g} s") from None
        except MCPError as e:
            if self.expiries != expiries:
                raise SessionExpired() from e
            if e.code != METHOD_NOT_FOUND:
                raise ConnectionLost(f"health check failed: {e.message}") from e

    def _client(self) -> Client:
        if self.client is None:
            raise ConnectionLost("not connected")
        return self.client


def _tool(t: mcp_types.Tool) -> UpstreamTool:
    annotations = (
        t.annotations.model_dump(mode="json", by_alias=True, exclude_none=True)
        if t.annotations
        else None
    )  # the wire's names (`destructiveHint`), as core/voice.py reads them
    title = t.title or (t.annotations.title if t.annotations else None)
    return UpstreamTool(t.name, t.description or "", t.input_schema, annotations, title=title)


def screened(result: dict[str, Any], version: str) -> tuple[list[Any], dict[str, str]]:
    """The tools of a raw `tools/list` result that validate (as the SDK will check them, each on
    its own), and name -> reason for those that do not. A result that is invalid apart from its
    tools is left whole: the SDK reports that one.
    """
    tools = result.get("tools")
    if not isinstance(tools, list):
        return [], {}
    modern = version in MODERN_PROTOCOL_VERSIONS
    try:  # the usual case, at the cost of one validation
        validate_server_result("tools/list", version, result)
        parsed = mcp_types.ListToolsResult.model_validate(result, by_name=False)
        if not modern or all(find_invalid_x_mcp_header(t.input_schema) is None
                             for t in parsed.tools):  # fmt: skip
            return tools, {}
    except (pydantic.ValidationError, ValueError, KeyError):
        pass
    try:
        validate_server_result("tools/list", version, {**result, "tools": []})
    except (pydantic.ValidationError, ValueError, KeyError):
        return tools, {}
    kept: list[Any] = []
    rejected: dict[str, str] = {}
    for index, tool in enumerate(tools):
        try:
            validate_server_result("tools/list", version, {**result, "tools": [tool]})
            valid = mcp_types.Tool.model_validate(tool, by_name=False)
        except pydantic.ValidationError as e:
            rejected[_tool_name(tool, index)] = _reason(e)
            continue
        # 2026-07-28 clients must drop such a tool; the SDK would, silently
        header = find_invalid_x_mcp_header(valid.input_schema) if modern else None
        if header is not None:
            rejected[valid.name] = f"inputSchema: invalid x-mcp-header ({header})"[:200]
            continue
        kept.append(tool)
    return kept, rejected


def _tool_name(tool: Any, index: int) -> str:
    name = tool.get("name") if isinstance(tool, dict) else None
    return name if isinstance(name, str) and name else f"(tool #{index + 1}, no valid name)"


def _reason(e: pydantic.ValidationError) -> str:
    """The first error, short: where in the tool (`inputSchema.type`) and what."""
    errors = e.errors()
    first = errors[0]
    loc = first["loc"]
    if loc[:1] == ("tools",):  # validated inside a one-tool result
        loc = loc[2:]
    where = ".".join(str(p) for p in loc)
    text = f"{where}: {first['msg']}" if where else str(first["msg"])
    more = len(errors) - 1
    return (text[:200] + (f" (and {more} more)" if more else "")).strip()


# --- the transports ---------------------------------------------------------------------------


def stdio(link: Link, tail: Tail, warden: Warden | None) -> StdioTransport:
    """Spawn the server (shell/stdio.py); its exit ends the link at once."""

    def exited(returncode: int) -> None:
        link.ended(describe_exit(returncode, tail))

    link.process = StdioTransport(link.connection, tail, warden, on_exit=exited)
    return link.process


@contextlib.asynccontextmanager
async def streamable_http(link: Link) -> AsyncIterator[Any]:
    c = link.connection
    timeout = httpx2.Timeout(c.connect_timeout, read=300.0)
    auth = link.auth()
    headers = _headers(c) if auth is None else None  # else the auth puts them on each request
    http = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
    http.event_hooks["response"].append(link.on_response)
    async with (
        http,
        streamable_http_client(
            _url(c), http_client=http, max_sse_event_size=MAX_SSE_EVENT
        ) as streams,
    ):
        yield streams


def sse(link: Link) -> AbstractAsyncContextManager[Any]:
    def client(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        """`sse_client` calls this with keyword arguments (headers, auth, timeout)."""
        http = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        http.event_hooks["response"].append(link.on_response)
        return http

    c = link.connection
    auth = link.auth()
    return sse_client(
        _url(c),
        headers=_headers(c) if auth is None else None,
        timeout=c.connect_timeout,
        auth=auth,
        httpx_client_factory=client,
    )


@contextlib.asynccontextmanager
async def websocket(link: Link) -> AsyncIterator[Any]:
    c = link.connection
    headers = await link.headers()
    async with websocket_client(
        _url(c), headers, timeout=c.connect_timeout, on_closed=link.ended
    ) as streams:
        yield streams


def _url(c: Connection) -> str:
    return c.url.reveal() if c.url is not None else ""


def _headers(c: Connection) -> dict[str, str]:
    return {k: v.reveal() for k, v in c.headers.items()}


def _open(link: Link, tail: Tail, warden: Warden | None) -> AbstractAsyncContextManager[Any]:
    transport = link.connection.transport
    if transport == "stdio":
        return stdio(link, tail, warden)
    if transport == "websocket":
        return websocket(link)
    if transport == "http":
        return streamable_http(link)
    return sse(link)


@contextlib.asynccontextmanager
async def connect(
    link: Link,
    *,
    mode: str,
    on_message: MessageHandlerFnT,
    on_elicit: ElicitationFnT | None = None,
    on_sample: SamplingFnT | None = None,
    tail: Tail,
    warden: Warden | None,
) -> AsyncIterator[Client]:
    """Open `link`'s transport, handshake and list tools, all within the connect timeout (cut
    short the moment the process exits or the server closes the stream); yield the client.

    With `on_elicit` the client declares elicitation (form and URL) and the server's questions,
    `elicitation/create` requests and 2026-07-28 `input_required` elicitations alike, go to it.
    `on_sample` answers `sampling/createMessage` without declaring sampling (see below).

    Raises (whatever ended the connection, including what the body raised):
        PermanentError: retrying cannot help (command not found, 401/403, invalid URL).
        SessionExpired: the HTTP server forgot our session.
        ConnectionLost: anything else; the message says what.
    """
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(link.connection.connect_timeout) as deadline:
                    link.deadline = deadline
                    client = Client(
                        _watched(_open(link, tail, warden), link),
                        mode=mode,
                        cache=None,
                        message_handler=on_message,
                        elicitation_callback=on_elicit,
                        client_info=mcp_types.Implementation(name="jackfield", version=__version__),
                    )
                    link.client = await stack.enter_async_context(client)
                    if on_sample is not None:
                        # The SDK declares sampling whenever a sampling_callback is given (its
                        # `_build_capabilities` compares against the default callback), and
                        # jackfield offers none: the handshake is done with the default, then
                        # the callback that refuses in words (and counts) takes its place, for
                        # the server that asks anyway.
                        link.client.session._sampling_callback = on_sample  # noqa: SLF001
                    await link.list_tools()
                link.deadline = None
                link.phase = "serving"
                yield link.client
            finally:
                link.deadline = None
                link.phase = "closing"
    except Exception as e:
        raise translated(e, link) from e


class _WatchedRead:
    """A transport's read stream that reports its end (a server that closes the connection
    is noticed at once, whatever the transport) and screens `tools/list` answers."""

    def __init__(self, inner: Any, link: Link) -> None:
        self._inner = inner
        self._link = link

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._link.stream_ended()
            raise
        return self._link.screen(item) if isinstance(item, SessionMessage) else item

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


class _WatchedWrite:
    """A transport's write stream that notes the `tools/list` requests going out."""

    def __init__(self, inner: Any, link: Link) -> None:
        self._inner = inner
        self._link = link

    async def send(self, item: SessionMessage) -> None:
        self._link.sent(item)
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedWrite:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _watched(transport: Any, link: Link) -> AsyncIterator[Any]:
    async with transport as (read, write):
        yield _WatchedRead(read, link), _WatchedWrite(write, link)
