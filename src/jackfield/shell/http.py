"""The read-only status server (DESIGN.md section 7): JSON status, probes, metrics, dashboard.

GET and HEAD only. With a token, every route but the probes (/livez, /healthz, /readyz) wants
`Authorization: Bearer <token>`. The probes call only the provider's cheap in-memory checks,
so an orchestrator polling them never reaches the store or the MCP servers.

Bound to a loopback address, the server answers only requests whose `Host` names loopback (or
one of `allowed_hosts`): a web page that rebinds its DNS name to 127.0.0.1 reaches the port, but
its requests carry its own name, so it reads nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from jackfield.core import dashboard
from jackfield.core.activity import Activity, ActivityView
from jackfield.core.status import Status
from jackfield.shell.dashboard_script import SCRIPT
from jackfield.shell.metrics import Metrics
from jackfield.shell.redaction import redact

log = logging.getLogger(__name__)

ALLOW = "GET, HEAD"
PUBLIC_PATHS = frozenset({"/livez", "/healthz", "/readyz"})
MAX_REQUEST_BYTES = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS = 64

COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
"""The page's own script and its fetches of /dashboard.json; nothing inline but styles."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """`host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip("[]").rstrip(".").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):  # RFC 6761: *.localhost is local
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a `Host` header, without its port (`[::1]:8080` -> `::1`)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class StatusProvider(Protocol):
    def status(self) -> Status: ...

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason): the event loop and watcher task are running. Must not do I/O."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): first reconcile applied, store reachable, hub serving."""
        ...


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, ensure_ascii=False, default=str).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


TIMELINE_STEP = 6
"""Seconds the dashboard's state timelines move by (see dashboard.TIMELINE_UNITS)."""
STATUS_TTL = 0.1
"""Seconds a rendered status document is served again (probes are never cached)."""


