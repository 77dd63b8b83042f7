"""Per-caller context in real LiveKit job processes (issue #16): two callers at once.

Two job processes of one worker (tests/support/jobs.py), each a real AgentSession on the
scripted chat model (tests/support/openai_stub.py: `call TOOL {json}` is one call of that tool,
arguments as given), behind a real hub and real MCP servers (tests/servers/caller.py, which
records what it observed). Each job's console plays its caller (`ConsoleEnd.join`): alice of
tenant acme, bob of tenant globex. The job tells the hub, the hub serves each its own.

- `mine`: stdio, `scope: session`, env `USER_ID: ${caller.identity}`: a process per caller;
- `tenant`: http, `scope: session`, header `X-Tenant: ${caller.attributes.tenant}`;
- `shared`: stdio, shared, hidden argument `user_id: ${caller.identity}`;
- `acme`: stdio, shared, `access` for callers of tenant acme only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jackfield.shell.persistence import call_record
from jackfield.shell.servers import CallEvent
from jackfield.shell.text_link import ConsoleEnd
from tests.conftest import REPO
from tests.support.jobs import PIPELINE_AGENT, REALTIME_AGENT, TURN, job_worker, tool_calls
from tests.support.live import TOKEN, Stack, live_stack
from tests.support.manager import serving
from tests.support.openai_stub import OpenAIStub
from tests.support.realtime_stub import RealtimeStub
from tests.test_console import console, console_env

pytestmark = pytest.mark.timeout(240)

REFUSED_WORDS = "is not available in this conversation"
ACME_ONLY = "  access:\n    callers:\n      - attributes: {tenant: acme}\n"


def caller_yaml(name: str, record: Path, *flags: str, extra: str = "", url: str = "") -> str:
    """An MCPServer document for tests/servers/caller.py: over stdio, or at `url`."""
    if url:
        where = f"  transport: http\n  url: {url}\n"
    else:
        args = ", ".join(f'"{a}"' for a in ["-m", "tests.servers.caller", "--record",
                                             str(record), *flags])  # fmt: skip
        where = f"  command: {sys.executable}\n  args: [{args}]\n  cwd: {REPO}\n"
    head = f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\nspec:\n"
    return f"{head}{where}{extra}"


def recorded(record: Path, tool: str | None = None) -> list[dict[str, Any]]:
    """What a caller.py server wrote: every event, or the calls of `tool`."""
    if not record.exists():
        return []
    lines = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    if tool is None:
        return lines
    return [r for r in lines if r["event"] == "called" and r["tool"] == tool]


@dataclass
class Callers:
    stack: Stack
    openai: OpenAIStub
    records: dict[str, Path]
    events: list[CallEvent]

    def request_for(self, text: str) -> dict[str, Any]:
        """The chat request that answered the user's `text` (the first one)."""
        for request in self.openai.requests:
            users = [m for m in request.get("messages", []) if m.get("role") == "user"]
            if users and _text(users[-1].get("content")) == text:
                return request
        raise AssertionError(f"no chat request answered {text!r}")


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def llm_tools(request: dict[str, Any]) -> dict[str, Any]:
    """The tools the LLM was given in one request: name -> parameters."""
    return {t["function"]["name"]: t["function"]["parameters"] for t in request.get("tools") or []}


