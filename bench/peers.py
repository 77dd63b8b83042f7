"""Benchmark: jackfield's hub beside the aggregating proxies a user would pick instead.

Every aggregator runs as its own process tree over the same stdio servers (tests/servers/echo.py,
run by jackfield's Python) and serves them over streamable HTTP:
  - jackfield: `jackfield run --no-agent` (tests.support.process.Jackfield), one endpoint;
  - FastMCP (bench.peer_env, its own venv): one proxy mounted per server, one endpoint;
  - mcp-proxy (its own venv: it needs mcp 1.x): `--named-server-config`, one endpoint per server.
The floors run in this process: a direct mcp SDK stdio client per server and raw JSON-RPC over
each server's pipes (bench.tool_call's `direct` and `raw_pipes`).

One client implementation measures every HTTP target: the mcp SDK's streamable HTTP client in
this process (tests.support.process.hub_client), handshake-era protocol, one session per
endpoint shared by the callers (an agent's parallel tool calls). Samples are interleaved: each
round runs one batch per target, in an order that rotates; warm-up rounds are discarded. A
batch at concurrency C is C callers making PER_CALLER calls each, caller j on server j mod N.

Rows: call p50/p99 at 1, 10 and 50 callers with 2 B and 8 KB texts (the note: the aggregator
process's own CPU per call, from /proc, less sensitive to a noisy machine), calls/s at 50 callers,
`tools/list` of the whole catalog with 20 servers x 20 tools (mcp-proxy: its 20 endpoints read
at once), and RSS summed over each process tree with 10 servers (after the calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mcp import Client
from tests.servers import echo
from tests.support.process import (
    MARK,
    MARK_VAR,
    Proc,
    descendants,
    free_port,
    hub_client,
    jackfield_run,
    kill_all,
)

from bench import tool_call
from bench.common import PYTHON, REPO, Goal, Row, children, find, make_config, rss_mb, write
from bench.peer_env import FASTMCP, MCP_PROXY, WIDE_TOOLS, Peer, ensure

NAME = "peers"
CASES = tool_call.CASES
CONCURRENCY = (1, 10, 50)
SERVERS = 10
"""Servers behind every target for the calls and the memory rows."""
CATALOG_SERVERS = 20
PER_CALLER = 2
"""Calls each caller makes one after another in a batch."""
WARMUP = 20
"""Calls per target and row discarded before sampling (whole rounds)."""
READY = 180.0
"""Bound on an aggregator's start with every server connected (a loaded 2-core machine)."""

HUB = "jackfield hub"
FASTMCP_LABEL = f"FastMCP {FASTMCP.version}, proxies mounted"
MCP_PROXY_LABEL = f"mcp-proxy {MCP_PROXY.version}, named servers"
DIRECT = "direct mcp SDK stdio clients (floor)"
RAW = "raw JSON-RPC over pipes (floor)"
PEERS = (FASTMCP_LABEL, MCP_PROXY_LABEL)
PEER_ENV = Path(__file__).with_name("peer_env.py")
ECHO = ("-m", "tests.servers.echo")

Call = Callable[[int, str], Awaitable[str]]
"""(caller index, text) -> the text echoed by server index mod N."""


@dataclass
class Target:
    label: str
    call: Call
    list_all: Callable[[], Awaitable[int]]
    """Reads the whole catalog; the number of tools."""
    pids: Callable[[], list[int]]
    """The processes it runs on, for the memory row."""
    own: int | None = None
    """The aggregator's own pid (None for the floors)."""
    memory_note: str = ""


Ready = Callable[[contextlib.AsyncExitStack], Awaitable[Target]]
"""The second half of a launch: wait until it serves, connect the clients (in the caller's task,
on its exit stack)."""


def names(n: int) -> list[str]:
    return [f"s{i:02d}" for i in range(n)]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of one process so far (0 for none)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def text_of(content: Sequence[object]) -> str:
    return "".join(getattr(c, "text", "") for c in content)


async def catalog(client: Client) -> int:
    """Every page of tools/list, the SDK client's cache bypassed."""
    count, cursor = 0, None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        count += len(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return count


def server_doc(name: str, argv: Sequence[str]) -> str:
    """An MCPServer document for `python <argv>`. The connect timeout is raised from 10 s: the
    peers have none, and fifty servers start at once here."""
    args = ", ".join(f'"{a}"' for a in argv)
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  command: {PYTHON}\n  args: [{args}]\n  cwd: {REPO}\n"
        "  timeouts: {connect: 120}\n"
    )


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --- jackfield -----------------------------------------------------------------------------------


