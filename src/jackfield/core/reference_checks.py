"""Where each `${...}` may stand: the checks the loader runs on every document. Pure.

Environment variables must be set, and secret files (`${file:/path}`) readable, where they
expand (a connection's fields, its auth, hidden arguments);
caller context names (`${caller.identity}`) need a caller, so they work only where there is
one: a `scope: session` server's connection and `tools.arguments`. Texts the LLM reads as they
are written (instructions, prompts) expand nothing. Run on raw data, valid or not: a document
that fails validation still gets these errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jackfield.core.caller_context import NOT_IN_PROMPTS, NOT_SHARED, name_problem
from jackfield.core.expansion import ExpansionProblem, is_context_name, references
from jackfield.core.expansion import problems as expansion_problems
from jackfield.core.positions import Path, Positions, locate
from jackfield.errors import ConfigError

_PROMPT_TEXTS: dict[str, tuple[Path, ...]] = {
    "Agent": (("spec", "instructions"), ("spec", "greeting")),
    "Prompt": (("spec", "text"),),
    "MCPServer": (("spec", "prompt"),),
}
"""Texts the LLM reads as they are written, the same for every caller: nothing expands there."""


def check_references(
    data: Any,
    positions: Positions,
    path: str,
    env: Mapping[str, str],
    errors: list[ConfigError],
    text: str = "",
) -> None:
    """`${...}` that cannot expand where it stands: unset or malformed in the fields that
    expand, a caller context name where there is no caller (a shared server's connection, an
    instruction or prompt), an unknown context name. Run on raw data, valid or not."""
    kind = data.get("kind") if isinstance(data, dict) else None
    spec = data.get("spec") if isinstance(data, dict) else None
    # a disabled server is never connected, so its variables need not be set
    if not isinstance(spec, dict) or (kind == "MCPServer" and spec.get("enabled") is False):
        return
    found: list[tuple[Path, str, list[ExpansionProblem]]] = []
    for where in _PROMPT_TEXTS.get(str(kind), ()):
        value = spec.get(where[-1])
        if isinstance(value, str):
            # plain ${VAR} stays literal text here, as it always has; only context names fail
            refs = [r for r in references(value) if is_context_name(r.name)]
            problems = [ExpansionProblem(r.offset, f"${{{r.name}}} {NOT_IN_PROMPTS}") for r in refs]
            found.append((where, value, problems))
    if kind == "MCPServer":
        # a session's connection is opened with its context; a shared one serves every caller
        session = spec.get("scope") == "session"
        for where, value in _connection_texts(spec):
            problems = expansion_problems(value, env, context=None if session else NOT_SHARED)
            found.append((where, value, problems + (_unknown_names(value) if session else [])))
        for where, value in _argument_texts(spec):
            found.append((where, value, expansion_problems(value, env) + _unknown_names(value)))
    for where, value, problems in found:
        for problem in problems:
            line, column = locate(positions.of(where), value, problem.offset, text)
            errors.append(ConfigError(path, line, column, problem.message))


def _connection_texts(spec: dict[Any, Any]) -> list[tuple[Path, str]]:
    texts: list[tuple[Path, Any]] = [(("spec", "url"), spec.get("url"))]
    for name in ("args", "env", "headers"):
        texts += [(("spec", name, k), v) for k, v in _items(spec.get(name))]
    auth = spec.get("auth")
    if isinstance(auth, dict):
        texts.append((("spec", "auth", "bearer"), auth.get("bearer")))
        oauth = auth.get("oauth")
        if isinstance(oauth, dict):
            texts += [(("spec", "auth", "oauth", k), v) for k, v in oauth.items() if k in _OAUTH]
    return [(where, t) for where, t in texts if isinstance(t, str)]


_OAUTH = ("clientId", "clientSecret", "refreshToken", "tokenUrl", "issuer", "resource", "audience")
"""The fields of `auth.oauth` that expand."""


def _argument_texts(spec: dict[Any, Any]) -> list[tuple[Path, str]]:
    """tools.arguments values: strings (every tool's) and strings of a tool's mapping."""
    tools = spec.get("tools")
    where: Path = ("spec", "tools", "arguments")
    arguments = tools.get("arguments") if isinstance(tools, dict) else None
    texts: list[tuple[Path, str]] = []
    for key, value in _items(arguments if isinstance(arguments, dict) else None):
        if isinstance(value, str):
            texts.append(((*where, key), value))
        for name, inner in _items(value if isinstance(value, dict) else None):
            if isinstance(inner, str):
                texts.append(((*where, key, name), inner))
    return texts


def _items(value: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(value, list):
        return enumerate(value)
    return value.items() if isinstance(value, dict) else ()


def _unknown_names(text: str) -> list[ExpansionProblem]:
    named = [(r.offset, name_problem(r.name)) for r in references(text) if is_context_name(r.name)]
    return [ExpansionProblem(offset, message) for offset, message in named if message is not None]
