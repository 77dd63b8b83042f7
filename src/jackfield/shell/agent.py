"""The LiveKit job: an agent session built from the hub's agent view, following it live.

LiveKit runs each job in a process of its own (DESIGN.md section 5), so the job reads no config
file: everything comes from the hub (`shell/hub_link.py`). At start it reads the agent view
(spec, instructions, revision) and the tools, builds the session (OpenAI Realtime, or the
`fallback` pipeline: STT -> LLM -> TTS), greets, and returns; the session lives on in the job.

- **Safe-point updates** (`shell/live_agent.py`). Announcements are applied with
  `Agent.update_tools` / `Agent.update_instructions` only while no tool call of the session
  runs.
- **A real fallback.** An unrecoverable realtime error (at start or mid-call) closes the
  realtime session; the job then starts the fallback pipeline in the same room, with the same
  hub link and the conversation so far, and tells the hub (status, metrics, cool-down).
- **No stall at the end.** When the session closes for good the job shuts down at once.
- **Voice-native tool calls.** Fillers and spoken progress, barge-in cancels, spoken
  confirmation (`shell/voice_calls.py`), a server's questions asked by voice
  (`shell/voice_forms.py`), all through one `Caller` per job (`shell/caller.py`). A hang-up
  cancels every call in flight before the hub link closes.
- **Text turns.** A job may be linked to a text console (`shell/text_link.py`): `jackfield
  console` and the tests type turns into a real job process that way, delivered as speech
  would be (an answer to a waiting question, or a turn that talks over the running one).
- **The caller context follows the linked participant.** The hub is told who the session is
  for (`core/caller_context.py`): the participant the session is linked to (identity, name,
  attributes), the job's room and dispatch metadata. The room and metadata go with the first
  connection; the participant once the session links one, and again whenever it changes (a
  participant joins, changes attributes or leaves: the room's events). Each change reconnects
  the hub link (once no call is in flight), and the agent's tools and instructions become what
  the hub serves that caller. On a text link, the console plays the participant
  (`{"participant": ...}`), in place of the fake job's stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from livekit import rtc
from livekit.agents import AgentSession, APIConnectOptions, JobContext, llm
from livekit.agents.types import NOT_GIVEN, NotGiven
from livekit.agents.voice import room_io
from livekit.agents.voice.events import CloseEvent, ErrorEvent
from livekit.agents.voice.turn import TurnHandlingOptions

from jackfield.core.caller_context import CallerContext
from jackfield.core.turns import pipeline_turn_handling, realtime_turn_detection
from jackfield.shell.caller import Caller
from jackfield.shell.hub_link import UNREACHABLE, HubLink, HubUnavailable
from jackfield.shell.live_agent import HUB_WAIT, NO_HUB_INSTRUCTIONS, LiveAgent, build_agent
from jackfield.shell.text_link import JobChannel, PlayedParticipant, TextLinkAddress
from jackfield.shell.tracing import configure_tracing, flush_tracing, otel_environment, provider
from jackfield.shell.voice_forms import VoiceForms, form_filler
from jackfield.shell.worker import PRELOAD
from jackfield.spec.models import AgentSpec, LLMSpec, TurnSpec

log = logging.getLogger(__name__)

CANCEL_WAIT = 3.0
"""Seconds the end of a job waits for cancelled calls to tell the hub."""
JOIN_WAIT = 30.0
"""Seconds a console's caller change waits for the link and the agent to follow it."""
ROOM_EVENTS: tuple[rtc.room.EventTypes, ...] = (
    "participant_connected", "participant_attributes_changed", "participant_name_changed",
    "participant_disconnected",
)  # fmt: skip
"""The room's events that may change the linked participant, or what it is."""
DEFAULT_PIPELINE = LLMSpec(mode="pipeline", model="gpt-4o-mini")
"""The pipeline when agent.yaml gives none: for a realtime agent without a fallback."""
CARRY_ON = (
    "The voice connection was switched to a backup line. In a few words tell the caller you are"
    " still there, then carry on where the conversation left off."
)
REALTIME_RETRIES = APIConnectOptions(max_retry=1, retry_interval=0.5, timeout=5.0)
"""With a fallback to go to, a realtime model that fails is given up on quickly."""

Mode = Literal["realtime", "pipeline"]
UPDATE_EVENTS = ("session_update_", "tools_update_", "instructions_update_")
"""Event id prefixes of livekit-agents' realtime session updates (tools, instructions)."""


