"""`jackfield validate`, `schema` and `import claude-desktop`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jackfield.spec.schema import render_all
from tests.support.config import server_yaml, write

REPO = Path(__file__).resolve().parent.parent
JACKFIELD = [sys.executable, "-m", "jackfield.cli"]


def run(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*JACKFIELD, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_validate_passes_on_the_repo() -> None:
    got = run("validate", ".")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "valid: agent assistant" in got.stdout


@pytest.mark.parametrize(
    ("body", "line", "col", "needle"),
    [
        ("  comand: python\n", 5, 3, "did you mean 'command'"),
        ("  command: [python\n", 5, 12, "YAML syntax error"),
        ("  command: x\n  env: {T: '${UNSET_FOR_TEST}'}\n", 6, 13, "UNSET_FOR_TEST is not set"),
        ("  transport: http\n", 5, 3, "needs 'url'"),
        ("  transport: stdio\n", 5, 3, "needs 'command'"),
    ],
)
def test_validate_fails_with_the_position(
    config_dir: Path, body: str, line: int, col: int, needle: str
) -> None:
    write(config_dir, {"servers.d/bad.yaml": server_yaml("bad", body)})
    got = run("validate", str(config_dir))
    assert got.returncode == 1
    (only,) = got.stdout.splitlines()
    assert only.startswith(f"{config_dir}/servers.d/bad.yaml:{line}:{col}: "), only
    assert needle in only


def test_validate_names_a_duplicate_with_both_places(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("x"), "servers.d/b.yaml": server_yaml("x")})
    got = run("validate", ".", cwd=config_dir)
    assert got.returncode == 1
    assert got.stdout.strip() == (
        "servers.d/b.yaml:3:18: duplicate MCPServer name 'x'; first declared at servers.d/a.yaml:1"
    )


def test_validate_reads_the_config_dir_from_settings(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a", "  comand: x\n")})
    got = run("validate", cwd=REPO, env={"JACKFIELD_CONFIG_DIR": str(config_dir)})
    assert got.returncode == 1 and "servers.d/a.yaml:5:3" in got.stdout


def test_the_committed_schemas_are_current() -> None:
    for name, text in render_all().items():
        assert (REPO / "schemas" / name).read_text() == text, (
            f"schemas/{name} is stale: run 'jackfield schema'"
        )


def test_schema_check_fails_when_stale_and_writing_fixes_it(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    assert run("schema", "--check", "--out", str(out)).returncode == 1
    assert run("schema", "--out", str(out)).returncode == 0
    assert run("schema", "--check", "--out", str(out)).returncode == 0
    schema = json.loads((out / "server.schema.json").read_text())
    assert "transport" in schema["$defs"]["MCPServerSpec"]["properties"]


CLAUDE = {
    "mcpServers": {
        "GitHub Tools": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_plantedsecret123", "LOG": "debug"},
        },
        "remote": {
            "url": "https://example.com/mcp",
            "headers": {"Authorization": "Bearer sk-plantedsecret456"},
        },
        "events": {"type": "sse", "url": "https://example.com/sse"},
    }
}


def test_import_writes_valid_files_without_the_literal_secrets(
    config_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "claude.json"
    source.write_text(json.dumps(CLAUDE))
    out = config_dir / "servers.d"
    got = run("import", "claude-desktop", str(source), "--out", str(out))
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "events.yaml",
        "github-tools.yaml",
        "remote.yaml",
    ]
    everything = "".join(p.read_text() for p in out.iterdir()) + got.stdout + got.stderr
    assert "plantedsecret" not in everything
    assert "GITHUB_PERSONAL_ACCESS_TOKEN" in got.stdout and "REMOTE_TOKEN" in got.stdout
    assert "Bearer ${REMOTE_TOKEN}" in (out / "remote.yaml").read_text()
    assert "transport: sse" in (out / "events.yaml").read_text()
    env = {"GITHUB_PERSONAL_ACCESS_TOKEN": "x", "REMOTE_TOKEN": "y"}
    assert run("validate", str(config_dir), env=env).returncode == 0


def test_import_refuses_to_overwrite_unless_forced(config_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "claude.json"
    source.write_text(json.dumps({"mcpServers": {"a": {"command": "x"}}}))
    out = config_dir / "servers.d"
    (out / "a.yaml").write_text("keep me")
    got = run("import", "claude-desktop", str(source), "--out", str(out))
    assert got.returncode == 1 and "--force" in got.stderr
    assert (out / "a.yaml").read_text() == "keep me"
    assert (
        run("import", "claude-desktop", str(source), "--out", str(out), "--force").returncode == 0
    )
    assert "command: x" in (out / "a.yaml").read_text()


def test_import_reports_bad_json_with_its_position(tmp_path: Path) -> None:
    source = tmp_path / "bad.json"
    source.write_text('{"mcpServers": {\n  "a": }')
    got = run("import", "claude-desktop", str(source), "--out", str(tmp_path / "out"))
    assert got.returncode == 1 and f"{source}:2:8: invalid JSON" in got.stderr


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "jackfield"  # installed beside the interpreter
    got = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert got.returncode == 0 and got.stdout.startswith("jackfield ")
