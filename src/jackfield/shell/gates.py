"""Call governance at run time: concurrency gates with bounded queues, rate limits, a TTL cache.

One `Governor` per server. A call takes a token from the server's and the tool's bucket (both or
neither), then passes the server gate, then the tool gate; each gate admits `max_concurrent`
calls, queues up to `max_queued` more, and refuses the rest at once (giving the tokens back: a
refused call never reached the server). Counters (in use, queued, rejected by reason) feed
status and metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from jackfield.core.limits import Bucket, Limits, arguments_hash, limits_for, server_limits
from jackfield.spec.models import MCPServerSpec

MAX_CACHED = 1024
"""Cached results kept per server; past it, expired entries go, then the oldest."""


class Rejected(Exception):
    """A call refused by a limit; `reason` is 'busy' or 'rate'. The message is speakable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Gate:
    """Admits `limit` holders at once, queues `max_queued` more, refuses the rest."""

    limit: int
    max_queued: int
    in_use: int = 0
    queued: int = 0
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @asynccontextmanager
    async def hold(self, what: str) -> AsyncIterator[None]:
        if self.in_use >= self.limit:
            if self.queued >= self.max_queued:
                raise Rejected("busy", f"{what} is busy right now; please try again in a moment.")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self.queued += 1
            try:
                await waiter  # the releaser hands its slot over: in_use stays counted
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._release()  # we were handed a slot but are leaving: pass it on
                raise
            finally:
                self.queued -= 1
        else:
            self.in_use += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_use -= 1


@dataclass
class _Cached:
    expires: float
    value: Any


class Governor:
    """Limits and cache for one server's calls; rebuilt in place when its spec changes."""

    def __init__(
        self, server: str, spec: MCPServerSpec, clock: Callable[[], float] = time.monotonic
    ):
        self.server = server
        self.clock = clock
        self.rejected: Counter[str] = Counter()
        self.cache_hits = 0
        self.spec = spec
        self._gates: dict[str, Gate] = {}
        self._buckets: dict[str, Bucket] = {}
        self._cache: dict[tuple[str, str], _Cached] = {}

    def update(self, spec: MCPServerSpec) -> None:
        """New limits apply to new calls; calls already admitted finish under the old ones.

        A gate or bucket whose own limit is unchanged is kept, so an edit (of a prompt, a tool
        filter, another tool's limit) neither refills buckets nor forgets calls in flight."""
        old, self.spec = self.spec, spec
        if (old.limits, old.tools.overrides) == (spec.limits, spec.tools.overrides):
            return

        def now_for(key: str) -> Limits:
            return server_limits(spec) if key == "*" else limits_for(spec, key)

        self._gates = {
            k: g
            for k, g in self._gates.items()
            if (g.limit, g.max_queued) == (now_for(k).max_concurrent, now_for(k).max_queued)
        }
        self._buckets = {
            k: b for k, b in self._buckets.items() if b.per_minute == now_for(k).per_minute
        }
        self._cache.clear()

    def _gate(self, key: str, limits: Limits) -> Gate | None:
        if limits.max_concurrent is None:
            return None
        gate = self._gates.get(key)
        if gate is None or (gate.limit, gate.max_queued) != (
            limits.max_concurrent,
            limits.max_queued,
        ):
            gate = Gate(limits.max_concurrent, limits.max_queued)
            self._gates[key] = gate
        return gate

    def _take(self, levels: tuple[tuple[str, Limits], ...], what: str) -> list[str]:
        """A token from every level's bucket, or from none; returns the keys taken from.

        Raises:
            Rejected: ("rate") some bucket is empty.
        """
        now = self.clock()
        taken: dict[str, Bucket] = {}
        for key, limits in levels:
            if limits.per_minute is None:
                continue
            bucket = self._buckets.get(key)
            if bucket is None or bucket.per_minute != limits.per_minute:
                bucket = Bucket.full(limits.per_minute, now)
            allowed, after = bucket.take(now)
            if not allowed:
                raise Rejected("rate", f"{what} has been used too often; try again in a minute.")
            taken[key] = after
        self._buckets.update(taken)
        return list(taken)

    def _give_back(self, keys: list[str]) -> None:
        for key in keys:
            bucket = self._buckets.get(key)
            if bucket is not None:
                self._buckets[key] = bucket.give_back()

    def _store(self, key: tuple[str, str], value: Any, ttl: float) -> None:
        now = self.clock()
        if len(self._cache) >= MAX_CACHED:
            for k in [k for k, c in self._cache.items() if c.expires <= now]:
                del self._cache[k]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        self._cache.pop(key, None)  # re-inserted last: the dict's order is the age order
        self._cache[key] = _Cached(now + ttl, value)

    async def call(self, tool: str, arguments: dict[str, Any], run: Callable[[], Any]) -> Any:
        """Run `run()` under the limits; raises Rejected (counted by reason)."""
        per_tool, per_server = limits_for(self.spec, tool), server_limits(self.spec)
        key = (tool, arguments_hash(arguments)) if per_tool.cache_ttl > 0 else None
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None and hit.expires > self.clock():
                self.cache_hits += 1
                return hit.value
        what = f"The {tool} tool"
        levels = (("*", per_server), (tool, per_tool))
        try:
            tokens = self._take(levels, what)
            async with AsyncExitStack() as stack:
                try:
                    for gate_key, limits in levels:
                        gate = self._gate(gate_key, limits)
                        if gate is not None:
                            await stack.enter_async_context(gate.hold(what))
                except Rejected:
                    self._give_back(tokens)
                    raise
                value = await run()
        except Rejected as e:
            self.rejected[e.reason] += 1
            raise
        if key is not None and not getattr(value, "is_error", False):
            self._store(key, value, per_tool.cache_ttl)
        return value

    def snapshot(self) -> dict[str, Any]:
        """For status: in use / queued per gate, rejected by reason, cache hits."""
        return {
            "in_use": {k: g.in_use for k, g in self._gates.items()},
            "queued": {k: g.queued for k, g in self._gates.items()},
            "rejected": dict(self.rejected),
            "cache_hits": self.cache_hits,
        }
