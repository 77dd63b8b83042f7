"""agent.yaml means what it says in both modes: turn mapping, dispatch, and warnings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
import pytest
from openai.types.realtime.realtime_audio_input_turn_detection import (
    RealtimeAudioInputTurnDetection,
)

from jackfield.core.dashboard import render
from jackfield.core.dispatch import livekit_agent_name
from jackfield.core.status import Status
from jackfield.core.turns import ineffective_fields, pipeline_turn_handling, realtime_turn_detection
from jackfield.reconciler import Reconciler
from jackfield.spec.models import AgentDocument, AgentSpec, TurnSpec
from tests.support.config import errors_of, load_dir, write
from tests.support.controller import MemoryTarget
from tests.support.status import FakeProvider, sample_status, serving
from tests.test_cli_config import run

TEMPERATURE = (
    "temperature has no effect with llm.mode: realtime (the Realtime API sets its own;"
    " it applies to the fallback pipeline only if given there)"
)
WARNING = {"file": "agent.yaml", "line": 6, "column": 9, "message": TEMPERATURE}
"""Where `  llm: {temperature: 0.8}` on line 6 puts it."""


def agent_yaml(spec: str) -> str:
    """agent.yaml whose spec starts at line 5 with `instructions`, then `spec` (2-space indent)."""
    return (
        "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\nspec:\n"
        f"  instructions: hi\n{spec}"
    )


def agent_spec(**spec: Any) -> AgentSpec:
    return AgentSpec.model_validate({"instructions": "hi", **spec})


# --- realtime turn detection ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        (
            {},
            {
                "type": "server_vad",
                "silence_duration_ms": 500,
                "create_response": True,
                "interrupt_response": True,
            },
        ),
        (
            {"minEndpointingDelay": 4.35, "allowInterruptions": False},
            {
                "type": "server_vad",
                "silence_duration_ms": 4350,
                "create_response": True,
                "interrupt_response": False,
            },
        ),
        (
            {"detection": "semanticVad"},
            {
                "type": "semantic_vad",
                "eagerness": "auto",
                "create_response": True,
                "interrupt_response": True,
            },
        ),
        (
            {"detection": "semanticVad", "eagerness": "low", "allowInterruptions": False},
            {
                "type": "semantic_vad",
                "eagerness": "low",
                "create_response": True,
                "interrupt_response": False,
            },
        ),
    ],
)
def test_turn_becomes_the_realtime_turn_detection_object(
    turn: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert realtime_turn_detection(TurnSpec.model_validate(turn)) == expected


@pytest.mark.parametrize(
    "turn",
    [
        {},
        *({"detection": "semanticVad", "eagerness": e} for e in ("auto", "low", "medium", "high")),
    ],
)
def test_the_turn_detection_object_is_valid_for_the_openai_sdk(turn: dict[str, Any]) -> None:
    detection = realtime_turn_detection(TurnSpec.model_validate(turn))
    parsed = pydantic.TypeAdapter(RealtimeAudioInputTurnDetection).validate_python(detection)
    assert parsed is not None
    # the SDK's models accept unknown keys: each key must be one of the chosen variant's fields
    assert set(detection) <= set(type(parsed).model_fields)
    assert parsed.model_dump(exclude_none=True) == detection


# --- pipeline turn handling -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        (
            {},
            {
                "endpointing": {"min_delay": 0.5, "max_delay": 6.0},
                "interruption": {"enabled": True, "min_duration": 0.5},
            },
        ),
        (
            {
                "allowInterruptions": False,
                "minInterruptionDuration": 1.5,
                "minEndpointingDelay": 0.2,
                "maxEndpointingDelay": 3,
                "detection": "semanticVad",
            },
            {
                "endpointing": {"min_delay": 0.2, "max_delay": 3.0},
                "interruption": {"enabled": False, "min_duration": 1.5},
            },
        ),
    ],
)
def test_turn_becomes_the_pipelines_turn_handling(
    turn: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert pipeline_turn_handling(TurnSpec.model_validate(turn)) == expected


# --- ineffective fields ---------------------------------------------------------------------

FALLBACK = {"mode": "pipeline", "model": "gpt-4o-mini"}
DEFAULT_DELAYS = {"minInterruptionDuration": 0.5, "maxEndpointingDelay": 6}
SEMANTIC_DELAY = {"detection": "semanticVad", "minEndpointingDelay": 0.4}


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ({}, []),
        ({"llm": {"mode": "realtime", "model": "m", "voice": "alloy"}}, []),
        ({"llm": {"temperature": 0.8}}, [("spec", "llm", "temperature")]),
        ({"llm": {"temperature": 0.3}, "fallback": FALLBACK}, [("spec", "llm", "temperature")]),
        ({"fallback": {**FALLBACK, "temperature": 0.3}}, []),
        (
            {"turn": DEFAULT_DELAYS},
            [("spec", "turn", "minInterruptionDuration"), ("spec", "turn", "maxEndpointingDelay")],
        ),
        ({"turn": DEFAULT_DELAYS, "fallback": FALLBACK}, []),
        (
            {"turn": {"minEndpointingDelay": 0.4, "allowInterruptions": False}},
            [("spec", "turn", "allowInterruptions")],  # livekit still interrupts on realtime
        ),
        ({"turn": {"detection": "semanticVad"}}, []),
        ({"turn": SEMANTIC_DELAY}, [("spec", "turn", "minEndpointingDelay")]),
        ({"turn": SEMANTIC_DELAY, "fallback": FALLBACK}, []),
        ({"turn": {"detection": "semanticVad", "eagerness": "high"}}, []),
        ({"turn": {"eagerness": "auto"}}, [("spec", "turn", "eagerness")]),
        (
            {"turn": {"eagerness": "high"}, "fallback": FALLBACK},
            [("spec", "turn", "eagerness")],
        ),
        ({"llm": {"mode": "pipeline", "temperature": 0.2}}, []),
        (
            {
                "llm": {"mode": "pipeline"},
                "turn": {
                    "minInterruptionDuration": 1,
                    "minEndpointingDelay": 1,
                    "maxEndpointingDelay": 2,
                },
            },
            [],
        ),
        (
            {
                "llm": {"mode": "pipeline"},
                "fallback": FALLBACK,
                "turn": {"detection": "serverVad", "eagerness": "auto"},
            },
            [("spec", "fallback"), ("spec", "turn", "detection"), ("spec", "turn", "eagerness")],
        ),
    ],
)
def test_only_fields_written_that_the_mode_ignores_are_reported(
    spec: dict[str, Any], keys: list[tuple[str, ...]]
) -> None:
    assert [key for key, _ in ineffective_fields(agent_spec(**spec))] == keys


def test_the_message_says_what_happens_instead() -> None:
    ((_, message),) = ineffective_fields(agent_spec(llm={"temperature": 0.8}))
    assert message == TEMPERATURE
    ((_, message),) = ineffective_fields(agent_spec(llm={"mode": "pipeline"}, fallback=FALLBACK))
    assert message == (
        "fallback has no effect with llm.mode: pipeline (it stands in for a realtime model that"
        " cannot start or fails, and this agent has none)"
    )


# --- dispatch -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dispatch", "name"),
    [
        (None, ""),
        ({"mode": "automatic"}, ""),
        ({"mode": "explicit"}, "assistant"),
        ({"mode": "explicit", "agentName": "front-desk"}, "front-desk"),
    ],
)
def test_the_livekit_agent_name_is_empty_for_automatic_dispatch(
    dispatch: dict[str, Any] | None, name: str
) -> None:
    spec: dict[str, Any] = {"instructions": "hi"}
    if dispatch is not None:
        spec["dispatch"] = dispatch
    base = {"apiVersion": "jackfield/v1", "kind": "Agent", "metadata": {"name": "assistant"}}
    document = AgentDocument.model_validate({**base, "spec": spec})
    assert livekit_agent_name(document) == name


# --- errors and warnings at their positions -------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "line", "column", "message"),
    [
        (
            "  fallback:\n    model: gpt-4o-mini\n    mode: realtime\n",
            8,
            5,
            "fallback.mode must be pipeline: the fallback is the STT -> LLM -> TTS pipeline"
            " used when realtime cannot start or fails",
        ),
        (
            "  fallback: {model: gpt-4o-mini}\n",
            6,
            3,
            "fallback.mode must be pipeline: the fallback is the STT -> LLM -> TTS pipeline"
            " used when realtime cannot start or fails",
        ),
        (
            "  dispatch:\n    mode: automatic\n    agentName: front-desk\n",
            8,
            5,
            "agentName applies to dispatch mode: explicit only (automatic dispatch sends the"
            " agent to every new room, by no name)",
        ),
        ("  dispatch: {agentName: front-desk}\n", 6, 14, "agentName applies to dispatch mode"),
        ("  turn: {detection: vad}\n", 6, 21, "spec.turn.detection: Input should be"),
    ],
)
def test_a_wrong_mode_is_an_error_at_its_field(
    config_dir: Path, spec: str, line: int, column: int, message: str
) -> None:
    write(config_dir, {"agent.yaml": agent_yaml(spec)})
    (error,) = errors_of(config_dir)
    assert (error.path, error.line, error.column) == ("agent.yaml", line, column)
    assert error.message.startswith(message)


def test_warnings_stand_at_the_key_and_never_block_the_snapshot(config_dir: Path) -> None:
    spec = "  llm:\n    mode: realtime\n    temperature: 0.8\n  turn: {eagerness: low}\n"
    write(config_dir, {"agent.yaml": agent_yaml(spec)})
    snapshot = load_dir(config_dir)
    assert [(w.path, w.line, w.column) for w in snapshot.warnings] == [
        ("agent.yaml", 8, 5),
        ("agent.yaml", 9, 10),
    ]
    assert snapshot.warnings[0].message == TEMPERATURE


def test_the_repos_own_agent_has_no_warnings() -> None:
    assert load_dir(Path(__file__).resolve().parent.parent).warnings == ()


def test_validate_prints_a_warning_with_its_position_and_exits_0(config_dir: Path) -> None:
    write(config_dir, {"agent.yaml": agent_yaml("  llm:\n    temperature: 0.8\n")})
    got = run("validate", ".", cwd=config_dir)
    assert got.returncode == 0, got.stdout + got.stderr
    warning, valid = got.stdout.splitlines()
    assert warning == f"agent.yaml:7:5: warning: {TEMPERATURE}"
    assert valid.startswith("valid: agent assistant")


# --- status ---------------------------------------------------------------------------------


async def test_status_lists_the_applied_snapshots_warnings_and_follows_the_files(
    config_dir: Path,
) -> None:
    write(config_dir, {"agent.yaml": agent_yaml("  llm: {temperature: 0.8}\n")})
    reconciler = Reconciler(config_dir=config_dir, env={}, target=MemoryTarget(), store=None)
    first = await reconciler.reconcile_once()
    assert first.outcome == "applied"
    document = reconciler.status.to_json()
    assert document["errors"] == []
    assert document["warnings"] == [WARNING]
    # 0.8 is the default: the revision stays, the warning goes
    write(config_dir, {"agent.yaml": agent_yaml("  llm: {}\n")})
    second = await reconciler.reconcile_once()
    assert (second.outcome, second.revision) == ("noop", first.revision)
    assert reconciler.status.to_json()["warnings"] == []


def with_warning() -> Status:
    sample = sample_status()
    return replace(sample, config=replace(sample.config, warnings=(WARNING,)))


async def test_the_status_document_carries_config_warnings() -> None:
    async with serving(FakeProvider(with_warning())) as (server, _):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
            async with client.get(server.url + "/status") as got:
                document = await got.json()
    assert document["config"]["warnings"] == [WARNING]
    assert document["config"]["errors"] == []


def test_the_dashboard_lists_warnings_like_errors() -> None:
    page = render(with_warning(), refresh_seconds=0)
    assert "<h2>Config warnings</h2>" in page and "<code>agent.yaml:6:9</code>" in page
    assert "Config errors" not in page
