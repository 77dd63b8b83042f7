"""agent.yaml's `turn` in each mode's own terms, and the fields a mode leaves without effect. Pure.

realtime: the OpenAI Realtime API ends turns on its side (`turn_detection`), and LiveKit's
AgentSession then runs no VAD and no endpointing of its own (livekit-agents 1.8 skips its default
VAD while the server detects turns), so the delays that drive a pipeline mean nothing there,
except to the fallback pipeline, which gets the same `turn`. pipeline: the AgentSession's VAD
and endpointing end turns (TurnHandlingOptions).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from jackfield.spec.models import AgentSpec, TurnSpec

Key = tuple[str, ...]
"""YAML keys from the document root, camelCase as written: ('spec', 'llm', 'temperature')."""

_FOR_FALLBACK = "it would apply to a fallback pipeline"
_PIPELINE_ENDS_TURNS = "the pipeline ends turns by minEndpointingDelay and maxEndpointingDelay"

_REALTIME_LLM = {
    "temperature": "temperature has no effect with llm.mode: realtime (the Realtime API sets"
    " its own; it applies to the fallback pipeline only if given there)",
}
_REALTIME_TURN = {
    "serverVad": {
        "eagerness": "eagerness has no effect with turn.detection: serverVad (the turn ends"
        " after minEndpointingDelay of silence); it applies to detection: semanticVad only",
    },
    "semanticVad": {},
}
_REALTIME_TURN_WITHOUT_FALLBACK = {
    "serverVad": {},
    "semanticVad": {
        "minEndpointingDelay": "minEndpointingDelay has no effect with turn.detection:"
        " semanticVad and no fallback (the Realtime API's model decides when the turn is over,"
        f" as eagerness says; {_FOR_FALLBACK})",
    },
}
_REALTIME_TURN_ANY_DETECTION_WITHOUT_FALLBACK = {
    "minInterruptionDuration": "minInterruptionDuration has no effect with llm.mode: realtime"
    f" and no fallback (the Realtime API interrupts on any speech it detects; {_FOR_FALLBACK})",
    "maxEndpointingDelay": "maxEndpointingDelay has no effect with llm.mode: realtime and no"
    f" fallback (the Realtime API ends the turn itself, as turn.detection says; {_FOR_FALLBACK})",
}
_PIPELINE_SPEC = {
    "fallback": "fallback has no effect with llm.mode: pipeline (it stands in for a realtime"
    " model that cannot start or fails, and this agent has none)",
}
_PIPELINE_TURN = {
    "detection": "detection has no effect with llm.mode: pipeline (it chooses the Realtime"
    f" API's turn detection; {_PIPELINE_ENDS_TURNS})",
    "eagerness": "eagerness has no effect with llm.mode: pipeline (it tunes the Realtime API's"
    f" semanticVad; {_PIPELINE_ENDS_TURNS})",
}


def realtime_turn_detection(turn: TurnSpec) -> dict[str, Any]:
    """`turn` as the OpenAI Realtime session's `turn_detection` object (server_vad/semantic_vad).

    The server answers each turn it ends (`create_response`) and, when interruptions are
    allowed, cancels its answer when the user starts talking (`interrupt_response`).
    """
    if turn.detection == "semanticVad":
        return {
            "type": "semantic_vad",
            "eagerness": turn.eagerness,
            "create_response": True,
            "interrupt_response": turn.allow_interruptions,
        }
    return {
        "type": "server_vad",
        # round, not int(): 4.35 * 1000 is 4349.999...
        "silence_duration_ms": round(turn.min_endpointing_delay * 1000),
        "create_response": True,
        "interrupt_response": turn.allow_interruptions,
    }


def pipeline_turn_handling(turn: TurnSpec) -> dict[str, Any]:
    """`turn` in livekit-agents 1.8's TurnHandlingOptions shape, for the STT -> LLM -> TTS path."""
    return {
        "endpointing": {
            "min_delay": turn.min_endpointing_delay,
            "max_delay": turn.max_endpointing_delay,
        },
        "interruption": {
            "enabled": turn.allow_interruptions,
            "min_duration": turn.min_interruption_duration,
        },
    }


def ineffective_fields(spec: AgentSpec) -> list[tuple[Key, str]]:
    """The fields written in agent.yaml that have no effect in its `llm.mode`, with why.

    Only fields the user set count (pydantic's `model_fields_set`): a default never warns. In
    realtime, a `turn` delay the fallback pipeline would use warns only when there is none.
    """
    at_turn = ("spec", "turn")
    if spec.llm.mode == "pipeline":
        return _given(spec, ("spec",), _PIPELINE_SPEC) + _given(spec.turn, at_turn, _PIPELINE_TURN)
    detection = spec.turn.detection
    ignored = dict(_REALTIME_TURN[detection])
    if spec.fallback is None:
        ignored |= _REALTIME_TURN_ANY_DETECTION_WITHOUT_FALLBACK
        ignored |= _REALTIME_TURN_WITHOUT_FALLBACK[detection]
    found = _given(spec.llm, ("spec", "llm"), _REALTIME_LLM) + _given(spec.turn, at_turn, ignored)
    if not spec.turn.allow_interruptions:
        found.append(((*at_turn, "allowInterruptions"), _NO_REALTIME_HOLD))
    return found


_NO_REALTIME_HOLD = (
    "allowInterruptions: false cannot be fully honoured with llm.mode: realtime (the Realtime"
    " API is told interrupt_response: false, but livekit-agents still stops the agent's speech"
    " when the server hears the caller; it applies in full to a fallback pipeline)"
)


def _given(model: BaseModel, at: Key, messages: dict[str, str]) -> list[tuple[Key, str]]:
    """(key, message) for each field of `model` the user set whose YAML key is in `messages`."""
    fields = type(model).model_fields
    keys = [fields[name].alias or name for name in fields if name in model.model_fields_set]
    return [((*at, key), messages[key]) for key in keys if key in messages]
