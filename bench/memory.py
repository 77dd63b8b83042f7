"""Benchmark 6: memory. Every figure is VmRSS from /proc, read inside a child process that runs
one role, after a garbage collection and a short pause:

- controller: `jackfield.app.App` (agent off) growing from 0 to 10 to 50 stdio echo servers.
  Only the controller's own process is counted, not the servers' or the warden's.
- job, jackfield: a LiveKit job process holding an AgentSession (scripted LLM) on a LiveAgent
  connected to a hub with 10 echo servers (run by this benchmark's own process). RSS per session
  is the growth from one to two concurrent sessions.
- job, livekit's own MCP: the same session with `Agent(tools=[MCPToolset(MCPServerStdio(...))])`
  for the same 10 servers; each session spawns its own 10 servers, so their RSS counts too.

Children: `python -m bench.memory controller 0,10,50 | job URL TOKEN | native N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REPO,
    TOKEN,
    Goal,
    Row,
    children,
    echo_doc,
    find,
    live_stack,
    make_config,
    rss_mb,
    run_child,
    unmeasured,
    until,
    write,
)

NAME = "memory"
JOB_SERVERS = 10
"""Servers behind each job's session (5 with --quick)."""
BATCH = 10
CONTROLLER = "controller process (servers excluded)"


async def settled_rss() -> float:
    gc.collect()
    await asyncio.sleep(1.0)
    gc.collect()
    return rss_mb()


# --- children ------------------------------------------------------------------------------------


def all_ready(app: Any, n: int) -> bool:
    states: dict[str, str] = app.manager.states()
    return sum(s == "Ready" for s in states.values()) == n


async def controller_child(sizes: list[int]) -> dict[str, float]:
    out = {"shell_imports": await settled_rss()}  # bench.common: reconciler, manager, hub
    from jackfield.app import App
    from jackfield.settings import Settings

    out["imports"] = await settled_rss()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = make_config(Path(tmp) / "config")
        settings = Settings(
            config_dir=root, database_url=f"sqlite:///{tmp}/state.db", status_port=0, hub_port=0,
            instance_id="bench", log_level="WARNING", allow_empty=True,
            _env_file=None,
        )  # fmt: skip
        app = App(settings, agent=False)
        task = asyncio.create_task(app.run())
        try:
            await until(lambda: app.readiness()[0] or task.done(), what="app ready")
            running = 0
            for n in sizes:
                for batch in range(running, n, BATCH):  # see bench.session_start.BATCH
                    top = min(n, batch + BATCH)
                    for k in range(batch, top):
                        write(root / f"servers.d/s{k}.yaml", echo_doc(f"s{k}"))
                    app.reconciler.trigger()
                    await until(functools.partial(all_ready, app, top), 300, f"{top} Ready")
                running = n
                out[str(n)] = await settled_rss()
        finally:
            app.request_stop()
            await asyncio.gather(task, return_exceptions=True)
    return out


async def job_child(url: str, token: str) -> dict[str, float]:
    from livekit.agents import AgentSession
    from tests.support.agent import ScriptedLLM

    from jackfield.shell.live_agent import live_agent

    out = {"imports": await settled_rss()}
    async with contextlib.AsyncExitStack() as exits:
        for k in (1, 2):
            agent = await exits.enter_async_context(live_agent(url, token, session_id=f"job-{k}"))
            llm = ScriptedLLM()
            session = await exits.enter_async_context(AgentSession(llm=llm))
            await session.start(agent)
            await session.run(user_input="hello")
            assert len(llm.last.tools) > 0
            out[f"sessions_{k}"] = await settled_rss()
    return out


async def native_child(n: int) -> dict[str, float]:
    from livekit.agents import Agent, AgentSession
    from livekit.agents.llm.mcp import MCPServerStdio, MCPToolset
    from tests.servers.echo import ALL_TOOLS
    from tests.support.agent import ScriptedLLM

    def only(name: str | None) -> Callable[[Any], bool]:
        return lambda tool: bool(tool.id == name)

    out = {"imports": await settled_rss()}
    async with contextlib.AsyncExitStack() as exits:
        for k in (1, 2):
            toolsets = [
                MCPToolset(
                    id=f"mcp-{k}-{i}",
                    mcp_server=MCPServerStdio(
                        PYTHON,
                        ["-m", "tests.servers.echo"],
                        cwd=REPO,
                        client_session_timeout_seconds=60,
                    ),
                )  # fmt: skip
                for i in range(n)
            ]
            for toolset in toolsets:
                exits.push_async_callback(toolset.aclose)
            await asyncio.gather(*(t.setup() for t in toolsets))
            # Without prefixes, identical servers' tools collide in one Agent (livekit refuses
            # duplicate names): keep one unique name per toolset; every server stays connected.
            for i, toolset in enumerate(toolsets):
                toolset.filter_tools(only(ALL_TOOLS[i] if i < len(ALL_TOOLS) else None))
            llm = ScriptedLLM()
            session = await exits.enter_async_context(AgentSession(llm=llm))
            await session.start(Agent(instructions="Benchmark agent.", tools=list(toolsets)))
            await session.run(user_input="hello")
            assert len(llm.last.tools) == min(n, len(ALL_TOOLS))
            out[f"sessions_{k}"] = await settled_rss()
            pids = children()
            out[f"servers_{k}"] = float(len(pids))
            out[f"servers_mb_{k}"] = sum(rss_mb(pid) for pid in pids)
    return out


