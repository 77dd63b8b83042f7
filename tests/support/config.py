"""Helpers for config-language tests: write a config dir, run the loader, find errors."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

from jackfield.core.desired import Snapshot, build_snapshot
from jackfield.errors import ConfigError, ConfigInvalid
from jackfield.shell.sources import scan

AGENT = """\
apiVersion: jackfield/v1
kind: Agent
metadata: {name: assistant}
spec:
  instructions: You are a test agent.
"""


def server_yaml(name: str, body: str = "  command: python\n") -> str:
    return f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\nspec:\n{body}"


def write(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def load_dir(root: Path, env: Mapping[str, str] | None = None) -> Snapshot:
    found = scan(root)
    return build_snapshot(found.files, env or {}, found.errors)


def errors_of(root: Path, env: Mapping[str, str] | None = None) -> list[ConfigError]:
    try:
        load_dir(root, env)
    except ConfigInvalid as e:
        return e.errors
    return []
