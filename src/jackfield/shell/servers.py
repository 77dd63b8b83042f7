"""The live MCP manager: every server's supervisor, the merged tool catalog, and the call path.

The reconciler applies plans to it (`put`/`remove`, the `LiveTarget` protocol); the hub lists
`catalog` and forwards calls through `call`; status reads `statuses()`. Catalog changes are
coalesced to one rebuild per event-loop tick and announced to `listeners`.

Every call carries its session's caller context (core/caller_context.py): a server whose
`access` does not admit it is refused, `tools.arguments` are filled from it (whatever the LLM
sent for them is overridden), and an identity-scoped server gets a connection resolved with it
for that session. Values expanded from it are secrets like the environment's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import mcp_types
from opentelemetry.trace import INVALID_SPAN, Span

from jackfield.core import tool_results as results
from jackfield.core.caller_context import (
    ANONYMOUS,
    CallerContext,
    MissingContext,
    admits,
    hidden_servers,
    with_hidden,
)
from jackfield.core.catalog import Catalog, CatalogChange, Entry, build, compare, server_entries
from jackfield.core.connection import (
    Connection,
    connection_context,
    identity_scoped,
    outside_values,
    redact,
    resolve,
)
from jackfield.core.limits import server_limits
from jackfield.core.status import ServerStatus, VoiceStatus
from jackfield.core.voice import CONFIRMATION_META, confirmation_question, tool_title
from jackfield.shell import tracing
from jackfield.shell.call_channel import NO_CHANNEL, CallChannel, VoiceCounts
from jackfield.shell.gates import Governor, Rejected
from jackfield.shell.redaction import register_secrets
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
    rejected:rate | rejected:sessions | rejected:access | rejected:context | unknown.
    `cancelled`: the caller cancelled the call (the upstream request was cancelled too);
    `declined`: the caller said no (or nothing) when asked to confirm, and no call was made;
    `rejected:access`: the server's `access` does not admit the caller; `rejected:context`: a
    hidden argument or the session's connection needs a context value the session lacks."""
    seconds: float
    bytes_in: int
    bytes_out: int
    arguments: dict[str, Any]
    result_text: str
    session: str | None
    secrets: frozenset[str]
    """The connection's secrets and the values filled into hidden arguments: masked wherever
    the call is recorded."""
    confirmation: Mapping[str, str] | None = None
    """The caller was asked first: {"question": ..., "answer": "yes" | "no" | "timeout",
    "asked": the question without its arguments (for audit rows that keep no arguments)}."""
    caller: str | None = None
    """The caller's identity: the one context value the audit trail keeps (with `room`)."""
    room: str | None = None
    overridden: tuple[str, ...] = ()
    """Hidden arguments the LLM sent a value of its own for (names only)."""


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
    context: CallerContext = ANONYMOUS
    secrets: frozenset[str] = frozenset()
    """Values filled into its hidden arguments."""
    overridden: tuple[str, ...] = ()
    span: Span = INVALID_SPAN
    """The manager's span of the call (none for a declined one: it was never made)."""