@contextlib.asynccontextmanager
async def callers_stack(
    config_dir: Path, tmp_path: Path, agent: str = PIPELINE_AGENT
) -> AsyncIterator[Callers]:
    records = {n: tmp_path / f"{n}.jsonl" for n in ("mine", "tenant", "shared", "acme")}
    tenant_flags = ("--header", "X-Tenant", "--record", str(records["tenant"]))
    async with serving("http", *tenant_flags, module="tests.servers.caller") as (url, _):
        servers = {
            "mine": caller_yaml("mine", records["mine"], "--env", "USER_ID", extra=(
                '  scope: session\n  env: {USER_ID: "${caller.identity}"}\n'
                "  tools: {include: [whoami]}\n")),
            "tenant": caller_yaml("tenant", records["tenant"], url=url, extra=(
                '  scope: session\n  headers: {X-Tenant: "${caller.attributes.tenant}"}\n'
                "  tools: {include: [whoami]}\n")),
            "shared": caller_yaml("shared", records["shared"], extra=(
                '  tools:\n    include: [lookup]\n    arguments: {user_id: "${caller.identity}"}\n'
            )),
            "acme": caller_yaml("acme", records["acme"], extra=(
                f"{ACME_ONLY}  voice: {{answerTimeout: 120}}\n"
                "  tools:\n    include: [orders, whoami]\n"
                "    overrides: {whoami: {confirm: always}}\n")),
        }  # fmt: skip
        (config_dir / "agent.yaml").write_text(agent)
        for name, text in servers.items():
            (config_dir / "servers.d" / f"{name}.yaml").write_text(text)
        async with live_stack(config_dir) as stack, OpenAIStub() as openai:
            await stack.ready(*servers, timeout=80)
            events: list[CallEvent] = []
            stack.manager.observer = events.append
            yield Callers(stack, openai, records, events)


@contextlib.asynccontextmanager
async def two_jobs(callers: Callers) -> AsyncIterator[tuple[ConsoleEnd, ConsoleEnd]]:
    """Two simultaneous jobs in rooms of their own, joined by alice (acme) and bob (globex)."""
    async with job_worker(callers.stack.hub.url, TOKEN, callers.openai) as jobs:
        alice, bob = await jobs.start("room-a"), await jobs.start("room-b")
        joined = await asyncio.gather(
            alice.join("alice", name="Alice", attributes={"tenant": "acme"}),
            bob.join("bob", name="Bob", attributes={"tenant": "globex"}),
        )
        for who, answer in zip(("alice", "bob"), joined, strict=True):
            assert answer["identity"] == who and "error" not in answer, answer
        assert {"acme_orders", "acme_whoami"} <= set(joined[0]["tools"]), joined[0]
        assert not any(t.startswith("acme_") for t in joined[1]["tools"]), joined[1]
        yield alice, bob


def only(messages: list[dict[str, Any]]) -> dict[str, Any]:
    [call] = tool_calls(messages)
    return call


