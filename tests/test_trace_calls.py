"""Traces of a real `jackfield run` (issue #20), exported over OTLP/HTTP to a receiver in the
test: one tool call through the hub, sent with a caller's `traceparent` in `_meta`, is one trace
of linked spans (caller -> hub SERVER -> manager INTERNAL -> upstream CLIENT), the upstream
server (tests/servers/traced.py) gets the CLIENT span's `traceparent`, every pass has its span,
and no secret of the config is in any attribute. Without the variables nothing is installed
and the caller's context passes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from mcp_types import RequestParamsMeta
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from jackfield.shell import tracing
from jackfield.shell.redaction import redact
from tests.conftest import REPO
from tests.support.process import Jackfield, hub_client, jackfield_run, plain_config, text_of

pytestmark = pytest.mark.timeout(180)

SECRET_ENV = "sk-trace-env-5b1e0c7d93"
SECRET_HIDDEN = "sk-trace-hidden-a24f6e18"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
CALLER_META: RequestParamsMeta = {"traceparent": CALLER_TRACEPARENT}  # type: ignore[typeddict-unknown-key]
SPANS = 20.0
"""Seconds for a span to reach the receiver (the batch delay is 100 ms)."""


# --- an OTLP/HTTP receiver ---------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    scope: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    status: int
    """0 unset, 1 ok, 2 error (opentelemetry.proto.trace.v1.Status.StatusCode)."""
    message: str
    events: tuple[str, ...]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


class Receiver:
    """POST /v1/traces on 127.0.0.1: every span of every export request, decoded."""

    SPAN_KIND = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3}

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.requests = 0
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.requests += 1
        for resource_spans in message.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    self.spans.append(ExportedSpan(
                        service=str(resource.get("service.name")), scope=scope_spans.scope.name,
                        name=s.name, kind=s.kind, trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(), parent_id=s.parent_span_id.hex(),
                        attributes={kv.key: _value(kv.value) for kv in s.attributes},
                        status=s.status.code, message=s.status.message,
                        events=tuple(e.name for e in s.events),
                    ))  # fmt: skip
        self._arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def until(
        self, found: Callable[[list[ExportedSpan]], Any], what: str, timeout: float = SPANS
    ) -> Any:
        """Wait (on each export's arrival, bounded) until `found(spans)` is truthy; return it."""
        async with asyncio.timeout(timeout):
            while not (got := found(self.spans)):
                self._arrived.clear()
                await self._arrived.wait()
        return got

    def environment(self, service: str | None = None) -> dict[str, str]:
        """The standard variables that point a process at this receiver."""
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
            # whatever the test's own environment says
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SDK_DISABLED": "false",
            "OTEL_TRACES_EXPORTER": "otlp",
        }  # fmt: skip
        if service is not None:
            env["OTEL_SERVICE_NAME"] = service
        return env


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def one(spans: list[ExportedSpan], name: str, **where: Any) -> ExportedSpan | None:
    """The span called `name` whose fields match `where`, if it arrived."""
    for s in spans:
        if s.name == name and all(getattr(s, k) == v for k, v in where.items()):
            return s
    return None


def recorded(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the config ----------------------------------------------------------------------------------


def traced_yaml(record: Path) -> str:
    """tests/servers/traced.py over stdio, with a secret in its env and a hidden argument."""
    args = ", ".join(f'"{a}"' for a in ["-m", "tests.servers.traced", "--record", str(record)])
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: traced}\nspec:\n"
        f"  command: {sys.executable}\n  args: [{args}]\n  cwd: {REPO}\n"
        "  env: {TRACE_TOKEN: '${TRACE_SECRET}'}\n"
        "  tools:\n    arguments:\n      lookup: {api_key: '${TRACE_HIDDEN}'}\n"
    )


SECRETS = {"TRACE_SECRET": SECRET_ENV, "TRACE_HIDDEN": SECRET_HIDDEN}


def assert_no_secret(spans: list[ExportedSpan]) -> None:
    text = json.dumps([(s.name, s.attributes, s.message, s.events) for s in spans])
    assert SECRET_ENV not in text
    assert SECRET_HIDDEN not in text
    assert "api_key" not in text, "not even the hidden argument's name"


@contextlib.asynccontextmanager
async def traced_run(
    tmp_path: Path, *, exported: bool = True
) -> AsyncIterator[tuple[Receiver, Jackfield, Path]]:
    """A receiver, and `jackfield run` over the traced server once it is Ready (told where
    the receiver is when `exported`); the file the server records each request's `_meta` in."""
    record = tmp_path / "traced.jsonl"
    config = plain_config(tmp_path / "config", {"traced": traced_yaml(record)})
    async with receiving() as receiver:
        env = {**SECRETS, **receiver.environment()} if exported else SECRETS
        with jackfield_run(tmp_path / "run", config, env=env) as jackfield:
            await asyncio.to_thread(jackfield.servers_ready, "traced")
            yield receiver, jackfield, record


