"""OpenTelemetry traces: on when the standard `OTEL_EXPORTER_OTLP_*` variables say where to
send them, off (the API's no-op tracer, next to free) otherwise. docs/tracing.md has the spans.

A tool call is one trace from the job to the upstream server: the job's CLIENT span (its
`traceparent` in the request's `_meta`, SEP-414) -> the hub's SERVER span -> the manager's
INTERNAL span -> the CLIENT span of the upstream request, whose `traceparent` goes in that
request's `_meta`. Names and attributes follow the OpenTelemetry MCP semantic conventions.

The MCP SDK makes spans of its own for every message it sends and serves; jackfield's replace
them (the SDK's tracer scope is disabled, so its spans are non-recording and carry the current
context through: what jackfield injects is what the peer receives).

Never on a span: argument values, results, environment values, headers, caller context values
(all may be secrets). An error is its type and, where jackfield wrote it, its sentence,
redacted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import mcp_types
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider, _TracerConfig
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from jackfield import __version__
from jackfield.shell.redaction import redact, register_secrets

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either turns tracing on."""
SDK_SCOPE = "mcp-python-sdk"
"""The MCP SDK's tracer (mcp/shared/_otel.py): disabled, jackfield's spans stand in for it."""
SHUTDOWN_TIMEOUT = 5.0
"""Seconds the exit waits for the last spans to reach the collector."""

tracer = trace.get_tracer("jackfield", __version__)
"""A proxy until a provider is installed: the no-op tracer when tracing is off."""
_propagator = TraceContextTextMapPropagator()
_installed: TracerProvider | None = None


