"""The secret leak harness for auth (#15): a client secret and a refresh token read from secret
files, an API key from a file, and every access and refresh token the authorization server
issues while `jackfield run` refreshes them reach no status response, dashboard, metrics, log
line (DEBUG included) or database row, in any form the harness knows (tests/test_faults_secrets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.servers.launch import spawn
from tests.support.process import hub_client, jackfield_run, plain_config
from tests.test_faults_secrets import database_text, json_leaks, leaks, strings, surface

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

CLIENT_SECRET = 'cs-auth Ωd/7f+3a=9c"21'
REFRESH_TOKEN = "rt-auth Ωq/8e+1b=7d'34"
API_KEY = "ak-auth-5e6f7a8b9c0d1e2f"
TOKEN_PREFIX = "issued-by-the-test-as-"
"""Every token the authorization server issues starts with it."""


def remote(name: str, url: str, auth: str) -> str:
    return (
        f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\n"
        f"spec:\n  transport: http\n  url: {url}\n  audit: full\n  auth:\n{auth}"
    )


async def test_auth_secrets_and_tokens_reach_no_response_log_line_or_row(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "client-secret").write_text(CLIENT_SECRET + "\n")
    (secrets / "refresh-token").write_text(REFRESH_TOKEN + "\n")
    (secrets / "api-key").write_text(API_KEY)
    flags = (
        "--lifetime", "1", "--token-prefix", TOKEN_PREFIX,
        "--client", f"jackfield:{CLIENT_SECRET}", "--client", "calendar:",
        "--refresh-token", f"calendar:{REFRESH_TOKEN}", "--api-key-file", str(secrets / "api-key"),
    )  # fmt: skip
    async with spawn("-m", "tests.servers.oauth", "--port", "0", *flags) as (_, port):
        url = f"http://127.0.0.1:{port}/mcp"
        servers = {
            "crm": remote("crm", url, "    oauth:\n      clientId: jackfield\n"
                          f"      clientSecret: '${{file:{secrets}/client-secret}}'\n"),
            "cal": remote("cal", url, "    oauth:\n      grant: refresh_token\n"
                          "      clientId: calendar\n"
                          f"      refreshToken: '${{file:{secrets}/refresh-token}}'\n"),
            "search": remote("search", url, f"    bearer: '${{file:{secrets}/api-key}}'\n"),
        }  # fmt: skip
        config = plain_config(tmp_path / "config", servers)
        env = {"JACKFIELD_LOG_LEVEL": "DEBUG"}
        with jackfield_run(tmp_path / "run", config, env=env) as jackfield:
            await asyncio.to_thread(jackfield.wait_ready)
            await asyncio.to_thread(jackfield.servers_ready, "crm", "cal", "search")
            async with hub_client(jackfield.hub_url) as client:
                await client.list_tools()
                for name in ("crm", "cal", "search"):
                    result = await client.call_tool(f"{name}_whoami", {})
                    assert not result.is_error, result
                    await client.call_tool(f"{name}_echo", {"text": "over the protected link"})

                def refreshed(status: dict[str, Any]) -> bool:
                    auth = {s["name"]: s.get("auth") for s in status["servers"]}
                    return all(auth[n] and auth[n]["refreshes"] >= 3 for n in ("crm", "cal"))

                async def keep_calling() -> None:
                    while True:
                        await client.call_tool("crm_whoami", {})
                        await client.call_tool("cal_whoami", {})

                caller = asyncio.create_task(keep_calling())
                try:
                    await asyncio.to_thread(jackfield.until, refreshed, "three tokens each")
                finally:
                    caller.cancel()
                    await asyncio.gather(caller, return_exceptions=True)
            responses = surface(jackfield, "crm", "cal", "search")
            metrics = jackfield.get("/metrics")[1].decode()
            dashboard = jackfield.get("/")[1].decode()
            assert jackfield.stop() == 0

    run = tmp_path / "run"
    records = jackfield.log_records()
    assert any(r["msg"].startswith("server crm: auth: token obtained") for r in records), (
        "DEBUG was on: the auth flow was logged"
    )
    planted = (CLIENT_SECRET, REFRESH_TOKEN, API_KEY)
    log_text = (run / "jackfield.log").read_text()
    stored = database_text(run / "state.db")
    found = {
        **{path: json_leaks(body, planted) for path, body in responses.items()},
        "/metrics": leaks(metrics, planted),
        "dashboard": leaks(dashboard, planted),
        "log file": leaks(log_text, planted),
        "log records": [n for r in records for s in strings(r) for n in leaks(s, planted)],
        "database": leaks(stored, planted),
    }
    assert {where: forms for where, forms in found.items() if forms} == {}
    shown = [*responses.values(), metrics, dashboard, log_text, stored]
    assert not [text for text in shown if TOKEN_PREFIX in text], "an issued token showed"
    status = json.loads(responses["/status"])
    kinds = {s["name"]: s["auth"]["kind"] for s in status["servers"]}
    assert kinds == {"crm": "oauth:client_credentials", "cal": "oauth:refresh_token",
                     "search": "bearer"}  # fmt: skip
    assert 'jackfield_auth_token_requests_total{outcome="ok",server="crm"}' in metrics
    assert "oauth:refresh_token; token expires" in dashboard and "last refresh ok" in dashboard
