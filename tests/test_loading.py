"""The loader: every error at the right file:line:column, all at once; what files count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jackfield.core.loading import MAX_FILE_BYTES, SourceFile, load_file
from tests.support.config import AGENT, errors_of, load_dir, server_yaml, write


def where(root: Path, env: dict[str, str] | None = None) -> list[tuple[str, int, int]]:
    return [(e.path, e.line, e.column) for e in errors_of(root, env)]


def test_the_repos_own_config_is_valid() -> None:
    snapshot = load_dir(Path(__file__).resolve().parent.parent)
    assert {"time", "files", "search"} <= set(snapshot.servers)
    assert snapshot.revision.startswith("sha256:")


@pytest.mark.faults
def test_a_misspelled_key_points_at_that_key_and_suggests_the_right_one(config_dir: Path) -> None:
    write(
        config_dir,
        {"servers.d/a.yaml": server_yaml("a", "  command: x\n  tools:\n    incude: []\n")},
    )
    (error,) = errors_of(config_dir)
    assert (error.path, error.line, error.column) == ("servers.d/a.yaml", 7, 5)
    assert "did you mean 'include'?" in error.message


@pytest.mark.faults
def test_a_yaml_syntax_error_has_its_position(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": "apiVersion: jackfield/v1\nkind: [MCPServer\n"})
    (error,) = errors_of(config_dir)
    # where the '[' opened, not where the parser gave up (the end of the file, 3:1)
    assert (error.path, error.line, error.column) == ("servers.d/a.yaml", 2, 7)
    assert error.message.startswith("YAML syntax error") and "at 3:1" in error.message


@pytest.mark.faults
def test_an_unset_variable_points_into_the_value(config_dir: Path) -> None:
    body = '  command: x\n  env:\n    TOKEN: "Bearer ${API_TOKEN}"\n'
    write(config_dir, {"servers.d/a.yaml": server_yaml("a", body)})
    (error,) = errors_of(config_dir)
    # the value starts at column 12 (its quote); "Bearer " is 7 more; the quote shifts by one
    assert (error.line, error.column) == (7, 20)
    assert "API_TOKEN is not set" in error.message
    assert errors_of(config_dir, {"API_TOKEN": "t"}) == []


def test_a_disabled_server_needs_no_variables(config_dir: Path) -> None:
    body = "  enabled: false\n  command: x\n  env: {TOKEN: '${API_TOKEN}'}\n"
    write(config_dir, {"servers.d/a.yaml": server_yaml("a", body)})
    assert errors_of(config_dir) == []


@pytest.mark.faults
def test_a_duplicate_name_across_files_names_both_places(config_dir: Path) -> None:
    write(
        config_dir,
        {"servers.d/a.yaml": server_yaml("same"), "servers.d/b.yaml": server_yaml("same")},
    )
    (error,) = errors_of(config_dir)
    assert (error.path, error.line) == ("servers.d/b.yaml", 3)
    assert "first declared at servers.d/a.yaml:1" in error.message


def test_http_without_url_and_stdio_without_command_point_at_transport(config_dir: Path) -> None:
    write(
        config_dir,
        {
            "servers.d/a.yaml": server_yaml("a", "  transport: http\n"),
            "servers.d/b.yaml": server_yaml(
                "b", "  description: nothing to run\n  transport: stdio\n"
            ),
        },
    )
    got = {(e.path, e.line, e.column, e.message) for e in errors_of(config_dir)}
    assert got == {
        ("servers.d/a.yaml", 5, 3, "transport http needs 'url'"),
        ("servers.d/b.yaml", 6, 3, "transport stdio needs 'command'"),
    }


def test_every_error_of_every_file_is_reported_at_once(config_dir: Path) -> None:
    write(
        config_dir,
        {
            "servers.d/a.yaml": server_yaml("a", "  comand: x\n"),
            "servers.d/b.yaml": "kind: [",
            "servers.d/c.yaml": server_yaml("c", "  command: x\n  timeouts: {call: -1}\n")
            + "---\n"
            + server_yaml("d", "  command: x\n  env: {A: '${NOPE}'}\n"),
        },
    )
    files = sorted({e.path for e in errors_of(config_dir)})
    assert files == ["servers.d/a.yaml", "servers.d/b.yaml", "servers.d/c.yaml"]
    assert len(errors_of(config_dir)) == 4  # comand; syntax; call; NOPE


def test_a_duplicate_key_is_an_error_not_a_silent_override(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a", "  command: x\n  command: y\n")})
    (error,) = errors_of(config_dir)
    assert (error.line, error.column) == (6, 3) and "duplicate key 'command'" in error.message


def test_unknown_kind_and_wrong_api_version(config_dir: Path) -> None:
    write(
        config_dir,
        {
            "servers.d/a.yaml": "apiVersion: jackfield/v1\nkind: MCPServr\nmetadata: {name: a}\n",
            "servers.d/b.yaml": "apiVersion: v2\nkind: MCPServer\n",
        },
    )
    messages = [e.message for e in errors_of(config_dir)]
    assert any("did you mean 'MCPServer'" in m for m in messages)
    assert any("apiVersion must be 'jackfield/v1'" in m for m in messages)


def test_kinds_must_stand_in_their_files(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": AGENT})
    assert "kind Agent belongs in agent.yaml" in errors_of(config_dir)[0].message


def test_agent_yaml_is_required(tmp_path: Path) -> None:
    (tmp_path / "servers.d").mkdir()
    (error,) = errors_of(tmp_path)
    assert error.path == "agent.yaml" and "required" in error.message


def test_only_yaml_files_not_starting_with_a_dot_are_read(config_dir: Path) -> None:
    write(
        config_dir,
        {
            "servers.d/a.yaml": server_yaml("a"),
            "servers.d/b.yml": server_yaml("b"),
            "servers.d/nested/c.yaml": server_yaml("c"),
            "servers.d/.a.yaml.swp": "garbage: [",
            "servers.d/.#a.yaml": "garbage: [",
            "servers.d/a.yaml~": "garbage: [",
            "servers.d/README.md": "garbage: [",
            "servers.d/..2024_01_01/x.yaml": "garbage: [",
        },
    )
    assert sorted(load_dir(config_dir).servers) == ["a", "b", "c"]


@pytest.mark.faults
def test_a_symlink_outside_the_config_dir_is_not_followed(config_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(server_yaml("evil"))
    os.symlink(outside, config_dir / "servers.d" / "evil.yaml")
    (error,) = errors_of(config_dir)
    assert error.path == "servers.d/evil.yaml" and "outside the config dir" in error.message


@pytest.mark.faults
def test_a_configmap_style_tree_is_read_through_its_links(tmp_path: Path) -> None:
    root = tmp_path / "cm"
    data = root / "..2026_11_24_10_00_00.1"
    write(data, {"agent.yaml": AGENT, "servers.d/a.yaml": server_yaml("a")})
    os.symlink(data.name, root / "..data")
    os.symlink("..data/agent.yaml", root / "agent.yaml")
    os.symlink("..data/servers.d", root / "servers.d")
    assert list(load_dir(root).servers) == ["a"]


def test_comments_and_formatting_do_not_change_the_revision(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    before = load_dir(config_dir).revision
    write(
        config_dir,
        {
            "servers.d/a.yaml": "# a comment\n"
            + server_yaml("a").replace("command: python", "command:   'python'  # same")
        },
    )
    assert load_dir(config_dir).revision == before
    write(config_dir, {"servers.d/a.yaml": server_yaml("a", "  command: python3\n")})
    assert load_dir(config_dir).revision != before


def test_a_large_file_is_refused_before_parsing() -> None:
    _, errors = load_file(SourceFile("servers.d/big.yaml", b"a: 1\n" * (MAX_FILE_BYTES // 4)), {})
    assert "limit is" in errors[0].message


def test_alias_bombs_are_stopped_by_the_node_budget() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    _, errors = load_file(SourceFile("servers.d/bomb.yaml", "\n".join(lines).encode()), {})
    assert "too large" in errors[0].message


def test_not_utf8_is_reported_at_the_bad_byte() -> None:
    _, errors = load_file(SourceFile("servers.d/bin.yaml", b"a: 1\nb: \xff\xfe\n"), {})
    assert (errors[0].line, errors[0].column) == (2, 4)


@pytest.mark.parametrize("text", ["", "---\n", "# only a comment\n", "---\n---\n"])
def test_empty_documents_are_nothing(text: str) -> None:
    assert load_file(SourceFile("servers.d/e.yaml", text.encode()), {}) == ([], [])
