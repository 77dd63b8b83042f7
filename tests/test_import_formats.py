"""`jackfield import claude-code|vscode|cursor|registry FILE`, run as a user runs them on
real-world-shaped files (tests/fixtures/import/), then `jackfield validate` on what they wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jackfield.core.import_formats import convert
from jackfield.core.importing import ImportRefused, dns_name, env_name, loads_jsonc
from tests.conftest import run_cli

SAMPLES = Path(__file__).parent / "fixtures" / "import"
PLANTED = "PLANTED"
"""Every literal secret in the samples contains this; none may reach a file or the output."""


def jackfield_import(config_dir: Path, fmt: str, sample: str | Path, *args: str) -> Any:
    source = sample if isinstance(sample, Path) else SAMPLES / sample
    return run_cli(config_dir, "import", fmt, str(source), "--out", "servers.d", *args)


def variables_of(stdout: str) -> list[str]:
    """The variables the command says to set, in its order."""
    _, _, tail = stdout.partition("set these environment variables")
    return [line.strip() for line in tail.splitlines()[1:] if line.startswith("  ")]


def specs(config_dir: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((config_dir / "servers.d").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        assert path.stem == document["metadata"]["name"]
        found[path.stem] = document["spec"]
    return found


def assert_valid_once_set(
    config_dir: Path, variables: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jackfield validate` passes once the printed variables are set (to placeholders, as the
    example workflow does), and no planted secret is in any file the import wrote."""
    for var in variables:
        monkeypatch.setenv(var, "placeholder")
    got = run_cli(config_dir, "validate", ".")
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.startswith("valid: agent assistant")
    for path in (config_dir / "servers.d").iterdir():
        assert PLANTED not in path.read_text(), path


def test_claude_code_keeps_its_references_and_takes_literal_secrets_out(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = jackfield_import(config_dir, "claude-code", "claude-code.mcp.json")
    assert got.returncode == 0, got.stderr
    assert PLANTED not in got.stdout + got.stderr
    variables = variables_of(got.stdout)
    assert variables == [
        "GITHUB_TOKEN",
        "SENTRY_API_KEY",
        "PGPASSWORD",
        "DATABASE_URL",
        "AIRTABLE_WORK_API_KEY",
    ]
    assert specs(config_dir) == {
        "airtable-work": {
            "transport": "stdio",
            "command": "npx",
            "args": ["-y", "airtable-mcp-server", "--api-key", "${AIRTABLE_WORK_API_KEY}"],
            "env": {"AIRTABLE_BASE": "${AIRTABLE_BASE:-appXYZ}"},
        },
        "github": {
            "transport": "http",
            "url": "https://api.githubcopilot.com/mcp/",
            "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}"},
        },
        "postgres": {
            "transport": "stdio",
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-postgres", "${DATABASE_URL}"],
            "env": {"PGPASSWORD": "${PGPASSWORD}", "LOG_LEVEL": "${LOG_LEVEL:-info}"},
        },
        "sentry": {
            "transport": "sse",
            "url": "https://mcp.sentry.dev/sse?api_key=${SENTRY_API_KEY}",
        },
    }
    assert_valid_once_set(config_dir, variables, monkeypatch)


