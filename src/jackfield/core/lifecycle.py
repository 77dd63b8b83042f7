"""One MCP server's lifecycle as immutable values: states, backoff, grace. Pure.

A supervisor (shell/supervisor.py) owns the connection and reports what happens to it as
events; `step` says where that leaves the server:

    Pending -> Connecting -> Ready <-> Degraded
                   ^           |
                   +- Backoff <+        Failed (retrying cannot help)     Disabled

- Backoff: full jitter, uniform in [0, min(cap, base * 2**attempt)]; a connection that stayed
  up for `backoff_reset` starts again from attempt 0. A failure's `delay` hint (TemporaryError)
  replaces the computed delay; a hint of 0 (an expired HTTP session) reconnects at once, no
  backoff and no restart counted, unless the connection lasted less than `backoff_base` (a
  server whose sessions expire at once is failing, and backs off like any other).
- Grace: when a server that listed tools leaves Ready/Degraded, its tools stay listed until
  `grace_until`; being Ready again ends the grace.
- Degraded: `degraded_after` consecutive failed calls; one call that succeeds makes it Ready.

docs/manager.md has the whole picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from jackfield.core.failures import Failure
from jackfield.core.status import SERVING_STATES, ServerState


@dataclass(frozen=True)
class Timing:
    """Supervision clocks (seconds); tests shrink them."""

    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    backoff_reset: float = 600.0
    """Ready this long, and the next failure backs off from `backoff_base` again."""
    health_interval: float = 30.0
    """An idle connection is checked this often (ping, or `server/discover` on 2026-07-28)."""
    health_timeout: float = 10.0
    grace: float = 30.0
    """Tools of a server that left Ready stay listed this long (calls fail fast meanwhile)."""
    degraded_after: int = 3
    """Consecutive failed calls that mark a connected server Degraded."""


DEFAULT_TIMING = Timing()


@dataclass(frozen=True)
class Instant:
    """Now, on both clocks: the monotonic one (the event loop's) for durations and deadlines,
    the wall clock for what status shows."""

    mono: float
    wall: datetime


@dataclass(frozen=True)
class Life:
    """Where one server is in its lifecycle: everything status shows of it, and the counters
    the next transition needs."""

    state: ServerState
    since: datetime
    restarts: int = 0
    """Backoffs so far."""
    attempt: int = 0
    """The exponent of the next backoff (failed attempts since the last long connection)."""
    delay: float | None = None
    """Seconds of the current backoff (state Backoff)."""
    last_error: str | None = None
    last_connected: datetime | None = None
    ready_at: float | None = None
    """When the current connection got Ready (monotonic); None when there is none."""
    grace_until: float | None = None
    """Until when (monotonic) the tools of a server that left Ready stay listed."""
    failures: int = 0
    """Consecutive failed calls."""

    @property
    def next_retry_at(self) -> datetime | None:
        if self.state != "Backoff" or self.delay is None:
            return None
        return self.since + timedelta(seconds=self.delay)


@dataclass(frozen=True)
class Connect:
    """An attempt to connect starts. `listed`: the server's tools are in the catalog."""

    listed: bool = False


@dataclass(frozen=True)
class Connected:
    """The handshake and tools/list succeeded."""


@dataclass(frozen=True)
class Ended:
    """The connection, or the attempt, ended with `failure` (a stop is not an end)."""

    failure: Failure
    listed: bool = False


@dataclass(frozen=True)
class CallFailed:
    """A call timed out, lost its connection or broke the protocol (not: the tool said no)."""


@dataclass(frozen=True)
class CallSucceeded:
    pass


Event = Connect | Connected | Ended | CallFailed | CallSucceeded


def start(enabled: bool, now: Instant) -> Life:
    return Life(state="Pending" if enabled else "Disabled", since=now.wall)


def backoff(attempt: int, timing: Timing, rand: Callable[[], float]) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)], with
    `rand()` uniform in [0, 1)."""
    return float(rand() * min(timing.backoff_cap, timing.backoff_base * 2**attempt))


def step(life: Life, event: Event, now: Instant, timing: Timing, rand: Callable[[], float]) -> Life:
    """Where `event` leaves the server; `rand` is the backoff's random source."""
    match event:
        case Connect(listed=listed):
            return _move(life, "Connecting", now, timing, listed)
        case Connected():
            ready = replace(
                life, last_connected=now.wall, ready_at=now.mono, grace_until=None, failures=0
            )
            return _move(ready, "Ready", now, timing, listed=False)
        case Ended(failure=failure, listed=listed):
            return _ended(life, failure, now, timing, rand, listed)
        case CallFailed():
            failed = replace(life, failures=life.failures + 1)
            if failed.failures >= timing.degraded_after and life.state == "Ready":
                error = f"{failed.failures} calls in a row failed"
                return _move(replace(failed, last_error=error), "Degraded", now, timing, True)
            return failed
        case CallSucceeded():
            ok = replace(life, failures=0)
            return _move(ok, "Ready", now, timing, True) if life.state == "Degraded" else ok


def lists_tools(life: Life, now: float) -> bool:
    """Whether the server's tools belong in the catalog at `now` (monotonic): while it serves,
    and through the grace after it stopped."""
    if life.state in SERVING_STATES:
        return True
    return life.grace_until is not None and now < life.grace_until


def _ended(
    life: Life,
    failure: Failure,
    now: Instant,
    timing: Timing,
    rand: Callable[[], float],
    listed: bool,
) -> Life:
    over = replace(life, ready_at=None, last_error=failure.message)
    if not failure.retry:
        return _move(replace(over, delay=None), "Failed", now, timing, listed)
    lasted = now.mono - life.ready_at if life.ready_at is not None else 0.0
    hint = failure.delay
    if hint == 0 and lasted >= timing.backoff_base:
        renewed = replace(over, delay=None, last_error=f"{failure.message}; reconnected")
        return _move(renewed, "Connecting", now, timing, listed)
    attempt = 0 if lasted >= timing.backoff_reset else life.attempt
    delay = hint if hint else backoff(attempt, timing, rand)
    backing_off = replace(over, delay=delay, attempt=attempt + 1, restarts=life.restarts + 1)
    return _move(backing_off, "Backoff", now, timing, listed)


def _move(life: Life, state: ServerState, now: Instant, timing: Timing, listed: bool) -> Life:
    """Enter `state`; leaving Ready/Degraded with tools listed starts the grace."""
    if state == life.state:
        return life
    grace_until = life.grace_until
    if life.state in SERVING_STATES and state not in SERVING_STATES and listed:
        grace_until = now.mono + timing.grace
    return replace(life, state=state, since=now.wall, grace_until=grace_until)
