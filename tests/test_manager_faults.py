"""Fault injection against the live MCP manager, with real misbehaving servers
(tests/servers/echo.py fault flags, tests/servers/raw.py, small `sh -c` scripts).

Each scenario ends in the documented state (docs/manager.md) with `last_error` saying what
happened, and `checked_manager` fails the test if a process, thread, task or fd is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from jackfield.core.catalog import CatalogChange
from jackfield.shell.servers import ServerManager, text_of
from jackfield.shell.supervisor import ProtocolMode, Timing
from tests.conftest import REPO
from tests.servers.launch import spawn
from tests.support.controller import until
from tests.support.manager import (
    FAST,
    WAIT,
    checked_manager,
    echo_spec,
    grandchild_pid,
    group_running,
    plug,
    ready,
    remote_spec,
    running,
    served,
    serving,
    settle,
    sh_spec,
    stdio_spec,
    zombies,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

PYTHON = sys.executable


@pytest.fixture
async def manager() -> AsyncIterator[ServerManager]:
    async with checked_manager() as manager:
        yield manager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def elapsed_since(started: float) -> float:
    return asyncio.get_running_loop().time() - started


def now() -> float:
    return asyncio.get_running_loop().time()


# --------------------------------------------------------------------------- process faults


async def test_a_server_that_crashes_on_start_backs_off_and_keeps_retrying(
    manager: ServerManager,
) -> None:
    supervisor = await plug(manager, "boom", echo_spec("--crash-on-start"))
    await settle(manager, "boom", "Backoff")
    [status] = manager.statuses()
    assert status.last_error == "process exited with code 3: boom on start"
    assert status.next_retry_at is not None
    assert status.stderr_tail is not None and status.stderr_tail.endswith("boom on start")
    assert manager.catalog.entries == {}
    await until(lambda: supervisor.restarts >= 2, timeout=WAIT, what="a second retry")


async def test_a_server_that_crashes_after_a_while_is_restarted(manager: ServerManager) -> None:
    supervisor = await ready(manager, "brief", echo_spec("--crash-after", "1"))
    first_pid = supervisor.pid
    assert first_pid is not None
    await until(
        lambda: supervisor.restarts >= 1 and supervisor.state == "Ready",
        timeout=WAIT,
        what="a restart after the crash",
    )
    assert supervisor.last_error == "process exited with code 4: crash after 1s"
    assert supervisor.pid != first_pid and not running(first_pid)


async def test_a_server_that_exits_mid_call_fails_the_call_at_once(
    manager: ServerManager,
) -> None:
    supervisor = await ready(manager, "fragile", echo_spec("--exit-on-call"))
    started = now()
    result = await manager.call("fragile_echo", {"text": "x"})
    assert elapsed_since(started) < 5  # not the 30 s call timeout
    assert result.is_error
    assert text_of(result) == (
        "The echo tool from fragile could not be used: the connection to the server was lost."
    )
    await until(
        lambda: supervisor.last_error == "process exited with code 5: exit on call",
        timeout=WAIT,
        what=f"the exit noticed (last error {supervisor.last_error!r})",
    )


async def test_a_server_that_never_answers_hits_the_connect_timeout_and_is_killed(
    manager: ServerManager,
) -> None:
    supervisor = await plug(manager, "mute", echo_spec("--hang", timeouts={"connect": 1}))
    await until(lambda: supervisor.pid is not None, timeout=WAIT, what="the process")
    pid = supervisor.pid
    assert pid is not None
    await settle(manager, "mute", "Backoff")
    assert supervisor.last_error == "no answer within 1 s (connect timeout)"
    await until(lambda: not running(pid), timeout=WAIT, what="the hung process killed")


async def test_an_http_server_that_never_answers_initialize_hits_the_connect_timeout(
    manager: ServerManager,
) -> None:
    args = ("-m", "tests.servers.raw", "--mode", "tcp-blackhole", "--port", "0")
    async with spawn(*args, stderr=asyncio.subprocess.DEVNULL) as (_, port):
        url = f"http://127.0.0.1:{port}/mcp"
        await plug(manager, "hole", remote_spec("http", url, timeouts={"connect": 1}))
        supervisor = await settle(manager, "hole", "Backoff")
        assert supervisor.last_error == "no answer within 1 s (connect timeout)"
        await manager.remove("hole")


async def test_a_server_that_floods_stdout_with_garbage_is_cut_off_and_described(
    manager: ServerManager,
) -> None:
    flood = 'i=0; while :; do echo "garbage line $i {not json"; i=$((i+1)); done'
    supervisor = await plug(manager, "noisy", sh_spec(flood, timeouts={"connect": 1}))
    await settle(manager, "noisy", "Backoff")
    error = supervisor.last_error or ""
    assert error.startswith("no answer within 1 s (connect timeout); the server wrote ")
    assert error.endswith("non-JSON-RPC line(s) to stdout (first: 'garbage line 0 {not json')")
    tail = (supervisor.tail.text() or "").splitlines()
    assert tail[0] == "(stdout, not JSON-RPC) garbage line 0 {not json"
    assert "(stdout, not JSON-RPC) garbage line 5 {not json" not in tail  # 5 per process


async def test_a_server_that_closes_stdout_is_noticed_before_the_connect_timeout(
    manager: ServerManager,
) -> None:
    supervisor = await plug(manager, "shut", echo_spec("--close-stdout", timeouts={"connect": 30}))
    started = now()
    await settle(manager, "shut", "Backoff")
    assert supervisor.last_error == "the server closed its stdout"
    assert elapsed_since(started) < 20


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_huge_result_is_cut_to_its_head_and_tail(
    manager: ServerManager, transport: str
) -> None:
    limits = {"limits": {"max_output_bytes": 1000}}
    n = 3_000_000
    async with contextlib.AsyncExitStack() as stack:
        if transport == "stdio":
            spec = echo_spec(**limits)
        else:
            spec = remote_spec("http", await stack.enter_async_context(served("http")), **limits)
        await ready(manager, "huge", spec)
        result = await manager.call("huge_big", {"n": n})
        await manager.remove("huge")
    text = text_of(result)
    assert not result.is_error and result.structured_content is None
    assert len(text.encode()) <= 1000
    assert text.startswith("BEGINxxx") and text.endswith("xxxEND")
    marker = re.search(r"\n\[\.\.\. (\d+) bytes cut by jackfield \(limit 1000\) \.\.\.\]\n", text)
    assert marker is not None
    kept = len(text.encode()) - len(marker[0].encode())
    assert int(marker[1]) == n - kept


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_health_checks_pass_quietly_and_a_frozen_server_is_replaced(
    mode: ProtocolMode,
) -> None:
    timing = replace(FAST, health_interval=0.2, health_timeout=1.0)
    async with checked_manager(timing=timing, mode=mode) as manager:
        supervisor = await ready(manager, "frozen", echo_spec())
        await until(lambda: supervisor.health_checks >= 3, timeout=WAIT, what="health checks")
        assert supervisor.state == "Ready" and supervisor.restarts == 0

        pid = supervisor.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        await until(lambda: supervisor.restarts >= 1, timeout=WAIT, what="the health check")
        assert supervisor.last_error == "health check: no answer within 1 s"
        await until(lambda: not running(pid), timeout=WAIT, what="the frozen process killed")
        await settle(manager, "frozen", "Ready")


# --------------------------------------------------------------------------- network faults


@pytest.mark.parametrize("transport", ["http", "sse", "websocket"])
async def test_a_refused_credential_fails_for_good_and_the_right_one_works(
    manager: ServerManager, transport: str
) -> None:
    env = {"WRONG": "not-the-token", "RIGHT": "sesame-0123456789"}
    async with served(transport, "--require-token", env["RIGHT"]) as url:
        wrong = remote_spec(transport, url, headers={"Authorization": "Bearer ${WRONG}"})
        supervisor = await plug(manager, "locked", wrong, env)
        await settle(manager, "locked", "Failed")
        assert supervisor.last_error == "HTTP 401: the server refused our credentials"
        [status] = manager.statuses()
        assert status.restarts == 0 and status.next_retry_at is None

        right = remote_spec(transport, url, headers={"Authorization": "Bearer ${RIGHT}"})
        await ready(manager, "locked", right, env)
        assert text_of(await manager.call("locked_echo", {"text": "in"})) == "in"
        await manager.remove("locked")


@pytest.mark.parametrize(
    ("transport", "error"),
    [
        ("http", "the connection to the server broke"),
        ("sse", "the server closed the connection"),
        ("websocket", "the server closed the WebSocket (code 1006)"),
    ],
)
async def test_a_network_server_that_dies_mid_call_fails_the_call_and_is_noticed(
    manager: ServerManager, transport: str, error: str
) -> None:
    async with serving(transport) as (url, process):
        supervisor = await ready(manager, "remote", remote_spec(transport, url))
        errors: list[str | None] = []  # last_error on each entry into Backoff
        manager.listeners.append(
            lambda _: (
                errors.append(supervisor.last_error)
                if supervisor.state == "Backoff" and supervisor.restarts > len(errors)
                else None
            )
        )
        call = asyncio.ensure_future(manager.call("remote_slow", {"seconds": 30}))
        await until(lambda: supervisor.calls_in_flight == 1, timeout=WAIT, what="the call")
        os.killpg(process.pid, signal.SIGKILL)
        started = now()
        result = await call
        assert elapsed_since(started) < 5
        assert text_of(result) == (
            "The slow tool from remote could not be used: the connection to the server was lost."
        )
        await until(lambda: errors, timeout=WAIT, what="Backoff")
        assert (errors[0] or "").startswith(error)  # later attempts are refused
        await manager.remove("remote")


@pytest.mark.parametrize("transport", ["http", "sse", "websocket"])
async def test_a_refused_connection_backs_off_with_a_retry_time(
    manager: ServerManager, transport: str
) -> None:
    scheme, path = ("ws", "/mcp") if transport == "websocket" else ("http", "/mcp")
    url = f"{scheme}://127.0.0.1:{free_port()}{path}"
    supervisor = await plug(manager, "gone", remote_spec(transport, url))
    await settle(manager, "gone", "Backoff")
    [status] = manager.statuses()
    assert status.next_retry_at is not None and status.next_retry_at >= status.since
    assert (status.last_error or "").startswith("connection refused")
    await until(lambda: supervisor.restarts >= 3, timeout=WAIT, what="more retries")


async def test_calls_keep_working_across_http_session_expiry() -> None:
    legacy: ProtocolMode = "legacy"  # 2026-07-28 streamable HTTP has no sessions to expire
    async with (
        checked_manager(mode=legacy) as manager,
        served("http", "--session-expiry", "1") as url,
    ):
        supervisor = await ready(manager, "short", remote_spec("http", url))
        deadline = now() + WAIT
        renewals, calls = 0, 0
        while renewals < 2:
            connected = supervisor.last_connected
            result = await manager.call("short_add", {"a": calls, "b": 1})
            assert text_of(result) == str(calls + 1), text_of(result)
            calls += 1
            renewals += supervisor.last_connected != connected
            assert now() < deadline, "the session never expired"
            await asyncio.sleep(0.02)  # pacing, not waiting for anything
        assert supervisor.state == "Ready" and supervisor.restarts == 0
        assert supervisor.last_error == "the HTTP session expired; reconnected"
        await manager.remove("short")


@pytest.mark.parametrize(
    ("transport", "mode"), [("stdio", "auto"), ("http", "legacy")], ids=["listen", "notification"]
)
async def test_an_upstream_list_change_reaches_the_catalog(
    transport: str, mode: ProtocolMode
) -> None:
    changes: list[CatalogChange] = []
    async with checked_manager(mode=mode) as manager, contextlib.AsyncExitStack() as stack:
        manager.listeners.append(changes.append)
        if transport == "stdio":
            spec = echo_spec("--list-changing", "0.3")
        else:
            url = await stack.enter_async_context(served("http", "--list-changing", "0.3"))
            spec = remote_spec("http", url)
        await ready(manager, "shifty", spec)
        await until(
            lambda: any("shifty_extra" in c.added for c in changes), timeout=WAIT, what="extra"
        )
        await until(
            lambda: any("shifty_extra" in c.removed for c in changes), timeout=WAIT, what="gone"
        )
        await manager.remove("shifty")


# --------------------------------------------------------------------------- call faults


async def test_a_call_past_its_timeout_is_answered_in_words_and_cancelled_upstream(
    manager: ServerManager, tmp_path: Path
) -> None:
    wire = tmp_path / "stdin.jsonl"  # what the server read, copied by tee
    spec = sh_spec(f"tee {wire} | exec {PYTHON} -m tests.servers.echo", timeouts={"call": 0.5})
    await ready(manager, "tap", spec)
    started = now()
    result = await manager.call("tap_slow", {"seconds": 30})
    assert elapsed_since(started) < 5
    assert result.is_error
    assert text_of(result) == "The slow tool from tap did not answer within 0.5 seconds."

    def messages() -> list[dict[str, object]]:
        return [json.loads(line) for line in wire.read_text().splitlines() if line]

    await until(
        lambda: any(m.get("method") == "notifications/cancelled" for m in messages()),
        timeout=WAIT,
        what="notifications/cancelled on the wire",
    )
    [call] = [m for m in messages() if m.get("method") == "tools/call"]
    [cancel] = [m for m in messages() if m.get("method") == "notifications/cancelled"]
    assert isinstance(cancel["params"], dict) and cancel["params"]["requestId"] == call["id"]
    assert text_of(await manager.call("tap_echo", {"text": "still here"})) == "still here"


async def test_consecutive_failures_mark_a_server_degraded_until_a_call_succeeds() -> None:
    async with checked_manager(timing=replace(FAST, degraded_after=3)) as manager:
        supervisor = await ready(manager, "sluggish", echo_spec(timeouts={"call": 0.3}))
        for _ in range(3):  # a tool that reports an error is a server doing its job
            result = await manager.call("sluggish_fail", {"message": "bad input"})
            assert result.is_error and "bad input" in text_of(result)
        assert supervisor.state == "Ready"

        for expected in ("Ready", "Ready", "Degraded"):
            result = await manager.call("sluggish_slow", {"seconds": 5})
            assert result.is_error and supervisor.state == expected
        assert supervisor.last_error == "3 calls in a row failed"
        assert "sluggish_echo" in manager.catalog.entries  # a Degraded server keeps serving
        assert manager.statuses()[0].state == "Degraded"
        assert text_of(await manager.call("sluggish_echo", {"text": "ok"})) == "ok"
        assert supervisor.state == "Ready"


async def test_tools_stay_listed_through_the_grace_period_then_go(tmp_path: Path) -> None:
    grace = 1.5
    mark = tmp_path / "started-once"
    script = (
        f'if [ -e {mark} ]; then echo "broken for good" >&2; exit 1; fi; touch {mark};'
        f" exec {PYTHON} -m tests.servers.echo --crash-after 1"
    )
    changes: list[CatalogChange] = []
    async with checked_manager(timing=replace(FAST, grace=grace)) as manager:
        supervisor = await ready(manager, "flaky", sh_spec(script))
        manager.listeners.append(changes.append)
        tools = manager.catalog.by_server("flaky")
        assert "flaky_echo" in tools
        await until(lambda: supervisor.state != "Ready", timeout=WAIT, what="the crash")
        grace_until = supervisor.grace_until  # monotonic, like the loop's clock
        assert grace_until is not None

        assert manager.catalog.by_server("flaky") == tools
        result = await manager.call("flaky_echo", {"text": "x"})
        assert now() < grace_until  # it failed fast, within the grace
        assert result.is_error
        assert text_of(result) in (
            "The flaky tools are unavailable right now (the server is restarting).",
            "The flaky tools are unavailable right now (the server is connecting).",
        )

        await until(lambda: not manager.catalog.by_server("flaky"), timeout=WAIT, what="withdrawn")
        assert grace_until <= now() < grace_until + 2
        assert any(set(c.removed) == set(tools) for c in changes)
        await until(
            lambda: supervisor.last_error == "process exited with code 1: broken for good",
            timeout=WAIT,
            what="a retry",
        )
        assert supervisor.state in ("Backoff", "Connecting")


# --------------------------------------------------------------------------- config faults


@pytest.mark.parametrize(
    ("spec_fields", "error"),
    [
        ({"command": "/nonexistent/mcp-server"}, "command not found: /nonexistent/mcp-server"),
        (
            {"command": "sh", "cwd": "/nonexistent/dir"},
            "working directory '/nonexistent/dir' does not exist",
        ),
    ],
    ids=["command-not-found", "cwd-missing"],
)
async def test_a_server_that_cannot_ever_start_fails_without_retrying(
    manager: ServerManager, spec_fields: dict[str, str], error: str
) -> None:
    await plug(manager, "never", stdio_spec(**spec_fields))
    supervisor = await settle(manager, "never", "Failed")
    assert supervisor.last_error == error
    [status] = manager.statuses()
    assert status.restarts == 0 and status.next_retry_at is None


# --------------------------------------------------------------------------- stderr


async def test_the_stderr_tail_is_bounded_and_masks_secrets(manager: ServerManager) -> None:
    secret = "hunter2-very-secret"
    long_line = "z" * 20000
    script = (
        'echo "my token is $API_TOKEN" >&2; '
        'i=0; while [ $i -lt 200 ]; do echo "line $i" >&2; i=$((i+1)); done; '
        f'echo "{long_line}" >&2; echo "still $API_TOKEN" >&2; '
        f"exec {PYTHON} -m tests.servers.echo"
    )
    env = {"JF_TEST_SECRET": secret}
    supervisor = await ready(
        manager, "chatty", sh_spec(script, env={"API_TOKEN": "${JF_TEST_SECRET}"}), env
    )
    await until(lambda: (supervisor.tail.last() or "").startswith("still"), timeout=WAIT)
    [status] = manager.statuses()
    tail = status.stderr_tail or ""
    lines = tail.splitlines()
    assert len(lines) == 50 and len(tail.encode()) <= 8192
    assert lines[0] == "line 152" and lines[-2] == "z" * 1021 + "..."
    assert lines[-1] == "still ********"
    assert secret not in tail
    assert text_of(await manager.call("chatty_env", {"name": "API_TOKEN"})) == secret


async def test_a_secret_in_the_last_words_of_a_crash_is_masked(manager: ServerManager) -> None:
    spec = sh_spec('echo "login failed for $API_TOKEN" >&2; exit 1', env={"API_TOKEN": "${T}"})
    await plug(manager, "leaky", spec, {"T": "s3cr3t-value"})
    supervisor = await settle(manager, "leaky", "Backoff")
    assert supervisor.last_error == "process exited with code 1: login failed for ********"


# --------------------------------------------------------------------------- nothing left behind


async def test_removing_a_server_leaves_no_descendant(manager: ServerManager) -> None:
    supervisor = await ready(manager, "parent", echo_spec("--spawn-grandchild"))
    await until(lambda: grandchild_pid(supervisor) is not None, timeout=WAIT, what="grandchild")
    grandchild, leader = grandchild_pid(supervisor), supervisor.pid
    assert grandchild is not None and leader is not None and running(grandchild)
    started = now()
    await manager.remove("parent")
    assert elapsed_since(started) < 12
    assert not running(grandchild) and not group_running(leader)


async def test_a_hundred_crash_restart_cycles_leave_no_zombie_and_no_fd() -> None:
    timing = Timing(backoff_base=0.001, backoff_cap=0.002, grace=0.1)
    async with checked_manager(timing=timing) as manager:
        supervisor = await plug(manager, "crashy", sh_spec("echo crashed >&2; exit 3"))
        await until(lambda: supervisor.restarts >= 100, timeout=60, what="100 restarts")
        assert supervisor.last_error == "process exited with code 3: crashed"
        assert len(zombies()) <= 1  # at most the one that just exited
    # checked_manager: no child, zombie, thread, task or fd left


async def test_closing_the_manager_stops_every_server_and_the_warden() -> None:
    async with checked_manager() as manager:
        await plug(manager, "a", echo_spec("--spawn-grandchild"))
        await plug(manager, "b", echo_spec())
        a, b = await settle(manager, "a", "Ready"), await settle(manager, "b", "Ready")
        await until(lambda: grandchild_pid(a) is not None, timeout=WAIT, what="grandchild")
        leaders = [a.pid, b.pid]
        grandchild, warden = grandchild_pid(a), manager.warden.pid
        assert None not in leaders and grandchild is not None and warden is not None
    for leader in leaders:
        assert leader is not None and not group_running(leader)
    assert not running(grandchild) and not running(warden)


HOST = """
import asyncio, sys
from jackfield.core.connection import resolve
from jackfield.shell.servers import ServerManager
from jackfield.spec.models import MCPServerSpec

