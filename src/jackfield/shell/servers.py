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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import mcp_types

from jackfield.core import tool_results as results
from jackfield.core.catalog import Catalog, CatalogChange, Entry, build, compare, server_entries
from jackfield.core.connection import Connection, redact
from jackfield.core.limits import server_limits
from jackfield.core.status import ServerStatus, VoiceStatus
from jackfield.core.voice import CONFIRMATION_META, confirmation_question, tool_title
from jackfield.shell.call_channel import NO_CHANNEL, CallChannel, VoiceCounts
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
    """ok | error | unavailable | timeout | cancelled | declined | rejected:busy |
    rejected:rate | rejected:sessions | unknown. `cancelled`: the caller cancelled the call
    (the upstream request was cancelled too); `declined`: the caller said no (or nothing) when
    asked to confirm, and no call was made."""
    seconds: float
    bytes_in: int
    bytes_out: int
    arguments: dict[str, Any]
    result_text: str
    session: str | None
    secrets: frozenset[str]
    confirmation: Mapping[str, str] | None = None
    """The caller was asked first: {"question": ..., "answer": "yes" | "no" | "timeout",
    "asked": the question without its arguments (for audit rows that keep no arguments)}."""


Refusal = Literal["no", "timeout"]
MAX_QUESTION = 500
"""Characters of a confirmation question kept for the audit row."""


def _asked(entry: Entry, confirmation: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """A confirmation with the question as it reads without its arguments ("Should I delete a
    note? ..."), for audit rows that keep no arguments."""
    if confirmation is None:
        return None
    title = tool_title(entry.upstream, entry.annotations, entry.title)
    return {**confirmation, "asked": confirmation_question(title, {})}


def confirmation_of(meta: Mapping[str, Any] | None) -> dict[str, str] | None:
    """A call's CONFIRMATION_META (the job asked the caller and heard a yes), or None when the
    call carries none or one that is not a question answered yes."""
    value = (meta or {}).get(CONFIRMATION_META)
    if not isinstance(value, Mapping):
        return None
    question, answer = value.get("question"), value.get("answer")
    if not isinstance(question, str) or answer != "yes":
        return None
    return {"question": question[:MAX_QUESTION], "answer": "yes"}


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


@dataclass(frozen=True)
class _Call:
    """One call on its way through the manager, for its CallEvent."""

    tool: str
    arguments: dict[str, Any]
    session: str | None
    started: float
    confirmation: Mapping[str, str] | None


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
        self.voice: dict[str, VoiceCounts] = {}
        """Per server: what the voice features saw (progress, cancellations, confirmations,
        elicitations, sampling refusals); its supervisors count into it."""
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
        self.voice.pop(name, None)
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
            timing=self.timing, mode=self.mode, voice=self.voice.setdefault(name, Counter()),
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
            status = replace(status, voice=VoiceStatus.of(s.voice))
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
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        session: str | None = None,
        channel: CallChannel = NO_CHANNEL,
        confirmation: Mapping[str, str] | None = None,
    ) -> mcp_types.CallToolResult:
        """Call an exposed tool. Never raises for a tool problem: errors come back as results
        whose text is a sentence the agent can say. The server's progress and questions during
        the call go to `channel`; `confirmation` (the caller said yes to this question) goes on
        the audit row.

        Raises:
            asyncio.CancelledError: the caller cancelled; the upstream request is cancelled and
                the call recorded as `cancelled`.
        """
        started = time.monotonic()
        call = _Call(name, arguments, session, started, confirmation)
        entry = self.catalog.entries.get(name)
        if entry is None:
            return self._finish(None, call, "unknown", error_result(results.unknown_tool(name)))
        supervisor = self._servers.get(entry.server)
        if supervisor is None:  # removed since the catalog was built
            return self._finish(None, call, "unknown", error_result(results.unknown_tool(name)))
        call = replace(call, tool=entry.upstream, confirmation=_asked(entry, confirmation))
        if confirmation is not None:
            supervisor.voice["confirmation", "yes"] += 1
        own_session = session if supervisor.spec.scope == "session" else None
        if own_session is not None:
            own = self._session_supervisor(entry.server, own_session)
            if own is None:
                self.session_refusals[entry.server] += 1
                text = results.speakable(entry.server, entry.upstream, (
                    f"{self.max_session_processes} conversations already have a connection of"
                    " their own open, the most allowed; try again once one has ended"))  # fmt: skip
                return self._finish(supervisor, call, "rejected:sessions", error_result(text))
            supervisor = own
            self._using[supervisor] += 1  # not idle while a call waits for it or runs
        governor = self._governors[entry.server]
        upstream = supervisor
        self.in_flight += 1
        try:
            if own_session is not None:
                await supervisor.wait_ready(supervisor.spec.timeouts.connect)
            result = await governor.call(
                entry.upstream, arguments, lambda: upstream.call(entry.upstream, arguments, channel)
            )
        except Rejected as e:
            return self._finish(supervisor, call, f"rejected:{e.reason}", error_result(str(e)))
        except Unavailable as e:
            return self._finish(supervisor, call, e.reason, error_result(str(e)))
        except asyncio.CancelledError:
            supervisor.voice["cancellation", "cancelled"] += 1
            self._finish(supervisor, call, "cancelled", error_result("The call was cancelled."))
            raise
        finally:
            self.in_flight -= 1
            if own_session is not None:
                self._release(own_session, entry.server, supervisor)
        result = capped(result, supervisor.spec.limits.max_output_bytes)
        return self._finish(supervisor, call, "error" if result.is_error else "ok", result)

    def confirmation_refused(
        self, name: str, question: str, answer: Refusal, *, session: str | None = None
    ) -> bool:
        """The caller said no (or nothing) when asked to confirm a call of `name`, so it was
        not made: counted for its server, recorded as a `declined` call. False when `name` is
        not in the catalog (nothing is recorded)."""
        entry = self.catalog.entries.get(name)
        supervisor = self._servers.get(entry.server) if entry is not None else None
        if entry is None or supervisor is None:
            return False
        supervisor.voice["confirmation", answer] += 1
        asked = _asked(entry, {"question": question[:MAX_QUESTION], "answer": answer})
        call = _Call(entry.upstream, {}, session, time.monotonic(), asked)
        text = f"Not called: the caller was asked and the answer was {answer}."
        self._finish(supervisor, call, "declined", error_result(text))
        return True

    def _finish(
        self,
        supervisor: Supervisor | None,
        call: _Call,
        outcome: str,
        result: mcp_types.CallToolResult,
    ) -> mcp_types.CallToolResult:
        if self.observer is not None:
            text = text_of(result)
            secrets = supervisor.connection.secrets if supervisor is not None else frozenset()
            confirmation = call.confirmation
            if confirmation is not None and "question" in confirmation:
                # the question repeats the arguments: masked like them
                confirmation = {**confirmation,
                                "question": redact(confirmation["question"], secrets)}  # fmt: skip
            self.observer(
                CallEvent(
                    server=supervisor.name if supervisor is not None else "",
                    tool=call.tool,
                    outcome=outcome,
                    seconds=time.monotonic() - call.started,
                    bytes_in=len(json.dumps(call.arguments, default=str).encode()),
                    bytes_out=len(text.encode()),
                    arguments=call.arguments,
                    result_text=redact(text, secrets),
                    session=call.session,
                    secrets=secrets,
                    confirmation=confirmation,
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
                warden=self.warden, timing=self.timing, mode=self.mode, voice=shared.voice,
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
