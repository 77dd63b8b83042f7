"""Prometheus metrics, in a registry of our own (never the process-global default one).

Counters and histograms are fed by calls from the reconciler, the hub and the gates. What can
be read off the server statuses (up, state, restarts, tool count) is produced at scrape time by
a collector over `servers()`, so a pruned server's series vanish with it; `forget_server` drops
the counter and histogram series that only calls could have created.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from jackfield.core.status import SERVER_STATES, SERVING_STATES, ServerStatus

TOOL_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

_Labelled = Counter | Gauge | Histogram
_M = TypeVar("_M", Counter, Gauge, Histogram)


class _ServerCollector:
    """Series derived from the current server statuses, built anew on every scrape."""

    def __init__(self, servers: Callable[[], Sequence[ServerStatus]]) -> None:
        self._servers = servers

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        up, state, restarts, tools, queued, voice, overrides, tokens, expiry = self._families()
        for s in sorted(self._servers(), key=lambda s: s.name):
            up.add_metric([s.name], 1.0 if s.state in SERVING_STATES else 0.0)
            for candidate in SERVER_STATES:
                state.add_metric([s.name, candidate], 1.0 if s.state == candidate else 0.0)
            restarts.add_metric([s.name], float(s.restarts))
            tools.add_metric([s.name], float(len(s.tools)))
            # only servers with limits have gates (and so a queue)
            gates = s.extra.get("limits", {}).get("queued")
            if gates is not None:
                queued.add_metric([s.name], float(sum(gates.values())))
            for (kind, outcome), count in sorted(s.voice.counts().items()):
                voice.add_metric([s.name, kind, outcome], float(count))
            hidden = s.extra.get("hidden_arguments")  # only servers with hidden arguments
            if hidden is not None:
                overrides.add_metric([s.name], float(hidden.get("overridden", 0)))
            auth = s.extra.get("auth")  # only servers with spec.auth
            if auth is not None and auth["kind"].startswith("oauth"):
                tokens.add_metric([s.name, "ok"], float(auth["refreshes"]))
                tokens.add_metric([s.name, "failed"], float(auth["failures"]))
                if auth.get("expires_at_seconds") is not None:
                    expiry.add_metric([s.name], float(auth["expires_at_seconds"]))
        return [up, state, restarts, tools, queued, voice, overrides, tokens, expiry]

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                "jackfield_server_up",
                "1 when the MCP server is connected and serving tools (Ready or Degraded).",
                labels=["server"],
            ),
            GaugeMetricFamily(
                "jackfield_server_state",
                "1 for the server's current state, 0 for the other states.",
                labels=["server", "state"],
            ),
            CounterMetricFamily(
                "jackfield_server_restarts",
                "Times the server's connection was restarted after a failure.",
                labels=["server"],
            ),
            GaugeMetricFamily(
                "jackfield_tools",
                "Tools the server currently contributes to the catalog.",
                labels=["server"],
            ),
            GaugeMetricFamily(
                "jackfield_tool_call_queue_depth",
                "Tool calls waiting for a concurrency slot (servers with limits only).",
                labels=["server"],
            ),
            CounterMetricFamily(
                "jackfield_voice_events",
                "What the voice features saw per server: kind progress (outcome notice),"
                " cancellation (cancelled), confirmation (yes, no, timeout), elicitation"
                " (accept, decline, cancel, refused), sampling (refused).",
                labels=["server", "kind", "outcome"],
            ),
            CounterMetricFamily(
                "jackfield_hidden_argument_overrides",
                "Hidden argument values the LLM sent and the config overrode (servers with"
                " tools.arguments only).",
                labels=["server"],
            ),
            CounterMetricFamily(
                "jackfield_auth_token_requests",
                "OAuth token requests per server (servers with spec.auth.oauth): outcome ok"
                " (a token obtained) or failed (refused or unreachable).",
                labels=["server", "outcome"],
            ),
            GaugeMetricFamily(
                "jackfield_auth_token_expiry_timestamp_seconds",
                "When the server's current OAuth access token expires (Unix time).",
                labels=["server"],
            ),
        )


WORKER_STATES = ("Starting", "Connecting", "Registered", "Unregistered", "Draining", "Failed",
                 "Stopped")  # fmt: skip


class _AgentCollector:
    """The LiveKit worker's state and the fallbacks its jobs reported, at scrape time."""

    def __init__(self, agent: Callable[[], tuple[str | None, Mapping[str, int]]]) -> None:
        self._agent = agent

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        state, fallbacks = self._families()
        current, counts = self._agent()
        if current is not None:
            for candidate in WORKER_STATES:
                state.add_metric([candidate], 1.0 if current == candidate else 0.0)
        for reason, count in sorted(counts.items()):
            fallbacks.add_metric([reason], float(count))
        return [state, fallbacks]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                "jackfield_agent_worker_state",
                "1 for the LiveKit worker's current state, 0 for the others (absent: no worker).",
                labels=["state"],
            ),
            CounterMetricFamily(
                "jackfield_agent_fallbacks",
                "Agent sessions that moved to the fallback pipeline, by reason.",
                labels=["reason"],
            ),
        )