async def main() -> None:
    spec = MCPServerSpec(command=sys.executable, cwd=sys.argv[1],
                         args=["-m", "tests.servers.echo", "--spawn-grandchild"])
    async with ServerManager() as manager:
        await manager.put("echo", spec, resolve(spec, {}), reconnect=True)
        supervisor = manager.supervisor("echo")
        while supervisor.state != "Ready" or "grandchild" not in (supervisor.tail.text() or ""):
            await asyncio.sleep(0.02)
        grandchild = supervisor.tail.text().split("grandchild ")[1].split()[0]
        print(supervisor.pid, grandchild, manager.warden.pid, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_sigkilled_host_leaves_no_stdio_server_behind() -> None:
    host = await asyncio.create_subprocess_exec(
        PYTHON, "-c", HOST, str(REPO), cwd=REPO, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
    )  # fmt: skip
    pids: list[int] = []
    try:
        assert host.stdout is not None
        async with asyncio.timeout(WAIT):
            line = await host.stdout.readline()
        pids = [int(p) for p in line.split()]
        server, grandchild, warden = pids
        assert running(server) and running(grandchild) and running(warden)

        host.kill()  # SIGKILL: no cleanup code of the host runs
        await host.wait()
        await until(
            lambda: not any(running(p) for p in pids),
            timeout=5,
            what=f"server, grandchild and warden gone (running: {[p for p in pids if running(p)]})",
        )
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if host.returncode is None:
            host.kill()
            await host.wait()
