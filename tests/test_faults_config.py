"""Fault scenarios for the config: each keeps the last good state, reports the problem with its
position, and leaks nothing. Marked `faults` (`pytest -m faults`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jackfield.core.loading import MAX_FILE_BYTES
from tests.conftest import IN_CI
from tests.support.config import errors_of, load_dir, server_yaml, write
from tests.support.controller import running, settled, until

pytestmark = pytest.mark.faults


def stalled(rec) -> str | None:  # type: ignore[no-untyped-def]
    return next((c.reason for c in rec.status.conditions if c.type == "Stalled"), None)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x00\x01\x02\xff\xfe binary", "not valid UTF-8"),
        (b"key: \x07bell", "is not allowed in YAML"),
        (b"a: [1, 2\nb: {", "YAML syntax error"),
        (b"- just\n- a list\n", "must be a mapping"),
        (b"just a string", "must be a mapping"),
        (b"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: x}\nspec: 7\n", "spec"),
    ],
)
async def test_garbage_keeps_the_last_good_state_and_says_where(
    config_dir: Path, content: bytes, needle: str
) -> None:
    write(config_dir, {"servers.d/good.yaml": server_yaml("good")})
    async with running(config_dir) as (rec, target, _):
        applied = rec.status.applied_revision
        (config_dir / "servers.d" / "bad.yaml").write_bytes(content)
        await until(lambda: stalled(rec) == "ValidationFailed", what="stalled")
        assert set(target.servers) == {"good"} and rec.status.applied_revision == applied
        (error,) = rec.status.errors
        assert error["file"] == "servers.d/bad.yaml" and error["line"] >= 1
        assert needle in error["message"]


def test_a_fifty_megabyte_file_is_refused_without_reading_it_all(config_dir: Path) -> None:
    big = config_dir / "servers.d" / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(50 * 1024 * 1024)
    (error,) = errors_of(config_dir)
    assert error.path == "servers.d/big.yaml" and f"limit is {MAX_FILE_BYTES}" in error.message


def test_ten_thousand_documents_load(config_dir: Path) -> None:
    for f in range(100):
        docs = [
            f"apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {{name: p{f}-{d}}}\n"
            f"spec: {{text: fragment {d}, order: {d}}}\n"
            for d in range(100)
        ]
        (config_dir / "servers.d" / f"p{f}.yaml").write_text("---\n".join(docs))
    assert len(load_dir(config_dir).prompts) == 10_000


def test_a_billion_laughs_document_is_stopped_early(config_dir: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    (config_dir / "servers.d" / "lol.yaml").write_text("\n".join(lines) + "\n")
    (error,) = errors_of(config_dir)
    assert "too large" in error.message


def test_deep_nesting_is_an_error_not_a_crash(config_dir: Path) -> None:
    (config_dir / "servers.d" / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000)
    (error,) = errors_of(config_dir)
    assert error.path == "servers.d/deep.yaml"


@pytest.mark.skipif(
    shutil.which("setpriv") is None and not IN_CI, reason="needs setpriv (util-linux)"
)
def test_an_unreadable_file_is_reported_with_its_path(config_dir: Path) -> None:
    (config_dir / "servers.d" / "secret.yaml").write_text(server_yaml("s"))
    (config_dir / "servers.d" / "secret.yaml").chmod(0)
    # root reads anything: drop the capabilities that bypass permissions for this process
    got = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-all",
            sys.executable,
            "-m",
            "jackfield.cli",
            "validate",
            str(config_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 1, got.stderr
    assert (
        f"{config_dir}/servers.d/secret.yaml:1:1: cannot read file: Permission denied" in got.stdout
    )


def test_a_file_deleted_between_listing_and_reading_is_simply_gone(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    os.symlink("vanished.yaml", config_dir / "servers.d" / "dangling.yaml")  # listed, unreadable
    assert list(load_dir(config_dir).servers) == ["a"]


async def test_a_wall_clock_jump_changes_nothing_but_timestamps(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir, resync_interval=3600) as (rec, target, _):
        import jackfield.reconciler as reconciler_module

        monkeypatch.setattr(reconciler_module, "utcnow", lambda: datetime(1999, 1, 1, tzinfo=UTC))
        write(config_dir, {"servers.d/b.yaml": server_yaml("b")})
        await settled(rec, lambda: set(target.servers) == {"a", "b"}, what="applied after jump")
        assert rec.status.history[0].at.year == 1999 and rec.status.history[1].at.year > 2000
        assert stalled(rec) is None
