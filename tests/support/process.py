"""`jackfield run` as a real subprocess, and /proc views of what it leaves behind.

`Jackfield` starts the console script with a temp config dir, its own SQLite file, free ports
and JSON logs, and talks to it over HTTP only (/status, /readyz, /livez, /metrics). The /proc
helpers answer "which processes descend from this pid" and "is this pid still running" (a zombie
counts as gone: this machine's PID 1 never reaps orphans). `ConfigMapVolume` lays files out
exactly as the kubelet's AtomicWriter does and swaps them the same way.

Every wait here is a poll with a bounded deadline; every helper that starts processes kills
them in a `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.support.polling import poll as poll  # re-exported: the process tests poll too
from tests.support.servers import echo_server

T = TypeVar("T")

JACKFIELD = Path(sys.executable).parent / "jackfield"
HUB_TOKEN = "process-test-hub-token-0123456789"
WAIT = 60.0
"""Bound on anything we wait for; never reached when things work."""
MARK_VAR = "JACKFIELD_PROCESS_TEST_MARK"
MARK = f"pytest-{os.getpid()}"
"""In the environment of every process these helpers start (jackfield gets it from us, the
warden inherits it, stdio servers get it through their spec's `env`), so a leak is found by
scanning /proc even when it was never seen as a descendant."""

AGENT_YAML = (
    "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
    "spec:\n  instructions: You are a test agent.\n"
)


# --------------------------------------------------------------------------- polling


def free_port() -> int:
    """A port nothing listens on right now (bind to 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    """R, S, D, Z (zombie), T, ..."""
    cmdline: str


def _read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) is in parentheses and may contain spaces or ')'
    rest = stat[stat.rindex(")") + 2 :].split()
    return Proc(pid, int(rest[1]), int(rest[2]), rest[0], cmdline.strip())


def processes() -> dict[int, Proc]:
    """Every process visible now."""
    found: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := _read_proc(int(entry))) is not None:
            found[proc.pid] = proc
    return found


def descendants(pid: int) -> dict[int, Proc]:
    """Children, grandchildren, ... of `pid` (zombies included), as seen right now."""
    table = processes()
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    out: dict[int, Proc] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if child not in out:
            out[child] = table[child]
            todo.extend(children.get(child, []))
    return out


def direct_children(parent: int | None = None) -> dict[int, Proc]:
    """The children of `parent` (default: this process), zombies included."""
    parent = os.getpid() if parent is None else parent
    return {p.pid: p for p in processes().values() if p.ppid == parent}


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size (VmRSS) of a process, in MiB; 0 for a zombie (it has none).

    Raises:
        FileNotFoundError: no such process.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def group(pgid: int) -> dict[int, Proc]:
    """The processes in process group `pgid` (zombies included)."""
    return {p.pid: p for p in processes().values() if p.pgid == pgid}


def running(pid: int) -> bool:
    """The pid exists and is not a zombie (an exited, unreaped process runs nothing)."""
    proc = _read_proc(pid)
    return proc is not None and proc.state != "Z"


def still_running(pids: Mapping[int, Proc] | set[int]) -> dict[int, str]:
    """The pids of `pids` still running, each with its command line (a pid reused by an
    unrelated process is not counted: the command line must match what was recorded)."""
    out: dict[int, str] = {}
    for pid in pids:
        now = _read_proc(pid)
        if now is None or now.state == "Z":
            continue
        before = pids[pid].cmdline if isinstance(pids, Mapping) else now.cmdline
        if now.cmdline == before:
            out[pid] = now.cmdline
    return out


def wait_gone(pids: Mapping[int, Proc] | set[int], timeout: float = 10.0) -> None:
    """Every pid of `pids` stops running within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while left := still_running(pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"still running after {timeout:g} s: {left}")
        time.sleep(0.05)


def marked() -> dict[int, Proc]:
    """Running processes that carry this test run's MARK in their environment."""
    needle = f"{MARK_VAR}={MARK}".encode()
    found: dict[int, Proc] = {}
    for pid, proc in processes().items():
        if proc.state == "Z" or pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if needle in environ.split(b"\0"):
            found[pid] = proc
    return found


def zombies_of(pid: int) -> set[int]:
    """Children of `pid` that exited and were not reaped."""
    return {p.pid for p in processes().values() if p.ppid == pid and p.state == "Z"}