async def launch_hub(
    exits: contextlib.AsyncExitStack, work: Path, n: int, argv: Sequence[str]
) -> Ready:
    root = make_config(work / "config")
    for name in names(n):
        write(root / f"servers.d/{name}.yaml", server_doc(name, argv))
    process = exits.enter_context(jackfield_run(work / "run", root))

    async def ready(exits: contextlib.AsyncExitStack) -> Target:
        await asyncio.to_thread(process.servers_ready, *names(n), timeout=READY)
        client = await exits.enter_async_context(hub_client(process.hub_url))
        tools = [f"{name}_echo" for name in names(n)]

        async def call(i: int, text: str) -> str:
            return text_of((await client.call_tool(tools[i % n], {"text": text})).content)

        return Target(HUB, call, lambda: catalog(client), lambda: tree(process.pid), process.pid)

    return ready


# --- peers in their own venvs --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def peer_process(
    argv: Sequence[str], log: Path, *, announces: bool
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A peer in a session of its own; it and every process under it killed on the way out."""
    env = {**os.environ, MARK_VAR: MARK}
    with open(log, "wb") as err:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL, stderr=err,
            stdout=asyncio.subprocess.PIPE if announces else asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        seen: dict[int, Proc] = descendants(process.pid)
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        kill_all(seen)


async def announced_port(process: asyncio.subprocess.Process, log: Path) -> int:
    """The port of a `LISTENING <port>` line on the peer's stdout.

    Raises:
        RuntimeError: it exited or printed something else first.
    """
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), READY)
    if not line.startswith(b"LISTENING "):
        raise RuntimeError(f"peer exited ({process.returncode}) before serving:\n{tail(log)}")
    return int(line.split()[1])


async def accepting(process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    """Wait until `port` accepts connections (mcp-proxy binds once every server is up).

    Raises:
        RuntimeError: the process exited, or READY seconds went by.
    """
    deadline = time.monotonic() + READY
    while time.monotonic() < deadline:
        if process.returncode is not None:
            break
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError(f"peer not serving on {port} (exit {process.returncode}):\n{tail(log)}")


def servers_json(n: int, argv: Sequence[str]) -> dict[str, dict[str, object]]:
    return {name: {"command": PYTHON, "args": list(argv), "cwd": str(REPO)} for name in names(n)}


async def installed(peer: Peer) -> Path:
    return await asyncio.to_thread(ensure, peer)


async def launch_fastmcp(
    exits: contextlib.AsyncExitStack, work: Path, n: int, argv: Sequence[str]
) -> Ready:
    python = await installed(FASTMCP)
    spec, log = work / "fastmcp.json", work / "fastmcp.log"
    spec.write_text(json.dumps({"servers": servers_json(n, argv)}))
    process = await exits.enter_async_context(
        peer_process([str(python), str(PEER_ENV), "fastmcp", str(spec)], log, announces=True)
    )

    async def ready(exits: contextlib.AsyncExitStack) -> Target:
        port = await announced_port(process, log)
        client = await exits.enter_async_context(hub_client(f"http://127.0.0.1:{port}/mcp"))
        tools = [f"{name}_echo" for name in names(n)]

        async def call(i: int, text: str) -> str:
            return text_of((await client.call_tool(tools[i % n], {"text": text})).content)

        return Target(
            FASTMCP_LABEL, call, lambda: catalog(client), lambda: tree(process.pid), process.pid
        )

    return ready


async def launch_mcp_proxy(
    exits: contextlib.AsyncExitStack, work: Path, n: int, argv: Sequence[str]
) -> Ready:
    await installed(MCP_PROXY)
    config, log, port = work / "mcp-proxy.json", work / "mcp-proxy.log", free_port()
    config.write_text(json.dumps({"mcpServers": servers_json(n, argv)}))
    command = [
        str(MCP_PROXY.bin("mcp-proxy")), "--host", "127.0.0.1", "--port", str(port),
        "--named-server-config", str(config), "--pass-environment", "--log-level", "WARNING",
    ]  # fmt: skip
    process = await exits.enter_async_context(peer_process(command, log, announces=False))

    async def ready(exits: contextlib.AsyncExitStack) -> Target:
        await accepting(process, port, log)
        clients = [
            await exits.enter_async_context(
                hub_client(f"http://127.0.0.1:{port}/servers/{name}/mcp")
            )
            for name in names(n)
        ]

        async def call(i: int, text: str) -> str:
            return text_of((await clients[i % n].call_tool("echo", {"text": text})).content)

        async def list_all() -> int:
            return sum(await asyncio.gather(*(catalog(c) for c in clients)))

        return Target(MCP_PROXY_LABEL, call, list_all, lambda: tree(process.pid), process.pid)

    return ready


# --- the floors ----------------------------------------------------------------------------------


async def floors(exits: contextlib.AsyncExitStack, n: int) -> list[Target]:
    """n direct SDK stdio clients and n raw pipes, each on a server of its own."""
    before = set(children())
    directs = [await exits.enter_async_context(tool_call.direct()) for _ in range(n)]
    direct_pids = sorted(set(children()) - before)
    raws = [await exits.enter_async_context(tool_call.raw_pipes()) for _ in range(n)]
    locks = [asyncio.Lock() for _ in raws]  # raw_pipes reads one reply line per request

    async def direct(i: int, text: str) -> str:
        return await directs[i % n](text)

    async def raw(i: int, text: str) -> str:
        async with locks[i % n]:
            return await raws[i % n](text)

    async def unlisted() -> int:
        raise NotImplementedError

    return [
        Target(DIRECT, direct, unlisted, lambda: direct_pids, memory_note="the servers alone"),
        Target(RAW, raw, unlisted, list),
    ]


# --- measuring -----------------------------------------------------------------------------------


async def batch(target: Target, callers: int, text: str, out: list[float]) -> float:
    """`callers` callers making PER_CALLER calls each; the batch's wall seconds."""

    async def caller(j: int) -> None:
        for _ in range(PER_CALLER):
            started = time.perf_counter()
            got = await target.call(j, text)
            out.append(time.perf_counter() - started)
            if got != text:
                raise AssertionError(f"{target.label} answered {got[:40]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(caller(j) for j in range(callers)))
    return time.perf_counter() - started


async def measure_calls(targets: Sequence[Target], quick: bool) -> list[Row]:
    rows: list[Row] = []
    for case, text in CASES.items():
        for callers in CONCURRENCY:
            label = f"{case}, {callers} caller{'s' if callers > 1 else ''}"
            latency = {t.label: Row(NAME, f"call {label}", t.label, base=t.label == HUB)
                       for t in targets}  # fmt: skip
            rate = {
                t.label: Row(NAME, f"calls/s {label}", t.label, unit="calls/s", base=t.label == HUB)
                for t in targets
            }
            wanted = (40 if callers == 1 else 80) if quick else (300 if callers == 1 else 600)
            per_round = callers * PER_CALLER
            warm, rounds = math.ceil(WARMUP / per_round), math.ceil(wanted / per_round)
            order = list(targets)
            cpu = dict.fromkeys(latency, 0.0)
            for r in range(warm + rounds):
                order = order[1:] + order[:1]
                for target in order:
                    out: list[float] = []
                    before = cpu_seconds(target.own)
                    seconds = await batch(target, callers, text, out)
                    if r >= warm:
                        cpu[target.label] += cpu_seconds(target.own) - before
                        latency[target.label].samples += out
                        rate[target.label].samples.append(len(out) / seconds)
            for t in targets:
                if t.own is not None:  # its own process, during its own batches
                    spent = cpu[t.label] / len(latency[t.label].samples) * 1000
                    latency[t.label].note = rate[t.label].note = f"itself {spent:.1f} CPU ms/call"
            rows += latency.values()
            if callers == max(CONCURRENCY):
                rows += rate.values()
    return rows


async def measure_catalog(targets: Sequence[Target], quick: bool, expected: int) -> list[Row]:
    rows = {t.label: Row(NAME, f"tools/list {CATALOG_SERVERS} x {WIDE_TOOLS}", t.label,
                         base=t.label == HUB) for t in targets}  # fmt: skip
    order = list(targets)
    for r in range(2 + (8 if quick else 100)):
        order = order[1:] + order[:1]
        for target in order:
            started = time.perf_counter()
            got = await target.list_all()
            seconds = time.perf_counter() - started
            if got != expected:
                raise AssertionError(f"{target.label} listed {got} tools, not {expected}")
            if r >= 2:
                rows[target.label].samples.append(seconds)
    return list(rows.values())


def measure_memory(targets: Sequence[Target]) -> list[Row]:
    rows = []
    for t in targets:
        pids = t.pids()
        if not pids:
            continue
        total = sum(rss_mb(p) for p in pids)
        itself = f", itself {rss_mb(t.own):.0f} MB" if t.own else ""
        note = f"{len(pids)} processes{itself}" + (f", {t.memory_note}" if t.memory_note else "")
        rows.append(Row(NAME, f"RSS, {SERVERS} servers", t.label, [total], "MB",
                        t.label == HUB, note))  # fmt: skip
    return rows


Launch = Callable[[contextlib.AsyncExitStack, Path, int, Sequence[str]], Awaitable[Ready]]
LAUNCHES: list[Launch] = [launch_hub, launch_fastmcp, launch_mcp_proxy]


async def launched(
    exits: contextlib.AsyncExitStack, work: Path, n: int, argv: Sequence[str]
) -> list[Ready]:
    """Every aggregator started at once, so that their servers boot in parallel."""
    readies = []
    for launch in LAUNCHES:
        where = work / launch.__name__.removeprefix("launch_")
        where.mkdir(parents=True)
        readies.append(await launch(exits, where, n, argv))
    return readies


def progress(what: str, since: float) -> None:
    print(f"    peers: {what} ({time.perf_counter() - since:.0f} s)", file=sys.stderr, flush=True)


async def write_catalog(path: Path) -> None:
    """tests/servers/echo.py's tools/list, widened to WIDE_TOOLS with numbered echoes, as JSON
    (what `bench.peer_env wide` serves)."""
    state = echo.build_server(echo.parse_args([]))

    def numbered(text: str) -> str:
        return text

    for i in range(len(echo.ALL_TOOLS) + 1, WIDE_TOOLS + 1):
        state.mcp.add_tool(numbered, name=f"echo_{i:02d}", description=f"Echo number {i}.")
    async with Client(state.mcp) as client:
        tools = (await client.list_tools()).tools
    path.write_text(json.dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True)
                                for t in tools]))  # fmt: skip


