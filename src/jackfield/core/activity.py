"""What the dashboard draws besides the status: recent calls, per-minute call counts, errors and
latencies per server, server state transitions and reconcile passes. Pure.

Everything is bounded: the last MAX_CALLS calls, WINDOW_MINUTES one-minute buckets per server
(each keeping at most MAX_SAMPLES latencies), MAX_TRANSITIONS transitions per server and
MAX_PASSES passes. Times are POSIX seconds passed in by the caller, so a test drives the clock.
Strings are masked (by `mask`, the shell's redactor) and cut to MAX_TEXT characters as they are
recorded: nothing unmasked is kept. Arguments and results are never recorded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jackfield.core.status import ServerStatus, rfc3339

WINDOW_MINUTES = 30
MAX_SAMPLES = 128
"""Latencies kept per server and minute (the last ones of the minute): percentiles of a busy
minute are of its last MAX_SAMPLES calls."""
MAX_CALLS = 50
MAX_TRANSITIONS = 32
MAX_PASSES = 50
MAX_TEXT = 120
NOT_ERRORS = frozenset({"ok", "cancelled", "declined"})
"""Outcomes that are not errors: the caller cancelled or said no; every other outcome (error,
timeout, unavailable, rejected:*, unknown) counts in the error rate."""


def minute_of(at: float) -> int:
    return int(at // 60)


def when(at: float) -> str:
    """RFC 3339 UTC of POSIX seconds."""
    text = rfc3339(datetime.fromtimestamp(at, UTC))
    assert text is not None
    return text


def percentile(ordered: list[float], q: float) -> float | None:
    """The `q` quantile (0..1) of sorted values by linear interpolation; None when empty."""
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Call:
    at: float
    server: str
    tool: str
    outcome: str
    seconds: float
    session: str | None
    caller: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": when(self.at),
            "server": self.server,
            "tool": self.tool,
            "outcome": self.outcome,
            "ms": round(self.seconds * 1000, 1),
            "session": self.session,
            "caller": self.caller,
        }


@dataclass(frozen=True)
class Pass:
    at: float
    outcome: str
    revision: str
    changes: int
    errors: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "at": when(self.at),
            "outcome": self.outcome,
            "revision": self.revision,
            "changes": self.changes,
            "errors": self.errors,
            "ms": round(self.seconds * 1000, 1),
        }


@dataclass(frozen=True)
class Transition:
    at: float
    state: str


@dataclass
class _Bucket:
    minute: int
    calls: int = 0
    errors: int = 0
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))


@dataclass(frozen=True)
class ServerActivity:
    """One server's window: per-minute series oldest first (the last entry is the current,
    unfinished minute), totals over the window, and its transitions oldest first."""

    start_minute: int
    calls: tuple[int, ...]
    errors: tuple[int, ...]
    p50: tuple[float | None, ...]
    p95: tuple[float | None, ...]
    """Seconds, None for a minute without calls."""
    total_calls: int
    total_errors: int
    window_p50: float | None
    window_p95: float | None
    transitions: tuple[Transition, ...]

    @property
    def error_rate(self) -> float | None:
        return self.total_errors / self.total_calls if self.total_calls else None

    def to_json(self) -> dict[str, Any]:
        def ms(values: Iterable[float | None]) -> list[float | None]:
            return [None if v is None else round(v * 1000, 1) for v in values]

        return {
            "calls_per_minute": list(self.calls),
            "errors_per_minute": list(self.errors),
            "p50_ms": ms(self.p50),
            "p95_ms": ms(self.p95),
            "calls": self.total_calls,
            "errors": self.total_errors,
            "error_rate": None if self.error_rate is None else round(self.error_rate, 4),
            "window_p50_ms": ms([self.window_p50])[0],
            "window_p95_ms": ms([self.window_p95])[0],
            "transitions": [{"at": when(t.at), "state": t.state} for t in self.transitions],
        }


@dataclass(frozen=True)
class ActivityView:
    """A snapshot of the activity at `now` (see `Activity.view`)."""

    now: float
    window_minutes: int
    servers: Mapping[str, ServerActivity]
    calls: tuple[Call, ...]
    """Newest first."""
    passes: tuple[Pass, ...]
    """Newest first."""

    def to_json(self) -> dict[str, Any]:
        return {
            "at": when(self.now),
            "window_minutes": self.window_minutes,
            "window_start": when((minute_of(self.now) - self.window_minutes + 1) * 60),
            "servers": {name: s.to_json() for name, s in sorted(self.servers.items())},
            "calls": [c.to_json() for c in self.calls],
            "passes": [p.to_json() for p in self.passes],
        }


EMPTY = ActivityView(0.0, WINDOW_MINUTES, {}, (), ())


def _identity(text: str) -> str:
    return text


class Activity:
    """The bounded recorder. Not thread-safe: one event loop records and reads it."""

    def __init__(
        self, *, mask: Callable[[str], str] = _identity, window_minutes: int = WINDOW_MINUTES
    ) -> None:
        self.mask = mask
        self.window = window_minutes
        self.version = 0
        """Bumped by every change: a reader can tell that nothing happened."""
        self._calls: deque[Call] = deque(maxlen=MAX_CALLS)
        self._passes: deque[Pass] = deque(maxlen=MAX_PASSES)
        self._buckets: dict[str, deque[_Bucket]] = {}
        self._transitions: dict[str, deque[Transition]] = {}
        self._changes: dict[str, int] = {}
        """Per server, bumped by its calls and transitions: its window is rebuilt only then
        (or when the minute turns), so an idle server costs a view nothing."""
        self._windows: dict[str, tuple[tuple[int, int], ServerActivity]] = {}

    def _text(self, value: str | None, mask: Callable[[str], str]) -> str | None:
        return None if value is None else mask(value)[:MAX_TEXT]

    def call(
        self,
        at: float,
        *,
        server: str,
        tool: str,
        outcome: str,
        seconds: float,
        session: str | None = None,
        caller: str | None = None,
        mask: Callable[[str], str] | None = None,
    ) -> None:
        """Record a finished call; `mask` (the call's own secrets too) replaces `self.mask`."""
        m = mask or self.mask
        server_text = self._text(server, m) or ""
        self._calls.append(
            Call(
                at,
                server_text,
                self._text(tool, m) or "",
                self._text(outcome, m) or "",
                max(0.0, seconds),
                self._text(session, m),
                self._text(caller, m),
            )
        )
        buckets = self._buckets.setdefault(server_text, deque(maxlen=self.window))
        minute = minute_of(at)
        if not buckets or buckets[-1].minute < minute:
            buckets.append(_Bucket(minute))
        bucket = next((b for b in reversed(buckets) if b.minute == minute), None)
        if bucket is not None:  # None: a call older than the window's buckets; counted above
            bucket.calls += 1
            bucket.errors += outcome not in NOT_ERRORS
            bucket.samples.append(max(0.0, seconds))
        self._changed(server_text)

    def reconciled(
        self, at: float, *, outcome: str, revision: str, changes: int, errors: int, seconds: float
    ) -> None:
        """Record a reconcile pass."""
        self._passes.append(Pass(at, outcome, self.mask(revision), changes, errors, seconds))
        self.version += 1

    def observe(self, at: float, servers: Iterable[ServerStatus]) -> None:
        """Sample the servers' states: a state other than the last one seen is a transition,
        dated by the server's `since` when that is plausible (between the last transition and
        `at`), else `at`. Servers not in `servers` are forgotten (they were removed)."""
        seen: set[str] = set()
        for s in servers:
            seen.add(s.name)
            history = self._transitions.setdefault(s.name, deque(maxlen=MAX_TRANSITIONS))
            if history and history[-1].state == s.state:
                continue
            since = s.since.timestamp()
            floor = history[-1].at if history else float("-inf")
            history.append(Transition(since if floor <= since <= at else at, s.state))
            self._changed(s.name)
        for gone in (self._transitions.keys() | self._buckets.keys()) - seen:
            self._transitions.pop(gone, None)
            self._buckets.pop(gone, None)
            self._changes.pop(gone, None)
            self._windows.pop(gone, None)
            self.version += 1

    def _changed(self, server: str) -> None:
        self._changes[server] = self._changes.get(server, 0) + 1
        self.version += 1

    def view(self, now: float) -> ActivityView:
        """The window ending at `now`'s minute: WINDOW_MINUTES buckets per server."""
        current = minute_of(now)
        start = current - self.window + 1
        servers = {name: self._window(name, start, current)
                   for name in self._transitions.keys() | self._buckets.keys()}  # fmt: skip
        return ActivityView(
            now,
            self.window,
            servers,
            tuple(reversed(self._calls)),
            tuple(reversed(self._passes)),
        )

    def _window(self, name: str, start: int, current: int) -> ServerActivity:
        key = (self._changes.get(name, 0), current)
        cached = self._windows.get(name)
        if cached is not None and cached[0] == key and cached[1].start_minute == start:
            return cached[1]
        window = self._server(
            start, current, self._buckets.get(name, ()), self._transitions.get(name, ())
        )
        self._windows[name] = (key, window)
        return window

    def _server(
        self, start: int, current: int, buckets: Iterable[_Bucket], history: Iterable[Transition]
    ) -> ServerActivity:
        by_minute = {b.minute: b for b in buckets if start <= b.minute <= current}
        minutes = [by_minute.get(m) for m in range(start, current + 1)]
        ordered = [sorted(b.samples) if b else [] for b in minutes]
        merged = sorted(v for values in ordered for v in values)
        return ServerActivity(
            start_minute=start,
            calls=tuple(b.calls if b else 0 for b in minutes),
            errors=tuple(b.errors if b else 0 for b in minutes),
            p50=tuple(percentile(v, 0.5) for v in ordered),
            p95=tuple(percentile(v, 0.95) for v in ordered),
            total_calls=sum(b.calls for b in by_minute.values()),
            total_errors=sum(b.errors for b in by_minute.values()),
            window_p50=percentile(merged, 0.5),
            window_p95=percentile(merged, 0.95),
            transitions=tuple(history),
        )
