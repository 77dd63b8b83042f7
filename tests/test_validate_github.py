"""`jackfield validate --format github`: one GitHub Actions annotation per error or warning, at
the file (relative to where it runs), line and column the text format gives."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from jackfield.core.annotations import annotation, escape_data, escape_property
from tests.conftest import run_cli
from tests.support.config import server_yaml, write

BROKEN_YAML = server_yaml("broken", "  command: [python\n")
TYPO = server_yaml("typo", "  comand: python\n")


def validate_github(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cwd, "validate", "--format", "github", *args)


def test_each_error_is_an_annotation_at_its_file_line_and_column(config_dir: Path) -> None:
    write(config_dir, {"servers.d/broken.yaml": BROKEN_YAML, "servers.d/typo.yaml": TYPO})
    got = validate_github(config_dir, ".")
    assert got.returncode == 1
    assert got.stdout.splitlines() == [
        "::error file=servers.d/broken.yaml,line=5,col=12,title=jackfield validate::YAML syntax"
        " error: this '[' is never closed (expected ',' or ']', but got '<stream end>' at 6:1)",
        "::error file=servers.d/typo.yaml,line=5,col=3,title=jackfield validate::unknown key"
        " 'comand' in spec; did you mean 'command'?",
    ]
    assert got.stderr == "2 error(s)\n"
    # the same errors, at the same places, as the default format says them
    text = run_cli(config_dir, "validate", ".")
    assert text.returncode == 1
    assert [line.split(": ", 1)[0] for line in text.stdout.splitlines()] == [
        "servers.d/broken.yaml:5:12",
        "servers.d/typo.yaml:5:3",
    ]


@pytest.mark.parametrize("absolute", [False, True], ids=["relative-dir", "absolute-dir"])
def test_the_path_is_relative_to_where_it_runs(config_dir: Path, absolute: bool) -> None:
    # as in a repository whose config lives in a subdirectory: the path must be the repo's
    write(config_dir, {"servers.d/typo.yaml": TYPO})
    repo = config_dir.parent
    got = validate_github(repo, str(config_dir) if absolute else "config")
    assert got.returncode == 1
    assert got.stdout.startswith(
        "::error file=config/servers.d/typo.yaml,line=5,col=3,title=jackfield validate::"
    )


def test_properties_and_message_are_escaped_as_the_actions_toolkit_does(config_dir: Path) -> None:
    # a ',' or ':' in the file name would end the property; a '%' in the message is an escape
    write(
        config_dir,
        {"servers.d/a,b:c.yaml": server_yaml("odd", "  command: x\n  '50%': 1\n")},
    )
    got = validate_github(config_dir, ".")
    assert got.returncode == 1
    (line,) = got.stdout.splitlines()
    assert line.startswith(
        "::error file=servers.d/a%2Cb%3Ac.yaml,line=6,col=3,title=jackfield validate::"
        "unknown key '50%25' in spec; allowed keys: description, "
    ), line


def test_a_warning_is_a_warning_annotation_and_still_passes(config_dir: Path) -> None:
    write(config_dir, {"agent.yaml": (config_dir / "agent.yaml").read_text() + (
        "  turn:\n    allowInterruptions: false\n"
    )})  # fmt: skip
    got = validate_github(config_dir, ".")
    assert got.returncode == 0, got.stdout + got.stderr
    warning, valid = got.stdout.splitlines()
    # ':' and ',' in the message stay: only the properties escape them
    assert warning.startswith(
        "::warning file=agent.yaml,line=7,col=5,title=jackfield validate::allowInterruptions:"
        " false cannot be fully honoured with llm.mode: realtime (the Realtime API"
    ), warning
    assert valid.startswith("valid: agent assistant, 0 server(s)")


def test_a_valid_config_prints_what_the_text_format_prints(config_dir: Path) -> None:
    write(config_dir, {"servers.d/ok.yaml": server_yaml("ok")})
    github, text = validate_github(config_dir), run_cli(config_dir, "validate")
    assert github.returncode == text.returncode == 0
    assert github.stdout == text.stdout
    assert github.stdout.startswith("valid: agent assistant, 1 server(s)")


# --- the pure formatter -----------------------------------------------------------------------


def test_data_escapes_percent_and_line_breaks_only() -> None:
    assert escape_data("100% done\r\nnext: a, b") == "100%25 done%0D%0Anext: a, b"


def test_properties_also_escape_colon_and_comma() -> None:
    assert escape_property("C:\\x,y%\n") == "C%3A\\x%2Cy%25%0A"


def test_percent_is_escaped_first_so_escapes_are_not_doubled_by_later_ones() -> None:
    assert escape_data("%0A\n") == "%250A%0A"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"file": "a.yaml", "line": 3, "col": 7, "title": "t"},
            "::error file=a.yaml,line=3,col=7,title=t::m",
        ),
        ({"file": "a.yaml", "line": 0, "col": 0}, "::error file=a.yaml::m"),
        ({"file": "a.yaml", "line": 2, "col": 0}, "::error file=a.yaml,line=2::m"),
        ({"line": 2, "col": 3}, "::error::m"),  # a position means nothing without a file
        ({}, "::error::m"),
    ],
)
def test_missing_or_meaningless_properties_are_left_out(
    kwargs: dict[str, Any], expected: str
) -> None:
    assert annotation("error", "m", **kwargs) == expected


def test_a_multi_line_message_stays_one_annotation() -> None:
    got = annotation("warning", "first\nsecond", file="x,y.yaml", line=1, col=1)
    assert got == "::warning file=x%2Cy.yaml,line=1,col=1::first%0Asecond"
    assert "\n" not in got
