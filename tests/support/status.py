"""A status provider standing in for the app, and a real StatusServer on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jackfield.core.activity import Activity
from jackfield.core.status import (
    AgentStatus,
    Condition,
    ConfigStatus,
    HistoryEntry,
    HubStatus,
    ServerStatus,
    Status,
    WatcherStatus,
)
from jackfield.shell.http import StatusServer
from jackfield.shell.metrics import Metrics
from jackfield.shell.redaction import redact

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
APPLIED = "sha256:" + "a1" * 32
ATTEMPTED = "sha256:" + "b2" * 32
HOSTILE = "<script>alert('x')</script>"

SERVERS = (
    ServerStatus(
        "time",
        "stdio",
        "Ready",
        T0,
        tools=("time_get_current_time", "time_convert_time"),
        last_connected=T0,
        description="Current time and time zones.",
    ),
    ServerStatus("files", "stdio", "Connecting", T0),
    ServerStatus("queued", "http", "Pending", T0),
    ServerStatus(
        "search",
        "http",
        "Degraded",
        T0,
        tools=("search_web",),
        conflicts=("search_web: kept by server search",),
    ),
    ServerStatus(
        "flaky",
        "stdio",
        "Backoff",
        T0,
        restarts=3,
        next_retry_at=T0 + timedelta(seconds=8),
        last_error="ConnectionError: the process exited with code 1",
        stderr_tail="Traceback (most recent call last):\n  boom",
    ),
    ServerStatus(
        "broken",
        "http",
        "Failed",
        T0,
        restarts=1,
        last_error=f"HTTP 401 from server {HOSTILE}",
    ),
    ServerStatus("off", "stdio", "Disabled", T0),
)


def sample_status(*, ready: bool = True, servers: tuple[ServerStatus, ...] = SERVERS) -> Status:
    conditions: tuple[Condition, ...] = (
        Condition(
            "Ready",
            "True" if ready else "False",
            "ReconciliationSucceeded" if ready else "ValidationFailed",
            "applied 7 servers" if ready else "1 error in servers.d/bad.yaml",
            T0,
        ),
    )
    if not ready:
        conditions += (Condition("Stalled", "True", "ValidationFailed", "fix the file", T0),)
    return Status(
        ready=ready,
        config=ConfigStatus(
            applied_revision=APPLIED,
            attempted_revision=APPLIED if ready else ATTEMPTED,
            git_commit="0123456789abcdef0123456789abcdef01234567",
            applied_at=T0,
            observed_generation=4,
            conditions=conditions,
            errors=()
            if ready
            else (
                {
                    "file": "servers.d/bad.yaml",
                    "line": 5,
                    "column": 3,
                    "message": "unknown field 'comand'; did you mean 'command'?",
                },
            ),
            history=(HistoryEntry(APPLIED, T0, "applied", 7),),
        ),
        servers=servers,
        agent=AgentStatus(enabled=False, reason="LIVEKIT_URL not set"),
        hub=HubStatus(url="http://127.0.0.1:8765/mcp", tools=3, sessions=1),
        watcher=WatcherStatus("Watching", last_event_at=T0),
        store={"state": "Ok", "message": None},
    )


def many_servers(count: int) -> tuple[ServerStatus, ...]:
    """`count` servers as a fleet looks: mostly Ready with a few tools, one in ten in trouble
    (each of the other states of SERVERS in turn)."""
    healthy, *others = SERVERS
    out = []
    for i in range(count):
        base = others[(i // 10) % len(others)] if i % 10 == 9 else healthy
        name = f"s{i:03d}-{base.name}"
        verbs = ("search", "read", "write")[: 1 + i % 3]
        tools = tuple(f"{name.replace('-', '_')}_{v}" for v in verbs) if base.tools else ()
        out.append(replace(base, name=name, tools=tools))
    return tuple(out)


def recorded_activity(servers: tuple[ServerStatus, ...], now: float, *, seed: int = 20) -> Activity:
    """Half an hour of made-up traffic before `now`: transitions (every server connects, and
    the troubled ones flap), calls to the serving ones, and reconcile passes. Seeded."""
    rng = random.Random(seed)
    activity = Activity(mask=redact)
    start = now - 29.5 * 60

    def at(seconds: float, states: dict[str, str]) -> None:
        stamp = datetime.fromtimestamp(seconds, UTC)
        activity.observe(
            seconds,
            [replace(s, state=states.get(s.name, s.state), since=stamp) for s in servers],  # type: ignore[arg-type]
        )

    at(start, {s.name: "Connecting" for s in servers})
    troubled = [s.name for s in servers if s.state in ("Backoff", "Failed", "Degraded")]
    at(
        start + 20,
        {s.name: "Ready" for s in servers if s.state != "Disabled"}
        | {s.name: "Disabled" for s in servers if s.state == "Disabled"},
    )
    for k, moment in enumerate((9, 14, 21, 26)):
        at(start + moment * 60, dict.fromkeys(troubled, "Backoff" if k % 2 == 0 else "Ready"))
    at(now - 30, {})
    serving = [s for s in servers if s.state in ("Ready", "Degraded", "Backoff") and s.tools]
    callers = ("caller:alice", "caller:bob", "sip:+15550100")
    for s in serving:
        rate = rng.uniform(0.5, 6.0)
        failing = s.state != "Ready"
        t = start + rng.uniform(0, 60)
        while t < now - 1:
            outcome = "error" if rng.random() < (0.25 if failing else 0.02) else "ok"
            if rng.random() < 0.01:
                outcome = "rejected:rate"
            activity.call(
                t,
                server=s.name,
                tool=rng.choice(s.tools),
                outcome=outcome,
                seconds=rng.lognormvariate(-3.5 if not failing else -2.0, 0.6),
                session=f"{rng.getrandbits(64):016x}",
                caller=rng.choice(callers),
            )
            t += rng.expovariate(rate / 60)
    for k in range(30):
        outcome = "failed" if k == 22 else ("applied" if k in (0, 12, 23) else "noop")
        activity.reconciled(
            start + k * 60,
            outcome=outcome,
            revision=APPLIED if k != 22 else ATTEMPTED,
            changes=3 if outcome == "applied" else 0,
            errors=1 if outcome == "failed" else 0,
            seconds=rng.uniform(0.002, 0.04),
        )
    return activity


class FakeProvider:
    """Answers from fields the test sets; counts status() calls to prove probes avoid it."""

    def __init__(self, status: Status | None = None) -> None:
        self.current = status or sample_status()
        self.alive: tuple[bool, str] = (True, "")
        self.ready: tuple[bool, str] = (True, "")
        self.status_calls = 0

    def status(self) -> Status:
        self.status_calls += 1
        return self.current

    def liveness(self) -> tuple[bool, str]:
        return self.alive

    def readiness(self) -> tuple[bool, str]:
        return self.ready


@asynccontextmanager
async def serving(
    provider: FakeProvider | None = None,
    *,
    token: str | None = None,
    metrics: Metrics | None = None,
    status_ttl: float = 0.0,
    host: str = "127.0.0.1",
    allowed_hosts: tuple[str, ...] = (),
    activity: Activity | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[tuple[StatusServer, FakeProvider]]:
    """A started StatusServer on 127.0.0.1 with a kernel-chosen port, stopped on exit.
    Status documents are not reused (`status_ttl=0`) unless a test asks for it."""
    fake = provider or FakeProvider()
    server = StatusServer(
        fake,
        metrics or Metrics(lambda: fake.current.servers),
        host=host,
        port=0,
        token=token,
        status_ttl=status_ttl,
        allowed_hosts=allowed_hosts,
        activity=activity,
        clock=clock,
    )
    await server.start()
    try:
        yield server, fake
    finally:
        await server.stop()


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


JACKFIELD = Path(sys.executable).parent / "jackfield"


async def run_cli(*args: str, cwd: Path, timeout: float = 60.0) -> Ran:
    """The installed `jackfield` console script, run without blocking the loop the server is in.

    The environment drops JACKFIELD_* so the developer's settings cannot leak into the test.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JACKFIELD_")}
    process = await asyncio.create_subprocess_exec(
        str(JACKFIELD),
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())
