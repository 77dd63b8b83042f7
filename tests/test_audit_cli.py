"""`jackfield audit`: the real command in a subprocess, over a store seeded with calls."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from jackfield.cli import main
from jackfield.core.limits import arguments_hash
from jackfield.core.status import utcnow
from jackfield.shell.store import AuditRecord, Store
from tests.support.store import (  # noqa: F401 (fixtures)
    postgres_url_fixture,
    store_url_fixture,
)

JACKFIELD = Path(sys.executable).parent / "jackfield"


def jackfield_audit(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JACKFIELD_")}
    return subprocess.run(
        [str(JACKFIELD), "audit", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def call(server: str, tool: str, minutes_ago: float, **kw: object) -> AuditRecord:
    fields: dict[str, object] = {
        "at": utcnow() - timedelta(minutes=minutes_ago),
        "agent_session": None,
        "hub_session": "hub-1",
        "server": server,
        "tool": tool,
        "duration_ms": 12.4,
        "outcome": "ok",
        "bytes_in": 15,
        "bytes_out": 7,
        "arguments_hash": arguments_hash({"tool": tool}),
        "arguments": None,
        "result": None,
    }
    fields.update(kw)
    return AuditRecord(**fields)  # type: ignore[arg-type]


CALLS = [
    call("time", "get_current_time", 120, agent_session="job-room-1"),
    call("search", "query", 30, outcome="rejected:rate", duration_ms=0.3, bytes_out=60),
    call("time", "convert_time", 5, arguments='{"tz": "UTC"}', result="12:00"),
]


def seed(url: str) -> None:
    async def write() -> None:
        store = await Store.open(url)
        try:
            await store.record_calls(CALLS)
        finally:
            await store.close()

    asyncio.run(write())


def test_the_table_lists_calls_newest_first_with_their_session(store_url: str) -> None:
    seed(store_url)
    done = jackfield_audit("--database-url", store_url)
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    assert header.split() == ["TIME", "SERVER", "TOOL", "OUTCOME", "MS", "IN", "OUT", "SESSION"]
    assert [line.split()[1:] for line in lines] == [
        ["time", "convert_time", "ok", "12", "15", "7", "hub-1"],
        ["search", "query", "rejected:rate", "0", "15", "60", "hub-1"],
        ["time", "get_current_time", "ok", "12", "15", "7", "job-room-1"],
    ]


def test_server_since_and_limit_narrow_the_rows(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store_url)

    def tools(*args: str) -> list[str]:  # in-process: the same main() the script runs
        assert main(["audit", "--database-url", store_url, "--json", *args]) == 0
        return [row["tool"] for row in json.loads(capsys.readouterr().out)]

    assert tools("--server", "time") == ["convert_time", "get_current_time"]
    assert tools("--since", "1h") == ["convert_time", "query"]
    assert tools("--since", "10m") == ["convert_time"]
    assert tools("--since", "1d", "--server", "search") == ["query"]
    assert tools("--limit", "1") == ["convert_time"]
    assert tools("--server", "nothing") == []


def test_json_rows_carry_every_field_and_the_full_audit_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    seed(url)
    done = jackfield_audit("--json", "--server", "time", env={"JACKFIELD_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    newest, oldest = json.loads(done.stdout)
    assert newest["at"].endswith("Z") and newest["hub_session"] == "hub-1"
    assert (newest["arguments"], newest["result"]) == ('{"tz": "UTC"}', "12:00")
    assert newest["arguments_hash"] == arguments_hash({"tool": "convert_time"})
    assert (oldest["arguments"], oldest["result"], oldest["agent_session"]) == (
        None,
        None,
        "job-room-1",
    )


def test_an_empty_trail_says_so(tmp_path: Path) -> None:
    done = jackfield_audit("--database-url", f"sqlite:///{tmp_path / 'state.db'}")
    assert done.returncode == 0 and done.stdout == "no tool calls recorded\n"
    done = jackfield_audit("--database-url", f"sqlite:///{tmp_path / 'state.db'}", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == []


def test_a_bad_duration_or_limit_is_a_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    done = jackfield_audit("--database-url", url, "--since", "yesterday")
    assert done.returncode == 2 and "like 30m, 1h or 2d" in done.stderr
    done = jackfield_audit("--database-url", url, "--limit", "0")
    assert done.returncode == 2 and "positive integer" in done.stderr


def test_an_unreachable_store_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = jackfield_audit("--database-url", f"sqlite:///{blocker / 'sub' / 'state.db'}")
    assert done.returncode == 1 and "store unavailable" in done.stderr
