"""The README's run command on a fresh checkout: every enabled demo server Ready (issue #20).

The repo's own agent.yaml, servers.d/ and examples/ (the tracked files only, as a clone has
them) are copied to a temp dir and `jackfield run` starts there on the embedded defaults, the
way `scripts/run` starts it: SQLite in ./.jackfield/ inside the watched dir. The PATH it gets
lacks the venv's bin, as a shell that never activated the venv does: `mcp-server-time` is found
in the bin directory of the Python environment jackfield runs in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from watchfiles import Change

from jackfield.shell.stdio import OWN_SCRIPTS, search_path
from jackfield.shell.watcher import Ignored
from tests.conftest import REPO
from tests.support.process import JACKFIELD, Jackfield, poll
from tests.support.servers import npx

pytestmark = pytest.mark.timeout(240)

DEMO_CONNECT = 180.0
"""npx may fetch @modelcontextprotocol/server-filesystem on a cold cache."""


def checkout(into: Path) -> Path:
    """The tracked config files of the repo, laid out as a fresh clone has them."""
    listed = subprocess.run(
        ["git", "ls-files", "agent.yaml", "servers.d", "examples"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for rel in listed:
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, into / rel)
    return into


def enabled_servers(root: Path) -> set[str]:
    names = set()
    for path in (root / "servers.d").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc["kind"] == "MCPServer" and doc["spec"].get("enabled", True):
            names.add(doc["metadata"]["name"])
    return names


def without_own_bin(path: str) -> str:
    """PATH minus every directory holding this interpreter (the venv's bin)."""
    own = {str(Path(sys.executable).parent), OWN_SCRIPTS}
    return os.pathsep.join(p for p in path.split(os.pathsep) if p and p not in own)


def counter(metrics: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", metrics, re.M)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def test_search_path_ends_with_jackfields_own_scripts() -> None:
    assert search_path("/usr/bin:/bin", "/venv/bin") == "/usr/bin:/bin:/venv/bin"
    assert search_path("/venv/bin:/usr/bin", "/venv/bin") == "/venv/bin:/usr/bin"
    assert search_path(None, "/venv/bin").endswith(os.pathsep + "/venv/bin")


def test_the_demo_config_comes_up_green_on_a_fresh_checkout(tmp_path: Path) -> None:
    npx()
    root = checkout(tmp_path / "clone")
    wanted = enabled_servers(root)
    assert {"time", "files"} <= wanted  # the demo this test is about
    path = without_own_bin(os.environ.get("PATH", os.defpath))
    assert shutil.which("mcp-server-time", path=path) is None, "PATH still finds the venv"
    jackfield = Jackfield(
        root, root, database_url="sqlite:///./.jackfield/state.db",
        env={"PATH": path}, command=[str(JACKFIELD), "run"],
    )  # fmt: skip
    jackfield.log_path = tmp_path / "jackfield.log"  # not in the watched dir: a test artefact
    try:
        jackfield.start()

        def states() -> dict[str, Any] | None:
            code, body = jackfield.get("/status")
            if code != 200:
                return None
            servers = {s["name"]: s for s in json.loads(body)["servers"]}
            ready = all(servers.get(n, {}).get("state") == "Ready" for n in wanted)
            return servers if ready else None

        servers = poll(states, timeout=DEMO_CONNECT, what="every enabled demo server Ready")
        assert servers["search"]["state"] == "Disabled"
        assert "SEARCH_API_KEY" in servers["search"]["description"]
        assert (root / ".jackfield" / "state.db").exists()

        # The store wrote on every pass and state change above; none of that was a file event.
        # One real edit (a rename: one event) is, and its pass applies: events before it would
        # have been counted before it.
        before = jackfield.status()["config"]["applied_revision"]
        staged = tmp_path / "tone.yaml"
        staged.write_text(
            "apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {name: tone}\n"
            "spec: {text: Be brief.}\n"
        )
        os.rename(staged, root / "servers.d" / "tone.yaml")
        poll(
            lambda: jackfield.status()["config"]["applied_revision"] != before,
            timeout=30, what="the edit applied",
        )  # fmt: skip
        metrics = jackfield.get("/metrics")[1].decode()
        assert counter(metrics, "jackfield_watch_events_total") == 1
    finally:
        jackfield.stop()
    logged = [json.loads(line) for line in jackfield.log_path.read_text().splitlines() if line]
    assert any(r["logger"].startswith("jackfield") for r in logged)
    assert not [r for r in logged if r["logger"].startswith("watchfiles")]


def test_the_store_and_its_companions_are_never_config(tmp_path: Path) -> None:
    db = tmp_path / ".jackfield" / "state.db"
    ignored = Ignored([db], tmp_path)
    for path in (db, f"{db}-wal", f"{db}-journal", f"{db}-shm", db.parent):
        assert not ignored.counts(Change.modified, str(path))
    for path in (tmp_path / "servers.d" / "a.yaml", tmp_path, tmp_path / ".jackfield2"):
        assert ignored.counts(Change.added, str(path))
    # a store at the root of the config dir hides its own files, never the root
    beside = Ignored([tmp_path / "state.db"], tmp_path)
    assert beside.counts(Change.deleted, str(tmp_path))
    assert not beside.counts(Change.modified, str(tmp_path / "state.db-wal"))
