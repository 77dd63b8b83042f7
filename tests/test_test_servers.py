"""The test servers in tests/servers/ work, proven with the SDK's own client (and raw wires)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx2
import mcp.types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import LATEST_HANDSHAKE_VERSION

from tests.servers.echo import ALL_TOOLS
from tests.servers.launch import REPO_ROOT, Process, spawn
from tests.support.process import rss_mb

WAIT = 15.0  # bound on anything we wait for; never reached when things work
INIT_PARAMS = {
    "protocolVersion": LATEST_HANDSHAKE_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "0"},
}


def stdio_params(*args: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "tests.servers.echo", *args], cwd=REPO_ROOT, env=env
    )


def text(result: types.CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, types.TextContent)
    return block.text


async def check_echo_server(client: Client) -> None:
    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == set(ALL_TOOLS)
    assert text(await client.call_tool("echo", {"text": "hello"})) == "hello"
    assert text(await client.call_tool("add", {"a": 2, "b": 40})) == "42"


# --------------------------------------------------------------------------- raw JSON-RPC helpers


async def send_json(process: Process, message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message).encode() + b"\n")
    await process.stdin.drain()


async def read_line(stream: asyncio.StreamReader | None) -> bytes:
    assert stream is not None
    async with asyncio.timeout(WAIT):
        return await stream.readline()


async def wait_exit(process: Process) -> int:
    async with asyncio.timeout(WAIT):
        return await process.wait()


async def handshake(process: Process) -> None:
    await send_json(
        process, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
    )
    reply = json.loads(await read_line(process.stdout))
    assert reply["id"] == 1 and "result" in reply
    await send_json(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})


# --------------------------------------------------------------------------- echo: transports


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stdio_echo_lists_and_calls(mode: str) -> None:
    async with Client(stdio_params(), mode=mode) as client:
        assert client.server_info is not None and client.server_info.name == "echo"
        await check_echo_server(client)


async def test_stdio_echo_other_tools_and_flags() -> None:
    params = stdio_params(
        "--name", "other", "--tools", "echo,big,env,fail,pid", env={"JF_X": "yes"}
    )
    async with Client(params, mode="legacy") as client:
        assert client.server_info is not None and client.server_info.name == "other"
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == {"echo", "big", "env", "fail", "pid"}
        big = text(await client.call_tool("big", {"n": 1000}))
        assert len(big) == 1000 and big.startswith("BEGINx") and big.endswith("xEND")
        assert text(await client.call_tool("env", {"name": "JF_X"})) == "yes"
        assert text(await client.call_tool("env", {"name": "JF_UNSET_VAR"})) == ""
        failed = await client.call_tool("fail", {"message": "kaput"})
        assert failed.is_error and "kaput" in text(failed)
        pid = int(text(await client.call_tool("pid", {})))
        assert pid != os.getpid()


async def test_http_echo() -> None:
    async with spawn("-m", "tests.servers.echo", "--transport", "http", "--port", "0") as (_, port):
        for mode in ("legacy", "auto"):
            async with Client(f"http://127.0.0.1:{port}/mcp", mode=mode) as client:
                await check_echo_server(client)
                assert text(await client.call_tool("slow", {"seconds": 0.01})) == "slept 0.01"


async def test_sse_echo() -> None:
    async with spawn("-m", "tests.servers.echo", "--transport", "sse", "--port", "0") as (_, port):
        async with Client(sse_client(f"http://127.0.0.1:{port}/sse"), mode="legacy") as client:
            await check_echo_server(client)


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_require_token(transport: str) -> None:
    args = ("--transport", transport, "--port", "0", "--require-token", "s3cret")
    async with spawn("-m", "tests.servers.echo", *args) as (_, port):
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            if transport == "http":
                request = http.post(
                    f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
                )
            else:
                request = http.get(f"{base}/sse")
            async with request as response:
                assert response.status == 401
        headers = {"Authorization": "Bearer s3cret"}
        async with contextlib.AsyncExitStack() as stack:
            if transport == "http":
                client_http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers))
                conn = streamable_http_client(f"{base}/mcp", http_client=client_http)
            else:
                conn = sse_client(f"{base}/sse", headers=headers)
            client = await stack.enter_async_context(Client(conn, mode="legacy"))
            assert text(await client.call_tool("echo", {"text": "in"})) == "in"


async def test_http_session_expiry() -> None:
    args = ("--transport", "http", "--port", "0", "--session-expiry", "1")
    accept = {"Accept": "application/json, text/event-stream"}
    async with spawn("-m", "tests.servers.echo", *args) as (_, port):
        url = f"http://127.0.0.1:{port}/mcp"
        async with aiohttp.ClientSession(headers=accept) as http:
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
            async with http.post(url, json=init) as response:
                assert response.status == 200
                sid = response.headers["Mcp-Session-Id"]
                await response.read()
            headers = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST_HANDSHAKE_VERSION}
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            async with http.post(url, json=note, headers=headers) as response:
                assert response.status == 202
            statuses: list[int] = []
            async with asyncio.timeout(WAIT):
                while not statuses or statuses[-1] != 404:
                    ping = {"jsonrpc": "2.0", "id": len(statuses) + 2, "method": "ping"}
                    async with http.post(url, json=ping, headers=headers) as response:
                        statuses.append(response.status)
                        await response.read()
                    await asyncio.sleep(0.05)
            assert statuses[0] == 200 and set(statuses) == {200, 404}


async def test_list_changed_reaches_a_handshake_client() -> None:
    changed = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    params = stdio_params("--list-changing", "0.1")
    async with Client(params, mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools is not None
        assert client.server_capabilities.tools.list_changed
        with anyio.fail_after(WAIT):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert set(ALL_TOOLS) <= names <= {*ALL_TOOLS, "extra"}


async def test_list_changed_reaches_a_listening_client() -> None:
    async with spawn(
        "-m", "tests.servers.echo", "--transport", "http", "--port", "0", "--list-changing", "0.1"
    ) as (_, port):
        async with Client(f"http://127.0.0.1:{port}/mcp", mode="auto") as client:
            async with client.listen(tools_list_changed=True) as subscription:
                with anyio.fail_after(WAIT):
                    async for _event in subscription:
                        break


# --------------------------------------------------------------------------- echo: faults


async def test_crash_on_start_exits_3() -> None:
    async with spawn("-m", "tests.servers.echo", "--crash-on-start") as (process, _):
        assert await wait_exit(process) == 3
        assert process.stderr is not None
        assert b"boom on start" in await process.stderr.read()


async def test_crash_after_exits_4() -> None:
    async with spawn("-m", "tests.servers.echo", "--crash-after", "0.1") as (process, _):
        assert await wait_exit(process) == 4


async def test_exit_on_call_exits_5() -> None:
    async with spawn("-m", "tests.servers.echo", "--exit-on-call") as (process, _):
        await handshake(process)
        call = {"name": "echo", "arguments": {"text": "x"}}
        await send_json(
            process, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}
        )
        assert await wait_exit(process) == 5


async def test_stderr_lines_and_grandchild_cleanup() -> None:
    args = ("--hang", "--stderr-lines", "3", "--spawn-grandchild")
    async with spawn("-m", "tests.servers.echo", *args) as (process, _):
        lines = [await read_line(process.stderr) for _ in range(4)]
        assert lines[:3] == [b"line 0\n", b"line 1\n", b"line 2\n"]
        word, pid_text = lines[3].split()
        assert word == b"grandchild"
        grandchild = int(pid_text)
        assert _alive(grandchild)
        assert process.returncode is None
    with anyio.fail_after(WAIT):
        while _alive(grandchild):
            await anyio.sleep(0.02)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie awaiting a reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_hang_never_answers_initialize() -> None:
    async with spawn("-m", "tests.servers.echo", "--hang") as (process, _):
        await send_json(
            process, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
        )
        assert process.stdout is not None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await process.stdout.readline()
        assert process.returncode is None


async def test_flood_stdout_writes_no_json() -> None:
    async with spawn("-m", "tests.servers.echo", "--flood-stdout") as (process, _):
        for _ in range(20):
            line = await read_line(process.stdout)
            with pytest.raises(ValueError):
                json.loads(line)


async def test_close_stdout_keeps_running() -> None:
    async with spawn("-m", "tests.servers.echo", "--close-stdout") as (process, _):
        assert await read_line(process.stdout) == b""  # EOF
        assert process.returncode is None


async def test_hang_http_prints_port_but_never_answers() -> None:
    async with spawn(
        "-m", "tests.servers.echo", "--transport", "http", "--port", "0", "--hang"
    ) as (
        process,
        port,
    ):
        assert port is not None
        await _expect_silence(port)
        assert process.returncode is None


# --------------------------------------------------------------------------- WebSocket


@contextlib.asynccontextmanager
async def ws_connect(
    port: int, headers: dict[str, str] | None = None
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}/mcp"
        async with http.ws_connect(url, protocols=("mcp",), headers=headers) as ws:
            yield ws


async def ws_request(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> Any:
    await ws.send_json(message)
    async with asyncio.timeout(WAIT):
        return await ws.receive_json()


async def test_ws_initialize_and_list_tools() -> None:
    async with spawn("-m", "tests.servers.ws", "--port", "0") as (_, port):
        assert port is not None
        async with ws_connect(port) as ws:
            assert ws.protocol == "mcp"
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
            reply = await ws_request(ws, init)
            assert reply["id"] == 1 and reply["result"]["serverInfo"]["name"] == "echo"
            await ws.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
            reply = await ws_request(ws, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
            assert {t["name"] for t in reply["result"]["tools"]} == set(ALL_TOOLS)
            call = {"name": "add", "arguments": {"a": 1, "b": 2}}
            reply = await ws_request(
                ws, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call}
            )
            assert reply["result"]["content"][0]["text"] == "3"


async def test_ws_require_token() -> None:
    async with spawn("-m", "tests.servers.ws", "--port", "0", "--require-token", "tok") as (
        _,
        port,
    ):
        assert port is not None
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with ws_connect(port):
                pass
        assert refused.value.status == 401
        async with ws_connect(port, headers={"Authorization": "Bearer tok"}) as ws:
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
            assert "result" in await ws_request(ws, init)


# --------------------------------------------------------------------------- raw


async def test_raw_partial_json() -> None:
    async with spawn("-m", "tests.servers.raw", "--mode", "partial-json", "--delay", "0.05") as (
        process,
        _,
    ):
        await send_json(process, {"jsonrpc": "2.0", "id": 0, "method": "server/discover"})
        assert json.loads(await read_line(process.stdout))["error"]["code"] == -32601
        await send_json(
            process, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
        )
        assert json.loads(await read_line(process.stdout))["result"]["serverInfo"]
        await send_json(process, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        truncated = await read_line(process.stdout)
        assert truncated.startswith(b'{"jsonrpc"')
        with pytest.raises(ValueError):
            json.loads(truncated)


async def _expect_silence(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read(1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_raw_tcp_blackhole() -> None:
    async with spawn("-m", "tests.servers.raw", "--mode", "tcp-blackhole", "--port", "0") as (
        process,
        port,
    ):
        assert port is not None
        await _expect_silence(port)
        assert process.returncode is None


async def test_raw_leak_grows() -> None:
    args = ("--mode", "leak", "--leak-mb-per-sec", "200", "--leak-max-mb", "64")
    async with spawn("-m", "tests.servers.raw", *args) as (process, _):
        assert await read_line(process.stderr) == b"leaking\n"
        with anyio.fail_after(WAIT):
            while rss_mb(process.pid) < 60:
                await anyio.sleep(0.02)
