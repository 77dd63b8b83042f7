"""Call governance at run time: concurrency gates with bounded queues, rate limits, a TTL cache.

One `Governor` per server. A call passes the server gate, then the tool gate; each gate admits
`max_concurrent` calls, queues up to `max_queued` more, and refuses the rest at once. Counters
(in use, queued, rejected by reason) feed status and metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from jackfield.core.governance import Bucket, Limits, arguments_hash, limits_for, server_limits
from jackfield.spec.models import MCPServerSpec


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
        self._gates: dict[str, Gate] = {}
        self._buckets: dict[str, Bucket] = {}
        self._cache: dict[tuple[str, str], _Cached] = {}
        self.update(spec)

    def update(self, spec: MCPServerSpec) -> None:
        """New limits apply to new calls; calls already admitted finish under the old ones."""
        self.spec = spec
        self._gates.clear()
        self._buckets.clear()
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

    def _take(self, key: str, limits: Limits, what: str) -> None:
        if limits.per_minute is None:
            return
        now = self.clock()
        bucket = self._buckets.get(key) or Bucket.full(limits.per_minute, now)
        allowed, self._buckets[key] = bucket.take(now)
        if not allowed:
            raise Rejected("rate", f"{what} has been used too often; try again in a minute.")

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
        try:
            self._take("*", per_server, what)
            self._take(tool, per_tool, what)
            async with AsyncExitStack() as stack:
                for gate_key, limits in (("*", per_server), (tool, per_tool)):
                    gate = self._gate(gate_key, limits)
                    if gate is not None:
                        await stack.enter_async_context(gate.hold(what))
                value = await run()
        except Rejected as e:
            self.rejected[e.reason] += 1
            raise
        if key is not None and not getattr(value, "is_error", False):
            self._cache[key] = _Cached(self.clock() + per_tool.cache_ttl, value)
        return value

    def snapshot(self) -> dict[str, Any]:
        """For status: in use / queued per gate, rejected by reason, cache hits."""
        return {
            "in_use": {k: g.in_use for k, g in self._gates.items()},
            "queued": {k: g.queued for k, g in self._gates.items()},
            "rejected": dict(self.rejected),
            "cache_hits": self.cache_hits,
        }
