"""Call governance through a real ServerManager and real echo servers (tests/servers/echo.py):
concurrency gates with a bounded queue, the token bucket, the result cache, per-tool overrides,
and how the limits show in status and in /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp_types
import pytest

from jackfield.app import App
from jackfield.core.connection import resolve
from jackfield.settings import Settings
from jackfield.shell.gates import MAX_CACHED, Governor
from jackfield.shell.servers import CallEvent, ServerManager, text_of
from jackfield.spec.models import MCPServerSpec
from tests.conftest import REPO
from tests.support.controller import until
from tests.support.live import FAST

SLOW = 1.5
"""Seconds the `slow` tool sleeps: every admitted call is in flight at least this long, which
leaves time to look at the gates while they are full."""


def echo_spec(**spec: Any) -> MCPServerSpec:
    return MCPServerSpec.model_validate(
        {"command": sys.executable, "args": ["-m", "tests.servers.echo"], "cwd": str(REPO), **spec}
    )


async def plug(manager: ServerManager, **servers: MCPServerSpec) -> None:
    for name, spec in servers.items():
        await manager.put(name, spec, resolve(spec, dict(os.environ)), reconnect=True)
    await until(
        lambda: all(
            manager.states().get(n) == "Ready" and f"{n}_count" in manager.catalog.entries
            for n in servers
        ),
        timeout=60,
        what=f"{list(servers)} Ready (now {manager.states()})",
    )


@contextlib.asynccontextmanager
async def governed(
    events: list[CallEvent] | None = None, **servers: MCPServerSpec
) -> AsyncIterator[ServerManager]:
    observer = events.append if events is not None else None
    async with ServerManager(timing=FAST, observer=observer) as manager:
        await plug(manager, **servers)
        yield manager


def limits_of(manager: ServerManager, server: str) -> dict[str, Any]:
    status = next(s for s in manager.statuses() if s.name == server)
    limits: dict[str, Any] = status.to_json()["limits"]
    return limits


def in_flight_upstream(manager: ServerManager, server: str) -> int:
    """Calls the supervisor has sent to the server process and not had answered."""
    status = next(s for s in manager.statuses() if s.name == server)
    return int(status.extra["calls_in_flight"])


def texts(results: list[mcp_types.CallToolResult]) -> list[str]:
    return [text_of(r) for r in results]


async def test_twenty_calls_against_two_slots_run_two_queue_five_and_refuse_thirteen_fast() -> None:
    events: list[CallEvent] = []
    spec = echo_spec(limits={"maxConcurrentCalls": 2, "maxQueued": 5})
    async with governed(events, gov=spec) as manager:
        loop = asyncio.get_running_loop()
        started = loop.time()
        took: dict[int, float] = {}

        async def one(i: int) -> mcp_types.CallToolResult:
            result = await manager.call("gov_slow", {"seconds": SLOW})
            took[i] = loop.time() - started
            return result

        tasks = [asyncio.create_task(one(i)) for i in range(20)]
        await until(lambda: sum(t.done() for t in tasks) >= 13, what="refusals")

        limits = limits_of(manager, "gov")
        assert limits["in_use"]["*"] == 2 and limits["queued"]["*"] == 5
        assert limits["rejected"] == {"busy": 13}
        assert in_flight_upstream(manager, "gov") == 2  # what the server process is working on

        refused = [i for i, t in enumerate(tasks) if t.done()]
        assert len(refused) == 13 and all(took[i] < SLOW for i in refused)
        for i in refused:
            result = tasks[i].result()
            assert result.is_error and "busy" in text_of(result)

        admitted = await asyncio.gather(*(t for t in tasks if not t.done()))
        assert texts(admitted) == [f"slept {SLOW:g}"] * 7
        # fast: every refusal came back before the first admitted call did
        assert max(took[i] for i in refused) < min(took[i] for i in took if i not in refused)
        # two at a time: seven calls take four rounds
        assert loop.time() - started >= 4 * SLOW
        after = limits_of(manager, "gov")
        assert after["in_use"]["*"] == 0 and after["queued"]["*"] == 0

    outcomes = sorted(e.outcome for e in events)
    assert outcomes == ["ok"] * 7 + ["rejected:busy"] * 13


async def test_thirty_calls_per_minute_hold_under_a_burst_of_a_hundred_then_refill() -> None:
    events: list[CallEvent] = []
    async with governed(events, rate=echo_spec(limits={"callsPerMinute": 30})) as manager:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(
            *(manager.call("rate_echo", {"text": f"n{i}"}) for i in range(100))
        )
        answered = [r for r in results if not r.is_error]
        refused = [r for r in results if r.is_error]
        assert len(answered) == 30 and len(refused) == 70
        assert all("used too often" in text_of(r) for r in refused)
        assert limits_of(manager, "rate")["rejected"] == {"rate": 70}
        assert sorted(e.outcome for e in events) == ["ok"] * 30 + ["rejected:rate"] * 70

        # 30 a minute is a token every 2 s: the next call gets through only after that
        while (await manager.call("rate_echo", {"text": "again"})).is_error:
            assert loop.time() - started < 10, "the bucket never refilled"
            await asyncio.sleep(0.1)
        assert loop.time() - started >= 1.9


async def test_a_cacheable_tool_reaches_the_server_once_within_the_ttl_and_again_after() -> None:
    ttl = 1.0
    cached = echo_spec(
        limits={"cacheTtl": 30},
        tools={
            "overrides": {
                "count": {"cacheable": True, "cacheTtl": ttl},
                "fail": {"cacheable": True},
            }
        },
    )
    plain = echo_spec(limits={"cacheTtl": 30})  # no tool declared cacheable: nothing is cached
    async with governed(cached=cached, plain=plain) as manager:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def count(server: str, key: str) -> str:
            return text_of(await manager.call(f"{server}_count", {"key": key}))

        # the count tool answers "<key> <calls so far in that process>"
        assert [await count("cached", "a") for _ in range(3)] == ["a 1"] * 3
        assert await count("cached", "b") == "b 2"  # other arguments, other entry
        assert limits_of(manager, "cached")["cache_hits"] == 2

        errors = [await manager.call("cached_fail", {"message": "no"}) for _ in range(2)]
        assert all(r.is_error for r in errors)
        assert limits_of(manager, "cached")["cache_hits"] == 2  # error results are not kept

        assert [await count("plain", "a") for _ in range(2)] == ["a 1", "a 2"]

        while (answer := await count("cached", "a")) == "a 1":
            assert loop.time() - started < 10, "the cache entry never expired"
            await asyncio.sleep(0.05)
        assert answer == "a 3" and loop.time() - started >= ttl


async def test_a_tool_override_beats_the_server_limits_for_that_tool_only() -> None:
    spec = echo_spec(
        limits={"maxConcurrentCalls": 4, "maxQueued": 0, "callsPerMinute": 1000},
        tools={
            "overrides": {
                "slow": {"maxConcurrentCalls": 1},  # maxQueued 0 comes from the server
                "echo": {"callsPerMinute": 3},
            }
        },
    )
    async with governed(over=spec) as manager:
        slow = [asyncio.create_task(manager.call("over_slow", {"seconds": SLOW})) for _ in range(3)]
        await until(lambda: sum(t.done() for t in slow) == 2, what="refusals")
        # the server gate still has room for other tools while `slow` is at its own limit
        adds = await asyncio.gather(*(manager.call("over_add", {"a": i, "b": 1}) for i in range(3)))
        assert texts(adds) == ["1", "2", "3"]
        finished = await asyncio.gather(*slow)
        assert sorted(texts(finished)) == sorted(
            [
                f"slept {SLOW:g}",
                *["The slow tool is busy right now; please try again in a moment."] * 2,
            ]
        )

        echoes = await asyncio.gather(
            *(manager.call("over_echo", {"text": "x"}) for _ in range(10))
        )
        assert sum(not r.is_error for r in echoes) == 3
        more_adds = [await manager.call("over_add", {"a": 1, "b": 1}) for _ in range(10)]
        assert not any(r.is_error for r in more_adds)  # the server's 1000 a minute applies
        assert limits_of(manager, "over")["rejected"] == {"busy": 2, "rate": 7}


async def test_a_looser_tool_override_is_still_held_by_the_server_gate() -> None:
    spec = echo_spec(
        limits={"maxConcurrentCalls": 1, "maxQueued": 0},
        tools={"overrides": {"slow": {"maxConcurrentCalls": 5}}},
    )
    async with governed(loose=spec) as manager:
        results = await asyncio.gather(
            *(manager.call("loose_slow", {"seconds": 0.2}) for _ in range(2))
        )
        assert sorted(r.is_error for r in results) == [False, True], texts(results)


async def test_editing_a_prompt_keeps_the_rate_limit_state() -> None:
    spec = echo_spec(limits={"callsPerMinute": 2})
    async with governed(edit=spec) as manager:
        for _ in range(2):
            assert not (await manager.call("edit_echo", {"text": "x"})).is_error
        edited = spec.model_copy(update={"prompt": "Use the echo tools."})
        await manager.put("edit", edited, resolve(edited, dict(os.environ)), reconnect=False)
        assert (await manager.call("edit_echo", {"text": "x"})).is_error  # no fresh bucket


async def test_a_call_refused_busy_gives_its_rate_token_back() -> None:
    spec = echo_spec(limits={"maxConcurrentCalls": 1, "maxQueued": 0, "callsPerMinute": 3})
    async with governed(both=spec) as manager:
        burst = await asyncio.gather(
            *(manager.call("both_slow", {"seconds": 0.2}) for _ in range(5))
        )
        assert sorted(r.is_error for r in burst) == [False] + [True] * 4
        assert all("busy" in text_of(r) for r in burst if r.is_error)
        # only the call that ran took a token: two are left
        after = [await manager.call("both_echo", {"text": "x"}) for _ in range(3)]
        assert [r.is_error for r in after] == [False, False, True]
        assert limits_of(manager, "both")["rejected"] == {"busy": 4, "rate": 1}


async def test_the_cache_keeps_at_most_max_cached_entries_dropping_the_oldest() -> None:
    now = [0.0]
    spec = echo_spec(tools={"overrides": {"get": {"cacheable": True, "cacheTtl": 60}}})
    governor = Governor("s", spec, clock=lambda: now[0])
    upstream = 0

    async def run() -> int:
        nonlocal upstream
        upstream += 1
        return upstream

    for i in range(MAX_CACHED + 1):
        await governor.call("get", {"i": i}, run)
    assert await governor.call("get", {"i": MAX_CACHED}, run) == MAX_CACHED + 1  # still cached
    assert await governor.call("get", {"i": 0}, run) == MAX_CACHED + 2  # the oldest went


@pytest.fixture
def app(tmp_path: Path, config_dir: Path) -> App:
    settings = Settings(
        config_dir=config_dir,
        database_url=f"sqlite:///{tmp_path / 'state.db'}",
        hub_port=0,
        status_port=0,
    )
    return App(settings, agent=False)


async def test_refusals_are_counted_in_metrics_by_server_and_reason(app: App) -> None:
    spec = echo_spec(limits={"maxConcurrentCalls": 1, "maxQueued": 0, "callsPerMinute": 2})
    async with app.manager:
        await plug(app.manager, met=spec)
        first = asyncio.create_task(app.manager.call("met_slow", {"seconds": SLOW}))
        await until(lambda: in_flight_upstream(app.manager, "met") == 1, what="first call sent")
        assert (await app.manager.call("met_echo", {"text": "x"})).is_error  # busy
        await first
        assert not (await app.manager.call("met_echo", {"text": "x"})).is_error
        assert (await app.manager.call("met_echo", {"text": "x"})).is_error  # rate
        text = app.metrics.render().decode()
    assert 'jackfield_tool_calls_rejected_total{reason="busy",server="met"} 1.0' in text
    assert 'jackfield_tool_calls_rejected_total{reason="rate",server="met"} 1.0' in text
    assert 'jackfield_tool_calls_total{outcome="rejected:busy",server="met"} 1.0' in text


async def test_the_queue_depth_gauge_shows_waiting_calls(app: App) -> None:
    spec = echo_spec(limits={"maxConcurrentCalls": 1, "maxQueued": 3})
    async with app.manager:
        await plug(app.manager, queue=spec)
        calls = [
            asyncio.create_task(app.manager.call("queue_slow", {"seconds": SLOW})) for _ in range(3)
        ]
        await until(lambda: limits_of(app.manager, "queue")["queued"].get("*") == 2, what="queued")
        text = app.metrics.render().decode()
        await asyncio.gather(*calls)
    assert 'jackfield_tool_call_queue_depth{server="queue"} 2.0' in text
