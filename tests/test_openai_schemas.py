"""Real MCP tool schemas through the real `livekit.plugins.openai.LLM`: a real AgentSession (text
mode) with a LiveAgent on the live stack talks to an OpenAI-compatible stub that checks every
tool definition the way a provider would (tests/support/openai_stub.py)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit.agents import AgentSession
from livekit.agents.voice.run_result import ChatMessageEvent, RunResult
from livekit.plugins import openai

from jackfield.shell.live_agent import live_agent
from tests.support.live import TOKEN, Stack, echo_server, live_stack
from tests.support.openai_stub import OpenAIStub
from tests.support.servers import npx as find_npx

pytestmark = pytest.mark.timeout(90)


def stdio_server(name: str, command: str, *args: str, extra: str = "") -> str:
    quoted = ", ".join(f'"{a}"' for a in args)
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  command: {command}\n  args: [{quoted}]\n{extra}"
    )


def said(result: RunResult[None]) -> list[str]:
    return [
        e.item.text_content or ""
        for e in result.events
        if isinstance(e, ChatMessageEvent) and e.item.role == "assistant"
    ]


async def talk(stack: Stack, stub: OpenAIStub, *lines: str) -> list[RunResult[None]]:
    """One agent session through the hub and the real OpenAI plugin; each line is a user turn."""
    llm = openai.LLM(model="gpt-4o-mini", base_url=stub.base_url, api_key="test")
    results: list[RunResult[None]] = []
    try:
        async with (
            live_agent(stack.hub.url, TOKEN, session_id="job-openai") as agent,
            AgentSession(llm=llm) as session,
        ):
            await session.start(agent)
            for line in lines:
                results.append(await session.run(user_input=line))
    finally:
        await llm.aclose()
    return results


def assert_every_tool_reached_the_model_valid(stack: Stack, stub: OpenAIStub) -> None:
    listed = {t.name for t in stack.hub.tools()}
    assert listed, "the hub lists tools"
    assert listed <= set(stub.tools_seen), f"missing: {listed - set(stub.tools_seen)}"
    assert stub.schema_problems == {}
    assert stub.bad_names == set()
    for name in listed:
        assert stub.tools_seen[name].get("type") == "object", name


@pytest.fixture
async def stack(config_dir: Path) -> AsyncIterator[Stack]:
    servers = config_dir / "servers.d"
    servers.joinpath("echo.yaml").write_text(echo_server("echo"))
    time_server = shutil.which("mcp-server-time", path=os.path.dirname(sys.executable))
    assert time_server is not None, "mcp-server-time is a dev dependency"
    servers.joinpath("time.yaml").write_text(stdio_server("time", time_server))
    async with live_stack(config_dir) as stack:
        await stack.ready("echo", "time")
        yield stack


async def test_openai_llm_gets_every_mcp_tool_with_a_valid_schema_and_the_result_back(
    stack: Stack,
) -> None:
    async with OpenAIStub() as stub:
        echoed, timed = await talk(
            stack,
            stub,
            'call echo_echo {"text": "through openai"}',
            'call time_get_current_time {"timezone": "UTC"}',
        )
    assert_every_tool_reached_the_model_valid(stack, stub)
    assert {"echo_echo", "echo_add", "time_get_current_time", "time_convert_time"} <= set(
        stub.tools_seen
    )
    # each tool call was answered with the tool's result in the very next request
    calls = [i for i, r in enumerate(stub.requests) if r["messages"][-1]["role"] == "user"]
    assert len(calls) == 2
    assert stub.tool_results(stub.requests[calls[0] + 1]) == ["through openai"]
    assert "UTC" in stub.tool_results(stub.requests[calls[1] + 1])[-1]
    assert said(echoed) == ["The tool said: through openai"]
    assert said(timed)[0].startswith("The tool said: ")


async def test_openai_llm_hears_a_failing_tool_as_an_error_sentence(stack: Stack) -> None:
    async with OpenAIStub() as stub:
        (failed,) = await talk(stack, stub, 'call echo_fail {"message": "disk on fire"}')
    result = stub.tool_results(stub.requests[-1])
    assert len(result) == 1 and "disk on fire" in result[0]
    assert said(failed) == [f"The tool said: {result[0]}"]


@pytest.mark.npx
async def test_openai_llm_accepts_the_everything_servers_rich_schemas(config_dir: Path) -> None:
    npx = find_npx()
    connect = "  timeouts: {connect: 60}\n"
    (config_dir / "servers.d" / "all.yaml").write_text(
        stdio_server("all", npx, "-y", "@modelcontextprotocol/server-everything", extra=connect)
    )
    async with live_stack(config_dir) as stack, OpenAIStub() as stub:
        await stack.ready("all", timeout=80)
        (echoed,) = await talk(stack, stub, 'call all_echo {"message": "everything"}')
        assert_every_tool_reached_the_model_valid(stack, stub)
        assert len(stub.tools_seen) >= 5
    assert "everything" in stub.tool_results(stub.requests[-1])[0]
    assert said(echoed)[0].startswith("The tool said: ")