def kill_all(pids: Mapping[int, Proc] | set[int]) -> None:
    """SIGKILL each pid still running the recorded command, and its process group."""
    for pid in still_running(pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        proc = _read_proc(pid)
        if proc is not None and proc.pgid == pid:  # a group leader: take its group too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def caught_signals(pid: int) -> int:
    """The bitmask of signals `pid` has a handler for (SigCgt in /proc/PID/status)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in text.splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def catches(pid: int, sig: signal.Signals) -> bool:
    return bool(caught_signals(pid) & (1 << (sig - 1)))


# --------------------------------------------------------------------------- config


def echo_yaml(name: str, *flags: str, extra: str = "") -> str:
    """An MCPServer running tests/servers/echo.py over stdio, carrying the leak MARK."""
    return echo_server(name, *flags, extra=extra, env={MARK_VAR: MARK})


CRASHER = r"""
import json, os, sys, threading
after = float(sys.argv[1])

def crash():
    sys.stderr.write("crash after %gs\n" % after)
    sys.stderr.flush()
    os._exit(4)

threading.Timer(after, crash).start()
TOOL = {"name": "echo", "description": "Echo.", "inputSchema": {"type": "object"}}
for raw in sys.stdin:
    request = json.loads(raw)
    if "id" not in request:
        continue
    method = request.get("method")
    if method == "initialize":
        version = request["params"].get("protocolVersion", "2025-06-18")
        result = {"protocolVersion": version, "capabilities": {"tools": {}},
                  "serverInfo": {"name": "crasher", "version": "0"}}
        answer = {"result": result}
    elif method == "tools/list":
        answer = {"result": {"tools": [TOOL]}}
    elif method == "ping":
        answer = {"result": {}}
    else:
        answer = {"error": {"code": -32601, "message": "Method not found"}}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request["id"], **answer}) + "\n")
    sys.stdout.flush()
"""


def crasher_yaml(name: str, script: Path, after: float = 1.0) -> str:
    """An MCPServer that is a real (minimal, stdlib-only) MCP server exiting with code 4 after
    `after` seconds. `script` is where `CRASHER` was written. Unlike tests/servers/echo.py
    (0.7 s of CPU to import the SDK) it costs milliseconds to start, so fifty of them crashing
    and restarting measure jackfield, not the machine."""
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f'spec:\n  command: {sys.executable}\n  args: ["-S", "{script}", "{after:g}"]\n'
        f"  env: {{{MARK_VAR}: {MARK}}}\n"
    )


def write_config(root: Path, files: Mapping[str, str]) -> None:
    """Write files under `root` the way editors do: a temp file, then a rename."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(text)
        os.replace(temp, path)


def plain_config(root: Path, servers: Mapping[str, str]) -> Path:
    """agent.yaml plus one servers.d/<name>.yaml per server document."""
    (root / "servers.d").mkdir(parents=True, exist_ok=True)
    write_config(root, {"agent.yaml": AGENT_YAML})
    write_config(root, {f"servers.d/{name}.yaml": text for name, text in servers.items()})
    return root


