"""The reconcile controller: level-triggered, single-flight, coalescing, snapshot-atomic.

A trigger (file event, resync timer, SIGHUP) only says "look again". Each pass rescans the whole
config dir, builds the desired snapshot, and plans it twice with the same pure planner: against
what is live in the manager (to start, update, stop servers) and against the store (to persist).
A snapshot with any error applies nothing: the last applied one keeps running and the status says
Stalled with every error. Runtime failures of a server stay that server's business.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from jackfield.core.connection import Connection, resolve
from jackfield.core.desired import ParseCache, Snapshot, build_snapshot
from jackfield.core.loading import SourceFile
from jackfield.core.planning import Applied, Change, Key, Plan, plan
from jackfield.core.status import (
    Condition,
    ConfigStatus,
    HistoryEntry,
    Outcome,
    drop_condition,
    set_condition,
    utcnow,
)
from jackfield.errors import ConfigError, ConfigInvalid
from jackfield.shell.sources import git_commit, scan
from jackfield.spec.models import MCPServerSpec

log = logging.getLogger(__name__)

HISTORY_SHOWN = 5


class LiveTarget(Protocol):
    """Where server changes are applied: the MCP manager (or an in-memory stand-in in tests)."""

    async def put(
        self, name: str, spec: MCPServerSpec, connection: Connection, *, reconnect: bool
    ) -> None: ...

    async def remove(self, name: str) -> None: ...


class StateStore(Protocol):
    """The slice of `shell.store.Store` the controller uses."""

    async def applied(self) -> dict[Key, Applied]: ...

    async def apply(self, plan: Plan, *, revision: str) -> None: ...

    async def record_pass(self, record: Any) -> None: ...


@dataclass(frozen=True)
class PassResult:
    outcome: Outcome
    revision: str
    changes: tuple[Change, ...] = ()
    errors: tuple[ConfigError, ...] = ()
    seconds: float = 0.0


def files_digest(files: Sequence[SourceFile], errors: Sequence[ConfigError]) -> str:
    """Identifies the raw input of a pass, so an unchanged broken config is not retried."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f.path.encode() + b"\0" + hashlib.sha256(f.data).digest())
    for e in errors:
        h.update(str(e).encode())
    return "sha256:" + h.hexdigest()


def applied_view(snapshot: Snapshot) -> dict[Key, Applied]:
    """A snapshot seen as 'what is applied', for planning the next one against it."""
    from jackfield.core.desired import normalised

    return {
        (p.kind, p.name): Applied(
            p.kind, p.name, normalised(p.document), p.spec_hash, 1, f"{p.path}:{p.line}"
        )
        for p in snapshot.objects()
    }


def _warnings(snapshot: Snapshot) -> tuple[dict[str, Any], ...]:
    return tuple(w.as_dict() for w in snapshot.warnings)


