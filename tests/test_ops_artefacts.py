"""The ops artefacts in deploy/ hold to the code: alert rules promtool accepts and whose unit
tests prove each alert fires (and stays silent when healthy), a PrometheusRule carrying the same
groups, and a Grafana dashboard and rules that name only metrics and labels jackfield exports.

promtool comes with Debian's `prometheus` package; without it the promtool tests skip, except
in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jackfield.core.status import ServerStatus
from jackfield.shell.metrics import Metrics
from tests.support.status import SERVERS, T0

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus" / "jackfield-rules.yaml"
RULES_TESTS = REPO / "deploy" / "prometheus" / "jackfield-rules.test.yaml"
PROMETHEUS_RULE = REPO / "deploy" / "kubernetes" / "prometheusrule.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "jackfield-dashboard.json"
STATUS_DOC = REPO / "docs" / "status.md"

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PROMTOOL_TIMEOUT = 60.0
# labels Prometheus attaches to every scraped series (the scrape config's, and Kubernetes
# service discovery's relabelled ones), so a matcher on them is always meaningful
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container"})


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


PLAIN: dict[str, Any] = load_yaml(RULES)
OPERATOR: dict[str, Any] = load_yaml(PROMETHEUS_RULE)
UNIT_TESTS: dict[str, Any] = load_yaml(RULES_TESTS)
BOARD: dict[str, Any] = json.loads(DASHBOARD.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in PLAIN["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


# --- PromQL: which metrics an expression reads ----------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
_AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                           "count_values", "bottomk", "topk", "quantile"})  # fmt: skip
_FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_sum",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar",
    "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time",
})  # fmt: skip
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]
    """The label names its matchers use."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    at = 0
    while at < len(expr):
        m = _TOKEN.match(expr, at)
        assert m is not None, f"cannot read PromQL at {expr[at : at + 20]!r} in {expr!r}"
        assert m.lastgroup is not None
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
        at = m.end()
    return out


def selectors(expr: str) -> list[Selector]:
    """The metric selectors of a PromQL expression (or a Grafana `label_values(expr, label)`).

    Label names (in matchers, `by`/`without`/`on`/`ignoring`/`group_*` lists), functions,
    aggregations, keywords, strings, numbers, durations and Grafana variables are not metrics.

    Raises:
        AssertionError: the expression has a token PromQL does not know, or calls an unknown
            function (most likely a metric name followed by a parenthesis).
    """
    grafana = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.DOTALL)
    tokens = _tokens(grafana.group(1) if grafana else expr)
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":  # a selector without a metric name: its labels are still labels
            i = _skip_matchers(tokens, i)[0]
            continue
        if kind != "name":
            i += 1
            continue
        word = text.lower()
        if word in _LABEL_LISTS and following == "(":
            i = tokens.index((("op", ")")), i) + 1
        elif word in _KEYWORDS or word in _AGGREGATIONS:
            i += 1
        elif following == "(":
            assert text in _FUNCTIONS, f"unknown function {text}( in {expr!r}"
            i += 1
        elif following == "{":
            i, labels = _skip_matchers(tokens, i + 1)
            found.append(Selector(text, labels))
        else:
            found.append(Selector(text, frozenset()))
            i += 1
    return found


def _skip_matchers(tokens: list[tuple[str, str]], brace: int) -> tuple[int, frozenset[str]]:
    """From the `{` at `brace`: the index after its `}` and the label names matched."""
    close = tokens.index(("op", "}"), brace)
    inside = tokens[brace + 1 : close]
    labels = {
        text
        for (kind, text), (_, op) in zip(inside, inside[1:], strict=False)
        if kind == "name" and op in _MATCH_OPS
    }
    # a metric chosen by a matcher would escape the export check
    assert "__name__" not in labels, "name the metric before the braces, not with __name__"
    return close + 1, frozenset(labels)


PROMQL_CASES: list[tuple[str, dict[str, set[str]]]] = [
    ("up", {"up": set()}),
    ('rate(a_total{job=~"$job", outcome="x"}[$__rate_interval])', {"a_total": {"job", "outcome"}}),
    ("histogram_quantile(0.95, sum by (server, le) (rate(d_bucket[5m])))", {"d_bucket": set()}),
    (
        "sum(rate(x_sum[1m])) by (le) / sum without (outcome) (rate(x_count[1m]))",
        {"x_sum": set(), "x_count": set()},
    ),
    (
        'a == 0 and ignoring (state) b{state="Disabled"} == 0 unless on(job) c offset 5m',
        {"a": set(), "b": {"state"}, "c": set()},
    ),
    ("time() - ts > 30 * 60 or vector(0)", {"ts": set()}),
    ('label_values(g{job=~"$job"}, instance)', {"g": {"job"}}),
    ("label_values(g, job)", {"g": set()}),
    ('count({job="j"})', {}),
]


@pytest.mark.parametrize(("expr", "expected"), PROMQL_CASES)
def test_the_promql_reader_finds_metrics_and_the_labels_they_match(
    expr: str, expected: dict[str, set[str]]
) -> None:
    assert {s.metric: set(s.labels) for s in selectors(expr)} == expected