@dataclass(frozen=True)
class JobConfig:
    """What every job of a worker needs, pickled into each job process (jobs read no files and
    no environment: a forkserver's environment is the one of its first start)."""

    hub_url: str
    hub_token: str
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    realtime_base_url: str | None = None
    text_link: TextLinkAddress | None = None
    text_model: str | None = None
    """A text console: the session is this chat model alone (no realtime, no STT or TTS)."""
    agent_spec: dict[str, Any] | None = None
    """The Agent spec (JSON) when the worker started: what a job that cannot reach the hub
    builds its session from (tools and instructions follow once the hub is back)."""
    tracing: dict[str, str] = field(default_factory=otel_environment)
    """The `OTEL_*` variables of the process that made the config (docs/tracing.md): the
    job exports its spans as that process does."""


# --- the session ---------------------------------------------------------------------------------


def _given(value: float | None) -> float | NotGiven:
    return NOT_GIVEN if value is None else value


def turn_handling(turn: TurnSpec) -> TurnHandlingOptions:
    """agent.yaml's `turn` in livekit-agents 1.8's TurnHandlingOptions shape."""
    options: TurnHandlingOptions = pipeline_turn_handling(turn)  # type: ignore[assignment]
    return options


def pipeline_model(spec: AgentSpec) -> LLMSpec:
    """The model a pipeline session uses: the agent's own, else its fallback, else a default."""
    if spec.llm.mode == "pipeline":
        return spec.llm
    return spec.fallback or DEFAULT_PIPELINE


def session_for(spec: AgentSpec, mode: Mode, config: JobConfig) -> AgentSession[Any]:
    """The session for one mode; `turn` mapped onto what that mode can honour."""
    from livekit.plugins import openai
    from openai.types.realtime import RealtimeAudioInputTurnDetection
    from pydantic import TypeAdapter

    key = config.openai_api_key
    turn = turn_handling(spec.turn)
    if config.text_model is not None:
        return AgentSession(
            llm=openai.LLM(model=config.text_model, temperature=_given(spec.llm.temperature),
                           api_key=key or NOT_GIVEN, base_url=config.openai_base_url or NOT_GIVEN)
        )  # fmt: skip
    if mode == "realtime":
        detection = TypeAdapter(RealtimeAudioInputTurnDetection).validate_python(
            realtime_turn_detection(spec.turn)
        )
        realtime = openai.realtime.RealtimeModel(
            model=spec.llm.model,
            voice=spec.llm.voice or "alloy",
            turn_detection=detection,
            api_key=key,
            base_url=config.realtime_base_url or config.openai_base_url or NOT_GIVEN,
            conn_options=REALTIME_RETRIES if spec.fallback is not None else NOT_GIVEN,  # type: ignore[arg-type]
        )
        # livekit-agents refuses interruption.enabled=False while the server detects turns;
        # interrupt_response in the turn detection above carries allowInterruptions instead
        return AgentSession(llm=realtime)
    model = pipeline_model(spec)
    base_url = config.openai_base_url or NOT_GIVEN
    key_given = key or NOT_GIVEN
    return AgentSession(
        llm=openai.LLM(
            model=model.model, temperature=_given(model.temperature), api_key=key_given,
            base_url=base_url,
        ),
        stt=openai.STT(
            model=model.stt or "gpt-4o-transcribe", api_key=key_given, base_url=base_url
        ),
        tts=openai.TTS(
            model=model.tts or "gpt-4o-mini-tts", voice=model.voice or "alloy", api_key=key_given,
            base_url=base_url,
        ),
        turn_handling=turn,
    )  # fmt: skip


def first_mode(spec: AgentSpec, view: dict[str, Any] | None) -> tuple[Mode, str | None]:
    """Realtime unless the agent is a pipeline, or the worker's cool-down says skip it."""
    if spec.llm.mode == "pipeline":
        return "pipeline", None
    if view is not None and not view.get("realtime", True) and spec.fallback is not None:
        return "pipeline", "realtime_cooldown"
    return "realtime", None


