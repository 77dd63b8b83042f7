"""The reconcile rules as tables: what `decide` does with the files and memory of a pass, and
the status `after_pass` leaves for each previous status and outcome (kstatus: `Ready` always,
`Reconciling`/`Stalled` only while true). Pure: no filesystem, no event loop."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jackfield.core.desired import ParseCache, Snapshot, build_snapshot
from jackfield.core.loading import SourceFile
from jackfield.core.reconcile import (
    EMPTY_REJECTED,
    HISTORY_SHOWN,
    Apply,
    Done,
    Memory,
    Refuse,
    Skip,
    after_pass,
    applied_view,
    decide,
    file_digests,
    files_digest,
    mark_reconciling,
    remember,
)
from jackfield.core.status import Condition, ConfigStatus, HistoryEntry
from jackfield.errors import ConfigError
from tests.support.config import AGENT, server_yaml

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)
WARNING = ConfigError("agent.yaml", 6, 9, "has no effect")
ERROR = ConfigError("servers.d/x.yaml", 1, 1, "broken")


def files(*servers: str, comment: str = "") -> list[SourceFile]:
    out = [SourceFile("agent.yaml", (comment + AGENT).encode())]
    out += [SourceFile(f"servers.d/{n}.yaml", server_yaml(n).encode()) for n in servers]
    return out


def snapshot(*servers: str) -> Snapshot:
    return build_snapshot(files(*servers), {})


def digest(found: list[SourceFile], errors: tuple[ConfigError, ...] = ()) -> str:
    return files_digest(file_digests(found), errors)


def applied_memory(*servers: str, synced: bool = True) -> Memory:
    """What the controller remembers after applying these servers' files."""
    snap = snapshot(*servers)
    return Memory(
        snapshot=snap,
        live=applied_view(snap),
        applied_digest=digest(files(*servers)),
        store_synced=snap.revision if synced else None,
    )


# --- decide ---------------------------------------------------------------------------------

BROKEN = [*files("a"), SourceFile("servers.d/x.yaml", b"kind: [")]


@pytest.mark.parametrize(
    ("memory", "found", "allow_empty", "expected"),
    [
        pytest.param(Memory(), files("a"), False, Apply, id="first pass applies"),
        pytest.param(applied_memory("a"), files("a"), False, Skip, id="the very bytes: skip"),
        pytest.param(
            applied_memory("a"), files("a", comment="# hi\n"), False, Skip,
            id="a comment: same revision, skip",
        ),
        pytest.param(
            applied_memory("a", synced=False), files("a"), False, Apply,
            id="the store missed writes: apply again",
        ),
        pytest.param(applied_memory("a"), files("a", "b"), False, Apply, id="a new server"),
        pytest.param(applied_memory("a"), BROKEN, False, Refuse, id="invalid files refused"),
        pytest.param(applied_memory("a"), files(), False, Refuse, id="empty replacing servers"),
        pytest.param(applied_memory("a"), files(), True, Apply, id="empty allowed"),
        pytest.param(Memory(), files(), False, Apply, id="empty replacing nothing"),
        pytest.param(
            replace(applied_memory("a"), refused_digest=digest(BROKEN)), BROKEN, False, Skip,
            id="the refused files again: skip",
        ),
    ],
)  # fmt: skip
def test_decide_picks_one_action_per_pass(
    memory: Memory, found: list[SourceFile], allow_empty: bool, expected: type
) -> None:
    assert type(decide(found, (), {}, memory, allow_empty=allow_empty)) is expected


def test_a_skip_of_the_very_bytes_rebuilds_nothing_and_a_skip_after_a_rebuild_has_warnings() -> (
    None
):
    memory = applied_memory("a")
    same = decide(files("a"), (), {}, memory)
    rebuilt = decide(files("a", comment="# hi\n"), (), {}, memory)
    assert isinstance(same, Skip) and same.warnings is None and not same.refused
    assert isinstance(rebuilt, Skip) and rebuilt.warnings == ()
    assert rebuilt.revision == same.revision == memory.snapshot.revision  # type: ignore[union-attr]
    assert remember(memory, rebuilt).applied_digest == rebuilt.digest != memory.applied_digest