def _traced(call: _Call, outcome: str, result: mcp_types.CallToolResult) -> None:
    """The outcome on the call's span; a refusal with jackfield's sentence. A failure of the
    server's (`error`, `unavailable`) keeps its words out: they may repeat the arguments."""
    span = call.span
    span.set_attributes({"jackfield.call.outcome": outcome,
                         "jackfield.call.overridden": len(call.overridden)})  # fmt: skip
    if outcome == "error":
        tracing.tool_result(span, result)
    elif outcome == "unavailable":
        tracing.error(span, outcome)
    elif outcome != "ok":
        tracing.error(span, outcome, text_of(result)[:200], secrets=call.secrets)


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
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.timing = timing
        self.env: Mapping[str, str] = dict(os.environ) if env is None else env
        """What `${VAR}` expands from in hidden arguments and in identity-scoped sessions'
        connections: the reconciler's env (app.build sets both)."""
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
        self.hidden_overridden: Counter[str] = Counter()
        """Per server: hidden argument values the LLM sent and the config overrode."""
        self._opened_with: dict[Supervisor, Mapping[str, str]] = {}
        """The context an identity-scoped session connection was resolved with."""
        self._retired: set[Supervisor] = set()
        """Session connections replaced (their session's context changed) while in use: each
        stops when its last call ends."""
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
        self.resolver: Callable[[str], Connection | None] = lambda name: None
        """A server's connection resolved anew, its secret files read now (the reconciler's,
        set by app.build): what credentials try after a 401."""

    async def __aenter__(self) -> ServerManager:
        await self.warden.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every server in parallel, then the warden."""
        sessions = [s for per in self._sessions.values() for s in per.values()]
        sessions += self._retired
        self._retired.clear()
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

    async def rotate(self, name: str, connection: Connection) -> None:
        """New secret values for a server's connection (a secret file changed). An HTTP
        server takes them from its next request on; a stdio or WebSocket one reconnects (its
        session connections too, as they finish their calls), and so does a Failed one."""
        current = self._servers.get(name)
        if current is None:
            return
        # a Failed server may have failed for want of these very values: it tries again
        if current.state == "Failed" or not current.rotate(connection):
            await self.put(name, current.spec, connection, reconnect=True)
            return
        for per in self._sessions.values():
            session = per.get(name)
            if session is None:
                continue
            values = self._opened_with.get(session)
            own = connection
            if values is not None:
                own = replace(resolve(current.spec, self.env, values), cwd=connection.cwd)
            if not session.rotate(own):
                del per[name]
                self._retire(session)

    async def remove(self, name: str) -> None:
        await self._stop_server(name)
        self._governors.pop(name, None)
        self.voice.pop(name, None)
        self._changed()

    async def _stop_server(self, name: str) -> None:
        supervisor = self._servers.pop(name, None)
        per_session = [per.pop(name) for per in self._sessions.values() if name in per]
        for stale in per_session:
            self._opened_with.pop(stale, None)
        for key in [key for key in self._idle_timers if key[1] == name]:
            self._cancel_idle(key)
        self._changed()  # its tools leave the catalog now, not after the (slow) shutdown
        await asyncio.gather(*(s.stop() for s in [supervisor, *per_session] if s is not None))

    def _supervisor(self, name: str, spec: MCPServerSpec, connection: Connection) -> Supervisor:
        return Supervisor(
            name, spec, connection, on_change=self._changed, warden=self.warden,
            timing=self.timing, mode=self.mode, voice=self.voice.setdefault(name, Counter()),
            fresh=lambda: self.resolver(name),
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
            hidden = s.spec.tools.hidden_names()
            if hidden:  # names only: the values may come from the caller
                status.extra["hidden_arguments"] = {
                    "names": hidden, "overridden": self.hidden_overridden[name]}  # fmt: skip
            out.append(status)
        return out

    def hidden_servers(self, context: CallerContext) -> frozenset[str]:
        """The servers whose `access` does not admit `context`: their tools are not for it."""
        return hidden_servers({n: s.spec.access for n, s in self._servers.items()}, context)

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
        context: CallerContext = ANONYMOUS,
    ) -> mcp_types.CallToolResult:
        """Call an exposed tool. Never raises for a tool problem: errors come back as results
        whose text is a sentence the agent can say. The server's progress and questions during
        the call go to `channel`; `confirmation` (the caller said yes to this question) goes on
        the audit row. `context` is the session's caller: it decides access, fills the hidden
        arguments and, for an identity-scoped server, the session's own connection.

        Raises:
            asyncio.CancelledError: the caller cancelled; the upstream request is cancelled and
                the call recorded as `cancelled`.
        """
        with tracing.span(f"jackfield.call {name}", attributes={"gen_ai.tool.name": name}) as span:
            return await self._call(
                span, name, arguments, session=session, channel=channel,
                confirmation=confirmation, context=context,
            )  # fmt: skip

    async def _call(
        self,
        span: Span,
        name: str,
        arguments: dict[str, Any],
        *,
        session: str | None,
        channel: CallChannel,
        confirmation: Mapping[str, str] | None,
        context: CallerContext,
    ) -> mcp_types.CallToolResult:
        started = time.monotonic()
        call = _Call(name, arguments, session, started, confirmation, context, span=span)
        entry = self.catalog.entries.get(name)
        if entry is None:
            return self._finish(None, call, "unknown", error_result(results.unknown_tool(name)))
        supervisor = self._servers.get(entry.server)
        if supervisor is None:  # removed since the catalog was built
            return self._finish(None, call, "unknown", error_result(results.unknown_tool(name)))
        call = replace(call, tool=entry.upstream, confirmation=_asked(entry, confirmation))
        if not admits(supervisor.spec.access, context):
            text = results.not_available(entry.upstream)
            return self._finish(supervisor, call, "rejected:access", error_result(text))
        templates = supervisor.spec.tools.arguments_for(entry.upstream)
        span.set_attributes({
            "jackfield.server.name": entry.server, "jackfield.tool.upstream": entry.upstream,
            "jackfield.call.hidden_arguments": len(templates),  # names and values stay out
        })  # fmt: skip
        if templates:
            try:
                arguments, overridden = with_hidden(arguments, templates, self.env, context)
            except MissingContext as e:
                text = results.missing_context(entry.upstream, e.name)
                return self._finish(supervisor, call, "rejected:context", error_result(text))
            filled = outside_values(templates.values(), self.env, context.values())
            register_secrets(filled)  # before anything can log the arguments
            self.hidden_overridden[entry.server] += len(overridden)
            call = replace(call, arguments=arguments, secrets=filled, overridden=overridden)
        if confirmation is not None:
            supervisor.voice["confirmation", "yes"] += 1
        own_session = session if supervisor.spec.scope == "session" else None
        if own_session is not None:
            try:
                own = self._session_supervisor(entry.server, own_session, context)
            except KeyError as e:
                text = results.missing_context(entry.upstream, str(e.args[0]))
                return self._finish(supervisor, call, "rejected:context", error_result(text))
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
        sent = arguments
        # the cache is the server's, over every session; an identity-scoped one answers each
        # caller as that caller, so one's answer must not be served to another
        scoped = own_session is not None and identity_scoped(supervisor.spec)
        keyed = {"arguments": sent, "session": own_session} if scoped else sent
        self.in_flight += 1
        try:
            if own_session is not None:
                await supervisor.wait_ready(supervisor.spec.timeouts.connect)
            result = await governor.call(
                entry.upstream, keyed, lambda: upstream.call(entry.upstream, sent, channel)
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
        self,
        name: str,
        question: str,
        answer: Refusal,
        *,
        session: str | None = None,
        context: CallerContext = ANONYMOUS,
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
        call = _Call(entry.upstream, {}, session, time.monotonic(), asked, context)
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
        _traced(call, outcome, result)
        if self.observer is not None:
            text = text_of(result)
            secrets = call.secrets
            if supervisor is not None:
                secrets |= supervisor.connection.secrets
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
                    caller=call.context.identity,
                    room=call.context.room,
                    overridden=call.overridden,
                )
            )
        return result

    def _session_supervisor(
        self, server: str, session: str, context: CallerContext
    ) -> Supervisor | None:
        """`scope: session`: a connection of its own per hub session, opened on first use;
        None when `max_session_processes` are open already. An identity-scoped server's is
        resolved with the session's context; when that context changed, a new one replaces it.

        Raises:
            KeyError: the connection names a context value the session lacks (nothing opened).
        """
        shared = self._servers[server]
        values = (connection_context(shared.spec, context.values())
                  if identity_scoped(shared.spec) else None)  # fmt: skip
        per = self._sessions.get(session, {})
        supervisor = per.get(server)
        if (
            supervisor is not None
            and values is not None
            and self._opened_with.get(supervisor) != values
        ):
            self._cancel_idle((session, server))
            del per[server]
            self._retire(supervisor)
            supervisor = None
        if supervisor is None:
            connection = shared.connection
            if values is not None:  # the reconciler made the shared one's cwd absolute: keep it
                connection = replace(resolve(shared.spec, self.env, values), cwd=connection.cwd)
            if sum(len(p) for p in self._sessions.values()) >= self.max_session_processes:
                return None
            per = self._sessions.setdefault(session, per)
            supervisor = Supervisor(
                server, shared.spec, connection, on_change=lambda: None,
                warden=self.warden, timing=self.timing, mode=self.mode, voice=shared.voice,
            )  # fmt: skip
            if values is not None:
                self._opened_with[supervisor] = values
            supervisor.start()
            per[server] = supervisor
        return supervisor

    async def close_session(self, session: str) -> None:
        per = self._sessions.pop(session, {})
        for server in per:
            self._cancel_idle((session, server))
        for supervisor in per.values():
            self._opened_with.pop(supervisor, None)
        await asyncio.gather(*(s.stop() for s in per.values()))

    def _retire(self, supervisor: Supervisor) -> None:
        """Stop a session connection no longer the session's: now, or when its calls end."""
        self._opened_with.pop(supervisor, None)
        if self._using[supervisor]:
            self._retired.add(supervisor)
            return
        task = asyncio.get_running_loop().create_task(supervisor.stop())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _release(self, session: str, server: str, supervisor: Supervisor) -> None:
        self._using[supervisor] -= 1
        if self._using[supervisor] <= 0:
            del self._using[supervisor]
            if supervisor in self._retired:
                self._retired.discard(supervisor)
                self._retire(supervisor)
                return
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
        self._retire(supervisor)
