"""End to end: a real AgentSession (text mode, scripted LLM) gets its tools from real MCP servers
through the hub, and follows config edits while it runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import AgentSession

from jackfield.shell.live_agent import LiveAgent, live_agent
from tests.support.agent import ScriptedLLM
from tests.support.controller import until
from tests.support.live import TOKEN, Stack, echo_server, echo_stack

pytestmark = pytest.mark.timeout(90)


def tool_ids(agent: LiveAgent) -> set[str]:
    return {t.id for t in agent.tools}


@pytest.fixture
async def stack(config_dir: Path) -> AsyncIterator[Stack]:
    async with echo_stack(config_dir, "  prompt: Use echo to repeat things.\n") as stack:
        yield stack


async def turn(session: AgentSession[Any], llm: ScriptedLLM, text: str) -> str:
    await session.run(user_input=text)
    return llm.last.said


async def test_agent_live_calls_a_real_tool_through_the_hub(stack: Stack) -> None:
    llm = ScriptedLLM()
    async with (
        live_agent(stack.hub.url, TOKEN, session_id="job-1") as agent,
        AgentSession(llm=llm) as session,
    ):
        await session.start(agent)
        said = await turn(session, llm, 'call echo_echo {"text": "hello hub"}')
        assert said == "result: hello hub"
        assert "echo_echo" in llm.last.tools
        assert "Use echo to repeat things." in llm.last.instructions
        assert stack.hub.status().sessions >= 1


async def test_agent_live_follows_adds_filter_edits_prompt_changes_and_removals(
    stack: Stack,
) -> None:
    llm = ScriptedLLM()
    async with (
        live_agent(stack.hub.url, TOKEN, session_id="job-2") as agent,
        AgentSession(llm=llm) as session,
    ):
        await session.start(agent)
        await turn(session, llm, "hello")
        assert {"echo_echo", "echo_add", "echo_slow"} <= set(llm.last.tools)

        # a new server
        stack.write("servers.d/more.yaml", echo_server("more", "--tools", "add"))
        await until(lambda: "more_add" in tool_ids(agent), what="more_add reaches the agent")
        assert await turn(session, llm, 'call more_add {"a": 2, "b": 3}') == "result: 5"
        assert "more_add" in llm.turns[-2].tools

        # a tool filter edit: no reconnect, exactly the filtered list
        pid_before = stack.manager.supervisor("echo").pid  # type: ignore[union-attr]
        stack.write(
            "servers.d/echo.yaml",
            echo_server(
                "echo", extra="  prompt: Use echo to repeat things.\n  tools: {include: [echo]}\n"
            ),  # fmt: skip
        )
        await until(lambda: "echo_add" not in tool_ids(agent), what="filter reaches the agent")
        await turn(session, llm, "what can you do")
        assert [t for t in llm.last.tools if t.startswith("echo_")] == ["echo_echo"]
        assert stack.manager.supervisor("echo").pid == pid_before  # type: ignore[union-attr]

        # a prompt change
        stack.write(
            "servers.d/style.yaml",
            "apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {name: style}\n"
            "spec: {text: Answer in one short sentence.}\n",
        )
        await until(
            lambda: "Answer in one short sentence." in str(agent.instructions),
            what="prompt applied",
        )
        await turn(session, llm, "hi")
        assert "Answer in one short sentence." in llm.last.instructions

        # a removal
        (stack.config_dir / "servers.d" / "more.yaml").unlink()
        await until(lambda: "more_add" not in tool_ids(agent), what="removal reaches the agent")
        await turn(session, llm, "hi again")
        assert "more_add" not in llm.last.tools
        assert "more_add" not in {t.name for t in stack.hub.tools()}


async def test_agent_live_call_in_flight_during_a_change_completes(stack: Stack) -> None:
    llm = ScriptedLLM()
    async with (
        live_agent(stack.hub.url, TOKEN, session_id="job-3") as agent,
        AgentSession(llm=llm) as session,
    ):
        await session.start(agent)
        updates = agent.updates
        running = asyncio.ensure_future(
            turn(session, llm, f"call echo_slow {json.dumps({'seconds': 1.0})}")
        )
        await until(lambda: agent.hub.in_flight == 1, what="the slow call starts")
        stack.write("servers.d/more.yaml", echo_server("more", "--tools", "echo"))
        await until(lambda: "more_echo" in {t.name for t in stack.hub.tools()}, what="hub has it")
        assert agent.updates == updates, "no update may be applied during a tool call"
        assert (await running).startswith("result: slept 1")
        await until(lambda: "more_echo" in tool_ids(agent), what="update applied after the call")


async def test_agent_live_session_start_does_not_wait_for_a_connecting_server(
    stack: Stack,
) -> None:
    stack.write("servers.d/slowstart.yaml", echo_server("slowstart", "--start-delay", "1.5"))
    await until(lambda: stack.manager.states().get("slowstart") == "Connecting", what="connecting")
    async with live_agent(stack.hub.url, TOKEN, session_id="job-4") as agent:
        assert not any(t.startswith("slowstart_") for t in tool_ids(agent))
        await until(lambda: "slowstart_echo" in tool_ids(agent), what="tools arrive when Ready")
