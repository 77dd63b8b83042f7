"""What an agent job sees: one view per applied snapshot and catalog state. Pure.

A LiveKit job runs in a process of its own and reads no config file: it takes the Agent spec,
the effective instructions and the revision from the hub (the MCP resource `jackfield://agent`),
and the tools from `tools/list`. A broken file therefore never reaches a job: the view is built
only from an applied snapshot.

Also here: the realtime cool-down, shared by every job of a worker. After repeated realtime
failures the view tells new jobs to start on the fallback pipeline directly, for a while,
instead of failing every call first.

A view is per caller too: the servers whose `access` does not admit a session's caller are
hidden from it (core/caller_context.hidden_servers), so their tools are not its tools and
their `prompt` is not in its instructions.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from jackfield.core import instructions
from jackfield.core.catalog import Entry
from jackfield.core.desired import Snapshot
from jackfield.core.hashing import canonical, sha256
from jackfield.core.status import SERVING_STATES

AGENT_VIEW_URI = "jackfield://agent"
"""The hub's MCP resource holding the agent view (JSON)."""
PROMPT_NAME = "agent-instructions"
"""The hub's MCP prompt holding the effective instructions (for any MCP client)."""
SESSION_HEADER = "x-jackfield-session"
"""Sent by jackfield's own agent: `job-<LiveKit job id>`, for the audit trail and session scope."""
EVENTS_PATH = "/agent/events"
"""Where a job reports what the hub cannot see (a fallback to the pipeline)."""
__all__ = ["SERVING_STATES", "AgentView", "RealtimeCooldown", "agent_view"]


@dataclass(frozen=True)
class AgentView:
    name: str
    spec: dict[str, Any]
    """The Agent spec as JSON (camelCase keys, defaults filled in)."""
    instructions: str
    instructions_revision: str
    realtime: bool
    """False while the realtime cool-down is on: new sessions start on the fallback."""
    tools: tuple[Entry, ...] = ()
    """The catalog entries of the servers the agent selects, by name: what `tools/list` says."""

    @property
    def revision(self) -> str:
        """Moves when anything a new session is built from changes (not the tools)."""
        return sha256(canonical([self.name, self.spec, self.instructions, self.realtime]))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "spec": self.spec,
            "instructions": self.instructions,
            "instructions_revision": self.instructions_revision,
            "realtime": self.realtime,
        }


def agent_view(
    snapshot: Snapshot,
    ready: Collection[str],
    entries: Iterable[Entry] = (),
    *,
    realtime: bool = True,
    hidden: Collection[str] = (),
) -> AgentView:
    """The view of one applied snapshot and catalog state: `ready` names the servers that
    serve (their `prompt` joins the instructions), `entries` is the whole catalog, `hidden`
    the servers this view's caller may not use (neither their tools nor their prompt)."""
    agent = snapshot.agent.document
    text = instructions.compose(snapshot, [n for n in ready if n not in hidden])
    globs = agent.spec.servers
    return AgentView(
        name=agent.metadata.name,
        spec=agent.spec.model_dump(mode="json", by_alias=True),
        instructions=text,
        instructions_revision=instructions.revision(text),
        realtime=realtime,
        tools=tuple(
            sorted(
                (
                    e
                    for e in entries
                    if e.server not in hidden and instructions.selects(globs, e.server)
                ),
                key=lambda e: e.name,
            )
        ),
    )


@dataclass
class RealtimeCooldown:
    """After `failures` realtime failures within `window` seconds, skip realtime for `cooldown`
    seconds. Times are monotonic seconds passed in by the caller."""

    failures: int = 3
    window: float = 300.0
    cooldown: float = 300.0
    _recent: list[float] = field(default_factory=list)
    until: float | None = None

    def failed(self, now: float) -> bool:
        """Record one failure; True when this one starts a cool-down."""
        self._recent = [t for t in self._recent if now - t < self.window] + [now]
        if len(self._recent) >= self.failures and not self.active(now):
            self.until = now + self.cooldown
            self._recent = []
            return True
        return False

    def active(self, now: float) -> bool:
        return self.until is not None and now < self.until
