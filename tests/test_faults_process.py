"""Fault scenarios for the `jackfield run` process: signals at awkward moments, its own sudden
death, a vanishing config dir, a crash storm. Each ends with nothing left running. Marked
`faults` (`pytest -m faults`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import (
    CRASHER,
    assert_clean_exit,
    catches,
    crasher_yaml,
    echo_yaml,
    jackfield_run,
    marked,
    plain_config,
    poll,
    wait_gone,
    write_config,
    zombies_of,
)

pytestmark = pytest.mark.faults


def states(status: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["state"] for s in status["servers"]}


def server(status: dict[str, Any], name: str) -> dict[str, Any]:
    """The server's entry ({} while it is not listed)."""
    return next((s for s in status["servers"] if s["name"] == name), {})


# --------------------------------------------------------------------------- signals


def test_sigterm_while_it_is_still_importing_exits_zero(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"echo": echo_yaml("echo", "--tools", "echo")})
    with jackfield_run(tmp_path / "run", config) as jackfield:
        # the earliest moment a process can honour SIGTERM: its handler is installed (before
        # then the kernel's default action applies to any program)
        poll(lambda: catches(jackfield.pid, signal.SIGTERM), what="SIGTERM handler", every=0.001)
        jackfield.send(signal.SIGTERM)
        code = jackfield.wait_exit(15.0)
        assert jackfield.readyz()[0] == 0, "it never served"
        assert_clean_exit(jackfield, code)


def test_sigterm_while_the_first_snapshot_is_starting_exits_zero(tmp_path: Path) -> None:
    servers = {f"s{i:02d}": echo_yaml(f"s{i:02d}", "--tools", "echo") for i in range(20)}
    config = plain_config(tmp_path / "config", servers)
    with jackfield_run(tmp_path / "run", config) as jackfield:
        status = jackfield.until(lambda s: s["servers"], what="the first servers listed")
        assert set(states(status).values()) != {"Ready"} or len(status["servers"]) < 20
        processes = jackfield.children()
        jackfield.send(signal.SIGTERM)
        assert_clean_exit(jackfield, jackfield.wait_exit(25.0), processes)


def test_sigterm_during_a_reconcile_of_twenty_servers_exits_zero(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"base": echo_yaml("base", "--tools", "echo")})
    with jackfield_run(tmp_path / "run", config) as jackfield:
        jackfield.wait_ready()
        jackfield.servers_ready("base")
        write_config(
            config,
            {
                f"servers.d/s{i:02d}.yaml": echo_yaml(f"s{i:02d}", "--tools", "echo")
                for i in range(20)
            },
        )
        status = jackfield.until(lambda s: len(s["servers"]) > 1, what="the new servers listed")
        assert states(status)["base"] == "Ready"
        processes = jackfield.children()
        jackfield.send(signal.SIGTERM)
        assert_clean_exit(jackfield, jackfield.wait_exit(25.0), processes)


def test_sigkill_leaves_no_server_process_or_grandchild_running(tmp_path: Path) -> None:
    servers = {
        "parent": echo_yaml("parent", "--tools", "echo", "--spawn-grandchild"),
        "plain": echo_yaml("plain", "--tools", "echo"),
    }
    config = plain_config(tmp_path / "config", servers)
    with jackfield_run(tmp_path / "run", config) as jackfield:
        jackfield.wait_ready()
        status = jackfield.until(
            lambda s: (
                states(s) == {"parent": "Ready", "plain": "Ready"}
                and "grandchild" in (server(s, "parent")["stderr_tail"] or "")
            ),
            what="both Ready, the grandchild started",
        )
        match = re.search(r"grandchild (\d+)", server(status, "parent")["stderr_tail"])
        assert match is not None
        grandchild = int(match.group(1))
        processes = jackfield.children()
        assert grandchild in processes and len(processes) >= 4  # warden, 2 servers, grandchild

        jackfield.send(signal.SIGKILL)
        assert jackfield.wait_exit(5.0) == -signal.SIGKILL
        # PR_SET_PDEATHSIG kills each server; the warden kills each server's process group
        wait_gone(processes, timeout=10.0)
        assert not marked()