async def on_stack(body: Callable[[contextlib.AsyncExitStack], Awaitable[list[Row]]]) -> list[Row]:
    """`body` on an exit stack of its own; an error it raises comes out after the stack is
    closed, not buried under the exception groups of every client's task group."""
    failure: Exception | None = None
    async with contextlib.AsyncExitStack() as exits:
        try:
            return await body(exits)
        except Exception as e:
            failure = e
    raise failure


async def run(quick: bool) -> list[Row]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:

        async def calls(exits: contextlib.AsyncExitStack) -> list[Row]:
            readies = await launched(exits, Path(tmp) / "calls", SERVERS, ECHO)
            floor = await floors(exits, SERVERS)  # while the aggregators boot
            targets = [await ready(exits) for ready in readies] + floor
            progress(f"{len(targets)} targets x {SERVERS} servers up", t0)
            for t in targets:  # every client knows every tool before the first sample
                await asyncio.gather(*(t.call(i, "warm") for i in range(SERVERS)))
            rows = await measure_calls(targets, quick) + measure_memory(targets)
            progress("calls measured", t0)
            return rows

        async def catalogs(exits: contextlib.AsyncExitStack) -> list[Row]:
            catalog_json = Path(tmp) / "catalog.json"
            await write_catalog(catalog_json)
            wide = ("-m", "bench.peer_env", "wide", str(catalog_json))
            readies = await launched(exits, Path(tmp) / "catalog", CATALOG_SERVERS, wide)
            targets = [await ready(exits) for ready in readies]
            progress(f"{len(targets)} aggregators x {CATALOG_SERVERS} servers up", t0)
            rows = await measure_catalog(targets, quick, CATALOG_SERVERS * WIDE_TOOLS)
            progress("catalog measured", t0)
            return rows

        return await on_stack(calls) + await on_stack(catalogs)