def test_invalid_files_are_refused_with_every_error_and_the_revision_kept() -> None:
    memory = applied_memory("a")
    refuse = decide(BROKEN, (ERROR,), {}, memory)
    assert isinstance(refuse, Refuse) and refuse.reason == "ValidationFailed"
    assert refuse.outcome == "failed" and ERROR in refuse.errors and len(refuse.errors) > 1
    assert refuse.revision == refuse.digest == digest(BROKEN, (ERROR,))
    kept = memory.snapshot.revision  # type: ignore[union-attr]
    assert refuse.message == f"{len(refuse.errors)} error(s) in the config; revision {kept}" + (
        " keeps running"
    )
    assert remember(memory, refuse).refused_digest == refuse.digest


def test_an_empty_snapshot_replacing_servers_is_rejected_under_its_own_revision() -> None:
    refuse = decide(files(), (), {}, applied_memory("a"))
    assert isinstance(refuse, Refuse) and refuse.reason == "EmptySnapshotRejected"
    assert refuse.outcome == "rejected" and refuse.errors == ()
    assert refuse.revision == snapshot().revision and refuse.message == EMPTY_REJECTED


def test_an_apply_carries_the_plan_against_what_is_live_and_is_remembered_once_live() -> None:
    memory = replace(applied_memory("a"), refused_digest="sha256:old")
    apply = decide(files("a", "b"), (), {}, memory)
    assert isinstance(apply, Apply)
    assert [(c.action, c.name) for c in apply.live_plan.effective] == [("create", "b")]
    after = remember(memory, apply)
    assert after.snapshot is apply.snapshot and after.applied_digest == apply.digest
    assert after.live == applied_view(apply.snapshot) and after.refused_digest is None
    assert after.store_synced == memory.store_synced, "the store side is the reconciler's"


def test_each_file_is_hashed_once_per_pass_and_the_parse_cache_uses_that_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = files("a", "b")
    contents = {f.data for f in found}
    hashed: list[bytes] = []
    real = hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        if data in contents:
            hashed.append(data)
        return real(data)

    monkeypatch.setattr(hashlib, "sha256", counting)
    cache: ParseCache = {}
    for memory in (Memory(), replace(applied_memory("a", "b"), applied_digest=None)):
        hashed.clear()
        decide(found, (), {}, memory, cache=cache)
        assert sorted(hashed) == sorted(contents), "each file once, cached or not"
    monkeypatch.undo()
    assert set(cache) == set(file_digests(found).items())


# --- after_pass: previous status x outcome --------------------------------------------------

A, B, EMPTY = snapshot("a"), snapshot("a", "b"), snapshot()
A_WARNED = replace(A, warnings=(WARNING,))


def ready_condition(revision: str, at: datetime = T0) -> Condition:
    return Condition("Ready", "True", "ReconciliationSucceeded", f"applied revision {revision}", at)


FRESH = ConfigStatus(conditions=(Condition("Ready", "Unknown", "Progressing", "pending", T0),))
READY = ConfigStatus(
    applied_revision=A.revision,
    attempted_revision=A.revision,
    git_commit="c0",
    applied_at=T0,
    observed_generation=1,
    conditions=(ready_condition(A.revision),),
    history=(HistoryEntry(A.revision, T0, "applied", 1, "c0"),),
)
STALLED = replace(
    READY,
    attempted_revision="sha256:broken",
    observed_generation=2,
    conditions=(
        Condition("Ready", "False", "ValidationFailed", "1 error(s)", T0),
        Condition("Stalled", "True", "ValidationFailed", "1 error(s)", T0),
    ),
    errors=(ERROR.as_dict(),),
    history=(HistoryEntry("sha256:broken", T0, "failed", 0, errors=1), *READY.history),
)
RECONCILING = mark_reconciling(READY, B.revision, T0)
FULL_HISTORY = replace(
    READY, history=tuple(HistoryEntry(f"sha256:{i}", T0, "applied", 1) for i in range(5))
)
PREVIOUS = {
    "fresh": FRESH,
    "ready": READY,
    "stalled": STALLED,
    "reconciling": RECONCILING,
    "full history": FULL_HISTORY,
}

