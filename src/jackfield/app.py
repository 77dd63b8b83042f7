"""The composition root: builds every part from Settings and runs them until SIGTERM/SIGINT.

    files --watcher--> reconciler --plan--> manager (MCP connections) --catalog--> hub --> agent
                            \\--> store          status server <-- all of them

Shutdown: readiness fails at once; the LiveKit worker drains (no new jobs; running jobs and
their tool calls get up to `shutdown_grace` seconds); then the watcher and controller stop, calls
still in flight finish within what is left of the grace, and the hub, every server and the store
close.
The store is optional at run time: if it is unreachable, jackfield serves from memory, says so
in status, and catches the store up when it returns (the files are the source of truth);
`shell.persistence` owns it, its health and the audit queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jackfield.core.activity import Activity
from jackfield.core.desired import Snapshot
from jackfield.core.lifecycle import DEFAULT_TIMING, Timing
from jackfield.core.status import AgentStatus, Status, utcnow
from jackfield.reconciler import PassResult, PassStore, Reconciler
from jackfield.settings import Settings, agent_reason, environment
from jackfield.shell.http import StatusServer
from jackfield.shell.hub import ToolHub
from jackfield.shell.logs import configure_logging
from jackfield.shell.metrics import Metrics
from jackfield.shell.persistence import Persistence, call_record, database_password
from jackfield.shell.redaction import redact, register_secrets
from jackfield.shell.servers import CallEvent, ServerManager
from jackfield.shell.store import sqlite_file
from jackfield.shell.text_link import TextLinkAddress
from jackfield.shell.tracing import configure_tracing, shutdown_tracing
from jackfield.shell.watcher import ConfigWatcher
from jackfield.shell.worker import Worker, WorkerOptions

log = logging.getLogger(__name__)


@dataclass
class Controller:
    """What every jackfield process wires the same way: the live MCP servers, the hub that
    serves them, the reconciler that applies the files to them, and the watcher that triggers
    it. Applied snapshots reach the hub; file events trigger passes."""

    manager: ServerManager
    hub: ToolHub
    reconciler: Reconciler
    watcher: ConfigWatcher | None

    @contextlib.asynccontextmanager
    async def running(self, *, first_pass: float | None = 60.0) -> AsyncIterator[Controller]:
        """The servers' manager open and the hub serving; the reconciler and the watcher in
        one TaskGroup for the block (after the first pass, bounded by `first_pass` seconds);
        then the tasks stop, the hub, and every server."""
        async with self.manager:
            await self.hub.start()
            runner = asyncio.create_task(self._run(), name="controller")
            try:
                async with asyncio.timeout(first_pass):
                    await _first_of(self.reconciler.wait_first_pass(), runner)
                yield self
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                await self.hub.stop()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.reconciler.run(), name="reconciler")
            if self.watcher is not None:
                group.create_task(self.watcher.run(), name="watcher")
                files = self.reconciler.files
                group.create_task(files.watch(self.reconciler.trigger), name="secret-files")


async def _first_of(waiting: Awaitable[None], runner: asyncio.Task[None]) -> None:
    """Wait for `waiting`; if the runner dies first, raise what killed it."""
    wait = asyncio.ensure_future(waiting)
    done, _ = await asyncio.wait({wait, runner}, return_when=asyncio.FIRST_COMPLETED)
    if wait not in done:
        wait.cancel()
        await runner  # raises what stopped the controller
        raise RuntimeError("the controller stopped before its first pass")


def build(
    settings: Settings,
    *,
    hub_token: str,
    env: Mapping[str, str] | None = None,
    store: PassStore | None = None,
    timing: Timing = DEFAULT_TIMING,
    observer: Callable[[CallEvent], None] | None = None,
    on_file_event: Callable[[], None] | None = None,
    watch: bool = True,
    tick_ms: int | None = None,
) -> Controller:
    """The controller parts from Settings (and what a caller swaps: the store, timings, the
    call observer, the file-event hook; `watch=False` leaves triggering to the caller)."""
    manager = ServerManager(
        timing=timing, observer=observer, process_tree=settings.process_tree,
        max_session_processes=settings.max_session_processes,
        session_idle=settings.session_process_idle,
    )  # fmt: skip
    hub = ToolHub(
        manager, host=settings.hub_host, port=settings.hub_port, token=hub_token,
        max_sessions=settings.hub_max_sessions, session_idle=settings.hub_session_idle,
    )  # fmt: skip
    reconciler = Reconciler(
        config_dir=settings.config_dir, env=environment() if env is None else env,
        target=manager, store=store, instance_id=settings.instance_id,
        allow_empty=settings.allow_empty, resync_interval=settings.resync_interval,
        parse_budget=settings.parse_budget,
    )  # fmt: skip
    manager.env = reconciler.env  # hidden arguments and identity-scoped sessions expand alike
    manager.resolver = reconciler.current_connection
    reconciler.listeners.append(hub.set_snapshot)
    watcher = None
    if watch:
        tick = {} if tick_ms is None else {"tick_ms": tick_ms}
        watcher = ConfigWatcher(
            settings.config_dir, on_file_event or reconciler.trigger,
            debounce_ms=settings.debounce_ms, force_polling=settings.force_polling,
            ignore=[db] if (db := sqlite_file(settings.database_url)) else [], **tick,
        )  # fmt: skip
    return Controller(manager, hub, reconciler, watcher)


class App:
    """One jackfield process. `run()` returns the exit code."""

    def __init__(
        self, settings: Settings, *, agent: bool = True, text_link: TextLinkAddress | None = None
    ) -> None:
        self.settings = settings
        self.env = environment()
        self.metrics = Metrics(servers=lambda: self.manager.statuses(), agent=self._agent_metrics)
        token = settings.hub_token.get_secret_value() if settings.hub_token else None
        self.hub_token = token or secrets.token_urlsafe(32)
        self.persistence = Persistence(
            settings.database_url,
            instance_id=settings.instance_id,
            audit_retention=timedelta(days=settings.audit_retention_days),
            servers=lambda: self.manager.statuses(),
        )
        self.controller = build(
            settings, hub_token=self.hub_token, env=self.env, store=self.persistence,
            observer=self._on_call, on_file_event=self._on_file_event,
        )  # fmt: skip
        self.manager = self.controller.manager
        self.hub = self.controller.hub
        self.reconciler = self.controller.reconciler
        assert self.controller.watcher is not None
        self.watcher = self.controller.watcher
        self.persistence.catch_up.append(self.reconciler.resync_store)
        status_token = settings.status_token.get_secret_value() if settings.status_token else None
        self.activity = Activity(mask=redact)
        """Recent calls, passes and state transitions for the dashboard (memory only)."""
        self.status_server = StatusServer(
            self, self.metrics, host=settings.status_host, port=settings.status_port,
            token=status_token, allowed_hosts=settings.status_allowed_hosts,
            activity=self.activity,
        )  # fmt: skip
        reason = agent_reason(settings, agent)
        self.agent = AgentStatus(enabled=reason is None, reason=reason)
        self.worker: Worker | None = None
        self.text_link = text_link
        """Jobs link to this text console (local runs and tests of an unregistered worker)."""
        self._first_applied = asyncio.Event()
        self.stopping = asyncio.Event()
        self.shutting_down = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._known_servers: set[str] = set()
        self.stop_requested_early: Callable[[], bool] = lambda: False
        """Set by the CLI: True when SIGTERM/SIGINT came before `run()` took the signals over."""
        self.reconciler.listeners.append(self._on_applied)
        self.reconciler.pass_listeners.append(self._on_pass)
        register_secrets(
            s.get_secret_value()
            for s in (settings.hub_token, settings.status_token, settings.livekit_api_key,
                      settings.livekit_api_secret, settings.openai_api_key)
            if s is not None
        )  # fmt: skip
        register_secrets([self.hub_token, *database_password(settings.database_url)])

    # --- StatusProvider -----------------------------------------------------------------------

    def status(self) -> Status:
        ready, _ = self.readiness()
        hub = self.hub.status()
        agent = AgentStatus(
            enabled=self.agent.enabled,
            reason=self.agent.reason,
            sessions=self.hub.agent_sessions(),
            instructions_revision=self.hub.instructions_revision,
            revision=self.hub.view.revision if self.hub.view is not None else None,
            sessions_by_revision=self.hub.agent_sessions_by_revision(),
            worker=self.worker.to_json() if self.worker is not None else None,
            fallbacks=dict(self.hub.fallbacks),
            realtime_cooldown_until=self._cooldown_until(),
            rejected_updates=self.hub.rejected_updates,
            last_rejected_update=self.hub.last_rejected_update,
        )
        return Status(
            ready=ready,
            config=self.reconciler.status,
            servers=tuple(self.manager.statuses()),
            agent=agent,
            hub=hub,
            watcher=self.watcher.status(),
            store=self.persistence.status(),
        )

    def liveness(self) -> tuple[bool, str]:
        for task in self._tasks:
            if task.done() and not self.shutting_down:
                return False, f"task {task.get_name()} stopped"
        if not self.watcher.alive():
            return False, "the watcher loop is wedged"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        if self.shutting_down:
            return False, "shutting down"
        if self.reconciler.status.applied_revision is None:
            return False, "no config applied yet"
        store_ready, why = self.persistence.readiness()
        if not store_ready:
            return False, why
        if not self.hub.serving:
            return False, "hub not serving"
        if self.worker is not None and self.worker.failed:
            return False, "agent worker failed (details in /status)"
        return True, "ok"

    def _agent_metrics(self) -> tuple[str | None, dict[str, int]]:
        return (self.worker.state if self.worker else None), dict(self.hub.fallbacks)

    def _cooldown_until(self) -> Any:
        from datetime import timedelta

        loop_now = asyncio.get_running_loop().time()
        if not self.hub.cooldown.active(loop_now) or self.hub.cooldown.until is None:
            return None
        return utcnow() + timedelta(seconds=self.hub.cooldown.until - loop_now)

    # --- wiring -------------------------------------------------------------------------------

    def _on_file_event(self) -> None:
        self.metrics.watch_event()
        self.reconciler.trigger()

    def _on_applied(self, snapshot: Snapshot) -> None:
        self._first_applied.set()
        if self.worker is not None:
            from jackfield.core.dispatch import livekit_agent_name

            self.worker.wanted_agent_name = livekit_agent_name(snapshot.agent.document)
        for gone in self._known_servers - set(snapshot.servers):
            self.metrics.forget_server(gone)
        self._known_servers = set(snapshot.servers)

    def _on_pass(self, result: PassResult) -> None:
        self.metrics.reconcile(
            result=result.outcome,
            seconds=result.seconds,
            revision=self.reconciler.status.applied_revision,
            success=result.outcome in ("applied", "noop"),
        )
        self.activity.reconciled(
            time.time(), outcome=result.outcome, revision=result.revision,
            changes=len(result.changes), errors=len(result.errors), seconds=result.seconds,
        )  # fmt: skip

    def _on_call(self, event: CallEvent) -> None:
        self.metrics.tool_call(event.server, event.tool, event.outcome, event.seconds)
        if event.outcome.startswith("rejected:"):
            self.metrics.rejected(event.server, event.outcome.split(":", 1)[1])
        spec = self.manager.specs().get(event.server)
        self.persistence.audit(call_record(event, full=spec is not None and spec.audit == "full"))
        self.activity.call(
            time.time(), server=event.server, tool=event.tool, outcome=event.outcome,
            seconds=event.seconds, session=event.session, caller=event.caller,
            mask=lambda text: redact(text, event.secrets),
        )  # fmt: skip

    async def _publish_sessions(self) -> None:
        """Gauges sampled every second, and the reconciler's timer resyncs into their counter
        (SIGHUP resyncs are counted as they happen)."""
        counted = 0
        while True:
            await asyncio.sleep(1.0)
            hub = self.hub.status()
            self.metrics.set_sessions(hub=hub.sessions, agent=self.hub.agent_sessions())
            self.activity.observe(time.time(), self.manager.statuses())
            for _ in range(self.reconciler.resyncs - counted):
                self.metrics.resync()
            counted = self.reconciler.resyncs

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: full resync")
        self.metrics.resync()
        self.reconciler.trigger()

    def request_stop(self) -> None:
        if not self.shutting_down:
            log.info("shutdown requested")
        self.shutting_down = True  # readiness fails from this moment
        self.stopping.set()

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> int:
        configure_logging(self.settings.log_level, self.settings.log_format)
        configure_tracing("jackfield")  # OTLP when OTEL_EXPORTER_OTLP_* say where
        self._install_signals()
        if self.stop_requested_early():
            log.info("shutdown requested before start; stopped")
            return 0
        try:
            await self._serve()
        finally:  # the last spans, however the run ended
            await asyncio.to_thread(shutdown_tracing)
        log.info("stopped")
        return 0

    async def _serve(self) -> None:
        """Until a stop is requested: the manager, the status server, the hub and the tasks."""
        async with self.manager:
            await self.status_server.start()
            await self.hub.start()
            log.info("status on %s, hub on %s", self.status_server.url, self.hub.url)
            if self.agent.reason:
                log.info("agent off: %s", self.agent.reason)
            # one TaskGroup: a task that dies of a bug takes the process down with its traceback
            # (the orchestrator restarts it) instead of leaving a half-alive controller
            async with asyncio.TaskGroup() as group:
                spawn = group.create_task
                self._tasks = [
                    spawn(self.reconciler.run(), name="reconciler"),
                    spawn(self.watcher.run(), name="watcher"),
                    spawn(self.reconciler.files.watch(self.reconciler.trigger), name="secrets"),
                    spawn(self.persistence.run(), name="store"),
                    spawn(self._publish_sessions(), name="metrics"),
                ]
                worker = spawn(self._run_worker(), name="agent") if self.agent.enabled else None
                try:
                    await self.stopping.wait()
                finally:
                    await self._shutdown(worker)
        await self.status_server.stop()
        await self.persistence.close()

    async def _run_worker(self) -> None:
        """The LiveKit worker, once the first snapshot says the agent's dispatch name."""
        from jackfield.core.dispatch import livekit_agent_name
        from jackfield.shell.agent import JobConfig, JobEntry  # livekit costs ~100 MB: only now

        await self._first_applied.wait()
        snapshot = self.reconciler.snapshot
        assert snapshot is not None
        s = self.settings
        config = JobConfig(
            hub_url=self.hub.url, hub_token=self.hub_token,
            openai_api_key=s.openai_api_key.get_secret_value() if s.openai_api_key else None,
            openai_base_url=s.openai_base_url, realtime_base_url=s.realtime_base_url,
            text_link=self.text_link,
            agent_spec=snapshot.agent.document.spec.model_dump(mode="json", by_alias=True),
        )  # fmt: skip
        options = WorkerOptions(
            ws_url=s.livekit_url,
            api_key=s.livekit_api_key.get_secret_value() if s.livekit_api_key else None,
            api_secret=s.livekit_api_secret.get_secret_value() if s.livekit_api_secret else None,
            agent_name=livekit_agent_name(snapshot.agent.document),
            unregistered=s.agent_unregistered, max_retry=s.livekit_max_retry,
            idle_processes=s.agent_idle_processes,
        )  # fmt: skip
        self.worker = Worker(options, JobEntry(config))
        await self.worker.run()

    async def _shutdown(self, worker: asyncio.Task[Any] | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace
        if self.worker is not None:
            await self.worker.drain(timeout=self.settings.shutdown_grace)
        if worker is not None:
            worker.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *([worker] if worker else []), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.hub.drain(), timeout=max(0.0, deadline - loop.time()))
        await self.hub.stop()
