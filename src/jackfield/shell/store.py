"""The persistent store: applied objects, live server state, reconcile history, tool-call audit.

The files are the source of truth; the store is a record of what was applied and what happened,
so deleting the database loses only history. Documents are stored as `desired.normalised()`,
which holds the unexpanded `${VAR}` text: secret values never reach a row.

SQLite (one machine) and PostgreSQL (replicas sharing one database) go through the same sync
SQLAlchemy engine, each operation on a worker thread (`asyncio.to_thread`) behind one lock, which
keeps the event loop free and needs no async driver. Rows that describe live state are keyed by
instance id, so replicas never overwrite each other; objects and history are shared.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from jackfield.core.planning import Applied, Key, Plan
from jackfield.core.reconcile import PassRecord as PassRecord  # part of the store's API
from jackfield.core.status import ServerStatus, utcnow
from jackfield.errors import StoreUnavailable as StoreUnavailable  # what every method raises

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x6A61636B  # pg_advisory_xact_lock key ("jack"): replicas migrate one at a time


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite's DATETIME drops the offset, so it stores
    naive UTC and gets the zone back on read)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store takes aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


metadata = sa.MetaData()

objects = sa.Table(
    "objects",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("document", _json(), nullable=False),
    sa.Column("spec_hash", sa.String(80), nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("observed_generation", sa.Integer, nullable=False),
    sa.Column("source", sa.String(1024), nullable=False),
    sa.Column("revision", sa.String(80), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

server_state = sa.Table(
    "server_state",
    metadata,
    sa.Column("instance_id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("transport", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("since", UTCDateTime, nullable=False),
    sa.Column("last_connected", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("restarts", sa.Integer, nullable=False),
    sa.Column("tools", _json(), nullable=False),
    sa.Column("capabilities", _json(), nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

reconcile_passes = sa.Table(
    "reconcile_passes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(255), nullable=False),
    sa.Column("revision", sa.String(80), nullable=False),
    sa.Column("git_commit", sa.String(64), nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=False, index=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("changes", _json(), nullable=False),
    sa.Column("errors", _json(), nullable=False),
)

tool_calls = sa.Table(
    "tool_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("agent_session", sa.String(255), nullable=True),
    sa.Column("hub_session", sa.String(255), nullable=True),
    sa.Column("server", sa.String(63), nullable=False, index=True),
    sa.Column("tool", sa.String(255), nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("bytes_in", sa.Integer, nullable=False),
    sa.Column("bytes_out", sa.Integer, nullable=False),
    sa.Column("arguments_hash", sa.String(80), nullable=False),
    sa.Column("arguments", sa.Text, nullable=True),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("confirmation", sa.Text, nullable=True),
    sa.Column("caller", sa.String(255), nullable=True, index=True),
    sa.Column("room", sa.String(255), nullable=True),
)
MAX_CALLER = 255
"""Characters of a caller identity or room name kept (their columns' size)."""


@dataclass(frozen=True)
class AuditRecord:
    """One tool call. `arguments`/`result` are None unless the server's audit level is full.
    `confirmation` is JSON when the caller was asked first: {"answer": "yes" | "no" |
    "timeout"}, with the "question" too at audit level full (it repeats the arguments); an
    answer other than yes comes with outcome `declined` (no call was made). `caller` and
    `room` are the session's caller identity and room (None: the session had none), the only
    values of a caller context any row keeps."""

    at: datetime
    agent_session: str | None
    hub_session: str | None
    server: str
    tool: str
    duration_ms: float
    outcome: str
    bytes_in: int
    bytes_out: int
    arguments_hash: str
    arguments: str | None
    result: str | None
    confirmation: str | None = None
    caller: str | None = None
    room: str | None = None


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # isolation_level=None stops pysqlite from managing transactions itself (it would commit
    # before DDL); the "begin" listener then emits BEGIN, so migrations and apply() are atomic.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def sqlite_file(url: str | sa.URL) -> Path | None:
    """The database file of an SQLite URL, absolute (None for other backends, in-memory and
    `file:` URI databases, and for a URL that does not parse: `Store.open` reports that)."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else Path(database).absolute()


def create_engine(url: str) -> Engine:
    """An engine set up for the store: SQLite gets WAL, a busy timeout and real transactions."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = sqlite_file(parsed)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True)


def migrate(connection: Connection) -> None:
    """Upgrade the schema to head on this connection (in the caller's transaction)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    command.upgrade(config, "head")


def _upsert(
    connection: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    set_: Callable[[Any], dict[str, Any]],
    where: Callable[[Any], Any] | None = None,
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, in the dialect's own syntax (both have it)."""
    if not rows:
        return
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(list(rows))
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_=set_(statement.excluded),
        where=where(statement.excluded) if where is not None else None,
    )
    connection.execute(statement)


