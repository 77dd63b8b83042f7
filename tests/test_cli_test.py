"""`jackfield test`: the real command against a temp config dir whose servers are
tests/servers/echo.py — as a subprocess (the console script) for the main flows, and through
`jackfield.cli.main` in this process for the refusals (same code, no interpreter start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jackfield.cli import main
from tests.conftest import REPO, run_jackfield

pytestmark = pytest.mark.timeout(90)


def server(name: str, *flags: str, extra: str = "") -> str:
    args = json.dumps(["-m", "tests.servers.echo", *flags])
    return (
        f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\n"
        f"spec:\n  command: {sys.executable}\n  args: {args}\n  cwd: {REPO}\n"
        f"  timeouts: {{connect: 30}}\n{extra}"
    )


def jackfield_test(config_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_jackfield(config_dir, "test", *args, timeout=80)


@pytest.fixture
def servers(config_dir: Path) -> Path:
    (config_dir / "servers.d" / "echo.yaml").write_text(
        server("echo", extra="  tools: {exclude: [big, env]}\n")
    )
    (config_dir / "servers.d" / "boom.yaml").write_text(server("boom", "--crash-on-start"))
    (config_dir / "servers.d" / "mute.yaml").write_text(server("mute", "--hang"))
    return config_dir


def test_a_ready_server_is_shown_with_its_tools_and_a_call_result(servers: Path) -> None:
    done = jackfield_test(servers, "echo", "--call", "echo", "--args", '{"text": "hello"}')

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("echo: Ready in ") and "server echo 1.0" in lines[0]
    assert lines[1] == "tools (6):"
    listed = [line.split(None, 1) for line in lines[2:8]]
    assert ["echo_echo", "Return the text unchanged."] in listed
    assert not any(name in ("echo_big", "echo_env") for name, _ in listed)
    assert lines[-2].startswith("call echo_echo -> ok in ")  # found by its upstream name
    assert lines[-1] == "hello"


def test_a_server_that_crashes_shows_its_error_and_stderr(servers: Path) -> None:
    done = jackfield_test(servers, "boom", str(servers))
    assert done.returncode == 1
    assert done.stderr.splitlines()[:4] == [
        "boom: Backoff",
        "last error: process exited with code 3: boom on start",
        "stderr (last lines):",
        "  boom on start",
    ]


def test_a_server_that_never_answers_times_out_as_told(servers: Path) -> None:
    done = jackfield_test(servers, "mute", "--timeout", "1")
    assert done.returncode == 1
    assert "last error: no answer within 1 s (connect timeout)" in done.stderr


def test_an_error_result_and_an_unknown_tool_fail(
    servers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = ["test", "echo", str(servers), "--call", "echo_fail", "--args", '{"message": "nope"}']
    assert main(failed) == 1
    out = capsys.readouterr().out
    assert "call echo_fail -> error in " in out and out.rstrip().endswith("nope")

    assert main(["test", "echo", str(servers), "--call", "big"]) == 1  # excluded by the filter
    err = capsys.readouterr().err
    assert "echo has no tool 'big' (tools: echo_add, echo_count, echo_echo," in err


def test_unknown_servers_bad_arguments_and_invalid_configs_are_refused(
    servers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", "nope", str(servers)]) == 1
    assert capsys.readouterr().err == (
        f"jackfield test: no MCPServer named 'nope' in {servers} (known: boom, echo, mute)\n"
    )

    assert main(["test", "echo", str(servers), "--call", "echo", "--args", "{text}"]) == 1
    assert "--args is not valid JSON" in capsys.readouterr().err
    assert main(["test", "echo", str(servers), "--call", "echo", "--args", "[1]"]) == 1
    assert "--args must be a JSON object" in capsys.readouterr().err

    (servers / "servers.d" / "bad.yaml").write_text(
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: bad}\nspec: {}\n"
    )
    assert main(["test", "bad", str(servers)]) == 1
    err = capsys.readouterr().err
    assert f"the config in {servers} is invalid:" in err and "bad.yaml:" in err


def test_tools_the_server_lists_but_cannot_offer_are_shown_withheld_with_why(
    config_dir: Path,
) -> None:
    args = json.dumps(["-m", "tests.servers.catalog", "--description-bytes", "20000"])
    (config_dir / "servers.d" / "big.yaml").write_text(
        f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: big}}\n"
        f"spec:\n  command: {sys.executable}\n  args: {args}\n  cwd: {REPO}\n"
    )
    done = jackfield_test(config_dir, "big")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "tools (1):" and lines[2].split()[0] == "big_ok"
    assert lines[3] == "withheld (1):"
    assert lines[4].startswith("  'long_doc': withheld: description is 20,000 bytes"), lines[4]
