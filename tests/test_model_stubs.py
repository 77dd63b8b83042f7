"""The model stubs against the real plugin code: `openai.TTS`, `openai.STT` and a real
`AgentSession` on `openai.realtime.RealtimeModel` talk over real sockets to
tests/support/openai_stub.py and tests/support/realtime_stub.py. Nothing of livekit or openai is
mocked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, APIConnectOptions, APIError, function_tool
from livekit.agents.llm import RealtimeModelError
from livekit.agents.stt import SpeechEvent
from livekit.agents.voice.events import CloseEvent, ErrorEvent
from livekit.agents.voice.run_result import (
    ChatMessageEvent,
    FunctionCallEvent,
    FunctionCallOutputEvent,
    RunResult,
)
from livekit.plugins import openai
from livekit.plugins.openai.realtime import RealtimeModel

from tests.support.openai_stub import OpenAIStub
from tests.support.realtime_stub import GREETING, RealtimeStub, Refusal

pytestmark = pytest.mark.timeout(30)

FAST = APIConnectOptions(max_retry=1, retry_interval=0.1, timeout=2)
"""One retry 0.1 s after the first failure, then give up."""


def said(result: RunResult[Any]) -> list[str]:
    return [
        e.item.text_content or ""
        for e in result.events
        if isinstance(e, ChatMessageEvent) and e.item.role == "assistant"
    ]


@function_tool
async def lookup(city: str) -> str:
    """Look up the weather in a city."""
    return f"sunny in {city}"


@function_tool
async def forecast(city: str, days: int) -> str:
    """Forecast the weather in a city."""
    return f"{days} days of rain in {city}"


class Watch:
    """The session's `error` and `close` events, for awaiting without sleeping."""

    def __init__(self, session: AgentSession[Any]) -> None:
        self.errors: list[ErrorEvent] = []
        self.closed: asyncio.Future[CloseEvent] = asyncio.get_running_loop().create_future()
        self.fatal: asyncio.Future[ErrorEvent] = asyncio.get_running_loop().create_future()
        session.on("error", self._on_error)
        session.on("close", self._on_close)

    def _on_error(self, event: ErrorEvent) -> None:
        self.errors.append(event)
        if not event.error.recoverable and not self.fatal.done():
            self.fatal.set_result(event)

    def _on_close(self, event: CloseEvent) -> None:
        if not self.closed.done():
            self.closed.set_result(event)

    def recoverable(self) -> list[bool]:
        return [e.error.recoverable for e in self.errors]


@asynccontextmanager
async def realtime_session(
    stub: RealtimeStub, agent: Agent, conn_options: APIConnectOptions = FAST, **options: Any
) -> AsyncIterator[tuple[AgentSession[Any], Watch]]:
    """A real AgentSession without a room (text mode) on a RealtimeModel pointed at the stub."""
    model = RealtimeModel(
        base_url=stub.base_url, api_key="test", conn_options=conn_options, **options
    )
    try:
        async with AgentSession(llm=model) as session:
            watch = Watch(session)
            await session.start(agent)
            yield session, watch
    finally:
        await model.aclose()


# --- TTS and STT ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "response_format"),
    [
        ("gpt-4o-mini-tts", None),  # mp3 asked, raw audio/pcm answered
        ("gpt-4o-mini-tts", "pcm"),  # stream_format=sse: speech.audio.delta events
        ("tts-1", "pcm"),  # stream_format=audio: raw audio/pcm
    ],
)
async def test_tts_synthesizes_audio_from_the_stub(model: str, response_format: str | None) -> None:
    async with OpenAIStub() as stub:
        options: dict[str, Any] = {"response_format": response_format} if response_format else {}
        tts = openai.TTS(model=model, base_url=stub.base_url, api_key="test", **options)
        try:
            async with tts.synthesize("one two three four five") as stream:
                frames = [event.frame async for event in stream]
        finally:
            await tts.aclose()
    assert frames, "audio frames came out"
    assert {(f.sample_rate, f.num_channels) for f in frames} == {(24000, 1)}
    assert sum(f.duration for f in frames) == pytest.approx(0.1, abs=0.01)  # 20 ms a word
    [request] = stub.speech
    assert request["input"] == "one two three four five"
    assert request["model"] == model
    assert request["stream_format"] == ("audio" if model == "tts-1" else "sse")


