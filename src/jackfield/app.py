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
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from jackfield.core.desired import Snapshot
from jackfield.core.governance import arguments_hash
from jackfield.core.status import AgentStatus, Status, utcnow
from jackfield.reconciler import PassResult, Reconciler
from jackfield.settings import Settings, agent_reason, environment
from jackfield.shell.http import StatusServer
from jackfield.shell.hub import ToolHub
from jackfield.shell.logs import configure_logging, register_secrets
from jackfield.shell.manager import CallEvent, ServerManager
from jackfield.shell.metrics import Metrics
from jackfield.shell.persistence import Persistence
from jackfield.shell.store import AuditRecord
from jackfield.shell.text_link import TextLinkAddress
from jackfield.shell.watcher import ConfigWatcher
from jackfield.shell.worker import Worker, WorkerOptions

log = logging.getLogger(__name__)


class App:
    """One jackfield process. `run()` returns the exit code."""

    def __init__(
        self, settings: Settings, *, agent: bool = True, text_link: TextLinkAddress | None = None
    ) -> None:
        self.settings = settings
        self.env = environment()
        self.metrics = Metrics(servers=lambda: self.manager.statuses(), agent=self._agent_metrics)
        self.manager = ServerManager(observer=self._on_call)
        self.persistence = Persistence(
            settings.database_url,
            instance_id=settings.instance_id,
            audit_retention=timedelta(days=settings.audit_retention_days),
            servers=self.manager.statuses,
        )
        token = settings.hub_token.get_secret_value() if settings.hub_token else None
        self.hub_token = token or secrets.token_urlsafe(32)
        self.hub = ToolHub(
            self.manager, host=settings.hub_host, port=settings.hub_port, token=self.hub_token
        )
        self.reconciler = Reconciler(
            config_dir=settings.config_dir,
            env=self.env,
            target=self.manager,
            store=self.persistence,
            instance_id=settings.instance_id,
            allow_empty=settings.allow_empty,
            resync_interval=settings.resync_interval,
        )
        self.persistence.catch_up.append(self.reconciler.resync_store)
        self.watcher = ConfigWatcher(
            settings.config_dir,
            self._on_file_event,
            debounce_ms=settings.debounce_ms,
            force_polling=settings.force_polling,
        )
        status_token = settings.status_token.get_secret_value() if settings.status_token else None
        self.status_server = StatusServer(
            self, self.metrics, host=settings.status_host, port=settings.status_port,
            token=status_token,
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
        self.reconciler.listeners.append(self.hub.set_snapshot)
        self.reconciler.pass_listeners.append(self._on_pass)
        register_secrets(
            s.get_secret_value()
            for s in (settings.hub_token, settings.status_token, settings.livekit_api_key,
                      settings.livekit_api_secret, settings.openai_api_key)
            if s is not None
        )  # fmt: skip
        register_secrets([self.hub_token])

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
            return False, f"agent worker failed: {self.worker.reason}"
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
        from jackfield.core.connection import resolve

        self._first_applied.set()
        if self.worker is not None:
            from jackfield.core.dispatch import livekit_agent_name

            self.worker.wanted_agent_name = livekit_agent_name(snapshot.agent.document)
        for placed in snapshot.servers.values():
            if placed.document.spec.enabled:
                register_secrets(resolve(placed.document.spec, self.env).secrets)
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

    def _on_call(self, event: CallEvent) -> None:
        self.metrics.tool_call(event.server, event.tool, event.outcome, event.seconds)
        if event.outcome.startswith("rejected:"):
            self.metrics.rejected(event.server, event.outcome.split(":", 1)[1])
        spec = self.manager.specs().get(event.server)
        full = spec is not None and spec.audit == "full"
        self.persistence.audit(
            AuditRecord(
                at=utcnow(),
                agent_session=event.session if (event.session or "").startswith("job-") else None,
                hub_session=event.session,
                server=event.server,
                tool=event.tool,
                duration_ms=event.seconds * 1000,
                outcome=event.outcome,
                bytes_in=event.bytes_in,
                bytes_out=event.bytes_out,
                arguments_hash=arguments_hash(event.arguments),
                arguments=_redacted_json(event.arguments, event.secrets) if full else None,
                result=_redacted_text(event.result_text) if full else None,
            )
        )

    async def _publish_sessions(self) -> None:
        """Gauges sampled every second, and the reconciler's timer resyncs into their counter
        (SIGHUP resyncs are counted as they happen)."""
        counted = 0
        while True:
            await asyncio.sleep(1.0)
            hub = self.hub.status()
            self.metrics.set_sessions(hub=hub.sessions, agent=self.hub.agent_sessions())
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
        self._install_signals()
        if self.stop_requested_early():
            log.info("shutdown requested before start; stopped")
            return 0
        async with self.manager:
            await self.status_server.start()
            await self.hub.start()
            log.info("status on %s, hub on %s", self.status_server.url, self.hub.url)
            if self.agent.reason:
                log.info("agent off: %s", self.agent.reason)
            spawn = asyncio.create_task
            self._tasks = [
                spawn(self.reconciler.run(), name="reconciler"),
                spawn(self.watcher.run(), name="watcher"),
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
        log.info("stopped")
        return 0

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


def _redacted_text(text: str | None) -> str | None:
    """A result for `audit: full`: the manager masked the called server's secrets; mask every
    other registered secret too (a server may echo another's)."""
    from jackfield.shell import logs

    return None if text is None else logs.redact(text)


def _redacted_json(arguments: dict[str, Any], secrets: frozenset[str]) -> str:
    """Arguments for `audit: full`, with the server's and every registered secret masked in
    each string before encoding (a secret that JSON escapes would not match afterwards)."""
    from jackfield.core.connection import redact
    from jackfield.core.governance import redacted_json
    from jackfield.shell import logs

    return redacted_json(arguments, lambda text: logs.redact(redact(text, secrets)))
