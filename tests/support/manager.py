"""A real ServerManager over real MCP servers, and /proc views of what it leaves behind.

`checked_manager()` yields a started manager with short timings and, after closing it, fails
the test if anything it started is still there: a child process (zombies included), a thread,
an asyncio task, or an open file descriptor. The /proc helpers treat a zombie as gone (this
machine's PID 1 never reaps orphans, so an orphaned grandchild that exited stays a zombie).

Every wait is `until` (a bounded poll); nothing sleeps a fixed time to wait for something.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

from jackfield.core.catalog import CatalogChange
from jackfield.core.connection import resolve
from jackfield.shell.servers import ServerManager
from jackfield.shell.supervisor import ProtocolMode, Supervisor, Timing
from jackfield.spec.models import MCPServerSpec
from tests.conftest import REPO
from tests.servers.launch import Process, spawn
from tests.support.controller import until
from tests.support.process import direct_children, group
from tests.support.process import running as running  # shared by the manager tests

WAIT = 45.0
"""Bound on anything we wait for; never reached when things work (the machine may be busy)."""
START = 30.0
"""The default connect timeout of test servers: generous, as a busy machine starts Python
slowly (the echo server imports a lot before it answers)."""
FAST = Timing(
    backoff_base=0.05, backoff_cap=0.5, grace=0.5, health_interval=5.0, health_timeout=5.0
)
SETTLED = ("Ready", "Degraded", "Backoff", "Failed")


def echo_spec(*flags: str, **fields: Any) -> MCPServerSpec:
    """tests/servers/echo.py over stdio with `flags`; `fields` are MCPServerSpec fields."""
    return stdio_spec(sys.executable, "-m", "tests.servers.echo", *flags, cwd=str(REPO), **fields)


def _spec(fields: dict[str, Any]) -> MCPServerSpec:
    timeouts = {"connect": START, **fields.pop("timeouts", {})}
    return MCPServerSpec.model_validate({**fields, "timeouts": timeouts})


def stdio_spec(command: str, *args: str, **fields: Any) -> MCPServerSpec:
    return _spec({"command": command, "args": list(args), **fields})


def sh_spec(script: str, **fields: Any) -> MCPServerSpec:
    """A stdio server started as `sh -c script` (from the repo root)."""
    return _spec({"command": "sh", "args": ["-c", script], "cwd": str(REPO), **fields})


def remote_spec(transport: str, url: str, **fields: Any) -> MCPServerSpec:
    return _spec({"transport": transport, "url": url, **fields})


async def plug(
    manager: ServerManager, name: str, spec: MCPServerSpec, env: dict[str, str] | None = None
) -> Supervisor:
    """Put a server into the manager; its supervisor (not yet connected)."""
    await manager.put(name, spec, resolve(spec, env or {}), reconnect=True)
    supervisor = manager.supervisor(name)
    assert supervisor is not None
    return supervisor


async def settle(
    manager: ServerManager, name: str, *states: str, timeout: float = WAIT
) -> Supervisor:
    """Wait until the server is in one of `states` (default: any settled state)."""
    wanted = states or SETTLED

    def now() -> str:
        s = manager.supervisor(name)
        return f"{s.state}: {s.last_error}" if s is not None else "gone"

    await until(
        lambda: manager.states().get(name) in wanted,
        timeout=timeout,
        what=f"{name} in {wanted} (now {now()})",
    )
    supervisor = manager.supervisor(name)
    assert supervisor is not None
    return supervisor


async def ready(
    manager: ServerManager, name: str, spec: MCPServerSpec, env: dict[str, str] | None = None
) -> Supervisor:
    await plug(manager, name, spec, env)
    supervisor = await settle(manager, name)
    assert supervisor.state == "Ready", supervisor.last_error
    return supervisor


@contextlib.asynccontextmanager
async def serving(
    transport: str, *flags: str, module: str = "tests.servers.echo"
) -> AsyncIterator[tuple[str, Process]]:
    """An echo server over http (`/mcp`), sse (`/sse`) or websocket (tests/servers/ws.py);
    yields its URL and process, and stops it (and its process group) afterwards."""
    if transport == "websocket":
        args: tuple[str, ...] = ("-m", "tests.servers.ws", "--port", "0", *flags)
        scheme, path = "ws", "/mcp"
    else:
        args = ("-m", module, "--transport", transport, "--port", "0", *flags)
        scheme, path = "http", "/mcp" if transport == "http" else "/sse"
    async with spawn(*args, stderr=asyncio.subprocess.DEVNULL, listen_timeout=WAIT) as (
        process,
        port,
    ):
        yield f"{scheme}://127.0.0.1:{port}{path}", process


@contextlib.asynccontextmanager
async def served(transport: str, *flags: str) -> AsyncIterator[str]:
    """`serving`, for when only the URL matters."""
    async with serving(transport, *flags) as (url, _):
        yield url


# --------------------------------------------------------------------------- /proc


def group_running(pgid: int) -> list[int]:
    """Running (non-zombie) members of a process group."""
    return [p.pid for p in group(pgid).values() if p.state != "Z"]


def children(parent: int | None = None) -> dict[int, str]:
    """Direct children of `parent` (default: this process) -> their state letter."""
    return {pid: p.state for pid, p in direct_children(parent).items()}


def zombies() -> list[int]:
    """Children of this process that exited and were never reaped."""
    return [pid for pid, state in children().items() if state == "Z"]


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def grandchild_pid(supervisor: Supervisor) -> int | None:
    """The pid `tests.servers.echo --spawn-grandchild` wrote to its stderr."""
    for line in (supervisor.tail.text() or "").splitlines():
        if line.startswith("grandchild "):
            return int(line.split()[1])
    return None


@contextlib.asynccontextmanager
async def checked_manager(
    timing: Timing = FAST, mode: ProtocolMode = "auto", **kwargs: Any
) -> AsyncIterator[ServerManager]:
    """A started ServerManager; after it closes, nothing it started may be left."""
    children_before = set(children())
    fds_before = open_fds()
    threads_before = set(threading.enumerate())
    tasks_before = asyncio.all_tasks()
    groups: set[int] = set()
    async with ServerManager(timing=timing, mode=mode, **kwargs) as manager:

        def note_groups(_: CatalogChange) -> None:  # the process groups of stdio servers
            for name in manager.states():
                supervisor = manager.supervisor(name)
                if supervisor is not None and supervisor.pid is not None:
                    groups.add(supervisor.pid)

        manager.listeners.append(note_groups)
        yield manager

    def leftovers() -> dict[str, set[Any]]:
        found: dict[str, set[Any]] = {
            "children": set(children()) - children_before,
            "threads": set(threading.enumerate()) - threads_before,
            "tasks": asyncio.all_tasks() - {asyncio.current_task()} - tasks_before,
        }
        return {what: left for what, left in found.items() if left}

    try:
        await until(lambda: not leftovers(), timeout=WAIT)
    except AssertionError:
        raise AssertionError(f"left behind: {leftovers()}") from None
    left = {pgid: members for pgid in groups if (members := group_running(pgid))}
    assert not left, f"processes left in server process groups: {left}"
    assert not zombies(), f"zombie children: {zombies()}"
    leaked = open_fds() - fds_before
    assert not leaked, f"file descriptors left open: {_describe_fds(leaked)}"


def _describe_fds(fds: set[int]) -> dict[int, str]:
    out = {}
    for fd in fds:
        with contextlib.suppress(OSError):
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return out
