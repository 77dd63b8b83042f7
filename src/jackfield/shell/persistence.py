"""The one owner of persistence: the store or its absence, its health, and what waits for it.

jackfield serves without its database (the files are the source of truth). `Persistence` holds
the open `Store` (or None), why the store is not OK (`problem`: None means OK), the tool-call
audit rows not yet written, and the store's one long-lived task, `run()`: open it (retrying with
backoff), then every STATE_SYNC_INTERVAL write live server state and audit rows, prune, check
that an SQLite file is still the one opened, and reopen after an outage.

The reconciler persists its passes through the same object (`applied`, `write`, `record_pass`).
Every failure comes out as one `StoreUnavailable` and is remembered here until a write succeeds
again; when the store comes back, `catch_up` listeners are told it missed writes.

`call_record` makes a finished call's audit row: masked by the call's own secrets (its
connection's, and the values filled into its hidden arguments) and every registered one; of
its caller context it keeps the identity and the room, in their own columns, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

from jackfield.core.limits import arguments_hash
from jackfield.core.planning import Applied, Key, Plan
from jackfield.core.reconcile import PassRecord
from jackfield.core.status import ServerStatus, utcnow
from jackfield.errors import StoreUnavailable
from jackfield.shell.redaction import audit_arguments, audit_result, redact
from jackfield.shell.servers import CallEvent
from jackfield.shell.store import MAX_CALLER, AuditRecord, Store, sqlite_file

log = logging.getLogger(__name__)

T = TypeVar("T")

STATE_SYNC_INTERVAL = 2.0
"""Seconds between writes of live server state and audit rows to the store."""
AUDIT_PRUNE_INTERVAL = 3600.0
AUDIT_KEPT = 10_000
"""Audit rows kept for a retry when a write fails (the newest; older ones are dropped)."""
OPEN_BACKOFF = (1.0, 30.0)
"""First and longest wait between attempts to open the store (doubling)."""


def database_password(url: str) -> list[str]:
    """The password in a database URL, to register as a secret (none: empty)."""
    with contextlib.suppress(Exception):  # an unparsable URL fails later, with its own message
        password = make_url(url).password
        return [password] if password else []
    return []


def call_record(event: CallEvent, *, full: bool) -> AuditRecord:
    """The audit row of one call; `full`: its server's audit level is full (arguments and
    result kept, masked and cut at AUDIT_MAX_CHARS)."""
    session = event.session
    return AuditRecord(
        at=utcnow(),
        agent_session=session if (session or "").startswith("job-") else None,
        hub_session=session,
        server=event.server,
        tool=event.tool,
        duration_ms=event.seconds * 1000,
        outcome=event.outcome,
        bytes_in=event.bytes_in,
        bytes_out=event.bytes_out,
        arguments_hash=arguments_hash(event.arguments),
        arguments=audit_arguments(event.arguments, event.secrets) if full else None,
        result=audit_result(event.result_text, event.secrets) if full else None,
        confirmation=_confirmation(event.confirmation, event.secrets, full=full),
        caller=None if event.caller is None else event.caller[:MAX_CALLER],
        room=None if event.room is None else event.room[:MAX_CALLER],
    )


def _confirmation(
    asked: Mapping[str, str] | None, secrets: frozenset[str], *, full: bool
) -> str | None:
    """The row's record of a confirmation: the question and the answer. At `audit: full` the
    question as it was asked, masked like a result; below, the question without its arguments
    (they are not kept at that level)."""
    if asked is None:
        return None
    question = asked.get("question") if full else asked.get("asked")
    if full and question is not None:
        question = audit_result(question, secrets)
    record = {"question": question, "answer": asked.get("answer")}
    return json.dumps({k: v for k, v in record.items() if v})


class Persistence:
    """The store of one jackfield process, present or not, and its health."""

    def __init__(
        self,
        url: str,
        *,
        instance_id: str = "local",
        audit_retention: timedelta = timedelta(days=7),
        servers: Callable[[], Sequence[ServerStatus]] = lambda: (),
    ) -> None:
        """`servers` gives the live server states to write (the manager's `statuses`)."""
        self.url = url
        self.instance_id = instance_id
        self.audit_retention = audit_retention
        self.servers = servers
        self.store: Store | None = None
        self.problem: str | None = "not opened yet"
        """Why the store is not OK; None when it is open and its last write succeeded."""
        self.catch_up: list[Callable[[], None]] = []
        """Called when the store comes back (opened, or reachable again): it missed writes."""
        self._file = sqlite_file(url)
        self._file_id: tuple[int, int] | None = None
        self._audit: list[AuditRecord] = []
        self._synced_states: object = None
        self._pruned_at = -AUDIT_PRUNE_INTERVAL

    # --- health -------------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        return self.store is not None and self.problem is None

    def status(self) -> dict[str, str | None]:
        """The `store` part of /status."""
        return {"state": "Ok" if self.ok else "Degraded", "message": self.problem}

    def readiness(self) -> tuple[bool, str]:
        """The store's part of /readyz."""
        # The probes are public: the store's own words (host, port, driver text) stay in /status.
        return (True, "ok") if self.ok else (False, "store unavailable (details in /status)")

    def _failed(self, error: Exception) -> None:
        problem = redact(f"{type(error).__name__}: {error}")
        if problem != self.problem:
            log.warning("store unavailable, serving from memory: %s", problem)
        self.problem = problem

    # --- what the reconciler writes -------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """A store is open. While none is, nothing is written and nothing is missed: opening
        one tells `catch_up`."""
        return self.store is not None

    async def applied(self) -> dict[Key, Applied]:
        """Every object as the store last applied it.

        Raises:
            StoreUnavailable: no store is open, or it failed (`problem` says why).
        """
        return await self._call(lambda store: store.applied())

    async def write(self, plan: Plan, *, revision: str, record: PassRecord | None) -> None:
        """Write a snapshot's store plan, then its pass (when given). Once both are written the
        store holds the applied snapshot, so it is OK again.

        Raises:
            StoreUnavailable: no store is open, or it failed (`problem` says why).
        """
        if self.store is None:
            raise StoreUnavailable(f"no store: {self.problem}")
        if not plan.empty:
            await self._call(lambda store: store.apply(plan, revision=revision))
        if record is not None:
            await self._call(lambda store: store.record_pass(record))
        self.problem = None

    async def record_pass(self, record: PassRecord) -> None:
        """Record a pass that applied nothing (refused files).

        Raises:
            StoreUnavailable: no store is open, or it failed (`problem` says why).
        """
        await self._call(lambda store: store.record_pass(record))

    async def _call(self, work: Callable[[Store], Awaitable[T]]) -> T:
        store = self.store
        if store is None:
            raise StoreUnavailable(f"no store: {self.problem}")
        try:
            return await work(store)
        except Exception as e:  # one error class for the caller, whatever the store raised
            self._failed(e)
            if isinstance(e, StoreUnavailable):
                raise
            raise StoreUnavailable(f"store error: {e}") from e

    # --- what the process writes ----------------------------------------------------------------

    def audit(self, record: AuditRecord) -> None:
        """Queue a tool call; the next sync writes it (and keeps it for a retry if that fails)."""
        self._audit.append(record)

    # --- the store's one owner task -------------------------------------------------------------

    async def run(self) -> None:
        """Open the store (retrying with backoff; jackfield serves from memory meanwhile), then
        every STATE_SYNC_INTERVAL write live server state and audit rows, prune, and check that
        the database is still there and reachable."""
        first, longest = OPEN_BACKOFF
        delay = first
        while True:
            if self.store is None:
                if not await self._open():
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, longest)
                    continue
                delay = first
            await asyncio.sleep(STATE_SYNC_INTERVAL)
            if self._file_replaced():
                await self._drop(
                    f"the database file {self._file} was deleted or replaced; recreating"
                    " it (history is lost, the objects are rebuilt from the files)"
                )
                continue
            await self._sync()

    async def close(self) -> None:
        """Write the audit rows still queued (best effort) and close the store."""
        store, self.store = self.store, None
        if store is None:
            return
        self.problem = "closed"
        with contextlib.suppress(Exception):
            if self._audit:
                await store.record_calls(self._audit)
                self._audit = []
        await store.close()

    def attach(self, store: Store) -> None:
        """Use an open store from now on; `catch_up` listeners write what it missed."""
        self.store, self.problem = store, None
        self._file_id = _file_id(self._file)
        self._synced_states = None
        for listener in self.catch_up:
            listener()

    async def _open(self) -> bool:
        try:
            store = await Store.open(self.url, instance_id=self.instance_id)
        except Exception as e:
            self.problem = f"{type(e).__name__}: {e}"
            log.warning("store unavailable (%s); serving from memory", self.problem)
            return False
        self.attach(store)
        return True

    async def _drop(self, why: str) -> None:
        """Forget the store (the next loop turn opens it again)."""
        log.warning("%s", why)
        store, self.store = self.store, None
        self.problem = why
        if store is not None:
            # closing first lets SQLite remove the old -wal/-shm files before a new file appears
            with contextlib.suppress(Exception):
                await store.close()

    def _file_replaced(self) -> bool:
        """An SQLite file deleted under an open connection takes writes silently; notice it."""
        return self._file is not None and _file_id(self._file) != self._file_id

    async def _sync(self) -> None:
        """Live server state (only when it changed), audit rows, retention, reachability."""
        store = self.store
        if store is None:
            return
        loop = asyncio.get_running_loop()
        states = self.servers()
        key = [(s.name, s.state, s.restarts, s.tools, s.last_error) for s in states]
        batch, self._audit = self._audit, []
        recovering = self.problem is not None
        try:
            wrote = False
            # while the store is in error the state write doubles as the probe: a real write,
            # since SELECT 1 succeeds on an SQLite file another process holds locked
            if key != self._synced_states or recovering:
                await store.put_server_states(states)
                self._synced_states, wrote = key, True
            if batch:
                await store.record_calls(batch)
                wrote = True
            if loop.time() - self._pruned_at > AUDIT_PRUNE_INTERVAL:
                await store.prune_audit(utcnow() - self.audit_retention)
                self._pruned_at, wrote = loop.time(), True
            if not wrote:
                await store.ping()  # notices a database that went away while nothing changed
        except Exception as e:
            self._audit = batch[-AUDIT_KEPT:] + self._audit
            self._synced_states = None
            self._failed(e)
            return
        if recovering:
            log.info("store reachable again; catching it up")
            self.problem = None
            for listener in self.catch_up:
                listener()


def _file_id(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
