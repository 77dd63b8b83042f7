"""The store on SQLite and PostgreSQL: schema, applied objects, history, live state, audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jackfield.core.desired import Snapshot
from jackfield.core.planning import plan
from jackfield.core.status import ServerStatus
from jackfield.shell.persistence import Persistence
from jackfield.shell.store import AuditRecord, PassRecord, Store, StoreUnavailable, metadata
from tests.support.config import load_dir, server_yaml, write
from tests.support.controller import running, settled, until
from tests.support.store import (  # noqa: F401 (fixtures)
    dump,
    postgres_url_fixture,
    query,
    store_fixture,
    store_url_fixture,
)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def snapshot_of(
    config_dir: Path, servers: dict[str, str], env: dict[str, str] | None = None
) -> Snapshot:
    for old in (config_dir / "servers.d").iterdir():
        old.unlink()
    write(config_dir, {f"servers.d/{name}.yaml": text for name, text in servers.items()})
    return load_dir(config_dir, env)


def a_pass(revision: str, at: datetime, instance_id: str = "local") -> PassRecord:
    return PassRecord(revision, None, at - timedelta(seconds=1), at, "applied", [], [], instance_id)


def a_call(server: str, at: datetime, **extra: object) -> AuditRecord:
    values: dict[str, object] = {
        "at": at,
        "agent_session": "room-1",
        "hub_session": "hub-1",
        "server": server,
        "tool": f"{server}_echo",
        "duration_ms": 12.5,
        "outcome": "ok",
        "bytes_in": 10,
        "bytes_out": 20,
        "arguments_hash": "sha256:abc",
        "arguments": None,
        "result": None,
        **extra,
    }
    return AuditRecord(**values)  # type: ignore[arg-type]


async def test_migrations_build_exactly_the_schema_the_code_declares(store: Store) -> None:
    with store.engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), metadata)
        views = sa.inspect(connection).get_view_names()
    assert diffs == []
    assert views == ["mcp_servers"]


async def test_opening_twice_migrates_once_and_keeps_the_data(store_url: str) -> None:
    first = await Store.open(store_url)
    await first.record_pass(a_pass("r1", T0))
    await first.close()
    again = await Store.open(store_url)
    try:
        assert [p.revision for p in await again.history()] == ["r1"]
    finally:
        await again.close()


async def test_create_update_delete_round_trip_and_generations(
    store: Store, config_dir: Path
) -> None:
    first = snapshot_of(
        config_dir, {"files": server_yaml("files"), "style": _prompt("style", "Be brief.")}
    )
    await store.apply(plan(first, await store.applied()), revision=first.revision)
    applied = await store.applied()
    assert set(applied) == {("Agent", "assistant"), ("MCPServer", "files"), ("Prompt", "style")}
    assert applied["MCPServer", "files"].generation == 1
    assert applied["MCPServer", "files"].source == "servers.d/files.yaml:1"
    assert plan(first, applied).empty

    body = "  command: python\n  tools: {include: ['read_*']}\n"
    second = snapshot_of(config_dir, {"files": server_yaml("files", body)})
    second_plan = plan(second, applied)
    assert [(c.action, c.name) for c in second_plan.effective] == [
        ("delete", "style"),
        ("update", "files"),
    ]
    await store.apply(second_plan, revision=second.revision)
    applied = await store.applied()
    assert set(applied) == {("Agent", "assistant"), ("MCPServer", "files")}
    assert applied["MCPServer", "files"].generation == 2
    assert applied["MCPServer", "files"].document["spec"]["tools"]["include"] == ["read_*"]
    assert applied["Agent", "assistant"].generation == 1
    assert plan(second, applied).empty
    (row,) = query(store_url_of(store), "SELECT * FROM objects WHERE name = 'files'")
    assert row["observed_generation"] == 2 and row["revision"] == second.revision


async def test_applying_the_same_create_twice_bumps_nothing(store: Store, config_dir: Path) -> None:
    """Replicas may plan the same snapshot against one database: the second write agrees."""
    snapshot = snapshot_of(config_dir, {"a": server_yaml("a")})
    creates = plan(snapshot, {})
    await store.apply(creates, revision=snapshot.revision)
    await store.apply(creates, revision=snapshot.revision)
    assert {a.generation for a in (await store.applied()).values()} == {1}


async def test_history_is_newest_first_and_limited(store: Store) -> None:
    for i in range(5):
        await store.record_pass(a_pass(f"r{i}", T0 + timedelta(minutes=i)))
    history = await store.history(limit=3)
    assert [p.revision for p in history] == ["r4", "r3", "r2"]
    assert history[0].finished_at == T0 + timedelta(minutes=4)
    assert history[0].finished_at.tzinfo is not None


async def test_two_instances_keep_their_own_state_and_share_history(store_url: str) -> None:
    one = await Store.open(store_url, instance_id="node-1")
    two = await Store.open(store_url, instance_id="node-2")
    try:
        await one.put_server_states([_status("a", "Ready"), _status("b", "Ready")])
        await two.put_server_states([_status("a", "Backoff")])
        await one.record_pass(a_pass("r1", T0, "node-1"))
        await two.record_pass(a_pass("r2", T0 + timedelta(seconds=1), "node-2"))

        await one.put_server_states([_status("a", "Degraded")])  # b went away on node-1 only
        rows = [(r["instance_id"], r["name"], r["state"]) for r in await two.server_states()]
        assert rows == [("node-1", "a", "Degraded"), ("node-2", "a", "Backoff")]
        assert [r["name"] for r in await one.server_states("node-2")] == ["a"]
        assert [(p.instance_id, p.revision) for p in await one.history()] == [
            ("node-2", "r2"),
            ("node-1", "r1"),
        ]
    finally:
        await one.close()
        await two.close()


async def test_server_state_rows_round_trip(store: Store) -> None:
    status = _status("a", "Ready", tools=("a_echo", "a_add"), capabilities={"tools": {}})
    await store.put_server_states([status])
    (row,) = await store.server_states()
    assert row["since"] == status.since and row["last_connected"] == status.last_connected
    assert row["tools"] == ["a_echo", "a_add"] and row["capabilities"] == {"tools": {}}
    assert row["restarts"] == 2 and row["last_error"] == "it broke once"
    await store.put_server_states([])
    assert await store.server_states() == []


async def test_deleting_a_server_drops_only_this_instances_state(
    store_url: str, config_dir: Path
) -> None:
    one = await Store.open(store_url, instance_id="node-1")
    two = await Store.open(store_url, instance_id="node-2")
    try:
        snapshot = snapshot_of(config_dir, {"a": server_yaml("a"), "b": server_yaml("b")})
        await one.apply(plan(snapshot, {}), revision=snapshot.revision)
        await one.put_server_states([_status("a", "Ready")])
        await two.put_server_states([_status("a", "Ready")])
        without_a = snapshot_of(config_dir, {"b": server_yaml("b")})
        await one.apply(plan(without_a, await one.applied()), revision=without_a.revision)
        assert [r["instance_id"] for r in await one.server_states()] == ["node-2"]
    finally:
        await one.close()
        await two.close()


async def test_the_mcp_servers_view_joins_spec_and_live_state(
    store: Store, config_dir: Path
) -> None:
    remote = server_yaml(
        "web", "  transport: http\n  url: https://mcp.example.com/mcp\n  description: Web\n"
    )
    snapshot = snapshot_of(config_dir, {"web": remote, "time": server_yaml("time")})
    await store.apply(plan(snapshot, {}), revision=snapshot.revision)
    status = _status("web", "Ready", tools=("web_search", "web_fetch"), capabilities={"tools": {}})
    await store.put_server_states([status])

    rows = {r["name"]: r for r in query(store_url_of(store), "SELECT * FROM mcp_servers")}
    assert set(rows) == {"web", "time"}
    web, time = rows["web"], rows["time"]
    assert (web["transport"], web["url_or_command"], web["description"]) == (
        "http",
        "https://mcp.example.com/mcp",
        "Web",
    )
    assert bool(web["enabled"]) is True and web["status"] == "Ready"
    assert web["instance_id"] == "local" and web["last_connected"] is not None
    assert _json(web["metadata"]) == {"capabilities": {"tools": {}}, "tool_count": 2}
    assert (time["transport"], time["url_or_command"], time["status"]) == ("stdio", "python", None)


async def test_a_secret_from_the_environment_is_stored_nowhere(
    store: Store, config_dir: Path
) -> None:
    secret = "sekrit-value-123"
    body = (
        "  transport: http\n  url: https://mcp.example.com/mcp\n"
        "  headers: {Authorization: 'Bearer ${TOKEN}'}\n"
    )
    snapshot = snapshot_of(config_dir, {"web": server_yaml("web", body)}, {"TOKEN": secret})
    changes = plan(snapshot, {})
    await store.apply(changes, revision=snapshot.revision)
    await store.record_pass(
        PassRecord(
            snapshot.revision,
            None,
            T0,
            T0,
            "applied",
            [{"action": c.action, "name": c.name} for c in changes.effective],
            [],
            "local",
        )
    )
    await store.put_server_states([_status("web", "Ready")])

    everything = dump(store_url_of(store))
    assert "Bearer ${TOKEN}" in everything
    assert secret not in everything
    if store.engine.dialect.name == "sqlite":
        await store.close()  # checkpoint the WAL, then look at the raw bytes too
        database = Path(str(store.engine.url.database))
        for path in database.parent.iterdir():
            assert secret.encode() not in path.read_bytes(), path


async def test_deleting_the_sqlite_file_loses_only_history(
    tmp_path: Path, config_dir: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'state.db'}"
    snapshot = snapshot_of(config_dir, {"a": server_yaml("a")})
    store = await Store.open(url)
    await store.apply(plan(snapshot, {}), revision=snapshot.revision)
    await store.record_pass(a_pass(snapshot.revision, T0))
    before = await store.applied()
    await store.close()
    for path in (tmp_path / "db").iterdir():
        path.unlink()

    store = await Store.open(url)
    try:
        assert await store.applied() == {} and await store.history() == []
        await store.apply(plan(snapshot, await store.applied()), revision=snapshot.revision)
        assert await store.applied() == before
    finally:
        await store.close()


async def test_audit_rows_round_trip_filter_and_prune(store: Store) -> None:
    calls = [
        a_call("a", T0, arguments='{"text": "hi"}', result="hi"),
        a_call("b", T0 + timedelta(seconds=1)),
        a_call("a", T0 + timedelta(seconds=2), outcome="error"),
    ]
    await store.record_calls(calls)
    await store.record_calls([])
    assert await store.audit() == calls[::-1]
    assert await store.audit(server="a") == [calls[2], calls[0]]
    assert await store.audit(since=T0 + timedelta(seconds=1)) == [calls[2], calls[1]]
    assert await store.audit(limit=1) == [calls[2]]
    assert await store.prune_audit(T0 + timedelta(seconds=2)) == 2
    assert await store.audit() == [calls[2]]


async def test_an_unreachable_database_raises_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await Store.open("postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=1")
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable):  # the parent "dir" is a file
        await Store.open(f"sqlite:///{tmp_path / 'file' / 'state.db'}")


async def test_a_closed_store_raises_store_unavailable(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    store = await Store.open(f"sqlite:///{database}")
    await store.ping()
    await store.close()
    database.unlink()
    database.mkdir()  # now it can never be opened as a database file
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.close()


async def test_the_reconciler_persists_each_change_once(tmp_path: Path, config_dir: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = await Store.open(url)
    persistence = Persistence(url)
    persistence.attach(store)
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    try:
        async with running(config_dir, store=persistence) as (rec, _, watcher):
            assert len(await store.history()) == 1
            write(config_dir, {"servers.d/b.yaml": server_yaml("b")})
            await settled(rec, lambda: rec.snapshot and "b" in rec.snapshot.servers, what="b")
            assert rec.snapshot is not None and persistence.problem is None
            assert plan(rec.snapshot, await store.applied()).empty
            (latest, _) = await store.history()
            assert latest.revision == rec.snapshot.revision and latest.outcome == "applied"
            assert latest.changes == [
                {"action": "create", "kind": "MCPServer", "name": "b", "fields": []}
            ]

            objects = query(str(store.engine.url), "SELECT * FROM objects ORDER BY name")
            events = watcher.events
            write(config_dir, {"servers.d/a.yaml": "# reviewed\n" + server_yaml("a")})
            await until(lambda: watcher.events > events, what="event seen")
            await settled(rec, lambda: True)
            assert (await rec.reconcile_once()).outcome == "noop"
            assert query(str(store.engine.url), "SELECT * FROM objects ORDER BY name") == objects
            assert len(await store.history()) == 2
    finally:
        await store.close()


def _prompt(name: str, text: str) -> str:
    return (
        f"apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {{name: {name}}}\n"
        f"spec:\n  text: {text}\n"
    )


def _status(
    name: str,
    state: str,
    tools: tuple[str, ...] = (),
    capabilities: dict[str, object] | None = None,
) -> ServerStatus:
    return ServerStatus(
        name=name,
        transport="http",
        state=state,  # type: ignore[arg-type]
        since=T0,
        tools=tools,
        restarts=2,
        last_error="it broke once",
        last_connected=T0 + timedelta(seconds=3),
        extra={"capabilities": capabilities} if capabilities is not None else {},
    )


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


def store_url_of(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)
