"""Call governance, the pure part: effective limits per tool, the token bucket, cache keys; and
the catalog limits, what one server may put in the catalog.

Time is passed in (monotonic seconds), so every rule here is tested without a clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jackfield.core.hashing import canonical
from jackfield.core.redaction import mask_tree
from jackfield.spec.models import MCPServerSpec

DEFAULT_MAX_QUEUED = 16

# --- the catalog: what one server may contribute -------------------------------------------------
# The whole catalog reaches every hub client, and MCP clients bound what they read at once (the
# SDK's client drops an SSE event over 1 MiB, failing the whole `tools/list`). These bound one
# tool and one server, so one server cannot crowd out or break the others; the hub pages
# `tools/list` (HUB_PAGE_BYTES), so the sum of many servers never has to fit one event.

MAX_DESCRIPTION_BYTES = 16 * 1024
"""A tool's description, UTF-8 bytes. Real servers stay far below (a few KiB at most); beyond
this a description is a document pasted into every LLM request."""
MAX_INPUT_SCHEMA_BYTES = 64 * 1024
"""A tool's inputSchema as compact JSON, UTF-8 bytes: room for large enum lists and nesting."""
MAX_TOOLS_PER_SERVER = 256
"""Tools one server may offer (after its include/exclude filter); the first ones are kept. Far
more than an LLM can choose among (OpenAI takes at most 128 tools per request)."""
HUB_PAGE_BYTES = 512 * 1024
"""A hub `tools/list` page holds at most this many bytes of tools as JSON (always at least one
tool): half the SDK's 1 MiB event limit, and several times the largest tool the limits above
admit. Clients that read only the first page (livekit-agents' MCP client) still see whole
catalogs up to this size."""


@dataclass(frozen=True)
class CatalogLimits:
    """The per-server catalog limits (the constants above unless a test says otherwise)."""

    description_bytes: int = MAX_DESCRIPTION_BYTES
    input_schema_bytes: int = MAX_INPUT_SCHEMA_BYTES
    tools_per_server: int = MAX_TOOLS_PER_SERVER


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
    override = spec.tools.override(tool)

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
    return redact(json.dumps(mask_tree(value, redact), sort_keys=True, default=str))
