"""A plan as text, in the shape of `terraform plan`. Pure.

    + create MCPServer/time (servers.d/time.yaml:1)
    ~ update MCPServer/files: spec.tools.include (no reconnect)
        spec.tools.include: ["read_*"] -> ["read_*","list_*"]
    - delete Prompt/style

    Plan: 1 to create, 1 to update, 1 to delete.

Documents hold unexpanded `${VAR}` text, so no secret can be in a plan; still, a header or env
value written literally in a file may be a credential someone should not have committed, and a
plan ends up in CI logs: such values are masked. References (`${TOKEN}`) are shown as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jackfield.core.hashing import canonical
from jackfield.core.planning import Applied, Change, Key, Plan

MASK = "(sensitive)"
SENSITIVE = ("spec.headers", "spec.env")
MAX_VALUE = 80
_MISSING = object()


def _lookup(document: Mapping[str, Any] | None, path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, str) and "${" not in value:
        return MASK
    return value


def shown(path: str, value: Any) -> str:
    """One value as compact JSON, masked under headers/env, cut to a readable length."""
    if value is _MISSING:
        return "(absent)"
    if any(path == s or path.startswith(s + ".") for s in SENSITIVE):
        value = _mask(value)
    text = canonical(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def _line(change: Change) -> str:
    ref = f"{change.kind}/{change.name}"
    where = f" ({change.source})" if change.source else ""
    if change.action == "create":
        return f"+ create {ref}{where}"
    if change.action == "delete":
        return f"- delete {ref}"
    cost = ""
    if change.kind == "MCPServer":
        cost = " (reconnect)" if change.reconnect else " (no reconnect)"
    return f"~ update {ref}: {', '.join(change.fields)}{cost}"


def render(plan: Plan, applied: Mapping[Key, Applied] | None = None) -> str:
    """The plan's effective changes, one line each, then a summary line.

    With `applied` (what the plan was made against), updates also show `old -> new` per field.
    """
    lines: list[str] = []
    for change in plan.effective:
        lines.append(_line(change))
        if change.action == "update" and applied is not None and change.key in applied:
            old = applied[change.key].document
            for path in change.fields:
                before = shown(path, _lookup(old, path))
                after = shown(path, _lookup(change.document, path))
                lines.append(f"    {path}: {before} -> {after}")
    if plan.empty:
        return "No changes. The database matches the files.\n"
    summary = (
        f"Plan: {plan.count('create')} to create, {plan.count('update')} to update,"
        f" {plan.count('delete')} to delete."
    )
    return "\n".join([*lines, "", summary]) + "\n"