def child_main(argv: list[str]) -> None:
    role, *rest = argv
    result: dict[str, Any]
    if role == "controller":
        result = asyncio.run(controller_child([int(v) for v in rest[0].split(",")]))
    elif role == "job":
        result = asyncio.run(job_child(rest[0], rest[1]))
    else:
        result = asyncio.run(native_child(int(rest[0])))
    print(json.dumps(result))


# --- the benchmark -------------------------------------------------------------------------------


async def controller_runs(runs: int, sizes: str) -> list[dict[str, float]]:
    return [
        json.loads(await run_child("bench.memory", "controller", sizes, timeout=900))
        for _ in range(runs)
    ]


Measures = list[dict[str, float]]


async def job_runs(runs: int, servers: int) -> tuple[Measures, Measures]:
    jobs: Measures = []
    natives: Measures = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-hub-") as tmp:
        root = make_config(Path(tmp))
        for k in range(servers):
            write(root / f"servers.d/s{k}.yaml", echo_doc(f"s{k}"))
        async with live_stack(root) as stack:
            await stack.ready([f"s{k}" for k in range(servers)], timeout=300)
            for _ in range(runs):
                job = await run_child("bench.memory", "job", stack.hub.url, TOKEN)
                jobs.append(json.loads(job))
                native = await run_child("bench.memory", "native", str(servers))
                natives.append(json.loads(native))
    return jobs, natives


async def run(quick: bool) -> list[Row]:
    # RSS does not depend on CPU contention, so the controller and the jobs run concurrently
    controllers, (jobs, natives) = await asyncio.gather(
        controller_runs(1, "0,10") if quick else controller_runs(2, "0,10,50"),
        job_runs(1, 5) if quick else job_runs(3, JOB_SERVERS),
    )
    rows: list[Row] = []
    case = CONTROLLER

    def controller_row(subject: str, key: str, base: bool = False) -> Row:
        return Row(NAME, case, subject, [c[key] for c in controllers], unit="MB", base=base)

    rows += [
        controller_row("imports: reconciler, manager, hub (no livekit)", "shell_imports"),
        controller_row("imports: + jackfield.app (pulls in livekit.agents)", "imports"),
    ]
    sizes = [n for n in ("0", "10", "50") if n in controllers[0]]
    for n in sizes:
        rows.append(controller_row(f"jackfield controller (App), {n} servers", n, n == "0"))
    top = int(sizes[-1])
    per_server = sum((c[str(top)] - c["0"]) / top for c in controllers) / len(controllers)
    rows[-1].note = f"{per_server:.2f} MB per server"
    case = f"job process, {5 if quick else JOB_SERVERS} servers"

    def mb_row(subject: str, values: list[float], base: bool = False, note: str = "") -> Row:
        return Row(NAME, case, subject, values, unit="MB", base=base, note=note)

    rows += [
        mb_row("jackfield job: livekit + jackfield imports", [j["imports"] for j in jobs]),
        mb_row("jackfield job: 1 session", [j["sessions_1"] for j in jobs]),
        mb_row(
            "jackfield: RSS per session (2nd session's growth)",
            [j["sessions_2"] - j["sessions_1"] for j in jobs],
            base=True,
        ),
        mb_row("livekit job: imports", [n["imports"] for n in natives]),
        mb_row(
            "livekit job: 1 session (job process + its servers)",
            [n["sessions_1"] + n["servers_mb_1"] for n in natives],
            note=f"job process {natives[0]['sessions_1']:.0f} MB",
        ),
        mb_row(
            "livekit: RSS per session (2nd session's growth + its servers)",
            [
                n["sessions_2"] - n["sessions_1"] + n["servers_mb_2"] - n["servers_mb_1"]
                for n in natives
            ],
            note=f"{natives[0]['servers_2'] - natives[0]['servers_1']:.0f} server processes "
            f"per session, {natives[0]['servers_mb_2'] - natives[0]['servers_mb_1']:.0f} MB",
        ),  # fmt: skip
    ]
    return rows


def goals(rows: list[Row]) -> list[Goal]:
    name = "memory: controller < 150 MB at 50 servers"
    jobs = next(r.case for r in rows if r.case.startswith("job process"))
    per = find(rows, jobs, "jackfield: RSS per session")
    native = find(rows, jobs, "livekit: RSS per session")
    sessions = (
        f"per session {per.value:.1f} MB in the job process vs {native.value:.0f} MB with "
        "per-session stdio servers"
    )
    try:
        fifty = find(
            rows, "controller process (servers excluded)", "jackfield controller (App), 50"
        )
    except LookupError:
        return [unmeasured(name, f"not measured with --quick; {sessions}")]
    return [Goal(name, fifty.value < 150, f"{fifty.value:.0f} MB ({fifty.note}); {sessions}")]


if __name__ == "__main__":
    child_main(sys.argv[1:])
