"""What it takes to connect to one server, with `${VAR}`s expanded into `Secret`s. Pure.

Which spec fields make up the connection also decides what an edit costs: changing any of
CONNECTION_FIELDS reconnects the server; changing anything else (tool filter, prompt,
description, call timeout, output limit) is applied in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from jackfield.core.expansion import Secret, expand, references
from jackfield.core.redaction import MIN_SECRET_LENGTH, redact
from jackfield.spec.models import MCPServerSpec

CONNECTION_FIELDS = (
    "enabled",
    "transport",
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "scope",
    "timeouts.connect",
)

__all__ = ["CONNECTION_FIELDS", "Connection", "redact", "resolve"]

MIN_REDACTED_LENGTH = MIN_SECRET_LENGTH
"""Expanded values shorter than this are not redacted from output: it would mangle text."""


@dataclass(frozen=True)
class Connection:
    """A server's transport parameters, ready to use. Every expanded value is a Secret."""

    transport: str
    command: str | None
    args: tuple[Secret, ...]
    env: Mapping[str, Secret]
    cwd: str | None
    url: Secret | None
    headers: Mapping[str, Secret]
    connect_timeout: float
    secrets: frozenset[str] = field(repr=False)
    """Values that came from the environment, to redact from anything shown."""


def resolve(spec: MCPServerSpec, env: Mapping[str, str]) -> Connection:
    """Expand the spec's references against `env`. A disabled server is never connected, so
    nothing of it is expanded (its variables need not be set).

    Raises:
        KeyError: a variable is unset and has no default (the loader reports these first).
    """
    if not spec.enabled:
        return Connection(spec.transport, spec.command, (), {}, spec.cwd, None, {},
                          spec.timeouts.connect, frozenset())  # fmt: skip
    secrets: set[str] = set()

    def secret(text: str) -> Secret:
        value = expand(text, env)
        # a default is written in the repo, so only what comes from the environment is secret
        for ref in references(text):
            got = env.get(ref.name) or ""
            if len(got) >= MIN_REDACTED_LENGTH:
                secrets.add(got)
        return Secret(value)

    return Connection(
        transport=spec.transport,
        command=spec.command,
        args=tuple(secret(a) for a in spec.args),
        env={k: secret(v) for k, v in spec.env.items()},
        cwd=spec.cwd,
        url=secret(spec.url) if spec.url is not None else None,
        headers={k: secret(v) for k, v in spec.headers.items()},
        connect_timeout=spec.timeouts.connect,
        secrets=frozenset(secrets),
    )
