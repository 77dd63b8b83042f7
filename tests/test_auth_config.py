"""Auth in the config (#15): `spec.auth` (bearer, OAuth client credentials, a refresh token),
`${file:/path}` references, the errors `validate` gives with their file:line:column, what a
connection resolves to, and the pure OAuth values (token requests, answers, when to replace)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from jackfield.core.connection import Bearer, OAuthClient, resolve, secret_files
from jackfield.core.expansion import Secret, expand, file_key, is_context_name, problems
from jackfield.core.oauth import (
    AuthStatus,
    Refused,
    Token,
    Unreachable,
    token_answer,
    token_request,
)
from jackfield.spec.models import MCPServerSpec
from tests.conftest import JACKFIELD
from tests.support.config import AGENT, errors_of, load_dir, server_yaml, write

URL = "  transport: http\n  url: https://crm.example/mcp\n"


def at(text: str, needle: str) -> tuple[int, int]:
    """The 1-based line and column of `needle` in `text` (independent of the loader)."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def config(root: Path, body: str) -> tuple[Path, str]:
    text = server_yaml("crm", body)
    write(root, {"agent.yaml": AGENT, "servers.d/crm.yaml": text})
    return root, text


def found(root: Path, env: dict[str, str] | None = None) -> list[tuple[int, int, str]]:
    return [(e.line, e.column, e.message) for e in errors_of(root, env)]


def spec_of(body: str, tmp: Path, env: dict[str, str] | None = None) -> MCPServerSpec:
    root, _ = config(tmp, body)
    spec: MCPServerSpec = load_dir(root, env).servers["crm"].document.spec
    return spec


# --- ${file:/path} ---------------------------------------------------------------------------


def test_file_references_are_neither_variables_nor_context_names() -> None:
    text = "Bearer ${file:/run/secrets/crm.token}"
    assert expand(text, {file_key("/run/secrets/crm.token"): "t0ken"}) == "Bearer t0ken"
    assert not is_context_name("file:/run/secrets/crm.token")
    missing = problems(text, {})
    assert [p.message for p in missing] == [
        "cannot read secret file /run/secrets/crm.token: missing, or not readable by jackfield"
    ]
    assert missing[0].offset == text.index("${file:")
    assert [p.message for p in problems("${file:/a:-fallback}", {file_key("/a"): "x"})] == [
        "a ${file:...} reference takes no default"
    ]
    assert "${file:/path}" in problems("${file:}", {})[0].message


def test_an_unreadable_secret_file_is_an_error_at_its_reference(tmp_path: Path) -> None:
    body = URL + "  headers: {X-Api-Key: 'key ${file:/run/secrets/crm/key}'}\n"
    root, text = config(tmp_path, body)
    assert found(root) == [
        (
            *at(text, "${file:"),
            "cannot read secret file /run/secrets/crm/key: missing, or not readable by jackfield",
        )
    ]
    assert found(root, {file_key("/run/secrets/crm/key"): "k" * 20}) == []


def test_a_disabled_server_needs_no_readable_file(tmp_path: Path) -> None:
    root, _ = config(tmp_path, URL + "  enabled: false\n  auth: {bearer: '${file:/nope}'}\n")
    assert found(root) == []
    assert secret_files(load_dir(root).servers["crm"].document.spec) == ()


# --- spec.auth -------------------------------------------------------------------------------


def test_auth_and_an_authorization_header_are_one_too_many(tmp_path: Path) -> None:
    body = URL + "  headers: {authorization: Bearer x}\n  auth: {bearer: y}\n"
    root, text = config(tmp_path, body)
    [(line, column, message)] = found(root)
    assert (line, column) == at(text, "auth:")
    assert message.startswith("auth and an Authorization header both set the same header")


def test_auth_applies_to_remote_transports_only(tmp_path: Path) -> None:
    root, text = config(tmp_path, "  command: x\n  auth: {bearer: y}\n")
    [(line, column, message)] = found(root)
    assert (line, column) == at(text, "auth:")
    assert message == "'auth' does not apply to transport stdio"


