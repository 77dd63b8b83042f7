"""Tool results fit for a voice agent: bounded in size, errors as short sentences. Pure."""

from __future__ import annotations

MARKER = "\n[... {cut} bytes cut by jackfield (limit {limit}) ...]\n"

_STATE_WORDS = {
    "Pending": "not started yet",
    "Connecting": "connecting",
    "Backoff": "restarting",
    "Failed": "failed",
    "Disabled": "disabled",
    "Degraded": "degraded",
    "Ready": "ready",
}


def cap(text: str, limit: int) -> str:
    """Keep the head and tail of `text` within `limit` UTF-8 bytes, saying how much was cut.

    Head and tail both matter: a listing's first lines say what it is, the last lines often
    hold the summary or the error. Cuts fall on character boundaries, and the marker counts
    every byte that was removed. When even the marker does not fit, the head alone is kept.
    """
    data = text.encode(errors="replace")  # a lone surrogate from JSON must not raise
    if len(data) <= limit:
        return text
    marker_room = len(MARKER.format(cut=len(data), limit=limit).encode())
    if marker_room > limit:
        return _head(data, limit).decode()
    keep = limit - marker_room
    head = _head(data, keep - keep // 2)
    tail = _tail(data, keep // 2)
    cut = len(data) - len(head) - len(tail)
    return head.decode() + MARKER.format(cut=cut, limit=limit) + tail.decode()


def _head(data: bytes, size: int) -> bytes:
    """The longest prefix of at most `size` bytes that ends on a character boundary."""
    return data[:size].decode(errors="ignore").encode()


def _tail(data: bytes, size: int) -> bytes:
    """The longest suffix of at most `size` bytes that starts on a character boundary."""
    if size <= 0:
        return b""
    return data[len(data) - size :].decode(errors="ignore").encode()


def _sentence(text: str) -> str:
    return text.strip().rstrip(".!?;:,")


def speakable(server: str, tool: str, problem: str) -> str:
    """A sentence the agent can say; `problem` is already short and free of secrets."""
    return f"The {tool} tool from {server} could not be used: {_sentence(problem)}."


def unavailable(server: str, state: str) -> str:
    """For a call to a server that is not connected (during the grace period, or a race)."""
    words = _STATE_WORDS.get(state, state.lower())
    return f"The {server} tools are unavailable right now (the server is {words})."


def timed_out(server: str, tool: str, seconds: float) -> str:
    return f"The {tool} tool from {server} did not answer within {seconds:g} seconds."


def unknown_tool(name: str) -> str:
    return f"There is no tool called {name} any more."


def not_available(tool: str) -> str:
    """For a call the server's `access` refuses this conversation's caller."""
    return f"The {tool} tool is not available in this conversation."


def missing_context(tool: str, name: str) -> str:
    """For a call that needs a context value (or setting) the session does not have."""
    if "." in name:  # a caller context name (core/expansion.is_context_name)
        return f"The {tool} tool needs the caller's {name}, which this conversation does not have."
    return f"The {tool} tool needs the setting {name}, which is not set."
