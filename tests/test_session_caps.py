"""`scope: session` connections are capped and closed when idle: past
`JACKFIELD_MAX_SESSION_PROCESSES` a call is refused in words and counted in /status, an ended
session frees its slot, and a connection unused for `JACKFIELD_SESSION_PROCESS_IDLE` seconds
is closed (the session's next call opens a new one). Marked `faults` (`pytest -m faults`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jackfield.shell.servers import ServerManager
from tests.support.manager import checked_manager, echo_spec, ready, running
from tests.support.polling import until
from tests.support.process import (
    assert_clean_exit,
    echo_yaml,
    hub_client,
    jackfield_run,
    plain_config,
    text_of,
)

pytestmark = pytest.mark.faults

WAIT = 45.0


def session_processes(status: dict[str, Any], name: str) -> dict[str, int] | None:
    entry: dict[str, Any] = next((s for s in status["servers"] if s["name"] == name), {})
    figures: dict[str, int] | None = entry.get("session_processes")
    return figures


async def test_a_session_past_the_cap_is_refused_in_words_until_a_session_ends(
    tmp_path: Path,
) -> None:
    own = echo_yaml("own", "--tools", "pid", extra="  scope: session\n")
    config = plain_config(tmp_path / "config", {"own": own})
    env = {"JACKFIELD_MAX_SESSION_PROCESSES": "2"}
    with jackfield_run(tmp_path / "run", config, env=env) as jackfield:
        await asyncio.to_thread(jackfield.servers_ready, "own")
        url = jackfield.hub_url
        async with hub_client(url) as two, hub_client(url) as three:
            async with hub_client(url) as one:
                first = await one.call_tool("own_pid", {})
                second = await two.call_tool("own_pid", {})
                assert not first.is_error and not second.is_error
                assert text_of(first) != text_of(second), "each session has its own process"

                refused = await three.call_tool("own_pid", {})
                assert refused.is_error
                assert text_of(refused) == [
                    "The pid tool from own could not be used: 2 conversations already have a"
                    " connection of their own open, the most allowed; try again once one has"
                    " ended."
                ]
                status = await asyncio.to_thread(jackfield.status)
                assert session_processes(status, "own") == {"open": 2, "refused": 1}

            await asyncio.to_thread(
                jackfield.until,
                lambda s: (session_processes(s, "own") or {}).get("open") == 1,
                "the ended session's process closed",
            )
            third = await three.call_tool("own_pid", {})
            assert not third.is_error, text_of(third)
            assert text_of(third) != text_of(second)
            status = await asyncio.to_thread(jackfield.status)
            assert session_processes(status, "own") == {"open": 2, "refused": 1}
        code = await asyncio.to_thread(jackfield.stop)
        assert_clean_exit(jackfield, code)


async def test_a_session_connection_unused_past_the_idle_time_is_closed_and_reopened() -> None:
    async with checked_manager(session_idle=0.3) as manager:
        await ready(manager, "own", echo_spec("--tools", "pid", scope="session"))
        first = int(text_of_result(await manager.call("own_pid", {}, session="s1")))
        assert running(first)
        await until(lambda: not running(first), timeout=WAIT, what="the idle process closed")
        assert open_for(manager, "own") == 0
        second = int(text_of_result(await manager.call("own_pid", {}, session="s1")))
        assert second != first and running(second)
        assert open_for(manager, "own") == 1


def text_of_result(result: Any) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content)


def open_for(manager: ServerManager, name: str) -> int:
    [status] = [s for s in manager.statuses() if s.name == name]
    figures: dict[str, int] = status.extra["session_processes"]
    return figures["open"]