class StatusServer:
    """Serves the provider's status on host:port until `stop`."""

    def __init__(
        self,
        provider: StatusProvider,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        token: str | None = None,
        refresh_seconds: int = 5,
        status_ttl: float = STATUS_TTL,
        allowed_hosts: Iterable[str] = (),
        activity: Activity | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`activity` feeds the dashboard's charts and recent calls (the app records into it;
        without one the server keeps its own, fed only by the states it sees); `clock` gives
        POSIX seconds."""
        self._provider = provider
        self._metrics = metrics
        self._host = host
        self._port = port
        self._token = token.encode() if token else None
        self._refresh = refresh_seconds
        self._runner: web.AppRunner | None = None
        self._cached: tuple[float, Status, bytes] | None = None
        self._status_ttl = status_ttl
        self._allowed_hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
        self._check_host = is_loopback(host)
        self.activity = activity if activity is not None else Activity(mask=redact)
        self._clock = clock
        self._versions = dashboard.Versions(epoch=secrets.token_hex(4))
        self._rendered: tuple[tuple[bytes, int, int], list[dashboard.Part]] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one after `start`, when constructed with 0)."""
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            OSError: the address cannot be bound (in use, not permitted).
        """

        @web.middleware
        async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
            return await self._guard(request, handler)

        app = web.Application(middlewares=[guard], client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/", self._dashboard)
        app.router.add_get("/" + dashboard.SCRIPT_PATH, self._script)
        app.router.add_get("/" + dashboard.PARTS_PATH, self._parts)
        app.router.add_get("/status/activity", self._activity)
        app.router.add_get("/status", self._status)
        app.router.add_get("/status/servers/{name}", self._server)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/healthz", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._render_metrics)
        runner = web.AppRunner(
            app,
            access_log=None,  # probes every few seconds would drown the log
            shutdown_timeout=2.0,
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
            max_headers=MAX_HEADERS,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("status server listening on %s", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- middleware

    async def _guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            if request.method not in ("GET", "HEAD"):
                # Before auth and routing: no method other than GET/HEAD exists anywhere.
                response = _error(405, "method not allowed", {"Allow": ALLOW})
            elif not self._host_allowed(request):
                response = _error(
                    421,
                    "this status server answers loopback host names only"
                    " (set JACKFIELD_STATUS_ALLOWED_HOSTS to add one)",
                )
            elif (
                self._token is not None
                and request.path not in PUBLIC_PATHS
                and not self._authorized(request)
            ):
                response = _error(
                    401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
                )
            else:
                response = await handler(request)
        except web.HTTPException as e:
            extra = {"Allow": ALLOW} if e.status == 405 else None
            response = _error(e.status, e.reason.lower(), extra)
        except Exception:
            log.exception("status server: %s %s failed", request.method, request.path)
            response = _error(500, "internal error")
        response.headers.update(COMMON_HEADERS)
        return response

    def _host_allowed(self, request: web.Request) -> bool:
        header = request.headers.get("Host")
        if not self._check_host or header is None:  # no Host: not a browser, nothing to rebind
            return True
        name = host_name(header).lower()
        return is_loopback(name) or name in self._allowed_hosts

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    # --- routes

    def _current(self) -> tuple[Status, bytes]:
        """The status and its JSON, reused for STATUS_TTL seconds: under a monitoring storm
        (or during a big reconcile) building the document per request is what costs. A change
        of readiness is never served stale: `/status` must not contradict `/readyz`."""
        now = time.monotonic()
        cached = self._cached
        if (
            cached is None
            or now - cached[0] >= self._status_ttl
            or cached[1].ready != self._provider.readiness()[0]
        ):
            status = self._provider.status()
            body = json.dumps(status.to_json(), ensure_ascii=False, default=str).encode()
            cached = self._cached = (now, status, body)
        return cached[1], cached[2]

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(body=self._current()[1], content_type="application/json")

    async def _server(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for server in self._current()[0].servers:
            if server.name == name:
                return _json(server.to_json())
        return _error(404, f"no server named {name!r}")

    async def _livez(self, request: web.Request) -> web.Response:
        ok, reason = self._provider.liveness()
        return _json({"ok": True}) if ok else _json({"ok": False, "reason": reason}, 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, reason = self._provider.readiness()
        return _json({"ok": True}) if ok else _json({"ok": False, "reason": reason}, 503)

    async def _render_metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    def _view(self) -> tuple[Status, bytes, ActivityView]:
        """The status (and its JSON) and the activity now, the servers' states sampled into it
        first (so a transition shows on the next page update, whatever the app samples)."""
        status, body = self._current()
        now = self._clock()
        self.activity.observe(now, status.servers)
        return status, body, self.activity.view(now)

    def _parts_now(self) -> tuple[Status, list[dashboard.Part]]:
        """The dashboard's parts, rendered again only when the status, the activity or the
        timeline's 6 s step changed (several open tabs poll the same state)."""
        status, body, view = self._view()
        key = (body, self.activity.version, int(view.now // TIMELINE_STEP))
        if self._rendered is None or self._rendered[0] != key:
            self._rendered = (key, dashboard.parts(status, view))
        parts = self._rendered[1]
        self._versions.update(parts)
        return status, parts

    async def _dashboard(self, request: web.Request) -> web.Response:
        status, parts = self._parts_now()
        page = dashboard.page(
            parts, status, refresh_seconds=self._refresh, since=self._versions.token
        )
        response = web.Response(
            text=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": DASHBOARD_CSP},
        )
        response.enable_compression()
        return response

    async def _script(self, request: web.Request) -> web.Response:
        return web.Response(
            text=SCRIPT,
            content_type="text/javascript",
            charset="utf-8",
            headers={"Content-Security-Policy": DASHBOARD_CSP},
        )

    async def _parts(self, request: web.Request) -> web.StreamResponse:
        """The parts a page lacks (see dashboard.Versions); 204 when it has them all."""
        status, parts = self._parts_now()
        since = self._versions.since(request.query.get("since"))
        if since == self._versions.seq:
            return web.Response(status=204)
        body = self._versions.document(parts, status, since)
        response = _json(body)
        response.enable_compression()
        return response

    async def _activity(self, request: web.Request) -> web.Response:
        return _json(self._view()[2].to_json())
