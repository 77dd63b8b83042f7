"""The agent on its production path: real LiveKit job processes (an unregistered AgentServer and
`simulate_job(fake_job=True)`), real MCP servers behind the hub, and the real OpenAI plugins
talking to local stubs of the chat, TTS, STT and Realtime services."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from jackfield.core.agent_view import EVENTS_PATH, SESSION_HEADER
from jackfield.shell.hub import ToolHub
from jackfield.shell.hub_link import UNREACHABLE
from jackfield.shell.live_agent import NO_HUB_INSTRUCTIONS
from jackfield.shell.redaction import register_secrets
from jackfield.shell.servers import CallEvent
from jackfield.shell.text_link import ConsoleEnd
from jackfield.spec.models import AgentVoiceSpec
from tests.support.controller import until
from tests.support.jobs import (
    PIPELINE_AGENT,
    REALTIME_AGENT,
    TURN,
    job_worker,
    next_update,
    said,
    tool_calls,
)
from tests.support.live import TOKEN, Stack, echo_server, echo_stack
from tests.support.openai_stub import OpenAIStub
from tests.support.realtime_stub import RealtimeStub

pytestmark = pytest.mark.timeout(180)


def system_text(request: dict[str, object]) -> str:
    messages = request.get("messages") or []
    assert isinstance(messages, list)
    return "\n".join(
        str(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    )


def tools_in(request: dict[str, object]) -> set[str]:
    tools = request.get("tools") or []
    assert isinstance(tools, list)
    return {t["function"]["name"] for t in tools}


@pytest.fixture
async def openai() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as stub:
        yield stub


@contextlib.asynccontextmanager
async def agent_stack(config_dir: Path, agent_yaml: str) -> AsyncIterator[Stack]:
    (config_dir / "agent.yaml").write_text(agent_yaml)
    async with echo_stack(config_dir) as stack:
        yield stack


@contextlib.asynccontextmanager
async def hub_back(stack: Stack, port: int) -> AsyncIterator[ToolHub]:
    """The hub again, on the same port with the same token (a controller restart)."""
    hub = ToolHub(stack.manager, host="127.0.0.1", port=port, token=TOKEN)
    assert stack.reconciler.snapshot is not None
    hub.set_snapshot(stack.reconciler.snapshot)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


@pytest.fixture
async def pipeline_stack(config_dir: Path) -> AsyncIterator[Stack]:
    async with agent_stack(config_dir, PIPELINE_AGENT) as stack:
        yield stack


async def test_job_live_greets_calls_a_tool_and_follows_an_added_server_and_a_prompt_edit(
    pipeline_stack: Stack, openai: OpenAIStub
) -> None:
    stack = pipeline_stack
    calls: list[CallEvent] = []
    stack.manager.observer = calls.append
    async with job_worker(stack.hub.url, TOKEN, openai) as jobs:
        end = await jobs.start(greeted=False)
        greeting = await end.until("agent", timeout=TURN)
        assert greeting["agent"] == "You said: Greet the caller."
        first = openai.requests[0]
        assert "You are a test agent." in system_text(first)
        assert {"echo_echo", "echo_add"} <= tools_in(first)

        turn = await end.turn('call echo_echo {"text": "hello job"}', timeout=TURN)
        assert [(c["tool"], c["output"], c["is_error"]) for c in tool_calls(turn)] == [
            ("echo_echo", "hello job", False)
        ]
        assert said(turn) == ["The tool said: hello job"]
        assert [(c.server, c.tool, c.outcome) for c in calls] == [("echo", "echo", "ok")]
        assert calls[0].session == f"job-{end.job}"
        revision = stack.hub.view.revision if stack.hub.view else None
        assert stack.hub.agent_sessions_by_revision() == {revision: 1}

        # a new server reaches the running job, and its next LLM turn
        stack.write("servers.d/more.yaml", echo_server("more", "--tools", "add"))
        await next_update(end, having="more_add")
        turn = await end.turn('call more_add {"a": 2, "b": 3}', timeout=TURN)
        assert said(turn) == ["The tool said: 5"]
        assert "more_add" in tools_in(openai.requests[-2])

        # a prompt edit reaches the job's instructions
        stack.write(
            "servers.d/style.yaml",
            "apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {name: style}\n"
            "spec: {text: Answer in one short sentence.}\n",
        )
        await next_update(end, having="Answer in one short sentence.")
        turn = await end.turn("hello", timeout=TURN)
        assert said(turn) == ["You said: hello"]
        assert "Answer in one short sentence." in system_text(openai.requests[-1])
        assert openai.speech, "the pipeline spoke through the TTS stub"


async def test_job_live_starts_on_the_last_good_snapshot_while_a_file_is_broken(
    pipeline_stack: Stack, openai: OpenAIStub
) -> None:
    stack = pipeline_stack
    stack.write("servers.d/broken.yaml", "apiVersion: jackfield/v1\nkind: MCPServer\nspec: [\n")
    await until(
        lambda: any(c.type == "Stalled" for c in stack.reconciler.status.conditions),
        what="the broken file is refused",
    )
    async with job_worker(stack.hub.url, TOKEN, openai) as jobs:
        end = await jobs.start()
        turn = await end.turn('call echo_echo {"text": "still here"}', timeout=TURN)
        assert said(turn) == ["The tool said: still here"]


async def test_job_live_survives_a_hub_restart_with_one_speakable_error(
    pipeline_stack: Stack, openai: OpenAIStub
) -> None:
    stack = pipeline_stack
    async with job_worker(stack.hub.url, TOKEN, openai) as jobs:
        end = await jobs.start()
        assert said(await end.turn('call echo_echo {"text": "before"}', timeout=TURN)) == [
            "The tool said: before"
        ]
        port = stack.hub.port
        await stack.hub.stop()

        turn = await end.turn('call echo_echo {"text": "while down"}', timeout=TURN)
        [call] = tool_calls(turn)
        assert call["is_error"] and call["output"] == UNREACHABLE
        assert turn[-1]["error"] is None, "the turn itself did not fail"

        async with hub_back(stack, port):
            await next_update(end, having="echo_echo")  # reconnected and refetched
            turn = await end.turn('call echo_echo {"text": "after"}', timeout=TURN)
            assert said(turn) == ["The tool said: after"]


@contextlib.asynccontextmanager
async def realtime_job(
    stack: Stack, openai: OpenAIStub, **stub: Any
) -> AsyncIterator[tuple[RealtimeStub, ConsoleEnd]]:
    """One greeted realtime job on a Realtime stub made with `stub`'s options."""
    async with RealtimeStub(**stub) as realtime:
        async with job_worker(stack.hub.url, TOKEN, openai, realtime) as jobs:
            yield realtime, await jobs.start()


