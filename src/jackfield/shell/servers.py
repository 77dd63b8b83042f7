"""The live MCP manager: every server's supervisor, the merged tool catalog, and the call path.

The reconciler applies plans to it (`put`/`remove`, the `LiveTarget` protocol); the hub lists
`catalog` and forwards calls through `call`; status reads `statuses()`. Catalog changes are
coalesced to one rebuild per event-loop tick and announced to `listeners`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import mcp_types

from jackfield.core import tool_results as results
from jackfield.core.catalog import Catalog, CatalogChange, build, compare, server_entries
from jackfield.core.connection import Connection, redact
from jackfield.core.limits import server_limits
from jackfield.core.status import ServerStatus
from jackfield.shell.gates import Governor, Rejected
from jackfield.shell.stdio import Warden
from jackfield.shell.supervisor import (
    DEFAULT_TIMING,
    ProtocolMode,
    Supervisor,
    Timing,
    Unavailable,
)
from jackfield.shell.trees import TreeMode
from jackfield.spec.models import MCPServerSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallEvent:
    """One finished tool call, for metrics and the audit trail."""

    server: str
    tool: str
    outcome: str
    """ok | error | unavailable | timeout | rejected:busy | rejected:rate | rejected:sessions |
    unknown"""
    seconds: float
    bytes_in: int
    bytes_out: int
    arguments: dict[str, Any]
    result_text: str
    session: str | None
    secrets: frozenset[str]


def error_result(text: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=text)],
                                    isError=True)  # fmt: skip


def text_of(result: mcp_types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))


def capped(result: mcp_types.CallToolResult, limit: int) -> mcp_types.CallToolResult:
    """Cut a result to `limit` bytes: its text head + tail with a marker. When it is over the
    limit, what is not text (images, resources, structured content) is dropped."""
    text = text_of(result)
    others = [c for c in result.content if not isinstance(c, mcp_types.TextContent)]
    size = len(text.encode(errors="replace")) + sum(len(c.model_dump_json()) for c in others)
    if result.structured_content is not None:
        size += len(json.dumps(result.structured_content, default=str))
    if size <= limit:
        return result
    if not text:
        text = f"[{size} bytes of non-text content dropped by jackfield (limit {limit})]"
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=results.cap(text, limit))],
        isError=result.is_error,
    )


MAX_SESSION_PROCESSES = 32
"""`scope: session` connections open at once, over all servers and hub sessions."""
SESSION_IDLE = 300.0
"""Seconds a `scope: session` connection may go unused before it is closed (the next call of
that session opens it again)."""


def _limited(spec: MCPServerSpec) -> bool:
    return not server_limits(spec).unlimited or bool(spec.tools.overrides)


class ServerManager:
    def __init__(
        self,
        *,
        timing: Timing = DEFAULT_TIMING,
        observer: Callable[[CallEvent], None] | None = None,
        mode: ProtocolMode = "auto",
        process_tree: TreeMode = "auto",
        max_session_processes: int = MAX_SESSION_PROCESSES,
        session_idle: float = SESSION_IDLE,
    ) -> None:
        self.timing = timing
        self.observer = observer
        self.mode: ProtocolMode = mode
        """How supervisors negotiate the protocol (`legacy`: the initialize handshake only)."""
        self.listeners: list[Callable[[CatalogChange], None]] = []
        self._servers: dict[str, Supervisor] = {}
        self._governors: dict[str, Governor] = {}
        self._sessions: dict[str, dict[str, Supervisor]] = {}
        self.max_session_processes = max_session_processes
        self.session_idle = session_idle
        self.session_refusals: Counter[str] = Counter()
        """Calls refused per server because `max_session_processes` were open."""
        self._idle_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._using: Counter[Supervisor] = Counter()
        self._closing: set[asyncio.Task[None]] = set()
        self._catalog = Catalog()
        self._dirty = False
        self._flush_scheduled = False
        self.warden = Warden(process_tree)
        self.in_flight = 0

    async def __aenter__(self) -> ServerManager:
        await self.warden.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every server in parallel, then the warden."""
        sessions = [s for per in self._sessions.values() for s in per.values()]
        for timer in self._idle_timers.values():
            timer.cancel()
        self._idle_timers.clear()
        await asyncio.gather(*(s.stop() for s in [*self._servers.values(), *sessions]),
                             *self._closing)  # fmt: skip
        self._servers.clear()
        self._sessions.clear()
        self._changed()
        await self.warden.stop()

    # --- LiveTarget ---------------------------------------------------------------------------

    async def put(
        self, name: str, spec: MCPServerSpec, connection: Connection, *, reconnect: bool
    ) -> None:
        current = self._servers.get(name)
        if current is not None and not reconnect:
            current.update(spec)
            self._governors[name].update(spec)
            for per in self._sessions.values():
                if name in per:
                    per[name].update(spec)
            return
        if current is not None:
            await self._stop_server(name)
        supervisor = self._supervisor(name, spec, connection)
        self._servers[name] = supervisor
        self._governors[name] = Governor(name, spec)
        supervisor.start()
        self._changed()

    async def remove(self, name: str) -> None:
        await self._stop_server(name)
        self._governors.pop(name, None)
        self._changed()

    async def _stop_server(self, name: str) -> None:
        supervisor = self._servers.pop(name, None)
        per_session = [per.pop(name) for per in self._sessions.values() if name in per]
        for key in [key for key in self._idle_timers if key[1] == name]:
            self._cancel_idle(key)
        self._changed()  # its tools leave the catalog now, not after the (slow) shutdown
        await asyncio.gather(*(s.stop() for s in [supervisor, *per_session] if s is not None))

    def _supervisor(self, name: str, spec: MCPServerSpec, connection: Connection) -> Supervisor:
        return Supervisor(
            name, spec, connection, on_change=self._changed, warden=self.warden,
            timing=self.timing, mode=self.mode,
        )  # fmt: skip

    # --- catalog ------------------------------------------------------------------------------

    def _changed(self) -> None:
        self._dirty = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._dirty:
            return
        self._dirty = False
        new = build(
            {
                name: server_entries(name, s.offered, s.spec.tools)
                for name, s in self._servers.items()
            }
        )
        change = compare(self._catalog, new)
        self._catalog = new
        for listener in list(self.listeners):
            try:
                listener(change)
            except Exception:
                log.exception("catalog listener failed")

    @property
    def catalog(self) -> Catalog:
        if self._dirty:
            self._flush()
        return self._catalog

    def specs(self) -> dict[str, MCPServerSpec]:
        return {name: s.spec for name, s in self._servers.items()}

    def states(self) -> dict[str, str]:
        return {name: s.state for name, s in self._servers.items()}

    def statuses(self) -> list[ServerStatus]:
        catalog = self.catalog
        out = []
        for name, s in sorted(self._servers.items()):
            status = s.status(catalog.by_server(name), catalog.conflicts.get(name, ()))
            withheld = catalog.withheld.get(name, ())  # upstream tool names: masked too
            masked = tuple(redact(w, s.connection.secrets) for w in withheld)
            status = replace(status, withheld=masked)
            governor = self._governors.get(name)
            if governor is not None and _limited(governor.spec):
                status.extra["limits"] = governor.snapshot()
            if s.spec.scope == "session":
                status.extra["session_processes"] = {
                    "open": sum(name in per for per in self._sessions.values()),
                    "refused": self.session_refusals[name],
                }
            out.append(status)
        return out

    def supervisor(self, name: str) -> Supervisor | None:
        return self._servers.get(name)

    # --- calls --------------------------------------------------------------------------------

    async def call(
        self, name: str, arguments: dict[str, Any], *, session: str | None = None
    ) -> mcp_types.CallToolResult:
        """Call an exposed tool. Never raises for a tool problem: errors come back as results
        whose text is a sentence the agent can say."""
        started = time.monotonic()
        entry = self.catalog.entries.get(name)
        if entry is None:
            return self._finish(None, name, "unknown", started, arguments, session,
                                error_result(results.unknown_tool(name)))  # fmt: skip
        supervisor = self._servers.get(entry.server)
        if supervisor is None:  # removed since the catalog was built
            return self._finish(None, name, "unknown", started, arguments, session,
                                error_result(results.unknown_tool(name)))  # fmt: skip
        own_session = session if supervisor.spec.scope == "session" else None
        if own_session is not None:
            own = self._session_supervisor(entry.server, own_session)
            if own is None:
                self.session_refusals[entry.server] += 1
                text = results.speakable(entry.server, entry.upstream, (
                    f"{self.max_session_processes} conversations already have a connection of"
                    " their own open, the most allowed; try again once one has ended"))  # fmt: skip
                return self._finish(supervisor, entry.upstream, "rejected:sessions", started,
                                    arguments, session, error_result(text))  # fmt: skip
            supervisor = own
            self._using[supervisor] += 1  # not idle while a call waits for it or runs
        governor = self._governors[entry.server]
        self.in_flight += 1
        try:
            if own_session is not None:
                await supervisor.wait_ready(supervisor.spec.timeouts.connect)
            result = await governor.call(
                entry.upstream, arguments, lambda: supervisor.call(entry.upstream, arguments)
            )
        except Rejected as e:
            return self._finish(supervisor, entry.upstream, f"rejected:{e.reason}", started,
                                arguments, session, error_result(str(e)))  # fmt: skip
        except Unavailable as e:
            outcome = e.reason
            return self._finish(supervisor, entry.upstream, outcome, started, arguments, session,
                                error_result(str(e)))  # fmt: skip
        finally:
            self.in_flight -= 1
            if own_session is not None:
                self._release(own_session, entry.server, supervisor)
        result = capped(result, supervisor.spec.limits.max_output_bytes)
        outcome = "error" if result.is_error else "ok"
        return self._finish(
            supervisor, entry.upstream, outcome, started, arguments, session, result
        )

    def _finish(
        self,
        supervisor: Supervisor | None,
        tool: str,
        outcome: str,
        started: float,
        arguments: dict[str, Any],
        session: str | None,
        result: mcp_types.CallToolResult,
    ) -> mcp_types.CallToolResult:
        if self.observer is not None:
            text = text_of(result)
            secrets = supervisor.connection.secrets if supervisor is not None else frozenset()
            self.observer(
                CallEvent(
                    server=supervisor.name if supervisor is not None else "",
                    tool=tool,
                    outcome=outcome,
                    seconds=time.monotonic() - started,
                    bytes_in=len(json.dumps(arguments, default=str).encode()),
                    bytes_out=len(text.encode()),
                    arguments=arguments,
                    result_text=redact(text, secrets),
                    session=session,
                    secrets=secrets,
                )
            )
        return result

    def _session_supervisor(self, server: str, session: str) -> Supervisor | None:
        """`scope: session`: a connection of its own per hub session, opened on first use;
        None when `max_session_processes` are open already."""
        per = self._sessions.get(session, {})
        supervisor = per.get(server)
        if supervisor is None:
            if sum(len(p) for p in self._sessions.values()) >= self.max_session_processes:
                return None
            per = self._sessions.setdefault(session, per)
            shared = self._servers[server]
            supervisor = Supervisor(
                server, shared.spec, shared.connection, on_change=lambda: None,
                warden=self.warden, timing=self.timing, mode=self.mode,
            )  # fmt: skip
            supervisor.start()
            per[server] = supervisor
        return supervisor

    async def close_session(self, session: str) -> None:
        per = self._sessions.pop(session, {})
        for server in per:
            self._cancel_idle((session, server))
        await asyncio.gather(*(s.stop() for s in per.values()))

    def _release(self, session: str, server: str, supervisor: Supervisor) -> None:
        self._using[supervisor] -= 1
        if self._using[supervisor] <= 0:
            del self._using[supervisor]
            self._touch(session, server, supervisor)

    def _touch(self, session: str, server: str, supervisor: Supervisor) -> None:
        """(Re)start the idle clock of a session's own connection."""
        self._cancel_idle((session, server))
        if self._sessions.get(session, {}).get(server) is not supervisor:
            return  # closed meanwhile
        self._idle_timers[(session, server)] = asyncio.get_running_loop().call_later(
            self.session_idle, self._idle, session, server, supervisor
        )

    def _cancel_idle(self, key: tuple[str, str]) -> None:
        timer = self._idle_timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _idle(self, session: str, server: str, supervisor: Supervisor) -> None:
        """Close a session's own connection unused for `session_idle` seconds."""
        self._idle_timers.pop((session, server), None)
        per = self._sessions.get(session, {})
        if per.get(server) is not supervisor:
            return
        if self._using[supervisor]:
            return  # the last call to end starts the clock again
        del per[server]
        if not per:
            del self._sessions[session]
        task = asyncio.get_running_loop().create_task(supervisor.stop())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
