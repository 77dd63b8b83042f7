"""What the hub serves each hub session: its tools, agent view and instructions, per caller.

A server with `access` serves only the callers it admits (docs/config.md, "Who may use which
tool"): a session whose caller it does not admit does not list its tools, and its `prompt` is
not in that session's instructions. (A call of one anyway goes to the manager, which refuses
and audits it.) Most deployments restrict nothing: then every session shares one Served, built
once per change. Otherwise one is kept per set of hidden servers, narrowed from the whole one
when a session first asks and dropped at the next rebuild; callers differ in a handful of
attributes, so the sets are few.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import mcp_types

from jackfield.core import instructions
from jackfield.core.agent_view import AgentView, agent_view
from jackfield.core.caller_context import CallerContext, hidden_servers
from jackfield.core.catalog import Entry
from jackfield.core.desired import Snapshot
from jackfield.core.limits import HUB_PAGE_BYTES
from jackfield.core.voice import VOICE_META, tool_voice
from jackfield.spec.models import AccessSpec, MCPServerSpec

__all__ = ["PAGE_OVERHEAD", "Served", "Views"]

PAGE_OVERHEAD = 1024
"""Bytes of a `tools/list` answer besides its tools (the JSON-RPC envelope, cursor, SSE framing)."""
MAX_NARROWED = 64
"""Served kept for distinct sets of hidden servers; past it they are rebuilt as asked."""


@dataclass(frozen=True)
class Served:
    """One catalog as the sessions it is for see it."""

    view: AgentView | None
    """None until a config is applied."""
    tools: tuple[mcp_types.Tool, ...] = ()
    """Sorted by name: a cursor is the name of the last tool of the page before."""
    sizes: tuple[int, ...] = ()
    """JSON bytes of each tool, for cutting pages."""
    by_name: Mapping[str, Entry] = field(default_factory=dict)

    @functools.cached_property
    def names(self) -> list[str]:
        return [t.name for t in self.tools]

    def page(self, cursor: str | None) -> mcp_types.ListToolsResult:
        """The tools after `cursor` (the last name of the page before), up to HUB_PAGE_BYTES.

        A catalog that changes between pages neither repeats nor skips a tool that stays.
        """
        names = self.names
        start = 0 if cursor is None else bisect.bisect_right(names, cursor)
        end, used = start, PAGE_OVERHEAD
        while end < len(self.tools) and (end == start or used + self.sizes[end] <= HUB_PAGE_BYTES):
            used += self.sizes[end]
            end += 1
        more = end < len(self.tools)
        return mcp_types.ListToolsResult(
            tools=list(self.tools[start:end]), nextCursor=names[end - 1] if more else None
        )


NOTHING = Served(None)


@dataclass(frozen=True)
class Moved:
    """What a rebuild changed for some session: what to announce."""

    tools: bool
    prompts: bool


class Views:
    """The Served of every caller, rebuilt together on each applied snapshot or catalog change."""

    def __init__(self) -> None:
        self.full = NOTHING
        """What a caller admitted everywhere sees (and what /status counts)."""
        self._restricted: dict[str, AccessSpec] = {}
        """The selected servers with `access`, by name."""
        self._narrowed: dict[frozenset[str], Served] = {}
        self._snapshot: Snapshot | None = None
        self._ready: frozenset[str] = frozenset()

    def rebuild(
        self,
        snapshot: Snapshot,
        ready: Collection[str],
        entries: Iterable[Entry],
        specs: Mapping[str, MCPServerSpec],
        *,
        realtime: bool,
    ) -> Moved:
        previous = self.full
        view = agent_view(snapshot, ready, entries, realtime=realtime)
        globs = snapshot.agent.document.spec.servers
        restricted = {
            name: spec.access
            for name, spec in specs.items()
            if spec.access is not None and instructions.selects(globs, name)
        }
        access_moved = restricted != self._restricted
        self._snapshot, self._ready, self._restricted = snapshot, frozenset(ready), restricted
        self._narrowed.clear()
        tools = _tools_of(snapshot, view, specs)
        if tools == previous.tools:
            sizes = previous.sizes  # the same tools: their sizes too
        else:
            sizes = tuple(
                len(t.model_dump_json(by_alias=True, exclude_none=True).encode()) + 1 for t in tools
            )
        self.full = Served(view, tools, sizes, {e.name: e for e in view.tools})
        if previous.view is None:
            return Moved(tools=bool(tools), prompts=True)
        # a change of `access` alone changes what some sessions list and read
        return Moved(
            tools=tools != previous.tools or access_moved,
            prompts=view.revision != previous.view.revision or access_moved,
        )

    def hidden(self, context: CallerContext) -> frozenset[str]:
        """The servers `context` may not use (of those the agent selects)."""
        if not self._restricted:
            return frozenset()
        return hidden_servers(self._restricted, context)

    def of(self, context: CallerContext) -> Served:
        """What a session with `context` is served."""
        hidden = self.hidden(context)
        if not hidden or self.full.view is None:
            return self.full
        served = self._narrowed.get(hidden)
        if served is None:
            served = self._narrow(hidden)
            if len(self._narrowed) >= MAX_NARROWED:
                self._narrowed.clear()
            self._narrowed[hidden] = served
        return served

    def _narrow(self, hidden: frozenset[str]) -> Served:
        """The whole Served without `hidden`'s tools and prompts (its tools as built, reused)."""
        full = self.full
        assert full.view is not None and self._snapshot is not None
        view = agent_view(self._snapshot, self._ready, full.view.tools,
                          realtime=full.view.realtime, hidden=hidden)  # fmt: skip
        kept = [i for i, t in enumerate(full.tools) if full.by_name[t.name].server not in hidden]
        return Served(
            view,
            tuple(full.tools[i] for i in kept),
            tuple(full.sizes[i] for i in kept),
            {e.name: e for e in view.tools},
        )


def _tools_of(
    snapshot: Snapshot, view: AgentView, specs: Mapping[str, MCPServerSpec]
) -> tuple[mcp_types.Tool, ...]:
    """The view's tools as served, sorted by name: with their title, the upstream's
    annotations and their ToolVoice (so a voice or confirm edit reaches jobs too)."""
    agent = snapshot.agent.document.spec
    tools = []
    for e in sorted(view.tools, key=lambda e: e.name):
        voice = tool_voice(agent, specs.get(e.server), e.upstream, e.annotations, e.title)
        annotations = None
        if e.annotations:
            try:
                annotations = mcp_types.ToolAnnotations.model_validate(dict(e.annotations))
            except ValueError:  # the catalog checked them; a stray one is left out
                annotations = None
        tools.append(mcp_types.Tool(
            name=e.name, title=e.title, description=e.description or None,
            inputSchema=dict(e.input_schema), annotations=annotations,
            _meta={VOICE_META: voice.to_json()},
        ))  # fmt: skip
    return tuple(tools)
