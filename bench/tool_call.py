"""Benchmark 3: the cost of one tool call through the hub, against calling the server directly.

Three paths to three identical stdio echo servers (tests/servers/echo.py), interleaved call by
call (the order rotates) so machine noise hits them alike:
  - hub: the agent's MCP client (HubLink: streamable HTTP, bearer token) -> hub -> manager
    (governor, cap, audit event) -> supervisor -> stdio echo;
  - direct: an mcp SDK `Client` on the server's stdio (the same mode jackfield's supervisor uses);
  - raw pipes: a hand-written JSON-RPC `tools/call` line on the server's stdin, one line read back
    from its stdout (the floor: the server's own work plus two pipe hops).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from bench.common import (
    PYTHON,
    REPO,
    TOKEN,
    Goal,
    Row,
    echo_doc,
    find,
    live_stack,
    make_config,
    write,
)
from jackfield.shell.hub_link import linked

NAME = "tool call"
CASES = {"echo 2 B": "hi", "echo 8 KB": "x" * 8192}
Call = Callable[[str], Awaitable[str]]


INSIDE: list[float] = []
"""Seconds each hub call spent in ServerManager.call (its CallEvent), the rest being HTTP+hub."""


@contextlib.asynccontextmanager
async def through_hub() -> AsyncIterator[Call]:
    with tempfile.TemporaryDirectory(prefix="bench-call-") as tmp:
        root = make_config(Path(tmp))
        write(root / "servers.d/echo.yaml", echo_doc("echo"))
        async with live_stack(root) as stack:
            await stack.ready(["echo"])
            stack.manager.observer = lambda event: INSIDE.append(event.seconds)
            async with linked(stack.hub.url, TOKEN, session_id="bench") as hub:

                async def call(text: str) -> str:
                    result = await hub.client.call_tool("echo_echo", {"text": text})
                    return _text(result.content)

                yield call


@contextlib.asynccontextmanager
async def direct() -> AsyncIterator[Call]:
    params = StdioServerParameters(command=PYTHON, args=["-m", "tests.servers.echo"], cwd=REPO)
    async with Client(params, mode="auto") as client:

        async def call(text: str) -> str:
            result = await client.call_tool("echo", {"text": text})
            return _text(result.content)

        yield call


@contextlib.asynccontextmanager
async def raw_pipes() -> AsyncIterator[Call]:
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "tests.servers.echo", cwd=REPO, limit=1 << 24,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    ids = iter(range(1, 1 << 62))

    async def request(message: dict[str, Any]) -> dict[str, Any] | None:
        stdin.write(json.dumps(message).encode() + b"\n")
        await stdin.drain()
        if "id" not in message:
            return None
        reply: dict[str, Any] = json.loads(await stdout.readline())
        return reply

    try:
        await request(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "bench-raw", "version": "0"}}}
        )  # fmt: skip
        await request({"jsonrpc": "2.0", "method": "notifications/initialized"})

        async def call(text: str) -> str:
            reply = await request(
                {"jsonrpc": "2.0", "id": next(ids), "method": "tools/call",
                 "params": {"name": "echo", "arguments": {"text": text}}}
            )  # fmt: skip
            assert reply is not None
            return str(reply["result"]["content"][0]["text"])

        yield call
    finally:
        stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


def _text(content: list[Any]) -> str:
    return "".join(getattr(c, "text", "") for c in content)


async def run(quick: bool) -> list[Row]:
    calls = 150 if quick else 3000
    warmup = 30
    rows: list[Row] = []
    subjects = {
        "hub (HubLink -> hub -> manager -> stdio)": through_hub,
        "direct mcp SDK stdio client": direct,
        "raw JSON-RPC over pipes (floor)": raw_pipes,
    }
    async with contextlib.AsyncExitStack() as exits:
        paths = {label: await exits.enter_async_context(make()) for label, make in subjects.items()}
        for case, text in CASES.items():
            case_rows = {
                label: Row(NAME, case, label, base=label.startswith("hub")) for label in paths
            }
            order = list(paths)
            inside = Row(NAME, case, "  of which inside ServerManager.call")
            for i in range(warmup + calls):
                order = order[1:] + order[:1]
                for label in order:
                    started = time.perf_counter()
                    got = await paths[label](text)
                    seconds = time.perf_counter() - started
                    if label.startswith("hub") and i >= warmup:
                        inside.samples.append(INSIDE[-1])
                    if got != text:
                        raise AssertionError(f"{label} answered {got[:40]!r}")
                    if i >= warmup:
                        case_rows[label].samples.append(seconds)
            hub, *others = case_rows.values()
            rows += [hub, inside, *others]
    return rows


def goals(rows: list[Row]) -> list[Goal]:
    hub, sdk = find(rows, "echo 2 B", "hub"), find(rows, "echo 2 B", "direct")
    floor = find(rows, "echo 2 B", "raw")
    added = hub.p(50) - sdk.p(50)
    return [
        Goal(
            "tool call: hub p50 <= direct + 1 ms",
            added <= 1.0,
            f"hub p50 {hub.p(50):.2f} ms, direct {sdk.p(50):.2f} ms (+{added:.2f} ms), "
            f"raw pipes {floor.p(50):.2f} ms",
        )
    ]