def test_sighup_forces_a_resync_that_sees_what_the_watcher_missed(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"echo": echo_yaml("echo", "--tools", "echo")})
    env = {"JACKFIELD_RESYNC_INTERVAL": "3600", "JACKFIELD_FORCE_POLLING": "true"}
    with jackfield_run(tmp_path / "run", config, env=env) as jackfield:
        jackfield.wait_ready()
        jackfield.until(lambda s: server(s, "echo").get("tools") == ["echo_echo"], what="Ready")
        # An edit the polling watcher cannot see: same size, same mtime, written in place.
        path = config / "servers.d" / "echo.yaml"
        before = path.stat()
        text = path.read_text()
        assert '"--tools", "echo"' in text
        with open(path, "r+") as f:
            f.write(text.replace('"--tools", "echo"', '"--tools", "slow"'))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        passes = jackfield.metric("jackfield_reconcile_total")
        resyncs = jackfield.metric("jackfield_resync_total")
        time.sleep(1.0)  # four polling rounds: the negative half of the scenario
        assert server(jackfield.status(), "echo")["tools"] == ["echo_echo"], "the watcher saw it"

        jackfield.send(signal.SIGHUP)
        status = jackfield.until(
            lambda s: server(s, "echo").get("tools") == ["echo_slow"], what="the resync applied it"
        )
        assert jackfield.metric("jackfield_resync_total") == resyncs + 1
        assert jackfield.metric("jackfield_reconcile_total") > passes
        assert status["config"]["history"][0]["outcome"] == "applied"
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)


# --------------------------------------------------------------------------- config dir


def test_a_deleted_config_dir_keeps_the_last_good_state_until_it_returns(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"echo": echo_yaml("echo", "--tools", "echo")})
    with jackfield_run(tmp_path / "run", config) as jackfield:
        jackfield.wait_ready()
        ready = jackfield.servers_ready("echo")
        since = server(ready, "echo")["since"]

        shutil.rmtree(config)
        gone = jackfield.until(
            lambda s: s["watcher"]["state"] == "Degraded", what="the watcher reports it"
        )
        assert server(gone, "echo")["state"] == "Ready", "the last good state keeps serving"
        assert server(gone, "echo")["tools"] == ["echo_echo"]
        assert jackfield.get("/livez")[0] == 200

        plain_config(
            config,
            {
                "echo": echo_yaml("echo", "--tools", "echo"),
                "more": echo_yaml("more", "--tools", "add"),
            },
        )
        back = jackfield.until(
            lambda s: (
                states(s) == {"echo": "Ready", "more": "Ready"}
                and s["watcher"]["state"] in ("Watching", "Polling")
            ),
            what="the recreated config applied",
        )
        assert server(back, "echo")["since"] == since, "an unchanged server is not restarted"
        assert server(back, "more")["tools"] == ["more_add"]
        assert back["config"]["errors"] == [] and back["ready"] is True
        processes = jackfield.children()
        assert_clean_exit(jackfield, jackfield.stop(), processes)


# --------------------------------------------------------------------------- crash storm


def test_fifty_servers_crashing_at_once_end_in_backoff_and_status_stays_quick(
    tmp_path: Path,
) -> None:
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    names = [f"c{i:02d}" for i in range(50)]
    config = plain_config(tmp_path / "config", {n: crasher_yaml(n, script) for n in names})
    with jackfield_run(tmp_path / "run", config) as jackfield:
        jackfield.wait_readyz(503)
        seen_backoff: set[str] = set()
        latencies: list[float] = []
        zombies: dict[int, float] = {}  # pid -> when first seen unreaped
        deadline = time.monotonic() + 60.0
        while len(seen_backoff) < len(names):
            assert time.monotonic() < deadline, f"never in Backoff: {set(names) - seen_backoff}"
            started = time.monotonic()
            code, body = jackfield.get("/status", timeout=15.0)
            latencies.append(time.monotonic() - started)
            assert code == 200, f"/status: {code} {body[:200]!r}\n{jackfield.log_tail()}"
            for s in json.loads(body)["servers"]:
                if s["state"] == "Backoff" and s["last_error"] and s["next_retry_at"]:
                    seen_backoff.add(s["name"])
            # an exited child is a zombie until the child watcher reaps it; one that stays a
            # zombie for seconds is a child nobody reaps
            now = time.monotonic()
            current = zombies_of(jackfield.pid)
            zombies = {pid: zombies.get(pid, now) for pid in current}
            stuck = {pid for pid, since in zombies.items() if now - since > 3.0}
            assert not stuck, f"unreaped children: {stuck}"
            jackfield.children()
            time.sleep(0.1)
        latencies.sort()
        print(f"/status latency: median {latencies[len(latencies) // 2]:.3f} s, "
              f"max {latencies[-1]:.3f} s over {len(latencies)} polls")  # fmt: skip
        assert latencies[len(latencies) // 2] < 0.5, latencies
        status = jackfield.status()
        assert sum(s["restarts"] for s in status["servers"]) >= len(names)
        assert jackfield.readyz()[0] == 200, "crashing servers do not make jackfield unready"
        assert_clean_exit(jackfield, jackfield.stop(), jackfield.seen)
