"""`${VAR}` and `${VAR:-default}` expansion, as in docker compose; `$${` is a literal `${`.

`${file:/path}` is the content of a file (a mounted Secret), its trailing newlines trimmed. The
shell reads it (shell/secret_files.py) and hands it in with the environment, under the key
`file:/path` (`file_key`): expanding stays a lookup. A relative path is relative to the config
dir. A file reference takes no default: a secret that is missing is an error, not "".

A dotted name (`${caller.identity}`, `${caller.attributes.tenant}`) is a name of the session's
caller context (core/caller_context.py), never an environment variable: no shell variable has a
dot. It expands from the context of the session the value is for; with no session (the
connection a `scope: session` server's catalog is read over) it expands to its default, or "".

Expanded values are secrets: they are wrapped in `Secret` so that printing, logging or
serialising them shows a mask. Only `reveal()` gives the value, and only the connection code
calls it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(
    r"\$\$\{"  # escaped: literal "${"
    r"|\$\{(?P<name>file:[^}\s]+?"  # a file (no blanks; a default is refused)
    r"|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_.-]+)?)(?::-(?P<default>[^}]*))?\}"
    r"|\$\{(?P<bad>[^}]*)\}?"  # anything else after "${" is malformed
)


@dataclass(frozen=True)
class Reference:
    """One `${...}` in a text, with its offset in that text."""

    name: str
    default: str | None
    offset: int


@dataclass(frozen=True)
class ExpansionProblem:
    offset: int
    message: str


class Secret:
    """A string that never shows itself: str(), repr() and f-strings print a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def references(text: str) -> list[Reference]:
    """The variables a text refers to (malformed ones are left to `problems`)."""
    return [
        Reference(m["name"], m["default"], m.start())
        for m in _TOKEN.finditer(text)
        if m["name"] is not None
    ]


FILE_PREFIX = "file:"


def is_file_name(name: str) -> bool:
    """A `${file:...}` reference's name (`file:/path`)."""
    return name.startswith(FILE_PREFIX)


def file_key(path: str) -> str:
    """The key a file's content is found under in the environment handed to expansion."""
    return FILE_PREFIX + path


def file_path(name: str) -> str:
    return name.removeprefix(FILE_PREFIX)


def file_paths(text: str) -> list[str]:
    """The files a text refers to, as written."""
    return [file_path(r.name) for r in references(text) if is_file_name(r.name)]


def is_context_name(name: str) -> bool:
    """A name of the caller context (it has a dot), not an environment variable."""
    return "." in name and not is_file_name(name)


def problems(
    text: str, env: Mapping[str, str], *, context: str | None = None
) -> list[ExpansionProblem]:
    """Everything that stops `text` from expanding: unset variables and malformed references.

    Context names are not looked up here (they have no value until a session): `context` is
    why they cannot work in this text, or None where they can (core/caller_context.py checks
    that they name something).
    """
    found: list[ExpansionProblem] = []
    for m in _TOKEN.finditer(text):
        if m["bad"] is not None:
            found.append(
                ExpansionProblem(
                    m.start(),
                    f"malformed reference {m.group(0)!r}: use ${{NAME}}, ${{NAME:-default}} or"
                    " ${file:/path} (write $${ for a literal ${)",
                )
            )
        elif m["name"] is not None and is_file_name(m["name"]):
            if m["default"] is not None:
                found.append(
                    ExpansionProblem(m.start(), "a ${file:...} reference takes no default")
                )
            elif m["name"] not in env:
                found.append(
                    ExpansionProblem(
                        m.start(),
                        f"cannot read secret file {file_path(m['name'])}: missing, or not"
                        " readable by jackfield",
                    )
                )
        elif m["name"] is not None and is_context_name(m["name"]):
            if context is not None:
                found.append(ExpansionProblem(m.start(), f"${{{m['name']}}} {context}"))
        elif m["name"] is not None and m["default"] is None and m["name"] not in env:
            found.append(
                ExpansionProblem(
                    m.start(),
                    f"environment variable {m['name']} is not set"
                    f" (set it, or write ${{{m['name']}:-default}})",
                )
            )
    return found


def expand(text: str, env: Mapping[str, str], context: Mapping[str, str] | None = None) -> str:
    """Expand every reference: variables from `env`, context names from `context` (None: no
    session, so each expands to its default, or "").

    Raises:
        KeyError: an unset variable, or a context name the session has no value for, without
            a default (the error's argument is the name).
    """

    def substitute(m: re.Match[str]) -> str:
        if m["name"] is None:
            if m["bad"] is not None:
                raise KeyError(m.group(0))
            return "${"
        name = m["name"]
        if is_context_name(name) and context is None:
            return m["default"] or ""
        value = (context if is_context_name(name) and context is not None else env).get(name)
        # compose semantics: ":-" also applies when the variable is set but empty
        if not value:
            if m["default"] is not None:
                return m["default"]
            if value is None:
                raise KeyError(name)
        return value or ""

    return _TOKEN.sub(substitute, text)
