"""Benchmark 2: session start until the session's tools are ready, with 1, 10 and 50 servers.

- jackfield: the servers already run under the controller; a session is `live_agent(...)`
  (connect to the hub, fetch the instructions, list the tools, build the LiveAgent). Timed from
  entering the context manager until the agent exists with every tool.
- livekit-agents' own stdio MCP: what `AgentSession.start` does for `mcp_servers`
  (agent_activity._setup_toolsets): one `MCPToolset(MCPServerStdio(...))` per server, all set up
  concurrently (spawn, initialize, list_tools). Timed until every toolset has its tools; then the
  servers are closed (untimed).
Both use tests/servers/echo.py (all its tools). MCPServerStdio gets a 60 s session timeout, not
its 5 s default, so a slow spawn under load is measured rather than failed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from livekit.agents.llm.mcp import MCPServerStdio, MCPToolset

from bench.common import (
    ECHO_NAMES,
    ECHO_TOOLS,
    PYTHON,
    REPO,
    TOKEN,
    Goal,
    Row,
    Stack,
    echo_doc,
    find,
    live_stack,
    make_config,
    ratio,
    write,
)
from jackfield.shell.live_agent import live_agent

NAME = "session start"
SIZES = (1, 10, 50)
BATCH = 10


async def jackfield_session(stack: Stack, n: int, i: int) -> float:
    started = time.perf_counter()
    async with live_agent(stack.hub.url, TOKEN, session_id=f"job-bench-{n}-{i}") as agent:
        seconds = time.perf_counter() - started
        if len(agent.tools) != n * ECHO_TOOLS:
            raise AssertionError(
                f"jackfield session: {len(agent.tools)} tools, not {n * ECHO_TOOLS}"
            )
    return seconds


async def livekit_session(n: int, i: int) -> float:
    toolsets = [
        MCPToolset(
            id=f"mcp-{i}-{k}",
            mcp_server=MCPServerStdio(
                PYTHON, ["-m", "tests.servers.echo"], cwd=REPO, client_session_timeout_seconds=60
            ),
        )
        for k in range(n)
    ]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(t.setup() for t in toolsets))
        seconds = time.perf_counter() - started
        tools = sum(len({t.id for t in ts.tools} & ECHO_NAMES) for ts in toolsets)
        if tools != n * ECHO_TOOLS:
            raise AssertionError(f"livekit session has {tools} echo tools, not {n * ECHO_TOOLS}")
        return seconds
    finally:
        await asyncio.gather(*(t.aclose() for t in toolsets), return_exceptions=True)


async def run(quick: bool) -> list[Row]:
    jf_samples = 8 if quick else 60
    lk_samples = {1: 2, 10: 1, 50: 0} if quick else {1: 15, 10: 8, 50: 4}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-session-") as tmp:
        root = make_config(Path(tmp))
        async with live_stack(root) as stack:
            running = 0
            for n in SIZES:
                # Grow the controller to n servers, BATCH at a time: all 40 at once would make
                # 40 Python processes start together on a small machine and blow the 10 s connect
                # timeout (see docs/BENCHMARKS.md); that is not what this benchmark measures.
                for batch in range(running, n, BATCH):
                    for k in range(batch, min(n, batch + BATCH)):
                        write(root / f"servers.d/s{k}.yaml", echo_doc(f"s{k}"))
                    stack.reconciler.trigger()
                    await stack.ready([f"s{k}" for k in range(min(n, batch + BATCH))], 300)
                running = n
                await stack.settled()
                jf = Row(NAME, f"{n} servers", "jackfield (live_agent via hub)", base=True)
                lk = Row(NAME, f"{n} servers", "livekit MCPServerStdio per session")
                for i in range(max(jf_samples, lk_samples[n])):
                    if i < lk_samples[n]:
                        lk.samples.append(await livekit_session(n, i))
                    if i < jf_samples:
                        jf.samples.append(await jackfield_session(stack, n, i))
                jf.note = f"{n * ECHO_TOOLS} tools"
                rows += [jf, lk] if lk.samples else [jf]
    return rows


def goals(rows: list[Row]) -> list[Goal]:
    jf10, lk10 = find(rows, "10 servers", "jackfield"), find(rows, "10 servers", "livekit")
    jf1, jf50 = find(rows, "1 servers", "jackfield"), find(rows, "50 servers", "jackfield")
    lk50 = next(
        (r for r in rows if r.case == "50 servers" and r.subject.startswith("livekit")), None
    )
    at50 = f"at 50 servers {ratio(lk50.value, jf50.value)}" if lk50 else "50 not run with --quick"
    speedup = lk10.value / jf10.value if jf10.value else 0.0
    growth = jf50.value / jf1.value if jf1.value else 0.0
    return [
        Goal(
            "session start: >= 20x faster than per-session stdio at 10 servers",
            speedup >= 20,
            f"jackfield p50 {jf10.value:.0f} ms vs livekit {lk10.value:,.0f} ms "
            f"({speedup:,.0f}x); livekit {at50}",
        ),
        Goal(
            "session start: flat in the number of servers",
            growth < 2,
            f"jackfield p50 {jf1.value:.0f} ms at 1, {jf10.value:.0f} ms at 10, "
            f"{jf50.value:.0f} ms at 50 servers ({growth:.1f}x from 1 to 50; flat means < 2x)",
        ),
    ]
