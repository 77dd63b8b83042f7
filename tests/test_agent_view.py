"""The agent view jobs are built from, the realtime cool-down, and how the worker's health and
the fallbacks show in the dashboard and the metrics. Pure parts, plain tables."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from jackfield.core.agent_view import RealtimeCooldown, agent_view
from jackfield.core.dashboard import render
from jackfield.core.desired import Snapshot, build_snapshot
from jackfield.core.loading import SourceFile
from jackfield.core.status import AgentStatus
from jackfield.shell.metrics import Metrics
from tests.support.status import HOSTILE, sample_status

AGENT = (
    "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
    "spec:\n  instructions: Be brief.\n  greeting: Hello.\n"
)
SERVER = (
    "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: time}\n"
    "spec: {command: mcp-server-time, prompt: Use the clock.}\n"
)


def snapshot(agent: str = AGENT) -> Snapshot:
    files = [SourceFile("agent.yaml", agent.encode()), SourceFile("servers.d/t.yaml",
                                                                  SERVER.encode())]  # fmt: skip
    return build_snapshot(files, {})


def test_the_view_holds_the_spec_and_the_instructions_of_ready_servers_only() -> None:
    snap = snapshot()
    idle = agent_view(snap, ready=set())
    ready = agent_view(snap, ready={"time"})
    assert idle.spec["greeting"] == "Hello." and idle.spec["llm"]["mode"] == "realtime"
    assert idle.instructions == "Be brief."
    assert ready.instructions == "Be brief.\n\nUse the clock."
    assert idle.revision != ready.revision
    assert agent_view(snap, ready=set()).revision == idle.revision


@pytest.mark.parametrize(
    ("change", "moves"),
    [
        (AGENT.replace("Hello.", "Hi."), True),  # the greeting: new sessions differ
        (AGENT + "  llm: {mode: pipeline, model: gpt-4o-mini}\n", True),
        (AGENT.replace("Be brief.", "Be brief.  "), False),  # the same text once stripped
    ],
)
def test_the_revision_moves_with_what_a_new_session_is_built_from(change: str, moves: bool) -> None:
    before = agent_view(snapshot(), ready=set())
    after = agent_view(snapshot(change), ready=set())
    assert (before.revision != after.revision) is moves
    cooled = agent_view(snapshot(), ready=set(), realtime=False)
    assert cooled.revision != before.revision


@pytest.mark.parametrize(
    ("failures_at", "now", "active"),
    [
        ([0.0, 1.0], 2.0, False),  # two are not enough
        ([0.0, 1.0, 2.0], 2.0, True),  # the third within the window starts it
        ([0.0, 1.0, 2.0], 302.1, False),  # it ends after `cooldown` seconds
        ([0.0, 200.0, 400.0], 400.0, False),  # spread wider than the window: no cool-down
    ],
)
def test_the_realtime_cooldown_starts_after_repeated_failures_and_ends(
    failures_at: list[float], now: float, active: bool
) -> None:
    cooldown = RealtimeCooldown(failures=3, window=300.0, cooldown=300.0)
    started = [cooldown.failed(t) for t in failures_at]
    assert cooldown.active(now) is active
    assert started.count(True) == (1 if cooldown.until is not None else 0)


def test_a_failure_during_the_cooldown_does_not_extend_it() -> None:
    cooldown = RealtimeCooldown(failures=1, window=10.0, cooldown=10.0)
    assert cooldown.failed(0.0) is True
    assert cooldown.failed(5.0) is False
    assert cooldown.until == 10.0


def agent_status(**worker: object) -> AgentStatus:
    return AgentStatus(
        enabled=True, sessions=2, worker={"state": "Failed", "agent_name": "", "jobs": 0, **worker},
        fallbacks={"realtime_unavailable": 3},
    )  # fmt: skip


def test_the_dashboard_shows_a_failed_worker_with_its_reason_escaped_and_the_fallbacks() -> None:
    status = replace(sample_status(), agent=agent_status(reason=f"cannot reach {HOSTILE}"))
    page = render(status)
    assert "LiveKit worker" in page
    assert '<span class="badge bad">Failed</span>' in page
    assert HOSTILE not in page, "escaped"
    assert "fallbacks: realtime_unavailable 3" in page


def test_the_metrics_carry_the_worker_state_and_the_fallbacks(tmp_path: Path) -> None:
    metrics = Metrics(agent=lambda: ("Registered", {"realtime_failed": 2}))
    text = metrics.render().decode()
    assert 'jackfield_agent_worker_state{state="Registered"} 1.0' in text
    assert 'jackfield_agent_worker_state{state="Failed"} 0.0' in text
    assert 'jackfield_agent_fallbacks_total{reason="realtime_failed"} 2.0' in text
    assert "jackfield_agent_worker_state{" not in Metrics().render().decode(), "no worker"
