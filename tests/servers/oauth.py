"""An OAuth-protected MCP server for jackfield's unattended-auth tests (issue #15).

One process, one port on 127.0.0.1, two roles: an OAuth 2 authorization server that issues
short-lived access tokens (client_credentials and rotating refresh_token grants), and an MCP
server (the SDK's `MCPServer`, streamable HTTP) that accepts only those tokens, or a static API
key read from a file. Discovery works as the MCP authorization spec describes: a 401 names the
RFC 9728 protected resource metadata, which names the authorization server, whose RFC 8414
metadata names the token endpoint.

Run from the repo root (tests/servers/launch.py `spawn` works as for echo.py):

    python -m tests.servers.oauth --port 0 [--lifetime SECONDS] [--expires-in SECONDS]
        [--client ID:SECRET]... [--refresh-token ID:TOKEN]... [--api-key-file PATH]
        [--require-audience AUD] [--require-resource] [--issuer-path /as] [--record PATH]
        [--token-prefix TEXT]

It prints `LISTENING <port>` on stdout once it accepts requests. Below, BASE is
`http://127.0.0.1:<port>` and ISSUER is BASE + the issuer path (default: BASE/as).

Options:

- `--lifetime SECONDS` (float, default 300): how long an issued access token works, checked on
  every request (a request is authorized when it arrives: a call already in flight finishes).
- `--expires-in SECONDS` (int): the `expires_in` the token endpoint advertises; default the
  lifetime rounded down (at least 1). Set it higher than the lifetime to make tokens die before
  the client expects (a client must then recover from the 401).
- `--client ID:SECRET` (repeatable): a registered client. With a secret it is confidential and
  authenticates with `client_secret_basic` (RFC 6749 2.3.1: HTTP Basic of the form-urlencoded id
  and secret) or `client_secret_post` (`client_id` + `client_secret` form fields). With an empty
  secret (`ID:`) it is public: it sends only `client_id` (method `none`) and may use only the
  refresh_token grant.
- `--refresh-token ID:TOKEN` (repeatable): a refresh token issued ahead of time to client ID
  (which must be given by `--client`). Refresh tokens rotate: every refresh_token grant answers a
  new one and the one used is spent (`invalid_grant` when presented again).
- `--api-key-file PATH`: the MCP endpoint also accepts `Authorization: Bearer <key>`, where key
  is the file's content less trailing newlines, read anew (following symlinks, e.g. a kubelet
  Secret volume's `key -> ..data/key`) on every request: once the file changes, only the new
  key works. A missing or empty file accepts no key. Tools see the client as `api-key`.
- `--require-audience AUD`: every token request must carry `audience=AUD` (missing:
  `invalid_request`; another value: `invalid_target`).
- `--require-resource`: every token request must carry `resource=BASE/mcp` (RFC 8707; a
  trailing slash aside; missing: `invalid_request`; another value: `invalid_target`).
- `--issuer-path PATH` (default `/as`; `""` for the bare BASE): where the authorization server
  lives.
- `--token-prefix TEXT`: every access and refresh token issued starts with TEXT (a leak
  test looks for it where no token may be).
- `--record PATH`: append one JSON object per line (flushed at once) per event. Every line has
  `event` and `at` (`time.monotonic()`, comparable with the test process's); never a secret,
  token or key:

      {"event": "token", "grant": "client_credentials"|"refresh_token", "client": ID,
       "auth_method": "client_secret_basic"|"client_secret_post"|"none", "expires_in": 2,
       "scope": "a b"}
      {"event": "token_refused", "grant": G|null, "client": ID|null, "error": "invalid_client",
       "status": 401, "reason": R}
      {"event": "unauthorized", "reason": "missing"|"expired"|"unknown"|"revoked", "client": ID}
      {"event": "called", "tool": "whoami", "client": ID|"api-key"}
      {"event": "metadata", "which": "protected-resource"|"authorization-server"}

  `scope` is there only when the token has one; `client` of `unauthorized` only when the token
  is known (expired, revoked); `reason` of `token_refused` only for invalid_client (unknown,
  secret, revoked, no_credentials) and invalid_grant (spent: rotated out already; unknown;
  client: another client's).

HTTP surface:

- `/mcp` (every method): the SDK's streamable HTTP app. Each request needs `Authorization:
  Bearer <token>` with a token issued here, unexpired and not revoked, or the current API key.
  Otherwise 401, JSON body `{"error": ..., "error_description": ...}` and
  `WWW-Authenticate: Bearer error="invalid_token", resource_metadata="BASE/.well-known/
  oauth-protected-resource/mcp"` (without a token: `Bearer resource_metadata="..."`, no error
  attribute, RFC 6750 3.1).
- `GET /.well-known/oauth-protected-resource/mcp` (RFC 9728, path-inserted):
  `{"resource": "BASE/mcp", "authorization_servers": ["ISSUER"], "bearer_methods_supported":
  ["header"], "resource_name": ...}`; parses as the SDK's `ProtectedResourceMetadata`.
- `GET /.well-known/oauth-authorization-server<issuer path>` (RFC 8414 path insertion, default
  `/.well-known/oauth-authorization-server/as`): `issuer` ISSUER, `token_endpoint`
  ISSUER/token, `grant_types_supported` ["client_credentials", "refresh_token"],
  `token_endpoint_auth_methods_supported` ["client_secret_basic", "client_secret_post", "none"],
  and, because the SDK's `OAuthMetadata` requires them, `authorization_endpoint`
  ISSUER/authorize (advertised only: 404) and `response_types_supported` ["code"]. Parses as
  `OAuthMetadata`. No other discovery location (openid-configuration, ...) is served.
- `POST ISSUER/token` (form-urlencoded): `grant_type=client_credentials` or
  `grant_type=refresh_token&refresh_token=...`, optional `scope` (echoed back; a refresh
  without one keeps the refresh token's), `audience`, `resource`. Success: 200
  `{"access_token", "token_type": "Bearer", "expires_in", "scope"?, "refresh_token"?}` (refresh
  grant only) with `Cache-Control: no-store`. Errors (RFC 6749 5.2, `{"error",
  "error_description"}`): 400 invalid_request (not form-urlencoded, a repeated or missing
  parameter, two client authentication methods), 400 unsupported_grant_type, 400 invalid_grant
  (unknown, spent or another client's refresh token), 400 unauthorized_client (a public client
  asking for client_credentials), 400 invalid_target, 401 invalid_client (unknown client, wrong
  or missing secret, revoked client; with `WWW-Authenticate: Basic realm="oauth"` when Basic was
  used), 503 temporarily_unavailable while the endpoint is down.
- Test controls, plain JSON without auth:
  - `POST /control/revoke {"client": ID}`: from now on ID is refused at the token endpoint
    (invalid_client) and every access token issued to it so far is dead (401, reason revoked;
    restoring does not revive them). Its refresh tokens are kept, so after a restore it can
    refresh again. Answers `{"client": ID, "revoked_tokens": n}`; 404 for an unknown client.
  - `POST /control/restore {"client": ID}`: undoes the refusal. Answers `{"client": ID}`.
  - `POST /control/token-endpoint {"down": true|false}`: while down, ISSUER/token answers 503.
  - `GET /control/stats`: `{"tokens_issued": n, "refreshes": n, "token_refused": n,
    "unauthorized": n, "calls": n, "metadata": n, "by_client": {ID: {"tokens_issued",
    "refreshes", "token_refused", "unauthorized", "calls"}}}`; tokens_issued counts both grants,
    refreshes only the refresh_token grant, token_refused every refused token request (503s
    too); by_client has registered clients and `api-key` (calls only).

Tools: `whoami()` (read-only) answers JSON `{"client": "<the token's client id, or api-key>"}`;
`echo(text)` (read-only) answers the text; `slow(seconds)` sleeps, then answers
`slept <seconds>` (formatted with `:g`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import anyio
import mcp_types
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.json_response import PydanticJSONResponse
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.auth import OAuthMetadata, OAuthToken, ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.authentication import AuthCredentials
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.servers.echo import bind_socket, serve_announced

READ_ONLY = mcp_types.ToolAnnotations(readOnlyHint=True)
API_KEY_CLIENT = "api-key"
HOST = "127.0.0.1"
FORM = "application/x-www-form-urlencoded"


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected ID:VALUE")  # the value may be a secret
    return name, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.servers.oauth",
                                description="An OAuth-protected MCP test server.")  # fmt: skip
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--lifetime", type=float, default=300.0, metavar="SECONDS")
    p.add_argument("--expires-in", type=int, default=None, metavar="SECONDS")
    p.add_argument("--client", type=_pair, action="append", default=[], metavar="ID:SECRET")
    p.add_argument("--refresh-token", type=_pair, action="append", default=[],
                   metavar="ID:TOKEN")  # fmt: skip
    p.add_argument("--api-key-file", type=Path, default=None, metavar="PATH")
    p.add_argument("--require-audience", default=None, metavar="AUD")
    p.add_argument("--require-resource", action="store_true")
    p.add_argument("--issuer-path", default="/as", metavar="PATH")
    p.add_argument("--record", default=None, metavar="PATH")
    p.add_argument("--token-prefix", default="", metavar="TEXT")
    args = p.parse_args(argv)
    ids = [client for client, _ in args.client]
    if len(ids) != len(set(ids)):
        p.error("a client is registered twice")
    for client, _ in args.refresh_token:
        if client not in ids:
            p.error(f"--refresh-token for {client!r}, which no --client registers")
    return args


# --------------------------------------------------------------------------- state


@dataclass
class Issued:
    """An access token: whose, until when (`time.monotonic()`), for which scope."""

    client: str
    expires_at: float
    scope: str | None


@dataclass
class Refresh:
    client: str
    scope: str | None


class TokenRefused(Exception):
    """A token request answered with an RFC 6749 5.2 error."""

    def __init__(self, error: str, description: str, status: int = 400, *,
                 basic: bool = False, reason: str | None = None) -> None:  # fmt: skip
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.basic, self.reason = basic, reason


@dataclass
class Authority:
    """The authorization server's books and the resource server's checks, in one place.

    Everything runs on the one event loop and no method awaits while changing state, so
    there is no locking.
    """

    base: str
    issuer: str
    clients: dict[str, str]
    lifetime: float
    expires_in: int
    api_key_file: Path | None = None
    audience: str | None = None
    require_resource: bool = False
    record_path: str | None = None
    token_prefix: str = ""
    access: dict[str, Issued] = field(default_factory=dict)
    refresh: dict[str, Refresh] = field(default_factory=dict)
    spent: set[str] = field(default_factory=set)
    revoked_clients: set[str] = field(default_factory=set)
    revoked_tokens: dict[str, str] = field(default_factory=dict)  # token -> client
    down: bool = False
    totals: Counter[str] = field(default_factory=Counter)
    per_client: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return f"{self.base}/mcp"

    @property
    def resource_metadata_url(self) -> str:
        return str(build_resource_metadata_url(AnyHttpUrl(self.resource)))

    def record(self, event: str, **fields: Any) -> None:
        if self.record_path is None:
            return
        line = {"event": event, **fields, "at": time.monotonic()}
        with open(self.record_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()

    def count(self, what: str, client: str | None) -> None:
        self.totals[what] += 1
        if client is not None and (client in self.clients or client == API_KEY_CLIENT):
            self.per_client.setdefault(client, Counter())[what] += 1

    def stats(self) -> dict[str, Any]:
        kinds = ("tokens_issued", "refreshes", "token_refused", "unauthorized", "calls")
        return {
            **{k: self.totals[k] for k in (*kinds, "metadata")},
            "by_client": {c: {k: n[k] for k in kinds} for c, n in self.per_client.items()},
        }

    # ---------------------------------------------------------------- the token endpoint

    async def token_endpoint(self, request: Request) -> Response:
        grant: str | None = None
        client: str | None = None
        try:
            if self.down:
                raise TokenRefused("temporarily_unavailable", "the token endpoint is down", 503)
            form = _form(request.headers.get("content-type", ""), await request.body())
            grant = form.get("grant_type")
            client, secret, method = _client_credentials(request.headers.get("authorization"),
                                                         form)  # fmt: skip
            if grant is None:
                raise TokenRefused("invalid_request", "grant_type is missing")
            if grant not in ("client_credentials", "refresh_token"):
                raise TokenRefused("unsupported_grant_type", f"grant_type {grant!r}")
            self.authenticate(client, secret, basic=method == "client_secret_basic")
            self.check_target(form)
            if grant == "client_credentials":
                if not self.clients[client]:
                    raise TokenRefused("unauthorized_client", "a public client has no "
                                       "client_credentials grant")  # fmt: skip
                body = self.issue(client, form.get("scope"))
            else:
                body = self.rotate(client, form)
        except TokenRefused as refused:
            return self.refuse(refused, grant, client)
        self.count("tokens_issued", client)
        if grant == "refresh_token":
            self.count("refreshes", client)
        extra = {"scope": body.scope} if body.scope is not None else {}
        self.record("token", grant=grant, client=client, auth_method=method,
                    expires_in=body.expires_in, **extra)  # fmt: skip
        return PydanticJSONResponse(body, headers={"Cache-Control": "no-store",
                                                   "Pragma": "no-cache"})  # fmt: skip

    def authenticate(self, client: str, secret: str | None, *, basic: bool) -> None:
        """Check a client's credentials (`secret` None: none sent).

        Raises:
            TokenRefused: invalid_client, for an unknown, unauthenticated or revoked client.
        """
        registered = self.clients.get(client)
        if registered is None:
            raise TokenRefused("invalid_client", "unknown client", 401, basic=basic,
                               reason="unknown")  # fmt: skip
        if registered and secret is None:
            raise TokenRefused("invalid_client", "client authentication required", 401,
                               basic=basic, reason="no_credentials")  # fmt: skip
        if not hmac.compare_digest((secret or "").encode(), registered.encode()):
            raise TokenRefused("invalid_client", "wrong client secret", 401, basic=basic,
                               reason="secret")  # fmt: skip
        if client in self.revoked_clients:
            raise TokenRefused("invalid_client", "client revoked", 401, basic=basic,
                               reason="revoked")  # fmt: skip

    def check_target(self, form: dict[str, str]) -> None:
        """Raises: TokenRefused: a required audience or resource is missing or another one."""
        wanted = [("audience", self.audience)] if self.audience is not None else []
        if self.require_resource:
            wanted.append(("resource", self.resource))
        for name, expected in wanted:
            got = form.get(name)
            if got is None:
                raise TokenRefused("invalid_request", f"{name} is required")
            if got.removesuffix("/") != expected.removesuffix("/"):
                raise TokenRefused("invalid_target", f"unknown {name}")

    def issue(self, client: str, scope: str | None, refresh: str | None = None) -> OAuthToken:
        token = self.token_prefix + secrets.token_urlsafe(24)
        self.access[token] = Issued(client, time.monotonic() + self.lifetime, scope)
        return OAuthToken(access_token=token, expires_in=self.expires_in, scope=scope,
                          refresh_token=refresh)  # fmt: skip

    def rotate(self, client: str, form: dict[str, str]) -> OAuthToken:
        """The refresh_token grant: spend the presented refresh token, issue a new pair.

        Raises:
            TokenRefused: invalid_request without a refresh token; invalid_grant for an
            unknown or spent one, or one issued to another client.
        """
        presented = form.get("refresh_token")
        if presented is None:
            raise TokenRefused("invalid_request", "refresh_token is missing")
        held = self.refresh.get(presented)
        if held is None or held.client != client:
            reason = "spent" if presented in self.spent else "unknown" if held is None else "client"
            raise TokenRefused("invalid_grant", f"refresh token {reason}", reason=reason)
        del self.refresh[presented]
        self.spent.add(presented)
        scope = form.get("scope", held.scope)
        fresh = self.token_prefix + secrets.token_urlsafe(24)
        self.refresh[fresh] = Refresh(client, scope)
        return self.issue(client, scope, refresh=fresh)

    def refuse(self, refused: TokenRefused, grant: str | None, client: str | None) -> Response:
        self.count("token_refused", client)
        extra = {"reason": refused.reason} if refused.reason is not None else {}
        self.record("token_refused", grant=grant, client=client, error=refused.error,
                    status=refused.status, **extra)  # fmt: skip
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if refused.basic:
            headers["WWW-Authenticate"] = 'Basic realm="oauth"'
        body = {"error": refused.error, "error_description": refused.description}
        return JSONResponse(body, status_code=refused.status, headers=headers)

    # ---------------------------------------------------------------- the resource server

    def bearer(self, authorization: str | None) -> tuple[str | None, str | None]:
        """Who a request's Authorization header authenticates: `(client, None)` when valid,
        else `(client or None, reason)`."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, "missing"
        issued = self.access.get(token)
        if issued is not None:
            if time.monotonic() >= issued.expires_at:
                return issued.client, "expired"
            return issued.client, None
        if token in self.revoked_tokens:
            return self.revoked_tokens[token], "revoked"
        key = self.api_key()
        if key and hmac.compare_digest(token.encode(), key.encode()):
            return API_KEY_CLIENT, None
        return None, "unknown"

    def api_key(self) -> str | None:
        if self.api_key_file is None:
            return None
        try:  # open() follows the symlinks anew each time
            return self.api_key_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError:
            return None

    # ---------------------------------------------------------------- test controls

    def revoke(self, client: str) -> int:
        self.revoked_clients.add(client)
        dead = [t for t, issued in self.access.items() if issued.client == client]
        for token in dead:
            del self.access[token]
            self.revoked_tokens[token] = client
        return len(dead)


