"""core/failures.py: how a failed connection is worded and whether it is retried (pure,
table-driven); and how shell/transports.py reads real exceptions into it."""

from __future__ import annotations

import asyncio
import errno

import aiohttp
import httpx2
import mcp_types
import pytest
from mcp.shared.exceptions import MCPError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from jackfield.core import failures
from jackfield.core.connection import resolve
from jackfield.core.failures import LADDER, Failure, Fault, Tag, describe, failure_of
from jackfield.errors import ConnectionLost, PermanentError, SessionExpired, TemporaryError
from jackfield.shell.transports import Link, fault_of, translated
from jackfield.spec.models import MCPServerSpec


def tags(*names: Tag) -> frozenset[Tag]:
    return frozenset(names)


ROWS: list[tuple[str, Fault, str, bool]] = [
    ("ours, permanent",
     Fault(tags("permanent"), "PermanentError", "command not found: foo", garbage=3),
     "command not found: foo", False),
    ("credentials refused",
     Fault(tags("broken"), "ReadError", status=401, lost="the server closed the connection"),
     "HTTP 401: the server refused our credentials", False),
    ("credentials refused",
     Fault(tags("websocket-refused", "broken"), "WSServerHandshakeError", "Invalid", status=403),
     "HTTP 403: the server refused our credentials", False),
    ("process exited",
     Fault(tags("temporary"), "ConnectionLost", "health check: no answer within 10 s",
           exit="process exited with code 3: boom on start", lost="the server closed its stdout"),
     "process exited with code 3: boom on start", True),
    ("ours, temporary",
     Fault(tags("temporary"), "ConnectionLost", "the server closed its stdout"),
     "the server closed its stdout", True),
    ("ours, temporary",
     Fault(tags("temporary"), "ConnectionLost", "health check: no answer within 1 s",
           lost="the server closed the WebSocket (code 1006)"),
     "health check: no answer within 1 s", True),
    ("connect timeout",
     Fault(tags("timeout", "cannot-connect"), "TimeoutError", timeout=1.0,
           lost="the server closed the connection"),
     "no answer within 1 s (connect timeout)", True),
    ("connect timeout",
     Fault(tags("timeout", "cannot-connect"), "TimeoutError", timeout=2.5, status=502),
     "no answer within 2.5 s (connect timeout); HTTP 502 from the server", True),
    ("connect timeout",
     Fault(tags("timeout", "cannot-connect"), "TimeoutError", timeout=1.0, garbage=812,
           first_garbage="Listening..."),
     "no answer within 1 s (connect timeout); the server wrote 812 non-JSON-RPC line(s) to"
     " stdout (first: 'Listening...')", True),
    ("stream ended",
     Fault(tags("timeout", "cannot-connect"), "TimeoutError", cut_short=True,
           lost="the server closed its stdout"),
     "the server closed its stdout", True),
    ("stream ended",
     Fault(tags("broken"), "RemoteProtocolError", "Server disconnected",
           lost="HTTP 500 from the server's message endpoint"),
     "HTTP 500 from the server's message endpoint", True),
    ("websocket refused",
     Fault(tags("websocket-refused", "broken"), "WSServerHandshakeError", "Not Found", status=404),
     "WebSocket handshake refused: HTTP 404", True),
    ("invalid url",
     Fault(tags("invalid-url", "broken"), "UnsupportedProtocol", "Request URL has no scheme"),
     "invalid URL: Request URL has no scheme", False),
    ("connection refused",
     Fault(tags("cannot-connect", "broken"), "ConnectError", "All connection attempts failed",
           errno=errno.ECONNREFUSED),
     "connection refused (All connection attempts failed)", True),
    ("cannot connect",
     Fault(tags("cannot-connect", "broken"), "ConnectError", "Network is unreachable",
           errno=errno.ENETUNREACH),
     "cannot connect: Network is unreachable", True),
    ("stalled",
     Fault(tags("stalled", "broken"), "ReadTimeout", "ReadTimeout"),
     "the server stopped answering (ReadTimeout)", True),
    ("broken",
     Fault(tags("broken"), "RemoteProtocolError", "Server disconnected", status=500),
     "the connection to the server broke (RemoteProtocolError: Server disconnected)", True),
    ("http status",
     Fault(tags("mcp"), "MCPError", "Not Acceptable", code=-32600, status=406),
     "HTTP 406 from the server (Not Acceptable)", True),
    ("connection closed",
     Fault(tags("mcp"), "MCPError", "Connection closed", code=failures.CONNECTION_CLOSED),
     "the connection was closed", True),
    ("mcp error",
     Fault(tags("mcp"), "MCPError", "Method not found", code=-32601),
     "the server answered with an error: Method not found", True),
    ("anything else", Fault(error="KeyError", message="'x'"), "KeyError: 'x'", True),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "message", "retry"), [r[1:] for r in ROWS],
                         ids=[f"{i:02}-{r[0]}" for i, r in enumerate(ROWS)])  # fmt: skip