async def test_caller_jobs_two_callers_get_their_own_servers_arguments_and_tools(
    config_dir: Path, tmp_path: Path
) -> None:
    async with callers_stack(config_dir, tmp_path) as callers, two_jobs(callers) as (a, b):
        records = callers.records

        async def session(end: ConsoleEnd, who: str) -> dict[str, dict[str, Any]]:
            await end.turn(f"{who} is on the line", TURN)
            mine = only(await end.turn("call mine_whoami {}", TURN))
            tenant = only(await end.turn("call tenant_whoami {}", TURN))
            tried = {"user_id": "mallory", "query": f"{who}-q"}
            shared = only(await end.turn(f"call shared_lookup {json.dumps(tried)}", TURN))
            acme = only(await end.turn(f'call acme_orders {{"query": "{who}-acme"}}', TURN))
            return {"mine": mine, "tenant": tenant, "shared": shared, "acme": acme}

        alice, bob = await asyncio.gather(session(a, "alice"), session(b, "bob"))

    # the identity-scoped stdio server: a process per caller, each with its own USER_ID
    mine = {who: json.loads(c["mine"]["output"]) for who, c in (("alice", alice), ("bob", bob))}
    assert {who: m["env"]["USER_ID"] for who, m in mine.items()} == {"alice": "alice",
                                                                      "bob": "bob"}  # fmt: skip
    assert mine["alice"]["pid"] != mine["bob"]["pid"]
    seen = {r["pid"]: r["env"]["USER_ID"] for r in recorded(records["mine"], "whoami")}
    assert seen == {mine["alice"]["pid"]: "alice", mine["bob"]["pid"]: "bob"}, seen

    # the identity-scoped http server: each caller's own header, as the server saw it
    tenant = {who: json.loads(c["tenant"]["output"]) for who, c in (("alice", alice), ("bob", bob))}
    assert tenant["alice"]["headers"] == {"x-tenant": "acme"}
    assert tenant["bob"]["headers"] == {"x-tenant": "globex"}
    assert sorted(r["headers"]["x-tenant"] for r in recorded(records["tenant"], "whoami")) == [
        "acme", "globex"]  # fmt: skip

    # the shared server: the injected user_id, never the LLM's; the LLM's schema lacks it
    assert alice["shared"]["output"] == "user_id=alice query=alice-q"
    assert bob["shared"]["output"] == "user_id=bob query=bob-q"
    got = sorted((r["arguments"]["user_id"], r["arguments"]["query"])
                 for r in recorded(records["shared"], "lookup"))  # fmt: skip
    assert got == [("alice", "alice-q"), ("bob", "bob-q")]
    overridden = [e for e in callers.events if e.server == "shared"]
    assert sorted((e.caller, e.overridden) for e in overridden) == [
        ("alice", ("user_id",)), ("bob", ("user_id",))]  # fmt: skip
    for who in ("alice", "bob"):
        lookup = llm_tools(callers.request_for(f"{who} is on the line"))["shared_lookup"]
        assert "user_id" not in lookup.get("properties", {}), lookup
        assert "user_id" not in lookup.get("required", []), lookup

    # the restricted server: alice's tools and alice's LLM, not bob's; bob cannot call it
    alices = llm_tools(callers.request_for("alice is on the line"))
    bobs = llm_tools(callers.request_for("bob is on the line"))
    assert {"acme_orders", "acme_whoami", "mine_whoami", "shared_lookup"} <= set(alices)
    assert {"mine_whoami", "tenant_whoami", "shared_lookup"} <= set(bobs)
    assert not any(name.startswith("acme_") for name in bobs), bobs
    assert alice["acme"]["output"] == "orders user_id= tenant= query=alice-acme"
    assert bob["acme"]["is_error"], bob["acme"]
    assert [r["arguments"]["query"] for r in recorded(records["acme"], "orders")] == ["alice-acme"]
    assert {(e.caller, e.room) for e in callers.events} == {("alice", "room-a"), ("bob", "room-b")}


async def test_caller_jobs_the_context_follows_the_caller_and_a_refused_call_is_audited(
    config_dir: Path, tmp_path: Path
) -> None:
    async with callers_stack(config_dir, tmp_path) as callers, two_jobs(callers) as (alice, bob):
        records = callers.records
        before = only(await bob.turn("call tenant_whoami {}", TURN))
        assert json.loads(before["output"])["headers"] == {"x-tenant": "globex"}

        # bob's attributes change: his job now sees what acme callers see
        moved = await bob.join("bob", name="Bob", attributes={"tenant": "acme"})
        assert "error" not in moved and {"acme_orders", "acme_whoami"} <= set(moved["tools"])
        after = only(await bob.turn("call tenant_whoami {}", TURN))
        assert json.loads(after["output"])["headers"] == {"x-tenant": "acme"}
        orders = only(await bob.turn('call acme_orders {"query": "bob-now-acme"}', TURN))
        assert orders["output"] == "orders user_id= tenant= query=bob-now-acme", orders

        # and back, while a call of the restricted server waits for his yes: it is refused
        await bob.say("call acme_whoami {}")
        asked = await bob.until("question", timeout=TURN)
        assert asked["kind"] == "confirmation" and asked["call"] == "acme_whoami", asked
        back = await bob.join("bob", name="Bob", attributes={"tenant": "globex"})
        assert "error" not in back and not any(t.startswith("acme_") for t in back["tools"])
        await bob.say("yes")
        refused = only(await bob.collect("turn_done", TURN))
        assert REFUSED_WORDS in refused["output"] and refused["is_error"], refused

        # alice, admitted all along, is asked the same and gets her answer
        await alice.say("call acme_whoami {}")
        await alice.until("question", timeout=TURN)
        await alice.say("yes")
        allowed = only(await alice.collect("turn_done", TURN))
        assert not allowed["is_error"], allowed

    assert len(recorded(records["acme"], "whoami")) == 1, "only alice's call reached the server"
    [refusal] = [e for e in callers.events if e.outcome == "rejected:access"]
    assert (refusal.server, refusal.caller, refusal.room) == ("acme", "bob", "room-b")
    row = call_record(refusal, full=False)
    assert (row.outcome, row.caller, row.room) == ("rejected:access", "bob", "room-b")


