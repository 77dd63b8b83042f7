"""The caller on the line, as a tool call needs them: lines said to them, questions asked and the
answers heard.

A tool call speaks in short lines (a filler, progress, a question). On the pipeline a line goes
through the TTS (`session.say`); a realtime model without TTS is told to say it
(`generate_reply(instructions="Say only: ...")`). A question waits for the caller's next
utterance, which must reach the waiting call instead of the LLM:

- pipeline: `LiveAgent.on_user_turn_completed` hands the turn to `Caller.hear` and stops the
  LLM's reply (`StopResponse`);
- realtime (server turn detection, which never calls that hook): the final input transcription
  (`user_input_transcribed`) is the answer, and the response the server starts by itself for
  that turn is interrupted, so the model does not answer the "yes" on its own;
- a text console: a typed line while a question waits is the answer (`VoiceJob._serve_text`).

While a question waits, the tool turn's speech is held against interruption: livekit-agents
interrupts the running turn for every user turn, and the answer is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.events import SpeechCreatedEvent, UserInputTranscribedEvent

from jackfield.core.voice import ToolVoice

Notify = Callable[[dict[str, Any]], None]
"""Where the job reports what the caller heard and said (its text console, if any)."""

QUIET_AFTER_ANSWER = 2.0
"""Realtime: seconds after a transcribed answer during which a response the server starts on
its own is still that answer's, and is interrupted (the transcript may come first)."""


def _quiet(message: dict[str, Any]) -> None:
    return None


def speaks_itself(session: AgentSession[Any]) -> bool:
    """A realtime model without a TTS: lines are said by telling the model to say them."""
    model = session.llm
    return (
        session.tts is None
        and isinstance(model, llm.RealtimeModel)
        and not model.capabilities.supports_say
    )


def say_line(session: AgentSession[Any], text: str) -> SpeechHandle | None:
    """Say `text` as it is; None when the session cannot speak now (it is closing)."""
    try:
        if speaks_itself(session):
            return session.generate_reply(instructions=f"Say only: {text}", tool_choice="none")
        return session.say(text)
    except RuntimeError:
        return None


@contextlib.contextmanager
def held(handle: SpeechHandle | None) -> Iterator[None]:
    """No interruption of `handle` meanwhile. Counted (livekit's own hold, the one its inline
    tasks use), so parallel calls of one turn may each hold it."""
    if handle is None or handle.interrupted or handle.done():
        yield
        return
    handle._hold_interruptions()
    try:
        yield
    finally:
        handle._release_interruptions()


@dataclass(frozen=True)
class Running:
    """A call in flight, for a server's question that arrives during it."""

    tool: str
    voice: ToolVoice
    handle: SpeechHandle | None


class Caller:
    """What tool calls say to the caller and ask them, one question at a time."""

    def __init__(self, notify: Notify = _quiet) -> None:
        self.notify = notify
        self.session: AgentSession[Any] | None = None
        """The session the caller is on now (set by `attach`)."""
        self.idle = asyncio.Event()
        """Set while no question waits: progress lines hold back meanwhile."""
        self.idle.set()
        self.running: list[Running] = []
        """Calls in flight, oldest first."""
        self._answer: asyncio.Future[str] | None = None
        self._question: str | None = None
        self._one_at_a_time = asyncio.Lock()
        self._quiet_until = 0.0

    # --- the session --------------------------------------------------------------------------

    def attach(self, session: AgentSession[Any]) -> None:
        self.session = session
        session.on("user_input_transcribed", self._on_transcript)
        session.on("speech_created", self._on_speech)

    def detach(self, session: AgentSession[Any]) -> None:
        session.off("user_input_transcribed", self._on_transcript)
        session.off("speech_created", self._on_speech)
        if self.session is session:
            self.session = None

    def _on_transcript(self, event: UserInputTranscribedEvent) -> None:
        session = self.session
        if session is None or not isinstance(session.llm, llm.RealtimeModel):
            return  # the pipeline's answers come through on_user_turn_completed
        if event.is_final and event.transcript.strip() and self.hear(event.transcript):
            self._quiet_until = time.monotonic() + QUIET_AFTER_ANSWER

    def _on_speech(self, event: SpeechCreatedEvent) -> None:
        if event.user_initiated:
            return
        if self.asking or time.monotonic() < self._quiet_until:
            with contextlib.suppress(RuntimeError):
                event.speech_handle.interrupt(force=True)

    # --- speaking ------------------------------------------------------------------------------

    def say(
        self, session: AgentSession[Any], text: str, *, kind: str, tool: str
    ) -> SpeechHandle | None:
        """Say one line during a call (kind: filler, progress, question, notice)."""
        self.notify({"said": text, "kind": kind, "call": tool, "at": time.monotonic()})
        return say_line(session, text)

    # --- asking --------------------------------------------------------------------------------

    @property
    def asking(self) -> bool:
        return self._answer is not None and not self._answer.done()

    def hear(self, text: str) -> bool:
        """The caller said `text`. True: it answered the waiting question (it is no turn)."""
        answer = self._answer
        if answer is None or answer.done():
            return False
        answer.set_result(text)
        self.notify({"answer": text, "to": self._question, "at": time.monotonic()})
        return True

    async def ask(
        self,
        session: AgentSession[Any],
        question: str,
        *,
        timeout: float,
        kind: str,
        tool: str,
        handle: SpeechHandle | None,
    ) -> str | None:
        """Say `question`, then wait for the answer: the text heard, or None after `timeout`
        seconds of silence, counted once the question has been said. `handle` (the tool
        turn's speech) is held against interruption meanwhile."""
        async with self._one_at_a_time:
            answer = asyncio.get_running_loop().create_future()
            self._answer, self._question = answer, question
            self.idle.clear()
            try:
                with held(handle):
                    spoken = self.say(session, question, kind="question", tool=tool)
                    self.notify({"question": question, "kind": kind, "call": tool,
                                 "at": time.monotonic()})  # fmt: skip
                    if spoken is not None:
                        played = asyncio.ensure_future(spoken.wait_for_playout())
                        await asyncio.wait([answer, played], timeout=timeout,
                                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                        played.cancel()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            return str(await asyncio.shield(answer))
                    return None
            finally:
                self._answer = self._question = None
                self.idle.set()

    def current(self) -> Running | None:
        """The newest call in flight: the one a server's question is most likely about."""
        return self.running[-1] if self.running else None
