"""Shared fixtures. Area-specific helpers live in the tests/support/ package."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
JACKFIELD = Path(sys.executable).with_name("jackfield")
"""The installed console script, beside the interpreter running the tests."""


def run_jackfield(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`jackfield ARGS` in `cwd`, with no JACKFIELD_* setting leaking in from the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JACKFIELD_")}
    return subprocess.run(
        [str(JACKFIELD), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`jackfield ARGS` in `cwd` as `run_jackfield` runs it, but in this process (the same
    `cli.main`, without a second of interpreter start per call): for the commands that only
    read and write files (import, validate). No JACKFIELD_* setting leaks in."""
    from jackfield.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        for name in [k for k in os.environ if k.startswith("JACKFIELD_")]:
            del os.environ[name]
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's errors
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["jackfield", *args], code, out.getvalue(), err.getvalue())


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def chromium() -> str:
    """Headless Chromium for the dashboard's browser tests: a failure in CI without it."""
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail("chromium is required in CI for the dashboard browser tests")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def config_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty config dir with servers.d/ and a minimal agent.yaml."""
    root = tmp_path / "config"
    (root / "servers.d").mkdir(parents=True)
    (root / "agent.yaml").write_text(
        "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
        "spec:\n  instructions: You are a test agent.\n"
    )
    yield root