def test_the_promql_reader_refuses_what_it_cannot_read() -> None:
    with pytest.raises(AssertionError, match="unknown function"):
        selectors("jackfield_tools(1)")
    with pytest.raises(AssertionError, match="cannot read"):
        selectors("a # b")
    with pytest.raises(AssertionError, match="__name__"):
        selectors('{__name__="jackfield_tools"}')


# --- what the code exports ------------------------------------------------------------------


def exported() -> dict[str, frozenset[str]]:
    """Every sample name a real `Metrics` renders, with its label names, once every feature
    has recorded something (labelled series exist only after their first event)."""
    featured = ServerStatus(
        "crm",
        "http",
        "Ready",
        T0,
        tools=("crm_find",),
        extra={
            "limits": {"queued": {"*": 1}},
            "hidden_arguments": {"names": ["tenant"], "overridden": 2},
            "auth": {
                "kind": "oauth:client_credentials",
                "refreshes": 3,
                "failures": 1,
                "expires_at_seconds": 1_900_000_000.0,
            },
        },
    )
    m = Metrics(lambda: [*SERVERS, featured], lambda: ("Registered", {"llm_error": 1}))
    m.reconcile(result="applied", seconds=0.1, revision="sha256:x", success=True)
    m.reconcile(result="failed", seconds=0.1, revision="sha256:x", success=False)
    m.watch_event()
    m.resync()
    m.tool_call("crm", "crm_find", "ok", 0.2)
    m.tool_call("crm", "crm_find", "error", 1.5)
    m.rejected("crm", "rate")
    m.set_sessions(hub=1, agent=1)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in names.items()}


EXPORTED = exported()


def test_the_exported_names_include_every_family_the_dashboard_needs() -> None:
    # the fixture above must make the labelled and scrape-time families appear, or the checks
    # below would pass over names that simply never rendered
    assert {
        "jackfield_tool_call_duration_seconds_bucket",
        "jackfield_reconcile_duration_seconds_bucket",
        "jackfield_tool_calls_total",
        "jackfield_tool_calls_rejected_total",
        "jackfield_server_state",
        "jackfield_auth_token_requests_total",
        "jackfield_auth_token_expiry_timestamp_seconds",
        "jackfield_agent_worker_state",
        "jackfield_agent_fallbacks_total",
        "jackfield_applied_revision_info",
        "jackfield_process_cpu_seconds_total",
    } <= EXPORTED.keys()


def unknown(where: str, exprs: Iterator[tuple[str, str]]) -> list[str]:
    """Each (context, expr)'s metrics or matched labels that jackfield does not export."""
    problems: list[str] = []
    count = 0
    for context, expr in exprs:
        for s in selectors(expr):
            count += 1
            if s.metric not in EXPORTED:
                problems.append(f"{where} {context}: {s.metric} is not exported")
            elif extra := s.labels - EXPORTED[s.metric] - TARGET_LABELS:
                problems.append(f"{where} {context}: {s.metric} has no label {sorted(extra)}")
    assert count, f"no metric found in {where}"
    return problems


def test_an_unexported_metric_or_label_is_reported() -> None:
    problems = unknown(
        "sample",
        iter(
            [
                ("a", "rate(jackfield_tool_calls[5m])"),
                ("b", 'jackfield_reconcile_total{server="x", job="j"}'),
                ("c", 'jackfield_tool_calls_total{outcome="ok"}'),
            ]
        ),
    )
    assert problems == [
        "sample a: jackfield_tool_calls is not exported",
        "sample b: jackfield_reconcile_total has no label ['server']",
    ]


def rule_exprs() -> Iterator[tuple[str, str]]:
    for rule in rules():
        yield rule.get("alert") or rule["record"], rule["expr"]


def test_every_metric_the_rules_read_is_exported() -> None:
    assert unknown("rule", rule_exprs()) == []


def test_every_series_the_rule_unit_tests_feed_is_exported() -> None:
    series = (
        (test["name"], s["series"]) for test in UNIT_TESTS["tests"] for s in test["input_series"]
    )
    assert unknown("unit test", series) == []


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", ())  # a collapsed row holds its panels


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in panels(BOARD):
        for target in panel.get("targets", ()):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in BOARD["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield (
                f"variable {variable['name']}",
                query["query"] if isinstance(query, dict) else query,
            )


def test_every_metric_the_dashboard_reads_is_exported() -> None:
    assert unknown("dashboard", dashboard_exprs()) == []


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    used = {s.metric for _, expr in dashboard_exprs() for s in selectors(expr)}
    assert {
        "jackfield_server_state",
        "jackfield_server_up",
        "jackfield_server_restarts_total",
        "jackfield_tool_calls_total",
        "jackfield_tool_call_duration_seconds_bucket",
        "jackfield_tool_calls_rejected_total",
        "jackfield_reconcile_total",
        "jackfield_reconcile_duration_seconds_bucket",
        "jackfield_config_last_reload_success_timestamp_seconds",
        "jackfield_config_last_reload_successful",
        "jackfield_watch_events_total",
        "jackfield_resync_total",
        "jackfield_hub_sessions",
        "jackfield_agent_sessions",
        "jackfield_agent_worker_state",
        "jackfield_auth_token_requests_total",
        "jackfield_auth_token_expiry_timestamp_seconds",
    } <= used
    quantiles = [
        expr
        for _, expr in dashboard_exprs()
        if "histogram_quantile" in expr and "jackfield_tool_call_duration_seconds_bucket" in expr
    ]
    assert {q for e in quantiles for q in re.findall(r"histogram_quantile\((0\.\d+)", e)} >= {
        "0.5",
        "0.95",
        "0.99",
    }