def test_each_fault_is_worded_and_retried_as_the_ladder_says(
    fault: Fault, message: str, retry: bool
) -> None:
    assert describe(fault) == Failure(message, retry)


def test_the_table_reaches_every_rule_of_the_ladder_in_order() -> None:
    matched = [next(rule.name for rule in LADDER if rule.when(row[1])) for row in ROWS]
    assert [r[0] for r in ROWS] == matched
    assert list(dict.fromkeys(matched)) == [rule.name for rule in LADDER]


@pytest.mark.parametrize(
    ("fault", "delay"),
    [
        (Fault(tags("temporary"), "SessionExpired", "the HTTP session expired", delay=0.0), 0.0),
        (Fault(tags("temporary"), "TemporaryError", "busy", delay=5.0), 5.0),
        (Fault(tags("temporary"), "ConnectionLost", "gone"), None),
        (Fault(tags("permanent"), "PermanentError", "no", delay=5.0), None),
        (Fault(tags("temporary"), "SessionExpired", "x", delay=0.0, status=401), None),
    ],
)
def test_a_retry_keeps_the_errors_delay_hint(fault: Fault, delay: float | None) -> None:
    assert describe(fault).delay == delay


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (PermanentError("command not found: foo"), Failure("command not found: foo", False)),
        (SessionExpired(), Failure("the HTTP session expired", True, 0.0)),
        (ConnectionLost("the server closed its stdout"), Failure("the server closed its stdout")),
        (TemporaryError("busy", delay=5), Failure("busy", True, 5)),
        (ValueError("a bug"), Failure("ValueError: a bug")),
    ],
)
def test_the_errors_class_decides_whether_to_retry(error: Exception, failure: Failure) -> None:
    assert failure_of(error) == failure


def test_the_connection_closed_code_is_the_sdks() -> None:
    assert failures.CONNECTION_CLOSED == mcp_types.CONNECTION_CLOSED


# --------------------------------------------------------------------------- the shell's reading


def link(url: str = "http://127.0.0.1:9/mcp", **headers: str) -> Link:
    spec = MCPServerSpec.model_validate({"transport": "http", "url": url, "headers": headers})
    return Link(resolve(spec, {"TOKEN": "sesame-0123456789"}), wake=lambda: None)


def refused() -> httpx2.ConnectError:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        except ConnectionRefusedError as e:
            raise OSError("All connection attempts failed") from e
    except OSError as e:
        error = httpx2.ConnectError("All connection attempts failed")
        error.__cause__ = e
        return error


def handshake(status: int) -> aiohttp.WSServerHandshakeError:
    url = URL("ws://127.0.0.1:9/mcp")
    info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    return aiohttp.WSServerHandshakeError(info, (), status=status, message="Invalid response")


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (refused(), ConnectionLost, "connection refused (All connection attempts failed)"),
        (httpx2.InvalidURL("bad host"), PermanentError, "invalid URL: bad host"),
        (handshake(401), PermanentError, "HTTP 401: the server refused our credentials"),
        (handshake(502), ConnectionLost, "WebSocket handshake refused: HTTP 502"),
        (httpx2.ReadTimeout(""), ConnectionLost, "the server stopped answering (ReadTimeout)"),
        (
            aiohttp.ServerTimeoutError("x"),
            ConnectionLost,
            "no answer within 10 s (connect timeout)",
        ),
        (
            ExceptionGroup("unhandled errors in a TaskGroup", [refused()]),
            ConnectionLost,
            "connection refused (All connection attempts failed)",
        ),
        (
            BaseExceptionGroup("", [asyncio.CancelledError(), SessionExpired()]),
            SessionExpired,
            "the HTTP session expired",
        ),
        (
            MCPError(mcp_types.CONNECTION_CLOSED, "Connection closed"),
            ConnectionLost,
            "the connection was closed",
        ),
        (
            PermanentError("command not found: sesame-0123456789"),
            PermanentError,
            "command not found: ********",
        ),
    ],
)
def test_the_transport_boundary_turns_real_exceptions_into_ours(
    error: BaseException, kind: type[Exception], message: str
) -> None:
    ours = translated(error, link(Authorization="Bearer ${TOKEN}"))
    assert type(ours) is kind and str(ours) == message


def test_the_boundary_reads_what_the_transport_noticed() -> None:
    noticed = link()
    noticed.http_status = 503
    fault = fault_of(TimeoutError(), noticed)
    assert fault.tags == {"timeout", "cannot-connect"} and fault.status == 503
    assert (
        describe(fault).message
        == "no answer within 10 s (connect timeout); HTTP 503 from the server"
    )