# --- the tests -----------------------------------------------------------------------------------


async def test_one_tool_call_is_one_trace_from_the_caller_to_the_upstream_request(
    tmp_path: Path,
) -> None:
    async with traced_run(tmp_path) as (receiver, jackfield, record):
        async with hub_client(jackfield.hub_url) as client:
            result = await client.call_tool("traced_lookup", {"query": "kettles"}, meta=CALLER_META)
        assert text_of(result) == ["found kettles (key)"], "the hidden argument went in"
        hub = await receiver.until(
            lambda spans: one(spans, "tools/call traced_lookup", kind=Receiver.SPAN_KIND["SERVER"]),
            "the hub's span",
        )
        manager = await receiver.until(
            lambda spans: one(spans, "jackfield.call traced_lookup"), "the manager's span"
        )
        upstream = await receiver.until(
            lambda spans: one(spans, "tools/call lookup", kind=Receiver.SPAN_KIND["CLIENT"]),
            "the upstream request's span",
        )
        passes = await receiver.until(
            lambda spans: [s for s in spans if s.name == "jackfield.reconcile"],
            "a reconcile pass's span",
        )
        assert await asyncio.to_thread(jackfield.stop) == 0
        # the caller's trace, linked hop by hop
        assert hub.trace_id == manager.trace_id == upstream.trace_id == CALLER_TRACE
        assert hub.parent_id == CALLER_SPAN
        assert manager.parent_id == hub.span_id
        assert upstream.parent_id == manager.span_id
        # the upstream server got the CLIENT span's context (SEP-414: top level of `_meta`)
        calls = [r for r in recorded(record) if r["tool"] == "lookup"]
        assert [c["meta"]["traceparent"] for c in calls] == [
            f"00-{CALLER_TRACE}-{upstream.span_id}-01"
        ]
        # the MCP semantic conventions
        for span in (hub, upstream):
            assert span.attributes["mcp.method.name"] == "tools/call"
            assert span.attributes["gen_ai.operation.name"] == "execute_tool"
            assert span.attributes["network.transport"] == ("tcp" if span is hub else "pipe")
        assert hub.attributes["gen_ai.tool.name"] == "traced_lookup"
        assert hub.attributes["mcp.session.id"]
        assert hub.attributes["jsonrpc.request.id"]
        assert hub.attributes["mcp.protocol.version"]
        assert hub.attributes["network.protocol.name"] == "http"
        assert upstream.attributes["gen_ai.tool.name"] == "lookup"
        assert upstream.attributes["mcp.protocol.version"]
        assert upstream.attributes["jackfield.server.name"] == "traced"
        assert manager.attributes["jackfield.server.name"] == "traced"
        assert manager.attributes["jackfield.call.outcome"] == "ok"
        assert manager.attributes["jackfield.call.hidden_arguments"] == 1
        assert {hub.service, manager.service, upstream.service} == {"jackfield"}
        assert all(s.status != 2 for s in (hub, manager, upstream))
        first = passes[0]
        assert first.attributes["jackfield.reconcile.outcome"] == "applied"
        created = first.attributes["jackfield.reconcile.create"]
        assert created == first.attributes["jackfield.reconcile.changes"] >= 1  # agent, server
        assert str(first.attributes["jackfield.config.revision"]).startswith("sha256:")
        assert first.parent_id == "", "a pass is a trace of its own"
        # the MCP SDK's own spans stand aside (jackfield's carry the same names, and more)
        assert not [s for s in receiver.spans if s.scope == tracing.SDK_SCOPE]
        assert_no_secret(receiver.spans)


async def test_a_tool_error_and_a_refusal_fail_their_spans_without_the_servers_words(
    tmp_path: Path,
) -> None:
    async with traced_run(tmp_path) as (receiver, jackfield, record):
        async with hub_client(jackfield.hub_url) as client:
            failed = await client.call_tool("traced_broken", {"query": SECRET_HIDDEN})
            unknown = await client.call_tool("traced_nothing", {})
        assert failed.is_error and unknown.is_error
        hub, manager, upstream = [
            await receiver.until(functools.partial(one, name=name, kind=kind), name)
            for name, kind in (("tools/call traced_broken", Receiver.SPAN_KIND["SERVER"]),
                               ("jackfield.call traced_broken", Receiver.SPAN_KIND["INTERNAL"]),
                               ("tools/call broken", Receiver.SPAN_KIND["CLIENT"]))
        ]  # fmt: skip
        refused = await receiver.until(
            lambda spans: one(spans, "jackfield.call traced_nothing"), "the unknown call"
        )
        assert await asyncio.to_thread(jackfield.stop) == 0
    for span in (hub, manager, upstream):
        assert span.status == 2, span
        assert span.attributes["error.type"] == "tool_error"
        assert span.message == "", "the server's words stay out"
    assert manager.attributes["jackfield.call.outcome"] == "error"
    assert refused.status == 2
    assert refused.attributes["error.type"] == "unknown"
    assert "traced_nothing" in refused.message, "jackfield's own sentence"
    text = json.dumps([(s.attributes, s.message) for s in receiver.spans])
    assert "no such thing" not in text
    assert_no_secret(receiver.spans)


