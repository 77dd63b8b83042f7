"""The status document (DESIGN.md section 7) as immutable values, and kstatus conditions. Pure.

Producers: the reconciler fills `ConfigStatus`, the manager one `ServerStatus` per server, the
agent/hub/watcher their parts. Consumers: the status server, the dashboard, `jackfield status`,
the store. Timestamps are aware datetimes, rendered as RFC 3339 UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

ServerState = Literal["Pending", "Connecting", "Ready", "Degraded", "Backoff", "Failed", "Disabled"]
SERVER_STATES: tuple[ServerState, ...] = (
    "Pending",
    "Connecting",
    "Ready",
    "Degraded",
    "Backoff",
    "Failed",
    "Disabled",
)
SERVING_STATES = frozenset({"Ready", "Degraded"})
"""Server states in which a server is connected and serves its tools; its `prompt` then joins
the agent's instructions."""
WatcherState = Literal["Starting", "Watching", "Polling", "Degraded"]
Outcome = Literal["applied", "failed", "noop", "rejected"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Condition:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "last_transition": rfc3339(self.last_transition),
        }


def set_condition(conditions: tuple[Condition, ...], new: Condition) -> tuple[Condition, ...]:
    """Replace the condition of that type; keep its transition time if the status is the same."""
    out: list[Condition] = []
    for c in conditions:
        if c.type == new.type:
            if c.status == new.status:
                new = replace(new, last_transition=c.last_transition)
            continue
        out.append(c)
    return tuple(
        sorted(
            [*out, new],
            key=lambda c: (
                ("Ready", "Reconciling", "Stalled").index(c.type)
                if c.type in ("Ready", "Reconciling", "Stalled")
                else 9
            ),
        )
    )


def drop_condition(conditions: tuple[Condition, ...], type_: str) -> tuple[Condition, ...]:
    """kstatus: abnormal-true conditions (Reconciling, Stalled) are removed, not set False."""
    return tuple(c for c in conditions if c.type != type_)


@dataclass(frozen=True)
class HistoryEntry:
    revision: str
    at: datetime
    outcome: Outcome
    changes: int
    git_commit: str | None = None
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "at": rfc3339(self.at),
            "outcome": self.outcome,
            "changes": self.changes,
            "git_commit": self.git_commit,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class ConfigStatus:
    applied_revision: str | None = None
    attempted_revision: str | None = None
    git_commit: str | None = None
    applied_at: datetime | None = None
    observed_generation: int = 0
    """Counts reconcile passes that looked at a new attempted revision."""
    conditions: tuple[Condition, ...] = ()
    errors: tuple[dict[str, Any], ...] = ()
    """ConfigError.as_dict() items of the last attempted snapshot."""
    warnings: tuple[dict[str, Any], ...] = ()
    """Same shape: the fields of the applied snapshot that have no effect (they block nothing)."""
    history: tuple[HistoryEntry, ...] = ()
    """Newest first, the last few passes."""

    def to_json(self) -> dict[str, Any]:
        return {
            "applied_revision": self.applied_revision,
            "attempted_revision": self.attempted_revision,
            "git_commit": self.git_commit,
            "applied_at": rfc3339(self.applied_at),
            "observed_generation": self.observed_generation,
            "conditions": [c.to_json() for c in self.conditions],
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "history": [h.to_json() for h in self.history],
        }


VOICE_KINDS: dict[str, tuple[str, ...]] = {
    "progress": ("notice",),
    "cancellation": ("cancelled",),
    "confirmation": ("yes", "no", "timeout"),
    "elicitation": ("accept", "decline", "cancel", "refused"),
    "sampling": ("refused",),
}
"""What the voice features count per server (kind -> outcomes): progress notices forwarded,
calls the caller cancelled, confirmation answers, elicitation answers (`refused`: jackfield or
the caller could not take the question), sampling requests refused."""


