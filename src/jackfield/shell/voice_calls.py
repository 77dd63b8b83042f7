"""The hub's tools as LiveKit function tools, and how their calls sound to a caller.

Each hub tool carries its voice settings (`ToolVoice`, in `_meta[VOICE_META]`; core/voice.py
decides them). One call of it, in the job:

1. **Confirmation** (`voice.confirm`): the agent asks one short question built from the tool's
   title and arguments and waits up to `answer_timeout` for the caller; only a clear yes calls,
   with the question and answer in the call's `_meta[CONFIRMATION_META]`. Unclear: asked once
   more. No, silence or unclear twice: nothing is called, the hub hears of it
   (`{"event": "confirmation", ...}`) and the LLM gets `NOT_CONFIRMED`.
2. **Progress to speech**: the filler once the call runs past `filler_after`, then at most one
   progress line (from the server's notices) per `progress_every` (`core.voice.next_line`),
   never over a question the caller is being asked.
3. **Barge-in** (`voice.cancel_on_interrupt`): when the tool turn's speech is interrupted (the
   caller talks over it), the call is cancelled (the SDK tells the hub, which cancels
   upstream) and nothing of its result is spoken. Other calls run to the end (their result
   unspoken), even when livekit-agents gives up on the interrupted turn. A hang-up cancels
   every call (`HubLink.cancel_calls`).
4. **Speakable results**: images, audio, links and structured content become short text
   (`core.voice.speakable_result`); errors are raised as `ToolError` with their text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any

import mcp_types
from livekit.agents import RunContext, llm
from livekit.agents.llm import function_tool

from jackfield.core.voice import (
    CONFIRMATION_META,
    VOICE_META,
    Pacing,
    ToolVoice,
    answer_of,
    confirmation_question,
    line_due,
    next_line,
    progress_line,
    speakable_result,
)
from jackfield.shell.caller import Caller, Running
from jackfield.shell.hub_link import HubLink, HubUnavailable

log = logging.getLogger(__name__)

NOT_CONFIRMED = "The caller did not confirm; nothing was done."
INTERRUPTED = "The caller interrupted, so the call was cancelled; nothing came of it."
HUNG_UP = "The call was cancelled: the caller hung up."
ASK_AGAIN = "Sorry, I didn't catch that. "


def tools_of(link: HubLink, listed: list[mcp_types.Tool], caller: Caller) -> list[llm.Tool]:
    """The hub's tools as LiveKit raw function tools, called through the link."""
    return [voice_tool(link, t, caller) for t in listed]


def voice_of(tool: mcp_types.Tool) -> ToolVoice:
    """The tool's voice settings as the hub sent them (the agent defaults when it sent none)."""
    meta = tool.meta.get(VOICE_META) if tool.meta else None
    return ToolVoice.from_json(meta, name=tool.name)


@dataclass(frozen=True)
class _Request:
    """One call the LLM asked for: where it goes, who hears it, how it sounds."""

    ctx: RunContext[Any]
    link: HubLink
    caller: Caller
    name: str
    voice: ToolVoice
    arguments: dict[str, Any]

    async def confirmed(self) -> dict[str, str] | None:
        """The caller's yes (question and answer, for the hub's audit), or None: do not call."""
        question = confirmation_question(self.voice.title, self.arguments)
        asked, answer = question, "unclear"
        for _ in range(2):  # an unclear answer is asked once more, then counts as a no
            heard = await self.caller.ask(
                self.ctx.session, asked, timeout=self.voice.answer_timeout, kind="confirmation",
                tool=self.name, handle=self.ctx.speech_handle,
            )  # fmt: skip
            answer = "timeout" if heard is None else answer_of(heard)
            if answer != "unclear":
                break
            asked = ASK_AGAIN + question
        outcome = "no" if answer == "unclear" else answer
        told = {"tool": self.name, "question": question, "answer": outcome}
        self.caller.notify({"confirmation": told})
        if outcome == "yes":
            return {"question": question, "answer": "yes"}
        await _bounded(self.link.report({"event": "confirmation", **told}))
        return None

    async def run(self, meta: dict[str, Any] | None) -> mcp_types.CallToolResult | str:
        """The call, with its filler and progress lines; a string when it was cancelled.

        Raises:
            HubUnavailable: the hub is not reachable.
        """
        progress = _Progress(self.voice, self.caller, self.ctx, self.name)
        running = Running(self.name, self.voice, self.ctx.speech_handle)
        self.caller.running.append(running)
        call = asyncio.create_task(
            self.link.call(self.name, self.arguments, progress=progress.notice, meta=meta),
            name=f"call-{self.name}",
        )
        speaking = asyncio.create_task(progress.speak(), name=f"progress-{self.name}")
        try:
            if self.voice.cancel_on_interrupt:
                await self.ctx.speech_handle.wait_if_not_interrupted([call])
                if not call.done():
                    call.cancel()
                    await asyncio.wait([call])
                    self._cancelled("interrupted")
                    return INTERRUPTED
            try:
                # cancel: never. livekit-agents cancels an interrupted turn's tool 5 s on
                # (INTERRUPTION_TIMEOUT); the call itself runs to the end regardless
                return await (call if self.voice.cancel_on_interrupt else asyncio.shield(call))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                self._cancelled("hangup")
                return HUNG_UP
        finally:
            self.caller.running.remove(running)
            speaking.cancel()
            if self.voice.cancel_on_interrupt or call.done():
                call.cancel()
                await asyncio.gather(call, speaking, return_exceptions=True)
            else:
                log.info("tool %s: its turn is over; the call runs on (cancel: never)", self.name)
                call.add_done_callback(_forget)
                await asyncio.gather(speaking, return_exceptions=True)

    def _cancelled(self, reason: str) -> None:
        self.caller.notify({"cancelled": {"tool": self.name, "reason": reason,
                                          "at": time.monotonic()}})  # fmt: skip


