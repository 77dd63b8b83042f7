"""Per-caller context on the call path (issue #16), with a real ServerManager and the real
tests/servers/caller.py over stdio and streamable HTTP: identity-scoped sessions get their own
process or their own headers, hidden arguments are filled and overridden (and gone from the
schema), restricted servers refuse other callers, and a missing context value refuses the call
before anything is connected. Two callers throughout: alice of acme and bob of globex."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jackfield.core.caller_context import ANONYMOUS, CallerContext
from jackfield.core.connection import resolve
from jackfield.shell.metrics import Metrics
from jackfield.shell.servers import CallEvent, ServerManager, text_of
from jackfield.spec.models import MCPServerSpec
from tests.conftest import REPO
from tests.support.manager import checked_manager, ready, remote_spec, serving, stdio_spec

pytestmark = pytest.mark.timeout(120)

ALICE = CallerContext("alice-4821", "Alice", {"tenant": "acme-corp", "tier": "gold"}, "room-a")
BOB = CallerContext("bob-7733", "Bob", {"tenant": "globex-inc"}, "room-b")


def caller_spec(record: Path, *flags: str, **fields: Any) -> MCPServerSpec:
    """tests/servers/caller.py over stdio, recording to `record`."""
    args = ("-m", "tests.servers.caller", "--record", str(record), *flags)
    return stdio_spec(sys.executable, *args, cwd=str(REPO), **fields)


def recorded(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def called(record: Path, tool: str) -> list[dict[str, Any]]:
    return [r for r in recorded(record) if r["event"] == "called" and r["tool"] == tool]


@pytest.fixture
def events() -> list[CallEvent]:
    return []


@pytest.fixture
async def manager(events: list[CallEvent]) -> AsyncIterator[ServerManager]:
    async with checked_manager(observer=events.append, env={}) as manager:
        yield manager


async def test_caller_identity_scoped_stdio_sessions_each_get_their_own_env(
    manager: ServerManager, events: list[CallEvent], tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    env = {"USER_ID": "${caller.identity}", "TENANT": "${caller.attributes.tenant}"}
    spec = caller_spec(record, "--env", "USER_ID", "--env", "TENANT", scope="session", env=env)
    await ready(manager, "crm", spec)
    [shared] = recorded(record)  # the catalog's connection: no caller, so every value is ""
    assert shared["env"] == {"USER_ID": "", "TENANT": ""}

    a, b = await asyncio.gather(
        manager.call("crm_whoami", {}, session="hub-a", context=ALICE),
        manager.call("crm_whoami", {}, session="hub-b", context=BOB),
    )
    alice, bob = json.loads(text_of(a)), json.loads(text_of(b))
    assert alice["env"] == {"USER_ID": "alice-4821", "TENANT": "acme-corp"}
    assert bob["env"] == {"USER_ID": "bob-7733", "TENANT": "globex-inc"}
    assert len({alice["pid"], bob["pid"], shared["pid"]}) == 3
    seen = {r["pid"]: r["env"]["USER_ID"] for r in called(record, "whoami")}
    assert seen == {alice["pid"]: "alice-4821", bob["pid"]: "bob-7733"}  # as the servers saw it

    again = json.loads(text_of(await manager.call("crm_whoami", {}, session="hub-a",
                                                  context=ALICE)))  # fmt: skip
    assert again["pid"] == alice["pid"]  # the session keeps its connection
    [status] = manager.statuses()
    assert status.extra["session_processes"] == {"open": 2, "refused": 0}
    assert "alice-4821" not in repr(status) and "acme-corp" not in repr(status)
    assert {(e.caller, e.room, e.outcome) for e in events} == {
        ("alice-4821", "room-a", "ok"), ("bob-7733", "room-b", "ok")}  # fmt: skip
    event = next(e for e in events if e.caller == "alice-4821")
    assert {"alice-4821", "acme-corp"} <= event.secrets  # masked wherever the call is kept


async def test_caller_a_session_whose_caller_changes_gets_a_connection_for_the_new_one(
    manager: ServerManager, tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    spec = caller_spec(record, "--env", "USER_ID", scope="session",
                       env={"USER_ID": "${caller.identity}"})  # fmt: skip
    await ready(manager, "crm", spec)
    first = json.loads(text_of(await manager.call("crm_whoami", {}, session="s", context=ALICE)))
    # another attribute changed: the connection names only the identity, so it stays
    retiered = CallerContext("alice-4821", "Alice", {"tenant": "acme-corp", "tier": "silver"})
    same = json.loads(text_of(await manager.call("crm_whoami", {}, session="s", context=retiered)))
    assert same["pid"] == first["pid"]
    second = json.loads(text_of(await manager.call("crm_whoami", {}, session="s", context=BOB)))
    assert second["env"] == {"USER_ID": "bob-7733"} and second["pid"] != first["pid"]
    [status] = manager.statuses()
    assert status.extra["session_processes"]["open"] == 1  # alice's was closed


async def test_caller_identity_scoped_http_sessions_each_send_their_own_headers(
    manager: ServerManager,
) -> None:
    flags = ("--header", "X-Tenant", "--header", "Authorization")
    async with serving("http", *flags, module="tests.servers.caller") as (url, _):
        # the catalog's connection has no caller: "Bearer " alone is no valid header value
        headers = {"X-Tenant": "${caller.attributes.tenant}",
                   "Authorization": "Bearer ${caller.identity:-catalog}"}  # fmt: skip
        await ready(manager, "hr", remote_spec("http", url, scope="session", headers=headers))
        a, b = await asyncio.gather(
            manager.call("hr_whoami", {}, session="hub-a", context=ALICE),
            manager.call("hr_whoami", {}, session="hub-b", context=BOB),
        )
        assert json.loads(text_of(a))["headers"] == {
            "x-tenant": "acme-corp", "authorization": "Bearer alice-4821"}  # fmt: skip
        assert json.loads(text_of(b))["headers"] == {
            "x-tenant": "globex-inc", "authorization": "Bearer bob-7733"}  # fmt: skip
        await manager.close_session("hub-a")
        await manager.close_session("hub-b")


async def test_caller_a_shared_server_gets_the_hidden_user_id_whatever_the_llm_sends(
    manager: ServerManager, events: list[CallEvent], tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    tools = {"arguments": {"user_id": "${caller.identity}"}}
    await ready(manager, "crm", caller_spec(record, tools=tools))

    schema = manager.catalog.entries["crm_lookup"].input_schema
    assert "user_id" not in schema["properties"] and "query" in schema["properties"]
    assert "required" not in schema  # user_id was the only required argument
    assert "user_id" in manager.supervisor("crm").tools[1].input_schema["properties"]  # type: ignore[union-attr]

    tried = await manager.call("crm_lookup", {"user_id": "bob-7733", "query": "balance"},
                               session="hub-a", context=ALICE)  # fmt: skip
    plain = await manager.call("crm_lookup", {"query": "orders"}, session="hub-b", context=BOB)
    assert text_of(tried) == "user_id=alice-4821 query=balance"
    assert text_of(plain) == "user_id=bob-7733 query=orders"
    assert [r["arguments"]["user_id"] for r in called(record, "lookup")] == [
        "alice-4821", "bob-7733"]  # fmt: skip

    assert [e.overridden for e in events] == [("user_id",), ()]
    assert events[0].arguments == {"user_id": "alice-4821", "query": "balance"}  # as sent
    assert "alice-4821" in events[0].secrets
    assert "alice-4821" not in events[0].result_text  # masked like any secret
    [status] = manager.statuses()
    assert status.extra["hidden_arguments"] == {"names": ["user_id"], "overridden": 1}
    metrics = Metrics(servers=manager.statuses).render().decode()
    assert 'jackfield_hidden_argument_overrides_total{server="crm"} 1.0' in metrics


async def test_caller_hidden_arguments_keyed_by_tool_glob(
    manager: ServerManager, tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    arguments = {
        "tenant": "${caller.attributes.tenant}",  # every tool
        "look*": {"user_id": "${caller.identity}"},  # the tools the glob matches
        "orders": {"user_id": "orders-${caller.identity}"},  # an exact name wins over a glob
    }
    await ready(manager, "crm", caller_spec(record, tools={"arguments": arguments}))
    entries = manager.catalog.entries
    assert set(entries["crm_lookup"].input_schema["properties"]) == {"query"}
    assert set(entries["crm_orders"].input_schema["properties"]) == {"query"}
    assert entries["crm_whoami"].input_schema["properties"] == {}

    lookup = await manager.call("crm_lookup", {"query": "a"}, context=ALICE)
    orders = await manager.call("crm_orders", {"query": "b", "tenant": "x"}, context=BOB)
    assert text_of(lookup) == "user_id=alice-4821 query=a"
    assert text_of(orders) == "orders user_id=orders-bob-7733 tenant=globex-inc query=b"
    assert not (await manager.call("crm_whoami", {}, context=ALICE)).is_error
    [status] = manager.statuses()
    assert status.extra["hidden_arguments"] == {"names": ["tenant", "user_id"], "overridden": 1}


async def test_caller_an_edit_of_the_hidden_arguments_updates_the_schema_in_place(
    manager: ServerManager, tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    spec = caller_spec(record)
    await ready(manager, "crm", spec)
    assert "user_id" in manager.catalog.entries["crm_lookup"].input_schema["properties"]
    pid = manager.supervisor("crm").pid  # type: ignore[union-attr]
    hidden = spec.model_copy(update={"tools": spec.tools.model_copy(
        update={"arguments": {"user_id": "${caller.identity}"}})})  # fmt: skip
    await manager.put("crm", hidden, resolve(hidden, {}), reconnect=False)
    assert "user_id" not in manager.catalog.entries["crm_lookup"].input_schema["properties"]
    assert manager.supervisor("crm").pid == pid  # type: ignore[union-attr]
    result = await manager.call("crm_lookup", {"query": "q"}, context=BOB)
    assert text_of(result) == "user_id=bob-7733 query=q"


async def test_caller_a_restricted_server_serves_only_matching_callers(
    manager: ServerManager, events: list[CallEvent], tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    access = {"callers": [{"attributes": {"tenant": "acme-*"}}, {"identity": "admin-*"}]}
    await ready(manager, "vault", caller_spec(record, access=access))
    await ready(manager, "open", caller_spec(tmp_path / "open.jsonl"))

    assert manager.hidden_servers(BOB) == {"vault"}
    assert manager.hidden_servers(ANONYMOUS) == {"vault"}
    assert manager.hidden_servers(ALICE) == frozenset()
    assert manager.hidden_servers(CallerContext("admin-1")) == frozenset()

    refused = await manager.call("vault_lookup", {"user_id": "u", "query": "q"},
                                 session="hub-b", context=BOB)  # fmt: skip
    assert refused.is_error
    assert text_of(refused) == "The lookup tool is not available in this conversation."
    assert called(record, "lookup") == []  # nothing reached the server
    allowed = await manager.call("vault_lookup", {"user_id": "u", "query": "q"},
                                 session="hub-a", context=ALICE)  # fmt: skip
    assert text_of(allowed) == "user_id=u query=q"
    assert [(e.server, e.outcome, e.caller, e.room, e.session) for e in events] == [
        ("vault", "rejected:access", "bob-7733", "room-b", "hub-b"),
        ("vault", "ok", "alice-4821", "room-a", "hub-a"),
    ]


async def test_caller_a_missing_context_value_refuses_the_call_and_connects_nothing(
    manager: ServerManager, events: list[CallEvent], tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    env = {"TENANT": "${caller.attributes.tenant}"}
    await ready(manager, "crm", caller_spec(record, "--env", "TENANT", scope="session", env=env))
    hidden = {"arguments": {"user_id": "${caller.identity}"}}
    await ready(manager, "notes", caller_spec(tmp_path / "notes.jsonl", tools=hidden))
    no_tenant = CallerContext("carol-1234", room="room-c")

    refused = await manager.call("crm_whoami", {}, session="hub-c", context=no_tenant)
    assert refused.is_error and text_of(refused) == (
        "The whoami tool needs the caller's caller.attributes.tenant, which this conversation"
        " does not have."
    )
    anonymous = await manager.call("notes_lookup", {"query": "q"}, session="hub-c")
    assert text_of(anonymous) == (
        "The lookup tool needs the caller's caller.identity, which this conversation does not have."
    )
    assert [r["event"] for r in recorded(record)] == ["started"]  # only the catalog's process
    assert called(tmp_path / "notes.jsonl", "lookup") == []
    statuses = {s.name: s for s in manager.statuses()}
    assert statuses["crm"].extra["session_processes"] == {"open": 0, "refused": 0}
    assert [(e.server, e.outcome, e.caller) for e in events] == [
        ("crm", "rejected:context", "carol-1234"), ("notes", "rejected:context", None)]  # fmt: skip

    # a default stands in for a value the session lacks
    defaulted = {"TENANT": "${caller.attributes.tenant:-public}"}
    await ready(manager, "pub", caller_spec(tmp_path / "pub.jsonl", "--env", "TENANT",
                                            scope="session", env=defaulted))  # fmt: skip
    got = await manager.call("pub_whoami", {}, session="hub-c", context=no_tenant)
    assert json.loads(text_of(got))["env"] == {"TENANT": "public"}


async def test_caller_a_declined_confirmation_records_the_caller(
    manager: ServerManager, events: list[CallEvent], tmp_path: Path
) -> None:
    await ready(manager, "crm", caller_spec(tmp_path / "calls.jsonl"))
    assert manager.confirmation_refused("crm_lookup", "Look it up?", "no", session="hub-a",
                                        context=ALICE)  # fmt: skip
    [event] = events
    assert (event.outcome, event.caller, event.room) == ("declined", "alice-4821", "room-a")


async def test_caller_the_manager_env_fills_hidden_arguments_from_variables(
    tmp_path: Path,
) -> None:
    events: list[CallEvent] = []
    env = {"CRM_KEY": "crm-key-0f3a9b"}
    async with checked_manager(observer=events.append, env=env) as manager:
        tools = {"arguments": {"user_id": "${CRM_KEY}:${caller.identity}"}}
        await ready(manager, "crm", caller_spec(tmp_path / "calls.jsonl", tools=tools))
        got = await manager.call("crm_lookup", {"query": "q"}, context=BOB)
    assert text_of(got) == "user_id=crm-key-0f3a9b:bob-7733 query=q"
    assert {"crm-key-0f3a9b", "bob-7733"} <= events[0].secrets