def test_vscode_inputs_become_variables_and_the_workspace_the_config_dir(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = jackfield_import(config_dir, "vscode", "vscode.mcp.json")
    assert got.returncode == 0, got.stderr
    assert PLANTED not in got.stdout + got.stderr
    variables = variables_of(got.stdout)
    # the password inputs, the literal token, ${env:MEMORY_FILE} and ${userHome}; the pickString
    # input has a default, so it needs nothing
    assert sorted(variables) == [
        "GITHUB_PAT",
        "HOME",
        "MEMORY_FILE",
        "PERPLEXITY_KEY",
        "SLACK_BOT_TOKEN",
    ]
    found = specs(config_dir)
    assert found["github"]["headers"] == {"Authorization": "Bearer ${GITHUB_PAT}"}
    assert found["perplexity"]["env"] == {
        "PERPLEXITY_API_KEY": "${PERPLEXITY_KEY}",
        "LOG_LEVEL": "${LOG_LEVEL:-info}",
    }
    assert found["fs"] == {
        "transport": "stdio",
        "command": "npx",
        "args": ["-y", "@modelcontextprotocol/server-filesystem", "./docs"],
        "env": {"HOME_DIR": "${HOME}", "SLACK_BOT_TOKEN": "${SLACK_BOT_TOKEN}"},
        "cwd": ".",
    }
    assert found["memory"]["env"] == {"MEMORY_FILE_PATH": "${MEMORY_FILE}"}
    warnings = got.stderr.splitlines()
    assert any("servers.fs: envFile is not imported" in w for w in warnings), got.stderr
    assert any("${workspaceFolder} became '.'" in w for w in warnings), got.stderr
    assert_valid_once_set(config_dir, [v for v in variables if v != "HOME"], monkeypatch)


def test_cursor_env_references_and_guessed_transports(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = jackfield_import(config_dir, "cursor", "cursor.mcp.json")
    assert got.returncode == 0, got.stderr
    assert PLANTED not in got.stdout + got.stderr
    variables = variables_of(got.stdout)
    assert variables == ["BRAVE_API_KEY", "SUPABASE_ACCESS_TOKEN", "NOTION_X_API_KEY"]
    found = specs(config_dir)
    assert found["brave-search"]["env"] == {"BRAVE_API_KEY": "${BRAVE_API_KEY}"}
    assert found["linear"] == {"transport": "sse", "url": "https://mcp.linear.app/sse"}
    assert found["supabase"]["args"][-2:] == ["--access-token", "${SUPABASE_ACCESS_TOKEN}"]
    assert found["notion"] == {
        "transport": "http",
        "url": "https://mcp.notion.com/mcp",
        "headers": {"X-API-Key": "${NOTION_X_API_KEY}"},
    }
    assert_valid_once_set(config_dir, variables, monkeypatch)


FILESYSTEM_DESCRIPTION = (
    "Node.js server implementing Model Context Protocol (MCP) for filesystem operations."
)


@pytest.mark.parametrize(
    ("choice", "variables", "spec"),
    [
        pytest.param(
            (),
            [],
            {
                "transport": "stdio",
                "command": "npx",
                "args": [
                    "-y",
                    "@modelcontextprotocol/server-filesystem@2025.8.21",
                    "${SERVER_FILESYSTEM_TARGET_DIR:-/srv/shared}",
                ],
                "env": {"LOG_LEVEL": "${LOG_LEVEL:-info}"},
            },
            id="default-first-runnable-package-npm",
        ),
        pytest.param(
            ("--package", "2"),
            ["SERVER_FILESYSTEM_SOURCE_PATH"],
            {
                "transport": "stdio",
                "command": "docker",
                "args": [
                    "run",
                    "-i",
                    "--rm",
                    "-e",
                    "LOG_LEVEL",
                    "--mount",
                    "type=bind,src=${SERVER_FILESYSTEM_SOURCE_PATH},"
                    "dst=${SERVER_FILESYSTEM_TARGET_PATH:-/project}",
                    "mcp/filesystem:2025.8.21",
                    "/project",
                ],  # fmt: skip
                "env": {"LOG_LEVEL": "${LOG_LEVEL:-info}"},
            },
            id="oci",
        ),
        pytest.param(
            ("--remote", "0"),
            ["SERVER_FILESYSTEM_AUTHORIZATION"],
            {
                "transport": "http",
                "url": "https://${SERVER_FILESYSTEM_HOST:-fs.example.com}/mcp",
                "headers": {
                    "Authorization": "${SERVER_FILESYSTEM_AUTHORIZATION}",
                    "X-Region": "${SERVER_FILESYSTEM_X_REGION:-us-east-1}",
                },
            },
            id="remote-streamable-http",
        ),
        pytest.param(
            ("--remote", "1"),
            [],
            {"transport": "sse", "url": "https://fs.example.com/sse"},
            id="remote-sse",
        ),
    ],
)
def test_registry_entry_becomes_one_server_from_the_chosen_package_or_remote(
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    choice: tuple[str, ...],
    variables: list[str],
    spec: dict[str, Any],
) -> None:
    got = jackfield_import(config_dir, "registry", "registry-filesystem.server.json", *choice)
    assert got.returncode == 0, got.stderr
    assert variables_of(got.stdout) == variables
    assert specs(config_dir) == {
        "server-filesystem": {"description": FILESYSTEM_DESCRIPTION, **spec}
    }
    text = (config_dir / "servers.d" / "server-filesystem.yaml").read_text()
    assert "# from io.github.modelcontextprotocol/server-filesystem 2025.8.21" in text
    assert "also in the file" in got.stderr  # says what else it could have imported
    assert_valid_once_set(config_dir, variables, monkeypatch)


def test_registry_pypi_package_with_secret_env_and_arguments(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = jackfield_import(config_dir, "registry", "registry-weather.server.json")
    assert got.returncode == 0, got.stderr
    assert variables_of(got.stdout) == ["WEATHER_MCP_API_TOKEN", "WEATHER_API_KEY"]
    assert specs(config_dir)["weather-mcp"] == {
        "description": "Python MCP server for weather data access",
        "transport": "stdio",
        "command": "uvx",
        "args": [
            "weather-mcp-server==0.5.0",
            "--units",
            "${WEATHER_MCP_UNITS:-celsius}",
            "--api-token",
            "${WEATHER_MCP_API_TOKEN}",
        ],
        "env": {
            "WEATHER_API_KEY": "${WEATHER_API_KEY}",
            "WEATHER_UNITS": "${WEATHER_UNITS:-celsius}",
        },
    }
    assert_valid_once_set(config_dir, variables_of(got.stdout), monkeypatch)


def test_registry_remote_only_entry_from_the_registry_examples(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the registry's own examples/valid/with-remote.json, wrapped as its API answers
    entry = {
        "server": {
            "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
            "name": "io.github.user/remote-weather",
            "description": "Remote MCP server reachable over streamable HTTP.",
            "version": "2.1.0",
            "remotes": [
                {
                    "type": "streamable-http",
                    "url": "https://{host}/mcp",
                    "headers": [{"name": "Authorization", "isSecret": True, "isRequired": True}],
                    "variables": {
                        "host": {"description": "API host", "default": "api.example.com"}
                    },
                }
            ],
        },
        "_meta": {"io.modelcontextprotocol.registry/official": {"isLatest": True}},
    }
    source = tmp_path / "server.json"
    source.write_text(json.dumps(entry))
    got = jackfield_import(config_dir, "registry", source)
    assert got.returncode == 0, got.stderr
    assert specs(config_dir)["remote-weather"]["url"] == (
        "https://${REMOTE_WEATHER_HOST:-api.example.com}/mcp"
    )
    assert variables_of(got.stdout) == ["REMOTE_WEATHER_AUTHORIZATION"]
    assert_valid_once_set(config_dir, variables_of(got.stdout), monkeypatch)


@pytest.mark.parametrize(
    ("fmt", "text", "error"),
    [
        ("cursor", '{"mcpServers": {\n  "a": }', "{file}:2:8: invalid JSON: Expecting value"),
        (
            "vscode",
            '{\n  // a comment keeps the position\n  "servers": {"a": {"command": "x",,}}}',
            "{file}:3:36: invalid JSON: Expecting property name enclosed in double quotes",
        ),
        (
            "claude-code",
            '{"servers": {"a": {"command": "x"}}}',
            "{file}: not imported: no 'mcpServers' object (it has 'servers': is it a VS Code"
            " file?)",
        ),
        (
            "vscode",
            '{"mcpServers": {"a": {"command": "x"}}}',
            "{file}: not imported: no 'servers' object (it has 'mcpServers': is it a Claude or"
            " Cursor file?)",
        ),
        (
            "claude-code",
            '{"name": "io.github.a/b", "packages": []}',
            "{file}: not imported: no 'mcpServers' object (it looks like a registry server.json:"
            " use 'import registry')",
        ),
        (
            "cursor",
            "[]",
            "{file}: not imported: expected a JSON object (a Cursor mcp.json with 'mcpServers')",
        ),  # fmt: skip
        (
            "claude-code",
            '{"mcpServers": {"ok": {"command": "x"}, "a": {"type": "grpc", "url": "x"}}}',
            "{file}: not imported: mcpServers.a: unknown type 'grpc' (stdio, http or sse)",
        ),
        (
            "claude-code",
            '{"mcpServers": {"a": {"type": "http", "command": "x"}}}',
            "{file}: not imported: mcpServers.a: has no 'url'",
        ),
        (
            "vscode",
            '{"servers": {"a": {"command": "x", "args": ["${command:pickFile}"]}}}',
            "{file}: not imported: servers.a: ${command:pickFile} in args has no jackfield"
            " equivalent",
        ),
        (
            "cursor",
            '{"mcpServers": {"a": {"url": "https://${workspaceFolder}/mcp"}}}',
            "{file}: not imported: mcpServers.a: ${workspaceFolder} in url has no jackfield"
            " equivalent",
        ),
        (
            "claude-code",
            '{"mcpServers": {}}',
            "{file}: not imported: 'mcpServers' is empty: nothing to import",
        ),  # fmt: skip
        (
            "registry",
            '{"name": "io.github.a/b", "packages": [{"registryType": "mcpb", "identifier": "x",'
            ' "transport": {"type": "stdio"}}]}',
            "{file}: not imported: nothing jackfield can run: packages[0]: registryType 'mcpb'"
            " is not one of npm, pypi, oci, nuget",
        ),
        (
            "registry",
            '{"name": "io.github.a/b", "version_detail": {"version": "1"}, "packages": []}',
            "{file}: not imported: this server.json uses the draft snake_case schema (before"
            " 2025-09-29); the registry's current schema uses camelCase (registryType,"
            " transport, ...)",
        ),
        (
            "registry",
            '{"mcpServers": {"a": {"command": "x"}}}',
            "{file}: not imported: no 'name' like 'io.github.owner/server': not a registry"
            " server.json",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    config_dir: Path, tmp_path: Path, fmt: str, text: str, error: str
) -> None:
    source = tmp_path / "input.json"
    source.write_text(text)
    got = jackfield_import(config_dir, fmt, source)
    assert got.returncode == 1
    assert got.stderr.splitlines() == [error.replace("{file}", str(source))]
    assert got.stdout == ""
    assert list((config_dir / "servers.d").iterdir()) == []


def test_registry_package_and_remote_options_are_checked(config_dir: Path) -> None:
    got = jackfield_import(
        config_dir, "registry", "registry-filesystem.server.json", "--package", "7"
    )
    assert got.returncode == 1 and "there is no packages[7] (the file has 3)" in got.stderr
    got = jackfield_import(config_dir, "cursor", "cursor.mcp.json", "--remote", "0")
    assert got.returncode == 1 and "--package and --remote are for 'import registry'" in got.stderr
    assert list((config_dir / "servers.d").iterdir()) == []


def test_an_unreadable_file_is_one_line(config_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    got: subprocess.CompletedProcess[str] = jackfield_import(config_dir, "vscode", missing)
    assert got.returncode == 1
    assert got.stderr.splitlines() == [f"{missing}: cannot read: No such file or directory"]


# --- the pure pieces --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("GitHub Tools", "github-tools"),
        ("io.github.owner/server", "io-github-owner-server"),
        ("--", "server"),
        ("x" * 80, "x" * 63),
        ("Airtable (work)", "airtable-work"),
    ],
)
def test_names_become_valid_metadata_names(raw: str, name: str) -> None:
    assert dns_name(raw) == name


def test_env_names_are_upper_snake_and_never_start_with_a_digit() -> None:
    assert env_name("github-pat") == "GITHUB_PAT"
    assert env_name("my server", "--api-key") == "MY_SERVER_API_KEY"
    assert env_name("1password") == "_1PASSWORD"


def test_names_that_sanitise_alike_get_a_suffix_and_a_warning() -> None:
    out = convert("claude-code", {"mcpServers": {"A b": {"command": "x"}, "a-b": {"command": "y"}}})
    assert sorted(out.files) == ["a-b-2.yaml", "a-b.yaml"]
    assert out.warnings == ["a-b: name 'a-b' already used; written as 'a-b-2'"]


def test_jsonc_comments_and_trailing_commas_keep_positions_and_strings() -> None:
    text = '{\n  // "x": 1,\n  "a": "// not a comment /* nor this */", /* b */\n  "c": [1, 2,],\n}'
    assert loads_jsonc(text) == {"a": "// not a comment /* nor this */", "c": [1, 2]}
    with pytest.raises(json.JSONDecodeError) as caught:
        loads_jsonc('{\n  /* one\n  two */ "a": }')
    assert (caught.value.lineno, caught.value.colno) == (3, 15)  # the "}" after "a":


def test_an_input_never_declared_is_still_a_variable_with_a_warning() -> None:
    out = convert("vscode", {"servers": {"a": {"command": "x", "env": {"K": "${input:tok}"}}}})
    assert out.variables == ["TOK"]
    assert out.warnings == ["servers.a: ${input:tok} is not declared in 'inputs'"]


def test_a_secret_value_written_into_a_registry_entry_is_not_copied() -> None:
    entry = {
        "name": "io.github.a/b",
        "packages": [
            {
                "registryType": "npm",
                "identifier": "b",
                "version": "1.0.0",
                "transport": {"type": "stdio"},
                "environmentVariables": [
                    {"name": "B_KEY", "value": "PLANTEDkey", "isSecret": True}
                ],
            }
        ],
    }
    with pytest.raises(ImportRefused, match="--package and --remote"):
        convert("cursor", {"mcpServers": {}}, package=0)
    out = convert("registry", entry)
    assert PLANTED not in "".join(out.files.values())
    assert out.variables == ["B_KEY"]


def _one_package(**package: Any) -> dict[str, Any]:
    entry = {"name": "io.github.a/tool", "packages": [{"transport": {"type": "stdio"}, **package}]}
    (text,) = convert("registry", entry).files.values()
    spec: dict[str, Any] = yaml.safe_load(text)["spec"]
    return spec


@pytest.mark.parametrize(
    ("package", "command", "args"),
    [
        (
            {"registryType": "nuget", "identifier": "Knapcode.SampleMcpServer", "version": "0.4.0",
             "packageArguments": [{"type": "positional", "value": "mcp"},
                                  {"type": "positional", "value": "start"}]},
            "dnx",
            ["Knapcode.SampleMcpServer@0.4.0", "--yes", "--", "mcp", "start"],
        ),
        (
            {"registryType": "oci", "identifier": "ghcr.io/acme/tool:1.2.3", "version": "1.2.3"},
            "docker",
            ["run", "-i", "--rm", "ghcr.io/acme/tool:1.2.3"],
        ),
        (
            {"registryType": "pypi", "identifier": "mcp-server-time", "version": "2025.9.25"},
            "uvx",
            ["mcp-server-time==2025.9.25"],
        ),
        (
            {"registryType": "npm", "identifier": "tool", "version": "1.0.0", "runtimeHint": "bunx",
             "packageArguments": [{"type": "named", "name": "--stdio", "format": "boolean",
                                   "default": "true"},
                                  {"type": "named", "name": "--verbose", "format": "boolean"}]},
            "bunx",
            ["tool@1.0.0", "--stdio"],
        ),
    ],
)  # fmt: skip
def test_each_registry_type_starts_with_its_runner(
    package: dict[str, Any], command: str, args: list[str]
) -> None:
    spec = _one_package(**package)
    assert (spec["command"], spec["args"]) == (command, args)


def test_a_registry_package_that_serves_http_is_not_started_and_the_remote_is_taken() -> None:
    entry = {
        "name": "io.github.a/tool",
        "packages": [
            {"registryType": "npm", "identifier": "t", "version": "1",
             "transport": {"type": "streamable-http", "url": "http://localhost:3000/mcp"}}
        ],
        "remotes": [{"type": "sse", "url": "https://t.example.com/sse"}],
    }  # fmt: skip
    out = convert("registry", entry)
    assert "transport: sse" in out.files["tool.yaml"]
    with pytest.raises(ImportRefused, match="jackfield starts stdio servers only"):
        convert("registry", entry, package=0)


def test_the_mcp_object_of_a_vscode_settings_file_is_read() -> None:
    out = convert("vscode", {"mcp": {"servers": {"time": {"type": "stdio", "command": "t"}}}})
    assert list(out.files) == ["time.yaml"]
