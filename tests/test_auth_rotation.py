"""Secrets that rotate under a running `jackfield run` (#15): a Kubernetes Secret volume, laid
out and updated as the kubelet does (`..data` swapped by rename), holds an API key and a token.
While calls flow through the hub, rotating the API key moves the HTTP server to the new key
with no failed call and no reconnect (the next request carries it; one that raced the swap
got a 401 and was sent again with the key read anew); rotating the stdio server's token
restarts that server alone, with the new value in its environment; a WebSocket server, whose
credentials go only in its handshake, reconnects with the new one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from jackfield.core.connection import resolve
from jackfield.core.expansion import file_key
from tests.servers.launch import spawn
from tests.support.manager import checked_manager, plug, remote_spec, serving, settle
from tests.support.process import (
    ConfigMapVolume,
    echo_yaml,
    hub_client,
    jackfield_run,
    plain_config,
    text_of,
)

pytestmark = pytest.mark.timeout(180)

KEY_ONE = "api-key-one-0f9e8d7c6b5a"
KEY_TWO = "api-key-two-a1b2c3d4e5f6"
TOKEN_ONE = "stdio-token-one-123456"
TOKEN_TWO = "stdio-token-two-654321"


def crm_yaml(url: str, secret_dir: Path) -> str:
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: crm}\n"
        f"spec:\n  transport: http\n  url: {url}\n"
        f"  auth: {{bearer: '${{file:{secret_dir}/api-key}}'}}\n"
    )


def by_name(status: dict[str, Any], name: str) -> dict[str, Any]:
    """The server's status; {} while it is absent (between a stop and its restart)."""
    return next((s for s in status["servers"] if s["name"] == name), {})


async def test_auth_a_rotated_secret_volume_switches_keys_without_a_failed_call(
    tmp_path: Path,
) -> None:
    secret = ConfigMapVolume(tmp_path / "secret")
    secret.publish({"api-key": KEY_ONE + "\n", "token": TOKEN_ONE + "\n"})
    record = tmp_path / "oauth.jsonl"
    flags = ("--api-key-file", str(tmp_path / "secret" / "api-key"), "--record", str(record))
    async with spawn("-m", "tests.servers.oauth", "--port", "0", *flags) as (_, port):
        servers = {
            "crm": crm_yaml(f"http://127.0.0.1:{port}/mcp", tmp_path / "secret"),
            "echo": echo_yaml("echo", "--tools", "echo,env").replace(
                "  env: {", f"  env: {{API_TOKEN: '${{file:{tmp_path}/secret/token}}', "
            ),
        }
        config = plain_config(tmp_path / "config", servers)
        with jackfield_run(tmp_path / "run", config) as jackfield:
            await asyncio.to_thread(jackfield.wait_ready)
            await asyncio.to_thread(jackfield.servers_ready, "crm", "echo")
            before = jackfield.status()
            echo_pid = by_name(before, "echo")["pid"]
            crm_connected = by_name(before, "crm")["last_connected"]
            async with hub_client(jackfield.hub_url) as client:
                await client.list_tools()
                outcomes: list[bool] = []
                stop = asyncio.Event()

                async def keep_calling() -> None:
                    while not stop.is_set():
                        result = await client.call_tool("crm_whoami", {})
                        outcomes.append(not result.is_error)

                caller = asyncio.create_task(keep_calling())
                try:
                    await asyncio.to_thread(
                        jackfield.until, lambda _: len(outcomes) >= 5, "calls with the first key"
                    )
                    for key in (KEY_TWO, KEY_ONE + "-again"):
                        wanted = len(outcomes) + 10

                        def ten_more(_: dict[str, Any], n: int = wanted) -> bool:
                            return len(outcomes) >= n

                        secret.publish({"api-key": key + "\n", "token": TOKEN_ONE + "\n"})
                        # calls keep succeeding after the swap: the server accepts only `key`
                        await asyncio.to_thread(jackfield.until, ten_more, "calls after the swap")
                finally:
                    stop.set()
                    await caller
                assert outcomes and all(outcomes), f"{outcomes.count(False)} call(s) failed"
                untouched = by_name(jackfield.status(), "echo")
                assert (untouched["pid"], untouched["restarts"]) == (echo_pid, 0), (
                    "the key was crm's alone: the other server did not restart"
                )

                # the stdio server's token: it restarts with the new value, the other does not
                secret.publish({"api-key": KEY_ONE + "-again\n", "token": TOKEN_TWO + "\n"})
                restarted = await asyncio.to_thread(
                    jackfield.until,
                    lambda s: (
                        by_name(s, "echo").get("pid") not in (None, echo_pid)
                        and by_name(s, "echo")["state"] == "Ready"
                    ),
                    "the echo server restarted with the new token",
                )
                got = await client.call_tool("echo_env", {"name": "API_TOKEN"})
                assert text_of(got) == [TOKEN_TWO]
            crm = by_name(restarted, "crm")
            assert crm["state"] == "Ready" and crm["restarts"] == 0
            assert crm["last_connected"] == crm_connected, "crm kept its connection throughout"
            assert crm["auth"]["kind"] == "bearer"
            log = (tmp_path / "run" / "jackfield.log").read_text()
            assert log.count("a secret file changed; rotating its credentials") >= 3
            assert jackfield.stop() == 0
        events = [json.loads(line) for line in record.read_text().splitlines()]
        refused = [e for e in events if e["event"] == "unauthorized"]
        # a call that raced a swap was refused once and sent again with the new key
        assert all(e["reason"] in ("unknown", "missing") for e in refused)
        for text in (log, json.dumps(restarted)):
            for value in (KEY_ONE, KEY_TWO, TOKEN_ONE, TOKEN_TWO):
                assert value not in text


async def test_auth_a_websocket_server_gets_the_bearer_at_its_handshake_and_reconnects_on_rotation(
    tmp_path: Path,
) -> None:
    """A WebSocket server reads credentials only at the handshake: a rotated token reconnects
    it (through the manager, as the reconciler asks), and the new handshake carries it."""
    path = str(tmp_path / "ws-token")
    spec = remote_spec("websocket", "${WS_URL}", auth={"bearer": f"${{file:{path}}}"})
    async with (
        serving("websocket", "--require-token", "ws-token-two") as (url, _),
        checked_manager() as manager,
    ):
        env = {"WS_URL": url}
        await plug(manager, "ws", spec, {**env, file_key(path): "ws-token-one"})
        refused = await settle(manager, "ws", "Failed")
        assert refused.last_error == "HTTP 401: the server refused our credentials"
        await manager.rotate("ws", resolve(spec, {**env, file_key(path): "ws-token-two"}))
        await settle(manager, "ws", "Ready")
        assert not (await manager.call("ws_echo", {"text": "over the socket"})).is_error
        auth = next(s for s in manager.statuses() if s.name == "ws").extra["auth"]
        assert auth["kind"] == "bearer"
