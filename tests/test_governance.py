"""Governance rules: effective limits, the token bucket, and the async gates under real load."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jackfield.core.limits import Bucket, arguments_hash, limits_for
from jackfield.shell.gates import Governor, Rejected
from jackfield.spec.models import MCPServerSpec


def spec(**kw: Any) -> MCPServerSpec:
    return MCPServerSpec.model_validate({"command": "x", **kw})


def test_a_tool_override_wins_field_by_field() -> None:
    s = spec(
        limits={"maxConcurrentCalls": 4, "callsPerMinute": 60, "cacheTtl": 30},
        tools={"overrides": {"slow": {"maxConcurrentCalls": 1}, "get": {"cacheable": True}}},
    )
    slow, get, other = limits_for(s, "slow"), limits_for(s, "get"), limits_for(s, "other")
    assert (slow.max_concurrent, slow.per_minute, slow.cache_ttl) == (1, 60, 0.0)
    assert (get.max_concurrent, get.cache_ttl) == (4, 30.0)  # cacheable: the server TTL applies
    assert other.cache_ttl == 0.0  # not declared cacheable: never cached
    assert limits_for(spec(), "x").unlimited


def test_the_bucket_allows_a_minute_of_burst_then_refills_at_the_rate() -> None:
    bucket = Bucket.full(30, now=0.0)
    allowed = 0
    for _ in range(100):
        ok, bucket = bucket.take(0.0)
        allowed += ok
    assert allowed == 30
    ok, bucket = bucket.take(1.0)  # 1 s at 30/min = half a token
    assert not ok and bucket.retry_after() == pytest.approx(1.0)
    ok, bucket = bucket.take(2.0)
    assert ok


def test_argument_hashes_ignore_key_order_and_differ_by_value() -> None:
    assert arguments_hash({"a": 1, "b": 2}) == arguments_hash({"b": 2, "a": 1})
    assert arguments_hash({"a": 1}) != arguments_hash({"a": 2})


async def test_twenty_calls_against_two_slots_and_five_queued() -> None:
    gov = Governor("slow", spec(limits={"maxConcurrentCalls": 2, "maxQueued": 5}))
    release = asyncio.Event()
    running = 0
    peak = 0

    async def work() -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return "done"

    tasks = [asyncio.create_task(gov.call("sleep", {"i": i}, work)) for i in range(20)]
    await asyncio.sleep(0)  # let every call reach its gate
    for _ in range(100):
        if sum(t.done() for t in tasks) == 13:
            break
        await asyncio.sleep(0.001)
    rejected = [t for t in tasks if t.done()]
    assert len(rejected) == 13 and all(isinstance(t.exception(), Rejected) for t in rejected)
    assert "busy" in str(rejected[0].exception())
    snap = gov.snapshot()
    assert (
        snap["in_use"]["*"] == 2 and snap["queued"]["*"] == 5 and snap["rejected"] == {"busy": 13}
    )
    release.set()
    results = await asyncio.gather(*(t for t in tasks if not t.done()))
    assert results == ["done"] * 7 and peak == 2
    assert gov.snapshot()["in_use"]["*"] == 0


async def test_a_rate_limit_holds_under_a_burst() -> None:
    now = [0.0]
    gov = Governor("s", spec(limits={"callsPerMinute": 30}), clock=lambda: now[0])

    async def ok() -> str:
        return "ok"

    outcomes = await asyncio.gather(
        *(gov.call("t", {}, ok) for _ in range(100)), return_exceptions=True
    )
    assert sum(o == "ok" for o in outcomes) == 30
    assert gov.rejected["rate"] == 70


async def test_a_cacheable_tool_is_called_once_within_the_ttl() -> None:
    now = [0.0]
    gov = Governor(
        "s",
        spec(tools={"overrides": {"get": {"cacheable": True, "cacheTtl": 10}}}),
        clock=lambda: now[0],
    )
    calls = 0

    async def upstream() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert [await gov.call("get", {"q": 1}, upstream) for _ in range(3)] == [1, 1, 1]
    assert await gov.call("get", {"q": 2}, upstream) == 2  # other arguments: other entry
    now[0] = 11.0
    assert await gov.call("get", {"q": 1}, upstream) == 3  # expired
    assert calls == 3 and gov.cache_hits == 2


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    gov = Governor("s", spec(limits={"maxConcurrentCalls": 1, "maxQueued": 2}))
    gate_open = asyncio.Event()

    async def hold() -> None:
        await gate_open.wait()

    first = asyncio.create_task(gov.call("t", {}, hold))
    waiting = asyncio.create_task(gov.call("t", {}, hold))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiting.cancel()
    gate_open.set()
    await first
    assert gov.snapshot()["in_use"]["*"] == 0 and gov.snapshot()["queued"]["*"] == 0
