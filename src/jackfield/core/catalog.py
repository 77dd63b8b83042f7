"""The live tool catalog: which upstream tools are exposed, under which names. Pure.

Names the LLM sees are `prefix + tool`, sanitised to `[A-Za-z0-9_-]` and at most 64 characters
(OpenAI's and most providers' limit); a longer name is shortened deterministically with a short
hash so it stays stable across restarts and replicas. A name claimed by two servers is a
conflict: the server whose name sorts first keeps it, the other's tool is withheld, and both
servers report it. Nothing is ever shadowed silently.

One server cannot break or crowd out the others: a tool that failed validation, or whose
description or input schema is over its limit (core/limits.py), is withheld, and a server
offering more tools than the per-server limit keeps its first ones; the server reports each
withheld tool and why (`Catalog.withheld`). An excluded tool is neither offered nor reported.

A tool's hidden arguments (`tools.arguments`) are not in the input schema its entry offers: the
config sets them in every call, so the LLM is never asked for them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property
from typing import Any

from jackfield.core.caller_context import without_hidden
from jackfield.core.limits import CatalogLimits
from jackfield.spec.models import ToolsSpec

MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SHOWN_NAME = 80
"""Characters of an upstream tool name quoted in a note."""
_NAMED_OVER_COUNT = 5
"""Tools named in the note of a server over the tool count."""


@dataclass(frozen=True)
class UpstreamTool:
    """A tool as the server lists it."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    annotations: Mapping[str, Any] | None = None
    problem: str | None = None
    """Why the listing of this tool is unusable (it failed validation); it is withheld."""
    title: str | None = None
    """The human-readable name the server gives (`title`, else `annotations.title`)."""

    @cached_property
    def schema_bytes(self) -> int:
        """The input schema's size as compact JSON (computed once: catalogs are rebuilt often)."""
        text = json.dumps(self.input_schema, separators=(",", ":"), ensure_ascii=False, default=str)
        return len(text.encode())


@dataclass(frozen=True)
class Entry:
    """One exposed tool: its public name and where calls go."""

    name: str
    server: str
    upstream: str
    description: str
    input_schema: Mapping[str, Any]
    annotations: Mapping[str, Any] | None = None
    withheld: str | None = None
    """Why this selected tool is not offered (its listing is invalid or over a limit)."""
    title: str | None = None


def default_prefix(server: str) -> str:
    return f"{server}_"


def exposed_name(prefix: str, tool: str) -> str:
    """`prefix + tool` made safe for every LLM provider, deterministic and at most 64 chars."""
    raw = prefix + tool
    name = _UNSAFE.sub("_", raw) or "_"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9]}_{digest}"


def selected(tools: Iterable[UpstreamTool], spec: ToolsSpec) -> list[UpstreamTool]:
    """The tools that pass the include globs and none of the exclude globs."""
    return [
        t
        for t in tools
        if any(fnmatchcase(t.name, g) for g in spec.include)
        and not any(fnmatchcase(t.name, g) for g in spec.exclude)
    ]


def shown(name: str) -> str:
    """An upstream tool name as a note quotes it: repr'd, and clipped."""
    return repr(name if len(name) <= _SHOWN_NAME else name[:_SHOWN_NAME] + "...")


def _size(n: int) -> str:
    return f"{n:,} bytes"


def problem(tool: UpstreamTool, limits: CatalogLimits) -> str | None:
    """Why `tool` cannot be offered on its own merits, or None."""
    if tool.problem is not None:
        return f"invalid listing ({tool.problem})"
    description = len(tool.description.encode())
    if description > limits.description_bytes:
        return f"description is {_size(description)} (limit {_size(limits.description_bytes)})"
    schema = tool.schema_bytes
    if schema > limits.input_schema_bytes:
        return f"inputSchema is {_size(schema)} (limit {_size(limits.input_schema_bytes)})"
    return None


_OVER_COUNT = "over the server's tool count limit"


