"""The live MCP manager with real servers: the echo server over every transport, the PyPI
`mcp-server-time`, and `@modelcontextprotocol/server-everything` through npx.

Fault scenarios live in test_manager_faults.py; the pure naming and result rules in
test_catalog.py and test_results.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest

from jackfield.core.catalog import CatalogChange
from jackfield.core.connection import resolve
from jackfield.shell.servers import CallEvent, ServerManager, text_of
from jackfield.shell.stdio import Tail
from tests.servers.echo import ALL_TOOLS
from tests.support.manager import (
    checked_manager,
    echo_spec,
    plug,
    ready,
    remote_spec,
    running,
    served,
    settle,
    stdio_spec,
)
from tests.support.servers import npx as find_npx

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def manager() -> AsyncIterator[ServerManager]:
    async with checked_manager() as manager:
        yield manager


async def test_a_stdio_echo_server_gets_ready_lists_its_tools_and_answers(
    manager: ServerManager,
) -> None:
    supervisor = await ready(manager, "echo", echo_spec())

    assert set(manager.catalog.by_server("echo")) == {f"echo_{t}" for t in ALL_TOOLS}
    assert text_of(await manager.call("echo_echo", {"text": "hello"})) == "hello"
    assert text_of(await manager.call("echo_add", {"a": 2, "b": 40})) == "42"
    [status] = manager.statuses()
    assert status.state == "Ready" and status.last_error is None
    assert status.extra["pid"] == supervisor.pid and running(status.extra["pid"])
    assert status.extra["server_info"]["name"] == "echo"
    assert status.extra["protocol_version"]
    assert status.last_connected is not None and status.restarts == 0


@pytest.mark.parametrize("transport", ["http", "sse", "websocket"])
async def test_an_echo_server_works_over_each_network_transport(
    manager: ServerManager, transport: str
) -> None:
    async with served(transport) as url:
        await ready(manager, "net", remote_spec(transport, url))
        assert set(manager.catalog.by_server("net")) == {f"net_{t}" for t in ALL_TOOLS}
        assert text_of(await manager.call("net_echo", {"text": transport})) == transport
        assert text_of(await manager.call("net_add", {"a": 1, "b": 2})) == "3"
        await manager.remove("net")
    assert manager.states() == {}


async def test_the_time_server_from_pypi_tells_the_time(manager: ServerManager) -> None:
    if shutil.which("mcp-server-time") is None:
        pytest.fail("mcp-server-time is a dev dependency: run with the venv's bin on PATH")
    await ready(manager, "time", stdio_spec("mcp-server-time"))
    assert "time_get_current_time" in manager.catalog.entries
    result = await manager.call("time_get_current_time", {"timezone": "UTC"})
    assert not result.is_error and '"timezone": "UTC"' in text_of(result)


@pytest.mark.npx
async def test_the_everything_server_from_npm_runs_through_npx(manager: ServerManager) -> None:
    npx = find_npx()
    env = {k: os.environ[k] for k in ("PATH", "HOME", "npm_config_cache") if k in os.environ}
    args = ("-y", "@modelcontextprotocol/server-everything")
    spec = stdio_spec(npx, *args, env=env, timeouts={"connect": 60})
    await plug(manager, "all", spec)
    supervisor = await settle(manager, "all", timeout=90)
    assert supervisor.state == "Ready", f"{supervisor.last_error}\n{supervisor.tail.text()}"
    assert "all_echo" in manager.catalog.entries
    result = await manager.call("all_echo", {"message": "hi there"})
    assert not result.is_error and "hi there" in text_of(result)


async def test_tool_filters_and_prefixes_apply_without_a_reconnect(
    manager: ServerManager,
) -> None:
    spec = echo_spec()
    supervisor = await ready(manager, "echo", spec)
    pid = supervisor.pid
    changes: list[CatalogChange] = []
    manager.listeners.append(changes.append)

    tools = spec.tools.model_copy(update={"include": ["e*", "add"], "exclude": ["env"]})
    filtered = spec.model_copy(update={"tools": tools})
    await manager.put("echo", filtered, resolve(filtered, {}), reconnect=False)
    assert manager.catalog.by_server("echo") == ("echo_add", "echo_echo")

    renamed = filtered.model_copy(update={"tools": tools.model_copy(update={"prefix": ""})})
    await manager.put("echo", renamed, resolve(renamed, {}), reconnect=False)
    assert manager.catalog.by_server("echo") == ("add", "echo")
    assert text_of(await manager.call("add", {"a": 1, "b": 1})) == "2"
    assert manager.supervisor("echo") is supervisor and supervisor.pid == pid
    assert any(set(c.removed) >= {"echo_add", "echo_echo"} for c in changes)


async def test_a_name_two_servers_claim_goes_to_the_first_and_both_report_it(
    manager: ServerManager,
) -> None:
    shared = {"tools": {"prefix": "x_", "include": ["echo", "add"]}}
    await plug(manager, "beta", echo_spec(**shared))
    await plug(manager, "alpha", echo_spec("--tools", "echo", **shared))
    await settle(manager, "beta", "Ready")
    await settle(manager, "alpha", "Ready")

    assert manager.catalog.entries["x_echo"].server == "alpha"
    assert manager.catalog.entries["x_add"].server == "beta"
    statuses = {s.name: s for s in manager.statuses()}
    note = "x_echo: kept by server alpha, withheld from beta"
    assert statuses["alpha"].conflicts == (note,) and statuses["beta"].conflicts == (note,)
    assert statuses["beta"].tools == ("x_add",)


async def test_calls_report_each_outcome_to_the_observer() -> None:
    events: list[CallEvent] = []
    async with checked_manager(observer=events.append) as manager:
        await ready(manager, "echo", echo_spec(timeouts={"call": 0.5}))
        assert text_of(await manager.call("echo_echo", {"text": "x"})) == "x"
        failed = await manager.call("echo_fail", {"message": "no such thing"})
        assert failed.is_error and "no such thing" in text_of(failed)
        slow = await manager.call("echo_slow", {"seconds": 5})
        assert slow.is_error
        unknown = await manager.call("nope", {})
        assert text_of(unknown) == "There is no tool called nope any more."

    assert [(e.server, e.tool, e.outcome) for e in events] == [
        ("echo", "echo", "ok"),
        ("echo", "fail", "error"),
        ("echo", "slow", "timeout"),
        ("", "nope", "unknown"),
    ]
    assert events[0].bytes_in > 0 and events[0].bytes_out == 1


async def test_a_disabled_server_is_listed_but_never_started(manager: ServerManager) -> None:
    await plug(manager, "off", echo_spec(enabled=False))
    [status] = manager.statuses()
    assert status.state == "Disabled" and "pid" not in status.extra
    assert manager.catalog.entries == {}


async def test_an_edit_that_reconnects_replaces_the_process_and_removal_stops_it(
    manager: ServerManager,
) -> None:
    old = await ready(manager, "echo", echo_spec())
    old_pid = old.pid
    new = await ready(manager, "echo", echo_spec("--name", "renamed"))
    assert new is not old and new.pid != old_pid and old_pid is not None
    assert not running(old_pid)
    assert new.server_info["name"] == "renamed"

    pid = new.pid
    assert pid is not None
    await manager.remove("echo")
    assert manager.catalog.entries == {} and manager.states() == {}
    assert not running(pid)
    assert text_of(await manager.call("echo_echo", {"text": "x"})).startswith("There is no tool")


# --------------------------------------------------------------------------- the stderr tail


def test_the_tail_keeps_the_last_lines_within_its_byte_budget() -> None:
    tail = Tail(max_lines=3, max_bytes=20, max_line=8)
    tail.feed_chunk(b"one\ntwo\nthr")
    assert tail.text() == "one\ntwo"
    tail.feed_chunk(b"ee\nfour\n")
    assert tail.text() == "two\nthree\nfour"
    tail.feed_chunk("ééééé\n".encode())  # 10 bytes, clipped on a character boundary
    assert tail.last() == "éé..." and len(tail.text().encode()) <= 20  # type: ignore[union-attr]
    tail.feed_chunk(b"no newline at the end")
    tail.flush()
    assert tail.last() == "no ne..."


def test_the_tail_masks_secrets_before_keeping_a_line() -> None:
    tail = Tail(secrets=frozenset({"hunter2-secret"}))
    tail.feed_chunk(b"token=hunter2-secret ok\n")
    assert tail.text() == "token=******** ok"


def test_a_stream_without_newlines_cannot_grow_the_tail() -> None:
    tail = Tail()
    for _ in range(100):
        tail.feed_chunk(b"x" * 65536)
    text = tail.text() or ""
    assert len(text.encode()) <= 8192 and len(text.splitlines()) <= 50
