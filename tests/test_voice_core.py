"""The pure voice rules (core/voice.py): which tools ask first and which cancel, the pacing of
what is said during a call, reading a spoken yes or no, forms a caller can answer by voice, and
results turned into words."""

from __future__ import annotations

from typing import Any

import pytest

from jackfield.core.voice import (
    Pacing,
    ToolVoice,
    answer_of,
    checked_fields,
    confirmation_question,
    next_line,
    progress_line,
    refuses,
    speakable_result,
    spoken_form,
    tool_voice,
    voice_form_problem,
)
from jackfield.spec.models import AgentSpec, MCPServerSpec, ToolsSpec

AGENT = AgentSpec(instructions="x")
DESTRUCTIVE = {"destructiveHint": True}
READ_ONLY = {"readOnlyHint": True}


def server(**fields: Any) -> MCPServerSpec:
    return MCPServerSpec.model_validate({"command": "srv", **fields})


# --- which tools ask, which cancel ------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent_confirm", "server_confirm", "override", "hints", "asks"),
    [
        ("destructive", None, None, DESTRUCTIVE, True),
        ("destructive", None, None, READ_ONLY, False),
        ("destructive", None, None, None, False),  # no hint is no reason to ask
        ("destructive", None, None, {"destructiveHint": True, "readOnlyHint": True}, False),
        ("never", None, None, DESTRUCTIVE, False),
        ("never", "always", None, READ_ONLY, True),  # the server's word over the agent's
        ("destructive", "never", None, DESTRUCTIVE, False),  # config overrides the hint
        ("never", "never", "always", None, True),  # the tool's over the server's
        ("always", "always", "never", DESTRUCTIVE, False),
    ],
)
def test_voice_confirm_follows_tool_then_server_then_agent_and_hints_only_for_destructive(
    agent_confirm: str,
    server_confirm: str | None,
    override: str | None,
    hints: dict[str, bool] | None,
    asks: bool,
) -> None:
    agent = AgentSpec.model_validate({"instructions": "x", "confirm": agent_confirm})
    overrides = {"drop*": {"confirm": override}} if override else {}
    spec = server(confirm=server_confirm, tools={"overrides": overrides})
    assert tool_voice(agent, spec, "drop_table", hints, None).confirm is asks


@pytest.mark.parametrize(
    ("override", "hints", "cancels"),
    [
        (None, READ_ONLY, True),
        (None, DESTRUCTIVE, False),
        (None, None, False),
        ("never", READ_ONLY, False),
        ("onInterrupt", DESTRUCTIVE, True),
    ],
)
def test_voice_cancel_on_interrupt_defaults_to_read_only_and_config_wins(
    override: str | None, hints: dict[str, bool] | None, cancels: bool
) -> None:
    spec = server(tools={"overrides": {"search": {"cancel": override}} if override else {}})
    assert tool_voice(AGENT, spec, "search", hints, None).cancel_on_interrupt is cancels


def test_voice_an_exact_override_wins_over_a_glob_and_the_first_glob_wins() -> None:
    tools = ToolsSpec.model_validate(
        {
            "overrides": {
                "delete_*": {"confirm": "always"},
                "*": {"confirm": "never"},
                "delete_all": {"cancel": "never"},
            }
        }  # fmt: skip
    )
    assert tools.override("delete_all") == tools.overrides["delete_all"]
    assert tools.override("delete_one") == tools.overrides["delete_*"]
    assert tools.override("get") == tools.overrides["*"]
    assert ToolsSpec().override("get") is None


def test_voice_server_settings_win_field_by_field_over_the_agent_defaults() -> None:
    spec = server(voice={"fillerAfter": 0.5, "progress": "silent"})
    voice = tool_voice(AGENT, spec, "getWeatherNow", None, None)
    assert (voice.filler, voice.filler_after, voice.progress_every, voice.progress) == (
        "One moment.", 0.5, 5.0, "silent",
    )  # fmt: skip
    assert voice.title == "get weather now", "a tool without a title is named in words"
    assert tool_voice(AGENT, spec, "x", {"title": "Look it up"}, None).title == "Look it up"
    assert tool_voice(AGENT, spec, "x", {"title": "A"}, "Search the web").title == "Search the web"
    silent = server(voice={"filler": ""})
    assert tool_voice(AGENT, silent, "x", None, None).filler == ""


