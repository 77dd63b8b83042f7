"""tests/servers/oauth.py, the OAuth-protected MCP test server, does what its docstring says:
over real HTTP it issues, rotates, expires and revokes tokens, re-reads a kubelet-style API key
file, serves discovery documents the SDK's models parse, and lets an MCP client (the SDK's own
client_credentials provider too) call its tools."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx2
import mcp_types
import pytest
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    validate_metadata_issuer,
)
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from tests.servers.launch import spawn
from tests.support.clients import INITIALIZE
from tests.support.polling import until

pytestmark = pytest.mark.timeout(60)

WAIT = 15.0  # bound on anything we wait for; never reached when things work
SECRET = "s3:cr+t%/é"  # needs form-urlencoding inside Basic (RFC 6749 2.3.1)


@dataclass
class Server:
    base: str
    http: httpx2.AsyncClient
    record: Path

    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"

    def events(self, event: str) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [line for line in lines if line["event"] == event]

    async def token(self, basic: tuple[str, str] | None = None, /, **form: str) -> httpx2.Response:
        """POST the form to the token endpoint, with Basic client authentication if given."""
        headers = {}
        if basic is not None:
            pair = f"{quote_plus(basic[0])}:{quote_plus(basic[1])}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return await self.http.post(f"{self.base}/as/token", data=form, headers=headers)

    async def access_token(self, client: str = "app", secret: str = SECRET) -> str:
        response = await self.token((client, secret), grant_type="client_credentials")
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def call_mcp(self, bearer: str | None) -> httpx2.Response:
        """An MCP initialize request carrying `bearer`: 200 when the gate lets it through."""
        headers = {"Accept": "application/json, text/event-stream"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        return await self.http.post(self.mcp, json=INITIALIZE, headers=headers)

    async def control(self, what: str, body: dict[str, Any]) -> httpx2.Response:
        return await self.http.post(f"{self.base}/control/{what}", json=body)

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = (await self.http.get(f"{self.base}/control/stats")).json()
        return stats


@contextlib.asynccontextmanager
async def oauth_server(record: Path, *flags: str) -> AsyncIterator[Server]:
    args = ("-m", "tests.servers.oauth", "--port", "0", "--record", str(record), *flags)
    async with (
        spawn(*args) as (_, port),
        httpx2.AsyncClient(timeout=WAIT) as http,
    ):
        yield Server(f"http://127.0.0.1:{port}", http, record)


@contextlib.asynccontextmanager
async def mcp_client(url: str, bearer: str | None = None, **http_options: Any
                     ) -> AsyncIterator[Client]:  # fmt: skip
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=WAIT, **http_options) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        yield client


def text(result: mcp_types.CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, mcp_types.TextContent)
    return block.text


def error(response: httpx2.Response) -> str:
    return str(response.json()["error"])


async def test_a_client_gets_tokens_with_basic_or_post_and_a_wrong_secret_is_refused(
    tmp_path: Path,
) -> None:
    async with oauth_server(tmp_path / "r.jsonl", "--client", f"app:{SECRET}") as server:
        basic = await server.token(("app", SECRET), grant_type="client_credentials",
                                   scope="read write")  # fmt: skip
        assert basic.status_code == 200
        assert basic.headers["cache-control"] == "no-store"
        issued = OAuthToken.model_validate(basic.json())
        assert (issued.token_type, issued.expires_in, issued.scope) == ("Bearer", 300, "read write")
        assert issued.refresh_token is None
        post = await server.token(grant_type="client_credentials", client_id="app",
                                  client_secret=SECRET)  # fmt: skip
        assert post.status_code == 200 and "scope" not in post.json()
        posted = post.json()["access_token"]
        assert (await server.call_mcp(posted)).status_code == 200

        wrong_basic = await server.token(("app", "nope"), grant_type="client_credentials")
        assert (wrong_basic.status_code, error(wrong_basic)) == (401, "invalid_client")
        assert wrong_basic.headers["www-authenticate"].startswith("Basic")
        wrong_post = await server.token(grant_type="client_credentials", client_id="app",
                                        client_secret="nope")  # fmt: skip
        assert (wrong_post.status_code, error(wrong_post)) == (401, "invalid_client")
        assert "www-authenticate" not in wrong_post.headers
        stranger = await server.token(("who", SECRET), grant_type="client_credentials")
        assert (stranger.status_code, error(stranger)) == (401, "invalid_client")

        assert [(e["auth_method"], e["expires_in"], e.get("scope")) for e in
                server.events("token")] == [("client_secret_basic", 300, "read write"),
                                            ("client_secret_post", 300, None)]  # fmt: skip
        assert [(e["client"], e["reason"]) for e in server.events("token_refused")] == [
            ("app", "secret"), ("app", "secret"), ("who", "unknown")]  # fmt: skip
        stats = await server.stats()
        assert (stats["tokens_issued"], stats["token_refused"]) == (2, 3)
        assert stats["by_client"]["app"]["tokens_issued"] == 2
        recorded = server.record.read_text()
        for secret in (SECRET, quote_plus(SECRET), issued.access_token, posted):
            assert secret not in recorded


async def test_the_token_endpoint_answers_rfc_6749_errors(tmp_path: Path) -> None:
    async with oauth_server(tmp_path / "r.jsonl", "--client", "app:pw", "--client", "pub:",
                            "--refresh-token", "pub:rt") as server:  # fmt: skip
        cases: list[tuple[httpx2.Response, int, str]] = [
            (await server.token(("app", "pw")), 400, "invalid_request"),  # no grant_type
            (await server.token(("app", "pw"), grant_type="password"), 400,
             "unsupported_grant_type"),
            (await server.token(("app", "pw"), grant_type="refresh_token"), 400, "invalid_request"),
            (await server.token(("app", "pw"), grant_type="refresh_token", refresh_token="rt"),
             400, "invalid_grant"),  # pub's
            (await server.token(("app", "pw"), grant_type="client_credentials",
                                client_secret="pw"), 400, "invalid_request"),  # two methods
            (await server.token(grant_type="client_credentials"), 401, "invalid_client"),
            (await server.token(grant_type="client_credentials", client_id="app"), 401,
             "invalid_client"),  # a confidential client without its secret
            (await server.token(grant_type="client_credentials", client_id="pub"), 400,
             "unauthorized_client"),
            (await server.http.post(f"{server.base}/as/token",
                                    json={"grant_type": "client_credentials"}), 400,
             "invalid_request"),
        ]  # fmt: skip
        assert [(r.status_code, error(r)) for r, _, _ in cases] == [(s, e) for _, s, e in cases]
        assert all(r.json()["error_description"] for r, _, _ in cases)
        assert (await server.stats())["tokens_issued"] == 0


async def test_a_token_is_refused_once_its_lifetime_is_over(tmp_path: Path) -> None:
    async with oauth_server(tmp_path / "r.jsonl", "--client", f"app:{SECRET}",
                            "--lifetime", "1") as server:  # fmt: skip
        asked = time.monotonic()
        response = await server.token(("app", SECRET), grant_type="client_credentials")
        assert response.json()["expires_in"] == 1
        token = response.json()["access_token"]
        assert (await server.call_mcp(token)).status_code == 200

        deadline = time.monotonic() + WAIT
        while (refused := await server.call_mcp(token)).status_code != 401:
            assert time.monotonic() < deadline, "the token never expired"
            await asyncio.sleep(0.02)
        assert time.monotonic() - asked >= 1.0  # not before its lifetime
        challenge = refused.headers["www-authenticate"]
        assert challenge == (f'Bearer error="invalid_token", resource_metadata="{server.base}'
                             '/.well-known/oauth-protected-resource/mcp"')  # fmt: skip
        last = server.events("unauthorized")[-1]
        assert (last["reason"], last["client"]) == ("expired", "app")
        assert (await server.call_mcp(await server.access_token())).status_code == 200


async def test_refresh_tokens_rotate_and_a_used_one_is_refused(tmp_path: Path) -> None:
    flags = ("--client", "pub:", "--client", "app:pw", "--refresh-token", "pub:rt-pub",
             "--refresh-token", "app:rt-app")  # fmt: skip
    async with oauth_server(tmp_path / "r.jsonl", *flags) as server:
        first = await server.token(grant_type="refresh_token", client_id="pub",
                                   refresh_token="rt-pub", scope="files")  # fmt: skip
        assert first.status_code == 200
        rotated = OAuthToken.model_validate(first.json())
        assert rotated.refresh_token not in (None, "rt-pub") and rotated.scope == "files"
        async with mcp_client(server.mcp, rotated.access_token) as client:
            assert json.loads(text(await client.call_tool("whoami", {}))) == {"client": "pub"}

        reused = await server.token(grant_type="refresh_token", client_id="pub",
                                    refresh_token="rt-pub")  # fmt: skip
        assert (reused.status_code, error(reused)) == (400, "invalid_grant")
        assert rotated.refresh_token is not None
        second = await server.token(grant_type="refresh_token", client_id="pub",
                                    refresh_token=rotated.refresh_token)  # fmt: skip
        assert second.status_code == 200 and second.json()["scope"] == "files"  # kept
        assert second.json()["refresh_token"] != rotated.refresh_token

        no_secret = await server.token(grant_type="refresh_token", client_id="app",
                                       refresh_token="rt-app")  # fmt: skip
        assert (no_secret.status_code, error(no_secret)) == (401, "invalid_client")
        confidential = await server.token(("app", "pw"), grant_type="refresh_token",
                                          refresh_token="rt-app")  # fmt: skip
        assert confidential.status_code == 200 and "refresh_token" in confidential.json()

        assert [e.get("reason") for e in server.events("token_refused")] == [
            "spent", "no_credentials"]  # fmt: skip
        assert [(e["client"], e["auth_method"]) for e in server.events("token")] == [
            ("pub", "none"), ("pub", "none"), ("app", "client_secret_basic")]  # fmt: skip
        stats = await server.stats()
        assert (stats["tokens_issued"], stats["refreshes"], stats["calls"]) == (3, 3, 1)
        assert "rt-pub" not in server.record.read_text()


async def test_a_revoked_client_is_refused_until_restored_and_its_old_tokens_stay_dead(
    tmp_path: Path,
) -> None:
    async with oauth_server(tmp_path / "r.jsonl", "--client", f"app:{SECRET}",
                            "--client", "other:pw") as server:  # fmt: skip
        old, bystander = await server.access_token(), await server.access_token("other", "pw")
        assert (await server.call_mcp(old)).status_code == 200

        revoked = await server.control("revoke", {"client": "app"})
        assert revoked.json() == {"client": "app", "revoked_tokens": 1}
        assert (await server.call_mcp(old)).status_code == 401
        assert server.events("unauthorized")[-1]["reason"] == "revoked"
        refused = await server.token(("app", SECRET), grant_type="client_credentials")
        assert (refused.status_code, error(refused)) == (401, "invalid_client")
        assert server.events("token_refused")[-1]["reason"] == "revoked"
        assert (await server.call_mcp(bystander)).status_code == 200  # other clients unharmed

        assert (await server.control("restore", {"client": "app"})).status_code == 200
        assert (await server.call_mcp(await server.access_token())).status_code == 200
        assert (await server.call_mcp(old)).status_code == 401
        assert (await server.control("revoke", {"client": "nobody"})).status_code == 404
        assert (await server.stats())["by_client"]["app"]["unauthorized"] == 2


async def test_the_token_endpoint_can_be_taken_down_and_brought_back(tmp_path: Path) -> None:
    async with oauth_server(tmp_path / "r.jsonl", "--client", f"app:{SECRET}") as server:
        token = await server.access_token()
        assert (await server.control("token-endpoint", {"down": True})).json() == {"down": True}
        down = await server.token(("app", SECRET), grant_type="client_credentials")
        assert (down.status_code, error(down)) == (503, "temporarily_unavailable")
        assert (await server.call_mcp(token)).status_code == 200  # issued tokens still work
        await server.control("token-endpoint", {"down": False})
        assert (await server.call_mcp(await server.access_token())).status_code == 200
        assert server.events("token_refused")[0]["status"] == 503
        assert (await server.stats())["token_refused"] == 1


def kubelet_secret(root: Path, version: str, key: str) -> None:
    """Write `key` the way the kubelet updates a Secret volume: a new timestamped directory,
    then an atomic swap of the `..data` symlink (`key -> ..data/key` stays put)."""
    (root / version).mkdir()
    (root / version / "key").write_text(key + "\n")
    if not (root / "..data").exists():
        (root / "..data").symlink_to(version)
        (root / "key").symlink_to("..data/key")
        return
    (root / "..data_tmp").symlink_to(version)
    os.replace(root / "..data_tmp", root / "..data")


async def test_the_api_key_file_is_reread_so_a_kubelet_style_swap_switches_keys(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "secret"
    volume.mkdir()
    kubelet_secret(volume, "..2026_01_01_00_00_00.1", "key-one")
    flags = ("--api-key-file", str(volume / "key"), "--client", f"app:{SECRET}")
    async with oauth_server(tmp_path / "r.jsonl", *flags) as server:
        async with mcp_client(server.mcp, "key-one") as client:
            assert json.loads(text(await client.call_tool("whoami", {}))) == {"client": "api-key"}
        assert (await server.call_mcp("key-two")).status_code == 401

        kubelet_secret(volume, "..2026_01_01_00_05_00.2", "key-two")
        assert (await server.call_mcp("key-one")).status_code == 401
        assert server.events("unauthorized")[-1]["reason"] == "unknown"
        async with mcp_client(server.mcp, "key-two") as client:
            assert text(await client.call_tool("echo", {"text": "hi"})) == "hi"
        assert (await server.call_mcp(await server.access_token())).status_code == 200  # also

        assert server.events("called") == [
            {**e, "client": "api-key"} for e in server.events("called")]  # fmt: skip
        assert "key-one" not in server.record.read_text()


@pytest.mark.parametrize("issuer_path", ["/as", ""])
async def test_discovery_from_a_401_to_the_token_endpoint_parses_with_the_sdk_models(
    tmp_path: Path, issuer_path: str
) -> None:
    flags = ("--client", f"app:{SECRET}", "--issuer-path", issuer_path)
    async with oauth_server(tmp_path / "r.jsonl", *flags) as server:
        unauthorized = await server.call_mcp(None)
        assert unauthorized.status_code == 401
        challenge = unauthorized.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and "error=" not in challenge  # RFC 6750 3.1
        assert server.events("unauthorized")[-1]["reason"] == "missing"

        named = extract_resource_metadata_from_www_auth(unauthorized)
        assert named == f"{server.base}/.well-known/oauth-protected-resource/mcp"
        [first, *_] = build_protected_resource_metadata_discovery_urls(named, server.mcp)
        resource = await handle_protected_resource_response(await server.http.get(first))
        assert resource is not None
        assert str(resource.resource) == server.mcp
        [issuer] = [str(url) for url in resource.authorization_servers]
        assert issuer == server.base + issuer_path

        urls = build_oauth_authorization_server_metadata_discovery_urls(issuer, server.mcp)
        found, metadata = await handle_auth_metadata_response(await server.http.get(urls[0]))
        assert found and metadata is not None
        validate_metadata_issuer(metadata, issuer)
        assert str(metadata.token_endpoint) == f"{issuer}/token"
        assert metadata.grant_types_supported == ["client_credentials", "refresh_token"]
        assert metadata.token_endpoint_auth_methods_supported is not None
        assert {"client_secret_basic", "client_secret_post"} <= set(
            metadata.token_endpoint_auth_methods_supported)  # fmt: skip

        data = {"grant_type": "client_credentials", "client_id": "app", "client_secret": SECRET}
        issued = await server.http.post(str(metadata.token_endpoint), data=data)
        assert (await server.call_mcp(issued.json()["access_token"])).status_code == 200
        assert [e["which"] for e in server.events("metadata")] == [
            "protected-resource", "authorization-server"]  # fmt: skip


async def test_token_requests_must_name_the_required_audience_and_resource(
    tmp_path: Path,
) -> None:
    flags = ("--client", "app:pw", "--require-audience", "api://tools", "--require-resource")
    async with oauth_server(tmp_path / "r.jsonl", *flags) as server:
        form = {"grant_type": "client_credentials", "client_id": "app", "client_secret": "pw"}
        missing = await server.token(**form, resource=server.mcp)
        wrong = await server.token(**form, audience="api://else", resource=server.mcp)
        elsewhere = await server.token(**form, audience="api://tools", resource="http://x/mcp")
        right = await server.token(**form, audience="api://tools", resource=server.mcp)
        assert [(r.status_code, r.json().get("error")) for r in (missing, wrong, elsewhere)] == [
            (400, "invalid_request"), (400, "invalid_target"), (400, "invalid_target")]  # fmt: skip
        assert right.status_code == 200


async def test_an_mcp_client_with_a_token_lists_tools_and_calls_whoami(tmp_path: Path) -> None:
    async with oauth_server(tmp_path / "r.jsonl", "--client", f"app:{SECRET}") as server:
        async with mcp_client(server.mcp, await server.access_token()) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"whoami", "echo", "slow"}
            hints = {n: t.annotations.read_only_hint for n, t in tools.items() if t.annotations}
            read_only = {n for n, hint in hints.items() if hint}
            assert read_only == {"whoami", "echo"}
            assert json.loads(text(await client.call_tool("whoami", {}))) == {"client": "app"}
            assert text(await client.call_tool("slow", {"seconds": 0.01})) == "slept 0.01"
        assert [(e["tool"], e["client"]) for e in server.events("called")] == [
            ("whoami", "app"), ("slow", "app")]  # fmt: skip
        assert (await server.stats())["by_client"]["app"]["calls"] == 2


class MemoryTokens:
    """The SDK's `TokenStorage`, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_the_sdks_client_credentials_provider_discovers_and_renews_its_token(
    tmp_path: Path,
) -> None:
    flags = ("--client", f"app:{SECRET}", "--lifetime", "1", "--require-resource")
    async with oauth_server(tmp_path / "r.jsonl", *flags) as server:
        auth = ClientCredentialsOAuthProvider(server.mcp, MemoryTokens(), "app", SECRET,
                                              issuer=f"{server.base}/as")  # fmt: skip
        async with mcp_client(server.mcp, auth=auth) as client:
            assert json.loads(text(await client.call_tool("whoami", {}))) == {"client": "app"}
            [first] = server.events("token")
            await until(lambda: time.monotonic() >= first["at"] + 1.0, timeout=WAIT,
                        what="the first token's lifetime to pass")  # fmt: skip
            assert text(await client.call_tool("echo", {"text": "again"})) == "again"
        assert (await server.stats())["tokens_issued"] >= 2  # renewed, on 401 or ahead of it
        assert server.events("unauthorized")[0]["reason"] == "missing"  # how discovery began


async def test_a_call_in_flight_finishes_though_its_token_expires_meanwhile(
    tmp_path: Path,
) -> None:
    async with oauth_server(tmp_path / "r.jsonl", "--client", f"app:{SECRET}",
                            "--lifetime", "2") as server:  # fmt: skip
        token = await server.access_token()
        [issued] = server.events("token")
        async with mcp_client(server.mcp, token) as client:
            await client.list_tools()  # else call_tool lists them after the call, too late
            outlive = issued["at"] + 2 - time.monotonic() + 0.3  # past the expiry
            answer = await client.call_tool("slow", {"seconds": outlive})
            assert text(answer) == f"slept {outlive:g}"
        [call] = server.events("called")
        assert call["at"] < issued["at"] + 2 < time.monotonic()  # began before, ended after
        assert (await server.call_mcp(token)).status_code == 401