def server_entries(
    server: str,
    tools: Iterable[UpstreamTool],
    spec: ToolsSpec,
    limits: CatalogLimits = CatalogLimits(),  # noqa: B008 (frozen, so one shared default is safe)
) -> list[Entry]:
    """An entry per selected tool; one that cannot be offered carries why (`withheld`). Its
    schema lacks the tool's hidden arguments."""
    prefix = default_prefix(server) if spec.prefix is None else spec.prefix
    entries: list[Entry] = []
    offered = 0
    for t in selected(tools, spec):
        reason = problem(t, limits)
        if reason is None:
            offered += 1
            if offered > limits.tools_per_server:
                reason = _OVER_COUNT
        entries.append(
            Entry(
                name=exposed_name(prefix, t.name),
                server=server,
                upstream=t.name,
                description=t.description,
                input_schema=_offered_schema(t, spec),
                annotations=t.annotations,
                withheld=reason,
                title=t.title,
            )
        )
    return entries


def _offered_schema(tool: UpstreamTool, spec: ToolsSpec) -> Mapping[str, Any]:
    hidden = spec.arguments_for(tool.name) if spec.arguments else {}
    return without_hidden(tool.input_schema, hidden.keys()) if hidden else tool.input_schema


def _withheld_notes(entries: Sequence[Entry]) -> list[str]:
    notes = [f"{shown(e.upstream)}: withheld: {e.withheld}" for e in entries
             if e.withheld is not None and e.withheld != _OVER_COUNT]  # fmt: skip
    over = [e.upstream for e in entries if e.withheld == _OVER_COUNT]
    if over:
        kept = sum(1 for e in entries if e.withheld is None)
        named = ", ".join(shown(n) for n in over[:_NAMED_OVER_COUNT])
        more = len(over) - _NAMED_OVER_COUNT
        notes.append(
            f"{len(over):,} tools withheld: {kept + len(over):,} offered, at most {kept:,} per"
            f" server; the first {kept:,} are kept (withheld: {named}"
            + (f" and {more:,} more)" if more > 0 else ")")
        )
    return notes


@dataclass(frozen=True)
class Catalog:
    entries: Mapping[str, Entry] = field(default_factory=dict)
    """Exposed name -> entry, for every tool currently offered."""
    conflicts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Server -> readable conflict notes ('x_tool: kept by server a, withheld from b')."""
    withheld: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Server -> readable notes on the tools it lists but cannot offer, and why."""

    def by_server(self, server: str) -> tuple[str, ...]:
        return tuple(sorted(n for n, e in self.entries.items() if e.server == server))


def build(per_server: Mapping[str, Sequence[Entry]]) -> Catalog:
    """Merge each server's entries; the first server by name keeps a contested name. Withheld
    entries are left out, and noted for their server."""
    entries: dict[str, Entry] = {}
    conflicts: dict[str, list[str]] = {}
    withheld: dict[str, tuple[str, ...]] = {}
    for server in sorted(per_server):
        notes = _withheld_notes(per_server[server])
        if notes:
            withheld[server] = tuple(notes)
        for entry in per_server[server]:
            if entry.withheld is not None:
                continue
            owner = entries.get(entry.name)
            if owner is None:
                entries[entry.name] = entry
                continue
            if owner.server == server:  # two upstream names that sanitise alike
                note = (
                    f"{entry.name}: tools {owner.upstream!r} and {entry.upstream!r} of server"
                    f" {server} both map to it; {owner.upstream!r} kept"
                )
                conflicts.setdefault(server, []).append(note)
                continue
            note = f"{entry.name}: kept by server {owner.server}, withheld from {server}"
            conflicts.setdefault(owner.server, []).append(note)
            conflicts.setdefault(server, []).append(note)
    return Catalog(entries, {s: tuple(notes) for s, notes in conflicts.items()}, withheld)


@dataclass(frozen=True)
class CatalogChange:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def compare(old: Catalog, new: Catalog) -> CatalogChange:
    before, after = set(old.entries), set(new.entries)
    return CatalogChange(
        added=tuple(sorted(after - before)),
        removed=tuple(sorted(before - after)),
        changed=tuple(sorted(n for n in before & after if old.entries[n] != new.entries[n])),
    )
