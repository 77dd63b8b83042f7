"""Voice-native tool calls in real LiveKit job processes (issue #14): spoken progress, barge-in
cancels, spoken confirmation and elicitation, speakable results.

Everything but the model services is real: the job process (tests/support/jobs.py), its
AgentSession, the hub, and the MCP servers behind it (tests/servers/voice.py, which records
what it observed in a file; `@modelcontextprotocol/server-everything` through npx). The caller
types through the job's text link (`{"user": ...}` is delivered as speech would be, and
`{"interrupt": true}` talks over the agent); the job reports what it said, asked, heard and
cancelled, with its monotonic clock, which is the test's clock too (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import AgentSession, llm

from jackfield.shell.live_agent import live_agent
from jackfield.shell.text_link import ConsoleEnd
from jackfield.shell.voice_calls import INTERRUPTED, NOT_CONFIRMED
from jackfield.shell.voice_forms import FILL_TOOL, NO_LINKS
from tests.conftest import REPO
from tests.support.agent import ScriptedLLM
from tests.support.controller import until
from tests.support.jobs import PIPELINE_AGENT, REALTIME_AGENT, TURN, job_worker, said, tool_calls
from tests.support.live import TOKEN, Stack, live_stack
from tests.support.openai_stub import OpenAIStub
from tests.support.realtime_stub import RealtimeStub
from tests.support.realtime_stub import told_to_say as realtime_told
from tests.support.servers import npx as find_npx
from tests.test_console import console, console_env

pytestmark = pytest.mark.timeout(120)

FAST_VOICE = "  voice: {fillerAfter: 0.3, progressEvery: 0.6, answerTimeout: 1.5}\n"
"""Quick pacing, and a short wait for the caller's answers."""
RANKS = ["Just getting started.", "Making progress.", "About halfway there.",
         "Most of the way there.", "Almost done."]  # fmt: skip
"""progress_line's words for a notice without a message, in the order a call makes them."""


def voice_server(record: Path, extra: str = FAST_VOICE) -> str:
    """An MCPServer document running tests/servers/voice.py, recording into `record`."""
    args = ", ".join(f'"{a}"' for a in ["-m", "tests.servers.voice", "--record", str(record)])
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: voice}\n"
        f"spec:\n  command: {sys.executable}\n  args: [{args}]\n  cwd: {REPO}\n{extra}"
    )


def everything_server(extra: str) -> str:
    npx = find_npx()
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: all}\n"
        f'spec:\n  command: {npx}\n  args: ["-y", "@modelcontextprotocol/server-everything"]\n'
        f"  timeouts: {{connect: 60}}\n{extra}"
    )