# --- goals ---------------------------------------------------------------------------------------


def goals(rows: list[Row]) -> list[Goal]:
    over: list[str] = []
    beaten: list[str] = []
    worst_added = -math.inf
    lost: list[str] = []
    for r in rows:
        if r.subject != HUB or not r.case.startswith("call "):
            continue
        direct = find(rows, r.case, DIRECT)
        added = r.p(50) - direct.p(50)
        worst_added = max(worst_added, added)
        cell = r.case.removeprefix("call ")
        over.append(f"{cell} {added:+.2f}")
        for peer in PEERS:
            try:
                other = find(rows, r.case, peer)
            except LookupError:
                continue
            for q in (50, 99):
                if r.p(q) >= other.p(q):
                    lost.append(
                        f"{cell} p{q} {r.p(q):.1f} vs {peer.split(',')[0]} {other.p(q):.1f}"
                    )
            beaten.append(cell)
    if not over:
        return []
    return [
        Goal(
            "peers, vs direct: hub call p50 <= direct + 1 ms at every concurrency",
            worst_added <= 1.0,
            "hub p50 minus direct p50, ms: " + "; ".join(over),
        ),
        Goal(
            "peers, vs peers: hub p50 and p99 below every peer's at every concurrency",
            not lost if beaten else None,
            f"{len(lost)} of {2 * len(beaten)} p50/p99 cells lost"
            + (": " + "; ".join(lost) if lost else ""),
        ),
    ]