@pytest.mark.parametrize(
    ("auth", "field", "message"),
    [
        ("{}", "auth:", "auth takes exactly one of 'bearer' and 'oauth'"),
        (
            "{bearer: x, oauth: {clientId: a, clientSecret: b}}",
            "oauth:",
            "auth takes exactly one of 'bearer' and 'oauth'",
        ),
        ("{oauth: {clientId: a}}", "oauth:", "grant client_credentials needs 'clientSecret'"),
        (
            "{oauth: {grant: refresh_token, clientId: a}}",
            "oauth:",
            "grant refresh_token needs 'refreshToken'",
        ),
        (
            "{oauth: {clientId: a, clientSecret: b, refreshToken: c}}",
            "refreshToken:",
            "'refreshToken' applies to grant refresh_token only",
        ),
        (
            "{oauth: {clientId: a, clientSecret: b, tokenUrl: ftp://x}}",
            "tokenUrl:",
            "'tokenUrl' must be an http(s) URL",
        ),
        (
            "{oauth: {clientId: a, clientSecret: b, refreshBefore: 0}}",
            "refreshBefore:",
            "Input should be greater than 0",
        ),
    ],
)
def test_auth_shapes_are_checked_where_they_are_written(
    tmp_path: Path, auth: str, field: str, message: str
) -> None:
    root, text = config(tmp_path, URL + f"  auth: {auth}\n")
    [(line, _, said)] = found(root)
    assert line == at(text, field)[0]
    assert message in said


def test_an_unset_variable_in_oauth_is_an_error_at_its_reference(tmp_path: Path) -> None:
    body = URL + "  auth:\n    oauth:\n      clientId: jf\n      clientSecret: ${CRM_SECRET}\n"
    root, text = config(tmp_path, body)
    assert found(root) == [
        (
            *at(text, "${CRM_SECRET}"),
            "environment variable CRM_SECRET is not set (set it, or write ${CRM_SECRET:-default})",
        )
    ]


def test_bearer_resolves_to_a_secret_from_a_file(tmp_path: Path) -> None:
    env = {file_key("/s/token"): "bearer-token-from-a-file"}
    spec = spec_of(URL + "  auth: {bearer: '${file:/s/token}'}\n", tmp_path, env)
    connection = resolve(spec, env)
    assert connection.auth == Bearer(Secret("bearer-token-from-a-file"))
    assert connection.files == ("/s/token",)
    assert "bearer-token-from-a-file" in connection.secrets
    assert "bearer-token-from-a-file" not in repr(connection)


def test_oauth_resolves_every_field_and_names_its_files(tmp_path: Path) -> None:
    env = {file_key("/s/secret"): "client-secret-from-file", "CRM_ID": "jackfield-client"}
    body = (
        URL + "  auth:\n    oauth:\n      clientId: ${CRM_ID}\n"
        "      clientSecret: ${file:/s/secret}\n      scopes: [crm.read, crm.write]\n"
        "      audience: https://crm.example\n      authMethod: client_secret_post\n"
    )
    connection = resolve(spec_of(body, tmp_path, env), env)
    oauth = connection.auth
    assert isinstance(oauth, OAuthClient)
    assert oauth.kind == "oauth:client_credentials"
    assert oauth.client_id.reveal() == "jackfield-client"
    assert oauth.client_secret == Secret("client-secret-from-file")
    assert (oauth.scopes, oauth.audience, oauth.auth_method) == (
        ("crm.read", "crm.write"), "https://crm.example", "client_secret_post",
    )  # fmt: skip
    assert (oauth.token_url, oauth.refresh_before) == (None, 60.0)
    assert connection.files == ("/s/secret",)
    assert {"client-secret-from-file", "jackfield-client"} <= connection.secrets


def test_changing_auth_reconnects(tmp_path: Path) -> None:
    from jackfield.core.connection import CONNECTION_FIELDS

    assert "auth" in CONNECTION_FIELDS


# --- OAuth values ----------------------------------------------------------------------------


def client(**fields: object) -> OAuthClient:
    values: dict[str, object] = {
        "grant": "client_credentials", "client_id": Secret("id:with/odd"),
        "client_secret": Secret("s3cr&t"), "refresh_token": None, "token_url": None,
        "issuer": None, "scopes": ("a", "b"), "resource": None, "audience": None,
        "auth_method": "client_secret_basic", "refresh_before": 60.0,
    }  # fmt: skip
    values.update(fields)
    return OAuthClient(**values)  # type: ignore[arg-type]


