"""A secret planted in a server's env and headers reaches no response of the status surface, no
log line and no database row of a real `jackfield run` (DESIGN.md: secrets are never stored,
logged or shown)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.support.process import echo_yaml, hub_client, jackfield_run, plain_config

SECRET = "sk-planted-7f3a9c21e8"
pytestmark = pytest.mark.faults


def database_text(path: Path) -> str:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"')
        )


async def test_a_planted_secret_appears_in_no_response_log_line_or_row(tmp_path: Path) -> None:
    servers = {
        # the echo server prints its env on request and in stderr: the secret reaches its process
        "echo": echo_yaml("echo", "--tools", "echo,env", extra="  audit: full\n").replace(
            "  env: {", "  env: {API_TOKEN: '${PLANTED}', "
        ),
        "remote": (
            "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: remote}\n"
            "spec:\n  transport: http\n  url: http://127.0.0.1:9/mcp?key=${PLANTED}\n"
            "  headers: {Authorization: 'Bearer ${PLANTED}'}\n  timeouts: {connect: 1}\n"
        ),
    }
    config = plain_config(tmp_path / "config", servers)
    with jackfield_run(tmp_path / "run", config, env={"PLANTED": SECRET}) as jackfield:
        await asyncio.to_thread(jackfield.wait_ready)
        await asyncio.to_thread(jackfield.servers_ready, "echo")
        async with hub_client(jackfield.hub_url) as client:
            got = await client.call_tool("echo_env", {"name": "API_TOKEN"})
            await client.call_tool("echo_echo", {"text": f"token is {SECRET}"})
        assert [c.text for c in got.content if c.type == "text"] == [SECRET], "it was delivered"
        await asyncio.to_thread(
            jackfield.until,
            lambda s: next(x for x in s["servers"] if x["name"] == "remote")["last_error"],
            what="the remote server's error in status",
        )
        responses = [
            jackfield.get(path)[1].decode()
            for path in ("/status", "/status/servers/echo", "/status/servers/remote", "/metrics",
                         "/")
        ]  # fmt: skip
        await asyncio.sleep(2.5)  # one store sync interval: audit rows and server state land
        assert jackfield.stop() == 0
    for text in responses:
        assert SECRET not in text
    log = (tmp_path / "run" / "jackfield.log").read_text()
    assert SECRET not in log
    rows = database_text(tmp_path / "run" / "state.db")
    assert "${PLANTED}" in rows, "the store keeps the reference"
    assert "echo_env" in rows or "env" in rows, "the audit trail has the calls"
    assert SECRET not in rows
