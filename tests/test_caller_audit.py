"""The audit trail records who each call was for (issue #16), on SQLite and on PostgreSQL: a
real manager calls the real tests/servers/caller.py for two callers, its CallEvents become rows
through `persistence.call_record` and a real store, the rows hold the caller's identity and
room in their own columns and no other value of a caller context anywhere, and `jackfield audit
--caller ID` shows one caller's calls. Migration 0003 upgrades a 0002 database in place."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from jackfield.cli import main
from jackfield.core.caller_context import CallerContext
from jackfield.core.limits import arguments_hash
from jackfield.core.status import utcnow
from jackfield.shell.persistence import Persistence, call_record
from jackfield.shell.servers import CallEvent
from jackfield.shell.store import MIGRATIONS, AuditRecord, Store, create_engine
from tests.conftest import REPO
from tests.support.manager import checked_manager, ready, stdio_spec
from tests.support.store import (  # noqa: F401 (fixtures)
    dump,
    postgres_url_fixture,
    query,
    store_url_fixture,
)
from tests.test_audit_cli import jackfield_audit

pytestmark = pytest.mark.timeout(120)

ALICE = CallerContext("alice-4821", "Alice", {"tenant": "acme-corp"}, "room-a", '{"plan": "pro"}')
BOB = CallerContext("bob-7733", "Robert", {"tenant": "globex-inc"}, "room-b")
CONTEXT_ONLY = ("Alice", "acme-corp", "globex-inc", "Robert", "pro")
"""Values of the two contexts that no row may hold (the identities and rooms have columns)."""


def caller_spec(tmp_path: Path, *flags: str, **fields: Any) -> Any:
    args = ("-m", "tests.servers.caller", "--record", str(tmp_path / "calls.jsonl"), *flags)
    return stdio_spec(sys.executable, *args, cwd=str(REPO), audit="full", **fields)


async def test_caller_rows_hold_identity_and_room_and_no_other_context_value(
    store_url: str, tmp_path: Path
) -> None:
    events: list[CallEvent] = []
    async with checked_manager(observer=events.append, env={}) as manager:
        query_of = "${caller.attributes.tenant}/${job.metadata.plan}"
        hidden = {"arguments": {"user_id": "${caller.identity}", "query": query_of}}
        await ready(manager, "crm", caller_spec(tmp_path, tools=hidden))
        env = {"USER_ID": "${caller.identity}", "TENANT": "${caller.attributes.tenant}",
               "WHO": "${caller.name}"}  # fmt: skip
        flags = ("--env", "USER_ID", "--env", "TENANT", "--env", "WHO")
        await ready(manager, "hr", caller_spec(tmp_path, *flags, scope="session", env=env))
        access = {"callers": [{"attributes": {"tenant": "acme-*"}}]}
        await ready(manager, "vault", caller_spec(tmp_path, access=access))

        ok = await manager.call("crm_lookup", {"user_id": "mallory-1", "query": "x"},
                                session="job-alice", context=ALICE)  # fmt: skip
        assert "alice-4821" in ok.content[0].text  # type: ignore[union-attr]
        await manager.call("hr_whoami", {}, session="job-alice", context=ALICE)
        await manager.call("hr_whoami", {}, session="hub-b", context=BOB)
        refused = await manager.call("vault_whoami", {}, session="hub-b", context=BOB)
        assert refused.is_error
        await manager.call("crm_lookup", {}, session="hub-c", context=CallerContext("x" * 300))

    persistence = Persistence(store_url)
    persistence.attach(await Store.open(store_url))
    for event in events:
        persistence.audit(call_record(event, full=True))
    await persistence.close()  # writes what is queued
    store = await Store.open(store_url)
    try:
        rows = await store.audit()
        alices = await store.audit(caller="alice-4821")
    finally:
        await store.close()

    assert sorted((r.server, r.tool, r.outcome, r.caller, r.room) for r in rows) == [
        ("crm", "lookup", "ok", "alice-4821", "room-a"),
        ("crm", "lookup", "rejected:context", "x" * 255, None),  # clipped to the column
        ("hr", "whoami", "ok", "alice-4821", "room-a"),
        ("hr", "whoami", "ok", "bob-7733", "room-b"),
        ("vault", "whoami", "rejected:access", "bob-7733", "room-b"),
    ]
    assert {(r.server, r.agent_session) for r in alices} == {("crm", "job-alice"),
                                                             ("hr", "job-alice")}  # fmt: skip
    crm = next(r for r in alices if r.server == "crm")
    assert json.loads(crm.arguments or "") == {"user_id": "********", "query": "********/pro"}
    assert crm.result == "user_id=******** query=********/pro"  # "pro" is too short to mask

    stored = dump(store_url)
    for value in CONTEXT_ONLY[:-1]:
        assert value not in stored, value
    for row in query(store_url, "SELECT * FROM tool_calls"):
        rest = repr({k: v for k, v in row.items() if k not in ("caller", "room")})
        for value in ("alice-4821", "bob-7733", "room-a", "room-b"):
            assert value not in rest, value


def _seed(url: str) -> None:
    def row(minutes: float, tool: str, caller: str | None, room: str | None) -> AuditRecord:
        return AuditRecord(
            at=utcnow() - timedelta(minutes=minutes), agent_session=None, hub_session="hub-1",
            server="crm", tool=tool, duration_ms=3.0, outcome="ok", bytes_in=2, bytes_out=5,
            arguments_hash=arguments_hash({}), arguments=None, result=None, caller=caller,
            room=room,
        )  # fmt: skip

    async def write() -> None:
        store = await Store.open(url)
        try:
            await store.record_calls([
                row(30, "lookup", "alice-4821", "room-a"),
                row(20, "orders", "bob-7733", "room-b"),
                row(10, "whoami", "alice-4821", None),
                row(5, "status", None, None),
            ])  # fmt: skip
        finally:
            await store.close()

    asyncio.run(write())


def test_caller_the_audit_command_filters_by_caller_and_shows_caller_and_room(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(store_url)
    done = jackfield_audit("--database-url", store_url, "--caller", "alice-4821")
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    assert header.split() == ["TIME", "SERVER", "TOOL", "OUTCOME", "MS", "IN", "OUT", "CALLER",
                              "ROOM", "SESSION"]  # fmt: skip
    assert [line.split()[2:] for line in lines] == [
        ["whoami", "ok", "3", "2", "5", "alice-4821", "-", "hub-1"],
        ["lookup", "ok", "3", "2", "5", "alice-4821", "room-a", "hub-1"],
    ]

    def rows(*args: str) -> list[tuple[str, str | None, str | None]]:
        assert main(["audit", "--database-url", store_url, "--json", *args]) == 0
        return [(r["tool"], r["caller"], r["room"]) for r in json.loads(capsys.readouterr().out)]

    assert rows("--caller", "bob-7733") == [("orders", "bob-7733", "room-b")]
    assert rows("--caller", "alice") == []  # exact, not a prefix
    assert rows("--caller", "alice-4821", "--since", "15m") == [("whoami", "alice-4821", None)]
    assert [tool for tool, _, _ in rows()] == ["status", "whoami", "orders", "lookup"]


def test_caller_a_table_without_callers_keeps_its_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    _seed(url)
    done = jackfield_audit("--database-url", url, "--server", "crm", "--since", "7m")
    header, line = done.stdout.splitlines()
    assert header.split() == ["TIME", "SERVER", "TOOL", "OUTCOME", "MS", "IN", "OUT", "SESSION"]
    assert line.split()[2:] == ["status", "ok", "3", "2", "5", "hub-1"]


def test_caller_migration_0003_adds_the_columns_to_a_0002_database(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
            connection.execute(sa.text(
                "INSERT INTO tool_calls (at, server, tool, duration_ms, outcome, bytes_in,"
                " bytes_out, arguments_hash) VALUES (:at, 'old', 'echo', 1, 'ok', 1, 1, 'h')"
            ), {"at": utcnow().replace(tzinfo=None)})  # fmt: skip
        with engine.connect() as connection:
            before = {c["name"] for c in sa.inspect(connection).get_columns("tool_calls")}
        assert "caller" not in before
    finally:
        engine.dispose()

    async def reopen() -> list[AuditRecord]:
        store = await Store.open(store_url)  # migrates to head
        try:
            await store.record_calls([AuditRecord(
                at=utcnow(), agent_session=None, hub_session=None, server="new", tool="echo",
                duration_ms=1.0, outcome="ok", bytes_in=1, bytes_out=1, arguments_hash="h",
                arguments=None, result=None, caller="alice-4821", room="room-a",
            )])  # fmt: skip
            return await store.audit()
        finally:
            await store.close()

    new, old = asyncio.run(reopen())
    assert (old.server, old.caller, old.room) == ("old", None, None)
    assert (new.server, new.caller, new.room) == ("new", "alice-4821", "room-a")
    engine = sa.create_engine(store_url)
    try:
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("tool_calls")}
    finally:
        engine.dispose()
    assert "ix_tool_calls_caller" in indexes


def test_caller_the_audit_help_names_the_caller_filter() -> None:
    done = jackfield_audit("--help")
    assert done.returncode == 0 and "--caller" in done.stdout