def _form(content_type: str, body: bytes) -> dict[str, str]:
    """The parameters of a form-urlencoded body.

    Raises:
        TokenRefused: invalid_request for another content type or a repeated parameter.
    """
    if content_type.split(";")[0].strip().lower() != FORM:
        raise TokenRefused("invalid_request", f"the body must be {FORM}")
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    form = dict(pairs)
    if len(form) != len(pairs):
        raise TokenRefused("invalid_request", "a parameter is repeated")
    return form


def _client_credentials(
    authorization: str | None, form: dict[str, str]
) -> tuple[str, str | None, str]:
    """`(client_id, secret or None, auth method)` from Basic auth or the form.

    Raises:
        TokenRefused: invalid_client for malformed Basic or no client at all;
        invalid_request for two authentication methods or disagreeing client ids.
    """
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise TokenRefused("invalid_client", "malformed Basic credentials", 401,
                               basic=True, reason="no_credentials") from None  # fmt: skip
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise TokenRefused("invalid_client", "malformed Basic credentials", 401,
                               basic=True, reason="no_credentials")  # fmt: skip
        client, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if "client_secret" in form:
            raise TokenRefused("invalid_request", "two client authentication methods")
        if form.get("client_id", client) != client:
            raise TokenRefused("invalid_request", "client_id differs from the Basic one")
        return client, secret, "client_secret_basic"
    client_id = form.get("client_id")
    if client_id is None:
        raise TokenRefused("invalid_client", "no client authentication", 401,
                           reason="no_credentials")  # fmt: skip
    if "client_secret" in form:
        return client_id, form["client_secret"], "client_secret_post"
    return client_id, None, "none"


