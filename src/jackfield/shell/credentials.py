"""The live credentials of one remote server: the headers every request carries and, for
OAuth, the current access token. One `Credentials` per server, owned by its supervisor; it
outlives reconnects, so a token is reused by the next connection and status can show it.

- Headers (and `auth.bearer`) are put on each request by `CredentialsAuth`, an httpx auth
  flow, not fixed on the HTTP client: a rotated secret file (`rotate`) is used from the next
  request on, with no reconnect.
- OAuth tokens are got before the first request when the token endpoint is configured, else
  after the server's first 401, which names its protected resource metadata (RFC 9728); that
  names the authorization server, whose metadata (RFC 8414) names the token endpoint. The SDK's
  discovery helpers (mcp.client.auth.utils) build and read those requests. The SDK's own
  `OAuthClientProvider` is not used: it replaces a client-credentials token only after a 401
  (and a full rediscovery), and after a failed refresh it turns to the browser flow, which no
  one is there to finish.
- A token is replaced ahead of its expiry (`auth.oauth.refreshBefore`). A 401 gets one new
  token (or a fresh read of the secret files) and the request is sent once more; a second 401
  is final. Refused credentials fail the server (`PermanentError`); an authorization server
  that cannot be reached backs it off (`TemporaryError`), unless the current token still works.

Nothing here logs or shows a token, a secret or a client id: status gets `AuthStatus`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace

import httpx2
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    create_oauth_metadata_request,
    extract_resource_metadata_from_www_auth,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    issuers_match,
)
from mcp.shared.auth_utils import resource_url_from_server_url

from jackfield.core.connection import Bearer, Connection, OAuthClient
from jackfield.core.expansion import Secret
from jackfield.core.oauth import (
    AuthStatus,
    Token,
    Unreachable,
    token_answer,
    token_request,
)
from jackfield.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

TOKEN_TIMEOUT = 10.0
"""Seconds a discovery or token request may take."""
STEPS_KEPT = 20


class Credentials:
    def __init__(
        self,
        name: str,
        connection: Connection,
        *,
        fresh: Callable[[], Connection | None] = lambda: None,
        adopt: Callable[[Connection], None] | None = None,
    ) -> None:
        """`fresh`: the server's connection resolved anew now (its secret files read again: a
        few small files, and only after a 401, so on the loop), None when unchanged or it
        cannot be; asked in case a file rotated before the watcher said so. `adopt` takes a
        changed one (the supervisor's, which rotates these credentials too); default
        `rotate`."""
        self.name = name
        self.connection = connection
        self.fresh = fresh
        self.adopt = adopt or self.rotate
        self.token: Token | None = None
        self.steps: list[str] = []
        """The auth flow so far, step by step, for `jackfield test` (no secret in it)."""
        self.auth_status = AuthStatus(connection.auth.kind) if connection.auth else None
        self._endpoint: str | None = None
        self._issuer: str | None = None
        self._resource: str | None = None
        self._refresh_token: Secret | None = None
        self._lock = asyncio.Lock()
        self._http: httpx2.AsyncClient | None = None
        self.version = 0
        """Bumped by every `rotate`."""
        self._refusal: str | None = None
        """Why the authorization server refused us: no token is asked for again until the
        credentials change (`rotate`), however many requests want one meanwhile."""
        self._configure(connection)

    @property
    def oauth(self) -> OAuthClient | None:
        auth = self.connection.auth
        return auth if isinstance(auth, OAuthClient) else None

    def _configure(self, connection: Connection) -> None:
        oauth = connection.auth if isinstance(connection.auth, OAuthClient) else None
        self._endpoint = oauth.token_url if oauth is not None else None
        self._issuer = oauth.issuer if oauth is not None else None
        self._resource = oauth.resource if oauth is not None else None
        self._refresh_token = oauth.refresh_token if oauth is not None else None
        if self.auth_status is not None:
            self.auth_status = replace(
                self.auth_status, token_endpoint=self._endpoint, issuer=self._issuer
            )

    def rotate(self, connection: Connection) -> None:
        """New values of the connection (a secret file changed): headers and a bearer token
        apply from the next request; new OAuth client credentials get a new token. A refresh
        token rotated in memory is kept unless the configured one itself changed."""
        before, self.connection = self.oauth, connection
        self.version += 1
        self._refusal = None
        after = self.oauth
        if after is None or before is None or _where(after) != _where(before):
            self.token = None
            self._configure(connection)
            return
        if _who(after) != _who(before):
            self.token = None  # other client credentials: the old token is theirs
        if after.refresh_token != before.refresh_token:
            self._refresh_token = after.refresh_token
            self.token = None

    def _reread(self) -> bool:
        """Resolve the connection anew (its secret files read now); whether that changed it."""
        before = self.version
        fresh = self.fresh()
        if fresh is not None and fresh != self.connection:
            self.adopt(fresh)
        return self.version != before

    # --- what each request carries ------------------------------------------------------------

    async def headers(self, *, eager: bool = False) -> dict[str, str]:
        """The headers of the next request: the configured ones, and Authorization. An OAuth
        token whose endpoint is not known yet is left to the server's 401 to find, unless
        `eager` (a request that cannot be retried): then it is discovered at once."""
        headers = {k: v.reveal() for k, v in self.connection.headers.items()}
        auth = self.connection.auth
        if isinstance(auth, Bearer):
            headers["Authorization"] = f"Bearer {auth.token.reveal()}"
        elif isinstance(auth, OAuthClient) and (eager or self._endpoint is not None or self.token):
            token = await self.current()
            headers["Authorization"] = f"Bearer {token.access.reveal()}"
        return headers

    async def current(self, challenge: httpx2.Response | None = None) -> Token:
        """A token that is not due for replacement, got now if needed (after discovery when the
        token endpoint is not known yet: from `challenge`, the server's 401, if given).

        Raises:
            PermanentError: the credentials or the grant were refused, or discovery found no
                token endpoint (the server is Failed).
            TemporaryError: the authorization server cannot be reached (it backs off).
        """
        oauth = self.oauth
        assert oauth is not None
        async with self._lock:
            if self._refusal is not None:
                raise PermanentError(f"auth: {self._refusal}")
            token = self.token
            due = token.replace_at(oauth.refresh_before) if token is not None else None
            if token is not None and (due is None or time.time() < due):
                return token
            if self._endpoint is None:
                await self._discover(oauth, challenge)
            try:
                return await self._obtain(oauth, token)
            except PermanentError:
                # a client secret rotated in its file before we heard of it: once more with it
                if not self._reread() or self.oauth is None:
                    raise
                if self._endpoint is None:
                    await self._discover(self.oauth, challenge)
                return await self._obtain(self.oauth, None)

    async def rejected(self, response: httpx2.Response, sent: str | None) -> bool:
        """The server answered 401 to a request that carried `sent` (its Authorization):
        whether something changed that is worth sending it once more with."""
        if self.oauth is not None:
            async with self._lock:
                token = self.token
                if token is not None and f"Bearer {token.access.reveal()}" == sent:
                    self.token = replace(token, lifetime=0.0)  # refused: due now
                elif token is not None and sent is None and self._endpoint is not None:
                    return True  # sent before a token was got; there is one now
            await self.current(challenge=response)
            return True
        if not self._reread():
            return False
        self._step("the server refused the credentials; the secret files changed: retrying")
        return True

    # --- OAuth --------------------------------------------------------------------------------

    async def _discover(self, oauth: OAuthClient, challenge: httpx2.Response | None) -> None:
        """Find the token endpoint: the protected resource metadata the challenge names (or the
        well-known URLs), then its authorization server's metadata."""
        server_url = _http_url(self.connection.url.reveal() if self.connection.url else "")
        named = extract_resource_metadata_from_www_auth(challenge) if challenge else None
        http = self._client()
        if named:
            self._step(f"the server's 401 names its resource metadata: {named}")
        metadata = None
        for url in build_protected_resource_metadata_discovery_urls(named, server_url):
            response = await self._get(http, url)
            metadata = await handle_protected_resource_response(response)
            if metadata is not None:
                self._step(f"protected resource metadata at {url}")
                break
        servers = [str(s) for s in metadata.authorization_servers] if metadata else []
        if metadata is not None and self._resource is None:
            self._resource = str(metadata.resource)
        if self._resource is None:
            self._resource = resource_url_from_server_url(server_url)
        auth_server = self._choose(servers)
        for url in build_oauth_authorization_server_metadata_discovery_urls(
            auth_server, server_url
        ):
            response = await self._get(http, url)
            ok, found = await handle_auth_metadata_response(response)
            if not ok:
                break
            if found is None:
                continue
            if self._issuer is not None and not issuers_match(str(found.issuer), self._issuer):
                raise self._refused(
                    f"the authorization server's metadata names issuer {found.issuer},"
                    f" not the configured {self._issuer}"
                )
            self._endpoint = str(found.token_endpoint)
            self._step(f"authorization server {found.issuer}: token endpoint {self._endpoint}")
            if self.auth_status is not None:
                self.auth_status = replace(
                    self.auth_status, token_endpoint=self._endpoint, issuer=str(found.issuer)
                )
            return
        raise self._refused(
            "no authorization server metadata found (RFC 9728/8414 discovery):"
            " set auth.oauth.tokenUrl"
        )

    def _choose(self, servers: list[str]) -> str | None:
        if not servers:
            return self._issuer
        if self._issuer is None:
            return servers[0]
        pinned = next((s for s in servers if issuers_match(s, self._issuer)), None)
        if pinned is None:
            raise self._refused(
                f"the server names authorization server(s) {', '.join(servers)}, not the"
                f" configured issuer {self._issuer}"
            )
        return pinned

    async def _obtain(self, oauth: OAuthClient, previous: Token | None) -> Token:
        assert self._endpoint is not None
        refresh = self._refresh_token
        request = token_request(oauth, self._endpoint, refresh_token=refresh,
                                resource=self._resource)  # fmt: skip
        try:
            response = await self._client().post(
                request.url, data=dict(request.form), headers=dict(request.headers)
            )
            answer = token_answer(response.status_code, response.content, time.time())
        except httpx2.HTTPError as e:
            answer = Unreachable(f"the token endpoint cannot be reached ({type(e).__name__})")
        if isinstance(answer, Token):
            self.token = answer
            if answer.refresh is not None:
                self._refresh_token = answer.refresh  # rotated: the old one is spent
            expiry = f"expires in {answer.lifetime:g} s" if answer.lifetime else "no expiry given"
            self._step(f"token obtained ({oauth.grant}, {oauth.auth_method}): {expiry}")
            self._record("ok", answer.expires_at, succeeded=True)
            return answer
        if isinstance(answer, Unreachable) and previous is not None:
            expires = previous.expires_at
            if expires is None or time.time() < expires:
                self._record(f"unreachable: {answer.message}", expires, succeeded=False)
                log.warning("server %s: %s; the current token is kept", self.name, answer.message)
                return previous
        if isinstance(answer, Unreachable):
            self._record(f"unreachable: {answer.message}", None, succeeded=False)
            self._step(answer.message)
            raise TemporaryError(f"auth: {answer.message}")
        self.token = None
        raise self._refused(answer.message)

    def _refused(self, message: str) -> PermanentError:
        self._refusal = message
        self._record(f"refused: {message}", None, succeeded=False)
        self._step(message)
        return PermanentError(f"auth: {message}")

    async def _get(self, http: httpx2.AsyncClient, url: str) -> httpx2.Response:
        try:
            return await http.send(create_oauth_metadata_request(url))
        except httpx2.HTTPError as e:
            message = f"the authorization metadata at {url} cannot be reached ({type(e).__name__})"
            self._record(f"unreachable: {message}", None, succeeded=False)
            raise TemporaryError(f"auth: {message}") from None

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx2.AsyncClient(timeout=TOKEN_TIMEOUT, follow_redirects=False)
        return self._http

    def _record(self, outcome: str, expires_at: float | None, *, succeeded: bool) -> None:
        status = self.auth_status
        if status is None:
            return
        self.auth_status = replace(
            status,
            expires_at=expires_at,
            last_refresh_at=time.time(),
            last_outcome="ok" if succeeded else outcome,
            refreshes=status.refreshes + (1 if succeeded else 0),
            failures=status.failures + (0 if succeeded else 1),
        )

    def _step(self, text: str) -> None:
        self.steps = [*self.steps, text][-STEPS_KEPT:]
        log.debug("server %s: auth: %s", self.name, text)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class CredentialsAuth(httpx2.Auth):
    """Puts the credentials on every request; after a 401, once more with new ones.

    `on_refused` hears a final 401 or 403 (the one no retry helps), so the connection can say
    the server refused our credentials; a 401 that a new token fixed is nobody's business.
    `on_failed` hears an auth error (refused credentials, an unreachable authorization
    server) before the request raises it: the connection ends at once, whatever the SDK's
    transport makes of the exception.
    """

    def __init__(
        self,
        credentials: Credentials,
        on_refused: Callable[[int], None],
        on_failed: Callable[[Exception], None],
    ) -> None:
        self.credentials = credentials
        self.on_refused = on_refused
        self.on_failed = on_failed

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        try:
            request.headers.update(await self.credentials.headers())
        except (PermanentError, TemporaryError) as e:
            self.on_failed(e)
            raise
        response = yield request
        if response.status_code == 401:
            sent = request.headers.get("Authorization")
            try:
                retry = await self.credentials.rejected(response, sent)
                if retry:
                    request.headers.update(await self.credentials.headers())
            except (PermanentError, TemporaryError) as e:
                self.on_failed(e)
                raise
            if retry:
                response = yield request
        if response.status_code in (401, 403):
            self.on_refused(response.status_code)


def _where(oauth: OAuthClient) -> tuple[str | None, ...]:
    """What decides where tokens come from: a change means discovering again."""
    return (oauth.token_url, oauth.issuer, oauth.resource)


def _who(oauth: OAuthClient) -> tuple[object, ...]:
    """What a token is issued to: a change means the old token is not ours."""
    return (oauth.grant, oauth.client_id, oauth.client_secret, oauth.scopes, oauth.audience)


def _http_url(url: str) -> str:
    """The HTTP URL of a server (a WebSocket endpoint's metadata is served over HTTP)."""
    for ws, http in (("ws://", "http://"), ("wss://", "https://")):
        if url.lower().startswith(ws):
            return http + url[len(ws) :]
    return url