@dataclass(frozen=True)
class VoiceStatus:
    """Per server counts of what the voice features saw (since the process started)."""

    progress: int = 0
    cancellations: int = 0
    confirmations: Mapping[str, int] = field(default_factory=dict)
    """yes | no | timeout -> count."""
    elicitations: Mapping[str, int] = field(default_factory=dict)
    """accept | decline | cancel | refused -> count."""
    sampling_refusals: int = 0

    @classmethod
    def of(cls, counts: Mapping[tuple[str, str], int]) -> VoiceStatus:
        """From (kind, outcome) -> count (see VOICE_KINDS)."""

        def each(kind: str) -> dict[str, int]:
            return {o: int(counts.get((kind, o), 0)) for o in VOICE_KINDS[kind]}

        return cls(
            progress=counts.get(("progress", "notice"), 0),
            cancellations=counts.get(("cancellation", "cancelled"), 0),
            confirmations=each("confirmation"),
            elicitations=each("elicitation"),
            sampling_refusals=counts.get(("sampling", "refused"), 0),
        )

    def counts(self) -> dict[tuple[str, str], int]:
        """(kind, outcome) -> count for every kind and outcome of VOICE_KINDS, zeros included."""
        out = {
            ("progress", "notice"): self.progress,
            ("cancellation", "cancelled"): self.cancellations,
            ("sampling", "refused"): self.sampling_refusals,
        }
        for kind, seen in (
            ("confirmation", self.confirmations),
            ("elicitation", self.elicitations),
        ):
            out.update({(kind, o): int(seen.get(o, 0)) for o in VOICE_KINDS[kind]})
        return out

    @property
    def any(self) -> bool:
        return any(self.counts().values())

    def to_json(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "progress": self.progress,
            "cancellations": self.cancellations,
            "confirmations": {o: counts["confirmation", o] for o in VOICE_KINDS["confirmation"]},
            "elicitations": {o: counts["elicitation", o] for o in VOICE_KINDS["elicitation"]},
            "sampling_refusals": self.sampling_refusals,
        }


@dataclass(frozen=True)
class ServerStatus:
    name: str
    transport: str
    state: ServerState
    since: datetime
    tools: tuple[str, ...] = ()
    """Exposed (prefixed) names of the tools this server currently contributes."""
    restarts: int = 0
    next_retry_at: datetime | None = None
    last_error: str | None = None
    stderr_tail: str | None = None
    conflicts: tuple[str, ...] = ()
    """Human-readable: 'files_read_file: kept by server alpha'."""
    last_connected: datetime | None = None
    description: str = ""
    withheld: tuple[str, ...] = ()
    """Tools the server lists but the catalog does not offer, and why (invalid, over a limit)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Extensions (capabilities, server info, limits), shown as-is."""
    voice: VoiceStatus = field(default_factory=VoiceStatus)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.transport,
            "state": self.state,
            "since": rfc3339(self.since),
            "tools": list(self.tools),
            "restarts": self.restarts,
            "next_retry_at": rfc3339(self.next_retry_at),
            "last_error": self.last_error,
            "stderr_tail": self.stderr_tail,
            "conflicts": list(self.conflicts),
            "last_connected": rfc3339(self.last_connected),
            "description": self.description,
            "withheld": list(self.withheld),
            "voice": self.voice.to_json(),
            **self.extra,
        }


@dataclass(frozen=True)
class AgentStatus:
    enabled: bool = False
    reason: str | None = None
    sessions: int = 0
    instructions_revision: str | None = None
    revision: str | None = None
    """The agent view new sessions are built from (spec, instructions)."""
    sessions_by_revision: dict[str, int] = field(default_factory=dict)
    worker: dict[str, Any] | None = None
    """{"state": Connecting|Registered|Unregistered|Draining|Failed|Stopped, "reason", ...}"""
    fallbacks: dict[str, int] = field(default_factory=dict)
    """Sessions moved to the fallback pipeline, by reason."""
    realtime_cooldown_until: datetime | None = None
    rejected_updates: int = 0
    """Tool or instruction updates a realtime model refused (the session kept the old ones)."""
    last_rejected_update: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "reason": self.reason,
            "sessions": self.sessions,
            "instructions_revision": self.instructions_revision,
            "revision": self.revision,
            "sessions_by_revision": self.sessions_by_revision,
            "worker": self.worker,
            "fallbacks": self.fallbacks,
            "realtime_cooldown_until": rfc3339(self.realtime_cooldown_until),
            "rejected_updates": self.rejected_updates,
            "last_rejected_update": self.last_rejected_update,
        }


@dataclass(frozen=True)
class HubStatus:
    url: str | None = None
    tools: int = 0
    sessions: int = 0
    max_sessions: int | None = None
    refused_sessions: int = 0
    """New sessions refused because `max_sessions` were open."""

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "tools": self.tools,
            "sessions": self.sessions,
            "max_sessions": self.max_sessions,
            "refused_sessions": self.refused_sessions,
        }


@dataclass(frozen=True)
class WatcherStatus:
    state: WatcherState = "Starting"
    last_event_at: datetime | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_event_at": rfc3339(self.last_event_at),
            "message": self.message,
        }


@dataclass(frozen=True)
class Status:
    ready: bool
    config: ConfigStatus
    servers: tuple[ServerStatus, ...]
    agent: AgentStatus
    hub: HubStatus
    watcher: WatcherStatus
    store: dict[str, Any] = field(default_factory=dict)
    """{"state": "Ok"|"Degraded", "message": ...}"""

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "config": self.config.to_json(),
            "servers": [s.to_json() for s in sorted(self.servers, key=lambda s: s.name)],
            "agent": self.agent.to_json(),
            "hub": self.hub.to_json(),
            "watcher": self.watcher.to_json(),
            "store": self.store,
        }
