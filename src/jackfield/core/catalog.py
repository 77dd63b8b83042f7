"""The live tool catalog: which upstream tools are exposed, under which names. Pure.

Names the LLM sees are `prefix + tool`, sanitised to `[A-Za-z0-9_-]` and at most 64 characters
(OpenAI's and most providers' limit); a longer name is shortened deterministically with a short
hash so it stays stable across restarts and replicas. A name claimed by two servers is a
conflict: the server whose name sorts first keeps it, the other's tool is withheld, and both
servers report it. Nothing is ever shadowed silently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from jackfield.spec.models import ToolsSpec

MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class UpstreamTool:
    """A tool as the server lists it."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    annotations: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Entry:
    """One exposed tool: its public name and where calls go."""

    name: str
    server: str
    upstream: str
    description: str
    input_schema: Mapping[str, Any]
    annotations: Mapping[str, Any] | None = None


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


def server_entries(server: str, tools: Iterable[UpstreamTool], spec: ToolsSpec) -> list[Entry]:
    prefix = default_prefix(server) if spec.prefix is None else spec.prefix
    return [
        Entry(
            name=exposed_name(prefix, t.name),
            server=server,
            upstream=t.name,
            description=t.description,
            input_schema=t.input_schema,
            annotations=t.annotations,
        )
        for t in selected(tools, spec)
    ]


@dataclass(frozen=True)
class Catalog:
    entries: Mapping[str, Entry] = field(default_factory=dict)
    """Exposed name -> entry, for every tool currently offered."""
    conflicts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Server -> readable conflict notes ('x_tool: kept by server a, withheld from b')."""

    def by_server(self, server: str) -> tuple[str, ...]:
        return tuple(sorted(n for n, e in self.entries.items() if e.server == server))


def build(per_server: Mapping[str, Sequence[Entry]]) -> Catalog:
    """Merge each server's entries; the first server by name keeps a contested name."""
    entries: dict[str, Entry] = {}
    conflicts: dict[str, list[str]] = {}
    for server in sorted(per_server):
        for entry in per_server[server]:
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
    return Catalog(entries, {s: tuple(notes) for s, notes in conflicts.items()})


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
