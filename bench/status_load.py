"""Benchmark 5: the status endpoint under load at 100 servers, idle and during reconciles.

The controller is the real one: `jackfield.app.App` (manager, hub, reconciler, watcher, SQLite
store, StatusServer), agent off, with 100 MCPServers Ready. So that 100 servers cost one process,
they are streamable-HTTP servers that all point at one `tests/servers/echo.py --transport http`;
each is still its own supervised connection with its own tools and status.

The load comes from a separate process (bench/loadgen.py: keep-alive connections, one request at
a time each). The controller's threads are pinned to CPU 0 and the load generator to CPU 1, so
"requests per second" is what one core of jackfield serves. "During reconcile": back-to-back
passes, each after a one-file change (a tool-filter edit), for the whole window.
Alongside GET /status: the same bytes pre-rendered and served by a bare aiohttp handler (what a
cached status would cost) and GET /livez (the server's floor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from bench.common import (
    PYTHON,
    REPO,
    Goal,
    Row,
    Stopwatch,
    make_config,
    pinned,
    run_child,
    until,
    write,
)
from jackfield.app import App
from jackfield.settings import Settings

NAME = "status"
SERVERS = 100
CONNECTIONS = 32
CONTROLLER_CPU, LOAD_CPU = 0, 1


def http_doc(i: int, port: int, include: str = "*") -> str:
    return (
        f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: s{i}}}\nspec:\n"
        f"  description: Benchmark server number {i}\n  transport: http\n"
        f"  url: http://127.0.0.1:{port}/mcp\n  tools: {{include: ['{include}']}}\n"
        f"  prompt: Use the s{i} tools when asked.\n"
    )


@contextlib.asynccontextmanager
async def echo_http() -> AsyncIterator[int]:
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "tests.servers.echo", "--transport", "http", "--port", "0", cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        yield int(line.split()[1])
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def controller(root: Path, state: Path) -> AsyncIterator[App]:
    settings = Settings(
        config_dir=root, database_url=f"sqlite:///{state}", status_port=0, hub_port=0,
        instance_id="bench", log_level="WARNING", _env_file=None,
    )  # fmt: skip
    app = App(settings, agent=False)
    task = asyncio.create_task(app.run(), name="bench-app")
    try:
        await until(lambda: app.readiness()[0] or task.done(), timeout=120, what="app ready")
        states = app.manager.states
        await until(
            lambda: sum(s == "Ready" for s in states().values()) == SERVERS or task.done(),
            timeout=300,
            what=f"{SERVERS} servers Ready",
        )
        if task.done():
            await task
        yield app
    finally:
        app.request_stop()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def prerendered(body: bytes) -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/status", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/status"
    finally:
        await runner.cleanup()


async def reconcile_forever(app: App, root: Path, port: int, passes: list[float]) -> None:
    k = 0
    while True:
        k += 1
        write(root / "servers.d/s0.yaml", http_doc(0, port, include="echo" if k % 2 else "*"))
        started = time.perf_counter()
        app.reconciler.trigger()
        await asyncio.sleep(0)
        await until(lambda: app.reconciler.settled, what="pass done", interval=0.001)
        passes.append(time.perf_counter() - started)


async def load(url: str, seconds: float) -> dict[str, object]:
    out = await run_child(
        "bench.loadgen", url, "--connections", str(CONNECTIONS), "--seconds", str(seconds),
        "--warmup", str(min(1.0, seconds / 3)), "--cpu", str(LOAD_CPU),
    )  # fmt: skip
    result: dict[str, object] = json.loads(out)
    return result


async def run(quick: bool) -> list[Row]:
    seconds = 1.5 if quick else 10.0
    rows: list[Row] = []
    if len(os.sched_getaffinity(0)) < 2:
        raise RuntimeError("needs 2 CPUs: one for the controller, one for the load generator")
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        root = make_config(Path(tmp) / "config")
        async with echo_http() as port:
            for i in range(SERVERS):
                write(root / f"servers.d/s{i}.yaml", http_doc(i, port))
            async with controller(root, Path(tmp) / "state.db") as app:
                base = app.status_server.url
                body = json.dumps(app.status().to_json(), ensure_ascii=False, default=str).encode()
                async with prerendered(body) as cached:
                    targets = {
                        "GET /status (jackfield)": f"{base}/status",
                        "GET /status bytes pre-rendered (bare aiohttp)": cached,
                        "GET /livez (server floor)": f"{base}/livez",
                    }
                    for case in ("idle", "during reconcile"):
                        for label, url in targets.items():
                            rows += await window(app, root, port, case, label, url, seconds)
                rows[0].note = f"{len(body) / 1024:.0f} KB body, {CONNECTIONS} connections"
                rows += where_the_time_goes(app, 20 if quick else 200)
    return rows


def where_the_time_goes(app: App, repeats: int) -> list[Row]:
    """In-process cost of building one /status body, and of its parts (no HTTP, no load)."""
    case = f"one /status body, in-process, {SERVERS} servers"
    parts: dict[str, Callable[[], object]] = {
        "App.status() + to_json + json.dumps": lambda: json.dumps(
            app.status().to_json(), ensure_ascii=False, default=str
        ),
        "  ToolHub.status() (lists every tool)": app.hub.status,
        "  ServerManager.statuses()": app.manager.statuses,
    }
    rows = []
    for label, work in parts.items():
        row = Row(NAME, case, label, base=label.startswith("App"))
        for _ in range(repeats):
            with Stopwatch() as sw:
                work()
            row.samples.append(sw.seconds)
        rows.append(row)
    return rows


async def window(
    app: App, root: Path, port: int, case: str, label: str, url: str, seconds: float
) -> list[Row]:
    passes: list[float] = []
    with pinned({CONTROLLER_CPU}):
        churn = None
        if case != "idle":
            churn = asyncio.create_task(reconcile_forever(app, root, port, passes))
        try:
            result = await load(url, seconds)
        finally:
            if churn is not None:
                churn.cancel()
                await asyncio.gather(churn, return_exceptions=True)
    latencies = [float(v) / 1000 for v in result["latencies_ms"]]  # type: ignore[attr-defined]
    rate = float(result["requests"]) / float(result["seconds"])  # type: ignore[arg-type]
    jackfield = label.startswith("GET /status (")
    notes = [f"{result['errors']} errors"] if result["errors"] else []
    if passes:
        median = sorted(passes)[len(passes) // 2]
        notes.append(f"{len(passes)} passes in the window, p50 {median * 1000:,.0f} ms")
    note = "; ".join(notes)
    return [
        Row(NAME, f"{case}, {SERVERS} servers", label, latencies, base=jackfield, note=note),
        Row(NAME, f"{case}, {SERVERS} servers", label, [rate], unit="req/s", base=jackfield),
    ]


def goals(rows: list[Row]) -> list[Goal]:
    case_idle, case_busy = f"idle, {SERVERS} servers", f"during reconcile, {SERVERS} servers"
    idle = [r for r in rows if r.case == case_idle and r.subject.startswith("GET /status (")]
    busy = [r for r in rows if r.case == case_busy and r.subject.startswith("GET /status (")]
    idle_rate = next(r for r in idle if r.unit == "req/s").value
    busy_rate = next(r for r in busy if r.unit == "req/s").value
    busy_lat = next(r for r in busy if r.unit == "ms")
    livez = [r for r in rows if r.case == case_idle and r.subject.startswith("GET /livez")]
    livez_rate = next(r for r in livez if r.unit == "req/s").value
    return [
        Goal(
            "status: >= 3,000 req/s on one core at 100 servers",
            idle_rate >= 3000,
            f"GET /status {idle_rate:,.0f} req/s idle, {busy_rate:,.0f} req/s during reconcile "
            f"(GET /livez {livez_rate:,.0f} req/s)",
        ),
        Goal(
            "status: p99 < 50 ms during reconcile",
            busy_lat.p(99) < 50,
            f"p99 {busy_lat.p(99):.0f} ms with {CONNECTIONS} connections "
            f"(p50 {busy_lat.p(50):.1f} ms)",
        ),
    ]
