"""Every rule of the config models, one case each."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from jackfield.spec.models import AgentDocument, MCPServerDocument, PromptDocument


def server(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "jackfield/v1",
        "kind": "MCPServer",
        "metadata": {"name": "s"},
        "spec": spec,
    }


def messages(model: type[pydantic.BaseModel], data: dict[str, Any]) -> str:
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate(data)
    return " | ".join(str(e["msg"]) for e in info.value.errors())


def test_a_minimal_stdio_server_gets_documented_defaults() -> None:
    doc = MCPServerDocument.model_validate(server(command="python"))
    spec = doc.spec
    assert (spec.transport, spec.enabled, spec.scope) == ("stdio", True, "shared")
    assert spec.tools.include == ["*"] and spec.tools.exclude == [] and spec.tools.prefix is None
    assert (spec.timeouts.connect, spec.timeouts.call) == (10, 30)
    assert spec.limits.max_output_bytes == 16384


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"transport": "stdio"}, "needs 'command'"),
        ({"transport": "http"}, "needs 'url'"),
        ({"transport": "sse"}, "needs 'url'"),
        ({"transport": "websocket"}, "needs 'url'"),
        ({"transport": "http", "url": "ftp://x"}, "must start with http"),
        ({"transport": "websocket", "url": "http://x"}, "must start with ws"),
        ({"command": "python", "url": "http://x"}, "does not apply to transport stdio"),
        ({"command": "python", "headers": {"a": "b"}}, "does not apply to transport stdio"),
        ({"transport": "http", "url": "http://x", "command": "y"}, "does not apply"),
        ({"transport": "http", "url": "http://x", "env": {"A": "b"}}, "does not apply"),
        ({"command": "python -m server"}, "not a shell line"),
        ({"transport": "carrier-pigeon", "command": "x"}, "Input should be"),
        ({"command": "x", "scope": "global"}, "Input should be"),
        ({"command": "x", "timeouts": {"call": 0}}, "greater than 0"),
        ({"command": "x", "limits": {"maxOutputBytes": 10}}, "greater than or equal to 256"),
        ({"command": "x", "tools": {"prefix": "has space"}}, "pattern"),
        ({"command": "x", "tools": {"include": [""]}}, "at least 1 character"),
        ({"command": "x", "bogus": 1}, "Extra inputs are not permitted"),
    ],
)
def test_server_rules_reject_what_cannot_work(spec: dict[str, Any], needle: str) -> None:
    assert needle in messages(MCPServerDocument, server(**spec))


def test_a_url_from_a_variable_is_checked_after_expansion_not_before() -> None:
    doc = MCPServerDocument.model_validate(server(transport="http", url="${SEARCH_URL}"))
    assert doc.spec.url == "${SEARCH_URL}"


def test_numbers_in_env_become_text() -> None:
    doc = MCPServerDocument.model_validate(server(command="x", env={"PORT": 8080}))
    assert doc.spec.env == {"PORT": "8080"}


@pytest.mark.parametrize("name", ["Time", "time_zone", "-time", "time-", "a" * 64, ""])
def test_names_must_be_dns_labels(name: str) -> None:
    data = server(command="x")
    data["metadata"]["name"] = name
    messages(MCPServerDocument, data)


@pytest.mark.parametrize("name", ["t", "time", "time-2", "a" * 63])
def test_dns_labels_are_accepted(name: str) -> None:
    data = server(command="x")
    data["metadata"]["name"] = name
    assert MCPServerDocument.model_validate(data).metadata.name == name


def agent(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "jackfield/v1",
        "kind": "Agent",
        "metadata": {"name": "a"},
        "spec": {"instructions": "hi", **spec},
    }


def test_agent_defaults_are_realtime_with_all_servers() -> None:
    spec = AgentDocument.model_validate(agent()).spec
    assert spec.llm.mode == "realtime" and spec.llm.model == "gpt-4o-realtime-preview"
    assert spec.llm.voice == "alloy" and spec.servers == ["*"] and spec.fallback is None
    assert spec.turn.allow_interruptions is True and spec.turn.max_endpointing_delay == 6.0
    assert (spec.turn.detection, spec.turn.eagerness) == ("serverVad", "auto")
    assert (spec.dispatch.mode, spec.dispatch.agent_name) == ("automatic", None)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"instructions": ""}, "at least 1 character"),
        ({"llm": {"mode": "telepathy"}}, "Input should be"),
        ({"llm": {"temperature": 3}}, "less than or equal to 2"),
        ({"llm": {"stt": "whisper"}}, "pipeline only"),
        ({"turn": {"minEndpointingDelay": 5, "maxEndpointingDelay": 1}}, "must not exceed"),
        ({"turn": {"minInterruptionDuration": -1}}, "greater than or equal to 0"),
        ({"turn": {"allow_interrupt": True}}, "Extra inputs"),
        ({"turn": {"detection": "vad"}}, "Input should be 'serverVad' or 'semanticVad'"),
        ({"turn": {"eagerness": "eager"}}, "Input should be 'auto', 'low', 'medium' or 'high'"),
        ({"fallback": {"mode": "realtime"}}, "fallback.mode must be pipeline"),
        ({"fallback": {"model": "gpt-4o-mini"}}, "fallback.mode must be pipeline"),
        ({"dispatch": {"agentName": "x"}}, "agentName applies to dispatch mode: explicit only"),
        ({"dispatch": {"mode": "explicit", "agentName": ""}}, "at least 1 character"),
        ({"dispatch": {"mode": "manual"}}, "Input should be 'automatic' or 'explicit'"),
    ],
)
def test_agent_rules(spec: dict[str, Any], needle: str) -> None:
    assert needle in messages(AgentDocument, agent(**spec))


def test_a_pipeline_fallback_may_name_stt_and_tts() -> None:
    spec = AgentDocument.model_validate(
        agent(fallback={"mode": "pipeline", "model": "gpt-4o-mini", "stt": "a", "tts": "b"})
    ).spec
    assert spec.fallback is not None and spec.fallback.tts == "b"


def test_prompt_needs_text_and_orders_by_int() -> None:
    base = {"apiVersion": "jackfield/v1", "kind": "Prompt", "metadata": {"name": "p"}}
    assert PromptDocument.model_validate({**base, "spec": {"text": "x"}}).spec.order == 0
    assert "at least 1 character" in messages(PromptDocument, {**base, "spec": {"text": ""}})
    assert "valid integer" in messages(
        PromptDocument, {**base, "spec": {"text": "x", "order": "a"}}
    )


def test_models_are_frozen() -> None:
    doc = MCPServerDocument.model_validate(server(command="x"))
    with pytest.raises(pydantic.ValidationError):
        doc.spec.command = "y"  # type: ignore[misc]
