"""Fault scenarios for the store under the real `jackfield run`: the database locked, deleted,
at an old schema, or restarted. The live state never waits for the store; status says Degraded
while it is away and the store catches up once it is back. Marked `faults`.

The PostgreSQL scenario runs its own throwaway cluster (never the shared one on 5432, which
other tests use), so it can be stopped and started at will.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from jackfield.shell.store import MIGRATIONS, create_engine
from tests.conftest import IN_CI
from tests.support.process import (
    assert_clean_exit,
    echo_yaml,
    free_port,
    hub_client,
    jackfield_run,
    plain_config,
    poll,
    text_of,
    write_config,
)

pytestmark = pytest.mark.faults


def rows(url: str, query: str) -> list[dict[str, Any]]:
    """Read the store the way an operator would, from outside the process."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(r) for r in connection.execute(sa.text(query)).mappings()]
    finally:
        engine.dispose()


def store_state(status: dict[str, Any]) -> str:
    return str(status["store"]["state"])


def server_names(url: str) -> set[str]:
    return {r["name"] for r in rows(url, "SELECT name FROM objects WHERE kind = 'MCPServer'")}


def revisions(url: str) -> list[str]:
    """The revisions in the reconcile history, oldest first."""
    return [r["revision"] for r in rows(url, "SELECT revision FROM reconcile_passes ORDER BY id")]


def stored(url: str, names: set[str], database: Path | None = None) -> bool:
    """The store holds exactly these servers (False while the file or its schema is missing:
    reading a missing SQLite file would create it)."""
    if database is not None and not database.exists():
        return False
    try:
        return server_names(url) == names
    except sa.exc.OperationalError:
        return False


# --------------------------------------------------------------------------- SQLite


def test_a_locked_sqlite_database_degrades_the_store_then_catches_up(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"a": echo_yaml("a", "--tools", "echo")})
    with jackfield_run(tmp_path / "run", config) as jackfield:
        jackfield.wait_ready()
        jackfield.servers_ready("a")
        url = jackfield.database_url
        lock = sqlite3.connect(tmp_path / "run" / "state.db", isolation_level=None, timeout=10)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            write_config(config, {"servers.d/b.yaml": echo_yaml("b", "--tools", "echo")})
            jackfield.servers_ready("a", "b")  # the live state does not wait for the store
            degraded = jackfield.until(
                lambda s: store_state(s) == "Degraded", what="store Degraded", timeout=30
            )
            assert "locked" in degraded["store"]["message"], degraded["store"]
            watch_until = time.monotonic() + 4.0  # and stays so while the lock is held
            while time.monotonic() < watch_until:
                assert store_state(jackfield.status()) == "Degraded"
                time.sleep(0.2)
            code, reason = jackfield.readyz()
            assert code == 503 and "store unavailable" in reason, reason
            for _ in range(5):  # the status server answers at once meanwhile
                started = time.monotonic()
                assert jackfield.get("/status")[0] == 200
                assert time.monotonic() - started < 1.0
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        caught_up = jackfield.until(lambda s: store_state(s) == "Ok", what="store Ok again")
        jackfield.wait_ready()
        revision = caught_up["config"]["applied_revision"]
        poll(lambda: stored(url, {"a", "b"}), what="b's row written once the lock is gone")
        poll(lambda: revision in revisions(url), what="the catch-up pass in the history")
        outcomes = rows(url, f"SELECT outcome FROM reconcile_passes WHERE revision = '{revision}'")
        assert outcomes == [{"outcome": "applied"}]
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)


def test_a_deleted_database_is_recreated_and_rebuilt_from_the_files(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"a": echo_yaml("a", "--tools", "echo")})
    database = tmp_path / "run" / "state.db"
    with jackfield_run(tmp_path / "run", config) as jackfield:
        jackfield.wait_ready()
        url = jackfield.database_url
        poll(lambda: stored(url, {"a"}, database), what="the first rows")

        database.unlink()  # at runtime: the open connection would keep writing to a ghost
        poll(lambda: stored(url, {"a"}, database), what="the database recreated and rebuilt")
        status = jackfield.until(lambda s: store_state(s) == "Ok" and s["ready"], what="Ok")
        revision = status["config"]["applied_revision"]
        poll(lambda: revisions(url) == [revision], what="a history row in the new file")
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)

    for path in tmp_path.joinpath("run").glob("state.db*"):
        path.unlink()  # while stopped, this time with its -wal and -shm
    with jackfield_run(tmp_path / "run", config) as jackfield:
        jackfield.wait_ready()
        poll(lambda: stored(url, {"a"}, database), what="the database recreated on start")
        poll(lambda: revisions(url) == [revision], what="history starting again")
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)