class ConfigMapVolume:
    """A ConfigMap volume as the kubelet's AtomicWriter writes it.

        <root>/..2026_01_01_00_00_00.000000001/agent.yaml           the payload, one dir a version
        <root>/..2026_01_01_00_00_00.000000001/servers.d/echo.yaml
        <root>/..data -> ..2026_01_01_00_00_00.000000001             swapped by rename(2)
        <root>/agent.yaml -> ..data/agent.yaml                       one link per top-level name
        <root>/servers.d -> ..data/servers.d

    `publish` is the update: payload into a new timestamped dir, `..data_tmp` symlink to it,
    rename over `..data`, user-visible links for new top-level names, stale links removed, old
    dir deleted.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._versions = 0

    def _current(self) -> str | None:
        data = self.root / "..data"
        return os.readlink(data) if data.is_symlink() else None

    def publish(self, files: Mapping[str, str]) -> None:
        old = self._current()
        self._versions += 1
        stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + f"{self._versions:09d}"
        version = self.root / stamp
        for relative, text in files.items():
            path = version / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        tmp = self.root / "..data_tmp"
        os.symlink(stamp, tmp)
        os.rename(tmp, self.root / "..data")
        tops = {relative.split("/", 1)[0] for relative in files}
        for top in sorted(tops):
            link = self.root / top
            if not link.is_symlink():
                os.symlink(f"..data/{top}", link)
        for entry in self.root.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
                entry.unlink()
        if old is not None:
            for path in sorted((self.root / old).rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            (self.root / old).rmdir()


# --------------------------------------------------------------------------- the hub


@contextlib.asynccontextmanager
async def hub_client(
    hub_url: str, *, hub_may_stop: bool = False, headers: Mapping[str, str] | None = None
) -> AsyncIterator[Client]:
    """An MCP client of jackfield's tool hub (handshake-era protocol, as livekit-agents uses),
    sending `headers` too (a job's session and caller context).

    With `hub_may_stop`, a connection error while *closing* (the session DELETE to a hub that
    has shut down) is ignored; errors while the body runs always propagate.
    """
    headers = {"Authorization": f"Bearer {HUB_TOKEN}", **(headers or {})}
    body_done = False
    try:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(hub_url, http_client=http), mode="legacy") as client,
        ):
            yield client
            body_done = True
    except* httpx2.TransportError:
        if not (hub_may_stop and body_done):
            raise


def text_of(result: CallToolResult) -> list[str | None]:
    return [getattr(c, "text", None) for c in result.content]


# --------------------------------------------------------------------------- the process


class Jackfield:
    """One `jackfield run --no-agent` process over `config_dir`, with its logs in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        config_dir: Path,
        *,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.command = list(command or [str(JACKFIELD), "run", "--no-agent"])
        self.workdir = workdir
        self.config_dir = config_dir
        self.database_url = database_url or f"sqlite:///{workdir / 'state.db'}"
        self.status_port = free_port()
        self.hub_port = free_port()
        self.log_path = workdir / "jackfield.log"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, Proc] = {}
        """Every descendant ever observed by `children()` (for the leak checks and cleanup)."""

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}/mcp"

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JACKFIELD_", "LIVEKIT_", "OPENAI_"))
        }
        env.update(
            JACKFIELD_CONFIG_DIR=str(self.config_dir),
            JACKFIELD_DATABASE_URL=self.database_url,
            JACKFIELD_STATUS_PORT=str(self.status_port),
            JACKFIELD_HUB_PORT=str(self.hub_port),
            JACKFIELD_HUB_TOKEN=HUB_TOKEN,
            JACKFIELD_LOG_FORMAT="json",
            JACKFIELD_SHUTDOWN_GRACE="10",
            JACKFIELD_INSTANCE_ID="process-test",
        )
        env[MARK_VAR] = MARK
        env.update(self.extra_env)
        return env

    def start(self) -> Jackfield:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.workdir,  # away from the repo's .env
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest does not reach it
            )
        return self

    # --- HTTP ---------------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """(HTTP status, body) of a GET on the status server; (0, reason) when it cannot connect."""
        url = f"http://127.0.0.1:{self.status_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            return 0, str(e).encode()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, f"/status answered {code}: {body[:300]!r}\n{self.log_tail()}"
        document: dict[str, Any] = json.loads(body)
        return document

    def readyz(self) -> tuple[int, str]:
        code, body = self.get("/readyz", timeout=2.0)
        return code, body.decode(errors="replace")

    def wait_readyz(self, expected: int, timeout: float = WAIT) -> str:
        """Poll /readyz until it answers `expected`; returns the body."""

        def probe() -> str | None:
            code, body = self.readyz()
            return body if code == expected else None

        try:
            return poll(probe, timeout=timeout, what=f"/readyz {expected}", every=0.02)
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.readyz()}\n{self.log_tail()}") from None

    def server(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.status()["servers"] if s["name"] == name), None)

    def metric(self, name: str) -> float:
        """The sum of every sample of metric `name` in /metrics (0 when absent)."""
        code, body = self.get("/metrics")
        assert code == 200, body
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def until(
        self, condition: Callable[[dict[str, Any]], Any], what: str, timeout: float = WAIT
    ) -> dict[str, Any]:
        """Poll /status until `condition(status)` holds; returns that status."""
        last: list[dict[str, Any]] = []

        def probe() -> dict[str, Any] | None:
            self.assert_running()
            code, body = self.get("/status")
            if code != 200:
                return None
            document: dict[str, Any] = json.loads(body)
            last[:] = [document]
            return document if condition(document) else None

        try:
            return poll(probe, timeout=timeout, what=what, every=0.1)
        except AssertionError as e:
            summary = json.dumps(last[0] if last else None, default=str)[:3000]
            raise AssertionError(f"{e}\nlast status: {summary}\n{self.log_tail()}") from None

    def wait_ready(self, timeout: float = WAIT) -> None:
        def probe() -> bool:
            self.assert_running()
            return self.readyz()[0] == 200

        try:
            poll(probe, timeout=timeout, what="/readyz 200")
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.readyz()}\n{self.log_tail()}") from None

    def servers_ready(self, *names: str, timeout: float = WAIT) -> dict[str, Any]:
        def ready(status: dict[str, Any]) -> bool:
            states = {s["name"]: s["state"] for s in status["servers"]}
            return all(states.get(n) == "Ready" for n in names)

        return self.until(ready, f"{names} Ready", timeout)

    # --- process ------------------------------------------------------------------------------

    def assert_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"jackfield exited with {self.proc.returncode}\n{self.log_tail()}")

    def children(self) -> dict[int, Proc]:
        """Its descendants now (also remembered in `seen`)."""
        now = descendants(self.pid)
        self.seen.update(now)
        return now

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"jackfield still running {timeout:g} s later\n{self.log_tail()}"
            ) from None

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM, then its exit code."""
        self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "--- jackfield log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (other lines skipped)."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def cleanup(self) -> None:
        """Kill it and everything it started, whatever state the test left it in."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.children()
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        kill_all(self.seen)
        kill_all(marked())


@contextlib.contextmanager
def jackfield_run(
    workdir: Path,
    config_dir: Path,
    *,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Iterator[Jackfield]:
    """A started `Jackfield`; killed with everything it spawned on the way out."""
    process = Jackfield(workdir, config_dir, database_url=database_url, env=env, command=command)
    try:
        yield process.start()
    finally:
        process.cleanup()


def assert_clean_exit(
    process: Jackfield, code: int, before: Mapping[int, Proc] | None = None
) -> None:
    """Exit code 0, and nothing it started (recorded in `before`, or carrying the MARK) still
    running 10 s later."""
    assert code == 0, f"exit code {code}\n{process.log_tail()}"
    wait_gone({**(before or {}), **marked()}, timeout=10.0)
