"""Faults at the hub's front door: bad tokens, many sessions, slow and malformed clients,
oversized bodies, and calls racing a tool's removal. The hub must keep serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import mcp_types
import pytest
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.exceptions import MCPError

from jackfield.shell.transports import leaves
from tests.support.clients import INITIALIZE, hub_client, text
from tests.support.controller import until
from tests.support.live import TOKEN, Stack, echo_server, echo_stack, live_stack

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}


@pytest.fixture
async def stack(config_dir: Path) -> AsyncIterator[Stack]:
    async with echo_stack(config_dir) as stack:
        yield stack


async def still_serving(stack: Stack, within: float = 10.0) -> None:
    """A normal client connects and gets a real answer, promptly."""
    async with asyncio.timeout(within), hub_client(stack.hub.url) as client:
        assert text(await client.call_tool("echo_add", {"a": 20, "b": 22})) == "42"


def parse_sse_or_json(body: str) -> dict[str, Any]:
    """The one JSON-RPC message of a response, whichever way the hub framed it."""
    for line in body.splitlines():
        if line.startswith("data:"):
            message: dict[str, Any] = json.loads(line[5:])
            return message
    message = json.loads(body)
    return message


@contextlib.asynccontextmanager
async def raw_session(http: aiohttp.ClientSession, url: str) -> AsyncIterator[dict[str, str]]:
    """A handshake-era session by hand: initialize, initialized ... DELETE."""
    async with http.post(url, json=INITIALIZE, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        session_id = r.headers["mcp-session-id"]
        await r.read()
    headers = {**HEADERS, "mcp-session-id": session_id, "MCP-Protocol-Version": "2025-11-25"}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with http.post(url, json=initialized, headers=headers) as r:
        assert r.status == 202
    try:
        yield headers
    finally:
        async with http.delete(url, headers=headers) as r:
            assert r.status == 200


# --- tokens --------------------------------------------------------------------------------------


async def test_hub_faults_a_wrong_token_cannot_ride_a_live_session(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http, raw_session(http, stack.hub.url) as headers:
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "echo_add", "arguments": {"a": 1, "b": 2}}}  # fmt: skip
        for token in ("", "wrong", TOKEN[:-1], TOKEN + "0", TOKEN.upper()):
            stolen = {**headers, "Authorization": f"Bearer {token}"}
            async with http.post(stack.hub.url, json=call, headers=stolen) as r:
                assert r.status == 401, token
                assert "jsonrpc" not in await r.text()
        async with http.post(stack.hub.url, json=call, headers=headers) as r:
            assert parse_sse_or_json(await r.text())["result"]["content"][0]["text"] == "3"
    await still_serving(stack)


# --- many sessions -------------------------------------------------------------------------------


async def test_hub_faults_a_thousand_sessions_come_and_go_without_leaks(stack: Stack) -> None:
    url = stack.hub.url
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    async def one(http: aiohttp.ClientSession) -> None:
        async with (
            raw_session(http, url) as headers,
            http.post(url, json=listing, headers=headers) as r,
        ):
            assert "echo_add" in await r.text()

    async with aiohttp.ClientSession() as http:
        await one(http)  # warm-up: the SDK's process-wide helpers start once
        await until(lambda: stack.hub.status().sessions == 0, what="warm-up session gone")
        baseline = len(asyncio.all_tasks())
        async with asyncio.timeout(45):
            for _ in range(20):
                await asyncio.gather(*(one(http) for _ in range(50)))
                assert stack.hub.status().sessions <= 50
    await until(lambda: stack.hub.status().sessions == 0, what="every hub session closed")
    await until(
        lambda: len(asyncio.all_tasks()) <= baseline,
        what=f"tasks back to {baseline} (now {len(asyncio.all_tasks())})",
    )
    await still_serving(stack)


# --- slow, malformed and oversized requests -------------------------------------------------------


async def test_hub_faults_slow_clients_do_not_hold_up_a_normal_one(stack: Stack) -> None:
    port = stack.hub.port
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    ).encode()
    writers: list[asyncio.StreamWriter] = []
    stop = asyncio.Event()

    async def slowloris() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        for byte in request:
            if stop.is_set():
                return
            writer.write(bytes([byte]))
            await writer.drain()
            # the fault itself: one byte at a time, forever slow (not a wait for a condition)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    drips = [asyncio.create_task(slowloris()) for _ in range(100)]
    try:
        await until(lambda: len(writers) == 100, what="slow connections open")
        await still_serving(stack, within=10)
    finally:
        stop.set()
        await asyncio.gather(*drips, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_hub_faults_an_oversized_body_is_refused_and_the_hub_keeps_serving(
    stack: Stack,
) -> None:
    params = {"name": "echo_echo", "arguments": {"text": "x" * (DEFAULT_MAX_REQUEST_BODY_SIZE + 1)}}
    huge = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params})

    async def refused(http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        async with http.post(stack.hub.url, data=io.BytesIO(huge.encode()), headers=headers) as r:
            assert r.status == 413

    async with aiohttp.ClientSession() as http:
        await refused(http, HEADERS)
        async with raw_session(http, stack.hub.url) as headers:
            await refused(http, headers)
            # the same session still works
            small = {"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                     "params": {"name": "echo_echo", "arguments": {"text": "small"}}}  # fmt: skip
            async with http.post(stack.hub.url, json=small, headers=headers) as r:
                assert parse_sse_or_json(await r.text())["result"]["content"][0]["text"] == "small"
    await still_serving(stack)


MALFORMED: list[tuple[str, bytes]] = [
    ("invalid JSON", b"{not json"),
    ("missing method", json.dumps({"jsonrpc": "2.0", "id": 1}).encode()),
    ("not an object", b"[1, 2, 3]"),
    ("wrong jsonrpc", json.dumps({"jsonrpc": "1.0", "id": 1, "method": "tools/list"}).encode()),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
]


async def test_hub_faults_malformed_json_rpc_gets_an_error_and_the_hub_keeps_serving(
    stack: Stack,
) -> None:
    modern = {**HEADERS, "MCP-Protocol-Version": "2026-07-28"}
    async with aiohttp.ClientSession() as http:
        async with raw_session(http, stack.hub.url) as in_session:
            for headers in (HEADERS, modern, in_session):
                for what, body in MALFORMED:
                    async with http.post(stack.hub.url, data=body, headers=headers) as r:
                        assert 400 <= r.status < 500, (what, r.status)
                        error = parse_sse_or_json(await r.text())["error"]
                        assert error["code"] in (
                            mcp_types.PARSE_ERROR,
                            mcp_types.INVALID_REQUEST,
                            mcp_types.INVALID_PARAMS,
                        ), (what, error)
            # an unknown method inside a live session is a JSON-RPC error, not a crash
            unknown = {"jsonrpc": "2.0", "id": 5, "method": "no/such/method"}
            async with http.post(stack.hub.url, json=unknown, headers=in_session) as r:
                error = parse_sse_or_json(await r.text())["error"]
                assert error["code"] == mcp_types.METHOD_NOT_FOUND
    await still_serving(stack)


# --- calls the hub cannot place -------------------------------------------------------------------


async def test_hub_faults_calls_to_unknown_tools_are_sentences(stack: Stack) -> None:
    names = ["nope", "echo_", "_echo", "echo_echo_echo", "é" * 300, "x" * 10_000, "", "a/b"]
    async with hub_client(stack.hub.url) as client:
        results = await asyncio.gather(*(client.call_tool(n, {"q": 1}) for n in names * 5))
    for result in results:
        assert result.is_error
        sentence = text(result)
        assert sentence.startswith("There is no tool called") and sentence.endswith(".")
    await still_serving(stack)


async def test_hub_faults_a_call_to_a_tool_removed_a_moment_ago_is_a_sentence(
    stack: Stack,
) -> None:
    async with hub_client(stack.hub.url) as client:
        # the tightest race: the server is on its way out while the catalog still lists it
        removing = asyncio.create_task(stack.manager.remove("echo"))
        await asyncio.sleep(0)  # let the removal start (a yield, not a wait)
        raced = await client.call_tool("echo_add", {"a": 1, "b": 2})
        await removing
        assert raced.is_error, text(raced)
        assert text(raced).endswith("."), text(raced)
        after = await client.call_tool("echo_add", {"a": 1, "b": 2})
        assert after.is_error and "echo_add" in text(after)


async def test_hub_faults_calls_racing_a_file_removal_and_a_filter_edit_never_crash(
    config_dir: Path,
) -> None:
    servers = config_dir / "servers.d"
    servers.joinpath("gone.yaml").write_text(echo_server("gone", "--tools", "add"))
    servers.joinpath("cut.yaml").write_text(echo_server("cut", "--tools", "add,echo"))
    async with live_stack(config_dir) as stack:
        await stack.ready("gone", "cut")
        async with hub_client(stack.hub.url) as client:

            async def hammer(tool: str) -> list[mcp_types.CallToolResult]:
                out: list[mcp_types.CallToolResult] = []
                while True:
                    out.append(await client.call_tool(tool, {"a": 1, "b": 2}))
                    if out[-1].is_error:
                        return out

            gone = asyncio.create_task(hammer("gone_add"))
            cut = asyncio.create_task(hammer("cut_add"))
            (config_dir / "servers.d" / "gone.yaml").unlink()
            stack.write(
                "servers.d/cut.yaml",
                echo_server("cut", "--tools", "add,echo", extra="  tools: {include: [echo]}\n"),
            )
            async with asyncio.timeout(20):
                results = [*await gone, *await cut]
            for result in results:
                if result.is_error:
                    assert text(result).endswith("."), text(result)
                else:
                    assert text(result) == "3"
            assert text(await client.call_tool("cut_echo", {"text": "still here"})) == "still here"


# --- the bearer scheme, and how many sessions ---------------------------------------------------


async def test_hub_faults_the_bearer_scheme_is_accepted_in_any_case(stack: Stack) -> None:
    """RFC 7235: the auth scheme is case-insensitive; the token itself is not."""
    async with aiohttp.ClientSession() as http:
        for scheme in ("bearer", "BEARER", "bEaReR", "Bearer "):
            headers = {**HEADERS, "Authorization": f"{scheme} {TOKEN}"}
            async with http.post(stack.hub.url, json=INITIALIZE, headers=headers) as r:
                assert r.status == 200, scheme
                session = {**headers, "mcp-session-id": r.headers["mcp-session-id"]}
            async with http.delete(stack.hub.url, headers=session) as r:
                assert r.status == 200, scheme
        for refused in (f"bearer {TOKEN.upper()}", f"Basic {TOKEN}", f"bearer{TOKEN}", TOKEN):
            headers = {**HEADERS, "Authorization": refused}
            async with http.post(stack.hub.url, json=INITIALIZE, headers=headers) as r:
                assert r.status == 401, refused
    await still_serving(stack)


async def test_hub_faults_sessions_beyond_the_cap_are_refused_with_a_sentence_and_counted(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JACKFIELD_HUB_MAX_SESSIONS", "3")
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with (
        echo_stack(config_dir) as stack,
        aiohttp.ClientSession() as http,
        contextlib.AsyncExitStack() as held,
    ):
        url = stack.hub.url
        sessions = [await held.enter_async_context(raw_session(http, url)) for _ in range(3)]
        for _ in range(2):
            async with http.post(url, json=INITIALIZE, headers=HEADERS) as r:
                assert r.status == 503
                assert r.headers["retry-after"] == "5"
                error = json.loads(await r.text())["error"]
            assert error["message"] == (
                "The hub has 3 open sessions, its limit (JACKFIELD_HUB_MAX_SESSIONS): close an"
                " unused session or try again shortly."
            )
        # an SDK client is told the same sentence
        with pytest.raises(BaseException) as refused:  # noqa: PT011 (the SDK wraps it in groups)
            async with hub_client(url):
                pass
        [told] = [e for e in leaves(refused.value) if isinstance(e, MCPError)]
        assert told.message == error["message"]
        status = stack.hub.status()
        assert (status.max_sessions, status.refused_sessions) == (3, 3)
        assert status.to_json()["refused_sessions"] == 3
        # the sessions that are open keep working, and a freed place is taken again
        async with http.post(url, json=listing, headers=sessions[0]) as r:
            assert "echo_add" in await r.text()
        await held.aclose()
        async with (
            raw_session(http, url) as fresh,
            http.post(url, json=listing, headers=fresh) as r,
        ):
            assert "echo_add" in await r.text()
        assert stack.hub.status().refused_sessions == 3


async def test_hub_faults_an_abandoned_session_is_closed_after_the_idle_time(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JACKFIELD_HUB_SESSION_IDLE", "0.5")
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with echo_stack(config_dir) as stack, aiohttp.ClientSession() as http:
        url = stack.hub.url
        async with http.post(url, json=INITIALIZE, headers=HEADERS) as r:
            headers = {**HEADERS, "mcp-session-id": r.headers["mcp-session-id"],
                       "MCP-Protocol-Version": "2025-11-25"}  # fmt: skip
        async with http.post(url, json=listing, headers=headers) as r:
            assert "echo_add" in await r.text()
        assert stack.hub.status().sessions == 1
        # never DELETEd: the client went away
        await until(lambda: stack.hub.status().sessions == 0, what="the idle session closed")
        async with http.post(url, json=listing, headers=headers) as r:
            assert r.status == 404
        await still_serving(stack)
