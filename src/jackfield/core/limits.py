"""Call governance, the pure part: effective limits per tool, the token bucket, cache keys.

Time is passed in (monotonic seconds), so every rule here is tested without a clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jackfield.core.hashing import canonical
from jackfield.spec.models import MCPServerSpec

DEFAULT_MAX_QUEUED = 16


@dataclass(frozen=True)
class Limits:
    """What applies to one tool after merging the server's limits with the tool's override."""

    max_concurrent: int | None = None
    max_queued: int = DEFAULT_MAX_QUEUED
    per_minute: float | None = None
    cache_ttl: float = 0.0

    @property
    def unlimited(self) -> bool:
        return self.max_concurrent is None and self.per_minute is None and self.cache_ttl <= 0


def limits_for(spec: MCPServerSpec, tool: str) -> Limits:
    """The tool's override wins field by field; caching needs `cacheable: true` on the tool."""
    server = spec.limits
    override = spec.tools.overrides.get(tool)

    def pick(name: str) -> Any:
        value = getattr(override, name) if override is not None else None
        return value if value is not None else getattr(server, name)

    max_queued = pick("max_queued")
    ttl = pick("cache_ttl") if override is not None and override.cacheable else None
    return Limits(
        max_concurrent=pick("max_concurrent_calls"),
        max_queued=DEFAULT_MAX_QUEUED if max_queued is None else max_queued,
        per_minute=pick("calls_per_minute"),
        cache_ttl=float(ttl or 0.0),
    )


def server_limits(spec: MCPServerSpec) -> Limits:
    """The server-wide limits (shared by all its tools)."""
    s = spec.limits
    return Limits(
        max_concurrent=s.max_concurrent_calls,
        max_queued=DEFAULT_MAX_QUEUED if s.max_queued is None else s.max_queued,
        per_minute=s.calls_per_minute,
    )


@dataclass(frozen=True)
class Bucket:
    """A token bucket holding at most one minute's worth of calls, full at start."""

    per_minute: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, per_minute: float, now: float) -> Bucket:
        return cls(per_minute, max(1.0, per_minute), now)

    def take(self, now: float) -> tuple[bool, Bucket]:
        """(allowed, next state)."""
        capacity = max(1.0, self.per_minute)
        tokens = min(capacity, self.tokens + (now - self.updated) * self.per_minute / 60.0)
        if tokens >= 1.0:
            return True, Bucket(self.per_minute, tokens - 1.0, now)
        return False, Bucket(self.per_minute, tokens, now)

    def give_back(self) -> Bucket:
        """The state with the token of a call that never ran returned (capped at capacity)."""
        capacity = max(1.0, self.per_minute)
        return Bucket(self.per_minute, min(capacity, self.tokens + 1.0), self.updated)

    def retry_after(self) -> float:
        """Seconds until the next token."""
        return max(0.0, (1.0 - self.tokens) * 60.0 / self.per_minute)


def arguments_hash(arguments: Mapping[str, Any]) -> str:
    """A stable digest of call arguments: for cache keys and audit rows (never the values)."""
    return "sha256:" + hashlib.sha256(canonical(arguments).encode()).hexdigest()


def redacted_json(value: Any, redact: Callable[[str], str]) -> str:
    """`value` as JSON for an audit row, with `redact` applied to every string in it (keys
    too) and to every number's text before encoding, and to the encoded text after.

    Redacting only the encoded text misses a secret that JSON escapes (a quote, a backslash,
    a non-ASCII letter); a number that contains a secret becomes the masked string.
    """

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return redact(v)
        if isinstance(v, Mapping):
            return {redact(str(k)): walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        if isinstance(v, int | float) and not isinstance(v, bool):
            text = json.dumps(v)
            masked = redact(text)
            return v if masked == text else masked
        return v

    return redact(json.dumps(walk(value), sort_keys=True, default=str))
