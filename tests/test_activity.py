"""core/activity.py: the bounded recorder behind the dashboard's charts. Pure, clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jackfield.core import activity as act
from jackfield.core.activity import Activity, percentile
from jackfield.core.redaction import MASK, redactor
from jackfield.core.status import ServerStatus

T = 1_800_000_000.0
"""A minute boundary (POSIX seconds divisible by 60)."""


def server(name: str, state: str, since: float) -> ServerStatus:
    return ServerStatus(name, "stdio", state, datetime.fromtimestamp(since, UTC))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.5, None), ([7.0], 0.95, 7.0), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
     ([float(v) for v in range(1, 101)], 0.95, 95.05), ([1.0, 9.0], 0.0, 1.0),
     ([1.0, 9.0], 1.0, 9.0)],
)  # fmt: skip
def test_percentiles_interpolate_between_ranks(
    values: list[float], q: float, expected: float | None
) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_calls_fall_into_per_minute_buckets_with_errors_and_latencies() -> None:
    a = Activity()
    for i, (outcome, seconds) in enumerate([("ok", 0.01), ("error", 0.03), ("ok", 0.02)]):
        a.call(T + i, server="time", tool="now", outcome=outcome, seconds=seconds)
    a.call(T + 61, server="time", tool="now", outcome="timeout", seconds=1.0)
    a.call(T + 62, server="time", tool="now", outcome="cancelled", seconds=0.5)
    a.call(T + 63, server="time", tool="now", outcome="declined", seconds=0.0)
    view = a.view(T + 90).servers["time"]
    assert view.calls[-2:] == (3, 3) and sum(view.calls) == 6 and len(view.calls) == 30
    assert view.errors[-2:] == (1, 1), "cancelled and declined are not errors"
    assert view.p50[-2] == pytest.approx(0.02) and view.p95[-2] == pytest.approx(0.029)
    assert view.p50[:-2] == (None,) * 28
    assert (view.total_calls, view.total_errors) == (6, 2)
    assert view.error_rate == pytest.approx(2 / 6)
    assert view.window_p50 == pytest.approx(0.025)
    assert view.start_minute == act.minute_of(T + 90) - 29


def test_minutes_older_than_the_window_roll_off() -> None:
    a = Activity(window_minutes=3)
    a.call(T, server="s", tool="t", outcome="ok", seconds=0.1)
    a.call(T + 120, server="s", tool="t", outcome="error", seconds=0.2)
    assert a.view(T + 130).servers["s"].calls == (1, 0, 1)
    assert a.view(T + 190).servers["s"].calls == (0, 1, 0), "the first minute left the window"
    later = a.view(T + 3600).servers["s"]
    assert later.calls == (0, 0, 0) and later.total_calls == 0 and later.error_rate is None
    assert later.window_p95 is None


def test_every_buffer_is_bounded() -> None:
    a = Activity()
    for i in range(1000):
        a.call(T + i * 0.01, server="s", tool=f"t{i}", outcome="ok", seconds=i / 1000)
        a.reconciled(T + i, outcome="noop", revision="r", changes=0, errors=0, seconds=0.0)
    view = a.view(T + 10)
    assert len(view.calls) == act.MAX_CALLS and view.calls[0].tool == "t999", "newest first"
    assert len(view.passes) == act.MAX_PASSES
    assert view.servers["s"].calls[-1] == 1000, "every call counted"
    assert view.servers["s"].p50[-1] == pytest.approx(
        percentile([i / 1000 for i in range(1000 - act.MAX_SAMPLES, 1000)], 0.5)
    ), "percentiles of the last MAX_SAMPLES calls of the minute"
    for i in range(100):
        a.observe(T + i, [server("s", "Ready" if i % 2 else "Backoff", T + i)])
    assert len(a.view(T + 100).servers["s"].transitions) == act.MAX_TRANSITIONS


def test_recorded_strings_are_masked_and_cut() -> None:
    secret = "sk-live-0123456789"
    a = Activity(mask=redactor(frozenset({secret})))
    own = redactor(frozenset({"per-call-value"}))
    a.call(T, server="s", tool="t", outcome="ok", seconds=0.1,
           session=f"s {secret}", caller="x" * 500)  # fmt: skip
    a.call(T, server="s", tool="t", outcome="ok", seconds=0.1,
           caller="per-call-value", mask=own)  # fmt: skip
    a.reconciled(T, outcome="applied", revision=f"sha256:{secret}", changes=1, errors=0,
                 seconds=0.1)  # fmt: skip
    view = a.view(T)
    first, second = view.calls[1], view.calls[0]
    assert first.session == f"s {MASK}" and secret not in str(view.to_json())
    assert first.caller == "x" * act.MAX_TEXT
    assert second.caller == MASK
    assert view.passes[0].revision == f"sha256:{MASK}"


def test_transitions_are_dated_by_since_and_removed_servers_forgotten() -> None:
    a = Activity()
    a.observe(T, [server("a", "Connecting", T - 5), server("b", "Ready", T - 100)])
    a.observe(T + 1, [server("a", "Connecting", T - 5), server("b", "Ready", T - 100)])
    a.observe(T + 2, [server("a", "Ready", T + 1.5), server("b", "Backoff", T + 999)])
    a.call(T + 2, server="b", tool="t", outcome="error", seconds=0.1)
    view = a.view(T + 3)
    assert [(t.at, t.state) for t in view.servers["a"].transitions] == [
        (T - 5, "Connecting"), (T + 1.5, "Ready")]  # fmt: skip
    b = [(t.at, t.state) for t in view.servers["b"].transitions]
    assert b == [(T - 100, "Ready"), (T + 2, "Backoff")], "a since in the future: `at` instead"
    a.observe(T + 4, [server("a", "Ready", T + 1.5)])
    assert set(a.view(T + 5).servers) == {"a"}
    assert len(a.view(T + 5).calls) == 1, "recent calls outlive their server"


def test_the_json_view_is_compact_arrays_in_milliseconds() -> None:
    a = Activity(window_minutes=2)
    a.observe(T, [server("s", "Ready", T)])
    a.call(T + 61, server="s", tool="t", outcome="ok", seconds=0.0125, session="abc", caller="c")
    document = a.view(T + 65).to_json()
    assert document["window_start"] == "2027-01-15T08:00:00.000Z"
    assert document["servers"]["s"] == {
        "calls_per_minute": [0, 1], "errors_per_minute": [0, 0],
        "p50_ms": [None, 12.5], "p95_ms": [None, 12.5], "calls": 1, "errors": 0,
        "error_rate": 0.0, "window_p50_ms": 12.5, "window_p95_ms": 12.5,
        "transitions": [{"at": "2027-01-15T08:00:00.000Z", "state": "Ready"}],
    }  # fmt: skip
    assert document["calls"][0]["ms"] == 12.5 and document["calls"][0]["session"] == "abc"


def test_the_version_moves_only_when_something_changes() -> None:
    a = Activity()
    a.observe(T, [server("s", "Ready", T)])
    before = a.version
    a.observe(T + 1, [server("s", "Ready", T)])
    a.view(T + 2)
    assert a.version == before
    a.call(T + 3, server="s", tool="t", outcome="ok", seconds=0.1)
    assert a.version > before
