"""The dashboard's history under a real `jackfield run` (issue #20): what the app records.

tests/test_dashboard_live.py drives the page against a StatusServer fed by hand; this shows the
app's own wiring: a call through the hub lands in `/status/activity` (redacted, with the
session), the server's transitions are sampled, a pass is recorded, and `/dashboard.json` says
so to a page that already has everything else.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import MARK, MARK_VAR, hub_client, jackfield_run, plain_config, poll
from tests.support.servers import echo_server

pytestmark = pytest.mark.timeout(120)

SECRET = "dash-secret-0123456789abcdef"


def activity(jackfield: Any) -> dict[str, Any]:
    code, body = jackfield.get("/status/activity")
    assert code == 200, body[:300]
    document: dict[str, Any] = json.loads(body)
    return document


async def test_a_hub_call_shows_in_the_activity_redacted(tmp_path: Path) -> None:
    echo = echo_server("echo", "--tools", "echo,env", env={MARK_VAR: MARK, "TOKEN": SECRET})
    config = plain_config(tmp_path / "config", {"echo": echo})
    with jackfield_run(tmp_path / "run", config) as jackfield:
        await asyncio.to_thread(jackfield.wait_ready)
        await asyncio.to_thread(jackfield.servers_ready, "echo")
        code, first = jackfield.get("/dashboard.json")
        assert code == 200
        token = json.loads(first)["since"]

        async with hub_client(jackfield.hub_url) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert {"echo_echo", "echo_env"} <= tools
            said = await client.call_tool("echo_env", {"name": "TOKEN"})
            assert not said.is_error
            missing = await client.call_tool("echo_nothing", {})
            assert missing.is_error

        def both_calls() -> dict[str, Any] | None:
            got = activity(jackfield)
            return got if len(got["calls"]) >= 2 else None

        got = await asyncio.to_thread(poll, both_calls, timeout=30, what="two recorded calls")
        by_tool = {c["tool"]: c for c in got["calls"]}
        assert by_tool["env"]["server"] == "echo" and by_tool["env"]["outcome"] == "ok"
        assert by_tool["env"]["session"]  # the hub session it came from
        assert by_tool["echo_nothing"]["outcome"] == "unknown"
        charts = got["servers"]["echo"]
        assert sum(charts["calls_per_minute"]) == 1 and charts["errors"] == 0
        assert charts["transitions"][-1]["state"] == "Ready"
        assert got["passes"] and got["passes"][-1]["outcome"] == "applied"

        code, update = jackfield.get(f"/dashboard.json?since={token}")
        assert code == 200
        changed = json.loads(update)["html"]
        assert any("echo_nothing" in html for html in changed.values())

        for path in ("/status/activity", "/dashboard.json", "/"):
            assert SECRET not in jackfield.get(path)[1].decode()