def test_voice_tool_voice_round_trips_and_a_missing_or_odd_meta_gives_the_defaults() -> None:
    voice = tool_voice(AGENT, server(confirm="always"), "x", None, None)
    assert ToolVoice.from_json(voice.to_json(), name="x") == voice
    default = ToolVoice.from_json(None, name="x")
    assert default == tool_voice(AGENT, None, "x", None, None)
    assert ToolVoice.from_json({"confirm": True, "unknown": 1}, name="x").confirm is True


# --- what is said during a call ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "total", "message", "line"),
    [
        (1, 2, None, "About halfway there."),
        (1, 10, None, "Just getting started."),
        (3, 10, None, "Making progress."),
        (8, 10, None, "Most of the way there."),
        (10, 10, None, "Almost done."),
        (3, None, None, "Still working on it."),
        (3, 10, "  Copying   file 3 of 10 ", "Copying file 3 of 10"),
    ],
)
def test_voice_progress_line_says_the_message_or_the_share_in_words(
    progress: float, total: float | None, message: str | None, line: str
) -> None:
    assert progress_line(progress, total, message) == line


def test_voice_a_long_progress_message_is_cut() -> None:
    assert len(progress_line(1, 2, "word " * 100)) <= 160


def pace(voice: ToolVoice, notices_at: dict[float, str], until: float) -> list[tuple[float, str]]:
    """Ask `next_line` every 0.1 s, as the job's scheduler polls; return what is said when."""
    pacing, said, notices = Pacing(started=0.0), [], []
    for tick in range(int(until * 10) + 1):
        now = tick / 10
        notices += [text for at, text in notices_at.items() if abs(at - now) < 1e-9]
        decision = next_line(voice, pacing, notices, now)
        if decision is not None:
            line, pacing = decision
            said.append((now, line))
    return said


def test_voice_pacing_says_the_filler_then_the_newest_notice_at_most_every_progress_every() -> None:
    voice = tool_voice(AGENT, server(voice={"fillerAfter": 1, "progressEvery": 2}), "x", None, None)
    notices = {0.5: "step 1", 1.5: "step 2", 2.0: "step 3", 2.5: "step 4", 6.0: "step 5"}
    assert pace(voice, notices, until=8) == [
        (1.0, "One moment."),
        (3.0, "step 4"),  # the newest at the first allowed moment; 2 and 3 are not read out
        (6.0, "step 5"),
    ]


def test_voice_pacing_without_a_filler_and_when_silent() -> None:
    no_filler = server(voice={"filler": "", "fillerAfter": 1, "progressEvery": 2})
    voice = tool_voice(AGENT, no_filler, "x", None, None)
    assert pace(voice, {0.2: "a", 1.5: "b", 2.0: "c"}, until=5) == [(1.0, "a"), (3.0, "c")]
    silent = tool_voice(AGENT, server(voice={"progress": "silent"}), "x", None, None)
    assert pace(silent, {0.2: "a", 3.0: "b"}, until=8) == [(1.5, "One moment.")]


# --- asking first -------------------------------------------------------------------------------


def test_voice_confirmation_question_names_the_action_and_its_first_arguments() -> None:
    question = confirmation_question("Delete a note", {"title": "Groceries", "force": True})
    expected = "Should I delete a note with title Groceries, force true? Please say yes or no."
    assert question == expected
    long = confirmation_question("Send", {"a": "x" * 100, "b": 1, "c": 2, "d": 3, "e": ""})
    assert "d 3" not in long and "..." in long and long.endswith("Please say yes or no.")
    assert confirmation_question("Restart the server", {}) == (
        "Should I restart the server? Please say yes or no."
    )


@pytest.mark.parametrize(
    ("said", "answer"),
    [
        ("Yes.", "yes"), ("yeah go ahead", "yes"), ("Sure, do it", "yes"), ("OK", "yes"),
        ("No!", "no"), ("don't", "no"), ("yes, wait", "no"), ("hold on", "no"),
        ("not now", "no"), ("never mind", "no"), ("", "unclear"), ("what was that?", "unclear"),
        ("maybe", "unclear"),
    ],
)  # fmt: skip
def test_voice_only_a_clear_yes_is_a_yes(said: str, answer: str) -> None:
    assert answer_of(said) == answer


