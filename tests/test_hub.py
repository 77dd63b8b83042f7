"""The tool hub over real HTTP, seen by plain MCP SDK clients of both protocol eras, with real
MCP server processes behind it (tests/servers/echo.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import mcp_types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from jackfield.shell.hub import PROMPT_NAME, SESSION_HEADER
from tests.support.clients import INITIALIZE, Heard, hub_client, process_gone, text
from tests.support.controller import until
from tests.support.live import TOKEN, Stack, echo_server, echo_stack, live_stack

pytestmark = pytest.mark.timeout(60)

MODERN = "2026-07-28"
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def agent_yaml(*, servers: list[str] | None = None) -> str:
    selectors = f"  servers: {json.dumps(servers)}\n" if servers is not None else ""
    return (
        "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
        f"spec:\n  instructions: You are a test agent.\n{selectors}"
    )


def prompt_doc(name: str, text: str, order: int = 0) -> str:
    return (
        f"apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {{name: {name}}}\n"
        f"spec: {{text: {text}, order: {order}}}\n"
    )


@pytest.fixture
async def stack(config_dir: Path) -> AsyncIterator[Stack]:
    async with echo_stack(config_dir, "  prompt: Use echo to repeat things.\n") as stack:
        yield stack


# --- the token ---------------------------------------------------------------------------------


WRONG_AUTHORIZATIONS = [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN]


async def test_hub_without_the_right_token_answers_401_and_serves_nothing(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        for method in ("POST", "GET", "DELETE"):
            for authorization in WRONG_AUTHORIZATIONS:
                headers = dict(MCP_HEADERS)
                if authorization is not None:
                    headers["Authorization"] = authorization
                body = INITIALIZE if method == "POST" else None
                async with http.request(method, stack.hub.url, headers=headers, json=body) as r:
                    assert r.status == 401, (method, authorization)
                    assert r.headers["www-authenticate"].startswith("Bearer")
                    assert "jsonrpc" not in await r.text()
                    assert "mcp-session-id" not in r.headers
    # an SDK client with the wrong token gets no further than its first request
    with pytest.raises(Exception) as caught:  # noqa: B017 - the SDK wraps it in task groups
        async with hub_client(stack.hub.url, token="not-the-token"):
            pass
    assert "MCPError" in repr(caught.value)
    assert stack.hub.status().sessions == 0


# --- listing and calling -------------------------------------------------------------------------


async def test_hub_lists_prefixed_tools_of_ready_servers_the_agent_selects(
    config_dir: Path,
) -> None:
    (config_dir / "agent.yaml").write_text(agent_yaml(servers=["ech*", "late"]))
    servers = config_dir / "servers.d"
    servers.joinpath("echo.yaml").write_text(echo_server("echo", "--tools", "echo,add"))
    servers.joinpath("other.yaml").write_text(echo_server("other", "--tools", "add"))
    servers.joinpath("late.yaml").write_text(echo_server("late", "--start-delay", "30"))
    async with live_stack(config_dir) as stack:
        await stack.ready("echo", "other")
        assert stack.manager.states()["late"] == "Connecting"
        heard = Heard()
        async with hub_client(stack.hub.url, on_message=heard) as client:
            listed = await client.list_tools()
            assert [t.name for t in listed.tools] == ["echo_add", "echo_echo"]
            assert listed.tools[0].description == "Add two integers."
            assert set(listed.tools[0].input_schema["properties"]) == {"a", "b"}
            hidden = await client.call_tool("other_add", {"a": 1, "b": 2})
            assert hidden.is_error and "other_add" in text(hidden), "unselected: unknown"

            stack.write("agent.yaml", agent_yaml(servers=["*"]))
            await heard.wait_for(mcp_types.ToolListChangedNotification)
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {"echo_add", "echo_echo", "other_add"}


async def test_hub_forwards_calls_and_returns_their_results(stack: Stack) -> None:
    async with hub_client(stack.hub.url) as client:
        added = await client.call_tool("echo_add", {"a": 2, "b": 3})
        assert not added.is_error and text(added) == "5"
        echoed = await client.call_tool("echo_echo", {"text": "héllo hub"})
        assert text(echoed) == "héllo hub"
        failed = await client.call_tool("echo_fail", {"message": "no luck"})
        assert failed.is_error and "no luck" in text(failed)
    async with hub_client(stack.hub.url, mode="auto") as modern:
        result = await modern.call_tool("echo_echo", {"text": "x"})
        assert text(result) == "x"
    # the answer is the hub's: the upstream's protocol metadata does not leak through
    server_info = (result.meta or {}).get("io.modelcontextprotocol/serverInfo")
    assert server_info is None or server_info["name"] == "jackfield-hub"


async def test_hub_answers_an_unknown_tool_with_a_sentence_not_a_protocol_error(
    stack: Stack,
) -> None:
    for mode in ("legacy", "auto"):
        async with hub_client(stack.hub.url, mode=mode) as client:
            result = await client.call_tool("echo_nonexistent", {"x": 1})
            assert result.is_error, mode
            sentence = text(result)
            assert "echo_nonexistent" in sentence and sentence.endswith("."), mode
            # the connection is still good
            assert text(await client.call_tool("echo_add", {"a": 1, "b": 1})) == "2"
            with pytest.raises(MCPError, match="unknown prompt"):
                await client.get_prompt("something-else")


# --- the agent-instructions prompt ---------------------------------------------------------------


async def test_hub_prompt_is_agent_then_prompt_docs_by_order_and_name_then_ready_servers(
    config_dir: Path,
) -> None:
    (config_dir / "agent.yaml").write_text(agent_yaml(servers=["a*", "b*", "late"]))
    servers = config_dir / "servers.d"
    servers.joinpath("p2.yaml").write_text(prompt_doc("first-but-order-2", "Third.", order=2))
    servers.joinpath("p1.yaml").write_text(prompt_doc("zeta", "Second.", order=1))
    servers.joinpath("p0.yaml").write_text(prompt_doc("beta", "First.", order=1))
    servers.joinpath("b.yaml").write_text(
        echo_server("bravo", "--tools", "echo", extra="  prompt: Bravo is here.\n")
    )
    servers.joinpath("a.yaml").write_text(
        echo_server("alpha", "--tools", "echo", extra="  prompt: Alpha is here.\n")
    )
    servers.joinpath("c.yaml").write_text(
        echo_server("charlie", "--tools", "echo", extra="  prompt: Not selected.\n")
    )
    servers.joinpath("late.yaml").write_text(
        echo_server("late", "--start-delay", "30", extra="  prompt: Not ready.\n")
    )
    async with live_stack(config_dir) as stack:
        await stack.ready("alpha", "bravo", "charlie")
        expected = "\n\n".join(
            [
                "You are a test agent.",
                "First.",
                "Second.",
                "Third.",
                "Alpha is here.",
                "Bravo is here.",
            ]
        )
        await until(lambda: stack.hub.instructions == expected, what="instructions composed")
        async with hub_client(stack.hub.url) as client:
            listed = await client.list_prompts()
            assert [p.name for p in listed.prompts] == [PROMPT_NAME]
            prompt = await client.get_prompt(PROMPT_NAME)
        content = prompt.messages[0].content
        assert isinstance(content, mcp_types.TextContent)
        assert content.text == expected
        assert prompt.description == stack.hub.instructions_revision


# --- announcements --------------------------------------------------------------------------------


async def test_hub_tells_handshake_era_clients_of_filter_and_prompt_edits(stack: Stack) -> None:
    heard = Heard()
    async with hub_client(stack.hub.url, on_message=heard) as client:
        assert client.protocol_version != MODERN
        capabilities = client.server_capabilities
        assert capabilities.tools is not None and capabilities.tools.list_changed
        assert capabilities.prompts is not None and capabilities.prompts.list_changed
        await client.list_tools()

        stack.write(
            "servers.d/echo.yaml",
            echo_server(
                "echo", extra="  prompt: Use echo to repeat things.\n  tools: {include: [echo]}\n"
            ),
        )
        await heard.wait_for(mcp_types.ToolListChangedNotification)
        assert [t.name for t in (await client.list_tools()).tools] == ["echo_echo"]

        stack.write("servers.d/style.yaml", prompt_doc("style", "Answer briefly."))
        await heard.wait_for(mcp_types.PromptListChangedNotification)
        prompt = await client.get_prompt(PROMPT_NAME)
        content = prompt.messages[0].content
        assert isinstance(content, mcp_types.TextContent)
        assert content.text.endswith("Answer briefly.\n\nUse echo to repeat things.")


async def test_hub_does_not_announce_changes_to_servers_the_agent_does_not_get(
    config_dir: Path,
) -> None:
    (config_dir / "agent.yaml").write_text(agent_yaml(servers=["echo"]))
    (config_dir / "servers.d" / "echo.yaml").write_text(echo_server("echo", "--tools", "echo"))
    async with live_stack(config_dir) as stack:
        await stack.ready("echo")
        heard = Heard()
        async with hub_client(stack.hub.url, on_message=heard) as client:
            await client.list_tools()
            before = stack.hub.announcements
            stack.write("servers.d/hidden.yaml", echo_server("hidden", "--tools", "pid"))
            await until(
                lambda: "hidden_pid" in stack.manager.catalog.entries, what="hidden catalogued"
            )
            assert stack.hub.announcements == before
            # anything sent before would arrive before this on the same stream
            stack.write("servers.d/style.yaml", prompt_doc("style", "Answer briefly."))
            await heard.wait_for(mcp_types.PromptListChangedNotification)
            assert heard.count(mcp_types.ToolListChangedNotification) == 0
            assert [t.name for t in (await client.list_tools()).tools] == ["echo_echo"]


async def test_hub_negotiates_2026_and_sends_listen_events_to_modern_clients(
    stack: Stack,
) -> None:
    async with hub_client(stack.hub.url, mode="auto") as client:
        assert client.protocol_version == MODERN
        async with client.listen(tools_list_changed=True, prompts_list_changed=True) as sub:
            assert sub.honored.tools_list_changed
            events = aiter(sub)
            stack.write(
                "servers.d/echo.yaml",
                echo_server("echo", extra="  tools: {include: [add]}\n"),
            )
            event = await asyncio.wait_for(anext(events), 10)
            assert type(event).__name__ == "ToolsListChanged"
            assert [t.name for t in (await client.list_tools()).tools] == ["echo_add"]

            stack.write("servers.d/style.yaml", prompt_doc("style", "Answer briefly."))
            kinds: set[str] = set()
            async with asyncio.timeout(10):
                while "PromptsListChanged" not in kinds:
                    kinds.add(type(await anext(events)).__name__)


# --- scope: session -------------------------------------------------------------------------------


@pytest.fixture
async def scoped(config_dir: Path) -> AsyncIterator[Stack]:
    servers = config_dir / "servers.d"
    servers.joinpath("own.yaml").write_text(
        echo_server("own", "--tools", "pid", extra="  scope: session\n")
    )
    servers.joinpath("shared.yaml").write_text(echo_server("shared", "--tools", "pid"))
    async with live_stack(config_dir) as stack:
        await stack.ready("own", "shared")
        yield stack


async def pid_of(client: Client, tool: str) -> int:
    result = await client.call_tool(tool, {})
    assert not result.is_error, text(result)
    return int(text(result))


async def test_hub_gives_each_session_its_own_connection_to_session_scoped_servers(
    scoped: Stack,
) -> None:
    url = scoped.hub.url
    async with hub_client(url) as one, hub_client(url) as two:
        own_one, own_two = await pid_of(one, "own_pid"), await pid_of(two, "own_pid")
        assert own_one != own_two
        assert await pid_of(one, "own_pid") == own_one, "one session keeps its connection"
        shared_pid = scoped.manager.supervisor("own").pid  # type: ignore[union-attr]
        assert shared_pid is not None and shared_pid not in (own_one, own_two)
        assert await pid_of(one, "shared_pid") == await pid_of(two, "shared_pid")

    await until(lambda: process_gone(own_one) and process_gone(own_two), what="sessions closed")
    assert not process_gone(shared_pid), "the shared connection stays"


async def test_hub_closes_a_sessions_connection_when_that_session_ends(scoped: Stack) -> None:
    url = scoped.hub.url
    async with hub_client(url) as staying:
        async with hub_client(url) as leaving:
            gone = await pid_of(leaving, "own_pid")
        await until(lambda: process_gone(gone), what="the ended session's server exits")
        stays = await pid_of(staying, "own_pid")
        assert not process_gone(stays)
        assert await pid_of(staying, "own_pid") == stays
    await until(lambda: process_gone(stays), what="the last session's server exits")


async def test_hub_session_header_names_the_session_across_connections(scoped: Stack) -> None:
    url = scoped.hub.url
    named = {SESSION_HEADER: "job-room-7"}
    async with hub_client(url, headers=named) as first, hub_client(url, headers=named) as second:
        assert scoped.hub.agent_sessions() == 2
        assert await pid_of(first, "own_pid") == await pid_of(second, "own_pid")
    await until(lambda: scoped.hub.status().sessions == 0, what="both connections gone")


async def test_hub_gives_a_2026_request_without_a_session_its_own_short_connection(
    scoped: Stack,
) -> None:
    async with hub_client(scoped.hub.url, mode="auto") as client:
        first = await pid_of(client, "own_pid")
        await until(lambda: process_gone(first), what="the request's session closes")
        second = await pid_of(client, "own_pid")
        assert second != first