# --------------------------------------------------------------------------- HTTP


class BearerGate:
    """Let a request to /mcp through only with a valid bearer token or the API key.

    The client id goes into the scope as the SDK's `AuthenticatedUser`, as its own bearer
    middleware would put it: the session manager binds sessions to it and tools read it.
    """

    def __init__(self, app: ASGIApp, authority: Authority) -> None:
        self.app = app
        self.authority = authority

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/mcp" or path.startswith("/mcp/")):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        client, reason = self.authority.bearer(request.headers.get("authorization"))
        if reason is None and client is not None:
            token = AccessToken(token="", client_id=client, scopes=[])
            scope["user"], scope["auth"] = AuthenticatedUser(token), AuthCredentials([])
            await self.app(scope, receive, send)
            return
        self.authority.count("unauthorized", client)
        extra = {"client": client} if client is not None else {}
        self.authority.record("unauthorized", reason=reason, **extra)
        metadata = f'resource_metadata="{self.authority.resource_metadata_url}"'
        if reason == "missing":
            challenge = f"Bearer {metadata}"
            body = {"error": "unauthorized", "error_description": "a bearer token is required"}
        else:
            challenge = f'Bearer error="invalid_token", {metadata}'
            body = {"error": "invalid_token", "error_description": f"token {reason}"}
        response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": challenge})
        await response(scope, receive, send)