def otel_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `OTEL_*` variables of `env` (the process's): what a job process is handed, since a
    forkserver's environment is the one of its first start."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k.startswith("OTEL_")}


HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
"""`key=value,key=value` (values percent-encoded): a collector's API key lives there."""


def exporter_secrets(variables: Mapping[str, str]) -> list[str]:
    """The header values of the OTLP exporter, whole and one by one, decoded and not."""
    found: list[str] = []
    for name in HEADER_VARIABLES:
        raw = variables.get(name, "")
        if not raw:
            continue
        found.append(raw)
        for pair in raw.split(","):
            _, sep, value = pair.partition("=")
            if sep and value.strip():
                found += [value.strip(), urllib.parse.unquote(value.strip())]
    return found


def configure_tracing(service_name: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Install a TracerProvider exporting over OTLP when an endpoint variable is set (and
    `OTEL_SDK_DISABLED` is not `true`, nor `OTEL_TRACES_EXPORTER` `none`); else install
    nothing. `service_name` is the default `service.name` (`OTEL_SERVICE_NAME` and
    `OTEL_RESOURCE_ATTRIBUTES` win). `env`: the `OTEL_*` variables to use in place of this
    process's (a job's, taken in its parent); they are set in the environment, for the SDK
    reads the rest (headers, timeouts, sampler, batch sizes) from there. True when tracing is
    on; idempotent."""
    global _installed
    if env is not None:
        for stale in otel_environment().keys() - env.keys():
            del os.environ[stale]
        os.environ.update(otel_environment(env))
    if _installed is not None:
        return True
    variables = otel_environment()
    register_secrets(exporter_secrets(variables))  # before anything can log them
    if variables.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        log.info("tracing off: OTEL_SDK_DISABLED=true")
        return False
    if not any(variables.get(v) for v in ENDPOINT_VARIABLES):
        return False
    if variables.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        log.info("tracing off: OTEL_TRACES_EXPORTER=none")
        return False
    exporter = _exporter(variables)
    if exporter is None:
        return False
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(
        resource=resource, shutdown_on_exit=False, _tracer_configurator=_scopes
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _installed = provider
    log.info("tracing on: spans of %s exported over OTLP", resource.attributes[SERVICE_NAME])
    return True


def _exporter(variables: Mapping[str, str]) -> SpanExporter | None:
    protocol = (
        variables.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or variables.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            log.warning(
                "tracing off: OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package"
                " opentelemetry-exporter-otlp-proto-grpc; http/protobuf is built in"
            )
            return None
        return GrpcExporter()
    log.warning("tracing off: OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported", protocol)
    return None


def _scopes(scope: Any) -> _TracerConfig:
    return _TracerConfig(is_enabled=scope.name != SDK_SCOPE)


def tracing_on() -> bool:
    return _installed is not None


def provider() -> TracerProvider | None:
    """The provider `configure_tracing` installed (None when tracing is off)."""
    return _installed


def flush_tracing(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Export the spans ended so far, waiting at most `timeout` seconds."""
    if _installed is not None:
        _bounded(_installed.force_flush, timeout)


def shutdown_tracing(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Export what is left and stop exporting, waiting at most `timeout` seconds (a collector
    that does not answer does not hold the exit up)."""
    global _installed
    if _installed is not None:
        _bounded(_installed.shutdown, timeout)
        _installed = None


def _bounded(work: Callable[[], object], timeout: float) -> None:
    worker = threading.Thread(target=work, name="otel-export", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        log.warning("traces: the collector did not take the last spans within %g s", timeout)


# --- propagation (SEP-414: `traceparent`, `tracestate` at the top level of `_meta`) ----------


def inject(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`meta` with the current context's `traceparent` (and `tracestate`) merged in; None when
    there is neither meta nor a context to send."""
    carrier: dict[str, Any] = dict(meta or {})
    _propagator.inject(carrier)
    return carrier or None


def extract(meta: Mapping[str, Any] | None) -> Context | None:
    """The caller's context from a request's `_meta`, or None when it carries no valid one
    (the span then starts a trace of its own)."""
    if not meta:
        return None
    carrier = {k: v for k in ("traceparent", "tracestate") if isinstance(v := meta.get(k), str)}
    if not carrier:
        return None
    found = _propagator.extract(carrier)
    return found if trace.get_current_span(found).get_span_context().is_valid else None


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """No current span in the block: for long-lived tasks created in it (a server's owner
    task is not part of the pass or the call that started it)."""
    token = otel_context.attach(Context())
    try:
        yield
    finally:
        otel_context.detach(token)


# --- spans -------------------------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    context: Context | None = None,
) -> Iterator[Span]:
    """A current span that records an exception as its type only (a message or a traceback
    may hold a secret); `error` adds a sentence."""
    with tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, context=context,
        record_exception=False, set_status_on_exception=False,
    ) as current:  # fmt: skip
        try:
            yield current
        except BaseException as e:
            status = getattr(current, "status", None)  # an SDK span: the caller may have said
            if status is None or status.status_code is not StatusCode.ERROR:
                error(current, type(e).__qualname__)
            raise


def error(
    current: Span, kind: str, sentence: str | None = None, *, secrets: frozenset[str] = frozenset()
) -> None:
    """Mark `current` failed: `error.type`, and jackfield's own sentence (never an upstream's
    words, which may repeat the arguments), redacted."""
    current.set_attribute("error.type", kind)
    current.set_status(StatusCode.ERROR, redact(sentence, secrets) if sentence else None)


def tool_result(current: Span, result: mcp_types.CallToolResult) -> None:
    """A result with `isError` fails the span: `error.type` `tool_error`, per the MCP
    conventions (the text stays out: it is the server's, and may repeat the arguments)."""
    if result.is_error:
        error(current, "tool_error")


def call_attributes(
    tool: str, *, session: str | None = None, request_id: Any = None, protocol: str | None = None
) -> dict[str, AttributeValue]:
    """The MCP conventions' attributes of a `tools/call`."""
    attributes: dict[str, AttributeValue] = {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
    }
    if session:
        attributes["mcp.session.id"] = session
    if request_id is not None:
        attributes["jsonrpc.request.id"] = str(request_id)
    if protocol:
        attributes["mcp.protocol.version"] = protocol
    return attributes
