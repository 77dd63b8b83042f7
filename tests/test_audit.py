"""The audit trail end to end: a running App calls real echo servers, its periodic store sync
writes one row per call (on SQLite and on PostgreSQL), secrets never reach a row, and old rows
are pruned."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import jackfield.shell.persistence
from jackfield.app import App
from jackfield.core.limits import arguments_hash, redacted_json
from jackfield.core.status import utcnow
from jackfield.settings import Settings
from jackfield.shell.store import AuditRecord, Store
from tests.conftest import REPO
from tests.support.controller import until
from tests.support.store import (  # noqa: F401 (fixtures)
    dump,
    postgres_url_fixture,
    query,
    store_url_fixture,
)

SECRET = "planted-s3cret-value-8842"
OTHER_SECRET = "other-servers-token-5510"
SESSION = "job-room-42"


def server_yaml(name: str, extra: str = "") -> str:
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f'spec:\n  command: {sys.executable}\n  args: ["-m", "tests.servers.echo"]\n'
        f"  cwd: {REPO}\n{extra}"
    )


@pytest.fixture(autouse=True)
def quick_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Sync the store often and prune on every sync, so a test sees both within a second; the
    root logger, which App.run configures, is put back afterwards."""
    monkeypatch.setattr(jackfield.shell.persistence, "STATE_SYNC_INTERVAL", 0.05)
    monkeypatch.setattr(jackfield.shell.persistence, "AUDIT_PRUNE_INTERVAL", 0.0)
    monkeypatch.setenv("JF_PLANTED_SECRET", SECRET)
    monkeypatch.setenv("JF_OTHER_SECRET", OTHER_SECRET)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


@contextlib.asynccontextmanager
async def running_app(config_dir: Path, url: str, **servers: str) -> AsyncIterator[App]:
    for name, text in servers.items():
        (config_dir / "servers.d" / f"{name}.yaml").write_text(text)
    settings = Settings(config_dir=config_dir, database_url=url, hub_port=0, status_port=0)
    app = App(settings, agent=False)
    task = asyncio.create_task(app.run())
    try:
        await until(
            lambda: (
                task.done()
                or (
                    app.readiness()[0]
                    and all(app.manager.states().get(n) == "Ready" for n in servers)
                )
            ),
            timeout=60,
            what=f"app ready (now {app.readiness()}, {app.manager.states()})",
        )
        assert not task.done(), "the app stopped early"
        yield app
    finally:
        app.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def rows_in(url: str, count: int) -> list[AuditRecord]:
    """Wait until the store holds `count` audit rows (the app writes them in the background)."""
    store = await Store.open(url)
    try:
        found: list[AuditRecord] = []

        async def poll() -> None:
            nonlocal found
            while len(found := await store.audit()) < count:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), 30)
        return found
    finally:
        await store.close()


async def test_every_call_gets_a_row_and_no_secret_reaches_one(
    config_dir: Path, store_url: str
) -> None:
    env = "  env: {PLANTED: '${JF_PLANTED_SECRET}'}\n"
    servers = {
        "vault": server_yaml("vault", env + "  audit: full\n"),
        "meta": server_yaml("meta", env),
    }
    calls = [
        ("vault_echo", {"text": f"the password is {SECRET}"}),
        ("vault_env", {"name": "PLANTED"}),  # the result is the secret itself
        ("vault_fail", {"message": f"refused {SECRET}"}),
        ("meta_echo", {"text": SECRET}),
    ]
    async with running_app(config_dir, store_url, **servers) as app:
        for name, arguments in calls:
            await app.manager.call(name, arguments, session=SESSION)
        rows = await rows_in(store_url, len(calls))  # written while the app runs

    assert SECRET not in dump(store_url)
    by_tool = {(r.server, r.tool): r for r in rows}
    assert set(by_tool) == {
        ("vault", "echo"),
        ("vault", "env"),
        ("vault", "fail"),
        ("meta", "echo"),
    }
    for name, arguments in calls:
        server, tool = name.split("_")
        row = by_tool[(server, tool)]
        assert row.arguments_hash == arguments_hash(arguments)
        assert (row.agent_session, row.hub_session) == (SESSION, SESSION)
        assert row.bytes_in == len(json.dumps(arguments).encode()) and row.duration_ms > 0
        assert row.at > utcnow() - timedelta(minutes=5)

    echo, env_row, fail = (
        by_tool[("vault", "echo")],
        by_tool[("vault", "env")],
        by_tool[("vault", "fail")],
    )
    assert (echo.outcome, env_row.outcome, fail.outcome) == ("ok", "ok", "error")
    assert json.loads(echo.arguments or "") == {"text": "the password is ********"}
    assert echo.result == "the password is ********" and env_row.result == "********"
    assert fail.result is not None and "********" in fail.result
    assert echo.bytes_out == len(f"the password is {SECRET}")  # counted, never kept

    meta = by_tool[("meta", "echo")]
    assert meta.outcome == "ok" and meta.arguments is None and meta.result is None