# --- the dashboard as Grafana imports it ----------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_PANELS = frozenset({"row", "stat", "timeseries", "state-timeline", "table", "bargauge"})


def test_the_dashboard_has_a_prometheus_datasource_variable_and_job_and_instance() -> None:
    assert BOARD["schemaVersion"] >= 39
    variables = {v["name"]: v for v in BOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE


def test_every_panel_queries_through_the_datasource_variable_with_unique_ids() -> None:
    ids = [panel["id"] for panel in panels(BOARD)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(BOARD):
        assert panel["type"] in GRAFANA_PANELS, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"


def test_the_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in BOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


# --- the rules' shape, the two copies, the docs ---------------------------------------------


def test_the_prometheusrule_carries_exactly_the_plain_rules() -> None:
    assert OPERATOR["apiVersion"] == "monitoring.coreos.com/v1"
    assert OPERATOR["kind"] == "PrometheusRule"
    assert OPERATOR["metadata"]["name"]
    assert OPERATOR["spec"] == PLAIN


def test_every_alert_says_how_bad_what_and_where_to_read_on() -> None:
    doc = STATUS_DOC.read_text()
    assert alerts()
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = alert["annotations"]
        assert "$labels." in annotations["summary"] + annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (REPO / path) == STATUS_DOC, name
        assert f'id="{anchor}"' in doc, f"docs/status.md has no anchor {anchor}"
        assert f"`{name}`" in doc, f"docs/status.md does not describe {name}"


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for test in UNIT_TESTS["tests"]:
        for case in test.get("alert_rule_test", ()):
            (fires if case["exp_alerts"] else silent).add(case["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert names - fires == set(), "alerts no case fires"
    assert names - silent == set(), "alerts no case shows silent"
    # each of an alert's rules (JackfieldReconcileStalled has two) is seen firing
    reasons = {
        (case["alertname"], alert["exp_labels"].get("reason"))
        for test in UNIT_TESTS["tests"]
        for case in test.get("alert_rule_test", ())
        for alert in case["exp_alerts"]
    }
    assert {(a["alert"], a["labels"].get("reason")) for a in alerts()} <= reasons


# --- promtool --------------------------------------------------------------------------------


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if IN_CI:
            pytest.fail(
                "promtool is required in CI for the alert rules (apt-get install prometheus)"
            )
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def run_promtool(promtool: str, *args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_accepts_the_plain_rules(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(rules())} rules found" in output


def test_promtool_accepts_the_prometheusrule_spec(promtool: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(OPERATOR["spec"], sort_keys=False))
    output = run_promtool(promtool, "check", "rules", str(spec))
    assert f"SUCCESS: {len(rules())} rules found" in output


def test_the_alert_unit_tests_pass(promtool: str) -> None:
    output = run_promtool(promtool, "test", "rules", RULES_TESTS.name, cwd=RULES_TESTS.parent)
    assert "SUCCESS" in output


def test_promtool_unit_tests_catch_a_wrong_threshold(promtool: str, tmp_path: Path) -> None:
    # the unit tests are worth something only if a wrong expression fails them
    broken = PLAIN | {"groups": [dict(group) for group in PLAIN["groups"]]}
    for group in broken["groups"]:
        group["rules"] = [
            rule | {"expr": rule["expr"].replace(") > 0.1", ") > 0.5")}
            if rule.get("alert") == "JackfieldToolErrorRate"
            else rule
            for rule in group["rules"]
        ]
    assert broken != PLAIN
    (tmp_path / RULES.name).write_text(yaml.safe_dump(broken, sort_keys=False))
    shutil.copy(RULES_TESTS, tmp_path / RULES_TESTS.name)
    done = subprocess.run(
        [promtool, "test", "rules", RULES_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
    )
    assert done.returncode != 0
    assert "JackfieldToolErrorRate" in done.stdout + done.stderr


def grafana_free(expr: str) -> str:
    """The PromQL Grafana would send: variables replaced by values they can take."""
    grafana = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.DOTALL)
    expr = grafana.group(1) if grafana else expr
    return re.sub(r"\$\{?(\w+)\}?", lambda m: "5m" if m.group(1).startswith("__") else ".*", expr)


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    # promtool has no offline query parser, but it parses recording rules' expressions
    recorded = [
        {"record": f"dashboard:query_{i}", "expr": grafana_free(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    queries = tmp_path / "dashboard-queries.yaml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    output = run_promtool(promtool, "check", "rules", str(queries))
    assert f"SUCCESS: {len(recorded)} rules found" in output