class Metrics:
    """Every jackfield metric. Thread-safe; cheap enough to call on every tool call."""

    def __init__(
        self,
        servers: Callable[[], Sequence[ServerStatus]] = lambda: (),
        agent: Callable[[], tuple[str | None, Mapping[str, int]]] = lambda: (None, {}),
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._reload_ok = Gauge(
            "jackfield_config_last_reload_successful",
            "1 when the last reconcile pass succeeded, 0 when it failed.",
            registry=r,
        )
        self._reload_ts = Gauge(
            "jackfield_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reconcile pass.",
            registry=r,
        )
        self._reconciles = Counter(
            "jackfield_reconcile_total", "Reconcile passes by result.", ["result"], registry=r
        )
        self._reconcile_seconds = Histogram(
            "jackfield_reconcile_duration_seconds", "Duration of reconcile passes.", registry=r
        )
        self._watch_events = Counter(
            "jackfield_watch_events_total", "Config dir change batches seen.", registry=r
        )
        self._resyncs = Counter(
            "jackfield_resync_total", "Periodic safety-net rescans.", registry=r
        )
        self._revision = Gauge(
            "jackfield_applied_revision_info",
            "The applied config revision, as a label; always 1.",
            ["revision"],
            registry=r,
        )
        self._calls = Counter(
            "jackfield_tool_calls_total",
            "Tool calls by server and outcome.",
            ["server", "outcome"],
            registry=r,
        )
        self._call_seconds = Histogram(
            "jackfield_tool_call_duration_seconds",
            "Duration of tool calls.",
            ["server"],
            buckets=TOOL_CALL_BUCKETS,
            registry=r,
        )
        self._rejected = Counter(
            "jackfield_tool_calls_rejected_total",
            "Tool calls refused before reaching the server, by reason.",
            ["server", "reason"],
            registry=r,
        )
        self._hub_sessions = Gauge(
            "jackfield_hub_sessions", "Open MCP sessions on the tool hub.", registry=r
        )
        self._agent_sessions = Gauge(
            "jackfield_agent_sessions", "Live agent sessions (rooms).", registry=r
        )
        r.register(_ServerCollector(servers))
        r.register(_AgentCollector(agent))
        ProcessCollector(namespace="jackfield", registry=r)
        self._lock = threading.Lock()
        self._by_server: dict[str, set[tuple[_Labelled, tuple[str, ...]]]] = {}

    def reconcile(
        self, *, result: str, seconds: float, revision: str | None, success: bool
    ) -> None:
        """Record one reconcile pass; `revision` is the applied revision after it (None: none)."""
        self._reconciles.labels(result).inc()
        self._reconcile_seconds.observe(seconds)
        self._reload_ok.set(1 if success else 0)
        if success:
            self._reload_ts.set(time.time())
        with self._lock:
            self._revision.clear()
            if revision is not None:
                self._revision.labels(revision).set(1)

    def watch_event(self) -> None:
        self._watch_events.inc()

    def resync(self) -> None:
        self._resyncs.inc()

    def tool_call(self, server: str, tool: str, outcome: str, seconds: float) -> None:
        """Count a finished call. `tool` is not a label: tool names are unbounded."""
        del tool
        self._labelled(self._calls, server, outcome).inc()
        self._labelled(self._call_seconds, server).observe(seconds)

    def rejected(self, server: str, reason: str) -> None:
        self._labelled(self._rejected, server, reason).inc()

    def set_sessions(self, *, hub: int, agent: int) -> None:
        self._hub_sessions.set(hub)
        self._agent_sessions.set(agent)

    def forget_server(self, name: str) -> None:
        """Drop every call-fed series labelled with this server (after it is pruned)."""
        with self._lock:
            for metric, values in self._by_server.pop(name, ()):
                metric.remove(*values)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def _labelled(self, metric: _M, server: str, *rest: str) -> _M:
        values = (server, *rest)
        with self._lock:
            self._by_server.setdefault(server, set()).add((metric, values))
            child: _M = metric.labels(*values)
        return child
