"""The hub and manager half of voice-native tool calls (issue #14), over real HTTP with plain
MCP SDK clients of the hub and real servers behind it (tests/servers/voice.py over stdio,
server-everything through npx): tools carry their voice metadata, progress and questions travel
to the client of the call, sampling is refused in words, a cancelled call is cancelled upstream,
confirmations reach the audit trail, and status, metrics and the dashboard count all of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp
import mcp_types
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from mcp import Client
from mcp.client.session import ClientRequestContext, ElicitationFnT, IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import RequestParamsMeta

import jackfield.shell.hub_questions
import jackfield.shell.persistence
from jackfield.app import App, build
from jackfield.core import dashboard
from jackfield.core.agent_view import EVENTS_PATH
from jackfield.core.status import VoiceStatus
from jackfield.core.voice import CONFIRMATION_META, VOICE_META, ToolVoice
from jackfield.settings import Settings
from jackfield.shell.call_channel import SAMPLING_REFUSED, UNROUTED_ELICITATION
from jackfield.shell.hub import ToolHub
from jackfield.shell.hub_questions import EXPIRED_ROUND, NO_ELICITATION, REASON_META
from jackfield.shell.metrics import Metrics
from jackfield.shell.servers import CallEvent, ServerManager
from jackfield.shell.store import MIGRATIONS, Store, create_engine
from jackfield.shell.supervisor import ProtocolMode, Timing
from tests.conftest import REPO
from tests.servers.launch import spawn
from tests.support.polling import until
from tests.support.servers import npx as find_npx
from tests.support.status import sample_status

pytestmark = pytest.mark.timeout(90)

TOKEN = "voice-hub-token-0123456789"
FAST = Timing(backoff_base=0.05, backoff_cap=0.5, grace=0.5)
WAIT = 30.0
HubMode = Literal["legacy", "auto"]


def voice_yaml(record: Path, extra: str = "") -> str:
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: voice}\n"
        f"spec:\n  command: {sys.executable}\n"
        f'  args: ["-m", "tests.servers.voice", "--record", "{record}"]\n'
        f"  cwd: {REPO}\n{extra}"
    )


def agent_yaml(extra: str = "") -> str:
    return (
        "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
        f"spec:\n  instructions: You are a test agent.\n{extra}"
    )


@dataclass
class VoiceStack:
    """The controller `jackfield run` builds, with the voice server, and what it observed."""

    config_dir: Path
    record: Path
    url: str
    manager: ServerManager
    hub: ToolHub
    events: list[CallEvent] = field(default_factory=list)

    def write(self, relative: str, text: str) -> None:
        path = self.config_dir / relative
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(text)
        os.replace(temp, path)

    def recorded(self, tool: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        """What the voice server recorded (tests/servers/voice.py `--record`)."""
        if not self.record.exists():
            return []
        lines = [json.loads(line) for line in self.record.read_text().splitlines() if line]
        return [r for r in lines if (tool is None or r["tool"] == tool)
                and (event is None or r["event"] == event)]  # fmt: skip

    def voice(self, server: str = "voice") -> VoiceStatus:
        return next(s.voice for s in self.manager.statuses() if s.name == server)

    def outcomes(self, tool: str) -> list[str]:
        return [e.outcome for e in self.events if e.tool == tool]


@contextlib.asynccontextmanager
async def voice_stack(
    config_dir: Path, *, upstream: ProtocolMode = "auto", extra: str = ""
) -> AsyncIterator[VoiceStack]:
    record = config_dir.parent / "voice-record.jsonl"
    (config_dir / "servers.d" / "voice.yaml").write_text(voice_yaml(record, extra))
    events: list[CallEvent] = []
    settings = Settings(_env_file=None, config_dir=config_dir, hub_port=0, debounce_ms=20)
    controller = build(
        settings, hub_token=TOKEN, env=dict(os.environ), timing=FAST, observer=events.append,
        tick_ms=50,
    )  # fmt: skip
    controller.manager.mode = upstream
    async with controller.running(first_pass=20):
        stack = VoiceStack(config_dir, record, controller.hub.url, controller.manager,
                           controller.hub, events)  # fmt: skip
        await until(lambda: controller.manager.states().get("voice") == "Ready", timeout=WAIT,
                    what=f"voice Ready (now {controller.manager.states()})")  # fmt: skip
        await until(lambda: "voice_slow" in {t.name for t in controller.hub.tools()},
                    timeout=WAIT, what="the voice tools on the hub")  # fmt: skip
        yield stack


@pytest.fixture
async def stack(config_dir: Path) -> AsyncIterator[VoiceStack]:
    async with voice_stack(config_dir) as stack:
        yield stack


@contextlib.asynccontextmanager
async def hub_client(
    url: str,
    *,
    mode: HubMode = "legacy",
    elicit: ElicitationFnT | None = None,
    on_message: Any = None,
) -> AsyncIterator[Client]:
    """A plain MCP SDK client of the hub, the way any MCP client would connect."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    async with (
        http,
        Client(
            streamable_http_client(url, http_client=http), mode=mode, cache=None,
            elicitation_callback=elicit, message_handler=on_message,
        ) as client,
    ):  # fmt: skip
        yield client