def test_client_secret_basic_form_encodes_the_pair() -> None:
    request = token_request(client(), "https://as/token", refresh_token=None, resource="https://r")
    assert dict(request.form) == {
        "grant_type": "client_credentials", "scope": "a b", "resource": "https://r",
    }  # fmt: skip
    scheme, encoded = request.headers["Authorization"].split(" ")
    user, password = base64.b64decode(encoded).decode().split(":")
    assert (scheme, unquote(user), unquote(password)) == ("Basic", "id:with/odd", "s3cr&t")


def test_client_secret_post_and_a_public_refresh_client() -> None:
    post = token_request(client(auth_method="client_secret_post", audience="aud"), "u",
                         refresh_token=None, resource=None)  # fmt: skip
    assert "Authorization" not in post.headers
    assert post.form["client_id"] == "id:with/odd" and post.form["client_secret"] == "s3cr&t"
    assert post.form["audience"] == "aud"
    public = client(grant="refresh_token", client_secret=None, scopes=())
    refresh = token_request(public, "u", refresh_token=Secret("rt-1"), resource=None)
    assert dict(refresh.form) == {
        "grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "id:with/odd",
    }  # fmt: skip


def test_token_answers() -> None:
    body = json.dumps({"access_token": "at", "token_type": "bearer", "expires_in": "3",
                       "refresh_token": "rt-2", "scope": "a"}).encode()  # fmt: skip
    token = token_answer(200, body, now=100.0)
    assert isinstance(token, Token)
    assert (token.access, token.lifetime, token.expires_at) == (Secret("at"), 3.0, 103.0)
    assert (token.refresh, token.scope) == (Secret("rt-2"), "a")
    refused = token_answer(
        401, b'{"error": "invalid_client", "error_description": "client  revoked"}', 0.0
    )
    assert refused == Refused(
        "the authorization server refused the request: invalid_client (client revoked)"
    )
    assert token_answer(400, b'{"error": "invalid_grant"}', 0.0) == Refused(
        "the authorization server refused the request: invalid_grant"
    )
    assert token_answer(503, b"down", 0.0) == Unreachable("the token endpoint answered HTTP 503")
    assert isinstance(token_answer(429, b"", 0.0), Unreachable)
    assert isinstance(token_answer(200, b"<html>", 0.0), Unreachable)
    assert token_answer(200, b'{"access_token": "x", "token_type": "mac"}', 0.0) == Refused(
        "the token endpoint issued a 'mac' token; only Bearer is supported"
    )
    assert token_answer(418, b"teapot", 0.0) == Refused("the token endpoint answered HTTP 418")


def test_a_token_is_replaced_ahead_of_expiry_but_not_before_half_its_life() -> None:
    long = Token(Secret("a"), obtained_at=1000.0, lifetime=3600.0)
    assert long.replace_at(60.0) == 1000.0 + 3600.0 - 60.0
    short = Token(Secret("a"), obtained_at=1000.0, lifetime=3.0)
    assert short.replace_at(60.0) == 1001.5
    assert Token(Secret("a"), obtained_at=0.0, lifetime=None).replace_at(60.0) is None


def test_auth_status_shows_no_secret() -> None:
    shown = AuthStatus("oauth:client_credentials", "https://as/token", None, 0.0, 0.0, "ok", 1)
    assert shown.to_json()["expires_at"] == "1970-01-01T00:00:00.000Z"
    assert set(shown.to_json()) == {
        "kind", "token_endpoint", "issuer", "expires_at", "expires_at_seconds",
        "last_refresh_at", "last_outcome", "refreshes", "failures",
    }  # fmt: skip


# --- jackfield validate, with real files -------------------------------------------------------


def test_validate_reads_secret_files_relative_to_the_config(tmp_path: Path) -> None:
    body = URL + "  auth: {bearer: '${file:secrets/crm-token}'}\n"
    root, text = config(tmp_path / "repo", body)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JACKFIELD_")}

    def validate() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(JACKFIELD), "validate", str(root)], env=clean,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    failed = validate()
    line, column = at(text, "${file:")
    assert failed.returncode == 1
    assert f"crm.yaml:{line}:{column}: cannot read secret file secrets/crm-token" in failed.stdout
    (root / "secrets").mkdir()
    (root / "secrets" / "crm-token").write_text("a-token-that-must-not-show\n")
    passed = validate()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "a-token-that-must-not-show" not in passed.stdout + passed.stderr