async def test_caller_jobs_a_realtime_session_gets_its_callers_tools_and_hidden_arguments(
    config_dir: Path, tmp_path: Path
) -> None:
    """The same per-caller view on the Realtime API: what the session offers the model follows
    the caller, and the hidden argument is neither offered nor the model's to choose."""

    def offered(realtime: RealtimeStub) -> dict[str, Any]:
        for session in reversed(realtime.session_updates):
            if "tools" in session:
                return {str(t.get("name")): t for t in session["tools"] or []}
        return {}

    async with (
        callers_stack(config_dir, tmp_path, REALTIME_AGENT) as callers,
        RealtimeStub() as realtime,
        job_worker(callers.stack.hub.url, TOKEN, callers.openai, realtime) as jobs,
    ):
        end = await jobs.start("room-r")
        joined = await end.join("bob", name="Bob", attributes={"tenant": "globex"})
        assert "error" not in joined, joined
        await realtime.wait_until(lambda: "shared_lookup" in offered(realtime), timeout=TURN)
        tools = offered(realtime)
        assert not any(name.startswith("acme_") for name in tools), sorted(tools)
        assert "user_id" not in tools["shared_lookup"]["parameters"].get("properties", {})
        tried = {"user_id": "mallory", "query": "rt"}
        shared = only(await end.turn(f"call shared_lookup {json.dumps(tried)}", TURN))
        assert shared["output"] == "user_id=bob query=rt", shared

        moved = await end.join("bob", name="Bob", attributes={"tenant": "acme"})
        assert "error" not in moved, moved
        await realtime.wait_until(lambda: "acme_orders" in offered(realtime), timeout=TURN)
        orders = only(await end.turn('call acme_orders {"query": "rt-acme"}', TURN))
        assert orders["output"] == "orders user_id= tenant= query=rt-acme", orders
    assert [r["arguments"]["user_id"] for r in recorded(callers.records["shared"], "lookup")] == [
        "bob"]  # fmt: skip


async def test_caller_jobs_console_plays_the_caller_it_is_told(
    config_dir: Path, tmp_path: Path
) -> None:
    record = tmp_path / "acme.jsonl"
    servers = config_dir / "servers.d"
    servers.joinpath("acme.yaml").write_text(caller_yaml("acme", record, extra=(
        f"{ACME_ONLY}  tools:\n    include: [orders]\n"
        "    arguments:\n"
        '      user_id: "${caller.identity}"\n'
        '      tenant: "${caller.attributes.tenant}-${job.metadata.plan}"\n'
    )))  # fmt: skip
    async with OpenAIStub() as stub:
        env = console_env(OPENAI_API_KEY="test", OPENAI_BASE_URL=stub.base_url)
        typed = 'call acme_orders {"query": "shoes"}\n'
        flags = ("--identity", "alice", "--attribute", "tenant=acme",
                 "--metadata", '{"plan": "gold"}')  # fmt: skip
        code, out, err = await console(config_dir, tmp_path, env, typed, 90.0, *flags)
        refused, _, refusal = await console(
            config_dir, tmp_path, env, "", 60.0, "--attribute", "tenant=acme"
        )
    assert code == 0, err
    shown = out.splitlines()
    assert shown[0].startswith("jackfield console: gpt-4o-mini, 0 tool(s) live."), out
    assert "jackfield console: playing alice, 1 tool(s) live." in shown, out
    assert "orders user_id=alice tenant=acme-gold query=shoes" in out, out
    assert [r["arguments"] for r in recorded(record, "orders")] == [
        {"user_id": "alice", "tenant": "acme-gold", "query": "shoes"}]  # fmt: skip
    assert refused == 2 and "need --identity" in refusal