async def test_refused_calls_are_audited_with_their_reason(
    config_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    limits = "  limits: {maxConcurrentCalls: 1, maxQueued: 0}\n"
    async with running_app(config_dir, url, busy=server_yaml("busy", limits)) as app:
        first = asyncio.create_task(app.manager.call("busy_slow", {"seconds": 1.5}))
        await until(lambda: app.manager.statuses()[0].extra["calls_in_flight"] == 1)
        await app.manager.call("busy_echo", {"text": "x"})
        await first
        rows = await rows_in(url, 2)
    assert sorted((r.tool, r.outcome) for r in rows) == [("echo", "rejected:busy"), ("slow", "ok")]


async def test_rows_older_than_the_retention_are_pruned(config_dir: Path, store_url: str) -> None:
    def record(age: timedelta, tool: str) -> AuditRecord:
        return AuditRecord(
            at=utcnow() - age, agent_session=None, hub_session=None, server="old", tool=tool,
            duration_ms=1.0, outcome="ok", bytes_in=2, bytes_out=2,
            arguments_hash=arguments_hash({}), arguments=None, result=None,
        )  # fmt: skip

    store = await Store.open(store_url)
    try:
        await store.record_calls(
            [record(timedelta(days=8), "stale"), record(timedelta(days=6), "kept")]
        )
    finally:
        await store.close()
    async with running_app(config_dir, store_url, live=server_yaml("live")) as app:
        await app.manager.call("live_echo", {"text": "hi"})
        await rows_in(store_url, 2)
        await until(
            lambda: (
                {r["tool"] for r in query(store_url, "SELECT tool FROM tool_calls")}
                == {"kept", "echo"}
            ),
            what="the 8-day-old row pruned (retention 7 days)",
        )


async def test_another_servers_secret_echoed_back_never_reaches_a_row(
    config_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    servers = {
        "vault": server_yaml("vault", "  audit: full\n"),
        "other": server_yaml("other", "  env: {TOKEN: '${JF_OTHER_SECRET}'}\n"),
    }
    async with running_app(config_dir, url, **servers) as app:
        await app.manager.call("vault_echo", {"text": OTHER_SECRET})
        await rows_in(url, 1)
    assert OTHER_SECRET not in dump(url)


async def test_a_secret_that_json_escapes_never_reaches_a_row(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    escaping = 'quo"ted-sécret-7731'
    monkeypatch.setenv("JF_PLANTED_SECRET", escaping)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    vault = server_yaml("vault", "  env: {PLANTED: '${JF_PLANTED_SECRET}'}\n  audit: full\n")
    async with running_app(config_dir, url, vault=vault) as app:
        await app.manager.call("vault_echo", {"text": escaping})
        (row,) = await rows_in(url, 1)
    assert json.loads(row.arguments or "") == {"text": "********"}
    assert row.result == "********"


def test_full_audit_json_is_redacted_inside_strings_and_numbers_before_encoding() -> None:
    secrets = ['quo"ted-sécret', "12345678"]

    def mask(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "********")
        return text

    value = {"a": 'x quo"ted-sécret y', "n": 12345678, 'quo"ted-sécret': [{"deep": 12}]}
    assert json.loads(redacted_json(value, mask)) == {
        "a": "x ******** y",
        "n": "********",
        "********": [{"deep": 12}],
    }
