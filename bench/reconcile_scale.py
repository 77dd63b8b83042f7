"""Benchmark 4: reconcile passes at 10, 100 and 500 servers: the first (full) pass, a no-op pass
(nothing changed) and a one-file change (a tool-filter edit of one server), each without a store
and with a real SQLite store (jackfield.shell.store.Store) to show the store's share. The
alternative is a naive reload: stop everything and start everything from the same files.

At 10 servers the live target is the real ServerManager with stdio echo servers; its naive reload
is timed until every server is Ready again. At 100 and 500 an in-memory LiveTarget stands in (500
processes are too heavy here), so those rows are the controller's own cost: scan, parse,
validate, expand, plan, apply bookkeeping, store writes, git-commit lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.common import (
    Goal,
    MemoryTarget,
    Row,
    echo_doc,
    find,
    make_config,
    until,
    write,
)
from jackfield.reconciler import LiveTarget, Reconciler
from jackfield.shell.persistence import Persistence
from jackfield.shell.servers import ServerManager
from jackfield.shell.store import Store

NAME = "reconcile"
SIZES = (10, 100, 500)
REAL_UP_TO = 10
"""Sizes up to this run real stdio echo servers; larger ones the in-memory target."""


def server(i: int, include: str = "*") -> str:
    env = f"  env: {{TOKEN: '${{BENCH_TOKEN_{i}:-none}}'}}\n"
    return echo_doc(f"s{i}", extra=f"  tools: {{include: ['{include}']}}\n{env}")


async def clear(target: LiveTarget, names: list[str]) -> None:
    """Stop the servers concurrently (as the manager does on shutdown)."""
    await asyncio.gather(*(target.remove(name) for name in names))


@contextlib.asynccontextmanager
async def store_at(url: str | None) -> AsyncIterator[Persistence | None]:
    if url is None:
        yield None
        return
    persistence = Persistence(url, instance_id="bench")
    persistence.attach(await Store.open(url, instance_id="bench"))
    try:
        yield persistence
    finally:
        await persistence.close()


async def all_ready(manager: ServerManager, n: int) -> None:
    states = manager.states
    await until(
        lambda: sum(s == "Ready" for s in states().values()) == n, timeout=300, what="Ready"
    )


async def series(
    root: Path, n: int, target: LiveTarget, store_url: str | None, reps: dict[str, int]
) -> dict[str, list[float]]:
    """Full passes on fresh reconcilers (and fresh databases), then no-op and one-file-change
    passes on the last one."""
    names = [f"s{i}" for i in range(n)]
    out: dict[str, list[float]] = {"full": [], "noop": [], "change": []}
    for rep in range(reps["full"]):
        await clear(target, names)
        write(root / "servers.d/s0.yaml", server(0))
        url = f"{store_url}-{rep}.db" if store_url else None
        async with store_at(url) as store:
            reconciler = Reconciler(config_dir=root, env={}, target=target, store=store)
            started = time.perf_counter()
            result = await reconciler.reconcile_once()
            out["full"].append(time.perf_counter() - started)
            assert result.outcome == "applied", result
            if isinstance(target, ServerManager):
                await all_ready(target, n)
            if rep < reps["full"] - 1:
                continue
            for _ in range(reps["noop"]):
                started = time.perf_counter()
                result = await reconciler.reconcile_once()
                out["noop"].append(time.perf_counter() - started)
                assert result.outcome == "noop", result
            for k in range(reps["change"]):
                write(root / "servers.d/s0.yaml", server(0, f"t{k}_*"))
                started = time.perf_counter()
                result = await reconciler.reconcile_once()
                out["change"].append(time.perf_counter() - started)
                assert result.outcome == "applied" and len(result.changes) == 1, result
    return out


async def naive(root: Path, n: int, target: LiveTarget, reps: int) -> list[float]:
    """Stop every server, then start every server from the files (until Ready when real)."""
    names = [f"s{i}" for i in range(n)]
    samples = []
    for rep in range(reps):
        if rep:  # the series before left everything running
            await clear(target, names)  # untimed: get to "all running" first
            await Reconciler(config_dir=root, env={}, target=target, store=None).reconcile_once()
        if isinstance(target, ServerManager):
            await all_ready(target, n)
        started = time.perf_counter()
        await clear(target, names)
        await Reconciler(config_dir=root, env={}, target=target, store=None).reconcile_once()
        if isinstance(target, ServerManager):
            await all_ready(target, n)
        samples.append(time.perf_counter() - started)
    return samples


async def run(quick: bool) -> list[Row]:
    reps = {"full": 1, "noop": 6, "change": 6} if quick else {"full": 5, "noop": 100, "change": 100}
    rows: list[Row] = []
    for n in SIZES:
        case = f"{n} servers"
        real = n <= REAL_UP_TO
        with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
            root = make_config(Path(tmp) / "config")
            for i in range(n):
                write(root / f"servers.d/s{i}.yaml", server(i))
            async with contextlib.AsyncExitStack() as exits:
                target: LiveTarget = (
                    await exits.enter_async_context(ServerManager()) if real else MemoryTarget()
                )
                bare = await series(root, n, target, None, reps)
                # --quick: the store's share is shown at 100 and 500 only (saves 10 spawns)
                stored = (
                    await series(root, n, target, f"sqlite:///{tmp}/state", reps)
                    if not (quick and real)
                    else None
                )
                slow = await naive(root, n, target, reps["full"])
                await clear(target, [f"s{i}" for i in range(n)])
        what = "stdio echo servers" if real else "in-memory target"
        for label, key in (("full pass", "full"), ("no-op pass", "noop")):
            rows.append(Row(NAME, case, f"{label}, no store", bare[key], note=what))
            if stored is not None:
                rows.append(Row(NAME, case, f"{label}, SQLite store", stored[key]))
        rows.append(Row(NAME, case, "one-file change, no store", bare["change"]))
        if stored is not None:
            rows.append(Row(NAME, case, "one-file change, SQLite store", stored["change"]))
        rows[-1].base = True  # the store's row when there is one
        until_ready = " until all Ready" if real else ""
        rows.append(Row(NAME, case, f"naive reload (stop all, start all{until_ready})", slow))
    return rows


def change_row(rows: list[Row], n: int) -> Row:
    """The one-file change with the store, or without when --quick skipped the store."""
    try:
        return find(rows, f"{n} servers", "one-file change, SQLite")
    except LookupError:
        return find(rows, f"{n} servers", "one-file change, no store")


def goals(rows: list[Row]) -> list[Goal]:
    noop = find(rows, "500 servers", "no-op pass, SQLite")
    changes = {n: change_row(rows, n).p(50) for n in SIZES}
    spread = max(changes.values()) / min(changes.values())
    text = ", ".join(f"{v:.1f} ms at {n}" for n, v in changes.items())
    return [
        Goal(
            "reconcile: no-op pass at 500 servers < 50 ms",
            noop.p(50) < 50,
            f"p50 {noop.p(50):.1f} ms, p99 {noop.p(99):.1f} ms",
        ),
        Goal(
            "reconcile: one-file change independent of the total",
            spread < 2,
            f"p50 {text} ({spread:.1f}x from smallest to largest; independent means < 2x)",
        ),
    ]
