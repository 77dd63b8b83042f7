"""The LiveKit worker: registers with LiveKit and runs each job in a process of its own.

A thin owner of livekit-agents' `AgentServer` that says what state it is in (for `/status`,
`/metrics`, `/readyz`), drains on shutdown, and preloads the OpenAI plugin into the forkserver so
that no job stalls its event loop importing it. `unregistered=True` runs it without a LiveKit
server: jobs then come only from `simulate()` (LiveKit's own `simulate_job(fake_job=True)`),
which is how `jackfield console` and the tests run the production job path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from jackfield.core.status import utcnow
from jackfield.shell.redaction import redact

log = logging.getLogger(__name__)

WorkerState = Literal["Starting", "Connecting", "Registered", "Unregistered", "Draining",
                      "Failed", "Stopped"]  # fmt: skip
PRELOAD = [
    "livekit.plugins.openai",
    "openai.types.realtime",
    "anyio._backends._asyncio",
    "anyio._core._sockets",
    "jackfield.shell.agent",
]
"""Imported once in the forkserver, so job processes start with them loaded: what a job would
otherwise import on its first connect or turn, stalling its event loop (the OpenAI plugin's
realtime types alone take over a second)."""


@dataclass(frozen=True)
class WorkerOptions:
    ws_url: str | None = None
    api_key: str | None = None
    api_secret: str | None = None
    agent_name: str = ""
    """LiveKit's dispatch rule: "" is automatic dispatch to every room, a name is explicit."""
    unregistered: bool = False
    max_retry: int = 16
    idle_processes: int | None = None
    """Warm job processes (None: LiveKit's default)."""


class Worker:
    def __init__(self, options: WorkerOptions, entry: Any) -> None:
        self.options = options
        self.entry = entry
        self.state: WorkerState = "Starting"
        self.reason: str | None = None
        self.since: datetime = utcnow()
        self.started = asyncio.Event()
        self.wanted_agent_name = options.agent_name
        """What the applied agent.yaml says now; a change applies at the next start."""
        self._server: Any = None

    def _set(self, state: WorkerState, reason: str | None = None) -> None:
        if state != self.state:
            reason = redact(reason) if reason else None  # LiveKit's error text, shown in status
            log.info("agent worker %s%s", state, f": {reason}" if reason else "")
            self.state, self.reason, self.since = state, reason, utcnow()

    @property
    def failed(self) -> bool:
        return self.state == "Failed"

    def jobs(self) -> int:
        return len(self._server.active_jobs) if self._server is not None else 0

    def to_json(self) -> dict[str, Any]:
        from jackfield.core.status import rfc3339

        document = {"state": self.state, "reason": self.reason, "since": rfc3339(self.since),
                    "agent_name": self.options.agent_name, "jobs": self.jobs()}  # fmt: skip
        if self.wanted_agent_name != self.options.agent_name:
            document["restart_needed"] = (
                f"agent.yaml dispatches as {self.wanted_agent_name or '(automatic)'}: the worker"
                " registers its name at start"
            )
        return document

    async def run(self) -> None:
        """Run until cancelled; a worker that cannot reach LiveKit ends `Failed` (no raise)."""
        import livekit.plugins.openai  # noqa: F401  (registers the plugin: preloaded below)

        from jackfield.shell.livekit_server import DrainingAgentServer

        o = self.options
        extra: dict[str, Any] = {}
        if o.idle_processes is not None:
            extra["num_idle_processes"] = o.idle_processes
        server = DrainingAgentServer(
            ws_url=o.ws_url or "", api_key=o.api_key, api_secret=o.api_secret, port=0,
            max_retry=o.max_retry, preload_modules=PRELOAD, **extra,
        )  # fmt: skip
        server.rtc_session(self.entry, agent_name=o.agent_name)
        server.on("worker_started", self._on_started)
        server.on("worker_registered", lambda *_: self._set("Registered"))
        self._server = server
        self._set("Connecting")
        try:
            await server.run(unregistered=o.unregistered)
            self._set("Stopped")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._set("Failed", f"{type(e).__name__}: {e}")
        finally:
            with contextlib.suppress(Exception):
                await server.aclose()
            if self.state not in ("Failed",):
                self._set("Stopped")

    def _on_started(self) -> None:
        if self.options.unregistered:
            self._set("Unregistered", "running without LiveKit: jobs come from simulate()")
        self.started.set()

    async def simulate(self, room: str = "console") -> None:
        """Launch one job in a new process without LiveKit (LiveKit's `simulate_job`)."""
        await self.started.wait()
        await self._server.simulate_job(room, fake_job=True)

    async def drain(self, timeout: float) -> bool:
        """Take no new jobs; wait up to `timeout` s for the running ones. True when they ended."""
        if self._server is None or self.state in ("Failed", "Stopped", "Starting"):
            return True
        self._set("Draining")
        try:
            await self._server.drain(timeout=timeout)
        except TimeoutError:
            log.warning("agent jobs still running after %.0f s; closing them", timeout)
            return False
        return True