class VoiceJob:
    """One LiveKit job: the hub link, the current session, the fallback, the end."""

    def __init__(self, ctx: JobContext, config: JobConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.played: PlayedParticipant | None = None
        """The participant a text console plays: in place of the linked one."""
        self.played_metadata: str | None = None
        """The dispatch metadata a text console plays: in place of the job's."""
        # the room and the metadata from the first connection; the participant once linked
        first = CallerContext.of(None, room=ctx.job.room.name, metadata=ctx.job.metadata or None)
        self.link = HubLink(config.hub_url, config.hub_token, session_id=f"job-{ctx.job.id}",
                            context=first)  # fmt: skip
        self.spec = (
            AgentSpec.model_validate(config.agent_spec)
            if config.agent_spec is not None
            else AgentSpec(instructions=NO_HUB_INSTRUCTIONS)
        )
        self.view: dict[str, Any] | None = None
        self.mode: Mode = "realtime"
        self.session: AgentSession[Any] | None = None
        self.agent: LiveAgent | None = None
        self.spoken = False
        self.closing = False
        self.channel: JobChannel | None = None
        self.session_ready = asyncio.Event()
        self.preloaded: list[str] = []
        """Modules of the worker's preload list already imported when the job started."""
        self.caller = Caller(notify=self._send)
        self.link.elicit = VoiceForms(self.caller, form_filler(self._form_model)).elicit
        self._form_llm: llm.LLM[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._follower: asyncio.Task[None] | None = None

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        self._spawn(self.link.run(), "hub-link")
        if self.config.text_link is not None:
            self.channel = await JobChannel.open(self.config.text_link, job=self.ctx.job.id)
        if await self.link.wait_current(HUB_WAIT):
            with contextlib.suppress(HubUnavailable):
                self.view = await self.link.view()
                self.spec = AgentSpec.model_validate(self.view["spec"])
        else:
            log.warning("the hub is unreachable (%s): starting without tools", self.link.last_error)
        self.link.changed.clear()
        self.mode, reason = first_mode(self.spec, self.view)
        if self.config.text_model is not None:
            self.mode, reason = "pipeline", None
        await self.ctx.connect()
        self.ctx.add_shutdown_callback(self.aclose)
        self.ctx.room.on("participant_disconnected", self._on_participant_left)
        await self._start_session(await build_agent(self.link, caller=self.caller))
        for event in ROOM_EVENTS:  # a no-op on a fake job's mock room
            self.ctx.room.on(event, self._on_room_change)
        if reason is not None:
            self._report_fallback(reason, realtime_failed=False)
        if self.channel is not None:
            self._spawn(self._serve_text(self.channel), "text-link")

    async def _start_session(self, agent: LiveAgent, *, carry_on: bool = False) -> None:
        session = session_for(self.spec, self.mode, self.config)
        session.on("close", self._on_close)
        session.on("error", self._on_error)
        session.on("conversation_item_added", self._on_item)
        session.on("function_tools_executed", self._on_tools)
        self.session, self.agent = session, agent
        agent.on_update = self._on_update
        if self._follower is not None:
            self._follower.cancel()
        self._follower = asyncio.create_task(agent.follow(), name="agent-follow")
        if self.config.text_model is not None:  # text in and out: no audio tracks to wait on
            options = room_io.RoomOptions(audio_input=False, audio_output=False)
            await session.start(agent=agent, room=self.ctx.room, room_options=options)
        else:
            await session.start(agent=agent, room=self.ctx.room)
        self.follow_caller()
        self._spawn(self._follow_when_linked(session), "caller-link")
        self.session_ready.set()
        self._send({"ready": {"mode": self.mode, "revision": (self.view or {}).get("revision"),
                              "tools": len(agent.tools), "preloaded": self.preloaded}})  # fmt: skip
        if carry_on and self.spoken:
            session.generate_reply(instructions=CARRY_ON)
        elif self.spec.greeting:
            session.generate_reply(instructions=self.spec.greeting)

    def _on_error(self, event: ErrorEvent) -> None:
        # An unrecoverable realtime error closes the session, and in livekit-agents 1.8.9 that
        # close can fail before its "close" event: act on the error itself.
        error = event.error
        if not isinstance(error, llm.RealtimeModelError):
            return
        if error.recoverable:
            self._check_rejected_update(error)
            return
        if self.closing or self.mode != "realtime" or self.spec.fallback is None:
            return
        reason = "realtime_failed" if self.spoken else "realtime_unavailable"
        log.warning("realtime model failed (%s): continuing on the fallback pipeline", reason)
        self.mode = "pipeline"
        self._spawn(self._fall_back(reason), "fallback")

    def _check_rejected_update(self, error: llm.RealtimeModelError) -> None:
        """The Realtime API answers a session.update it refuses (a tool schema it will not take,
        instructions too long) with an error naming that event: the update did not apply."""
        body = getattr(error.error, "body", None)
        event_id = str(getattr(body, "event_id", None) or "")
        if not event_id.startswith(UPDATE_EVENTS):
            return
        message = str(getattr(body, "message", None) or error.error)
        log.warning("the realtime model refused an update (%s): %s", event_id, message)
        if self.agent is not None:
            self.agent.revision = f"rejected:{self.agent.revision}"
        self._send({"update_rejected": message})
        event = {"event": "update_rejected", "message": message}
        self._spawn(self.link.report(event), "report")

    def _on_close(self, event: CloseEvent) -> None:
        replaced = isinstance(event.error, llm.RealtimeModelError) and self.mode == "pipeline"
        if self.closing or replaced:
            return  # ending anyway, or the realtime session that the fallback replaces
        log.info("session closed (%s): ending the job", event.reason)
        self.ctx.shutdown(reason=f"session closed: {event.reason}")

    async def _fall_back(self, reason: str) -> None:
        self.session_ready.clear()
        failed = self.session
        if failed is not None:
            failed.off("close", self._on_close)
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(5):
                    await failed.aclose()
        old = self.agent
        chat_ctx = old.chat_ctx.copy() if old is not None else None
        agent = await build_agent(self.link, chat_ctx=chat_ctx, caller=self.caller)
        self._report_fallback(reason, realtime_failed=True)
        self._send({"fallback": reason})
        try:
            await self._start_session(agent, carry_on=True)
        except Exception:
            log.exception("the fallback pipeline could not start; ending the job")
            self.ctx.shutdown(reason="fallback failed")

    def _report_fallback(self, reason: str, *, realtime_failed: bool) -> None:
        event = {"event": "fallback", "reason": reason, "realtime_failed": realtime_failed}
        self._spawn(self.link.report(event), "report")

    def _form_model(self) -> llm.LLM[Any]:
        """The text model that turns a caller's answer into a form's fields: the console's
        chat model, else the pipeline's (on realtime too: a realtime model makes no side
        calls). Made once, closed with the job."""
        if self._form_llm is None:
            from livekit.plugins import openai

            model = self.config.text_model or pipeline_model(self.spec).model
            self._form_llm = openai.LLM(
                model=model, api_key=self.config.openai_api_key or NOT_GIVEN,
                base_url=self.config.openai_base_url or NOT_GIVEN,
            )  # fmt: skip
        return self._form_llm

    # --- the caller context -----------------------------------------------------------------------

    def caller_context(self) -> CallerContext:
        """Who the session is for now: the participant it is linked to (or the one a text
        console plays), the job's room, its dispatch metadata."""
        participant = self.played if self.played is not None else self._linked()
        metadata = self.played_metadata
        if metadata is None:
            metadata = self.ctx.job.metadata or None
        return CallerContext.of(participant, room=self.ctx.job.room.name, metadata=metadata)

    def _linked(self) -> Any:
        if self.session is None:
            return None
        try:
            return self.session.room_io.linked_participant
        except RuntimeError:  # no room io
            return None

    def follow_caller(self) -> bool:
        """Tell the hub the current context; True when it changed (the link reconnects)."""
        if self.closing:  # the caller left: nothing more runs for anyone
            return False
        return self.link.set_context(self.caller_context())

    def _on_room_change(self, *args: Any) -> None:
        # after every handler of the event: a session started later (a fallback) registered
        # its room io's after this one, and links or unlinks the participant there
        asyncio.get_running_loop().call_soon(self.follow_caller)

    async def _follow_when_linked(self, session: AgentSession[Any]) -> None:
        """The room io links a participant already in the room once it has started."""
        with contextlib.suppress(RuntimeError):
            await session.room_io.wait_for_ready()
            if session is self.session:
                self.follow_caller()

    async def _play_participant(self, channel: JobChannel, message: dict[str, Any]) -> None:
        """A console's `{"participant": ...}`: that participant joined, or changed its
        attributes. Answers `{"caller": ...}` once the hub link carries the new context and
        the agent shows what the hub serves that caller."""
        self.played = PlayedParticipant.of(message)
        if isinstance(message.get("metadata"), str):
            self.played_metadata = message["metadata"]
        self.follow_caller()
        answer: dict[str, Any] = {"identity": self.played.identity}
        try:
            if not await self.link.wait_current(JOIN_WAIT):
                raise TimeoutError
            connects, agent = self.link.connects, self.agent
            if agent is not None:
                async with asyncio.timeout(JOIN_WAIT):
                    await agent.applied_since(connects)
        except TimeoutError:
            answer["error"] = "the hub link did not follow the new caller in time"
        agent = self.agent
        answer["tools"] = sorted(t.id for t in agent.tools) if agent is not None else []
        channel.send({"caller": answer})

    # --- what a text console sees ---------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def _on_update(self, agent: LiveAgent) -> None:
        tools = sorted(t.id for t in agent.tools)
        self._send({"updated": {"tools": tools, "instructions": str(agent.instructions)}})

    def _on_item(self, event: Any) -> None:
        item = event.item
        if getattr(item, "role", None) == "assistant" and getattr(item, "text_content", None):
            self.spoken = True
            self._send({"agent": item.text_content, "at": time.monotonic()})

    def _on_tools(self, event: Any) -> None:
        for call, output in event.zipped():
            self._send({"tool": call.name, "arguments": call.arguments,
                        "output": output.output if output else "",
                        "is_error": bool(output and output.is_error)})  # fmt: skip

    async def _serve_text(self, channel: JobChannel) -> None:
        """The console's lines as a caller's speech, until it goes away (then the job ends): the
        answer to a waiting question, else a turn, which talks over the one still running (as
        speech interrupts it) and runs once that one is over (`session.run` does not nest)."""
        turn: asyncio.Task[None] | None = None
        async for message in channel.messages():
            await self.session_ready.wait()
            if "participant" in message:  # not waited for here: a question may need a turn
                self._spawn(self._play_participant(channel, message), "participant")
                continue
            if message.get("interrupt"):
                self._interrupt()
                channel.send({"interrupted": {"at": time.monotonic()}})
                continue
            text = str(message["user"])
            if self.caller.hear(text):
                continue
            if turn is not None and not turn.done():
                self._interrupt()
            turn = asyncio.create_task(self._text_turn(channel, text, after=turn), name="turn")
            self._tasks.add(turn)
            turn.add_done_callback(self._tasks.discard)
        if not self.closing:
            self._hang_up()
            self.ctx.shutdown(reason="the text console left")

    async def _text_turn(
        self, channel: JobChannel, text: str, *, after: asyncio.Task[None] | None
    ) -> None:
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        await self.session_ready.wait()
        error = None
        try:
            assert self.session is not None
            await self.session.run(user_input=text)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        channel.send({"turn_done": True, "error": error})

    def _hang_up(self) -> None:
        """The caller left: calls in flight are cancelled now, before the framework closes the
        session (which would wait for them)."""
        if cancelled := self.link.cancel_calls():
            log.info("the caller left: cancelling %d call(s) in flight", len(cancelled))

    def _on_participant_left(self, participant: Any) -> None:
        """The room's event, heard before the session's own (registered later) closes it."""
        if self.session is None:
            return
        try:
            linked = self.session.room_io.linked_participant
        except RuntimeError:  # no room io
            return
        if linked is not None and participant.identity == linked.identity:
            self._hang_up()

    def _interrupt(self) -> None:
        """The caller talks over the agent: its speech stops, and with it its tool turn."""
        if self.session is not None:
            with contextlib.suppress(RuntimeError):  # speech that may not be interrupted
                self.session.interrupt()

    async def aclose(self, reason: str = "") -> None:
        """The job's shutdown callback: close what the framework does not know about. The
        framework closed the session first, which waited for the calls in flight (a drain lets
        them finish); any still running are cancelled before the hub link closes."""
        self.closing = True
        if cancelled := self.link.cancel_calls():  # none left after a hang-up or a drain
            log.info("ending the job: cancelling %d call(s) in flight", len(cancelled))
            await asyncio.wait(cancelled, timeout=CANCEL_WAIT)
        if self._follower is not None:
            self._follower.cancel()
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.aclose()
        if self.channel is not None:
            await self.channel.aclose()
        if self._form_llm is not None:
            with contextlib.suppress(Exception):
                await self._form_llm.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class JobEntry:
    """The worker's entrypoint: picklable, so it travels into each job process."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config

    async def __call__(self, ctx: JobContext) -> None:
        if configure_tracing("jackfield-job", env=self.config.tracing):
            from livekit.agents import telemetry

            installed = provider()
            assert installed is not None
            # LiveKit's spans (agent_turn, function_tool) too, without the conversation
            telemetry.set_tracer_provider(installed, allow_pii=False)
            ctx.add_shutdown_callback(lambda: asyncio.to_thread(flush_tracing))
        job = VoiceJob(ctx, self.config)
        job.preloaded = sorted(m for m in PRELOAD if m in sys.modules)
        await job.start()


__all__ = [
    "UNREACHABLE",
    "JobConfig",
    "JobEntry",
    "VoiceJob",
    "session_for",
]