def text(result: mcp_types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))


class Asked:
    """An elicitation callback that records what it was asked and gives a fixed answer."""

    def __init__(self, answer: mcp_types.ElicitResult) -> None:
        self.answer = answer
        self.asked: list[mcp_types.ElicitRequestParams] = []

    async def __call__(
        self, context: ClientRequestContext, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        self.asked.append(params)
        return self.answer


def in_flight(manager: ServerManager, server: str) -> int:
    supervisor = manager.supervisor(server)
    return supervisor.calls_in_flight if supervisor is not None else 0


def voice_of(tool: mcp_types.Tool) -> ToolVoice:
    assert tool.meta is not None and VOICE_META in tool.meta, tool
    return ToolVoice.from_json(tool.meta[VOICE_META], name=tool.name)


async def listed(client: Client) -> dict[str, mcp_types.Tool]:
    tools: dict[str, mcp_types.Tool] = {}
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.update({t.name: t for t in page.tools})
        if (cursor := page.next_cursor) is None:
            return tools


# --- tools carry their voice ------------------------------------------------------------------


async def test_voice_hub_tools_carry_title_annotations_and_the_tool_voice(
    stack: VoiceStack,
) -> None:
    async with hub_client(stack.url) as client:
        tools = await listed(client)
    delete, slow, ask = tools["voice_delete_note"], tools["voice_slow"], tools["voice_ask_name"]
    assert delete.title == "Delete a note" and ask.title == "Ask for a name"
    assert delete.annotations is not None and delete.annotations.destructive_hint is True
    assert slow.annotations is not None and slow.annotations.read_only_hint is True
    # the agent's defaults: confirm destructive tools, cancel read-only ones on interruption
    assert voice_of(delete) == ToolVoice(
        title="Delete a note", filler="One moment.", filler_after=1.5, progress_every=5.0,
        progress="speak", answer_timeout=15.0, confirm=True, cancel_on_interrupt=False,
    )  # fmt: skip
    assert (voice_of(slow).confirm, voice_of(slow).cancel_on_interrupt) == (False, True)
    assert voice_of(ask).title == "Ask for a name"


async def test_voice_a_voice_or_confirm_edit_in_the_files_reaches_hub_clients(
    stack: VoiceStack,
) -> None:
    changed = asyncio.Event()

    async def heard(message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            changed.set()

    async with hub_client(stack.url, on_message=heard) as client:
        before = await listed(client)
        assert voice_of(before["voice_delete_note"]).confirm is True
        stack.write("servers.d/voice.yaml", voice_yaml(stack.record, (
            "  confirm: never\n  voice: {filler: Hold on., progressEvery: 2}\n"
            "  tools: {overrides: {'s*': {cancel: never}}}\n")))  # fmt: skip
        async with asyncio.timeout(WAIT):
            await changed.wait()
        after = await listed(client)
        delete, slow = voice_of(after["voice_delete_note"]), voice_of(after["voice_slow"])
        assert (delete.confirm, delete.filler, delete.progress_every) == (False, "Hold on.", 2.0)
        assert slow.cancel_on_interrupt is False  # the glob override beats the read-only hint

        changed.clear()
        stack.write("agent.yaml", agent_yaml("  confirm: always\n  voice: {fillerAfter: 3}\n"))
        async with asyncio.timeout(WAIT):
            await changed.wait()
        after = await listed(client)
    # the server's `confirm: never` still wins over the agent's `always`; the agent's
    # fillerAfter applies where the server sets none
    assert voice_of(after["voice_delete_note"]).confirm is False
    assert voice_of(after["voice_slow"]).filler_after == 3.0


# --- progress ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_voice_progress_notices_reach_only_the_hub_client_that_made_the_call(
    stack: VoiceStack, mode: HubMode
) -> None:
    heard: dict[str, list[tuple[float, float | None, str | None]]] = {"a": [], "b": []}

    def collector(who: str) -> Any:
        async def progressed(progress: float, total: float | None, message: str | None) -> None:
            heard[who].append((progress, total, message))

        return progressed

    async with hub_client(stack.url, mode=mode) as a, hub_client(stack.url, mode=mode) as b:
        results = await asyncio.gather(
            a.call_tool("voice_progress", {"steps": 3, "interval": 0.05},
                        progress_callback=collector("a")),
            b.call_tool("voice_progress", {"steps": 5, "interval": 0.03},
                        progress_callback=collector("b")),
            a.call_tool("voice_progress", {"steps": 2, "interval": 0.01}),  # asked for none
        )  # fmt: skip
    assert [text(r) for r in results] == [
        "done after 3 steps", "done after 5 steps", "done after 2 steps"]  # fmt: skip
    assert heard["a"] == [(float(i), 3.0, f"step {i} of 3") for i in range(1, 4)]
    assert heard["b"] == [(float(i), 5.0, f"step {i} of 5") for i in range(1, 6)]
    assert stack.voice().progress == 10  # every notice the server sent is counted


async def test_voice_a_burst_of_progress_right_before_the_result_all_arrives_before_it(
    stack: VoiceStack,
) -> None:
    """The SDK hands each notice on in a task of its own; the result waits for them."""
    heard: list[list[float]] = []

    async def progressed(progress: float, total: float | None, message: str | None) -> None:
        heard[-1].append(progress)

    async with hub_client(stack.url) as client:
        for _ in range(5):
            heard.append([])
            result = await client.call_tool(
                "voice_progress", {"steps": 20, "interval": 0}, progress_callback=progressed
            )
            assert text(result) == "done after 20 steps"
    assert heard == [[float(i) for i in range(1, 21)]] * 5


# --- elicitation ------------------------------------------------------------------------------

ANSWERS = [
    (mcp_types.ElicitResult(action="accept", content={"name": "Ada", "subscribe": True}),
     "accepted name=Ada subscribe=true"),
    (mcp_types.ElicitResult(action="decline"), "declined"),
    (mcp_types.ElicitResult(action="cancel"), "cancelled"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "upstream"),
    [("legacy", "auto"), ("legacy", "legacy"), ("auto", "auto"), ("auto", "legacy")],
)
async def test_voice_a_servers_question_reaches_the_hub_client_and_its_answer_the_server(
    config_dir: Path, mode: HubMode, upstream: ProtocolMode
) -> None:
    """Each era of hub client (a request on the call's stream; `input_required` rounds) with
    each era of upstream (an `elicitation/create`; `input_required` rounds)."""
    async with voice_stack(config_dir, upstream=upstream) as stack:
        for answer, said in ANSWERS:
            asked = Asked(answer)
            async with hub_client(stack.url, mode=mode, elicit=asked) as client:
                result = await client.call_tool("voice_ask_name", {})
            assert text(result) == said and not result.is_error
            (question,) = asked.asked  # forwarded as it came
            assert isinstance(question, mcp_types.ElicitRequestFormParams)
            assert question.message == "What is your name?"
            assert set(question.requested_schema["properties"]) == {"name", "subscribe"}
            assert question.requested_schema["required"] == ["name"]
        answered = stack.recorded("ask_name", "answered")
        voice = stack.voice()
    assert [r["action"] for r in answered] == ["accept", "decline", "cancel"]
    assert answered[0]["content"] == {"name": "Ada", "subscribe": True}
    assert voice.elicitations == {"accept": 1, "decline": 1, "cancel": 1, "refused": 0}


@pytest.mark.parametrize(
    ("mode", "upstream", "given_id"),
    [
        ("legacy", "legacy", "login-1"),
        ("legacy", "auto", "jackfield-"),
        ("auto", "auto", None),
        ("auto", "legacy", None),
    ],
)
async def test_voice_a_url_question_is_forwarded_as_it_came(
    config_dir: Path, mode: HubMode, upstream: ProtocolMode, given_id: str | None
) -> None:
    """As it came, but for its id: the 2026-07-28 wire carries none (a 2026-07-28 client sees
    none, whatever the server gave), and a handshake-era client needs one, so the hub makes one
    up when the server gave none."""
    asked = Asked(mcp_types.ElicitResult(action="decline", _meta={"why": "no browser"}))
    async with voice_stack(config_dir, upstream=upstream) as stack:
        async with hub_client(stack.url, mode=mode, elicit=asked) as client:
            result = await client.call_tool("voice_ask_url", {})
        (seen,) = stack.recorded("ask_url", "answered")  # the client's answer, _meta and all
    (question,) = asked.asked
    assert isinstance(question, mcp_types.ElicitRequestURLParams)
    assert (question.message, question.url) == (
        "Please sign in to continue.", "https://example.com/login")  # fmt: skip
    if given_id is None:
        assert question.elicitation_id is None
    else:
        assert (question.elicitation_id or "").startswith(given_id)
    assert text(result) == "decline"
    assert seen["result"] == {"action": "decline", "_meta": {"why": "no browser"}}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_voice_a_hub_client_that_declared_no_elicitation_gets_a_decline_with_a_reason(
    stack: VoiceStack, mode: HubMode
) -> None:
    async with hub_client(stack.url, mode=mode) as client:
        named = await client.call_tool("voice_ask_name", {})
        raw = await client.call_tool("voice_ask_raw", {})
    assert (text(named), text(raw)) == ("declined", "decline")
    (seen,) = stack.recorded("ask_raw", "answered")  # what the server itself received
    assert seen["result"] == {"action": "decline", "_meta": {REASON_META: NO_ELICITATION}}
    assert [r["action"] for r in stack.recorded("ask_name", "answered")] == ["decline"]
    assert stack.voice().elicitations["decline"] == 2


async def test_voice_a_2026_client_that_never_answers_has_its_call_cancelled(
    stack: VoiceStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2026-07-28 client driving the rounds itself, which never sends the next one."""
    monkeypatch.setattr(jackfield.shell.hub_questions, "ROUND_TTL", 0.5)
    ask = Asked(mcp_types.ElicitResult(action="accept", content={"name": "X"}))
    async with hub_client(stack.url, mode="auto", elicit=ask) as client:
        first = await client.session.call_tool("voice_ask_name", {}, allow_input_required=True)
        assert isinstance(first, mcp_types.InputRequiredResult) and first.input_requests
        (question,) = first.input_requests.values()
        assert isinstance(question, mcp_types.ElicitRequest)
        assert question.params.message == "What is your name?"
        await until(lambda: stack.outcomes("ask_name") == ["cancelled"], timeout=WAIT,
                    what=f"the call cancelled (saw {stack.outcomes('ask_name')})")  # fmt: skip
        late = await client.session.call_tool(
            "voice_ask_name", {}, request_state=first.request_state,
            input_responses=dict.fromkeys(first.input_requests, ask.answer),
        )  # fmt: skip
    assert late.is_error and text(late) == EXPIRED_ROUND
    assert stack.recorded("ask_name", "answered") == [] and ask.asked == []


async def test_voice_a_question_on_a_busy_stdio_connection_is_refused_in_words(
    config_dir: Path,
) -> None:
    """Handshake era over stdio: the SDK answers a server's request outside the calling task,
    so with two calls in flight jackfield cannot know whose question it is."""
    async with voice_stack(config_dir, upstream="legacy") as stack:
        asked = Asked(mcp_types.ElicitResult(action="accept", content={"name": "X"}))
        async with hub_client(stack.url, elicit=asked) as client:
            slow = asyncio.create_task(client.call_tool("voice_slow", {"seconds": 60}))
            await until(lambda: stack.recorded("slow", "started"), timeout=WAIT, what="slow")
            result = await client.call_tool("voice_ask_name", {})
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
            alone = await client.call_tool("voice_ask_name", {})  # one in flight: routed
        voice = stack.voice()
    assert UNROUTED_ELICITATION in text(result) and asked.asked[1:] == []
    assert text(alone) == "accepted name=X subscribe=unset" and len(asked.asked) == 1
    assert (voice.elicitations["refused"], voice.elicitations["accept"]) == (1, 1)


async def test_voice_questions_on_a_busy_http_connection_each_reach_their_own_caller(
    config_dir: Path,
) -> None:
    """Streamable HTTP carries each call's context with its stream, so with several calls in
    flight on one handshake-era connection each question still finds the caller it is for."""
    async with spawn("-m", "tests.servers.voice", "--transport", "http", "--port", "0",
                     "--record", str(config_dir.parent / "http-record.jsonl"),
                     stderr=asyncio.subprocess.DEVNULL) as (_, port):  # fmt: skip
        remote = (
            "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: remote}\n"
            f"spec:\n  transport: http\n  url: http://127.0.0.1:{port}/mcp\n"
        )
        (config_dir / "servers.d" / "remote.yaml").write_text(remote)
        async with voice_stack(config_dir, upstream="legacy") as stack:
            await until(lambda: stack.manager.states().get("remote") == "Ready", timeout=WAIT,
                        what=f"remote Ready (now {stack.manager.states()})")  # fmt: skip
            ada = Asked(mcp_types.ElicitResult(action="accept", content={"name": "Ada"}))
            bob = Asked(mcp_types.ElicitResult(action="accept", content={"name": "Bob"}))
            async with (
                hub_client(stack.url, elicit=ada) as a,
                hub_client(stack.url, elicit=bob) as b,
            ):
                slow = asyncio.create_task(a.call_tool("remote_slow", {"seconds": 60}))
                await until(lambda: in_flight(stack.manager, "remote") == 1, timeout=WAIT,
                            what="the slow call in flight")  # fmt: skip
                answers = await asyncio.gather(
                    a.call_tool("remote_ask_name", {}), b.call_tool("remote_ask_name", {})
                )
                slow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slow
            voice = stack.voice("remote")
    assert [text(r) for r in answers] == [
        "accepted name=Ada subscribe=unset", "accepted name=Bob subscribe=unset"]  # fmt: skip
    assert (len(ada.asked), len(bob.asked)) == (1, 1)
    assert voice.elicitations["accept"] == 2 and voice.elicitations["refused"] == 0


@pytest.mark.parametrize("upstream", ["auto", "legacy"])
async def test_voice_upstream_clients_declare_elicitation_and_not_sampling(
    config_dir: Path, upstream: ProtocolMode
) -> None:
    async with voice_stack(config_dir, upstream=upstream) as stack:
        result = await stack.manager.call("voice_client_capabilities", {})
    declared = json.loads(text(result))
    assert declared.get("elicitation") == {"form": {}, "url": {}}
    assert "sampling" not in declared


@pytest.mark.npx
async def test_voice_server_everything_offers_its_elicitation_tool_and_gets_the_answer(
    config_dir: Path,
) -> None:
    npx = find_npx()
    env = {k: os.environ[k] for k in ("PATH", "HOME", "npm_config_cache") if k in os.environ}
    (config_dir / "servers.d" / "all.yaml").write_text(
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: all}\n"
        f'spec:\n  command: {npx}\n  args: ["-y", "@modelcontextprotocol/server-everything"]\n'
        f"  env: {json.dumps(env)}\n  timeouts: {{connect: 60}}\n"
    )
    tool = "all_trigger-elicitation-request"
    async with voice_stack(config_dir) as stack:
        await until(lambda: tool in {t.name for t in stack.hub.tools()}, timeout=90,
                    what=f"{tool} offered (now {stack.manager.states()})")  # fmt: skip
        content = {"name": "Ada Lovelace", "check": True, "integer": 7}
        asked = Asked(mcp_types.ElicitResult(action="accept", content=content))
        async with hub_client(stack.url, elicit=asked) as client:
            result = await client.call_tool(tool, {})
        voice = stack.voice("all")
    said = text(result)
    assert "- Name: Ada Lovelace" in said and "- Agreed to terms: true" in said
    assert "- Favorite Integer: 7" in said
    (question,) = asked.asked
    assert isinstance(question, mcp_types.ElicitRequestFormParams)
    assert question.message == "Please provide inputs for the following fields:"
    assert voice.elicitations["accept"] == 1


# --- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("upstream", ["legacy", "auto"])
async def test_voice_sampling_is_refused_in_words_and_counted(
    config_dir: Path, upstream: ProtocolMode
) -> None:
    async with voice_stack(config_dir, upstream=upstream) as stack:
        async with hub_client(stack.url) as client:
            result = await client.call_tool("voice_sample", {})
        refused = stack.recorded("sample", "refused")
        voice = stack.voice()
    assert SAMPLING_REFUSED in text(result)
    if upstream == "legacy":  # a standalone request: the server hears the refusal itself
        assert text(result) == f"sampling refused: {SAMPLING_REFUSED}"
        assert [r["message"] for r in refused] == [SAMPLING_REFUSED]
    else:  # an input_required round: the SDK's client ends the call with our words
        assert result.is_error
    assert voice.sampling_refusals == 1


# --- cancellation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "upstream"), [("legacy", "auto"), ("auto", "auto"), ("legacy", "legacy")]
)
async def test_voice_a_hub_client_that_cancels_a_call_cancels_it_upstream(
    config_dir: Path, mode: HubMode, upstream: ProtocolMode
) -> None:
    async with voice_stack(config_dir, upstream=upstream) as stack:
        async with hub_client(stack.url, mode=mode) as client:
            call = asyncio.create_task(client.call_tool("voice_slow", {"seconds": 60}))
            await until(lambda: stack.recorded("slow", "started"), timeout=WAIT, what="started")
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            await until(lambda: stack.recorded("slow", "cancelled"), timeout=WAIT,
                        what=f"the server sees the cancel (saw {stack.recorded()})")  # fmt: skip
            await until(lambda: stack.outcomes("slow") == ["cancelled"], timeout=WAIT,
                        what=f"a cancelled CallEvent (saw {stack.outcomes('slow')})")  # fmt: skip
            # the connection is fine afterwards
            echoed = await client.call_tool("voice_progress", {"steps": 1, "interval": 0})
        supervisor = stack.manager.supervisor("voice")
        assert supervisor is not None
        voice = stack.voice()
        in_flight = (stack.manager.in_flight, supervisor.calls_in_flight)
    assert text(echoed) == "done after 1 steps"
    assert stack.recorded("slow", "finished") == [] and voice.cancellations == 1
    assert in_flight == (0, 0)


# --- confirmation -------------------------------------------------------------------------------

QUESTION = "Should I delete a note with note shopping? Please say yes or no."
ASKED = "Should I delete a note? Please say yes or no."
"""The question as an audit row without arguments keeps it."""


async def test_voice_a_confirmed_call_carries_the_question_and_the_yes_to_the_audit(
    stack: VoiceStack,
) -> None:
    yes = cast(RequestParamsMeta, {CONFIRMATION_META: {"question": QUESTION, "answer": "yes"}})
    not_yes = cast(RequestParamsMeta, {CONFIRMATION_META: {"question": QUESTION, "answer": "no"}})
    async with hub_client(stack.url) as client:
        first = await client.call_tool("voice_delete_note", {"note": "shopping"}, meta=yes)
        second = await client.call_tool("voice_delete_note", {"note": "todo"}, meta=not_yes)
    assert (text(first), text(second)) == ("deleted shopping", "deleted todo")
    events = [e for e in stack.events if e.tool == "delete_note"]
    assert [e.confirmation for e in events] == [
        {"question": QUESTION, "answer": "yes", "asked": ASKED}, None]  # fmt: skip
    assert stack.voice().confirmations == {"yes": 1, "no": 0, "timeout": 0}


async def post_event(stack: VoiceStack, event: dict[str, Any]) -> int:
    url = stack.url.removesuffix("/mcp") + EVENTS_PATH
    headers = {"Authorization": f"Bearer {TOKEN}", "x-jackfield-session": "job-room-7"}
    async with aiohttp.ClientSession() as http, http.post(url, json=event, headers=headers) as r:
        return r.status


async def test_voice_a_refused_confirmation_is_counted_and_audited_as_declined(
    stack: VoiceStack,
) -> None:
    for answer in ("no", "timeout"):
        report = {"event": "confirmation", "tool": "voice_delete_note", "question": QUESTION,
                  "answer": answer}  # fmt: skip
        assert await post_event(stack, report) == 202
    for bad in (
        {"event": "confirmation", "tool": "voice_delete_note", "question": QUESTION,
         "answer": "yes"},  # a yes travels with the call
        {"event": "confirmation", "tool": "voice_delete_note", "answer": "no"},
        {"event": "confirmation", "tool": "nope_missing", "question": QUESTION, "answer": "no"},
    ):  # fmt: skip
        assert await post_event(stack, bad) == 202
    declined = [e for e in stack.events if e.outcome == "declined"]
    assert [(e.server, e.tool, e.session) for e in declined] == [
        ("voice", "delete_note", "job-room-7")] * 2  # fmt: skip
    assert [e.confirmation for e in declined] == [
        {"question": QUESTION, "answer": answer, "asked": ASKED} for answer in ("no", "timeout")
    ]
    assert stack.voice().confirmations == {"yes": 0, "no": 1, "timeout": 1}
    assert stack.recorded("delete_note") == []  # no call was made


# --- the audit store ----------------------------------------------------------------------------


@pytest.fixture
def quick_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(jackfield.shell.persistence, "STATE_SYNC_INTERVAL", 0.05)
    yield


async def test_voice_audit_rows_keep_the_answer_and_the_question_its_arguments_only_at_full(
    config_dir: Path, tmp_path: Path, quick_sync: None
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    record = tmp_path / "record.jsonl"
    (config_dir / "servers.d" / "voice.yaml").write_text(voice_yaml(record, "  audit: full\n"))
    meta = voice_yaml(record).replace("name: voice", "name: meta")
    (config_dir / "servers.d" / "meta.yaml").write_text(meta)
    settings = Settings(_env_file=None, config_dir=config_dir, database_url=url, hub_port=0,
                        status_port=0)  # fmt: skip
    app = App(settings, agent=False)
    task = asyncio.create_task(app.run())
    yes = {"question": QUESTION, "answer": "yes"}
    try:
        await until(lambda: task.done() or (app.readiness()[0] and all(
            app.manager.states().get(n) == "Ready" for n in ("voice", "meta"))), timeout=60,
            what="app ready")  # fmt: skip
        assert not task.done()
        await app.manager.call("voice_delete_note", {"note": "shopping"}, confirmation=yes)
        await app.manager.call("meta_delete_note", {"note": "shopping"}, confirmation=yes)
        app.manager.confirmation_refused("meta_delete_note", QUESTION, "timeout")
        await app.manager.call("meta_progress", {"steps": 1, "interval": 0})
        store = await Store.open(url)
        try:
            rows: list[Any] = []

            async def four() -> bool:
                nonlocal rows
                rows = await store.audit()
                return len(rows) == 4

            async with asyncio.timeout(WAIT):
                while not await four():
                    await asyncio.sleep(0.05)
        finally:
            await store.close()
    finally:
        app.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    by = {(r.server, r.tool, r.outcome): r for r in rows}
    assert json.loads(by["voice", "delete_note", "ok"].confirmation) == yes
    assert json.loads(by["meta", "delete_note", "ok"].confirmation) == {
        "question": ASKED,
        "answer": "yes",
    }
    assert json.loads(by["meta", "delete_note", "declined"].confirmation) == {
        "question": ASKED, "answer": "timeout"}  # fmt: skip
    assert by["meta", "progress", "ok"].confirmation is None


async def test_voice_migration_0002_adds_the_confirmation_column_to_an_existing_store(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    try:
        with engine.begin() as connection:  # a store as jackfield 0001 left it, with a row
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(sa.text(
                "INSERT INTO tool_calls (at, server, tool, duration_ms, outcome, bytes_in,"
                " bytes_out, arguments_hash) VALUES ('2026-11-24 12:00:00', 'old', 'echo', 1,"
                " 'ok', 2, 2, 'sha256:x')"))  # fmt: skip
    finally:
        engine.dispose()
    store = await Store.open(url)
    try:
        (old,) = await store.audit()
        declined = replace(old, tool="delete_note", outcome="declined",
                           confirmation='{"answer": "no"}')  # fmt: skip
        await store.record_calls([declined])
        rows = {r.tool: r for r in await store.audit()}
    finally:
        await store.close()
    assert old.confirmation is None and old.tool == "echo"
    assert rows["delete_note"].confirmation == '{"answer": "no"}'


# --- status, metrics, dashboard -----------------------------------------------------------------


async def test_voice_counts_show_in_status_metrics_and_the_dashboard(stack: VoiceStack) -> None:
    async with hub_client(stack.url) as client:
        await client.call_tool("voice_progress", {"steps": 3, "interval": 0.01})
        await client.call_tool("voice_sample", {})
        await client.call_tool("voice_ask_name", {})  # no elicitation declared: a decline
    report = {"event": "confirmation", "tool": "voice_delete_note", "question": QUESTION,
              "answer": "no"}  # fmt: skip
    assert await post_event(stack, report) == 202

    (status,) = [s for s in stack.manager.statuses() if s.name == "voice"]
    assert status.to_json()["voice"] == {
        "progress": 3, "cancellations": 0,
        "confirmations": {"yes": 0, "no": 1, "timeout": 0},
        "elicitations": {"accept": 0, "decline": 1, "cancel": 0, "refused": 0},
        "sampling_refusals": 1,
    }  # fmt: skip
    exposition = Metrics(servers=stack.manager.statuses).render().decode()
    for labels, value in (
        ('kind="progress",outcome="notice"', 3.0),
        ('kind="confirmation",outcome="no"', 1.0),
        ('kind="confirmation",outcome="yes"', 0.0),
        ('kind="elicitation",outcome="decline"', 1.0),
        ('kind="sampling",outcome="refused"', 1.0),
    ):
        assert f'jackfield_voice_events_total{{{labels},server="voice"}} {value}' in exposition
    page = dashboard.render(sample_status(servers=(status,)))
    assert "<dt>Voice</dt>" in page
    assert "progress 3" in page and "confirmed: no 1" in page and "asked: decline 1" in page
    assert "sampling refused 1" in page
    quiet = dashboard.render(sample_status())  # servers that saw nothing show no voice line
    assert 'class="voice"' not in quiet