def voice_tool(link: HubLink, tool: mcp_types.Tool, caller: Caller) -> llm.Tool:
    name = tool.name
    voice = voice_of(tool)

    async def call(ctx: RunContext[Any], raw_arguments: dict[str, Any]) -> str:
        request = _Request(ctx, link, caller, name, voice, raw_arguments)
        meta: dict[str, Any] | None = None
        if voice.confirm:
            confirmed = await request.confirmed()
            if confirmed is None:
                return NOT_CONFIRMED
            meta = {CONFIRMATION_META: confirmed}
        try:
            result = await request.run(meta)
        except HubUnavailable as e:
            log.warning("tool %s: the hub is unreachable (%s)", name, link.last_error)
            raise llm.ToolError(str(e)) from e
        if isinstance(result, str):
            return result
        if result.is_error:
            text = "\n".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))
            raise llm.ToolError(text or f"The {name} tool failed.")
        content = [c.model_dump(by_alias=True, mode="json") for c in result.content]
        return speakable_result(content, result.structured_content)

    schema = {"name": name, "description": tool.description or "", "parameters": tool.input_schema}
    return function_tool(call, raw_schema=schema)


async def _bounded(report: Awaitable[None], seconds: float = 2.0) -> None:
    """A best-effort report to the hub may not hold the caller up for long."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await report


def _forget(call: asyncio.Task[Any]) -> None:
    """A call whose turn is over: its result (or failure) goes nowhere."""
    if not call.cancelled() and (error := call.exception()) is not None:
        log.info("a call whose turn was over failed: %s", error)


class _Progress:
    """One call's progress notices, and the lines said about them."""

    def __init__(self, voice: ToolVoice, caller: Caller, ctx: RunContext[Any], tool: str) -> None:
        self.voice = voice
        self.caller = caller
        self.session = ctx.session
        self.tool = tool
        self.lines: list[str] = []
        self._heard = asyncio.Event()

    async def notice(self, progress: float, total: float | None, message: str | None) -> None:
        """The SDK's progress callback: one notice from the server."""
        self.lines.append(progress_line(progress, total, message))
        self._heard.set()

    async def speak(self) -> None:
        """Say the filler and the progress lines as they fall due, until cancelled."""
        pacing = Pacing(started=time.monotonic())
        while True:
            if not self.caller.idle.is_set():  # never over a question; the caller just spoke,
                await self.caller.idle.wait()  # so the wait for the filler starts again
                pacing = replace(pacing, started=time.monotonic())
            now = time.monotonic()
            step = next_line(self.voice, pacing, self.lines, now)
            if step is not None:
                line, after = step
                kind = "filler" if after.filler_at != pacing.filler_at else "progress"
                pacing = after
                self.caller.say(self.session, line, kind=kind, tool=self.tool)
                continue
            due = line_due(self.voice, pacing, len(self.lines))
            self._heard.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if due is None else max(0.0, due - now)):
                    await self._heard.wait()