def _client_of(ctx: Context) -> str:
    request = ctx.request_context.request
    user = getattr(request, "scope", {}).get("user")
    return user.access_token.client_id if isinstance(user, AuthenticatedUser) else "?"


def build_server(authority: Authority) -> MCPServer:
    mcp = MCPServer("oauth", version="1.0", log_level="WARNING")

    def called(tool: str, ctx: Context) -> None:
        client = _client_of(ctx)
        authority.count("calls", client)
        authority.record("called", tool=tool, client=client)

    @mcp.tool(description="The client id the request's token was issued to (or api-key).",
              annotations=READ_ONLY)  # fmt: skip
    def whoami(ctx: Context) -> str:
        called("whoami", ctx)
        return json.dumps({"client": _client_of(ctx)})

    @mcp.tool(description="Return the text unchanged.", annotations=READ_ONLY)
    def echo(ctx: Context, text: str) -> str:
        called("echo", ctx)
        return text

    @mcp.tool(description="Sleep for the given seconds, then answer 'slept N'.")
    async def slow(ctx: Context, seconds: float) -> str:
        called("slow", ctx)
        await anyio.sleep(seconds)
        return f"slept {seconds:g}"

    add_routes(mcp, authority)
    return mcp


def add_routes(mcp: MCPServer, authority: Authority) -> None:
    """The discovery documents, the token endpoint and the test controls."""
    issuer_path = authority.issuer.removeprefix(authority.base)
    protected = ProtectedResourceMetadata.model_validate({
        "resource": authority.resource, "authorization_servers": [authority.issuer],
        "resource_name": "jackfield oauth test server"})  # fmt: skip
    server = OAuthMetadata.model_validate({
        "issuer": authority.issuer,
        "authorization_endpoint": f"{authority.issuer}/authorize",
        "token_endpoint": f"{authority.issuer}/token",
        "response_types_supported": ["code"],
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none"],
    })  # fmt: skip
    documents = {
        "protected-resource": (authority.resource_metadata_url.removeprefix(authority.base),
                               ProtectedResourceMetadataHandler(protected).handle),
        "authorization-server": (f"/.well-known/oauth-authorization-server{issuer_path}",
                                 MetadataHandler(server).handle),
    }  # fmt: skip
    for which, (path, handle) in documents.items():

        async def serve(request: Request, which: str = which, handle: Any = handle) -> Response:
            authority.count("metadata", None)
            authority.record("metadata", which=which)
            response: Response = await handle(request)
            return response

        mcp.custom_route(path, methods=["GET"])(serve)

    mcp.custom_route(f"{issuer_path}/token", methods=["POST"])(authority.token_endpoint)

    async def revoke(request: Request) -> Response:
        client = (await request.json()).get("client")
        if client not in authority.clients:
            return JSONResponse({"error": "unknown client"}, status_code=404)
        return JSONResponse({"client": client, "revoked_tokens": authority.revoke(client)})

    async def restore(request: Request) -> Response:
        client = (await request.json()).get("client")
        if client not in authority.clients:
            return JSONResponse({"error": "unknown client"}, status_code=404)
        authority.revoked_clients.discard(client)
        return JSONResponse({"client": client})

    async def token_endpoint(request: Request) -> Response:
        authority.down = bool((await request.json()).get("down"))
        return JSONResponse({"down": authority.down})

    async def stats(request: Request) -> Response:
        return JSONResponse(authority.stats())

    mcp.custom_route("/control/revoke", methods=["POST"])(revoke)
    mcp.custom_route("/control/restore", methods=["POST"])(restore)
    mcp.custom_route("/control/token-endpoint", methods=["POST"])(token_endpoint)
    mcp.custom_route("/control/stats", methods=["GET"])(stats)


def build_authority(args: argparse.Namespace, port: int) -> Authority:
    base = f"http://{HOST}:{port}"
    issuer_path = args.issuer_path.strip("/")
    authority = Authority(
        base=base,
        issuer=f"{base}/{issuer_path}" if issuer_path else base,
        clients=dict(args.client),
        lifetime=args.lifetime,
        expires_in=args.expires_in if args.expires_in is not None else max(1, int(args.lifetime)),
        api_key_file=args.api_key_file,
        audience=args.require_audience,
        require_resource=args.require_resource,
        record_path=args.record,
        token_prefix=args.token_prefix,
    )
    for client, token in args.refresh_token:
        authority.refresh[token] = Refresh(client, None)
    return authority


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sock = bind_socket(HOST, args.port)  # bound first: the URLs in the documents need the port
    authority = build_authority(args, sock.getsockname()[1])
    app = build_server(authority).streamable_http_app(host=HOST)
    anyio.run(serve_announced, BearerGate(app, authority), sock)


if __name__ == "__main__":
    main()
