"""Descendants of a stdio server that leave its process group (`setsid -f`, a double fork with
`setsid()`, `setpgid(0, 0)`) die with the server: on SIGTERM of a real `jackfield run`, on its
SIGKILL, and when the server is removed from the config. Each test runs both ways of holding
a process tree (shell/trees.py): `auto`, which on this machine is a cgroup v2 per server
process, and the subreaper shim, the way it runs where /sys/fs/cgroup is read-only. Marked
`faults` (`pytest -m faults`)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.process import (
    MARK,
    MARK_VAR,
    Jackfield,
    Proc,
    assert_clean_exit,
    echo_yaml,
    jackfield_run,
    marked,
    plain_config,
    poll,
    processes,
    still_running,
    wait_gone,
)

pytestmark = pytest.mark.faults

ESCAPE = """
import os
if os.fork() == 0:  # the classic daemon: fork, setsid, fork again, the middle one exits
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "986"])
    os._exit(0)
if os.fork() == 0:  # a process group of its own in the same session
    os.setpgid(0, 0)
    os.execvp("sleep", ["sleep", "987"])
os.wait()
"""
ESCAPEES = {"sleep 985", "sleep 986", "sleep 987"}


def escaping_yaml(name: str, script: Path) -> str:
    """The issue's repro (`setsid -f sleep 985`) plus the two other ways out of the group,
    then the echo server; everything carries the leak MARK."""
    command = (
        f"setsid -f sleep 985; {sys.executable} {script}; "
        f"exec {sys.executable} -m tests.servers.echo --tools echo"
    )
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  command: sh\n  args: [-c, '{command}']\n  cwd: {REPO}\n"
        f"  env: {{{MARK_VAR}: {MARK}}}\n"
    )


def escapees() -> dict[int, Proc]:
    return {pid: p for pid, p in marked().items() if p.cmdline in ESCAPEES}


@contextlib.contextmanager
def escaping_run(tmp_path: Path, mode: str, servers: dict[str, str]) -> Iterator[Jackfield]:
    """`jackfield run` with the escaping server (and `servers`), holding trees the `mode` way."""
    script = tmp_path / "escape.py"
    script.write_text(ESCAPE)
    everything = {"escapes": escaping_yaml("escapes", script), **servers}
    config = plain_config(tmp_path / "config", everything)
    env = {"JACKFIELD_PROCESS_TREE": mode}
    with jackfield_run(tmp_path / "run", config, env=env) as jackfield:
        yield jackfield


def all_escaped(jackfield: Jackfield, mode: str) -> dict[int, Proc]:
    """Wait for the server and its three escapees; check they did leave its process group
    and that the way of holding them is the one `mode` says."""
    jackfield.servers_ready("escapes")
    found = poll(lambda: escapees() if len(escapees()) == 3 else None, what="three escapees")
    entry = jackfield.server("escapes")
    assert entry is not None
    table = processes()
    server = table[entry["pid"]]
    assert all(p.pgid != server.pgid for p in found.values()), "they left the group"
    for pid, proc in found.items():
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        if mode == "subreaper":
            shim = table[proc.ppid]  # re-parented to the subreaper, not to init
            assert "subreaper.py" in shim.cmdline and "/jackfield-" not in cgroup
        else:
            assert "/jackfield-" in cgroup, f"auto is the cgroup path here: {cgroup}"
    return found


@pytest.mark.parametrize("mode", ["auto", "subreaper"])
def test_sigterm_leaves_no_descendant_that_left_the_process_group(
    tmp_path: Path, mode: str
) -> None:
    with escaping_run(tmp_path, mode, {}) as jackfield:
        found = all_escaped(jackfield, mode)
        processes_before = jackfield.children()
        jackfield.send(signal.SIGTERM)
        assert_clean_exit(jackfield, jackfield.wait_exit(25.0), {**processes_before, **found})
        assert not still_running(found) and not marked()


@pytest.mark.parametrize("mode", ["auto", "subreaper"])
def test_sigkill_of_jackfield_leaves_no_descendant_that_left_the_process_group(
    tmp_path: Path, mode: str
) -> None:
    with escaping_run(tmp_path, mode, {}) as jackfield:
        found = all_escaped(jackfield, mode)
        processes_before = jackfield.children()
        jackfield.send(signal.SIGKILL)
        assert jackfield.wait_exit(5.0) == -signal.SIGKILL
        # the leader dies of PDEATHSIG; the warden kills the cgroup, or the shim its tree
        wait_gone({**processes_before, **found}, timeout=10.0)
        assert not marked()


@pytest.mark.parametrize("mode", ["auto", "subreaper"])
def test_removing_a_server_kills_the_descendants_that_left_its_process_group(
    tmp_path: Path, mode: str
) -> None:
    with escaping_run(tmp_path, mode, {"plain": echo_yaml("plain", "--tools", "echo")}) as jf:
        found = all_escaped(jf, mode)
        (jf.config_dir / "servers.d" / "escapes.yaml").unlink()
        jf.until(lambda s: [e["name"] for e in s["servers"]] == ["plain"], what="removed")
        wait_gone(found, timeout=12.0)
        jf.assert_running()
        assert {p.cmdline for p in marked().values()} & ESCAPEES == set()
        jf.send(signal.SIGTERM)
        assert_clean_exit(jf, jf.wait_exit(25.0))