async def test_without_the_variables_nothing_is_exported_and_the_callers_context_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure_tracing("jackfield") is False
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "none installed"
    assert tracing.provider() is None
    # the receiver is there, but nothing names it: nothing may reach it
    async with traced_run(tmp_path, exported=False) as (receiver, jackfield, record):
        async with hub_client(jackfield.hub_url) as client:
            result = await client.call_tool("traced_lookup", {"query": "kettles"}, meta=CALLER_META)
            plain = await client.call_tool("traced_lookup", {"query": "mugs"})
        assert text_of(result) == ["found kettles (key)"]
        assert text_of(plain) == ["found mugs (key)"]
        assert await asyncio.to_thread(jackfield.stop) == 0
        log = (tmp_path / "run" / "jackfield.log").read_text()
        assert "tracing on" not in log
        assert receiver.requests == 0
    # the no-op tracer hands the caller's context on unchanged; no context, none is made up
    assert [c["meta"] for c in recorded(record)] == [{"traceparent": CALLER_TRACEPARENT}, {}]


@pytest.mark.parametrize(
    ("variables", "why"),
    [
        ({"OTEL_SDK_DISABLED": "true"}, "tracing off: OTEL_SDK_DISABLED=true"),
        ({"OTEL_TRACES_EXPORTER": "none"}, "tracing off: OTEL_TRACES_EXPORTER=none"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "is not supported"),
    ],
)
def test_tracing_stays_off_when_the_variables_say_so(
    variables: dict[str, str], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **variables}
    with pytest.MonkeyPatch.context() as patch:
        for name in list(tracing.otel_environment()):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)  # so that what configure_tracing sets is undone after
        with caplog.at_level("INFO", logger="jackfield.shell.tracing"):
            assert tracing.configure_tracing("jackfield", env=env) is False
    assert why in caplog.text
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not set(variables) & set(tracing.otel_environment()), "no variable left behind"


def test_the_trace_context_goes_in_and_out_of_meta_at_its_top_level() -> None:
    parent = trace.NonRecordingSpan(trace.SpanContext(
        int(CALLER_TRACE, 16), int(CALLER_SPAN, 16), is_remote=True,
        trace_flags=trace.TraceFlags(1), trace_state=trace.TraceState([("vendor", "x")]),
    ))  # fmt: skip
    with trace.use_span(parent):
        meta = tracing.inject({"io.example/other": 1})
    assert meta == {"io.example/other": 1, "traceparent": CALLER_TRACEPARENT,
                    "tracestate": "vendor=x"}  # fmt: skip
    context = tracing.extract(meta)
    assert context is not None
    got = trace.get_current_span(context).get_span_context()
    assert (got.trace_id, got.span_id) == (int(CALLER_TRACE, 16), int(CALLER_SPAN, 16))
    assert tracing.extract({"traceparent": "00-nonsense"}) is None
    assert tracing.extract({"traceparent": 7}) is None
    assert tracing.extract(None) is None
    assert tracing.inject(None) is None, "no context, no meta"


def test_the_exporters_header_values_are_secrets() -> None:
    raw = "api-key=otlp%20key%200123456789,x-tenant=acme-tenant-42"
    with pytest.MonkeyPatch.context() as patch:
        for name in list(tracing.otel_environment()):
            patch.delenv(name)
        patch.setenv("OTEL_EXPORTER_OTLP_HEADERS", raw)
        patch.setenv("OTEL_SDK_DISABLED", "true")  # registered even when tracing stays off
        assert tracing.configure_tracing("jackfield") is False
    said = redact(f"exporting with {raw}; key otlp key 0123456789; tenant acme-tenant-42")
    assert "0123456789" not in said and "acme-tenant-42" not in said
    assert tracing.exporter_secrets({"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=b%2Fc"}) == [
        "a=b%2Fc", "b%2Fc", "b/c",
    ]  # fmt: skip
