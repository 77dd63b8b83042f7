"""One reconcile pass as two pure decisions: what to do with the files, and the status it leaves.

`decide` looks at the files of a pass and at what the controller remembers (`Memory`) and says
`Skip`, `Refuse` or `Apply`; the reconciler carries out an `Apply` (live, then the store) and
calls it `Done`. `after_pass` turns the previous status and that outcome into the next status,
with kstatus conditions: `Ready` is always present, `Reconciling` and `Stalled` only while true.
`mark_reconciling` is the mark set while an `Apply` runs (Flux's mark-then-finalize).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from jackfield.core.desired import ParseCache, Snapshot, build_snapshot, normalised
from jackfield.core.loading import Budget, SourceFile
from jackfield.core.planning import Applied, Key, Plan, plan
from jackfield.core.status import (
    Condition,
    ConfigStatus,
    HistoryEntry,
    Outcome,
    drop_condition,
    set_condition,
)
from jackfield.errors import ConfigError, ConfigInvalid

HISTORY_SHOWN = 5

EMPTY_REJECTED = (
    "the new snapshot declares no MCPServer but servers are running; refusing to delete"
    " them all (set JACKFIELD_ALLOW_EMPTY=true to allow)"
)


@dataclass(frozen=True)
class PassRecord:
    """One reconcile pass as the store keeps it (`reconcile_passes`)."""

    revision: str
    git_commit: str | None
    started_at: datetime
    finished_at: datetime
    outcome: str
    changes: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    instance_id: str


@dataclass(frozen=True)
class Memory:
    """What the controller carries from one pass to the next."""

    snapshot: Snapshot | None = None
    """The applied snapshot."""
    live: Mapping[Key, Applied] = field(default_factory=dict)
    """`applied_view(snapshot)`: what is live, to plan the next snapshot against."""
    applied_digest: str | None = None
    """The raw digest of files known to give the applied revision."""
    refused_digest: str | None = None
    """The raw digest of the files last refused: the same files are not retried."""
    store_synced: str | None = None
    """The revision the store holds (or needed no write of: no store was open)."""


@dataclass(frozen=True)
class Skip:
    """Nothing to apply: the refused files again (`refused`), or files that give the applied
    revision while the store holds it."""

    revision: str
    digest: str
    refused: bool = False
    warnings: tuple[ConfigError, ...] | None = None
    """Of the rebuilt snapshot (a default written out changes them, not the revision); None
    when the very bytes were applied, so nothing was rebuilt."""


@dataclass(frozen=True)
class Refuse:
    """The files give no snapshot to apply: invalid, or an empty one replacing servers."""

    revision: str
    """The raw digest of invalid files; the snapshot's revision of a rejected one."""
    digest: str
    reason: Literal["ValidationFailed", "EmptySnapshotRejected"]
    message: str
    errors: tuple[ConfigError, ...] = ()

    @property
    def outcome(self) -> Outcome:
        return "failed" if self.reason == "ValidationFailed" else "rejected"


@dataclass(frozen=True)
class Apply:
    """A snapshot to apply, and its plan against what is live."""

    snapshot: Snapshot
    digest: str
    live_plan: Plan

    @property
    def revision(self) -> str:
        return self.snapshot.revision


@dataclass(frozen=True)
class Done:
    """An `Apply` carried out: `outcome` is "noop" when nothing live changed."""

    snapshot: Snapshot
    git_commit: str | None
    outcome: Literal["applied", "noop"]
    changes: int


def file_digests(files: Sequence[SourceFile]) -> dict[str, bytes]:
    """The sha256 of each file's bytes, by path: the one hash of a file in a pass."""
    return {f.path: hashlib.sha256(f.data).digest() for f in files}


def files_digest(
    digests: Mapping[str, bytes], errors: Sequence[ConfigError], inputs: str = ""
) -> str:
    """Identifies the raw input of a pass, so an unchanged broken config is not retried.
    `inputs`: what else decides what the files load to (which secret files can be read)."""
    h = hashlib.sha256(inputs.encode())
    for path in sorted(digests):
        h.update(path.encode() + b"\0" + digests[path])
    for e in errors:
        h.update(str(e).encode())
    return "sha256:" + h.hexdigest()


def applied_view(snapshot: Snapshot) -> dict[Key, Applied]:
    """A snapshot seen as 'what is applied', for planning the next one against it."""
    return {
        (p.kind, p.name): Applied(
            p.kind, p.name, normalised(p.document), p.spec_hash, 1, f"{p.path}:{p.line}"
        )
        for p in snapshot.objects()
    }


