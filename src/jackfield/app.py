"""The composition root: builds every part from Settings and runs them until SIGTERM/SIGINT.

    files --watcher--> reconciler --plan--> manager (MCP connections) --catalog--> hub --> agent
                            \\--> store          status server <-- all of them

Shutdown: readiness fails at once; the watcher, controller and LiveKit worker stop; live tool
calls get up to `shutdown_grace` seconds; then the hub, every server and the store close.
The store is optional at run time: if it is unreachable, jackfield serves from memory, says so
in status, and catches the store up when it returns (the files are the source of truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
from datetime import timedelta
from typing import Any

from jackfield.core.desired import Snapshot
from jackfield.core.governance import arguments_hash
from jackfield.core.status import AgentStatus, Status, utcnow
from jackfield.reconciler import PassResult, Reconciler
from jackfield.settings import Settings, environment
from jackfield.shell.agent import agent_reason, run_worker
from jackfield.shell.http import StatusServer
from jackfield.shell.hub import ToolHub
from jackfield.shell.logs import configure_logging, register_secrets
from jackfield.shell.manager import CallEvent, ServerManager
from jackfield.shell.metrics import Metrics
from jackfield.shell.store import AuditRecord, PassRecord, Store
from jackfield.shell.watcher import ConfigWatcher

log = logging.getLogger(__name__)

STATE_SYNC_INTERVAL = 2.0
"""Seconds between writes of live server state and audit rows to the store."""
AUDIT_PRUNE_INTERVAL = 3600.0


class App:
    """One jackfield process. `run()` returns the exit code."""

    def __init__(self, settings: Settings, *, agent: bool = True) -> None:
        self.settings = settings
        self.env = environment()
        self.metrics = Metrics(servers=lambda: self.manager.statuses())
        self.manager = ServerManager(observer=self._on_call)
        self.store: Store | None = None
        self.store_message: str | None = "not opened yet"
        token = settings.hub_token.get_secret_value() if settings.hub_token else None
        self.hub_token = token or secrets.token_urlsafe(32)
        self.hub = ToolHub(
            self.manager, host=settings.hub_host, port=settings.hub_port, token=self.hub_token
        )
        self.reconciler = Reconciler(
            config_dir=settings.config_dir,
            env=self.env,
            target=self.manager,
            store=None,
            instance_id=settings.instance_id,
            allow_empty=settings.allow_empty,
            resync_interval=settings.resync_interval,
            make_record=PassRecord,
        )
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
        self.stopping = asyncio.Event()
        self.shutting_down = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._audit: list[AuditRecord] = []
        self._known_servers: set[str] = set()
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
        )
        return Status(
            ready=ready,
            config=self.reconciler.status,
            servers=tuple(self.manager.statuses()),
            agent=agent,
            hub=hub,
            watcher=self.watcher.status(),
            store={"state": "Ok" if self._store_ok() else "Degraded",
                   "message": self._store_problem()},
        )  # fmt: skip

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
        if not self._store_ok():
            return False, f"store unavailable: {self._store_problem()}"
        if not self.hub.serving:
            return False, "hub not serving"
        return True, "ok"

    def _store_ok(self) -> bool:
        return self.store is not None and self.reconciler.store_error is None

    def _store_problem(self) -> str | None:
        if self.store is None:
            return self.store_message
        return self.reconciler.store_error

    # --- wiring -------------------------------------------------------------------------------

    def _on_file_event(self) -> None:
        self.metrics.watch_event()
        self.reconciler.trigger()

    def _on_applied(self, snapshot: Snapshot) -> None:
        from jackfield.core.connection import resolve

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
        self._audit.append(
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
                result=event.result_text if full else None,
            )
        )

    async def _open_store(self) -> None:
        """Open the store, retrying in the background: jackfield serves from memory meanwhile."""
        delay = 1.0
        while self.store is None:
            try:
                self.store = await Store.open(
                    self.settings.database_url, instance_id=self.settings.instance_id
                )
            except Exception as e:
                self.store_message = f"{type(e).__name__}: {e}"
                log.warning("store unavailable (%s); retrying in %.0f s", self.store_message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.store_message = None
            self.reconciler.attach_store(self.store)

    async def _sync_store(self) -> None:
        """Live server state (only when it changed), audit rows, and retention."""
        last: Any = None
        pruned_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(STATE_SYNC_INTERVAL)
            if self.store is None:
                continue
            states = self.manager.statuses()
            key = [(s.name, s.state, s.restarts, s.tools, s.last_error) for s in states]
            batch, self._audit = self._audit, []
            try:
                if key != last:
                    await self.store.put_server_states(states)
                    last = key
                if batch:
                    await self.store.record_calls(batch)
                if loop.time() - pruned_at > AUDIT_PRUNE_INTERVAL:
                    keep = timedelta(days=self.settings.audit_retention_days)
                    await self.store.prune_audit(utcnow() - keep)
                    pruned_at = loop.time()
                if self.reconciler.store_error is not None:
                    await self.store.ping()
                    self.reconciler.store_error = None
                    self.reconciler.resync_store()
            except Exception as e:
                self._audit = batch[-10_000:] + self._audit  # bounded: keep the newest
                self.reconciler.store_error = f"{type(e).__name__}: {e}"

    async def _publish_sessions(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            hub = self.hub.status()
            self.metrics.set_sessions(hub=hub.sessions, agent=self.hub.agent_sessions())

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
                spawn(self._open_store(), name="store-open"),
                spawn(self._sync_store(), name="store-sync"),
                spawn(self._publish_sessions(), name="metrics"),
            ]
            worker = None
            if self.agent.enabled:
                worker = spawn(run_worker(self.settings, self.hub.url, self.hub_token),
                               name="agent")  # fmt: skip
            try:
                await self.stopping.wait()
            finally:
                await self._shutdown(worker)
        await self.status_server.stop()
        if self.store is not None:
            with contextlib.suppress(Exception):
                if self._audit:
                    await self.store.record_calls(self._audit)
            await self.store.close()
        log.info("stopped")
        return 0

    async def _shutdown(self, worker: asyncio.Task[Any] | None) -> None:
        for task in self._tasks:
            task.cancel()
        if worker is not None:
            worker.cancel()
        await asyncio.gather(*self._tasks, *([worker] if worker else []), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.hub.drain(), timeout=self.settings.shutdown_grace)
        await self.hub.stop()


def _redacted_json(arguments: dict[str, Any], secrets: frozenset[str]) -> str:
    """Arguments for `audit: full`, with the server's and every registered secret masked."""
    from jackfield.core.connection import redact
    from jackfield.shell import logs

    return logs.redact(redact(json.dumps(arguments, sort_keys=True, default=str), secrets))