async def test_stt_recognizes_the_scripted_transcript() -> None:
    silence = rtc.AudioFrame(data=bytes(4800), sample_rate=24000, num_channels=1,
                             samples_per_channel=2400)  # fmt: skip
    async with OpenAIStub(transcripts=["turn the lights on"]) as stub:
        stt = openai.STT(base_url=stub.base_url, api_key="test")
        try:
            first: SpeechEvent = await stt.recognize([silence])
            second: SpeechEvent = await stt.recognize([silence])
        finally:
            await stt.aclose()
            # STT.aclose (1.8.9) closes only its websocket pool, not the HTTP client it made
            await stt._client.close()
    assert first.alternatives[0].text == "turn the lights on"
    assert second.alternatives[0].text == ""  # the queue ran dry
    assert stub.transcription_requests[0]["model"] == "gpt-4o-mini-transcribe"
    assert stub.transcription_requests[0]["file_type"] == "audio/wav"
    assert stub.transcription_requests[0]["file_bytes"] > 4800


# --- realtime: the happy path -------------------------------------------------------------------


async def test_realtime_session_answers_text_turns() -> None:
    async with (
        RealtimeStub() as stub,
        realtime_session(stub, Agent(instructions="Be brief.")) as (session, watch),
    ):
        first: RunResult[None] = await session.run(user_input="hello there")
        second: RunResult[None] = await session.run(user_input="and again")
    assert said(first) == ["You said: hello there"]
    assert said(second) == ["You said: and again"]
    assert stub.connections == 1
    assert stub.instructions() == "Be brief."
    assert stub.handshakes[0]["path_qs"] == "/v1/realtime?model=gpt-realtime"
    assert stub.handshakes[0]["authorization"] == "Bearer test"
    assert stub.turn_detection() == {"type": "semantic_vad", "create_response": True,
                                     "eagerness": "medium", "interrupt_response": True}  # fmt: skip
    assert watch.errors == []


async def test_realtime_text_modality_replies_in_text() -> None:
    agent = Agent(instructions="Be brief.")
    async with (
        RealtimeStub() as stub,
        realtime_session(stub, agent, modalities=["text"]) as (session, watch),
    ):
        result: RunResult[None] = await session.run(user_input="hello")
    assert said(result) == ["You said: hello"]
    assert stub.session_updates[0]["output_modalities"] == ["text"]
    assert watch.errors == []


async def test_realtime_greeting_from_generate_reply_instructions() -> None:
    async with (
        RealtimeStub() as stub,
        realtime_session(stub, Agent(instructions="Be brief.")) as (session, _),
    ):
        greeting = await session.generate_reply(instructions="Greet the user.")
    assert [m.text_content for m in greeting.chat_items if m.type == "message"] == [GREETING]
    # the session instructions come first: a response's instructions replace them
    assert stub.responses[-1]["instructions"] == "Be brief.\nGreet the user."


async def test_realtime_tool_call_runs_the_real_tool() -> None:
    agent = Agent(instructions="Use tools.", tools=[lookup])
    async with RealtimeStub() as stub, realtime_session(stub, agent) as (session, _):
        result: RunResult[None] = await session.run(user_input='call lookup {"city": "Paris"}')
        assert stub.tools_seen() == ["lookup"]
        await agent.update_tools([lookup, forecast])
        await stub.wait_until(lambda: stub.tools_seen() == ["lookup", "forecast"])
        result_2: RunResult[None] = await session.run(
            user_input='call forecast {"city": "Oslo", "days": 3}'
        )
    calls = [e.item for e in result.events if isinstance(e, FunctionCallEvent)]
    outputs = [e.item for e in result.events if isinstance(e, FunctionCallOutputEvent)]
    assert [(c.name, c.arguments) for c in calls] == [("lookup", '{"city": "Paris"}')]
    assert [o.output for o in outputs] == ["sunny in Paris"]
    assert said(result) == ["The tool said: sunny in Paris"]
    assert said(result_2) == ["The tool said: 3 days of rain in Oslo"]
    [tools_update] = [s for s in stub.session_updates if "tools" in s][:1]
    assert tools_update["tools"][0]["parameters"]["required"] == ["city"]


