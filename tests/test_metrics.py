"""Metrics: the names and labels the docs promise, scrape-time server series, forgetting."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from jackfield.core.status import SERVER_STATES, ServerStatus
from jackfield.shell.metrics import Metrics
from tests.support.status import SERVERS, T0

Sample = tuple[str, frozenset[tuple[str, str]]]


def scrape(metrics: Metrics) -> dict[Sample, float]:
    """Every sample as {(name, labels): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def value(samples: dict[Sample, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: dict[Sample, float]) -> set[str]:
    return {name for name, _ in samples}


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.watch_event()
    assert value(scrape(a), "jackfield_watch_events_total") == 1.0
    assert value(scrape(b), "jackfield_watch_events_total") == 0.0


def test_a_successful_reconcile_is_counted_timed_and_labels_the_revision() -> None:
    m = Metrics()
    m.reconcile(result="applied", seconds=0.2, revision="sha256:aaa", success=True)
    m.reconcile(result="noop", seconds=0.01, revision="sha256:bbb", success=True)
    samples = scrape(m)
    assert value(samples, "jackfield_reconcile_total", result="applied") == 1.0
    assert value(samples, "jackfield_reconcile_total", result="noop") == 1.0
    assert value(samples, "jackfield_reconcile_duration_seconds_count") == 2.0
    assert value(samples, "jackfield_config_last_reload_successful") == 1.0
    assert (value(samples, "jackfield_config_last_reload_success_timestamp_seconds") or 0) > 0
    assert value(samples, "jackfield_applied_revision_info", revision="sha256:bbb") == 1.0
    assert value(samples, "jackfield_applied_revision_info", revision="sha256:aaa") is None


def test_a_failed_reconcile_keeps_the_last_success_time() -> None:
    m = Metrics()
    m.reconcile(result="applied", seconds=0.1, revision="sha256:aaa", success=True)
    succeeded_at = value(scrape(m), "jackfield_config_last_reload_success_timestamp_seconds")
    m.reconcile(result="failed", seconds=0.1, revision="sha256:aaa", success=False)
    samples = scrape(m)
    assert value(samples, "jackfield_config_last_reload_successful") == 0.0
    assert value(samples, "jackfield_config_last_reload_success_timestamp_seconds") == (
        succeeded_at
    )
    assert value(samples, "jackfield_reconcile_total", result="failed") == 1.0
    assert value(samples, "jackfield_applied_revision_info", revision="sha256:aaa") == 1.0


def test_no_applied_revision_means_no_revision_series() -> None:
    m = Metrics()
    m.reconcile(result="failed", seconds=0.1, revision=None, success=False)
    assert not [k for k in scrape(m) if k[0] == "jackfield_applied_revision_info"]


def test_calls_rejections_queues_sessions_and_events_are_exposed() -> None:
    limited = ServerStatus(
        "time", "stdio", "Ready", T0, extra={"limits": {"queued": {"*": 3, "t": 1}}}
    )
    m = Metrics(lambda: [limited])
    m.tool_call("time", "time_get_current_time", "ok", 0.03)
    m.tool_call("time", "time_get_current_time", "ok", 0.05)
    m.tool_call("time", "time_convert_time", "error", 2.0)
    m.rejected("time", "rate_limited")
    m.set_sessions(hub=2, agent=1)
    m.watch_event()
    m.resync()
    samples = scrape(m)
    assert value(samples, "jackfield_tool_calls_total", server="time", outcome="ok") == 2.0
    assert value(samples, "jackfield_tool_calls_total", server="time", outcome="error") == 1.0
    assert value(samples, "jackfield_tool_call_duration_seconds_count", server="time") == 3.0
    assert (
        value(samples, "jackfield_tool_call_duration_seconds_bucket", server="time", le="0.05")
        == 2.0
    )
    assert (
        value(samples, "jackfield_tool_calls_rejected_total", server="time", reason="rate_limited")
        == 1.0
    )
    assert value(samples, "jackfield_tool_call_queue_depth", server="time") == 4.0  # summed gates
    assert value(samples, "jackfield_hub_sessions") == 2.0
    assert value(samples, "jackfield_agent_sessions") == 1.0
    assert value(samples, "jackfield_watch_events_total") == 1.0
    assert value(samples, "jackfield_resync_total") == 1.0
    assert not [labels for _, labels in samples if any(k == "tool" for k, _ in labels)]


def test_server_series_follow_the_current_statuses() -> None:
    current = list(SERVERS)
    samples = scrape(Metrics(lambda: current))
    for s in SERVERS:
        up = 1.0 if s.state in ("Ready", "Degraded") else 0.0
        assert value(samples, "jackfield_server_up", server=s.name) == up
        assert value(samples, "jackfield_server_restarts_total", server=s.name) == s.restarts
        assert value(samples, "jackfield_tools", server=s.name) == len(s.tools)
        for state in SERVER_STATES:
            expected = 1.0 if state == s.state else 0.0
            assert value(samples, "jackfield_server_state", server=s.name, state=state) == expected

    current[:] = [s for s in SERVERS if s.name != "flaky"]
    samples = scrape(Metrics(lambda: current))
    assert not [labels for _, labels in samples if ("server", "flaky") in labels]
    assert value(samples, "jackfield_server_up", server="time") == 1.0


def test_forget_server_drops_only_that_servers_call_series() -> None:
    current = [ServerStatus("time", "stdio", "Ready", T0)]
    m = Metrics(lambda: current)
    for server in ("time", "gone"):
        m.tool_call(server, "t", "ok", 0.1)
        m.tool_call(server, "t", "timeout", 30.0)
        m.rejected(server, "concurrency")
    m.forget_server("gone")
    m.forget_server("never-seen")
    samples = scrape(m)
    assert not [labels for _, labels in samples if ("server", "gone") in labels]
    assert value(samples, "jackfield_tool_calls_total", server="time", outcome="timeout") == 1.0
    m.tool_call("gone", "t", "ok", 0.1)  # a server can come back after being forgotten
    assert value(scrape(m), "jackfield_tool_calls_total", server="gone", outcome="ok") == 1.0


def test_every_documented_metric_is_present() -> None:
    limited = ServerStatus("q", "stdio", "Ready", T0, extra={"limits": {"queued": {"*": 0}}})
    m = Metrics(lambda: [*SERVERS, limited])
    m.reconcile(result="applied", seconds=0.1, revision="sha256:x", success=True)
    m.tool_call("time", "t", "ok", 0.1)
    m.rejected("time", "rate_limited")
    families = {f.name for f in text_string_to_metric_families(m.render().decode())}
    assert {
        "jackfield_config_last_reload_successful",
        "jackfield_config_last_reload_success_timestamp_seconds",
        "jackfield_reconcile",
        "jackfield_reconcile_duration_seconds",
        "jackfield_watch_events",
        "jackfield_resync",
        "jackfield_applied_revision_info",
        "jackfield_server_up",
        "jackfield_server_state",
        "jackfield_server_restarts",
        "jackfield_tools",
        "jackfield_tool_calls",
        "jackfield_tool_call_duration_seconds",
        "jackfield_tool_calls_rejected",
        "jackfield_tool_call_queue_depth",
        "jackfield_hub_sessions",
        "jackfield_agent_sessions",
    } <= families
    assert all(name.startswith("jackfield_") for name in families)
