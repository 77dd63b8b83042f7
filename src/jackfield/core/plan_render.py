"""A plan as text, in the shape of `terraform plan`. Pure.

    + create MCPServer/time (servers.d/time.yaml:1)
    ~ update MCPServer/files: spec.tools.include (no reconnect)
        spec.tools.include: ["read_*"] -> ["read_*","list_*"]
    - delete Prompt/style
    + create MCPServer/crm (servers.d/crm.yaml:1)
        identity-scoped: one connection per caller, opened with caller.identity
        restricted to 2 caller selectors
        hides user_id, tenant; get_*: account

    Plan: 2 to create, 1 to update, 1 to delete.

A server created or updated that is not the same for every caller says how, below its line
(docs/config.md, "Caller context"): names only, never a value.

Documents hold unexpanded `${VAR}` text, so no secret can be in a plan; still, a header or env
value written literally in a file may be a credential someone should not have committed, and a
plan ends up in CI logs: such values are masked. References (`${TOKEN}`) are shown as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jackfield.core.hashing import canonical
from jackfield.core.planning import Applied, CallerScope, Change, Key, Plan

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


def caller_lines(scope: CallerScope) -> list[str]:
    """How a server differs per caller, one line per way."""
    lines: list[str] = []
    if scope.identity_names:
        names = ", ".join(scope.identity_names)
        lines.append(f"identity-scoped: one connection per caller, opened with {names}")
    if scope.selectors is not None:
        plural = "" if scope.selectors == 1 else "s"
        lines.append(f"restricted to {scope.selectors} caller selector{plural}")
    if scope.hidden:
        groups = [
            ", ".join(names) if tools is None else f"{tools}: {', '.join(names)}"
            for tools, names in scope.hidden
        ]
        lines.append(f"hides {'; '.join(groups)}")
    return lines


def render(plan: Plan, applied: Mapping[Key, Applied] | None = None) -> str:
    """The plan's effective changes, one line each, then a summary line.

    With `applied` (what the plan was made against), updates also show `old -> new` per field.
    """
    lines: list[str] = []
    for change in plan.effective:
        lines.append(_line(change))
        if change.caller is not None and change.action in ("create", "update"):
            lines.extend(f"    {line}" for line in caller_lines(change.caller))
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
