"""`python -m bench [--quick] [--only NAME]`: run the benchmarks, print one markdown table, the
goals, and a one-line summary last. Progress goes to stderr. `--quick` aims at under 4 minutes."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import platform
import resource
import sys
import time
import traceback
from importlib import metadata

from bench.common import Goal, Row, table

BENCHES = {
    "config": "bench.config_change",
    "session": "bench.session_start",
    "call": "bench.tool_call",
    "peers": "bench.peers",
    "reconcile": "bench.reconcile_scale",
    "status": "bench.status_load",
    "memory": "bench.memory",
    "voice": "bench.voice",
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo").read().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(
        f"{p} {metadata.version(p)}"
        for p in ("livekit-agents", "mcp", "watchfiles", "aiohttp", "SQLAlchemy", "jackfield")
    )
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {versions}; load average {load}"
    )


def cpu_seconds() -> float:
    """CPU time of this process and every child it has waited for (and theirs)."""
    own, kids = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples; under 4 minutes")
    parser.add_argument("--only", action="append", choices=sorted(BENCHES), help="repeatable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    print(f"machine: {machine()}", file=sys.stderr)
    rows: list[Row] = []
    goals: list[Goal] = []
    failed: list[str] = []
    for name, module_name in BENCHES.items():
        if args.only and name not in args.only:
            continue
        print(f"--- {name} ...", file=sys.stderr, flush=True)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        module = importlib.import_module(module_name)
        try:
            got: list[Row] = asyncio.run(module.run(args.quick))
            goals += module.goals(got)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        rows += got
        print(table(got), file=sys.stderr)
        cpu = cpu_seconds() - cpu0
        took = time.perf_counter() - t0
        print(f"--- {name}: {took:.0f} s wall, {cpu:.0f} CPU s", file=sys.stderr, flush=True)
    took = time.perf_counter() - started
    print(f"Machine at the end: {machine()}\n")
    print(table(rows))
    print()
    for g in goals:
        print(f"- [{g.verdict}] {g.name}: {g.measured}")
    print()
    measured = [g for g in goals if g.met is not None]
    met = sum(bool(g.met) for g in measured)
    verdicts = ", ".join(f"{g.name.split(':')[0]} {g.verdict.lower()}" for g in goals)
    errors = f"; FAILED: {', '.join(failed)}" if failed else ""
    mode = "quick" if args.quick else "full"
    print(f"bench ({mode}): {met}/{len(measured)} goals met ({verdicts}){errors}; {took:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
