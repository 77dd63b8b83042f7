"""What travels back to the caller of one call while it runs (docs/voice.md): the server's
progress notices and its questions (elicitation), through the call's `CallChannel`; and the
per-server counts of what the voice features saw (`VoiceCounts`)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import mcp_types

from jackfield.shell.redaction import redact
from jackfield.shell.transports import short

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
"""Told each progress notice of a call: (progress, total, message)."""
ElicitFn = Callable[
    [mcp_types.ElicitRequestParams], Awaitable[mcp_types.ElicitResult | mcp_types.ErrorData]
]
"""Asked what the server asks during a call (form or URL mode, as it came); answers for it."""
VoiceCounts = Counter[tuple[str, str]]
"""(kind, outcome) -> count, one per server: ("progress", "notice"), ("cancellation",
"cancelled"), ("confirmation", "yes"|"no"|"timeout"), ("elicitation", "accept"|"decline"|
"cancel"|"refused"), ("sampling", "refused")."""

SAMPLING_REFUSED = (
    "jackfield does not let MCP servers sample the agent's model: it declares no sampling"
    " capability, and every sampling/createMessage is refused"
)
UNROUTED_ELICITATION = (
    "jackfield cannot tell which of the calls in flight on this connection this question"
    " belongs to (none, or several at once), so no one can answer it"
)
NO_QUESTIONS = "the caller of this call takes no questions"
PROGRESS_FORWARD_TIMEOUT = 2.0
"""Seconds one progress notice may take to reach the caller before it is dropped for it."""


@dataclass(frozen=True, eq=False)
class CallChannel:
    """What travels back to the caller of one call while it runs: the server's progress
    notices and its questions (elicitation). None: the caller takes none."""

    progress: ProgressFn | None = None
    elicit: ElicitFn | None = None


NO_CHANNEL = CallChannel()

calling_now: contextvars.ContextVar[tuple[object, CallChannel] | None] = contextvars.ContextVar(
    "jackfield_calling", default=None
)
"""(the connection's owner, the call) a server-to-client request belongs to, where the SDK
runs its callback in the calling task's context: the 2026-07-28 `input_required` rounds (driven
inside `call_tool`) and streamable HTTP, whose POST streams carry the sender's context.
Elsewhere (stdio, SSE, WebSocket) the callback runs in the connection's reader task and sees
None."""


class CallProgress:
    """One call's progress callback: counts each notice and hands it on, masked and in order
    (the SDK runs each callback in a task of its own), bounded: a caller that stopped reading
    holds up nothing."""

    def __init__(
        self, channel: CallChannel, counts: VoiceCounts, secrets: frozenset[str], *, server: str
    ) -> None:
        self._channel = channel
        self._counts = counts
        self._secrets = secrets
        self._server = server
        self._order = asyncio.Lock()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self._counts["progress", "notice"] += 1
        forward = self._channel.progress
        if forward is None:
            return
        shown = redact(message, self._secrets) if message else message
        async with self._order:
            try:
                async with asyncio.timeout(PROGRESS_FORWARD_TIMEOUT):
                    await forward(progress, total, shown)
            except Exception as e:  # the caller went away: the call goes on
                log.debug("server %s: progress not forwarded: %s", self._server, short(e))

    async def settled(self) -> None:
        """Wait (bounded) for the notices already handed to us: the lock is first come, first
        served, so taking it once means those before are through."""
        if self._channel.progress is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROGRESS_FORWARD_TIMEOUT), self._order:
                pass