# --- realtime: failures -------------------------------------------------------------------------
#
# livekit-agents 1.8.9: an unrecoverable realtime error reaches the AgentSession's "error" event
# (recoverable=False), and the session starts closing itself, but that close raises: the
# activity's teardown awaits `RealtimeSession.aclose()`, which re-raises the error that ended its
# main task. So the "close" event never fires; the closing task ends with the APIError instead
# (unawaited, asyncio logs "Task exception was never retrieved"). Watch "error", not "close".


async def closing_error(session: AgentSession[Any]) -> BaseException | None:
    """Await the close the session started on its own after an unrecoverable error."""
    closing = session._closing_task
    assert closing is not None, "the session started closing"
    try:
        await asyncio.wait_for(asyncio.shield(closing), 5)
    except Exception as e:
        return e
    return None


@pytest.mark.parametrize("refuse", ["http", "fatal"])
async def test_realtime_refused_from_the_start_is_unrecoverable(refuse: Refusal) -> None:
    async with RealtimeStub(refuse=refuse) as stub:
        started = time.monotonic()
        async with realtime_session(stub, Agent(instructions="x")) as (session, watch):
            fatal = await asyncio.wait_for(watch.fatal, 5)
            elapsed = time.monotonic() - started
            error = await closing_error(session)
    # http: retryable, one recoverable error per retry first; fatal: never retried
    assert watch.recoverable() == ([True, False] if refuse == "http" else [False])
    assert isinstance(fatal.error, RealtimeModelError)
    assert isinstance(fatal.source, RealtimeModel)
    assert isinstance(error, APIError)
    assert not watch.closed.done(), "1.8.9 emits no close event after this"
    assert stub.connections == (0 if refuse == "http" else 1)
    assert len(stub.handshakes) == (2 if refuse == "http" else 1)
    assert elapsed < 2


@pytest.mark.parametrize("refuse_after", ["http", "fatal"])
async def test_realtime_fail_now_mid_session_is_unrecoverable(refuse_after: Refusal) -> None:
    async with (
        RealtimeStub() as stub,
        realtime_session(stub, Agent(instructions="x")) as (session, watch),
    ):
        assert said(await session.run(user_input="hello")) == ["You said: hello"]
        dropped = time.monotonic()
        await stub.fail_now(refuse_after)
        await asyncio.wait_for(watch.fatal, 5)
        elapsed = time.monotonic() - dropped
        error = await closing_error(session)
    # the drop itself is retried; the refused reconnect (max_retry=1) is not
    assert watch.recoverable() == [True, False]
    assert isinstance(error, APIError)
    assert not watch.closed.done()
    assert stub.connections == (1 if refuse_after == "http" else 2)
    assert elapsed < 2


async def test_realtime_fail_now_without_retries_is_unrecoverable_at_once() -> None:
    no_retry = APIConnectOptions(max_retry=0, timeout=2)
    agent = Agent(instructions="x")
    async with RealtimeStub() as stub, realtime_session(stub, agent, no_retry) as (session, watch):
        assert said(await session.run(user_input="hello")) == ["You said: hello"]
        await stub.fail_now(refuse_after=None)  # even a server that is back gets no retry
        await asyncio.wait_for(watch.fatal, 5)
        await closing_error(session)
    assert watch.recoverable() == [False]
    assert stub.connections == 1


async def test_realtime_reconnects_after_a_drop_when_the_server_is_back() -> None:
    async with (
        RealtimeStub() as stub,
        realtime_session(stub, Agent(instructions="Be brief.")) as (session, watch),
    ):
        assert said(await session.run(user_input="hello")) == ["You said: hello"]
        await stub.fail_now(refuse_after=None)
        assert said(await session.run(user_input="still there?")) == ["You said: still there?"]
    assert stub.connections == 2
    assert watch.recoverable() == [True]
    assert stub.instructions() == "Be brief."
