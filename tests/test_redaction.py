"""Redaction masks a secret in every form it takes in text: raw, percent-encoded, base64 (alone
or inside a larger payload, at each alignment), JSON-escaped and line by line; and the audit
caps cut without leaving part of a secret behind."""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable, Iterator
from urllib.parse import quote, quote_plus

import pytest

from jackfield.core.redaction import MASK, redact, redactor
from jackfield.shell import redaction
from jackfield.shell.stdio import Tail

SECRET = 'sk/live+9z=Ω "q" \\x'
"""Characters every encoding treats differently: `/`, `+`, `=`, a space, a quote, a backslash
and a non-ASCII letter."""
SECRETS = frozenset([SECRET])
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
    "-----END PRIVATE KEY-----\n"
)


def b64(data: str, urlsafe: bool = False, pad: bool = True) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = encode(data.encode()).decode()
    return text if pad else text.rstrip("=")


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "percent (nothing safe)": lambda s: quote(s, safe=""),
    "percent (slash safe)": quote,
    "percent, lower-case hex": lambda s: quote(s, safe="").lower(),
    "form-encoded (plus for space)": lambda s: quote_plus(s, safe=""),
    "JSON, ASCII only": lambda s: json.dumps(s)[1:-1],
    "JSON, Unicode kept": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "JSON, slash escaped": lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
    "base64": b64,
    "base64 unpadded": lambda s: b64(s, pad=False),
    "base64 URL-safe": lambda s: b64(s, urlsafe=True),
    "base64 URL-safe unpadded": lambda s: b64(s, urlsafe=True, pad=False),
}


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_a_secret_is_masked_in_each_of_its_encoded_forms(encode: Callable[[str], str]) -> None:
    form = encode(SECRET)
    assert redact(f"before {form} after", SECRETS) == f"before {MASK} after"


@pytest.mark.parametrize("urlsafe", [False, True], ids=["standard", "url-safe"])
@pytest.mark.parametrize("before", range(6), ids=lambda n: f"{n}-bytes-before")
@pytest.mark.parametrize("after", range(3), ids=lambda n: f"{n}-bytes-after")
def test_base64_of_a_payload_holding_a_secret_loses_the_secret_at_every_alignment(
    urlsafe: bool, before: int, after: int
) -> None:
    payload = "{" * before + SECRET + "}" * after
    encoded = b64(payload, urlsafe=urlsafe)
    masked = redact(encoded, SECRETS)
    assert MASK in masked
    # what is left is the neighbours' characters and at most one mixed character a side
    secret_chars = 8 * len(SECRET.encode()) // 6
    assert len(masked) - len(MASK) <= len(encoded) - (secret_chars - 2)


def test_a_multi_line_secret_is_masked_whole_and_line_by_line() -> None:
    secrets = frozenset([PEM])
    assert redact(f"key:\n{PEM}done", secrets) == f"key:\n{MASK}done"
    assert redact(json.dumps({"key": PEM}), secrets) == json.dumps({"key": MASK})
    assert redact(PEM.replace("\n", "\r\n"), secrets) == MASK
    body = PEM.splitlines()[2]
    assert redact(f"stderr: {body} (line 3)", secrets) == f"stderr: {MASK} (line 3)"
    masked_lines = [redact(line, secrets) for line in PEM.splitlines()]
    assert masked_lines == [MASK] * 5, "each line is a secret of its own"


def test_a_secret_containing_another_is_masked_whole() -> None:
    secrets = frozenset(["abcd1234", "abcd1234efgh5678"])
    assert redact("x abcd1234efgh5678 y abcd1234 z", secrets) == f"x {MASK} y {MASK} z"
    assert redact(quote("abcd1234efgh5678/"), frozenset(["abcd1234efgh5678/"])) == MASK


def test_values_too_short_to_be_secrets_are_left_alone() -> None:
    assert redact("a 123 b", frozenset(["123", ""])) == "a 123 b"
    assert redactor(frozenset(["abc"])).pattern is None


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + " \n.,:/{}\"'=+-", k=size))


@pytest.fixture
def fifty() -> Iterator[frozenset[str]]:
    rng = random.Random(19)
    alphabet = string.ascii_letters + string.digits + "+/=-_"
    yield frozenset("".join(rng.choices(alphabet, k=rng.randint(12, 40))) for _ in range(50))


def test_ordinary_text_passes_unchanged_through_fifty_secrets(fifty: frozenset[str]) -> None:
    text = random_text(random.Random(7), 4096)
    assert redact(text, fifty) == text
    planted = text[:2000] + quote(sorted(fifty)[3], safe="") + text[2000:]
    assert redact(planted, fifty) == text[:2000] + MASK + text[2000:]


def test_a_cut_text_keeps_no_head_of_a_secret_at_the_cut() -> None:
    mask = redactor(SECRETS)
    for start in range(90, 101):
        text = "x" * start + SECRET + "y" * 500
        clipped = mask.clipped(text, 100)
        assert clipped.startswith("x" * start)
        assert SECRET[:3] not in clipped
        assert clipped.endswith("more characters cut]")
    assert mask.clipped("short " + SECRET, 100) == "short " + MASK


def test_audit_arguments_are_masked_in_every_form_and_capped(fifty: frozenset[str]) -> None:
    server = frozenset([SECRET])
    small = redaction.audit_arguments({"token": b64(SECRET), "n": 1}, server)
    assert json.loads(small) == {"n": 1, "token": MASK}, "small arguments stay JSON"
    huge = {"blob": "z" * 4_000_000, "key": quote(SECRET, safe="")}
    row = redaction.audit_arguments(huge, server)
    assert len(row) < 8192 + 100
    assert row.endswith("more characters cut]")
    assert SECRET not in row and quote(SECRET, safe="") not in row
    result = redaction.audit_result("r" * 10_000 + SECRET, server)
    assert len(result) < 8192 + 100 and "cut]" in result


def test_the_registry_masks_registered_secrets_in_trees_and_texts() -> None:
    value = "reg-" + "".join(random.Random(3).choices(string.ascii_letters, k=20))
    redaction.register_secrets([value])
    assert (
        redaction.redact(f"GET /mcp?key={quote(value + '/', safe='')}") == f"GET /mcp?key={MASK}%2F"
    )
    tree = {"name": value, value: [b64(value)], "n": 3}
    assert redaction.redact_tree(tree) == {"name": MASK, MASK: [MASK], "n": 3}


def test_the_stderr_tail_masks_a_secret_printed_across_lines() -> None:
    tail = Tail(secrets=frozenset([PEM]))
    for line in f"loading key\n{PEM}key loaded\n".encode().splitlines():
        tail.feed(line)
    shown = tail.text() or ""
    assert shown.splitlines() == ["loading key", *[MASK] * 5, "key loaded"]


def test_the_stderr_tail_masks_a_secret_registered_after_its_line_was_kept() -> None:
    late = "late-" + "".join(random.Random(5).choices(string.ascii_letters, k=20))
    tail = Tail()
    tail.feed(f"token={b64(late)}".encode())
    redaction.register_secrets([late])
    assert tail.text() == f"token={MASK}"
    assert tail.last() == f"token={MASK}"


def test_the_stderr_tail_clips_a_long_line_without_leaving_a_secret_head() -> None:
    tail = Tail(secrets=SECRETS, max_line=100)
    tail.feed(("x" * 95 + SECRET + "y" * 50_000).encode())
    shown = tail.text() or ""
    assert len(shown.encode()) <= 100
    assert shown.startswith("x" * 95) and SECRET[:3] not in shown