def _revisions() -> tuple[str, list[str]]:
    """(head, every revision a database can be at before head, oldest first: 'base' first)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    assert head is not None
    chain = [r.revision for r in reversed(list(script.walk_revisions()))]
    return head, ["base", *chain[:-1]]


HEAD, OLDER = _revisions()


@pytest.mark.parametrize("revision", OLDER)
def test_a_database_at_an_older_schema_is_upgraded_on_start(tmp_path: Path, revision: str) -> None:
    database = tmp_path / "run" / "state.db"
    url = f"sqlite:///{database}"
    engine = create_engine(url)  # what an older jackfield left behind
    try:
        with engine.begin() as connection:
            if revision != "base":
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                connection.execute(
                    sa.text(
                        "INSERT INTO reconcile_passes (instance_id, revision, started_at,"
                        " finished_at, outcome, changes, errors) VALUES ('old', 'sha256:old',"
                        " '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'applied', '[]', '[]')"
                    )
                )
            else:
                connection.execute(sa.text("CREATE TABLE unrelated (x INTEGER)"))
    finally:
        engine.dispose()

    config_dir = plain_config(tmp_path / "config", {"a": echo_yaml("a", "--tools", "echo")})
    with jackfield_run(tmp_path / "run", config_dir) as jackfield:
        jackfield.wait_ready()
        assert rows(url, "SELECT version_num FROM alembic_version") == [{"version_num": HEAD}]
        poll(lambda: stored(url, {"a"}), what="the objects written")
        history = {r["revision"] for r in rows(url, "SELECT revision FROM reconcile_passes")}
        assert ("sha256:old" in history) == (revision != "base"), "old history is kept"
        if revision == "base":
            assert rows(url, "SELECT count(*) AS n FROM unrelated") == [{"n": 0}], "left alone"
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)


# --------------------------------------------------------------------------- PostgreSQL


def test_sigterm_while_the_database_never_answers_still_exits_promptly(tmp_path: Path) -> None:
    # a listener nobody accepts on: the kernel completes the TCP handshake, then silence, so
    # a connect without connect_timeout waits forever on a worker thread
    with socket.create_server(("127.0.0.1", 0), backlog=64) as blackhole:
        url = f"postgresql+psycopg://jackfield@127.0.0.1:{blackhole.getsockname()[1]}/jackfield"
        config = plain_config(tmp_path / "config", {"a": echo_yaml("a", "--tools", "echo")})
        with jackfield_run(tmp_path / "run", config, database_url=url) as jackfield:
            status = jackfield.servers_ready("a")  # served from memory meanwhile
            assert store_state(status) == "Degraded"
            code, reason = jackfield.readyz()
            assert code == 503 and "store unavailable" in reason, reason
            processes = jackfield.children()
            sent = time.monotonic()
            exit_code = jackfield.stop(timeout=30.0)
            assert time.monotonic() - sent < 20.0, "bounded by the thread grace, not the connect"
            assert_clean_exit(jackfield, exit_code, processes)


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own in a temp dir, run as an unprivileged user."""

    bin: Path
    base: Path
    user: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=3"

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        prefix = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            prefix = ["setpriv", f"--reuid={self.user}", f"--regid={self._gid}", "--clear-groups"]
        got = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert got.returncode == 0, f"{argv}: {got.stdout}\n{got.stderr}\n{self.log()}"

    @property
    def _gid(self) -> int:
        return pwd.getpwnam(self.user).pw_gid

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "server.log").read_text()[-3000:]
        return ""

    def init(self) -> None:
        data = self.base / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.base / "server.log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-l", log,
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", mode, "-w",
                  "-t", "60", "stop")  # fmt: skip


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        reason = "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)"
        if IN_CI:
            pytest.fail(f"{reason}: CI images install them (postgresql package)")
        pytest.skip(reason)
    user = "postgres" if _user_exists("postgres") else "nobody"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        reason = "running as root needs setpriv (util-linux) to start PostgreSQL"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="jackfield-pg-"))  # not under root's 0700 pytest dir
    cluster = PrivatePostgres(Path(found[-1]).parent, base, user, free_port())
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_it_starts_without_its_database_and_opens_it_once_it_is_up(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    private_postgres.stop("fast")
    url = private_postgres.url
    config = plain_config(tmp_path / "config", {"a": echo_yaml("a", "--tools", "echo")})
    with jackfield_run(tmp_path / "run", config, database_url=url) as jackfield:
        status = jackfield.servers_ready("a")  # the files are the source of truth
        assert store_state(status) == "Degraded"
        assert "connection" in (status["store"]["message"] or "").lower(), status["store"]
        assert "store unavailable" in jackfield.readyz()[1]

        private_postgres.start()
        jackfield.wait_ready()
        poll(lambda: stored(url, {"a"}), what="the objects written once the store opened")
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)


async def test_postgres_restarted_mid_run_keeps_serving_and_catches_up(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    url = private_postgres.url
    config = plain_config(tmp_path / "config", {"a": echo_yaml("a", "--tools", "echo")})
    with jackfield_run(tmp_path / "run", config, database_url=url) as jackfield:
        await asyncio.to_thread(jackfield.wait_ready)
        await asyncio.to_thread(jackfield.servers_ready, "a")
        assert server_names(url) == {"a"}

        await asyncio.to_thread(private_postgres.stop, "fast")
        write_config(config, {"servers.d/b.yaml": echo_yaml("b", "--tools", "echo")})
        await asyncio.to_thread(jackfield.servers_ready, "a", "b")
        degraded = await asyncio.to_thread(
            jackfield.until, lambda s: store_state(s) == "Degraded", "store Degraded"
        )
        down_revision = degraded["config"]["applied_revision"]
        code, reason = jackfield.readyz()
        assert code == 503 and "store unavailable" in reason, reason
        async with hub_client(jackfield.hub_url) as client:  # tools still work
            result = await client.call_tool("b_echo", {"text": "while the database is down"})
            assert text_of(result) == ["while the database is down"]

        await asyncio.to_thread(private_postgres.start)
        await asyncio.to_thread(
            jackfield.until, lambda s: store_state(s) == "Ok" and s["ready"], "store Ok again"
        )
        await asyncio.to_thread(poll, lambda: stored(url, {"a", "b"}), what="b's row written")
        await asyncio.to_thread(
            poll, lambda: down_revision in revisions(url), what="the pass made while it was down"
        )
        calls = await asyncio.to_thread(
            poll,
            lambda: rows(url, "SELECT server, tool FROM tool_calls"),
            what="the audit row of the call made while the database was down",
        )
        assert {"server": "b", "tool": "echo"} in calls, calls
        processes = jackfield.children()
        code = await asyncio.to_thread(jackfield.stop)
        assert_clean_exit(jackfield, code, processes)
