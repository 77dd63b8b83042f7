"""`jackfield plan`: the real command in a subprocess, and the pure renderer behind it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from jackfield.core.desired import Snapshot
from jackfield.core.plan_render import render, shown
from jackfield.core.planning import Applied, Key, plan
from jackfield.core.reconcile import applied_view
from jackfield.shell.store import Store
from tests.conftest import run_jackfield
from tests.support.config import load_dir, server_yaml, write
from tests.support.store import (  # noqa: F401 (fixtures)
    postgres_url_fixture,
    store_url_fixture,
)


def jackfield_plan(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_jackfield(cwd, "plan", *args)


def _prompt(name: str) -> str:
    return (
        f"apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {{name: {name}}}\nspec:\n  text: Hi.\n"
    )


async def test_plan_shows_creates_then_nothing_once_applied(
    config_dir: Path, store_url: str
) -> None:
    write(config_dir, {"servers.d/time.yaml": server_yaml("time")})
    first = jackfield_plan(config_dir, "--database-url", store_url, "--exit-code")
    assert first.returncode == 2, first.stderr
    assert "+ create MCPServer/time (servers.d/time.yaml:1)" in first.stdout
    assert "+ create Agent/assistant (agent.yaml:1)" in first.stdout
    assert first.stdout.endswith("Plan: 2 to create, 0 to update, 0 to delete.\n")
    assert jackfield_plan(config_dir, "--database-url", store_url).returncode == 0

    store = await Store.open(store_url)
    try:
        snapshot = load_dir(config_dir)
        await store.apply(plan(snapshot, await store.applied()), revision=snapshot.revision)
    finally:
        await store.close()
    again = jackfield_plan(config_dir, "--database-url", store_url, "--exit-code")
    assert (again.returncode, again.stdout) == (0, "No changes. The database matches the files.\n")


def test_plan_of_an_invalid_config_lists_every_error_and_exits_1(
    config_dir: Path, tmp_path: Path
) -> None:
    write(config_dir, {"servers.d/bad.yaml": server_yaml("bad", "  comand: python\n")})
    result = jackfield_plan(tmp_path, "config", "--database-url", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 1
    assert result.stdout.startswith("config/servers.d/bad.yaml:5:3: ")
    assert not (tmp_path / "s.db").exists()  # nothing is opened for a config that cannot apply


def test_plan_with_an_unreachable_store_exits_1(config_dir: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=1"
    result = jackfield_plan(config_dir, "--database-url", url, "--exit-code")
    assert result.returncode == 1 and "store unavailable" in result.stderr


def snapshot_of(config_dir: Path, servers: dict[str, str]) -> Snapshot:
    for old in (config_dir / "servers.d").iterdir():
        old.unlink()
    write(config_dir, servers)
    return load_dir(config_dir, {"TOKEN": "sekrit-value-123"})


def test_render_shows_each_kind_of_change_and_a_summary(config_dir: Path) -> None:
    before = snapshot_of(
        config_dir,
        {
            "servers.d/files.yaml": server_yaml("files"),
            "servers.d/style.yaml": _prompt("style"),
        },
    )
    body = "  command: python\n  tools: {include: ['read_*']}\n"
    after = snapshot_of(
        config_dir,
        {
            "servers.d/files.yaml": server_yaml("files", body),
            "servers.d/time.yaml": server_yaml("time"),
        },
    )
    applied = _applied(before)
    assert render(plan(after, applied)).splitlines() == [
        "- delete Prompt/style",
        "~ update MCPServer/files: spec.tools.include (no reconnect)",
        "+ create MCPServer/time (servers.d/time.yaml:1)",
        "",
        "Plan: 1 to create, 1 to update, 1 to delete.",
    ]
    detailed = render(plan(after, applied), applied).splitlines()
    assert detailed[2] == '    spec.tools.include: ["*"] -> ["read_*"]', detailed


def test_render_masks_literal_header_and_env_values_but_not_references(
    config_dir: Path,
) -> None:
    remote = "  transport: http\n  url: https://x.example/mcp\n"
    before = snapshot_of(config_dir, {"servers.d/web.yaml": server_yaml("web", remote)})
    headers = "  headers: {Authorization: 'Bearer ${TOKEN}', X-Key: literal-key-42}\n"
    after = snapshot_of(config_dir, {"servers.d/web.yaml": server_yaml("web", remote + headers)})
    applied = _applied(before)
    text = render(plan(after, applied), applied)
    assert text.splitlines()[:3] == [
        "~ update MCPServer/web: spec.headers.Authorization, spec.headers.X-Key (reconnect)",
        '    spec.headers.Authorization: (absent) -> "Bearer ${TOKEN}"',
        '    spec.headers.X-Key: (absent) -> "(sensitive)"',
    ]
    assert "literal-key-42" not in text and "sekrit-value-123" not in text
    assert shown("spec.env", {"A": "x", "B": "${B}"}) == '{"A":"(sensitive)","B":"${B}"}'


def test_render_of_an_empty_plan_says_so(config_dir: Path) -> None:
    snapshot = load_dir(config_dir)
    assert render(plan(snapshot, _applied(snapshot))) == (
        "No changes. The database matches the files.\n"
    )


def _applied(snapshot: Snapshot) -> dict[Key, Applied]:
    """What the store would hold after applying `snapshot`."""
    return applied_view(snapshot)


def test_plan_prints_config_warnings_first_and_still_plans(
    config_dir: Path, tmp_path: Path
) -> None:
    agent = (config_dir / "agent.yaml").read_text() + "  llm: {temperature: 0.8}\n"
    write(config_dir, {"agent.yaml": agent})
    result = jackfield_plan(config_dir, "--database-url", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 0, result.stderr
    warning, *plan_lines = result.stdout.splitlines()
    assert warning.startswith("agent.yaml:6:9: warning: temperature has no effect")
    assert "+ create Agent/assistant (agent.yaml:1)" in plan_lines
