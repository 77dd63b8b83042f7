"""OAuth 2 for an unattended client, as values: the token request, what its answer means, when
to replace a token, and what status shows of it. Pure; shell/credentials.py does the HTTP.

A token endpoint's answer is one of three things (RFC 6749 section 5): a `Token`; `Refused`,
the credentials or the grant are no good (`invalid_client`, a revoked client, a used refresh
token): retrying cannot help, so the server is Failed until its config or secret files change;
or `Unreachable`, an outage (5xx, 429, no answer): the server backs off and tries again.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from jackfield.core.connection import OAuthClient
from jackfield.core.expansion import Secret
from jackfield.core.status import rfc3339

DESCRIPTION_MAX = 200
"""An authorization server's error_description is cut to this many characters."""


@dataclass(frozen=True)
class Token:
    access: Secret
    obtained_at: float
    """Wall-clock seconds (time.time())."""
    lifetime: float | None
    """`expires_in`; None when the server gave none (the token is used until refused)."""
    scope: str | None = None
    refresh: Secret | None = None
    """A refresh token the answer carried: the next refresh uses it (rotation)."""

    @property
    def expires_at(self) -> float | None:
        return None if self.lifetime is None else self.obtained_at + self.lifetime

    def replace_at(self, before: float) -> float | None:
        """When to get the next token: `before` seconds ahead of expiry, but no earlier than
        half its lifetime (a 3 s token is replaced after 1.5 s, not at once). None: never."""
        if self.lifetime is None:
            return None
        return self.obtained_at + self.lifetime - min(before, self.lifetime / 2)


@dataclass(frozen=True)
class Refused:
    """Retrying cannot help: the server is Failed with `message`."""

    message: str


@dataclass(frozen=True)
class Unreachable:
    """An outage of the authorization server: back off and retry."""

    message: str


@dataclass(frozen=True)
class TokenRequest:
    """A POST to the token endpoint. `form` and `headers` carry secrets: only sent, never shown."""

    url: str
    form: Mapping[str, str]
    headers: Mapping[str, str]
    grant: str


def token_request(
    client: OAuthClient, url: str, *, refresh_token: Secret | None, resource: str | None
) -> TokenRequest:
    """The token request of `client`'s grant (`refresh_token`: the current one, rotated or as
    configured). The client authenticates with HTTP Basic (RFC 6749 2.3.1, form-encoded id
    and secret) or in the form, as `auth_method` says; a public client sends its id only."""
    form: dict[str, str] = {"grant_type": client.grant}
    if client.grant == "refresh_token":
        assert refresh_token is not None  # the spec requires one for this grant
        form["refresh_token"] = refresh_token.reveal()
    if client.scopes:
        form["scope"] = " ".join(client.scopes)
    if resource:
        form["resource"] = resource
    if client.audience:
        form["audience"] = client.audience
    headers = {"Accept": "application/json"}
    client_id = client.client_id.reveal()
    secret = client.client_secret.reveal() if client.client_secret is not None else None
    if secret is not None and client.auth_method == "client_secret_basic":
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        form["client_id"] = client_id
        if secret is not None:
            form["client_secret"] = secret
    return TokenRequest(url, form, headers, client.grant)


def token_answer(status: int, body: bytes, now: float) -> Token | Refused | Unreachable:
    """What the token endpoint's answer means (RFC 6749 5.1 and 5.2)."""
    data = _json(body)
    if status == 200:
        access = data.get("access_token") if data is not None else None
        if not isinstance(access, str) or not access:
            return Unreachable("the token endpoint answered 200 without an access_token")
        kind = str(data.get("token_type", "Bearer")) if data is not None else "Bearer"
        if kind.lower() != "bearer":
            return Refused(f"the token endpoint issued a {kind!r} token; only Bearer is supported")
        assert data is not None
        refresh = data.get("refresh_token")
        scope = data.get("scope")
        return Token(
            access=Secret(access),
            obtained_at=now,
            lifetime=_seconds(data.get("expires_in")),
            scope=scope if isinstance(scope, str) else None,
            refresh=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        )
    if status >= 500 or status == 429:
        return Unreachable(f"the token endpoint answered HTTP {status}")
    error = data.get("error") if data is not None else None
    if not isinstance(error, str):
        return Refused(f"the token endpoint answered HTTP {status}")
    description = data.get("error_description") if data is not None else None
    said = f" ({_cut(description)})" if isinstance(description, str) and description else ""
    return Refused(f"the authorization server refused the request: {error}{said}")


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _seconds(value: object) -> float | None:
    # some servers send expires_in as a string
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 3] + "..."


@dataclass(frozen=True)
class AuthStatus:
    """What status shows of a server's auth: never a token, a secret or a client id."""

    kind: str
    """bearer, oauth:client_credentials or oauth:refresh_token."""
    token_endpoint: str | None = None
    issuer: str | None = None
    expires_at: float | None = None
    last_refresh_at: float | None = None
    last_outcome: str | None = None
    """ok, or why the last attempt failed (refused: ..., unreachable: ...)."""
    refreshes: int = 0
    """Tokens obtained (the first one included)."""
    failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "token_endpoint": self.token_endpoint,
            "issuer": self.issuer,
            "expires_at": _rfc3339(self.expires_at),
            "expires_at_seconds": self.expires_at,
            "last_refresh_at": _rfc3339(self.last_refresh_at),
            "last_outcome": self.last_outcome,
            "refreshes": self.refreshes,
            "failures": self.failures,
        }


def _rfc3339(seconds: float | None) -> str | None:
    return rfc3339(datetime.fromtimestamp(seconds, UTC)) if seconds is not None else None