def decide(
    files: Sequence[SourceFile],
    read_errors: Sequence[ConfigError],
    env: Mapping[str, str],
    memory: Memory,
    *,
    allow_empty: bool = False,
    cache: ParseCache | None = None,
    budget: Budget | None = None,
    inputs: str = "",
) -> Skip | Refuse | Apply:
    """What one pass does with these files. `cache` and `budget` are `build_snapshot`'s;
    `inputs` is `files_digest`'s."""
    digests = file_digests(files)
    digest = files_digest(digests, read_errors, inputs)
    if digest == memory.refused_digest:
        return Skip(digest, digest, refused=True)
    applied = memory.snapshot
    synced = applied is not None and memory.store_synced == applied.revision
    if applied is not None and synced and digest == memory.applied_digest:
        # the very bytes already applied: no parsing, no planning (a resync of 500 files costs
        # a scan and a hash, not a load)
        return Skip(applied.revision, digest)
    try:
        snapshot = build_snapshot(
            files, env, read_errors, cache=cache, digests=digests, budget=budget
        )
    except ConfigInvalid as invalid:
        kept = applied.revision if applied is not None else "none"
        message = f"{len(invalid.errors)} error(s) in the config; revision {kept} keeps running"
        return Refuse(digest, digest, "ValidationFailed", message, tuple(invalid.errors))
    if applied is not None and synced and snapshot.revision == applied.revision:
        return Skip(snapshot.revision, digest, warnings=snapshot.warnings)
    if not snapshot.servers and applied is not None and applied.servers and not allow_empty:
        return Refuse(snapshot.revision, digest, "EmptySnapshotRejected", EMPTY_REJECTED)
    return Apply(snapshot, digest, plan(snapshot, memory.live))


def remember(memory: Memory, decision: Skip | Refuse | Apply) -> Memory:
    """What the next pass must know of this one; an `Apply` only once it is live."""
    if isinstance(decision, Skip):
        if decision.refused:
            return memory
        if decision.warnings is None:
            return replace(memory, refused_digest=None)
        return replace(memory, refused_digest=None, applied_digest=decision.digest)
    if isinstance(decision, Refuse):
        return replace(memory, refused_digest=decision.digest)
    snapshot = decision.snapshot
    return replace(
        memory,
        snapshot=snapshot,
        live=applied_view(snapshot),
        applied_digest=decision.digest,
        refused_digest=None,
    )


def mark_reconciling(status: ConfigStatus, revision: str, now: datetime) -> ConfigStatus:
    """The status while `revision` is being applied."""
    conditions = set_condition(
        status.conditions,
        Condition("Reconciling", "True", "Progressing", f"applying {revision}", now),
    )
    return replace(status, conditions=conditions, attempted_revision=revision)


def after_pass(status: ConfigStatus, outcome: Skip | Refuse | Done, now: datetime) -> ConfigStatus:
    """The status a pass leaves. `applied_revision` moves only with a `Done`;
    `attempted_revision` with every outcome but the refused files again; `observed_generation`
    counts passes that looked at a new revision; history keeps the last HISTORY_SHOWN."""
    if isinstance(outcome, Skip):
        return _skipped(status, outcome, now)
    if isinstance(outcome, Refuse):
        conditions = set_condition(
            status.conditions, Condition("Ready", "False", outcome.reason, outcome.message, now)
        )
        conditions = set_condition(
            drop_condition(conditions, "Reconciling"),
            Condition("Stalled", "True", outcome.reason, outcome.message, now),
        )
        entry = HistoryEntry(outcome.revision, now, outcome.outcome, 0, errors=len(outcome.errors))
        return replace(
            status,
            attempted_revision=outcome.revision,
            observed_generation=status.observed_generation + 1,
            conditions=conditions,
            errors=tuple(e.as_dict() for e in outcome.errors),
            history=_history(status, entry),
        )
    revision = outcome.snapshot.revision
    new_revision = revision != status.applied_revision
    entry = HistoryEntry(revision, now, outcome.outcome, outcome.changes, outcome.git_commit)
    return replace(
        status,
        applied_revision=revision,
        attempted_revision=revision,
        git_commit=outcome.git_commit,
        applied_at=now if new_revision else status.applied_at,
        observed_generation=status.observed_generation + (1 if new_revision else 0),
        conditions=_ready(status, revision, now),
        errors=(),
        warnings=_as_dicts(outcome.snapshot.warnings),
        history=_history(status, entry)
        if new_revision or outcome.outcome == "applied"
        else status.history,
    )


def _skipped(status: ConfigStatus, skip: Skip, now: datetime) -> ConfigStatus:
    """The files went back to the applied revision: clear Stalled without applying anything."""
    if skip.refused:
        return status
    if status.attempted_revision != skip.revision or status.errors:
        status = replace(
            status,
            attempted_revision=skip.revision,
            errors=(),
            conditions=_ready(status, skip.revision, now),
            history=_history(status, HistoryEntry(skip.revision, now, "noop", 0)),
        )
    if skip.warnings is not None:
        status = replace(status, warnings=_as_dicts(skip.warnings))
    return status


def _ready(status: ConfigStatus, revision: str, now: datetime) -> tuple[Condition, ...]:
    ready = Condition(
        "Ready", "True", "ReconciliationSucceeded", f"applied revision {revision}", now
    )
    conditions = set_condition(status.conditions, ready)
    return drop_condition(drop_condition(conditions, "Reconciling"), "Stalled")


def _history(status: ConfigStatus, entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
    return (entry, *status.history)[:HISTORY_SHOWN]


def _as_dicts(warnings: Sequence[ConfigError]) -> tuple[dict[str, Any], ...]:
    return tuple(w.as_dict() for w in warnings)
