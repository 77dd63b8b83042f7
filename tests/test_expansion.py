"""${VAR} expansion: compose semantics, errors with offsets, secrets that never print."""

from __future__ import annotations

import pytest

from jackfield.core.connection import redact, resolve
from jackfield.core.expansion import Secret, expand, problems, references
from jackfield.spec.models import MCPServerSpec


@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-dflt}", {}, "dflt"),
        ("${A:-dflt}", {"A": ""}, "dflt"),
        ("${A:-}", {}, ""),
        ("${A}", {"A": ""}, ""),
        ("$${A}", {}, "${A}"),
        ("$A and $", {}, "$A and $"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
    ],
)
def test_expand_follows_compose_semantics(text: str, env: dict[str, str], want: str) -> None:
    assert expand(text, env) == want


def test_an_unset_variable_is_a_problem_naming_it_at_its_offset() -> None:
    found = problems("Bearer ${TOKEN}", {})
    assert len(found) == 1
    assert found[0].offset == 7 and "TOKEN is not set" in found[0].message
    with pytest.raises(KeyError):
        expand("${TOKEN}", {})


@pytest.mark.parametrize("text", ["${}", "${1A}", "${A B}", "${unclosed"])
def test_malformed_references_are_problems(text: str) -> None:
    assert "malformed" in problems(text, {})[0].message


def test_references_lists_names_and_defaults() -> None:
    refs = references("${A} ${B:-x} $${C}")
    assert [(r.name, r.default) for r in refs] == [("A", None), ("B", "x")]


def test_secret_never_shows_itself() -> None:
    s = Secret("hunter22")
    assert "hunter22" not in f"{s} {s!r} {[s]} { ({'k': s}) }"
    assert s.reveal() == "hunter22" and s == Secret("hunter22")


def test_resolve_wraps_every_expanded_value_and_lists_environment_secrets() -> None:
    spec = MCPServerSpec(
        transport="http",
        url="https://x/${PATH_PART:-mcp}",
        headers={"Authorization": "Bearer ${TOKEN}"},
    )
    conn = resolve(spec, {"TOKEN": "tok-123456"})
    assert conn.url is not None and conn.url.reveal() == "https://x/mcp"
    assert conn.headers["Authorization"].reveal() == "Bearer tok-123456"
    assert conn.secrets == frozenset({"tok-123456"})  # the default is in git, not a secret
    assert "tok-123456" not in repr(conn)
    assert (
        redact("sent tok-123456 twice: tok-123456", conn.secrets) == "sent ******** twice: ********"
    )
