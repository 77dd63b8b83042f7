"""Tool results fit for a voice agent: bounded in size, errors as short sentences. Pure."""

from __future__ import annotations

MARKER = "\n[... {cut} bytes cut by jackfield (limit {limit}) ...]\n"


def cap(text: str, limit: int) -> str:
    """Keep the head and tail of `text` within `limit` UTF-8 bytes, saying how much was cut.

    Head and tail both matter: a listing's first lines say what it is, the last lines often
    hold the summary or the error.
    """
    data = text.encode()
    if len(data) <= limit:
        return text
    marker_room = len(MARKER.format(cut=len(data), limit=limit).encode())
    keep = max(limit - marker_room, 0)
    head, tail = data[: keep // 2 + keep % 2], data[len(data) - keep // 2 :] if keep // 2 else b""
    cut = len(data) - len(head) - len(tail)
    return (
        head.decode(errors="ignore")
        + MARKER.format(cut=cut, limit=limit)
        + tail.decode(errors="ignore")
    )


def speakable(server: str, tool: str, problem: str) -> str:
    """A sentence the agent can say; `problem` is already short and free of secrets."""
    return f"The {tool} tool from {server} could not be used: {problem}."


def unavailable(server: str, state: str) -> str:
    return f"The {server} tools are unavailable right now (the server is {state.lower()})."


def timed_out(server: str, tool: str, seconds: float) -> str:
    return f"The {tool} tool from {server} did not answer within {seconds:g} seconds."


def unknown_tool(name: str) -> str:
    return f"There is no tool called {name} any more."
