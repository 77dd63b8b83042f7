"""Shared fixtures. Area-specific helpers live in tests/<area>_support.py modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