# --- forms by voice -----------------------------------------------------------------------------

FORM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "subscribe": {"type": "boolean"},
        "age": {"type": "integer", "minimum": 1, "maximum": 130},
        "color": {"type": "string", "enum": ["red", "blue"]},
        "hero": {"type": "string", "oneOf": [{"const": "h1", "title": "Superman"}]},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
    },
    "required": ["name"],
}


def test_voice_flat_forms_can_be_asked_and_nested_ones_cannot() -> None:
    assert voice_form_problem(FORM) is None
    nested = {"type": "object", "properties": {"address": {"type": "object"}}}
    assert voice_form_problem(nested) == "field address is not a plain value"
    listed = {"type": "object", "properties": {"ids": {"type": "array", "items": {}}}}
    assert voice_form_problem(listed) == "field ids is a list"
    assert voice_form_problem({"type": "object", "properties": {}}) == "the form has no fields"
    assert voice_form_problem({"type": "string"}) == "the form is not an object"


def test_voice_fields_are_checked_against_the_form_and_coerced_where_plain() -> None:
    fields, problems = checked_fields(
        FORM,
        {
            "name": "Ada",
            "subscribe": "yes",
            "age": "36",
            "color": "blue",
            "hero": "h1",
            "tags": ["a"],
            "unknown": 1,
        },  # fmt: skip
    )
    assert fields == {"name": "Ada", "subscribe": True, "age": 36, "color": "blue",
                      "hero": "h1", "tags": ["a"]}  # fmt: skip
    assert problems == []
    fields, problems = checked_fields(FORM, {"age": 200, "color": "green", "tags": ["z"]})
    assert fields == {}
    assert problems == ["age: 200 does not fit", "color: green does not fit",
                        'tags: ["z"] does not fit', "name is missing"]  # fmt: skip
    assert checked_fields(FORM, {"name": "A"})[1] == ["name: A does not fit"]


@pytest.mark.parametrize(
    ("said", "refused"),
    [
        ("no thanks", True), ("never mind", True), ("cancel that", True), ("skip it", True),
        ("I do not want the newsletter", False), ("Ada Lovelace", False), ("", False),
        ("no, my name is Ada", False),
    ],
)  # fmt: skip
def test_voice_a_plain_refusal_declines_a_form_and_an_answer_with_a_no_in_it_does_not(
    said: str, refused: bool
) -> None:
    assert refuses(said) is refused


def test_voice_a_form_message_that_only_introduces_its_fields_names_them() -> None:
    form = {"properties": {"name": {"description": "Your full name"}, "age": {"title": "Age"},
                           "x": {}, "y": {}}, "required": ["name"]}  # fmt: skip
    assert spoken_form("Please provide:", form) == "Please provide: Your full name."
    assert spoken_form("Please provide:", {**form, "required": []}) == (
        "Please provide: Your full name; Age; x."
    )
    assert spoken_form("  What is   your name? ", form) == "What is your name?"


# --- results in words -------------------------------------------------------------------------


def test_voice_results_that_are_not_text_become_a_few_words() -> None:
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "Here is the chart."},
        {"type": "image", "data": "AAAA", "mimeType": "image/png", "annotations": {}},
        {"type": "resource_link", "uri": "file:///reports/q3.pdf", "name": "Q3 report"},
        {"type": "resource_link", "uri": "https://example.com/a/notes.txt"},
    ]
    assert speakable_result(content) == (
        "Here is the chart.\nan image\ntwo links: Q3 report; notes.txt"
    )
    assert speakable_result([{"type": "audio", "data": "x", "mimeType": "audio/wav",
                              "title": "Voicemail"}]) == "an audio clip: Voicemail"  # fmt: skip
    embedded: list[dict[str, Any]] = [
        {"type": "resource", "resource": {"uri": "mem://x", "text": "t", "title": "Memo"}}
    ]
    assert speakable_result(embedded) == "one link: Memo"
    two = [{"type": "image", "data": "A", "mimeType": "image/png", "alt": "a cat"},
           {"type": "image", "data": "B", "mimeType": "image/png"}]  # fmt: skip
    assert speakable_result(two) == "two images: a cat"
    assert speakable_result([], {"temperature": 21}) == '{"temperature": 21}'
    assert speakable_result([{"type": "text", "text": "ok"}], {"temperature": 21}) == "ok"
