"""A status provider standing in for the app, and a real StatusServer on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