class Reconciler:
    """Owns the applied snapshot and the config status; `run()` is its only long-lived task."""

    def __init__(
        self,
        *,
        config_dir: Path,
        env: Mapping[str, str],
        target: LiveTarget,
        store: StateStore | None,
        instance_id: str = "local",
        allow_empty: bool = False,
        resync_interval: float = 60.0,
        make_record: Callable[..., Any] | None = None,
    ) -> None:
        self.config_dir = config_dir
        self.env = env
        self.target = target
        self.store = store
        self.instance_id = instance_id
        self.allow_empty = allow_empty
        self.resync_interval = resync_interval
        self.make_record = make_record
        self.snapshot: Snapshot | None = None
        self.status = ConfigStatus(
            conditions=(
                Condition("Ready", "Unknown", "Progressing", "first reconcile pending", utcnow()),
            )
        )
        self.store_error: str | None = None
        self.listeners: list[Callable[[Snapshot], None]] = []
        self.pass_listeners: list[Callable[[PassResult], None]] = []
        self._live: dict[Key, Applied] = {}
        self._store_synced: str | None = None
        self._refused_digest: str | None = None
        self._applied_digest: str | None = None
        self._parsed: ParseCache = {}
        self._wake = asyncio.Event()
        self._first_pass = asyncio.Event()
        self.resyncs = 0
        self.busy = False

    # --- triggering -------------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for one more pass; triggers during a pass coalesce into one."""
        self._wake.set()

    def attach_store(self, store: StateStore) -> None:
        """Persist from now on; the next pass writes the applied snapshot to it."""
        self.store = store
        self.resync_store()

    def resync_store(self) -> None:
        """The store missed writes (it was away): write the applied snapshot again."""
        self._store_synced = None
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
        """Rescan, validate, plan, apply, publish. Never raises for bad config."""
        started = time.perf_counter()
        started_at = utcnow()
        found = await asyncio.to_thread(scan, self.config_dir)
        digest = files_digest(found.files, found.errors)
        if digest == self._refused_digest:
            return PassResult("noop", digest)  # the same refused files: no retry loop
        self._refused_digest = None
        applied = self.snapshot
        if (
            digest == self._applied_digest
            and applied is not None
            and self._store_synced == applied.revision
        ):
            # the very bytes already applied: skip parsing and planning (a resync of 500 files
            # costs a scan and a hash, not a load)
            self._recover_after_failure(applied)
            return PassResult("noop", applied.revision, seconds=time.perf_counter() - started)
        try:
            snapshot = build_snapshot(found.files, self.env, found.errors, cache=self._parsed)
        except ConfigInvalid as invalid:
            self._refused_digest = digest
            return await self._failed(digest, invalid.errors, started, started_at)

        if snapshot.revision == self.status.applied_revision and self._store_synced == (
            snapshot.revision
        ):
            self._recover_after_failure(snapshot)
            self._applied_digest = digest
            # the same revision, but a default written out (or removed) changes the warnings
            self.status = replace(self.status, warnings=_warnings(snapshot))
            return PassResult("noop", snapshot.revision, seconds=time.perf_counter() - started)

        live_plan = plan(snapshot, self._live)
        if self._is_empty_replacement(snapshot):
            self._refused_digest = digest
            return await self._rejected(snapshot, started, started_at)

        self._set_reconciling(snapshot.revision)
        await self._apply_live(snapshot, live_plan)
        self._live = applied_view(snapshot)
        self.snapshot = snapshot
        self._applied_digest = digest
        commit = await asyncio.to_thread(git_commit, found.root)
        store_changes = await self._sync_store(snapshot, commit, started_at)
        changes = live_plan.effective or store_changes
        outcome: Outcome = "applied" if live_plan.effective else "noop"
        seconds = time.perf_counter() - started
        self._succeeded(snapshot, commit, outcome, len(changes))
        result = PassResult(outcome, snapshot.revision, changes, (), seconds)
        for listener in self.listeners:
            listener(snapshot)
        self._notify(result)
        log.info(
            "reconciled %s: %s (%d change(s)) in %.1f ms",
            snapshot.revision[:19],
            outcome,
            len(changes),
            seconds * 1000,
        )
        return result

    async def _apply_live(self, snapshot: Snapshot, live_plan: Plan) -> None:
        """Deletes first, then updates, then creates (the plan is ordered that way)."""
        for change in live_plan.effective:
            if change.kind != "MCPServer":
                continue
            if change.action == "delete":
                await self.target.remove(change.name)
            else:
                spec = snapshot.servers[change.name].document.spec
                await self.target.put(
                    change.name, spec, self._connection(spec), reconnect=change.reconnect
                )

    def _connection(self, spec: MCPServerSpec) -> Connection:
        """Expanded transport parameters; a relative `cwd` is relative to the config dir."""
        connection = resolve(spec, self.env)
        if connection.cwd is not None and not Path(connection.cwd).is_absolute():
            connection = replace(connection, cwd=str((self.config_dir / connection.cwd).resolve()))
        return connection

    async def _sync_store(
        self, snapshot: Snapshot, commit: str | None, started_at: Any
    ) -> tuple[Change, ...]:
        """Persist the snapshot; a store outage degrades status but never blocks the live state."""
        if self.store is None:
            self._store_synced = snapshot.revision
            return ()
        try:
            store_plan = plan(snapshot, await self.store.applied())
            if not store_plan.empty:
                await self.store.apply(store_plan, revision=snapshot.revision)
            if not store_plan.empty or self._store_synced is None:
                await self._record(
                    snapshot.revision,
                    commit,
                    started_at,
                    "applied" if not store_plan.empty else "noop",
                    store_plan.effective,
                    (),
                )
        except Exception as e:  # the store is optional for serving: keep going from memory
            self.store_error = f"{type(e).__name__}: {e}"
            log.warning("store unavailable, serving from memory: %s", self.store_error)
            return ()
        self.store_error = None
        self._store_synced = snapshot.revision
        return store_plan.effective

    async def _record(
        self,
        revision: str,
        commit: str | None,
        started_at: Any,
        outcome: Outcome,
        changes: Sequence[Change],
        errors: Sequence[ConfigError],
    ) -> None:
        if self.store is None or self.make_record is None:
            return
        record = self.make_record(
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
        await self.store.record_pass(record)

    def _is_empty_replacement(self, snapshot: Snapshot) -> bool:
        had_servers = any(kind == "MCPServer" for kind, _ in self._live)
        return not snapshot.servers and had_servers and not self.allow_empty

    # --- status -----------------------------------------------------------------------------

    def _history(self, entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
        return (entry, *self.status.history)[:HISTORY_SHOWN]

    def _set_reconciling(self, revision: str) -> None:
        conditions = set_condition(
            self.status.conditions,
            Condition("Reconciling", "True", "Progressing", f"applying {revision}", utcnow()),
        )
        self.status = replace(self.status, conditions=conditions, attempted_revision=revision)

    def _succeeded(self, snapshot: Snapshot, commit: str | None, outcome: Outcome, n: int) -> None:
        now = utcnow()
        conditions = set_condition(
            self.status.conditions,
            Condition(
                "Ready",
                "True",
                "ReconciliationSucceeded",
                f"applied revision {snapshot.revision}",
                now,
            ),
        )
        conditions = drop_condition(drop_condition(conditions, "Reconciling"), "Stalled")
        new_revision = snapshot.revision != self.status.applied_revision
        self.status = replace(
            self.status,
            applied_revision=snapshot.revision,
            attempted_revision=snapshot.revision,
            git_commit=commit,
            applied_at=now if new_revision else self.status.applied_at,
            observed_generation=self.status.observed_generation + (1 if new_revision else 0),
            conditions=conditions,
            errors=(),
            warnings=_warnings(snapshot),
            history=self._history(HistoryEntry(snapshot.revision, now, outcome, n, commit))
            if new_revision or outcome == "applied"
            else self.status.history,
        )

    def _recover_after_failure(self, snapshot: Snapshot) -> None:
        """The files went back to the applied snapshot: clear Stalled without a new pass."""
        if self.status.attempted_revision != snapshot.revision or self.status.errors:
            now = utcnow()
            conditions = set_condition(
                self.status.conditions,
                Condition(
                    "Ready",
                    "True",
                    "ReconciliationSucceeded",
                    f"applied revision {snapshot.revision}",
                    now,
                ),
            )
            self.status = replace(
                self.status,
                attempted_revision=snapshot.revision,
                errors=(),
                conditions=drop_condition(drop_condition(conditions, "Stalled"), "Reconciling"),
                history=self._history(HistoryEntry(snapshot.revision, now, "noop", 0)),
            )

    async def _failed(
        self,
        digest: str,
        errors: Sequence[ConfigError],
        started: float,
        started_at: Any,
    ) -> PassResult:
        now = utcnow()
        kept = self.status.applied_revision or "none"
        message = f"{len(errors)} error(s) in the config; revision {kept} keeps running"
        conditions = set_condition(
            self.status.conditions, Condition("Ready", "False", "ValidationFailed", message, now)
        )
        conditions = set_condition(
            drop_condition(conditions, "Reconciling"),
            Condition("Stalled", "True", "ValidationFailed", message, now),
        )
        self.status = replace(
            self.status,
            attempted_revision=digest,
            observed_generation=self.status.observed_generation + 1,
            conditions=conditions,
            errors=tuple(e.as_dict() for e in errors),
            history=self._history(HistoryEntry(digest, now, "failed", 0, errors=len(errors))),
        )
        log.warning("config invalid (%d error(s)); keeping %s", len(errors), kept)
        for e in errors:
            log.warning("%s", e)
        try:
            await self._record(digest, None, started_at, "failed", (), errors)
        except Exception as e:
            self.store_error = f"{type(e).__name__}: {e}"
        result = PassResult("failed", digest, (), tuple(errors), time.perf_counter() - started)
        self._notify(result)
        return result

    async def _rejected(self, snapshot: Snapshot, started: float, started_at: Any) -> PassResult:
        now = utcnow()
        message = (
            "the new snapshot declares no MCPServer but servers are running; refusing to delete"
            " them all (set JACKFIELD_ALLOW_EMPTY=true to allow)"
        )
        conditions = set_condition(
            self.status.conditions,
            Condition("Ready", "False", "EmptySnapshotRejected", message, now),
        )
        conditions = set_condition(
            drop_condition(conditions, "Reconciling"),
            Condition("Stalled", "True", "EmptySnapshotRejected", message, now),
        )
        self.status = replace(
            self.status,
            attempted_revision=snapshot.revision,
            observed_generation=self.status.observed_generation + 1,
            conditions=conditions,
            errors=(),
            history=self._history(HistoryEntry(snapshot.revision, now, "rejected", 0)),
        )
        log.warning("%s", message)
        try:
            await self._record(snapshot.revision, None, started_at, "rejected", (), ())
        except Exception as e:
            self.store_error = f"{type(e).__name__}: {e}"
        result = PassResult("rejected", snapshot.revision, seconds=time.perf_counter() - started)
        self._notify(result)
        return result

    def _notify(self, result: PassResult) -> None:
        for listener in self.pass_listeners:
            try:
                listener(result)
            except Exception:
                log.exception("pass listener failed")