@pytest.fixture
async def realtime_stack(config_dir: Path) -> AsyncIterator[Stack]:
    async with agent_stack(config_dir, REALTIME_AGENT) as stack:
        yield stack


async def test_job_live_falls_back_to_the_pipeline_when_realtime_refuses_the_session(
    realtime_stack: Stack, openai: OpenAIStub
) -> None:
    stack = realtime_stack
    async with RealtimeStub(refuse="http") as realtime:
        async with job_worker(stack.hub.url, TOKEN, openai, realtime) as jobs:
            end = await jobs.start(greeted=False)
            fallback = await end.until("fallback", timeout=TURN)
            assert fallback["fallback"] == "realtime_unavailable"
            ready = await end.until("ready", timeout=TURN)
            assert ready["ready"]["mode"] == "pipeline"
            greeting = await end.until("agent", timeout=TURN)
            assert greeting["agent"] == "You said: Greet the caller."
            turn = await end.turn('call echo_echo {"text": "on the fallback"}', timeout=TURN)
            assert said(turn) == ["The tool said: on the fallback"]
            await until(lambda: stack.hub.fallbacks == {"realtime_unavailable": 1},
                        what="the hub counted the fallback")  # fmt: skip
            assert realtime.handshakes, "the realtime model was tried first"


async def test_job_live_falls_back_mid_session_and_realtime_hears_of_new_tools(
    realtime_stack: Stack, openai: OpenAIStub
) -> None:
    stack = realtime_stack
    async with realtime_job(stack, openai) as (realtime, end):
        await until(lambda: "echo_echo" in realtime.tools_seen(), what="tools on realtime")
        assert "You are a test agent." in (realtime.instructions() or "")
        detection = realtime.turn_detection()
        assert detection is not None and detection["type"] == "server_vad"

        stack.write("servers.d/more.yaml", echo_server("more", "--tools", "add"))
        await until(lambda: "more_add" in realtime.tools_seen(),
                    what="session.update carries the added server's tools")  # fmt: skip

        turn = await end.turn("remember the word teapot", timeout=TURN)
        assert said(turn) == ["You said: remember the word teapot"]

        await realtime.fail_now()
        fallback = await end.until("fallback", timeout=TURN)
        assert fallback["fallback"] == "realtime_failed"
        assert (await end.until("ready", timeout=TURN))["ready"]["mode"] == "pipeline"
        turn = await end.turn('call more_add {"a": 20, "b": 22}', timeout=TURN)
        assert said(turn)[-1] == "The tool said: 42"
        carried = json.dumps(openai.requests[-1]["messages"])
        assert "remember the word teapot" in carried, "the conversation so far carried over"