def recorded(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def events(record: Path, tool: str, event: str) -> list[dict[str, Any]]:
    return [r for r in recorded(record) if r["tool"] == tool and r["event"] == event]


def lines(messages: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    """The lines the agent was told to say during calls, of these kinds."""
    return [m for m in messages if "said" in m and m["kind"] in kinds]


def first(messages: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return next(m for m in messages if key in m)


@pytest.fixture
async def openai() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as stub:
        yield stub


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "voice-record.jsonl"


@contextlib.asynccontextmanager
async def voice_stack(
    config_dir: Path, agent_yaml: str, *servers: tuple[str, str]
) -> AsyncIterator[Stack]:
    (config_dir / "agent.yaml").write_text(agent_yaml)
    for name, text in servers:
        (config_dir / "servers.d" / f"{name}.yaml").write_text(text)
    async with live_stack(config_dir) as stack:
        await stack.ready(*(name for name, _ in servers), timeout=80)
        yield stack


@contextlib.asynccontextmanager
async def one_job(
    stack: Stack, openai: OpenAIStub, realtime: bool = False
) -> AsyncIterator[ConsoleEnd]:
    """One greeted job on the pipeline, or on the Realtime stub."""
    async with contextlib.AsyncExitStack() as stack_of:
        model = await stack_of.enter_async_context(RealtimeStub()) if realtime else None
        jobs = await stack_of.enter_async_context(job_worker(stack.hub.url, TOKEN, openai, model))
        yield await jobs.start()


async def question(end: ConsoleEnd) -> dict[str, Any]:
    return await end.until("question", timeout=TURN)


# --- progress -----------------------------------------------------------------------------------


def assert_paced(messages: list[dict[str, Any]], every: float) -> list[str]:
    """The filler first, then progress lines at least `every` s apart (job clock, 10 % slack),
    all before the result; returns the progress lines."""
    spoken = lines(messages, "filler", "progress")
    assert spoken and spoken[0]["kind"] == "filler", messages
    progress = spoken[1:]
    assert all(m["kind"] == "progress" for m in progress), spoken
    times = [m["at"] for m in spoken]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= every * 0.9 for gap in gaps), gaps
    results = [m for m in messages if "agent" in m and m["agent"].startswith("The tool said:")]
    assert len(results) == 1, "\n".join(map(str, messages))
    [result] = results
    assert result["at"] > times[-1], "the result comes after the last progress line"
    return [m["said"] for m in progress]


@pytest.mark.npx
async def test_voice_job_pipeline_speaks_the_everything_servers_progress_in_order_and_paced(
    config_dir: Path, openai: OpenAIStub
) -> None:
    pacing = "  voice: {fillerAfter: 0.5, progressEvery: 1}\n"
    async with voice_stack(config_dir, PIPELINE_AGENT, ("all", everything_server(pacing))) as st:
        async with one_job(st, openai) as end:
            started = time.monotonic()
            turn = await end.turn(
                'call all_trigger-long-running-operation {"duration": 4, "steps": 4}', timeout=TURN
            )
    [call] = tool_calls(turn)
    assert call["output"].startswith("Long running operation completed"), call
    filler = lines(turn, "filler")[0]
    assert filler["said"] == "One moment." and filler["at"] - started >= 0.5
    progress = assert_paced(turn, every=1.0)
    assert len(progress) >= 2, turn
    ranks = [RANKS.index(line) for line in progress]
    assert ranks == sorted(ranks) and ranks[0] >= 1, progress  # 1/4 is "Making progress."
    assert said(turn)[-1] == f"The tool said: {call['output']}"


async def test_voice_job_pipeline_speaks_the_servers_progress_messages_paced(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, PIPELINE_AGENT, ("voice", voice_server(record))) as st:
        async with one_job(st, openai) as end:
            turn = await end.turn('call voice_progress {"steps": 5, "interval": 0.4}', TURN)
    [call] = tool_calls(turn)
    assert call["output"] == "done after 5 steps"
    progress = assert_paced(turn, every=0.6)
    assert progress, turn
    steps = [int(line.split()[1]) for line in progress]
    assert all(line == f"step {n} of 5" for line, n in zip(progress, steps, strict=True))
    assert steps == sorted(set(steps)), "newest notice each time, never one twice"
    assert openai.speech, "the lines went through the TTS"


# --- confirmation -------------------------------------------------------------------------------


async def confirm_flow(end: ConsoleEnd, record: Path) -> None:
    """delete_note (destructiveHint) is called only after a clear yes: not after a no, not
    after silence; an unclear answer is asked about once more."""
    await end.say('call voice_delete_note {"note": "shopping"}')
    asked = await question(end)
    assert asked["kind"] == "confirmation" and asked["call"] == "voice_delete_note"
    assert "delete a note" in asked["question"] and "shopping" in asked["question"]
    await end.say("no, leave it")
    turn = await end.collect("turn_done", TURN)
    [call] = tool_calls(turn)
    assert call["output"] == NOT_CONFIRMED
    assert first(turn, "confirmation")["confirmation"]["answer"] == "no"
    assert not events(record, "delete_note", "called"), "a no calls nothing"

    await end.say('call voice_delete_note {"note": "shopping"}')
    await question(end)
    # silence: the answer timeout (1.5 s here) runs out
    turn = await end.collect("turn_done", TURN)
    assert first(turn, "confirmation")["confirmation"]["answer"] == "timeout"
    assert tool_calls(turn)[0]["output"] == NOT_CONFIRMED
    assert not events(record, "delete_note", "called"), "silence calls nothing"

    await end.say('call voice_delete_note {"note": "shopping"}')
    await question(end)
    await end.say("hmm")
    again = await question(end)
    assert again["question"].startswith("Sorry, I didn't catch that.")
    await end.say("yes please")
    turn = await end.collect("turn_done", TURN)
    assert first(turn, "confirmation")["confirmation"]["answer"] == "yes"
    [call] = tool_calls(turn)
    assert call["output"] == "deleted shopping"
    assert said(turn)[-1] == "The tool said: deleted shopping"
    assert [e["note"] for e in events(record, "delete_note", "called")] == ["shopping"]
    assert not any("You said: yes" in text for text in said(turn)), "the LLM did not answer it"


async def test_voice_job_pipeline_calls_a_destructive_tool_only_after_a_clear_yes(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, PIPELINE_AGENT, ("voice", voice_server(record))) as st:
        async with one_job(st, openai) as end:
            await confirm_flow(end, record)
        counts = st.manager.voice["voice"]
        outcomes = {a: counts["confirmation", a] for a in ("yes", "no", "timeout")}
        await until(lambda: {a: counts["confirmation", a] for a in outcomes} == dict.fromkeys(
            outcomes, 1), what=f"the hub counted each answer once ({counts})")  # fmt: skip


# --- barge-in and hang-up -----------------------------------------------------------------------


async def interrupt_flow(end: ConsoleEnd, record: Path) -> None:
    """Talking over a slow read-only call cancels it upstream; nothing of it is spoken."""
    await end.say('call voice_slow {"seconds": 30}')
    await until(lambda: events(record, "slow", "started"), timeout=TURN, what="slow started")
    interrupted = time.monotonic()
    await end.interrupt()
    turn = await end.collect("turn_done", TURN)
    assert time.monotonic() - interrupted < 10, "the turn ended long before the 30 s call"
    cancelled = first(turn, "cancelled")["cancelled"]
    assert cancelled["tool"] == "voice_slow" and cancelled["reason"] == "interrupted"
    assert tool_calls(turn)[0]["output"] == INTERRUPTED
    await until(lambda: events(record, "slow", "cancelled"), timeout=10, what="upstream cancel")
    assert not events(record, "slow", "finished")
    assert not any("slept" in text or "cancelled" in text for text in said(turn)), said(turn)


async def test_voice_job_pipeline_interrupting_a_slow_call_cancels_it_upstream(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, PIPELINE_AGENT, ("voice", voice_server(record))) as st:
        async with one_job(st, openai) as end:
            await interrupt_flow(end, record)
            # the next turn runs as usual
            turn = await end.turn("hello again", TURN)
            assert said(turn) == ["You said: hello again"]


async def test_voice_job_hang_up_cancels_a_call_that_talking_over_does_not(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    never = FAST_VOICE + "  tools: {overrides: {slow: {cancel: never}}}\n"
    async with voice_stack(
        config_dir, PIPELINE_AGENT, ("voice", voice_server(record, never))
    ) as st:
        async with one_job(st, openai) as end:
            # 6 s: past livekit-agents' 5 s wait on an interrupted turn, which then cancels
            # the tool; the call runs on
            await end.say('call voice_slow {"seconds": 6}')
            await until(lambda: events(record, "slow", "started"), timeout=TURN, what="started")
            await end.interrupt()
            turn = await end.collect("turn_done", TURN)
            assert not any("cancelled" in m for m in turn), turn
            await until(lambda: events(record, "slow", "finished"), timeout=TURN, what="the end")
            assert not events(record, "slow", "cancelled"), "cancel: never runs to the end"
            assert not any("slept" in text for text in said(turn)), "its result is not spoken"

            await end.say('call voice_slow {"seconds": 30}')
            await until(lambda: len(events(record, "slow", "started")) == 2, timeout=TURN,
                        what="the second call started")  # fmt: skip
            hung_up = time.monotonic()
            await end.aclose()
            await until(lambda: events(record, "slow", "cancelled"), timeout=15, what="cancel")
            assert time.monotonic() - hung_up < 15
    assert len(events(record, "slow", "finished")) == 1


# --- elicitation --------------------------------------------------------------------------------


def forced_requests(openai: OpenAIStub) -> list[dict[str, Any]]:
    """The text model calls that filled a form: forced to the one form function."""
    return [r for r in openai.requests if isinstance(r.get("tool_choice"), dict)]


async def ask_name_flow(end: ConsoleEnd, openai: OpenAIStub, record: Path) -> None:
    """The server's question is asked; the caller's words become its fields (the model's
    reading is scripted); a plain refusal declines; silence cancels."""
    openai.script.append({"tool": FILL_TOOL, "arguments": {"name": "Ada", "subscribe": "yes"}})
    await end.say("call voice_ask_name {}")
    asked = await question(end)
    assert asked["kind"] == "elicitation" and asked["question"] == "What is your name?"
    await end.say("I'm Ada, and sign me up")
    turn = await end.collect("turn_done", TURN)
    [call] = tool_calls(turn)
    assert call["output"] == "accepted name=Ada subscribe=true", call
    answered = first(turn, "elicitation")["elicitation"]
    assert answered["action"] == "accept" and answered["content"] == {
        "name": "Ada",
        "subscribe": True,
    }
    assert events(record, "ask_name", "answered")[-1]["content"] == {
        "name": "Ada",
        "subscribe": True,
    }
    [filled] = forced_requests(openai)
    parameters = filled["tools"][0]["function"]["parameters"]
    assert filled["tools"][0]["function"]["name"] == FILL_TOOL
    assert set(parameters["properties"]) == {"name", "subscribe"}
    assert "I'm Ada, and sign me up" in json.dumps(filled["messages"])

    await end.say("call voice_ask_name {}")
    await question(end)
    await end.say("no thanks")
    turn = await end.collect("turn_done", TURN)
    assert tool_calls(turn)[0]["output"] == "declined"
    assert len(forced_requests(openai)) == 1, "a refusal needs no model call"

    await end.say("call voice_ask_name {}")
    await question(end)
    turn = await end.collect("turn_done", TURN)  # silence past answerTimeout
    assert tool_calls(turn)[0]["output"] == "cancelled"
    assert [e["action"] for e in events(record, "ask_name", "answered")] == [
        "accept", "decline", "cancel"]  # fmt: skip


async def test_voice_job_pipeline_asks_a_servers_question_and_fills_its_form(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, PIPELINE_AGENT, ("voice", voice_server(record))) as st:
        async with one_job(st, openai) as end:
            await ask_name_flow(end, openai, record)


@pytest.mark.npx
async def test_voice_job_pipeline_answers_the_everything_servers_elicitation_form(
    config_dir: Path, openai: OpenAIStub
) -> None:
    server = everything_server("  voice: {answerTimeout: 5}\n")
    async with voice_stack(config_dir, PIPELINE_AGENT, ("all", server)) as st:
        assert "all_trigger-elicitation-request" in {t.name for t in st.hub.tools()}, (
            "offered: jackfield declares elicitation upstream"
        )
        async with one_job(st, openai) as end:
            # what the model reads out of the caller's words, twice: 130 is outside the form's range
            openai.script.append({"tool": FILL_TOOL, "arguments": {"name": "Ada Lovelace",
                                  "integer": 130}})  # fmt: skip
            openai.script.append({"tool": FILL_TOOL, "arguments": {
                "name": "Ada Lovelace", "check": True, "integer": 13,
                "untitledSingleSelectEnum": "Ross"}})  # fmt: skip
            await end.say("call all_trigger-elicitation-request {}")
            asked = await question(end)
            assert asked["question"].startswith("Please provide inputs for the following fields:")
            assert "Your full, legal name" in asked["question"], "the required field is named"
            await end.say("Ada Lovelace, my favourite number is a hundred and thirty")
            again = await question(end)
            assert again["question"].startswith("Sorry, integer: 130 does not fit."), again
            await end.say("Ada Lovelace, thirteen then, I agree, and Ross")
            turn = await end.collect("turn_done", TURN)
            link = await end.turn(
                'call all_trigger-url-elicitation {"url": "https://example.com/pay"}', TURN
            )
    [call] = tool_calls(turn)
    output = call["output"]
    assert "User provided the requested information" in output, output
    assert "- Name: Ada Lovelace" in output and "- Favorite Integer: 13" in output
    assert "- Agreed to terms: true" in output
    assert first(turn, "elicitation")["elicitation"]["action"] == "accept"
    assert len(forced_requests(openai)) == 2
    # a link cannot be opened on a call: declined, and the caller is told why
    assert [m["said"] for m in lines(link, "notice")] == [NO_LINKS]
    assert not any("question" in m for m in link), "nothing was asked"
    declined = first(link, "elicitation")["elicitation"]
    assert (declined["mode"], declined["action"]) == ("url", "decline")


# --- speakable results ----------------------------------------------------------------------------


async def test_voice_job_turns_images_links_and_structured_content_into_words(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, PIPELINE_AGENT, ("voice", voice_server(record))) as st:
        async with one_job(st, openai) as end:
            media = tool_calls(await end.turn("call voice_media {}", TURN))[0]["output"]
            weather = tool_calls(await end.turn("call voice_weather {}", TURN))[0]["output"]
    assert media.splitlines() == ["an image", "one link: Quarterly report"], media
    assert json.loads(weather) == {"city": "Oslo", "temperature": 4, "sky": "cloudy"}
    assert "iVBOR" not in json.dumps(openai.requests), "no image bytes reach the model"


# --- the same on realtime -----------------------------------------------------------------------


def told_to_say(realtime: RealtimeStub) -> list[str]:
    """What the realtime model was told to say word for word (no TTS on realtime)."""
    return [t for r in realtime.responses if (t := realtime_told(r)) is not None]


@contextlib.asynccontextmanager
async def realtime_job(stack: Stack, openai: OpenAIStub) -> AsyncIterator[
        tuple[RealtimeStub, ConsoleEnd]]:  # fmt: skip
    async with RealtimeStub() as realtime:
        async with job_worker(stack.hub.url, TOKEN, openai, realtime) as jobs:
            yield realtime, await jobs.start()


async def test_voice_job_realtime_speaks_paced_progress_through_the_model(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, REALTIME_AGENT, ("voice", voice_server(record))) as st:
        async with realtime_job(st, openai) as (realtime, end):
            turn = await end.turn('call voice_progress {"steps": 5, "interval": 0.4}', TURN)
            spoken = told_to_say(realtime)
    assert tool_calls(turn)[0]["output"] == "done after 5 steps"
    progress = assert_paced(turn, every=0.6)
    assert progress and spoken == ["One moment.", *progress], spoken
    assert said(turn)[-1] == "The tool said: done after 5 steps"
    assert not openai.speech, "no TTS on realtime"


async def test_voice_job_realtime_calls_a_destructive_tool_only_after_a_clear_yes(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, REALTIME_AGENT, ("voice", voice_server(record))) as st:
        async with realtime_job(st, openai) as (realtime, end):
            await confirm_flow(end, record)
            assert any(text.startswith("Should I delete a note") for text in told_to_say(realtime))


async def test_voice_job_realtime_interrupt_cancels_and_a_servers_question_is_asked(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, REALTIME_AGENT, ("voice", voice_server(record))) as st:
        async with realtime_job(st, openai) as (realtime, end):
            await interrupt_flow(end, record)
            await ask_name_flow(end, openai, record)
            assert "What is your name?" in told_to_say(realtime)


async def test_voice_job_realtime_hears_a_spoken_yes_and_the_model_does_not_answer_it(
    config_dir: Path, openai: OpenAIStub, record: Path
) -> None:
    async with voice_stack(config_dir, REALTIME_AGENT, ("voice", voice_server(record))) as st:
        async with realtime_job(st, openai) as (realtime, end):
            await end.say('call voice_delete_note {"note": "shopping"}')
            await question(end)
            await realtime.caller_says("yes, go ahead")
            turn = await end.collect("turn_done", TURN)
            assert realtime.server_responses == 1, "the server did answer the turn by itself"
            # a spoken barge-in over a slow call
            await end.say('call voice_slow {"seconds": 30}')
            await until(lambda: events(record, "slow", "started"), timeout=TURN, what="started")
            await realtime.caller_says("stop, stop")
            slow = await end.collect("turn_done", TURN)
    assert first(turn, "answer")["answer"] == "yes, go ahead"
    assert [e["note"] for e in events(record, "delete_note", "called")] == ["shopping"]
    assert said(turn)[-1] == "The tool said: deleted shopping"
    assert not any(text.startswith("You said: yes") for text in said(turn)), said(turn)
    assert first(slow, "cancelled")["cancelled"]["reason"] == "interrupted"
    await until(lambda: events(record, "slow", "cancelled"), timeout=10, what="upstream cancel")


# --- the text console -----------------------------------------------------------------------------


async def test_voice_job_console_takes_the_line_after_a_question_as_its_answer(
    config_dir: Path, tmp_path: Path, record: Path
) -> None:
    (config_dir / "servers.d" / "voice.yaml").write_text(voice_server(record))
    async with OpenAIStub() as stub:
        env = console_env(OPENAI_API_KEY="test", OPENAI_BASE_URL=stub.base_url)
        typed = (
            'call voice_delete_note {"note": "old"}\nyes\n'
            'call voice_delete_note {"note": "new"}\nno\n'
        )
        code, out, err = await console(config_dir, tmp_path, env, typed)
    assert code == 0, err
    shown = out.splitlines()
    asked = [line for line in shown if line.startswith("agent> Should I delete a note")]
    assert len(asked) == 2, out
    assert '  [tool] voice_delete_note {"note":"old"} -> ok: deleted old' in shown, out
    assert f'  [tool] voice_delete_note {{"note":"new"}} -> ok: {NOT_CONFIRMED}' in shown, out
    assert [e["note"] for e in events(record, "delete_note", "called")] == ["old"]


# --- a spoken answer, in process ----------------------------------------------------------------


async def test_voice_job_a_spoken_turn_while_a_question_waits_is_the_answer_not_a_turn(
    config_dir: Path, record: Path
) -> None:
    """The pipeline hands a finished user turn to LiveAgent.on_user_turn_completed; while a
    call waits for an answer, that turn is the answer and the LLM's reply is stopped."""
    scripted = ScriptedLLM()
    async with voice_stack(config_dir, PIPELINE_AGENT, ("voice", voice_server(record))) as st:
        async with (
            live_agent(st.hub.url, TOKEN, session_id="job-voice") as agent,
            AgentSession(llm=scripted) as session,
        ):
            await session.start(agent)
            heard = llm.ChatMessage(role="user", content=["sure, delete it"])
            await agent.on_user_turn_completed(agent.chat_ctx, heard)  # no question: a turn

            async def turn() -> None:
                await session.run(user_input='call voice_delete_note {"note": "spoken"}')

            run = asyncio.create_task(turn())
            await until(lambda: agent.caller.asking, timeout=TURN, what="the question")
            with pytest.raises(llm.StopResponse):
                await agent.on_user_turn_completed(agent.chat_ctx, heard)
            await run
    assert scripted.last.said == "result: deleted spoken"
    assert [e["note"] for e in events(record, "delete_note", "called")] == ["spoken"]
