"""The reconcile controller: level-triggered, single-flight, coalescing, snapshot-atomic.

A trigger (file event, resync timer, SIGHUP) only says "look again". Each pass rescans the whole
config dir, builds the desired snapshot, and plans it twice with the same pure planner: against
what is live in the manager (to start, update, stop servers) and against the store (to persist).
A snapshot with any error applies nothing: the last applied one keeps running and the status says
Stalled with every error. Runtime failures of a server stay that server's business.
What a pass does and the status it leaves are pure decisions (`core.reconcile`); this module
carries them out.

Secret files (`${file:/path}`, shell/secret_files.py) are read afresh by every pass. Whether
each can be read is part of what a pass looks at (a file that vanishes is a validation error);
what they hold is not part of the revision: a new value is a rotation. After each pass, every
server whose connection resolves to new values gets them (`LiveTarget.rotate`), and only it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from opentelemetry.util.types import AttributeValue

from jackfield.core.connection import Connection, resolve
from jackfield.core.desired import ParseCache, Snapshot
from jackfield.core.expansion import file_paths
from jackfield.core.loading import Budget
from jackfield.core.planning import Applied, Change, Key, Plan, plan
from jackfield.core.reconcile import (
    Apply,
    Done,
    Memory,
    PassRecord,
    Refuse,
    Skip,
    after_pass,
    decide,
    files_digest,
    mark_reconciling,
    remember,
)
from jackfield.core.status import Condition, ConfigStatus, Outcome, utcnow
from jackfield.errors import ConfigError, StoreUnavailable
from jackfield.shell import tracing
from jackfield.shell.secret_files import FileEnvironment, SecretFiles
from jackfield.shell.sources import Scan, git_commit, scan
from jackfield.spec.models import MCPServerSpec

log = logging.getLogger(__name__)

PARSE_BUDGET = 30.0
"""Seconds one pass may spend scanning and loading the files (off the event loop)."""


class LiveTarget(Protocol):
    """Where server changes are applied: the MCP manager (or an in-memory stand-in in tests)."""

    async def put(
        self, name: str, spec: MCPServerSpec, connection: Connection, *, reconnect: bool
    ) -> None: ...

    async def remove(self, name: str) -> None: ...

    async def rotate(self, name: str, connection: Connection) -> None:
        """The same spec with new secret values (a secret file changed)."""


class PassStore(Protocol):
    """Where passes are persisted: `shell.persistence.Persistence`, which keeps the store's
    health. Each coroutine raises StoreUnavailable."""

    @property
    def attached(self) -> bool: ...

    async def applied(self) -> dict[Key, Applied]: ...

    async def write(self, plan: Plan, *, revision: str, record: PassRecord | None) -> None: ...

    async def record_pass(self, record: PassRecord) -> None: ...


@dataclass(frozen=True)
class PassResult:
    outcome: Outcome
    revision: str
    changes: tuple[Change, ...] = ()
    errors: tuple[ConfigError, ...] = ()
    seconds: float = 0.0


def _pass_attributes(result: PassResult) -> dict[str, AttributeValue]:
    """What a pass's span says: counts, never the documents (their values may be secrets)."""
    actions = Counter(c.action for c in result.changes)
    return {
        "jackfield.reconcile.outcome": result.outcome,
        "jackfield.config.revision": result.revision,
        "jackfield.reconcile.changes": len(result.changes),
        "jackfield.reconcile.errors": len(result.errors),
        **{f"jackfield.reconcile.{action}": n for action, n in sorted(actions.items())},
    }


