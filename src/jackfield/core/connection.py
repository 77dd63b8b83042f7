"""What it takes to connect to one server, with `${VAR}`s expanded into `Secret`s. Pure.

Which spec fields make up the connection also decides what an edit costs: changing any of
CONNECTION_FIELDS reconnects the server; changing anything else (tool filter, prompt,
description, call timeout, output limit) is applied in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from jackfield.core.expansion import Secret, expand, file_paths, is_context_name, references
from jackfield.core.redaction import MIN_SECRET_LENGTH, redact
from jackfield.spec.models import MCPServerSpec, OAuthSpec

CONNECTION_FIELDS = (
    "enabled",
    "transport",
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "auth",
    "scope",
    "timeouts.connect",
)

__all__ = [
    "CONNECTION_FIELDS", "Bearer", "Connection", "OAuthClient", "connection_context",
    "context_names", "identity_scoped", "outside_values", "redact", "resolve", "secret_files",
]  # fmt: skip

MIN_REDACTED_LENGTH = MIN_SECRET_LENGTH
"""Expanded values shorter than this are not redacted from output: it would mangle text."""


@dataclass(frozen=True)
class Bearer:
    """A static token, sent as `Authorization: Bearer <token>`."""

    token: Secret
    kind: str = "bearer"


@dataclass(frozen=True)
class OAuthClient:
    """An OAuth client that gets its own tokens (shell/oauth.py), its secrets expanded."""

    grant: str
    client_id: Secret
    client_secret: Secret | None
    refresh_token: Secret | None
    token_url: str | None
    issuer: str | None
    scopes: tuple[str, ...]
    resource: str | None
    audience: str | None
    auth_method: str
    refresh_before: float

    @property
    def kind(self) -> str:
        return f"oauth:{self.grant}"


Auth = Bearer | OAuthClient


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
    """Values that came from the environment or from files, to redact from anything shown."""
    auth: Auth | None = None
    files: tuple[str, ...] = ()
    """The secret files (`${file:...}`, as written) the connection reads."""


def _oauth_texts(oauth: OAuthSpec) -> list[str]:
    values = (oauth.client_id, oauth.client_secret, oauth.refresh_token, oauth.token_url,
              oauth.issuer, oauth.resource, oauth.audience)  # fmt: skip
    return [v for v in values if v is not None]


def _texts(spec: MCPServerSpec) -> list[str]:
    """The connection's fields that expand."""
    auth = spec.auth
    auth_texts = [] if auth is None else [auth.bearer] if auth.bearer else []
    if auth is not None and auth.oauth is not None:
        auth_texts = _oauth_texts(auth.oauth)
    return [*spec.args, *spec.env.values(), *spec.headers.values(),
            *([spec.url] if spec.url is not None else []), *auth_texts]  # fmt: skip


def secret_files(spec: MCPServerSpec) -> tuple[str, ...]:
    """The files the connection reads (`${file:...}`, as written), in order of appearance;
    none for a disabled server, which is never connected."""
    if not spec.enabled:
        return ()
    return tuple(dict.fromkeys(p for t in _texts(spec) for p in file_paths(t)))


def context_names(spec: MCPServerSpec) -> tuple[str, ...]:
    """The caller context names the connection refers to, in order of appearance."""
    found = [r.name for t in _texts(spec) for r in references(t) if is_context_name(r.name)]
    return tuple(dict.fromkeys(found))


def identity_scoped(spec: MCPServerSpec) -> bool:
    """A `scope: session` server whose connection names the caller context: each session's
    connection is resolved with that session's context (`resolve(..., context)`)."""
    return spec.scope == "session" and bool(context_names(spec))


def connection_context(spec: MCPServerSpec, context: Mapping[str, str]) -> dict[str, str]:
    """The values of `context` (one session's) that the connection names: a session whose
    context changed elsewhere (an attribute it does not use) keeps its connection."""
    return {n: context[n] for n in sorted(context_names(spec)) if n in context}


def outside_values(
    texts: Iterable[str], env: Mapping[str, str], context: Mapping[str, str] | None = None
) -> frozenset[str]:
    """The values `texts` take from outside the repo (the environment, a caller's context),
    long enough to mask: the secrets of what they expand to. A default is written in the
    repo, so it is no secret."""
    found: set[str] = set()
    for text in texts:
        for ref in references(text):
            source = (context or {}) if is_context_name(ref.name) else env
            value = source.get(ref.name) or ""
            if len(value) >= MIN_REDACTED_LENGTH:
                found.add(value)
    return frozenset(found)


def resolve(
    spec: MCPServerSpec, env: Mapping[str, str], context: Mapping[str, str] | None = None
) -> Connection:
    """Expand the spec's references against `env`, and its context names against `context`
    (one session's `CallerContext.values()`; None: no session, each is its default or "").
    A disabled server is never connected, so nothing of it is expanded (its variables need not
    be set).

    Raises:
        KeyError: a variable is unset, or a context name has no value in `context`, and it
            has no default (the loader reports unset variables first).
    """
    if not spec.enabled:
        return Connection(spec.transport, spec.command, (), {}, spec.cwd, None, {},
                          spec.timeouts.connect, frozenset())  # fmt: skip

    def secret(text: str) -> Secret:
        return Secret(expand(text, env, context))

    def maybe(text: str | None) -> Secret | None:
        return secret(text) if text is not None else None

    def plain(text: str | None) -> str | None:
        return expand(text, env, context) if text is not None else None

    auth: Auth | None = None
    if spec.auth is not None and spec.auth.bearer is not None:
        auth = Bearer(Secret(secret(spec.auth.bearer).reveal().strip()))
    elif spec.auth is not None and spec.auth.oauth is not None:
        o = spec.auth.oauth
        auth = OAuthClient(
            grant=o.grant, client_id=secret(o.client_id), client_secret=maybe(o.client_secret),
            refresh_token=maybe(o.refresh_token), token_url=plain(o.token_url),
            issuer=plain(o.issuer), scopes=tuple(o.scopes), resource=plain(o.resource),
            audience=plain(o.audience), auth_method=o.auth_method,
            refresh_before=o.refresh_before,
        )  # fmt: skip

    return Connection(
        transport=spec.transport,
        command=spec.command,
        args=tuple(secret(a) for a in spec.args),
        env={k: secret(v) for k, v in spec.env.items()},
        cwd=spec.cwd,
        url=secret(spec.url) if spec.url is not None else None,
        # a field value has no outer whitespace (RFC 9110 5.5): `Bearer ${caller.identity}`
        # without a caller is `Bearer`, which HTTP clients send, rather than refuse
        headers={k: Secret(secret(v).reveal().strip()) for k, v in spec.headers.items()},
        connect_timeout=spec.timeouts.connect,
        secrets=outside_values(_texts(spec), env, context),
        auth=auth,
        files=secret_files(spec),
    )
