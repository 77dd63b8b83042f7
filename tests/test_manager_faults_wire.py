"""Servers that speak broken wire: partial JSON lines, a memory leak that never answers, TLS
against a plain-HTTP port. Each ends in Backoff with a readable `last_error`, and nothing of
the broken server is left running."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from jackfield.shell.servers import ServerManager
from tests.conftest import REPO
from tests.servers.launch import spawn
from tests.support.controller import until
from tests.support.manager import (
    WAIT,
    checked_manager,
    plug,
    remote_spec,
    running,
    settle,
    stdio_spec,
)

pytestmark = pytest.mark.faults


@pytest.fixture
async def manager() -> AsyncIterator[ServerManager]:
    async with checked_manager() as manager:
        yield manager


async def test_a_server_writing_partial_json_lines_backs_off_and_is_killed(
    manager: ServerManager,
) -> None:
    spec = stdio_spec(sys.executable, "-m", "tests.servers.raw", "--mode", "partial-json",
                      cwd=str(REPO), timeouts={"connect": 1.5})  # fmt: skip
    supervisor = await plug(manager, "partial", spec)
    await until(lambda: supervisor.pid is not None, timeout=WAIT, what="the process")
    pid = supervisor.pid
    assert pid is not None
    await settle(manager, "partial", "Backoff")
    assert supervisor.last_error, "it says what happened"
    await until(lambda: not running(pid), timeout=WAIT, what="the broken process killed")


async def test_a_server_that_leaks_memory_and_never_answers_is_killed_at_the_timeout(
    manager: ServerManager,
) -> None:
    spec = stdio_spec(sys.executable, "-m", "tests.servers.raw", "--mode", "leak",
                      "--leak-mb-per-sec", "100", "--leak-max-mb", "256",
                      cwd=str(REPO), timeouts={"connect": 1})  # fmt: skip
    supervisor = await plug(manager, "leaky", spec)
    await until(lambda: supervisor.pid is not None, timeout=WAIT, what="the process")
    pid = supervisor.pid
    assert pid is not None
    await settle(manager, "leaky", "Backoff")
    assert supervisor.last_error == "no answer within 1 s (connect timeout)"
    await until(lambda: not running(pid), timeout=WAIT, what="the leaking process killed")


async def test_tls_against_a_plain_http_port_is_a_readable_error(manager: ServerManager) -> None:
    args = ("-m", "tests.servers.echo", "--transport", "http", "--port", "0")
    async with spawn(*args, stderr=asyncio.subprocess.DEVNULL) as (_, port):
        url = f"https://127.0.0.1:{port}/mcp"
        supervisor = await plug(manager, "tls", remote_spec("http", url, timeouts={"connect": 2}))
        await settle(manager, "tls", "Backoff", "Failed")
        error = (supervisor.last_error or "").lower()
        assert any(word in error for word in ("ssl", "tls", "certificate", "wrong version")), error
        await manager.remove("tls")