INVALID = Refuse("sha256:bad", "sha256:bad", "ValidationFailed", "2 error(s)", (ERROR, ERROR))
REJECTED = Refuse(EMPTY.revision, "sha256:raw", "EmptySnapshotRejected", EMPTY_REJECTED)
OUTCOMES: dict[str, Skip | Refuse | Done] = {
    "refused again": Skip("sha256:bad", "sha256:bad", refused=True),
    "same bytes": Skip(A.revision, "sha256:raw"),
    "same revision, rebuilt": Skip(A.revision, "sha256:raw", warnings=(WARNING,)),
    "invalid": INVALID,
    "rejected": REJECTED,
    "applied new": Done(B, "c1", "applied", 1),
    "applied same": Done(A_WARNED, "c1", "applied", 1),
    "noop same": Done(A, "c1", "noop", 0),
}

# previous, outcome -> Ready, Stalled, applied, attempted, observed_generation delta,
# new history head (None: history unchanged)
R, S = "ReconciliationSucceeded", "ValidationFailed"
TABLE: list[tuple[str, str, tuple[str, str | None, str | None, str | None, int, str | None]]] = [
    ("fresh", "refused again", ("Unknown", None, None, None, 0, None)),
    ("ready", "refused again", ("True", None, A.revision, A.revision, 0, None)),
    ("stalled", "refused again", ("False", S, A.revision, "sha256:broken", 0, None)),
    ("ready", "same bytes", ("True", None, A.revision, A.revision, 0, None)),
    ("stalled", "same bytes", ("True", None, A.revision, A.revision, 0, "noop")),
    ("reconciling", "same bytes", ("True", None, A.revision, A.revision, 0, "noop")),
    ("ready", "same revision, rebuilt", ("True", None, A.revision, A.revision, 0, None)),
    ("stalled", "same revision, rebuilt", ("True", None, A.revision, A.revision, 0, "noop")),
    ("fresh", "invalid", ("False", S, None, "sha256:bad", 1, "failed")),
    ("ready", "invalid", ("False", S, A.revision, "sha256:bad", 1, "failed")),
    ("stalled", "invalid", ("False", S, A.revision, "sha256:bad", 1, "failed")),
    ("reconciling", "invalid", ("False", S, A.revision, "sha256:bad", 1, "failed")),
    ("ready", "rejected", ("False", "EmptySnapshotRejected", A.revision, EMPTY.revision, 1,
                           "rejected")),
    ("stalled", "rejected", ("False", "EmptySnapshotRejected", A.revision, EMPTY.revision, 1,
                             "rejected")),
    ("fresh", "applied new", ("True", None, B.revision, B.revision, 1, "applied")),
    ("ready", "applied new", ("True", None, B.revision, B.revision, 1, "applied")),
    ("stalled", "applied new", ("True", None, B.revision, B.revision, 1, "applied")),
    ("reconciling", "applied new", ("True", None, B.revision, B.revision, 1, "applied")),
    ("full history", "applied new", ("True", None, B.revision, B.revision, 1, "applied")),
    ("ready", "applied same", ("True", None, A.revision, A.revision, 0, "applied")),
    ("ready", "noop same", ("True", None, A.revision, A.revision, 0, None)),
    ("stalled", "noop same", ("True", None, A.revision, A.revision, 0, None)),
    ("fresh", "noop same", ("True", None, A.revision, A.revision, 1, "noop")),
]  # fmt: skip


