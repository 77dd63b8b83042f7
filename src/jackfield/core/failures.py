"""What ended an MCP connection, in one line, and whether retrying can help: a table. Pure.

The shell (shell/transports.py) reads the exception that ended a connection or an attempt,
and what its transport noticed meanwhile, into a `Fault` of plain values. `describe` walks
LADDER: the first rule that matches words the failure and says whether to retry. Order
matters: what the transport saw (a 401, the process exit, the stream closing) says more than
the exception it caused, and a specific exception more than its base class.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

from jackfield.errors import PermanentError, TemporaryError

Tag = Literal[
    "permanent",
    "temporary",
    "timeout",
    "websocket-refused",
    "invalid-url",
    "cannot-connect",
    "stalled",
    "broken",
    "mcp",
]
"""A family of exceptions (shell/transports.py TAGS says which classes each one covers)."""

CONNECTION_CLOSED = -32000
"""The JSON-RPC error code the SDK gives a request whose connection closed
(`mcp_types.CONNECTION_CLOSED`)."""
CREDENTIALS_REFUSED = (401, 403)


@dataclass(frozen=True)
class Fault:
    """The exception that ended a connection or an attempt, and what its transport noticed."""

    tags: frozenset[Tag] = frozenset()
    """The families the exception belongs to (an exception can be in several)."""
    error: str = "Exception"
    """Its class name."""
    message: str = ""
    """Ours (PermanentError, TemporaryError) in full; an MCPError's message; otherwise the
    first line of its text (at most 300 characters), its class name if it has none."""
    code: int | None = None
    """The JSON-RPC error code of an MCPError."""
    errno: int | None = None
    """The OS error behind it, anywhere in its chain of causes: ECONNREFUSED when a refused
    connection is among them."""
    delay: float | None = None
    """A TemporaryError's retry hint (0: an expired HTTP session, reconnect at once)."""
    status: int | None = None
    """An HTTP error status the server answered while connecting (or a 401/403 at any time, or
    the status that refused a WebSocket handshake)."""
    exit: str | None = None
    """How the stdio process ended, when it exited by itself (`process exited with code 3: ...`)."""
    lost: str | None = None
    """How the connection ended underneath us (`the server closed its stdout`)."""
    cut_short: bool = False
    """The connect deadline was brought forward because the connection ended."""
    timeout: float = 0.0
    """The connect timeout (seconds)."""
    garbage: int = 0
    """Lines the stdio server wrote to stdout that were not JSON-RPC."""
    first_garbage: str | None = None

    @property
    def what(self) -> str:
        """`ReadError`, or `RemoteProtocolError: Server disconnected` when the message says more."""
        return self.error if self.message in ("", self.error) else f"{self.error}: {self.message}"

    @property
    def status_note(self) -> str:
        return f"; HTTP {self.status} from the server" if self.status is not None else ""


@dataclass(frozen=True)
class Failure:
    """What status says about a failed connection, and what happens next."""

    message: str
    """One line; `last_error`."""
    retry: bool = True
    """False: retrying cannot help (Failed until the spec changes)."""
    delay: float | None = None
    """A retry hint in seconds (core/lifecycle.py), None for the backoff's own."""


@dataclass(frozen=True)
class Rule:
    name: str
    when: Callable[[Fault], bool]
    text: str
    """A format string over the Fault's fields, `what` and `status_note`."""
    retry: bool = True
    garbage_note: bool = True
    """Append how much non-JSON-RPC output the stdio server wrote (GARBAGE_NOTE)."""


LADDER: tuple[Rule, ...] = (
    Rule(
        "ours, permanent",
        lambda f: "permanent" in f.tags,
        "{message}",
        retry=False,
        garbage_note=False,
    ),
    Rule(
        "credentials refused",
        lambda f: f.status in CREDENTIALS_REFUSED,
        "HTTP {status}: the server refused our credentials",
        retry=False,
    ),
    Rule("process exited", lambda f: f.exit is not None, "{exit}"),
    Rule("ours, temporary", lambda f: "temporary" in f.tags, "{message}"),
    Rule(
        "connect timeout",
        lambda f: "timeout" in f.tags and not f.cut_short,
        "no answer within {timeout:g} s (connect timeout){status_note}",
    ),
    Rule("stream ended", lambda f: f.lost is not None, "{lost}"),
    Rule(
        "websocket refused",
        lambda f: "websocket-refused" in f.tags,
        "WebSocket handshake refused: HTTP {status}",
    ),
    Rule("invalid url", lambda f: "invalid-url" in f.tags, "invalid URL: {message}", retry=False),
    Rule(
        "connection refused",
        lambda f: f.errno == errno.ECONNREFUSED,
        "connection refused ({message})",
    ),
    Rule("cannot connect", lambda f: "cannot-connect" in f.tags, "cannot connect: {message}"),
    Rule("stalled", lambda f: "stalled" in f.tags, "the server stopped answering ({what})"),
    Rule("broken", lambda f: "broken" in f.tags, "the connection to the server broke ({what})"),
    Rule(
        "http status", lambda f: f.status is not None, "HTTP {status} from the server ({message})"
    ),
    Rule(
        "connection closed",
        lambda f: "mcp" in f.tags and f.code == CONNECTION_CLOSED,
        "the connection was closed",
    ),
    Rule("mcp error", lambda f: "mcp" in f.tags, "the server answered with an error: {message}"),
    Rule("anything else", lambda f: True, "{error}: {message}"),
)

GARBAGE_NOTE = (
    "; the server wrote {garbage} non-JSON-RPC line(s) to stdout (first: {first_garbage!r})"
)


def describe(fault: Fault) -> Failure:
    """Word the fault by the first rule of LADDER that matches (secrets are the caller's to
    mask). A retry keeps the fault's delay hint."""
    rule = next(r for r in LADDER if r.when(fault))
    values = {f.name: getattr(fault, f.name) for f in fields(fault)}
    values.update(what=fault.what, status_note=fault.status_note)
    text = rule.text.format(**values)
    if fault.garbage and rule.garbage_note:
        text += GARBAGE_NOTE.format(**values)
    return Failure(text, rule.retry, fault.delay if rule.retry else None)


def failure_of(error: BaseException) -> Failure:
    """The error's class decides (STYLE.md habit 6): PermanentError never retries,
    TemporaryError retries after its delay hint, anything else (a bug of ours) retries."""
    if isinstance(error, PermanentError):
        return Failure(str(error), retry=False)
    if isinstance(error, TemporaryError):
        return Failure(str(error), delay=error.delay)
    return Failure(f"{type(error).__name__}: {error}")
