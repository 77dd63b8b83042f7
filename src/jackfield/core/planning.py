"""Desired snapshot x applied state -> ordered plan. Pure.

Objects are compared by spec hash; for an update, the changed fields are listed (dotted paths)
and `reconnect` says whether the server's connection must be rebuilt (see
`core.connection.CONNECTION_FIELDS`). The plan lists deletes first, then updates, then creates,
so what must go is stopped before what is new is started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jackfield.core.connection import CONNECTION_FIELDS, context_names, identity_scoped
from jackfield.core.desired import Snapshot, normalised
from jackfield.spec.models import MCPServerSpec

Action = Literal["create", "update", "delete", "unchanged"]
Key = tuple[str, str]
"""(kind, name)"""

_ORDER: dict[Action, int] = {"delete": 0, "update": 1, "create": 2, "unchanged": 3}
_KIND_ORDER = {"Agent": 0, "MCPServer": 1, "Prompt": 2}


@dataclass(frozen=True)
class Applied:
    """An object as last applied (from the store): its normalised document and hash."""

    kind: str
    name: str
    document: Mapping[str, Any]
    """`desired.normalised()` of the document: kind, name, labels, spec (unexpanded)."""
    spec_hash: str
    generation: int
    source: str


@dataclass(frozen=True)
class CallerScope:
    """What a server is per caller (docs/config.md, "Caller context"), for the plan to show."""

    identity_names: tuple[str, ...] = ()
    """The context names its connection is opened with, one connection per session; empty:
    not identity-scoped."""
    selectors: int | None = None
    """How many `access.callers` selectors admit a caller; None: every caller."""
    hidden: tuple[tuple[str | None, tuple[str, ...]], ...] = ()
    """Hidden argument names: (None, every tool's), then (tool name or glob, its own)."""

    @classmethod
    def of(cls, spec: MCPServerSpec) -> CallerScope | None:
        """None for a server that is the same for every caller."""
        names = context_names(spec) if identity_scoped(spec) else ()
        arguments = spec.tools.arguments
        shared = tuple(k for k, v in arguments.items() if isinstance(v, str))
        keyed = [(k, tuple(v)) for k, v in arguments.items() if isinstance(v, dict) and v]
        hidden = ([(None, shared)] if shared else []) + keyed
        selectors = len(spec.access.callers) if spec.access is not None else None
        if not names and selectors is None and not hidden:
            return None
        return cls(names, selectors, tuple(hidden))


@dataclass(frozen=True)
class Change:
    action: Action
    kind: str
    name: str
    fields: tuple[str, ...] = ()
    """Dotted paths that differ (update only), e.g. ('spec.tools.include',)."""
    reconnect: bool = False
    """An MCPServer change that rebuilds its connection (create and delete always do)."""
    document: Mapping[str, Any] | None = None
    """The desired normalised document (None for delete)."""
    spec_hash: str | None = None
    source: str | None = None
    """file:line of the desired document."""
    caller: CallerScope | None = None
    """An MCPServer's per-caller behaviour as desired (None: the same for every caller)."""

    @property
    def key(self) -> Key:
        return (self.kind, self.name)


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]

    @property
    def effective(self) -> tuple[Change, ...]:
        """The changes that do something."""
        return tuple(c for c in self.changes if c.action != "unchanged")

    @property
    def empty(self) -> bool:
        return not self.effective

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action == action)


def diff_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ (lists compare whole)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                paths.append(sub)
            else:
                paths.extend(diff_paths(old[key], new[key], sub))
        return paths
    return [] if old == new else [prefix]


def needs_reconnect(kind: str, fields: Iterable[str]) -> bool:
    if kind != "MCPServer":
        return False
    watched = tuple(f"spec.{f}" for f in CONNECTION_FIELDS)
    return any(f == w or f.startswith(w + ".") for f in fields for w in watched)


def plan(snapshot: Snapshot, applied: Mapping[Key, Applied]) -> Plan:
    """What applying `snapshot` over `applied` takes, object by object."""
    changes: list[Change] = []
    desired_keys: set[Key] = set()
    for placed in snapshot.objects():
        key = (placed.kind, placed.name)
        desired_keys.add(key)
        document = normalised(placed.document)
        source = f"{placed.path}:{placed.line}"
        spec = placed.document.spec
        caller = CallerScope.of(spec) if isinstance(spec, MCPServerSpec) else None
        current = applied.get(key)
        if current is None:
            changes.append(
                Change(
                    "create",
                    *key,
                    reconnect=placed.kind == "MCPServer",
                    document=document,
                    spec_hash=placed.spec_hash,
                    source=source,
                    caller=caller,
                )
            )
        elif current.spec_hash != placed.spec_hash:
            fields = tuple(diff_paths(current.document, document))
            changes.append(
                Change(
                    "update",
                    *key,
                    fields=fields,
                    reconnect=needs_reconnect(placed.kind, fields),
                    document=document,
                    spec_hash=placed.spec_hash,
                    source=source,
                    caller=caller,
                )
            )
        else:
            changes.append(
                Change(
                    "unchanged",
                    *key,
                    document=document,
                    spec_hash=placed.spec_hash,
                    source=source,
                    caller=caller,
                )
            )
    for key, current in applied.items():
        if key not in desired_keys:
            changes.append(
                Change("delete", *key, reconnect=current.kind == "MCPServer", source=current.source)
            )
    changes.sort(key=lambda c: (_ORDER[c.action], _KIND_ORDER.get(c.kind, 9), c.name))
    return Plan(tuple(changes))
