"""`jackfield run` as the real process (issue 7 acceptance): it follows a Kubernetes ConfigMap
volume swap, its probes tell the truth, and SIGTERM lets a live tool call finish, exits 0 and
leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.support.process import (
    AGENT_YAML,
    ConfigMapVolume,
    assert_clean_exit,
    echo_yaml,
    hub_client,
    jackfield_run,
    plain_config,
    poll,
    text_of,
)


def tools_of(status: dict[str, Any], name: str) -> list[str]:
    server = next((s for s in status["servers"] if s["name"] == name), None)
    return list(server["tools"]) if server and server["state"] == "Ready" else []


def test_a_configmap_volume_swap_is_applied_live(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "config")
    first = {"agent.yaml": AGENT_YAML, "servers.d/echo.yaml": echo_yaml("echo", "--tools", "echo")}
    volume.publish(first)
    root = volume.root
    assert (root / "..data").is_symlink() and (root / "servers.d").is_symlink()
    assert os.readlink(root / "servers.d") == "..data/servers.d"

    with jackfield_run(tmp_path / "run", root) as jackfield:
        jackfield.wait_ready()
        before = jackfield.servers_ready("echo")
        echo_before = next(s for s in before["servers"] if s["name"] == "echo")
        old_version = os.readlink(root / "..data")

        volume.publish({**first, "servers.d/more.yaml": echo_yaml("more", "--tools", "add")})

        after = jackfield.until(
            lambda s: tools_of(s, "more") == ["more_add"], what="the swapped-in server's tools"
        )
        assert not (root / old_version).exists(), "the kubelet deletes the old version dir"
        assert after["config"]["applied_revision"] != before["config"]["applied_revision"]
        assert after["config"]["history"][0]["outcome"] == "applied"
        echo_after = next(s for s in after["servers"] if s["name"] == "echo")
        assert echo_after["since"] == echo_before["since"], "an unchanged server is not touched"
        assert echo_after["restarts"] == 0 and tools_of(after, "echo") == ["echo_echo"]
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)


def test_readiness_waits_for_the_first_applied_snapshot(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"echo": echo_yaml("echo", "--tools", "echo")})
    broken = config / "servers.d" / "broken.yaml"
    broken.write_text("apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: [\n")

    env = {"JACKFIELD_RESYNC_INTERVAL": "1"}
    with jackfield_run(tmp_path / "run", config, env=env) as jackfield:
        poll(lambda: jackfield.readyz()[0], what="the status server up")
        assert jackfield.readyz() == (503, '{"ok": false, "reason": "no config applied yet"}')
        stalled = jackfield.until(
            lambda s: s["config"]["errors"], what="the validation error in status"
        )
        assert stalled["config"]["errors"][0]["file"] == "servers.d/broken.yaml"
        assert jackfield.readyz() == (503, '{"ok": false, "reason": "no config applied yet"}')
        assert jackfield.get("/livez")[0] == 200

        broken.unlink()
        jackfield.wait_ready()
        status = jackfield.status()
        assert status["ready"] is True and status["store"]["state"] == "Ok"
        conditions = {c["type"]: c["status"] for c in status["config"]["conditions"]}
        # the Stalled condition went with the broken file; a Reconciling one comes and goes with
        # each 1 s resync (a loaded machine reads status during one)
        assert conditions.get("Ready") == "True" and "Stalled" not in conditions, conditions
        # liveness stays up once the store has been opened (its opener task has finished)
        deadline = time.monotonic() + 3.0  # longer than one store sync interval
        while time.monotonic() < deadline:
            assert jackfield.get("/livez") == (200, b'{"ok": true}')
            assert jackfield.get("/healthz")[0] == 200
            time.sleep(0.2)
        assert jackfield.metric("jackfield_resync_total") >= 1, "timer resyncs are counted"
        assert jackfield.readyz()[0] == 200, "a no-op resync keeps it ready"
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)


async def test_sigterm_lets_a_slow_tool_call_finish_then_exits_clean(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"echo": echo_yaml("echo", "--tools", "slow")})
    with jackfield_run(tmp_path / "run", config) as jackfield:
        await asyncio.to_thread(jackfield.wait_ready)
        await asyncio.to_thread(jackfield.servers_ready, "echo")
        processes = jackfield.children()
        assert len(processes) >= 2, f"the warden and the echo server: {processes}"

        async with hub_client(jackfield.hub_url, hub_may_stop=True) as client:
            # as an agent does: list first. An unlisted tool makes the SDK's call_tool list the
            # tools after the result, a request that races the hub's exit once the call is done
            assert "echo_slow" in {tool.name for tool in (await client.list_tools()).tools}
            call = asyncio.create_task(client.call_tool("echo_slow", {"seconds": 2}))
            await asyncio.to_thread(
                jackfield.until,
                lambda s: s["servers"][0].get("calls_in_flight") == 1,
                "the call in flight",
            )
            await asyncio.sleep(0.5)  # the scenario: SIGTERM half a second into the call
            sent = time.monotonic()
            jackfield.send(signal.SIGTERM)
            reason = await asyncio.to_thread(jackfield.wait_readyz, 503, 2.0)
            assert "shutting down" in reason and time.monotonic() - sent < 1.0
            result = await asyncio.wait_for(call, 10)
            assert not result.is_error
            assert text_of(result) == ["slept 2"]

        exit_code = await asyncio.to_thread(jackfield.wait_exit, 10.0)  # JACKFIELD_SHUTDOWN_GRACE
        assert time.monotonic() - sent < 10.0
        assert_clean_exit(jackfield, exit_code, processes)
