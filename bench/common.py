"""Helpers shared by the benchmarks: samples and rows, goals, config dirs, the in-process stack.

The stack is the real one (reconciler -> manager -> hub over a temp config dir, real stdio echo
servers from tests/servers/echo.py, production timings); each benchmark adds the trigger or the
client it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.echo import ALL_TOOLS
from tests.support.controller import MemoryTarget as MemoryTarget  # shared with the tests
from tests.support.polling import until as until
from tests.support.process import direct_children
from tests.support.process import rss_mb as rss_mb
from tests.support.servers import echo_server

from jackfield.app import build
from jackfield.reconciler import Reconciler
from jackfield.settings import Settings
from jackfield.shell.hub import ToolHub
from jackfield.shell.servers import ServerManager

REPO = Path(__file__).resolve().parent.parent

PYTHON = sys.executable
TOKEN = "bench-hub-token-0123456789abcdef"
AGENT_YAML = (
    "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: bench}\n"
    "spec:\n  instructions: You are a benchmark agent.\n  servers: ['*']\n"
)
ECHO_NAMES = frozenset(ALL_TOOLS)
"""Tools of tests/servers/echo.py with no --tools flag."""
ECHO_TOOLS = len(ECHO_NAMES)


# --- samples, rows, goals ----------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Row:
    """One measured line. `unit` "ms": samples are seconds shown as ms percentiles; any other
    unit ("MB", "req/s"): samples are in that unit and the median is shown. `base` marks the
    jackfield row that the other rows of the same (bench, case, unit) are compared with."""

    bench: str
    case: str
    subject: str
    samples: list[float] = field(default_factory=list)
    unit: str = "ms"
    base: bool = False
    note: str = ""

    def p(self, q: float) -> float:
        """Percentile q in the row's display unit."""
        value = percentile(self.samples, q)
        return value * 1000 if self.unit == "ms" else value

    @property
    def value(self) -> float:
        """The headline number: p50 for latencies, the median otherwise."""
        if self.unit == "ms":
            return self.p(50)
        return statistics.median(self.samples) if self.samples else 0.0

    def cells(self) -> list[str]:
        if self.unit != "ms":
            return [f"{self.value:,.1f} {self.unit}", "", ""]
        return [_ms(self.p(q)) for q in (50, 95, 99)]


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def ratio(a: float, b: float) -> str:
    """a / b as text (two significant digits below 1), guarding b == 0."""
    if b <= 0:
        return "n/a"
    r = a / b
    return f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 1 else f"{r:.2g}x"


def table(rows: Sequence[Row]) -> str:
    """Markdown: latencies in ms (p50/p95/p99), other units as a median; the last column is the
    row's headline number divided by its jackfield base row's."""
    bases: dict[tuple[str, str, str], Row] = {}
    for r in rows:
        if r.base:
            bases.setdefault((r.bench, r.case, r.unit), r)
    lines = [
        "| benchmark | case | subject | p50 | p95 | p99 | n | ÷ jackfield | note |",
        "|---|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        base = bases.get((r.bench, r.case, r.unit))
        vs = "base" if r is base else (ratio(r.value, base.value) if base else "")
        unit = " (ms)" if r.unit == "ms" else ""
        cells = " | ".join(r.cells())
        lines.append(
            f"| {r.bench} | {r.case} | {r.subject}{unit} | {cells} | {len(r.samples)} | {vs} "
            f"| {r.note} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Goal:
    """A target from issue 8 and what was measured against it (met None: not measured)."""

    name: str
    met: bool | None
    measured: str

    @property
    def verdict(self) -> str:
        return "n/a" if self.met is None else "met" if self.met else "MISSED"


def unmeasured(name: str, why: str = "not measured with --quick") -> Goal:
    return Goal(name, None, why)


def find(rows: Sequence[Row], case: str, subject: str) -> Row:
    """The row with this case and subject (subjects match by prefix)."""
    for r in rows:
        if r.case == case and r.subject.startswith(subject):
            return r
    raise LookupError(f"no row {case!r} / {subject!r}")


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


# --- waiting, processes, memory ------------------------------------------------------------


def children(pid: int | str = "self") -> list[int]:
    """Direct child processes of `pid` (default: this one)."""
    return list(direct_children(None if pid == "self" else int(pid)))


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """Run every thread of this process on `cpus` (threads started meanwhile inherit it)."""
    tids = [int(t.name) for t in Path("/proc/self/task").iterdir()]
    before = os.sched_getaffinity(0)
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)
    try:
        yield
    finally:
        for t in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(t.name), before)


async def run_child(*args: str, timeout: float = 300.0) -> str:
    """Run `python -m <args>` from the repo root; its stdout. Killed on timeout or error.

    Raises:
        RuntimeError: the child exited non-zero.
    """
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", *args, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {process.returncode}")
    return out.decode()


# --- config ------------------------------------------------------------------------------------


def make_config(root: Path) -> Path:
    """A config dir: agent.yaml selecting every server, an empty servers.d/."""
    (root / "servers.d").mkdir(parents=True, exist_ok=True)
    (root / "agent.yaml").write_text(AGENT_YAML)
    return root


echo_doc = echo_server
"""An MCPServer document running tests/servers/echo.py over stdio."""


def write(path: Path, text: str) -> None:
    """Write the way editors do: a temp file, then an atomic rename."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


# --- the in-process stack ------------------------------------------------------------------------


@dataclass
class Stack:
    root: Path
    manager: ServerManager
    hub: ToolHub
    reconciler: Reconciler

    def path(self, relative: str) -> Path:
        return self.root / relative

    async def ready(self, names: Sequence[str], timeout: float = 120.0) -> None:
        states = self.manager.states
        await until(
            lambda: all(states().get(n) == "Ready" for n in names),
            timeout=timeout,
            what=f"{len(names)} server(s) Ready",
            interval=0.02,
        )

    async def settled(self, timeout: float = 60.0) -> None:
        await until(lambda: self.reconciler.settled, timeout=timeout, what="reconcile settled")


@contextlib.asynccontextmanager
async def live_stack(root: Path) -> AsyncIterator[Stack]:
    """reconciler -> manager -> hub over `root` (`app.build`), with production timings and no
    trigger but the first pass (callers trigger). The 60 s safety-net resync is off so it cannot
    skew timings."""
    settings = Settings(_env_file=None, config_dir=root, hub_port=0, resync_interval=24 * 3600.0)
    controller = build(settings, hub_token=TOKEN, env=dict(os.environ), watch=False)
    async with controller.running(first_pass=60):
        yield Stack(root, controller.manager, controller.hub, controller.reconciler)
