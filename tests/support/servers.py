"""MCPServer documents for the test servers in tests/servers/, run over stdio."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping

import pytest

from tests.conftest import IN_CI, REPO


def npx() -> str:
    """npx's path, for the published servers; a failure in CI without it, else a skip."""
    found = shutil.which("npx")
    if found is None:
        if IN_CI:
            pytest.fail("npx is required in CI")
        pytest.skip("npx is not installed")
    return found


def echo_server(
    name: str, *flags: str, extra: str = "", env: Mapping[str, str] | None = None
) -> str:
    """An MCPServer document running tests/servers/echo.py (`flags` are its own)."""
    args = ", ".join(f'"{a}"' for a in ["-m", "tests.servers.echo", *flags])
    environment = "  env: {" + ", ".join(f"{k}: {v}" for k, v in env.items()) + "}\n" if env else ""
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  command: {sys.executable}\n  args: [{args}]\n  cwd: {REPO}\n"
        f"{environment}{extra}"
    )