class _Latest(Mapping[str, str]):
    """A view of the newest pass's environment, for whoever holds on to `Reconciler.env`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.current = env

    def __getitem__(self, key: str) -> str:
        return self.current[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)


class Reconciler:
    """Owns the applied snapshot and the config status; `run()` is its only long-lived task."""

    def __init__(
        self,
        *,
        config_dir: Path,
        env: Mapping[str, str],
        target: LiveTarget,
        store: PassStore | None = None,
        instance_id: str = "local",
        allow_empty: bool = False,
        resync_interval: float = 60.0,
        parse_budget: float = PARSE_BUDGET,
    ) -> None:
        """`store`: where passes are persisted (None: nowhere). `parse_budget`: seconds a pass
        may spend reading and loading the files; past it the pass is refused."""
        self.config_dir = config_dir
        self.files = SecretFiles(config_dir, env)
        self.env = _Latest(self.files.environment())
        """The environment of the last pass (secret files as it read them): what hidden
        arguments and identity-scoped connections expand from."""
        self.target = target
        self.persistence = store
        self.instance_id = instance_id
        self.allow_empty = allow_empty
        self.resync_interval = resync_interval
        self.parse_budget = parse_budget
        self.memory = Memory()
        self.status = ConfigStatus(
            conditions=(
                Condition("Ready", "Unknown", "Progressing", "first reconcile pending", utcnow()),
            )
        )
        self.listeners: list[Callable[[Snapshot], None]] = []
        self.pass_listeners: list[Callable[[PassResult], None]] = []
        self._parsed: ParseCache = {}
        self._readable = ""
        """`FileEnvironment.digest()` of the last pass: which secret files could be read."""
        self._given: dict[str, Connection] = {}
        """The connection each live server was last given."""
        self._wake = asyncio.Event()
        self._first_pass = asyncio.Event()
        self.resyncs = 0
        self.busy = False

    @property
    def snapshot(self) -> Snapshot | None:
        """The applied snapshot."""
        return self.memory.snapshot

    # --- triggering -------------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for one more pass; triggers during a pass coalesce into one."""
        self._wake.set()

    def resync_store(self) -> None:
        """The store missed writes (it was away): write the applied snapshot again."""
        self.memory = replace(self.memory, store_synced=None)
        self.trigger()

    async def wait_first_pass(self) -> None:
        await self._first_pass.wait()

    async def run(self) -> None:
        """Pass after pass until cancelled: one on start, then on trigger or resync timeout."""
        self._wake.set()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.resync_interval)
            except TimeoutError:
                self.resyncs += 1
            self._wake.clear()
            self.busy = True
            try:
                await self.reconcile_once()
            except Exception:  # a bug in one pass must not stop the controller
                log.exception("reconcile pass crashed; the next trigger retries")
            finally:
                self.busy = False
                self._first_pass.set()

    @property
    def settled(self) -> bool:
        """No pass is running and none is pending."""
        return not self.busy and not self._wake.is_set()

    # --- one pass ---------------------------------------------------------------------------

    async def reconcile_once(self) -> PassResult:
        """Rescan, decide, apply live, persist, publish. Never raises for bad config. One
        span (`jackfield.reconcile`) with its outcome, revision and counts."""
        with tracing.span("jackfield.reconcile") as span:
            result = await self._pass()
            span.set_attributes(_pass_attributes(result))
            if result.errors:
                tracing.error(span, result.outcome, f"{len(result.errors)} config error(s)")
            return result

    async def _pass(self) -> PassResult:
        started, started_at = time.perf_counter(), utcnow()
        # the whole read (scan, parse, snapshot) runs in a thread, so a heavy config costs the
        # event loop nothing; passes are single-flight, so the parse cache has one user
        found, decision, retry, env = await asyncio.to_thread(self._look)
        if not isinstance(decision, Apply):
            self.memory = remember(self.memory, decision)
            # the applied snapshot keeps running, with whatever its secret files hold now
            await self._rotate(env)
            if retry:  # not the files' fault: the next trigger or resync tries them again
                self.memory = replace(self.memory, refused_digest=None)
            self.status = after_pass(self.status, decision, utcnow())
            if isinstance(decision, Skip):
                return PassResult("noop", decision.revision, seconds=time.perf_counter() - started)
            return await self._refused(decision, started, started_at)
        snapshot, live_plan = decision.snapshot, decision.live_plan
        self.status = mark_reconciling(self.status, snapshot.revision, utcnow())
        await self._apply_live(snapshot, live_plan, env)
        self.memory = remember(self.memory, decision)
        await self._rotate(env)
        assert found is not None  # an Apply comes with its scan
        commit = await asyncio.to_thread(git_commit, found.root)
        store_changes = await self._persist(snapshot, commit, started_at)
        changes = live_plan.effective or store_changes
        outcome: Literal["applied", "noop"] = "applied" if live_plan.effective else "noop"
        self.status = after_pass(
            self.status, Done(snapshot, commit, outcome, len(changes)), utcnow()
        )
        result = PassResult(outcome, snapshot.revision, changes, (), time.perf_counter() - started)
        for listener in self.listeners:
            listener(snapshot)
        self._notify(result)
        log.info(
            "reconciled %s: %s (%d change(s)) in %.1f ms",
            snapshot.revision[:19],
            outcome,
            len(changes),
            result.seconds * 1000,
        )
        return result

    def _look(self) -> tuple[Scan | None, Skip | Refuse | Apply, bool, FileEnvironment]:
        """Scan and decide within the time budget: (scan, decision, whether a refusal is worth
        retrying with the same files, the environment it saw). Runs in a worker thread; never
        raises: whatever goes wrong is a refused pass with the reason, so status never says
        Ready over a failure."""
        deadline = time.monotonic() + self.parse_budget
        env = self.files.environment()

        def expired() -> bool:
            return time.monotonic() > deadline

        try:
            readable = env.digest()
            if readable != self._readable:  # what loading a file says may differ now
                self._parsed.clear()
                self._readable = readable
            # one budget for the scan and the load: a scan out of time loads nothing
            budget = Budget(expired=expired, seconds=self.parse_budget)
            found = scan(self.config_dir, budget=budget)
            decision = decide(
                found.files, found.errors, env, self.memory, allow_empty=self.allow_empty,
                cache=self._parsed, budget=budget, inputs=readable,
            )  # fmt: skip
        except Exception as e:  # a bug must not leave the last status standing
            log.exception("reading the config failed")
            error = ConfigError(".", 1, 1, f"reading the config failed: {type(e).__name__}: {e}")
            digest = files_digest({}, [error])
            message = f"reading the config failed; revision {self._kept()} keeps running"
            return None, Refuse(digest, digest, "ValidationFailed", message, (error,)), True, env
        # every file the config text names (a disabled server's, a comment's too: watching
        # one more costs nothing), so the watch set also shrinks when a reference goes
        named = (
            p
            for f in found.files
            if b"${file:" in f.data  # a byte search spares decoding the files that have none
            for p in file_paths(f.data.decode("utf-8", "replace"))
        )
        self.files.settle(env, referenced=named)
        return found, decision, isinstance(decision, Refuse) and expired(), env

    def _kept(self) -> str:
        return self.memory.snapshot.revision if self.memory.snapshot is not None else "none"

    async def _apply_live(
        self, snapshot: Snapshot, live_plan: Plan, env: Mapping[str, str]
    ) -> None:
        """Deletes first, then updates, then creates (the plan is ordered that way)."""
        for change in live_plan.effective:
            if change.kind != "MCPServer":
                continue
            if change.action == "delete":
                await self.target.remove(change.name)
                self._given.pop(change.name, None)
            else:
                spec = snapshot.servers[change.name].document.spec
                connection = self._connection(spec, env)
                await self.target.put(change.name, spec, connection, reconnect=change.reconnect)
                if change.reconnect or change.name not in self._given:
                    self._given[change.name] = connection

    async def _rotate(self, env: Mapping[str, str]) -> None:
        """Give every server whose secret files changed its new values, and only those; from
        now on hidden arguments and identity-scoped connections expand from `env` too."""
        self.env.current = env
        snapshot = self.memory.snapshot
        if snapshot is None:
            return
        for name, given in list(self._given.items()):
            placed = snapshot.servers.get(name)
            if placed is None or not given.files:
                continue
            try:
                connection = self._connection(placed.document.spec, env)
            except KeyError:  # unreadable now: the pass says so, the server keeps its values
                continue
            if connection != given:
                log.info("server %s: a secret file changed; rotating its credentials", name)
                self._given[name] = connection
                await self.target.rotate(name, connection)

    def current_connection(self, name: str) -> Connection | None:
        """`name`'s connection resolved now, its secret files read again (after a 401: did a
        file rotate before the watcher said so?). None when nothing changed or it cannot be."""
        snapshot, given = self.memory.snapshot, self._given.get(name)
        placed = snapshot.servers.get(name) if snapshot is not None else None
        if placed is None or given is None or not given.files:
            return None
        try:
            connection = self._connection(placed.document.spec, self.files.environment())
        except KeyError:
            return None
        return None if connection == given else connection

    def _connection(self, spec: MCPServerSpec, env: Mapping[str, str]) -> Connection:
        """Expanded transport parameters; a relative `cwd` is relative to the config dir."""
        connection = resolve(spec, env)
        if connection.cwd is not None and not Path(connection.cwd).is_absolute():
            connection = replace(connection, cwd=str((self.config_dir / connection.cwd).resolve()))
        return connection

    async def _persist(
        self, snapshot: Snapshot, commit: str | None, started_at: datetime
    ) -> tuple[Change, ...]:
        """Plan the snapshot against the store and write it. An outage never blocks the live
        state: persistence keeps the reason for status, and the next pass catches up."""
        store = self.persistence
        if store is None or not store.attached:
            # nothing to catch up later: a store that opens asks for a resync
            self.memory = replace(self.memory, store_synced=snapshot.revision)
            return ()
        try:
            store_plan = plan(snapshot, await store.applied())
            record = None
            if not store_plan.empty or self.memory.store_synced is None:
                outcome: Outcome = "noop" if store_plan.empty else "applied"
                record = self._record(
                    snapshot.revision, commit, started_at, outcome, store_plan.effective
                )
            await store.write(store_plan, revision=snapshot.revision, record=record)
        except StoreUnavailable:
            return ()  # serving from memory
        self.memory = replace(self.memory, store_synced=snapshot.revision)
        return store_plan.effective

    def _record(
        self,
        revision: str,
        commit: str | None,
        started_at: datetime,
        outcome: Outcome,
        changes: Sequence[Change],
        errors: Sequence[ConfigError] = (),
    ) -> PassRecord:
        return PassRecord(
            revision=revision,
            git_commit=commit,
            started_at=started_at,
            finished_at=utcnow(),
            outcome=outcome,
            changes=[
                {"action": c.action, "kind": c.kind, "name": c.name, "fields": list(c.fields)}
                for c in changes
            ],
            errors=[e.as_dict() for e in errors],
            instance_id=self.instance_id,
        )

    async def _refused(self, refuse: Refuse, started: float, started_at: datetime) -> PassResult:
        """Log why, and record the refused pass (the status says it already)."""
        if refuse.reason == "ValidationFailed":
            kept = self.status.applied_revision or "none"
            log.warning("config invalid (%d error(s)); keeping %s", len(refuse.errors), kept)
            for e in refuse.errors:
                log.warning("%s", e)
        else:
            log.warning("%s", refuse.message)
        store = self.persistence
        if store is not None and store.attached:
            record = self._record(
                refuse.revision, None, started_at, refuse.outcome, (), refuse.errors
            )
            with contextlib.suppress(StoreUnavailable):  # persistence keeps the reason
                await store.record_pass(record)
        seconds = time.perf_counter() - started
        result = PassResult(refuse.outcome, refuse.revision, (), refuse.errors, seconds)
        self._notify(result)
        return result

    def _notify(self, result: PassResult) -> None:
        for listener in self.pass_listeners:
            try:
                listener(result)
            except Exception:
                log.exception("pass listener failed")