async def test_job_live_starts_without_tools_while_the_hub_is_down_then_gets_them(
    pipeline_stack: Stack, openai: OpenAIStub
) -> None:
    stack = pipeline_stack
    port = stack.hub.port
    await stack.hub.stop()
    spec = {"instructions": "unused", "llm": {"mode": "pipeline", "model": "gpt-4o-mini"}}
    async with job_worker(stack.hub.url, TOKEN, openai, agent_spec=spec) as jobs:
        end = await jobs.start(greeted=False)
        turn = await end.turn("what time is it", timeout=TURN)
        assert said(turn) == ["You said: what time is it"]
        assert NO_HUB_INSTRUCTIONS in system_text(openai.requests[-1])
        assert tools_in(openai.requests[-1]) == set()

        async with hub_back(stack, port):
            await next_update(end, having="echo_echo")
            turn = await end.turn('call echo_echo {"text": "back"}', timeout=TURN)
            assert said(turn) == ["The tool said: back"]
            assert "You are a test agent." in system_text(openai.requests[-1])


async def test_job_live_skips_realtime_during_the_cooldown_after_repeated_failures(
    realtime_stack: Stack, openai: OpenAIStub
) -> None:
    stack = realtime_stack
    events = stack.hub.url.rsplit("/", 1)[0] + EVENTS_PATH
    headers = {"Authorization": f"Bearer {TOKEN}", SESSION_HEADER: "job-earlier"}
    async with httpx2.AsyncClient() as http:
        assert (await http.post(events, json={"event": "fallback"})).status_code == 401
        # bad reports are refused with a reason and change nothing
        assert (await http.get(events, headers=headers)).status_code == 405
        assert (await http.post(events, headers=headers, content=b"{nope")).status_code == 400
        assert (await http.post(events, headers=headers, json=["fallback"])).status_code == 400
        huge = {"event": "fallback", "reason": "x" * 20_000, "realtime_failed": True}
        assert (await http.post(events, headers=headers, json=huge)).status_code == 400
        assert not stack.hub.fallbacks
        for _ in range(stack.hub.cooldown.failures):
            answer = await http.post(events, headers=headers, json={
                "event": "fallback", "reason": "realtime_unavailable", "realtime_failed": True,
            })  # fmt: skip
            assert answer.status_code == 202
        register_secrets(["s3cr3t-upstream-0123"])
        leak = {"event": "update_rejected", "message": "bad key s3cr3t-upstream-0123"}
        assert (await http.post(events, headers=headers, json=leak)).status_code == 202
    assert stack.hub.last_rejected_update == "bad key ********", "upstream text is masked"
    assert stack.hub.view is not None and stack.hub.view.realtime is False
    async with RealtimeStub() as realtime:
        async with job_worker(stack.hub.url, TOKEN, openai, realtime) as jobs:
            end = await jobs.start(greeted=False)
            assert (await end.until("agent", timeout=TURN))["agent"] == (
                "You said: Greet the caller."
            )
            turn = await end.turn("hello", timeout=TURN)
            assert said(turn) == ["You said: hello"]
            assert realtime.handshakes == [], "realtime was not even tried"
            await until(
                lambda: stack.hub.fallbacks["realtime_cooldown"] == 1, what="counted as such"
            )


async def test_job_live_realtime_says_the_filler_during_a_slow_call(
    realtime_stack: Stack, openai: OpenAIStub
) -> None:
    stack = realtime_stack
    async with realtime_job(stack, openai) as (realtime, end):
        turn = await end.turn('call echo_slow {"seconds": 3.5}', timeout=TURN)
        [call] = tool_calls(turn)
        assert call["output"].startswith("slept 3.5")
        filler = AgentVoiceSpec().filler
        assert filler
        fillers = [r for r in realtime.responses if filler in (r.get("instructions") or "")]
        assert len(fillers) == 1, realtime.responses


async def test_job_live_notices_a_session_update_the_realtime_model_refuses(
    realtime_stack: Stack, openai: OpenAIStub
) -> None:
    stack = realtime_stack
    async with realtime_job(stack, openai, reject_tools={"more_add"}) as (realtime, end):
        await until(lambda: "echo_echo" in realtime.tools_seen(), what="tools on realtime")
        stack.write("servers.d/more.yaml", echo_server("more", "--tools", "add"))
        rejected = await end.until("update_rejected", timeout=TURN)
        assert "more_add" in rejected["update_rejected"]
        await until(lambda: stack.hub.rejected_updates == 1, what="the hub heard of it")
        assert stack.hub.last_rejected_update == rejected["update_rejected"]
        [revision] = stack.hub.agent_sessions_by_revision()
        assert revision.startswith("rejected:")