def condition(status: ConfigStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


@pytest.mark.parametrize(
    ("previous", "outcome", "expected"), TABLE, ids=[f"{p} x {o}" for p, o, _ in TABLE]
)
def test_after_pass_leaves_the_kstatus_of_each_previous_status_and_outcome(
    previous: str,
    outcome: str,
    expected: tuple[str, str | None, str | None, str | None, int, str | None],
) -> None:
    before = PREVIOUS[previous]
    after = after_pass(before, OUTCOMES[outcome], NOW)
    ready, stalled, applied, attempted, generations, head = expected
    got_ready, got_stalled = condition(after, "Ready"), condition(after, "Stalled")
    assert got_ready is not None and got_ready.status == ready, "Ready is always present"
    assert (got_stalled.reason if got_stalled else None) == stalled
    if got_stalled is not None:
        assert got_stalled.status == "True", "Stalled only while true"
    assert condition(after, "Reconciling") is None, "Reconciling only while a pass applies"
    assert (after.applied_revision, after.attempted_revision) == (applied, attempted)
    assert after.observed_generation == before.observed_generation + generations
    if head is None:
        assert after.history == before.history
    else:
        assert after.history[0].outcome == head and after.history[0].at == NOW
        assert after.history[1:] == before.history[: HISTORY_SHOWN - 1]
    assert len(after.history) <= HISTORY_SHOWN


@pytest.mark.parametrize("previous", list(PREVIOUS))
@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_errors_warnings_and_applied_at_follow_the_outcome(previous: str, outcome: str) -> None:
    before, result = PREVIOUS[previous], OUTCOMES[outcome]
    after = after_pass(before, result, NOW)
    if isinstance(result, Skip) and result.refused:
        assert after == before, "the refused files again change nothing"
        return
    if isinstance(result, Refuse):
        assert after.errors == tuple(e.as_dict() for e in result.errors)
        assert after.warnings == before.warnings, "warnings are the applied snapshot's"
        assert (after.applied_at, after.git_commit) == (before.applied_at, before.git_commit)
        ready = condition(after, "Ready")
        assert ready is not None and ready.message == result.message
        return
    assert after.errors == ()
    if isinstance(result, Done):
        assert after.warnings == tuple(w.as_dict() for w in result.snapshot.warnings)
        assert after.git_commit == result.git_commit
        moved = result.snapshot.revision != before.applied_revision
        assert after.applied_at == (NOW if moved else before.applied_at)
    else:
        expected = before.warnings if result.warnings is None else (WARNING.as_dict(),)
        assert after.warnings == expected
        assert (after.applied_at, after.git_commit) == (before.applied_at, before.git_commit)


def test_a_condition_that_keeps_its_status_keeps_its_transition_time() -> None:
    after = after_pass(READY, OUTCOMES["applied new"], NOW)
    assert condition(after, "Ready") == ready_condition(B.revision, at=T0)
    stalled_again = after_pass(STALLED, INVALID, NOW)
    assert {c.last_transition for c in stalled_again.conditions} == {T0}
    recovered = after_pass(STALLED, OUTCOMES["same bytes"], NOW)
    assert condition(recovered, "Ready") == ready_condition(A.revision, at=NOW)


def test_the_mark_says_reconciling_and_moves_only_the_attempted_revision() -> None:
    marked = mark_reconciling(STALLED, B.revision, NOW)
    reconciling = condition(marked, "Reconciling")
    assert reconciling is not None and reconciling.status == "True"
    assert reconciling.message == f"applying {B.revision}"
    assert [c.type for c in marked.conditions] == ["Ready", "Reconciling", "Stalled"]
    assert marked.attempted_revision == B.revision
    assert replace(marked, attempted_revision=STALLED.attempted_revision, conditions=()) == (
        replace(STALLED, conditions=())
    )
