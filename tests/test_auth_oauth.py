"""Unattended OAuth against a real authorization server (#15): tests/servers/oauth.py issues
tokens that live a second or two, and the MCP server beside it accepts nothing else. Through
the real ServerManager: discovery from the server's 401 alone, calls that keep succeeding
across expiries (tokens replaced ahead of time; a token that dies early is replaced after its
401, the call sent once more), refresh-token rotation, a revoked client Failed with the reason
and no retry storm, an authorization server outage as Backoff, an issuer pin that holds, and
`jackfield test` showing the flow without a secret."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from jackfield.core.connection import resolve
from jackfield.shell.servers import ServerManager, text_of
from tests.conftest import JACKFIELD
from tests.servers.launch import spawn
from tests.support.config import AGENT, server_yaml, write
from tests.support.manager import WAIT, checked_manager, plug, ready, remote_spec, settle

pytestmark = pytest.mark.timeout(120)

CLIENT_ID = "jackfield-agent"
CLIENT_SECRET = "client-secret-that-must-never-show"
REFRESH_TOKEN = "refresh-token-that-must-never-show"


class AuthServer:
    def __init__(self, port: int, record: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/mcp"
        self.record = record

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = [json.loads(line) for line in self.record.read_text().splitlines() if line]
        return [e for e in lines if kind is None or e["event"] == kind]

    async def control(self, what: str, body: dict[str, Any]) -> None:
        async with httpx2.AsyncClient() as http:
            answer = await http.post(f"{self.base}/control/{what}", json=body)
            answer.raise_for_status()


@contextlib.asynccontextmanager
async def auth_server(tmp_path: Path, *flags: str) -> AsyncIterator[AuthServer]:
    record = tmp_path / "oauth.jsonl"
    args = ("-m", "tests.servers.oauth", "--port", "0", "--record", str(record), *flags)
    async with spawn(*args, listen_timeout=WAIT) as (_, port):
        assert port is not None
        yield AuthServer(port, record)


def oauth_spec(url: str, **oauth: Any) -> Any:
    fields = {"clientId": CLIENT_ID, "clientSecret": "${CRM_SECRET}", **oauth}
    return remote_spec("http", url, auth={"oauth": fields})


ENV = {"CRM_SECRET": CLIENT_SECRET, "CRM_REFRESH": REFRESH_TOKEN}


@pytest.fixture
async def manager() -> AsyncIterator[ServerManager]:
    async with checked_manager() as manager:
        yield manager


async def calls_until(manager: ServerManager, server: AuthServer, tokens: int) -> int:
    """Call whoami until the server has issued `tokens` tokens; every call must succeed.
    Returns the number of calls made."""
    made = 0
    while len(server.events("token")) < tokens:
        result = await manager.call("crm_whoami", {})
        assert not result.is_error, text_of(result)
        assert json.loads(text_of(result)) == {"client": CLIENT_ID}
        made += 1
        assert made < 5000, "tokens were not replaced"
    return made


async def test_auth_discovered_from_the_401_keeps_calls_succeeding_across_expiries(
    manager: ServerManager, tmp_path: Path
) -> None:
    async with auth_server(
        tmp_path, "--lifetime", "1", "--client", f"{CLIENT_ID}:{CLIENT_SECRET}"
    ) as server:
        supervisor = await ready(manager, "crm", oauth_spec(server.url), ENV)
        made = await calls_until(manager, server, tokens=5)

        assert made >= 5
        # the first request went without a token, and its 401 led to the metadata
        assert [e["reason"] for e in server.events("unauthorized")] == ["missing"]
        assert [e["which"] for e in server.events("metadata")] == [
            "protected-resource", "authorization-server",
        ]  # fmt: skip
        assert {e["auth_method"] for e in server.events("token")} == {"client_secret_basic"}
        auth = supervisor.status((), ()).extra["auth"]
        assert auth["kind"] == "oauth:client_credentials"
        assert auth["token_endpoint"] == f"{server.base}/as/token"
        assert auth["issuer"] == f"{server.base}/as"
        assert auth["last_outcome"] == "ok" and auth["failures"] == 0
        assert auth["refreshes"] >= 5 and auth["expires_at"] is not None
        assert supervisor.state == "Ready" and supervisor.restarts == 0


async def test_auth_a_token_that_dies_early_is_replaced_after_its_401_and_the_call_resent(
    manager: ServerManager, tmp_path: Path
) -> None:
    flags = ("--lifetime", "1", "--expires-in", "3600", "--client", f"{CLIENT_ID}:{CLIENT_SECRET}")
    async with auth_server(tmp_path, *flags) as server:
        spec = oauth_spec(server.url, tokenUrl="${TOKEN_URL}")
        supervisor = await ready(
            manager, "crm", spec, {**ENV, "TOKEN_URL": f"{server.base}/as/token"}
        )
        await calls_until(manager, server, tokens=3)

        # the token endpoint was configured: no discovery, the first request had a token
        assert server.events("metadata") == []
        reasons = [e["reason"] for e in server.events("unauthorized")]
        assert reasons and set(reasons) == {"expired"}
        assert supervisor.state == "Ready" and supervisor.restarts == 0


async def test_auth_refresh_tokens_rotate_in_memory(manager: ServerManager, tmp_path: Path) -> None:
    flags = ("--lifetime", "1", "--client", f"{CLIENT_ID}:", "--refresh-token",
             f"{CLIENT_ID}:{REFRESH_TOKEN}")  # fmt: skip
    async with auth_server(tmp_path, *flags) as server:
        spec = remote_spec("http", server.url, auth={"oauth": {
            "grant": "refresh_token", "clientId": CLIENT_ID, "refreshToken": "${CRM_REFRESH}",
        }})  # fmt: skip
        supervisor = await ready(manager, "crm", spec, ENV)
        await calls_until(manager, server, tokens=4)

        grants = server.events("token")
        assert {e["grant"] for e in grants} == {"refresh_token"}
        assert {e["auth_method"] for e in grants} == {"none"}
        assert server.events("token_refused") == [], "a spent refresh token was never reused"
        assert supervisor.status((), ()).extra["auth"]["kind"] == "oauth:refresh_token"


async def test_auth_a_revoked_client_fails_the_server_with_the_reason_and_no_retry_storm(
    manager: ServerManager, tmp_path: Path
) -> None:
    async with auth_server(
        tmp_path, "--lifetime", "1", "--client", f"{CLIENT_ID}:{CLIENT_SECRET}"
    ) as server:
        await ready(manager, "crm", oauth_spec(server.url), ENV)
        await server.control("revoke", {"client": CLIENT_ID})

        # the server refuses the revoked client's token at once; the new token it needs is
        # refused too, and that is final
        assert (await manager.call("crm_whoami", {})).is_error
        await settle(manager, "crm", "Failed")
        supervisor = manager.supervisor("crm")
        assert supervisor is not None
        assert supervisor.last_error is not None
        assert "invalid_client" in supervisor.last_error
        assert supervisor.last_error.startswith("auth: the authorization server refused")
        refused = len(server.events("token_refused"))
        assert refused == 1
        # Failed stays Failed: more calls make no token request
        for _ in range(5):
            assert (await manager.call("crm_whoami", {})).is_error
        assert len(server.events("token_refused")) == refused
        auth = supervisor.status((), ()).extra["auth"]
        assert auth["last_outcome"].startswith("refused: ") and auth["failures"] == 1
        assert CLIENT_SECRET not in json.dumps(auth)

        # new values for its secrets (the reconciler's rotation) bring it back
        await server.control("restore", {"client": CLIENT_ID})
        await manager.rotate("crm", resolve(oauth_spec(server.url), ENV))
        await settle(manager, "crm", "Ready")
        assert not (await manager.call("crm_whoami", {})).is_error


async def test_auth_an_unreachable_token_endpoint_is_backoff_then_ready(
    manager: ServerManager, tmp_path: Path
) -> None:
    async with auth_server(tmp_path, "--client", f"{CLIENT_ID}:{CLIENT_SECRET}") as server:
        await server.control("token-endpoint", {"down": True})
        await plug(manager, "crm", oauth_spec(server.url), ENV)
        supervisor = await settle(manager, "crm", "Backoff")
        assert supervisor.last_error == "auth: the token endpoint answered HTTP 503"

        await server.control("token-endpoint", {"down": False})
        await settle(manager, "crm", "Ready")
        assert not (await manager.call("crm_whoami", {})).is_error


async def test_auth_a_token_endpoint_nobody_listens_on_is_backoff(
    manager: ServerManager, tmp_path: Path
) -> None:
    async with auth_server(tmp_path, "--client", f"{CLIENT_ID}:{CLIENT_SECRET}") as server:
        spec = oauth_spec(server.url, tokenUrl="http://127.0.0.1:9/token")
        await plug(manager, "crm", spec, ENV)
        supervisor = await settle(manager, "crm", "Backoff")
        assert supervisor.last_error is not None
        assert supervisor.last_error.startswith("auth: the token endpoint cannot be reached")


async def test_auth_an_issuer_pin_refuses_another_authorization_server(
    manager: ServerManager, tmp_path: Path
) -> None:
    async with auth_server(tmp_path, "--client", f"{CLIENT_ID}:{CLIENT_SECRET}") as server:
        spec = oauth_spec(server.url, issuer="https://login.example.com")
        await plug(manager, "crm", spec, ENV)
        supervisor = await settle(manager, "crm", "Failed")
        assert supervisor.last_error == (
            f"auth: the server names authorization server(s) {server.base}/as, not the"
            " configured issuer https://login.example.com"
        )
        assert server.events("token") == [], "the credentials went nowhere"


def test_auth_jackfield_test_shows_the_flow_without_a_secret(tmp_path: Path) -> None:
    async def run() -> subprocess.CompletedProcess[str]:
        async with auth_server(
            tmp_path, "--lifetime", "300", "--client", f"{CLIENT_ID}:{CLIENT_SECRET}"
        ) as server:
            body = (
                f"  transport: http\n  url: {server.url}\n  auth:\n    oauth:\n"
                f"      clientId: {CLIENT_ID}\n      clientSecret: ${{file:secrets/crm}}\n"
            )
            root = write(
                tmp_path / "repo",
                {"agent.yaml": AGENT, "servers.d/crm.yaml": server_yaml("crm", body)},
            )
            (root / "secrets").mkdir()
            (root / "secrets" / "crm").write_text(CLIENT_SECRET + "\n")
            clean = {k: v for k, v in os.environ.items() if not k.startswith("JACKFIELD_")}
            return await asyncio.to_thread(
                subprocess.run,
                [str(JACKFIELD), "test", "crm", str(root), "--call", "whoami"],
                env=clean,
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )

    done = asyncio.run(run())
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "auth (oauth:client_credentials):" in out
    assert "the server's 401 names its resource metadata" in out
    assert "protected resource metadata at" in out
    assert "token endpoint" in out and "token obtained (client_credentials" in out
    assert "expires in 300 s" in out and "token expires at" in out
    assert CLIENT_SECRET not in out and CLIENT_ID in out  # the id is no secret when written


async def test_auth_a_key_the_server_stops_accepting_fails_the_server_without_a_storm(
    manager: ServerManager, tmp_path: Path
) -> None:
    server_key = tmp_path / "server-key"
    server_key.write_text("the-key-both-sides-know")
    async with auth_server(tmp_path, "--api-key-file", str(server_key)) as server:
        spec = remote_spec("http", server.url, auth={"bearer": "${KEY}"})
        await ready(manager, "crm", spec, {"KEY": "the-key-both-sides-know"})
        server_key.write_text("a-key-we-were-never-given")  # revoked on the server's side

        assert (await manager.call("crm_whoami", {})).is_error
        supervisor = await settle(manager, "crm", "Failed")
        assert supervisor.last_error == "HTTP 401: the server refused our credentials, new ones too"
        refused = len(server.events("unauthorized"))
        for _ in range(5):
            assert (await manager.call("crm_whoami", {})).is_error
        assert len(server.events("unauthorized")) == refused, "no request after Failed"
