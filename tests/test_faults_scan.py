"""Fault scenarios for the config dir itself: links, special files, unreadable directories, and
configs too heavy to load. Each is an error with its path (never a traceback, a hang or a silent
skip), a Stalled status with the reason, and the last good state keeps serving. Marked `faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jackfield.core.desired import ParseCache, build_snapshot
from jackfield.core.loading import (
    MAX_FILE_BYTES,
    MAX_NODES,
    MAX_SNAPSHOT_NODES,
    Budget,
    SourceFile,
    load_file,
)
from jackfield.errors import ConfigError, ConfigInvalid
from jackfield.shell.sources import scan
from jackfield.shell.watcher import ConfigWatcher
from tests.conftest import IN_CI
from tests.support.config import AGENT, errors_of, server_yaml, write
from tests.support.controller import running, until
from tests.support.process import jackfield_run, plain_config, poll

pytestmark = pytest.mark.faults

JACKFIELD = [sys.executable, "-m", "jackfield.cli"]
OFF = "  enabled: false\n  command: python\n"
"""A server body that is applied and listed in status, and starts no process."""

NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
"""Root reads any directory: this drops the capabilities that bypass permission bits, for the
command it runs (the test process keeps them)."""

needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None and not IN_CI, reason="needs setpriv (util-linux)"
)


def validate(root: Path, *, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *JACKFIELD, "validate", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def where(errors: list[ConfigError]) -> dict[str, str]:
    return {e.path: e.message for e in errors}


def stalled(rec) -> str | None:  # type: ignore[no-untyped-def]
    return next((c.reason for c in rec.status.conditions if c.type == "Stalled"), None)


def bomb_documents(count: int) -> str:
    """`count` documents, each just under MAX_NODES once its aliases are expanded (~300 bytes
    each): every one passes the per-document budget."""
    docs = []
    for d in range(count):
        lines = [f"a: &a{d} [x, x, x, x, x, x, x, x, x, x]"]
        previous = f"a{d}"
        for level in "bcd":
            lines.append(f"{level}: &{level}{d} [" + ", ".join([f"*{previous}"] * 10) + "]")
            previous = f"{level}{d}"
        lines.append("e: [" + ", ".join([f"*{previous}"] * 7) + "]")
        docs.append("\n".join(lines) + "\n")
    return "---\n".join(docs)


@contextlib.contextmanager
def unix_socket(path: Path) -> Iterator[None]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        yield
    finally:
        sock.close()


# --------------------------------------------------------------------------- links


def test_a_file_symlink_loop_is_an_error_with_its_path_not_a_traceback(config_dir: Path) -> None:
    servers = config_dir / "servers.d"
    write(config_dir, {"servers.d/good.yaml": server_yaml("good")})
    os.symlink("y.yaml", servers / "x.yaml")
    os.symlink("x.yaml", servers / "y.yaml")
    os.symlink("self.yaml", servers / "self.yaml")
    got = validate(config_dir)
    assert got.returncode == 1 and "Traceback" not in got.stderr, got.stderr
    assert sorted(got.stdout.splitlines()) == [
        f"{servers}/{name}.yaml:1:1: cannot read file: symlink loop" for name in ("self", "x", "y")
    ]


def test_a_link_loop_as_the_agent_file_or_the_config_dir_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "config"
    (root / "servers.d").mkdir(parents=True)
    os.symlink("agent.yaml", root / "agent.yaml")
    assert where(errors_of(root))["agent.yaml"] == "cannot read file: symlink loop"
    os.symlink("loop", tmp_path / "loop")
    got = validate(tmp_path / "loop")
    assert got.returncode == 1 and "Traceback" not in got.stderr, got.stderr
    assert got.stdout.strip().endswith("cannot read config dir: symlink loop")


def test_a_directory_link_to_an_ancestor_is_read_once(config_dir: Path) -> None:
    write(config_dir, {"servers.d/team/t.yaml": server_yaml("t")})
    os.symlink("..", config_dir / "servers.d" / "team" / "up")
    found = scan(config_dir)
    assert [f.path for f in found.files] == ["agent.yaml", "servers.d/team/t.yaml"]
    (error,) = found.errors
    assert error.path == "servers.d/team/up"
    assert "directory already read as servers.d" in error.message


def test_two_directory_self_links_read_each_file_once(config_dir: Path) -> None:
    # before: every path a/b/a/a/b/... down to 40 links deep, 2^40 of them
    write(config_dir, {f"servers.d/s{i}.yaml": server_yaml(f"s{i}") for i in range(3)})
    os.symlink(".", config_dir / "servers.d" / "a")
    os.symlink(".", config_dir / "servers.d" / "b")
    found = scan(config_dir)
    assert len(found.files) == 4  # agent.yaml and the three servers, each read once
    assert sorted(where(found.errors)) == ["servers.d/a", "servers.d/b"]
    assert all("already read as servers.d" in e.message for e in found.errors)


def test_two_links_to_one_directory_read_it_once(config_dir: Path) -> None:
    write(config_dir, {"servers.d/shared/s.yaml": server_yaml("s")})
    os.symlink("shared", config_dir / "servers.d" / "one")
    os.symlink("shared", config_dir / "servers.d" / "two")
    found = scan(config_dir)
    assert [f.path for f in found.files] == ["agent.yaml", "servers.d/shared/s.yaml"]
    assert where(found.errors) == {
        f"servers.d/{link}": "directory already read as servers.d/shared (a symlink loop?);"
        " a directory is read once"
        for link in ("one", "two")
    }


def test_a_directory_link_outside_the_config_dir_is_not_followed(
    config_dir: Path, tmp_path: Path
) -> None:
    write(tmp_path / "elsewhere", {"evil.yaml": server_yaml("evil")})
    os.symlink(tmp_path / "elsewhere", config_dir / "servers.d" / "out")
    (error,) = errors_of(config_dir)
    assert error.path == "servers.d/out" and "outside the config dir" in error.message


# --------------------------------------------------------------------------- special files


def _read_in_thread(root: Path) -> list[ConfigError]:
    """`errors_of(root)`, failing (rather than hanging the run) if it does not return."""
    result: list[list[ConfigError]] = []
    worker = threading.Thread(target=lambda: result.append(errors_of(root)), daemon=True)
    worker.start()
    worker.join(30)
    assert result, "the scan did not return: it blocked on a special file"
    return result[0]


def test_a_fifo_named_yaml_is_refused_without_opening_it(config_dir: Path) -> None:
    servers = config_dir / "servers.d"
    os.mkfifo(servers / "pipe.yaml")
    os.mkfifo(servers / "hidden")
    os.symlink("hidden", servers / "link.yaml")  # the class: a link to a FIFO
    assert where(_read_in_thread(config_dir)) == {
        "servers.d/link.yaml": "a FIFO (named pipe), not a regular file; not read",
        "servers.d/pipe.yaml": "a FIFO (named pipe), not a regular file; not read",
    }


def test_a_unix_socket_named_yaml_is_refused(config_dir: Path) -> None:
    with unix_socket(config_dir / "servers.d" / "sock.yaml"):
        (error,) = _read_in_thread(config_dir)
    assert (error.path, error.message) == (
        "servers.d/sock.yaml",
        "a socket, not a regular file; not read",
    )


@pytest.mark.parametrize(("minor", "device"), [(3, "null"), (5, "zero")])
def test_a_character_device_named_yaml_is_refused(
    config_dir: Path, minor: int, device: str
) -> None:
    # before: /dev/null read as an empty file (silently valid), /dev/zero as 1 MiB of zeros
    path = config_dir / "servers.d" / f"{device}.yaml"
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    (error,) = _read_in_thread(config_dir)
    assert error.path == f"servers.d/{device}.yaml"
    assert error.message == "a character device, not a regular file; not read"


# --------------------------------------------------------------------------- unreadable dirs


@needs_setpriv
def test_an_unreadable_subdirectory_is_an_error_with_its_path(config_dir: Path) -> None:
    write(
        config_dir,
        {"servers.d/a.yaml": server_yaml("a"), "servers.d/team/t.yaml": server_yaml("t")},
    )
    (config_dir / "servers.d" / "team").chmod(0)
    try:
        got = validate(config_dir, prefix=tuple(NO_DAC))
    finally:
        (config_dir / "servers.d" / "team").chmod(0o755)
    assert got.returncode == 1, got.stdout + got.stderr
    assert got.stdout.splitlines() == [
        f"{config_dir}/servers.d/team:1:1: cannot read directory: Permission denied"
    ]


@needs_setpriv
def test_an_unreadable_subdirectory_keeps_its_servers_and_stalls(tmp_path: Path) -> None:
    # before: the directory was skipped, its server deleted, and status said Ready
    config = plain_config(tmp_path / "config", {"a": server_yaml("a", OFF)})
    write(config, {"servers.d/team/t.yaml": server_yaml("t", OFF)})
    command = [*NO_DAC, str(Path(sys.executable).with_name("jackfield")), "run", "--no-agent"]
    env = {"JACKFIELD_RESYNC_INTERVAL": "1"}
    team = config / "servers.d" / "team"
    with jackfield_run(tmp_path / "run", config, env=env, command=command) as jackfield:
        jackfield.wait_ready()
        applied = jackfield.until(
            lambda s: {x["name"] for x in s["servers"]} == {"a", "t"}, what="both applied"
        )["config"]["applied_revision"]
        team.chmod(0)
        try:
            status = jackfield.until(
                lambda s: s["config"]["errors"], what="the unreadable directory in status"
            )
        finally:
            team.chmod(0o755)
        (error,) = status["config"]["errors"]
        assert (error["file"], error["message"]) == (
            "servers.d/team",
            "cannot read directory: Permission denied",
        )
        stalled_by = {c["type"]: c["reason"] for c in status["config"]["conditions"]}
        assert stalled_by["Stalled"] == "ValidationFailed" and stalled_by["Ready"] != "True"
        assert status["config"]["applied_revision"] == applied
        assert {x["name"] for x in status["servers"]} == {"a", "t"}


# --------------------------------------------------------------------------- in the controller


@pytest.mark.parametrize("fault", ["file loop", "directory loop", "fifo", "socket"])
async def test_a_scan_failure_is_stalled_with_the_reason_and_keeps_the_last_good_state(
    config_dir: Path, fault: str
) -> None:
    # before: a loop crashed every pass while status said Ready; a FIFO blocked passes for good
    write(config_dir, {"servers.d/good.yaml": server_yaml("good")})
    servers = config_dir / "servers.d"
    async with running(config_dir) as (rec, target, _), contextlib.AsyncExitStack() as stack:
        applied = rec.status.applied_revision
        if fault == "file loop":
            os.symlink("bad.yaml", servers / "bad.yaml")
        elif fault == "directory loop":
            os.symlink(".", servers / "bad")
        elif fault == "fifo":
            os.mkfifo(servers / "bad.yaml")
        else:
            stack.enter_context(unix_socket(servers / "bad.yaml"))
        await until(lambda: stalled(rec) == "ValidationFailed", timeout=30, what="stalled")
        (error,) = rec.status.errors
        assert str(error["file"]).startswith("servers.d/bad")
        ready = next(c for c in rec.status.conditions if c.type == "Ready")
        assert ready.status == "False" and ready.reason == "ValidationFailed"
        assert set(target.servers) == {"good"} and rec.status.applied_revision == applied


async def test_a_polling_watcher_sees_changes_past_a_directory_loop(config_dir: Path) -> None:
    # before: notify's poller failed on every walk ("File system loop found"), Degraded
    os.symlink(".", config_dir / "servers.d" / "a")
    os.mkfifo(config_dir / "servers.d" / "pipe.yaml")
    events: list[int] = []
    watcher = ConfigWatcher(
        config_dir, lambda: events.append(1), debounce_ms=20, tick_ms=50, force_polling=True
    )
    task = asyncio.create_task(watcher.run())
    try:
        await until(lambda: watcher.state == "Polling", what="polling")
        seen = len(events)
        (config_dir / "servers.d" / "new.yaml").write_text(server_yaml("new"))
        await until(lambda: len(events) > seen, what="the change seen by polling")
        assert watcher.state == "Polling" and watcher.restarts == 0, watcher.message
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------------- budgets


def test_many_documents_under_the_document_budget_stop_at_the_snapshot_budget() -> None:
    text = bomb_documents(100)
    assert len(text) < 32 * 1024  # the 17 KB, give or take the alias names
    budget = Budget()
    _, errors = load_file(SourceFile("servers.d/bomb.yaml", text.encode()), {}, budget)
    # before: all 100 documents expanded (9 million nodes, 23-37 s); now it stops at the budget
    assert budget.spent == MAX_SNAPSHOT_NODES + 1
    assert "all files together pass" in errors[-1].message
    assert errors[-1].path == "servers.d/bomb.yaml" and errors[-1].line > 1


def test_the_snapshot_budget_spans_files_and_the_parse_cache() -> None:
    one = bomb_documents(1)
    files = [SourceFile("agent.yaml", AGENT.encode())]
    files += [SourceFile(f"servers.d/b{i:02}.yaml", one.encode()) for i in range(20)]
    fits = MAX_SNAPSHOT_NODES // MAX_NODES  # files each close to MAX_NODES that fit
    cache: ParseCache = {}
    results = []
    for _ in range(2):  # cold, then warm: the cache must not let more through
        with pytest.raises(ConfigInvalid) as caught:
            build_snapshot(files, {}, cache=cache)
        results.append(caught.value.errors)
    assert results[0] == results[1]
    (error,) = [e for e in results[0] if "all files together" in e.message]
    assert error.path == f"servers.d/b{fits:02}.yaml"
    assert len(cache) == fits + 1  # the file cut short and those after it are not kept


def test_a_config_over_the_time_budget_is_refused_where_it_ran_out(config_dir: Path) -> None:
    docs = [
        f"apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {{name: p{d}}}\n"
        f"spec: {{text: fragment {d}, order: {d}}}\n"
        for d in range(2000)
    ]
    (config_dir / "servers.d" / "prompts.yaml").write_text("---\n".join(docs))
    found = scan(config_dir)
    looks = itertools.count()
    # the deadline passes at the 4th look: agent.yaml (1), then the prompts' 3rd document
    budget = Budget(expired=lambda: next(looks) >= 3, seconds=0.5)
    with pytest.raises(ConfigInvalid) as caught:
        build_snapshot(found.files, {}, budget=budget)
    (error,) = caught.value.errors
    assert (error.path, error.line) == ("servers.d/prompts.yaml", 10)  # the 3rd document's ---
    assert error.message.startswith("reading the config took longer than 0.5 s")
    assert len(build_snapshot(found.files, {}).prompts) == 2000


async def test_a_pass_over_its_time_budget_stalls_then_retries_the_same_files(
    config_dir: Path,
) -> None:
    write(config_dir, {"servers.d/good.yaml": server_yaml("good")})
    async with running(config_dir, resync_interval=3600) as (rec, target, _):
        applied = rec.status.applied_revision
        rec.parse_budget = 0.0  # every pass is over budget from its first look at the clock
        docs = [
            f"apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {{name: p{d}}}\n"
            f"spec: {{text: fragment {d}, order: {d}}}\n"
            for d in range(200)
        ]
        (config_dir / "servers.d" / "prompts.yaml").write_text("---\n".join(docs))
        await until(lambda: stalled(rec) == "ValidationFailed", timeout=30, what="stalled")
        (error,) = rec.status.errors
        assert "took longer than 0 s" in str(error["message"])
        assert set(target.servers) == {"good"} and rec.status.applied_revision == applied
        rec.parse_budget = 30.0
        rec.trigger()  # the same bytes: a refusal for time is not remembered as the files' fault
        await until(lambda: stalled(rec) is None, timeout=30, what="applied on retry")
        assert rec.snapshot is not None and len(rec.snapshot.prompts) == 200


def test_alias_bombs_in_a_running_process_are_refused_while_livez_answers(tmp_path: Path) -> None:
    config = plain_config(tmp_path / "config", {"good": server_yaml("good", OFF)})
    with jackfield_run(tmp_path / "run", config) as jackfield:
        jackfield.wait_ready()
        applied = jackfield.status()["config"]["applied_revision"]
        (config / "servers.d" / "bomb.yaml").write_text(bomb_documents(100))
        answers: list[int] = []

        def refused() -> bool:
            # before: the loop froze for 23 s and these timed out (code 0)
            answers.append(jackfield.get("/livez", timeout=5.0)[0])
            code, _ = jackfield.get("/status", timeout=5.0)
            return code == 200 and bool(jackfield.status()["config"]["errors"])

        poll(refused, timeout=120, what="the bomb refused", every=0.05)
        assert answers and set(answers) == {200}
        status = jackfield.status()
        assert any("all files together pass" in e["message"] for e in status["config"]["errors"])
        assert status["config"]["applied_revision"] == applied
        assert [s["name"] for s in status["servers"]] == ["good"]


# --------------------------------------------------------------------------- loader messages


@pytest.mark.parametrize("size", [2 * MAX_FILE_BYTES, 50 * 1024 * 1024])
def test_an_oversized_file_reports_its_real_size(config_dir: Path, size: int) -> None:
    with open(config_dir / "servers.d" / "big.yaml", "wb") as f:
        f.truncate(size)
    (error,) = errors_of(config_dir)
    # before: "file is 1048577 bytes", what was read of it
    assert error.message == f"file is {size} bytes; the limit is {MAX_FILE_BYTES}"


@pytest.mark.parametrize(
    ("body", "line", "column", "opener"),
    [
        ("  args: [a, b\n", 5, 9, "this '[' is never closed"),
        ("  env: {A: b\n", 5, 8, "this '{' is never closed"),
        ("  args: [a, b\n  env: {A: b}\n", 5, 9, "this '[' is never closed"),
        ("  command: 'python\n", 5, 12, "this quote is never closed"),
        ('  command: "python\n', 5, 12, "this quote is never closed"),
    ],
)
def test_an_unclosed_bracket_or_quote_is_reported_where_it_opened(
    config_dir: Path, body: str, line: int, column: int, opener: str
) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a", body)})
    (error,) = errors_of(config_dir)
    assert (error.line, error.column) == (line, column), error.message
    assert error.message.startswith(f"YAML syntax error: {opener} (")
    assert " at " in error.message  # where the parser gave up is still said


def test_validate_prints_the_opening_position_and_exits_one(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a", "  args: [a, b\n")})
    got = validate(config_dir)
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert got.stdout.splitlines() == [
        f"{config_dir}/servers.d/a.yaml:5:9: YAML syntax error: this '[' is never closed"
        " (expected ',' or ']', but got '<stream end>' at 6:1)"
    ]
