"""core/lifecycle.py: what each event means for a server's state, backoff and grace (pure,
synchronous, table-driven)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jackfield.core import lifecycle
from jackfield.core.failures import Failure
from jackfield.core.lifecycle import (
    CallFailed,
    CallSucceeded,
    Connect,
    Connected,
    Ended,
    Event,
    Instant,
    Life,
    Timing,
)
from jackfield.core.status import ServerState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = Instant(mono=1000.0, wall=T0 + timedelta(seconds=1000))
TIMING = Timing(backoff_base=1.0, backoff_cap=60.0, backoff_reset=600.0, grace=30.0)
HALF = 0.5
"""The random source of every row: the backoff is half its ceiling."""

LOST = Failure("process exited with code 3: boom")
EXPIRED = Failure("the HTTP session expired", delay=0.0)
REFUSED = Failure("HTTP 401: the server refused our credentials", retry=False)


def life(state: ServerState, **fields: Any) -> Life:
    return Life(state=state, since=T0, **fields)


READY = life("Ready", ready_at=NOW.mono - 5, last_connected=T0, attempt=2, restarts=2)

ROWS: list[tuple[str, Life, Event, dict[str, Any]]] = [
    ("the first attempt connects", life("Pending"), Connect(),
     {"state": "Connecting", "since": NOW.wall}),
    ("an attempt after a backoff connects", life("Backoff", delay=4.0, restarts=1), Connect(),
     {"state": "Connecting", "since": NOW.wall, "next_retry_at": None, "restarts": 1}),
    ("a connection that lists its tools is Ready", life("Connecting", failures=2), Connected(),
     {"state": "Ready", "last_connected": NOW.wall, "ready_at": NOW.mono, "failures": 0}),
    ("being Ready again ends the grace", life("Connecting", grace_until=NOW.mono + 9),
     Connected(), {"state": "Ready", "grace_until": None}),
    ("a lost connection backs off and keeps its tools listed for the grace", READY,
     Ended(LOST, listed=True),
     {"state": "Backoff", "last_error": LOST.message, "delay": HALF * 4, "attempt": 3,
      "restarts": 3, "grace_until": NOW.mono + 30, "ready_at": None,
      "next_retry_at": NOW.wall + timedelta(seconds=2)}),
    ("a server without tools listed has no grace", READY, Ended(LOST, listed=False),
     {"state": "Backoff", "grace_until": None}),
    ("an attempt that never got Ready has no grace", life("Connecting", attempt=1),
     Ended(LOST, listed=True), {"state": "Backoff", "grace_until": None, "delay": HALF * 2}),
    ("a connection up for the reset time backs off from the base again",
     replace(READY, ready_at=NOW.mono - 600, attempt=6), Ended(LOST),
     {"state": "Backoff", "delay": HALF * 1, "attempt": 1}),
    ("the backoff never exceeds the cap", life("Connecting", attempt=10), Ended(LOST),
     {"delay": HALF * 60, "attempt": 11}),
    ("a delay hint replaces the backoff", life("Connecting", attempt=4),
     Ended(Failure("busy", delay=7.0)), {"state": "Backoff", "delay": 7.0, "attempt": 5}),
    ("a failure that retrying cannot fix is Failed, with no retry", READY,
     Ended(REFUSED, listed=True),
     {"state": "Failed", "last_error": REFUSED.message, "restarts": 2, "delay": None,
      "next_retry_at": None, "grace_until": NOW.mono + 30}),
    ("an expired session reconnects at once, without a backoff or a restart", READY,
     Ended(EXPIRED, listed=True),
     {"state": "Connecting", "last_error": "the HTTP session expired; reconnected",
      "restarts": 2, "attempt": 2, "delay": None, "grace_until": NOW.mono + 30}),
    ("a session that expires at once backs off like any failure",
     replace(READY, ready_at=NOW.mono - 0.5), Ended(EXPIRED),
     {"state": "Backoff", "last_error": "the HTTP session expired", "restarts": 3,
      "delay": HALF * 4}),
    ("one failed call is counted", READY, CallFailed(), {"state": "Ready", "failures": 1}),
    ("consecutive failed calls mark a Ready server Degraded", replace(READY, failures=2),
     CallFailed(),
     {"state": "Degraded", "failures": 3, "last_error": "3 calls in a row failed",
      "since": NOW.wall, "grace_until": None}),
    ("a Degraded server keeps counting failed calls",
     life("Degraded", failures=3, last_error="3 calls in a row failed"), CallFailed(),
     {"state": "Degraded", "failures": 4, "last_error": "3 calls in a row failed",
      "since": T0}),
    ("a call that succeeds makes a Degraded server Ready", life("Degraded", failures=4),
     CallSucceeded(), {"state": "Ready", "failures": 0, "since": NOW.wall}),
    ("a call that succeeds resets the count", replace(READY, failures=2), CallSucceeded(),
     {"state": "Ready", "failures": 0, "since": T0}),
    ("a Degraded server that loses its connection keeps its tools for the grace",
     life("Degraded", ready_at=NOW.mono - 5), Ended(LOST, listed=True),
     {"state": "Backoff", "grace_until": NOW.mono + 30}),
    ("connecting again keeps the grace running",
     life("Backoff", grace_until=NOW.mono + 3, delay=1.0), Connect(listed=True),
     {"state": "Connecting", "grace_until": NOW.mono + 3}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "event", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_each_event_leaves_the_server_where_the_table_says(
    before: Life, event: Event, expected: dict[str, Any]
) -> None:
    after = lifecycle.step(before, event, NOW, TIMING, lambda: HALF)
    assert {name: getattr(after, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 32.0), (6, 60.0), (20, 60.0)],
)
def test_the_backoff_doubles_from_the_base_to_the_cap(attempt: int, ceiling: float) -> None:
    assert lifecycle.backoff(attempt, TIMING, lambda: 0.0) == 0.0
    assert lifecycle.backoff(attempt, TIMING, lambda: HALF) == HALF * ceiling
    assert lifecycle.backoff(attempt, TIMING, lambda: 0.999) == pytest.approx(0.999 * ceiling)


def test_a_crash_loop_backs_off_longer_each_time_up_to_the_cap() -> None:
    now, current, delays = NOW, lifecycle.start(True, NOW), []
    for _ in range(9):
        current = lifecycle.step(current, Connect(), now, TIMING, lambda: HALF)
        current = lifecycle.step(current, Ended(LOST), now, TIMING, lambda: HALF)
        delays.append(current.delay)
        now = Instant(now.mono + 100, now.wall + timedelta(seconds=100))
    assert delays == [HALF * c for c in (1, 2, 4, 8, 16, 32, 60, 60, 60)]
    assert current.restarts == 9 and current.state == "Backoff"


@pytest.mark.parametrize(
    ("state", "grace_until", "at", "listed"),
    [
        ("Ready", None, NOW.mono, True),
        ("Degraded", None, NOW.mono, True),
        ("Backoff", NOW.mono + 1, NOW.mono, True),
        ("Connecting", NOW.mono + 1, NOW.mono + 0.999, True),
        ("Backoff", NOW.mono + 1, NOW.mono + 1, False),
        ("Failed", NOW.mono - 1, NOW.mono, False),
        ("Backoff", None, NOW.mono, False),
        ("Connecting", None, NOW.mono, False),
        ("Pending", None, NOW.mono, False),
        ("Disabled", None, NOW.mono, False),
    ],
)
def test_tools_are_listed_while_serving_and_through_the_grace(
    state: ServerState, grace_until: float | None, at: float, listed: bool
) -> None:
    assert lifecycle.lists_tools(life(state, grace_until=grace_until), at) is listed


@pytest.mark.parametrize(("enabled", "state"), [(True, "Pending"), (False, "Disabled")])
def test_a_server_starts_pending_unless_it_is_disabled(enabled: bool, state: ServerState) -> None:
    start = lifecycle.start(enabled, NOW)
    assert (start.state, start.since, start.restarts) == (state, NOW.wall, 0)


def test_only_a_server_in_backoff_has_a_retry_time() -> None:
    backing_off = life("Backoff", delay=2.5)
    assert backing_off.next_retry_at == T0 + timedelta(seconds=2.5)
    assert replace(backing_off, state="Connecting").next_retry_at is None
    assert life("Backoff").next_retry_at is None