def _state_row(instance_id: str, status: ServerStatus, now: datetime) -> dict[str, Any]:
    capabilities = status.extra.get("capabilities")
    return {
        "instance_id": instance_id,
        "name": status.name,
        "transport": status.transport,
        "state": status.state,
        "since": status.since,
        "last_connected": status.last_connected,
        "last_error": status.last_error,
        "restarts": status.restarts,
        "tools": list(status.tools),
        "capabilities": capabilities,
        "updated_at": now,
    }


def _audit_row(record: AuditRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in AuditRecord.__dataclass_fields__}


class Store:
    """The database behind jackfield. Every method raises StoreUnavailable when it cannot work."""

    def __init__(self, engine: Engine, instance_id: str) -> None:
        """Use `Store.open`, which also migrates."""
        self.engine = engine
        self.instance_id = instance_id
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, url: str, *, instance_id: str = "local") -> Store:
        """Connect and upgrade the schema to head (creating the SQLite file and its dir).

        Raises:
            StoreUnavailable: the database cannot be reached, created or migrated.
        """

        def connect() -> Engine:
            engine: Engine | None = None
            try:
                engine = create_engine(url)
                with engine.begin() as connection:
                    migrate(connection)
            except (SQLAlchemyError, CommandError, OSError, ValueError) as e:
                if engine is not None:
                    engine.dispose()
                raise StoreUnavailable(f"cannot open the store: {e}") from e
            return engine

        return cls(await asyncio.to_thread(connect), instance_id)

    async def close(self) -> None:
        """Release every pooled connection (SQLite would warn about unclosed ones)."""
        await asyncio.to_thread(self.engine.dispose)

    async def _run(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction on a worker thread."""

        def job() -> T:
            with self._lock:
                try:
                    with self.engine.begin() as connection:
                        return work(connection)
                except SQLAlchemyError as e:
                    raise StoreUnavailable(f"store error: {e}") from e

        return await asyncio.to_thread(job)

    async def ping(self) -> None:
        """Raises: StoreUnavailable."""
        await self._run(lambda c: c.execute(sa.text("SELECT 1")).scalar_one())

    # --- objects ------------------------------------------------------------------------------

    async def applied(self) -> dict[Key, Applied]:
        """Every object as last applied, for planning against (shared by all instances)."""

        def work(connection: Connection) -> dict[Key, Applied]:
            rows = connection.execute(sa.select(objects)).mappings()
            return {
                (r["kind"], r["name"]): Applied(
                    r["kind"],
                    r["name"],
                    r["document"],
                    r["spec_hash"],
                    r["generation"],
                    r["source"],
                )
                for r in rows
            }

        return await self._run(work)

    async def apply(self, plan: Plan, *, revision: str) -> None:
        """Write a plan in one transaction.

        Creates and updates are upserts that bump the generation only when the hash differs, so
        replicas applying the same snapshot to one database agree instead of colliding. A delete
        removes the object and this instance's state row of it; other instances' rows are theirs.
        """
        now = utcnow()
        rows = [
            {
                "kind": c.kind,
                "name": c.name,
                "document": dict(c.document or {}),
                "spec_hash": c.spec_hash,
                "generation": 1,
                "observed_generation": 1,
                "source": c.source or "",
                "revision": revision,
                "updated_at": now,
            }
            for c in plan.effective
            if c.action in ("create", "update")
        ]
        deleted = [c.key for c in plan.effective if c.action == "delete"]

        def work(connection: Connection) -> None:
            for kind, name in deleted:
                connection.execute(
                    sa.delete(objects).where(objects.c.kind == kind, objects.c.name == name)
                )
                if kind == "MCPServer":
                    connection.execute(
                        sa.delete(server_state).where(
                            server_state.c.instance_id == self.instance_id,
                            server_state.c.name == name,
                        )
                    )
            _upsert(
                connection,
                objects,
                rows,
                ("kind", "name"),
                lambda new: {
                    "document": new.document,
                    "spec_hash": new.spec_hash,
                    "source": new.source,
                    "revision": new.revision,
                    "updated_at": new.updated_at,
                    "generation": objects.c.generation + 1,
                    "observed_generation": objects.c.generation + 1,
                },
                lambda new: objects.c.spec_hash != new.spec_hash,
            )

        await self._run(work)

    # --- reconcile history ----------------------------------------------------------------------

    async def record_pass(self, record: PassRecord) -> None:
        row = {f: getattr(record, f) for f in PassRecord.__dataclass_fields__}
        await self._run(lambda c: c.execute(sa.insert(reconcile_passes).values(row)))

    async def history(self, limit: int = 20) -> list[PassRecord]:
        """The last passes of every instance, newest first."""

        def work(connection: Connection) -> list[PassRecord]:
            query = (
                sa.select(reconcile_passes)
                .order_by(reconcile_passes.c.finished_at.desc(), reconcile_passes.c.id.desc())
                .limit(limit)
            )
            return [
                PassRecord(**{f: r[f] for f in PassRecord.__dataclass_fields__})
                for r in connection.execute(query).mappings()
            ]

        return await self._run(work)

    # --- live server state ----------------------------------------------------------------------

    async def put_server_states(self, states: Sequence[ServerStatus]) -> None:
        """Make this instance's rows exactly `states`; other instances' rows are untouched."""
        now = utcnow()
        rows = [_state_row(self.instance_id, s, now) for s in states]
        names = [s.name for s in states]

        def work(connection: Connection) -> None:
            connection.execute(
                sa.delete(server_state).where(
                    server_state.c.instance_id == self.instance_id,
                    server_state.c.name.not_in(names),
                )
            )
            _upsert(
                connection,
                server_state,
                rows,
                ("instance_id", "name"),
                lambda new: {
                    c.name: getattr(new, c.name)
                    for c in server_state.columns
                    if c.name not in ("instance_id", "name")
                },
            )

        await self._run(work)

    async def server_states(self, instance_id: str | None = None) -> list[dict[str, Any]]:
        """State rows of one instance, or of every instance when None, by (instance, name)."""

        def work(connection: Connection) -> list[dict[str, Any]]:
            query = sa.select(server_state).order_by(
                server_state.c.instance_id, server_state.c.name
            )
            if instance_id is not None:
                query = query.where(server_state.c.instance_id == instance_id)
            return [dict(r) for r in connection.execute(query).mappings()]

        return await self._run(work)

    # --- audit ----------------------------------------------------------------------------------

    async def record_calls(self, records: Sequence[AuditRecord]) -> None:
        rows = [_audit_row(r) for r in records]
        if rows:
            await self._run(lambda c: c.execute(sa.insert(tool_calls), rows))

    async def audit(
        self,
        *,
        server: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
        caller: str | None = None,
    ) -> list[AuditRecord]:
        """Tool calls, newest first, optionally of one server, of one caller identity (exact)
        and from `since` on."""

        def work(connection: Connection) -> list[AuditRecord]:
            query = (
                sa.select(tool_calls)
                .order_by(tool_calls.c.at.desc(), tool_calls.c.id.desc())
                .limit(limit)
            )
            if server is not None:
                query = query.where(tool_calls.c.server == server)
            if caller is not None:
                query = query.where(tool_calls.c.caller == caller)
            if since is not None:
                query = query.where(tool_calls.c.at >= since)
            return [_audit_record(r) for r in connection.execute(query).mappings()]

        return await self._run(work)

    async def prune_audit(self, older_than: datetime) -> int:
        """Delete tool calls before `older_than`; returns how many went."""

        def work(connection: Connection) -> int:
            result = connection.execute(sa.delete(tool_calls).where(tool_calls.c.at < older_than))
            return int(result.rowcount)

        return await self._run(work)


def _audit_record(row: Any) -> AuditRecord:
    return AuditRecord(**{f: row[f] for f in AuditRecord.__dataclass_fields__})
