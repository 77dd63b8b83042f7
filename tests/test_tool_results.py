"""Results fit for a voice agent: the head+tail cap and the speakable sentences."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jackfield.core.tool_results import cap, speakable, timed_out, unavailable, unknown_tool

MARKER = re.compile(r"\n\[\.\.\. (\d+) bytes cut by jackfield \(limit (\d+)\) \.\.\.\]\n")


def split(capped: str) -> tuple[str, int, str]:
    """(head, bytes said to be cut, tail) of a capped text."""
    found = MARKER.search(capped)
    assert found is not None, capped
    return capped[: found.start()], int(found[1]), capped[found.end() :]


@pytest.mark.parametrize("text", ["", "short", "x" * 256])
def test_text_within_the_limit_is_returned_unchanged(text: str) -> None:
    assert cap(text, 256) is text


def test_a_long_text_keeps_its_head_and_tail_and_says_how_much_was_cut() -> None:
    text = "BEGIN " + "x" * 10_000 + " END"
    capped = cap(text, 1000)

    assert len(capped.encode()) <= 1000
    head, cut, tail = split(capped)
    assert head.startswith("BEGIN xxx") and tail.endswith("xxx END")
    assert cut == len(text) - len(head) - len(tail)
    assert abs(len(head) - len(tail)) <= 1
    assert "(limit 1000)" in capped


@pytest.mark.parametrize("char", ["é", "€", "😀"])
@pytest.mark.parametrize("limit", [100, 101, 102, 103, 500])
def test_cuts_fall_between_characters(char: str, limit: int) -> None:
    text = char * 1000
    capped = cap(text, limit)

    assert len(capped.encode()) <= limit
    head, cut, tail = split(capped)
    assert set(head) == {char} and set(tail) == {char}
    assert cut == len(text.encode()) - len(head.encode()) - len(tail.encode())


def test_a_limit_too_small_for_the_marker_keeps_just_the_head() -> None:
    assert cap("abcdefghij" * 10, 8) == "abcdefgh"
    assert cap("€€€€", 5) == "€"


def test_a_lone_surrogate_from_json_does_not_break_the_cap() -> None:
    capped = cap("\ud800" + "x" * 1000, 200)
    assert len(capped.encode()) <= 200


@given(st.text(), st.integers(min_value=0, max_value=600))
def test_a_capped_text_always_fits_and_accounts_for_every_byte(text: str, limit: int) -> None:
    capped = cap(text, limit)
    size = len(text.encode())
    if size <= limit:
        assert capped is text
        return
    assert len(capped.encode()) <= limit
    if MARKER.search(capped) is None:  # no room for the marker: the head alone
        assert text.startswith(capped)
        return
    head, cut, tail = split(capped)
    assert text.startswith(head) and text.endswith(tail)
    assert cut == size - len(head.encode()) - len(tail.encode())


# --------------------------------------------------------------------------- sentences


def test_a_tool_problem_is_one_sentence() -> None:
    assert speakable("clock", "now", "the server is gone") == (
        "The now tool from clock could not be used: the server is gone."
    )
    assert speakable("clock", "now", "Bad input.  ") == (
        "The now tool from clock could not be used: Bad input."
    )


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("Backoff", "restarting"),
        ("Connecting", "connecting"),
        ("Failed", "failed"),
        ("Pending", "not started yet"),
        ("Disabled", "disabled"),
    ],
)
def test_an_unavailable_server_says_what_it_is_doing(state: str, words: str) -> None:
    assert unavailable("clock", state) == (
        f"The clock tools are unavailable right now (the server is {words})."
    )


@pytest.mark.parametrize(("seconds", "said"), [(0.5, "0.5"), (30.0, "30"), (2.25, "2.25")])
def test_a_timeout_says_how_long_it_waited(seconds: float, said: str) -> None:
    assert timed_out("clock", "now", seconds) == (
        f"The now tool from clock did not answer within {said} seconds."
    )


def test_an_unknown_tool_is_named() -> None:
    assert unknown_tool("clock_now") == "There is no tool called clock_now any more."
