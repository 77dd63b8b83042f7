"""The stdio transport: one MCP server process per connection, and nothing left behind.

The SDK's `stdio_client` cannot give us what supervision needs (the exit code the moment the
process dies, a redacted stderr tail, the MCP spec's 5 s + 5 s shutdown, and cleanup after our
own crash), so this is a small transport of our own that yields the SDK's stream pair.

Nothing left behind: each server runs in its own session, so its process group holds every
`npx`/`uvx`/`sh -c` grandchild, and its process tree (shell/trees.py: a cgroup, else a
subreaper shim) holds what leaves the group too. If jackfield itself dies (even by SIGKILL),
the leader gets SIGKILL from PR_SET_PDEATHSIG (the shim: SIGTERM, and it kills its tree), and
the warden, a tiny process holding a pipe from us, sees EOF and kills every tree still
registered with it.

Whether a group is still alive is read from /proc, zombies excluded: in a container whose PID 1
never reaps orphans, an exited grandchild stays a zombie forever and `killpg(pgid, 0)` would
call the group alive until the SIGKILL deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import sys
import sysconfig
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage

from jackfield.core.connection import Connection, redact
from jackfield.errors import PermanentError
from jackfield.shell import redaction
from jackfield.shell.trees import Containment, Tree, TreeMode

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024 * 1024
"""A JSON-RPC line longer than this is a broken server, not a big result."""
STDIN_GRACE = 5.0
"""After closing stdin, how long a server may take to exit by itself (MCP spec: shutdown)."""
TERM_GRACE = 5.0
"""After SIGTERM, how long before SIGKILL."""
BROKEN_GRACE = 0.2
"""The stdin grace of a connection abandoned because it failed: it gets SIGTERM almost at once."""
EOF_EXIT_WAIT = 1.0
"""After stdout EOF, how long to wait for the exit code before we start stopping the process:
a process that exits within it died by itself, and its exit code is what status reports."""
DRAIN_WAIT = 0.5
"""After the process is gone, how long its last stderr bytes may take to arrive."""
EXIT_POLL = 0.02
GARBAGE_IN_TAIL = 5
"""Non-JSON-RPC stdout lines per process copied into the stderr tail and passed on to the
session as errors; the rest are only counted."""

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn (it runs in the child between fork and exec): SIGKILL when we die."""

    def arm() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # we died before the prctl: nobody would send the signal
            os._exit(1)

    return arm


_WARDEN = r"""
import os, signal, sys, time
root = sys.argv[1] if len(sys.argv) > 1 else ""
groups, shims = set(), set()
for line in sys.stdin:
    op, kind, value = line[0], line[1], line[2:].strip()
    chosen = groups if kind == "g" else shims
    (chosen.add if op == "+" else chosen.discard)(value)

def started(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else fields[19].decode()

def signal_shims(sig):
    for shim in shims:
        pid, start = shim.split(":")
        if started(pid) == start:
            try:
                os.kill(int(pid), sig)
            except OSError:
                pass

if root:  # every server process's cgroup is below it: SIGKILL to all of them at once
    try:
        with open(os.path.join(root, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass
for pgid in groups:
    try:
        os.killpg(int(pgid), signal.SIGKILL)
    except OSError:
        pass
signal_shims(signal.SIGUSR1)  # a shim kills its tree, then exits; SIGKILL would orphan it
signal_shims(signal.SIGCONT)
deadline = time.monotonic() + 5
while any(started(s.split(":")[0]) == s.split(":")[1] for s in shims):
    if time.monotonic() > deadline:
        signal_shims(signal.SIGKILL)
        break
    time.sleep(0.02)
while root and time.monotonic() < deadline:
    try:
        for entry in os.scandir(root):
            if entry.is_dir():
                os.rmdir(entry.path)
        os.rmdir(root)
        break
    except FileNotFoundError:
        break
    except OSError:  # still populated for a moment after cgroup.kill
        time.sleep(0.02)
"""


class Warden:
    """Kills registered process trees when jackfield dies, however it dies. It also owns how
    trees are held (`containment`), since it is what must find them after our death."""

    def __init__(self, tree: TreeMode = "auto") -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self.containment = Containment(tree)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        await self.containment.start()
        root = str(self.containment.root) if self.containment.root is not None else ""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", _WARDEN, root,
            stdin=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    def tree(self, grace: float = TERM_GRACE) -> Tree:
        """Raises OSError when the tree's cgroup cannot be made."""
        return self.containment.tree(grace)

    def _send(self, line: str) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._proc.stdin.write(line.encode())

    def watch(self, tree: Tree) -> None:
        for line in tree.warden_lines():
            self._send(f"+{line}\n")

    def forget(self, tree: Tree) -> None:
        for line in tree.warden_lines():
            self._send(f"-{line}\n")

    async def stop(self) -> None:
        """Closing the pipe is the signal: the warden kills what is left and exits."""
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        self.containment.close()


@dataclass
class Tail:
    """The last lines of a server's stderr: at most `max_lines` lines and `max_bytes` UTF-8
    bytes (newlines included), every known secret masked before anything is kept.

    A line is masked with the server's secrets (in every encoded form, and each long line of
    a multi-line one) before it is kept; what is shown is masked again as a whole, with every
    secret registered by then, so a PEM key printed across lines is masked as one.
    """

    secrets: frozenset[str] = frozenset()
    max_lines: int = 50
    max_bytes: int = 8192
    max_line: int = 1024
    """A longer line is clipped (ending in `...`): one huge line must not evict the rest."""
    _lines: deque[str] = field(default_factory=deque)
    _size: int = 0
    _partial: bytes = b""
    _fed: int = 0
    _shown: tuple[int, redaction.Redactor, str] | None = None
    """The last `text()`: status asks often, the tail changes seldom."""

    def feed(self, raw: bytes) -> None:
        """Keep one line (a trailing newline is dropped)."""
        limit = min(self.max_line, self.max_bytes - 1)
        mask = redaction.redactor(self.secrets)
        # masked before it is clipped, and only as much as can be kept plus a secret's length:
        # the clip never leaves a secret's head, and a huge line costs no huge regex pass
        head = raw[: 4 * (limit + mask.longest)].decode(errors="replace").rstrip("\r\n")
        line = _clip(mask(head), limit)
        self._lines.append(line)
        self._fed += 1
        self._size += len(line.encode()) + 1
        while len(self._lines) > self.max_lines or self._size > self.max_bytes:
            self._size -= len(self._lines.popleft().encode()) + 1

    def feed_chunk(self, chunk: bytes) -> None:
        """Keep the complete lines of a chunk of a stream; a line longer than `max_bytes` is
        cut (a server without newlines cannot grow memory)."""
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self.feed(line)
        if len(self._partial) > 4 * self.max_line:
            self.feed(self._partial)
            self._partial = b""

    def flush(self) -> None:
        """Keep a last line that had no newline."""
        if self._partial:
            self.feed(self._partial)
            self._partial = b""

    def text(self) -> str | None:
        if not self._lines:
            return None
        mask, shown = redaction.redactor(self.secrets), self._shown
        if shown is None or shown[0] != self._fed or shown[1] is not mask:
            shown = self._shown = (self._fed, mask, mask("\n".join(self._lines)))
        return shown[2]

    def last(self) -> str | None:
        return redaction.redact(self._lines[-1], self.secrets) if self._lines else None


def _clip(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: max(limit - 3, 0)].decode(errors="ignore") + "..."[: max(limit, 0)]


OWN_SCRIPTS = sysconfig.get_path("scripts")
"""The bin directory of the Python environment jackfield runs in (a venv's `.venv/bin`): what
`pip install` put beside jackfield (`mcp-server-time`) is found without activating the venv."""


def search_path(path: str | None, scripts: str = OWN_SCRIPTS) -> str:
    """PATH as given (or the OS default), then jackfield's own scripts directory."""
    entries = (path if path is not None else os.defpath).split(os.pathsep)
    return os.pathsep.join(entries if scripts in entries else [*entries, scripts])


def _environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """A minimal safe environment (the SDK's list) plus what the spec sets, never our secrets;
    PATH ends with jackfield's own scripts directory, for the command and for what it spawns."""
    env = get_default_environment() | dict(overrides)
    return env | {"PATH": search_path(env.get("PATH"))}


_SETPRIV = shutil.which("setpriv")


def _executable(command: str, env: Mapping[str, str], cwd: str | None) -> None:
    """What exec would say, said before setpriv stands in between.

    Raises:
        PermanentError: the command does not exist or cannot be executed.
    """
    if "/" in command:
        path = os.path.join(cwd or ".", command)
        if not os.path.exists(path):
            raise PermanentError(f"command not found: {command}")
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            raise PermanentError(f"command not executable: {command}")
    elif shutil.which(command, path=env.get("PATH", os.defpath)) is None:
        raise PermanentError(f"command not found: {command}")


async def _spawn(connection: Connection, tree: Tree) -> asyncio.subprocess.Process:
    """Raises PermanentError when the command or its working directory cannot ever work."""
    assert connection.command is not None
    if connection.cwd is not None and not os.path.isdir(connection.cwd):
        raise PermanentError(f"working directory {connection.cwd!r} does not exist")
    env = _environment({k: v.reveal() for k, v in connection.env.items()})
    argv = [connection.command, *(a.reveal() for a in connection.args)]
    options: dict[str, Any] = {}
    wrapped = tree.argv(argv)
    if wrapped != argv or _SETPRIV is not None:
        # a prelude, a shim or setpriv execs the command: say now what exec would say
        _executable(connection.command, env, connection.cwd)
    if not tree.pdeathsig:
        pass  # the shim arms itself (and must outlive us long enough to kill its tree)
    elif _SETPRIV is not None:
        # exec'd by setpriv, not armed by a preexec_fn: a preexec_fn forces fork() of the whole
        # process (tens of ms each, and the event loop stalls); setpriv keeps vfork/posix_spawn
        wrapped = [_SETPRIV, "--pdeathsig", "KILL", "--", *wrapped]
    else:
        options["preexec_fn"] = _die_with(os.getpid())
    try:
        proc = await asyncio.create_subprocess_exec(
            *wrapped,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=connection.cwd,
            start_new_session=True,
            limit=MAX_LINE,
            **options,
        )
    except FileNotFoundError as e:
        raise PermanentError(f"command not found: {connection.command}") from e
    except PermissionError as e:
        raise PermanentError(f"command not executable: {connection.command}") from e
    tree.spawned(proc.pid)
    return proc


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    # Not proc.wait(): it also waits for pipe EOF, which a grandchild can hold open.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.returncode is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(EXIT_POLL)
    return True


async def _signal_tree(tree: Tree, sig: int, then_wait: float) -> bool:
    """Signal the whole tree; True when it is gone within `then_wait` seconds. A stopped
    process (SIGSTOP, a debugger) acts on SIGTERM only once continued, so SIGCONT follows."""
    if sig == signal.SIGKILL:
        tree.kill()
    else:
        tree.signal(sig)
        tree.signal(signal.SIGCONT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + then_wait
    while tree.alive():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(EXIT_POLL)
    return True


async def stop_process(
    proc: asyncio.subprocess.Process, tree: Tree, stdin_grace: float = STDIN_GRACE
) -> None:
    """The MCP spec's stdio shutdown, applied to the whole tree: close stdin, wait, SIGTERM,
    wait, SIGKILL. Descendants still alive after the leader exits are terminated too, in the
    group or out of it."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError, RuntimeError):
            proc.stdin.close()
    if not await _wait_exit(proc, stdin_grace) or tree.alive():
        if not await _signal_tree(tree, signal.SIGTERM, TERM_GRACE):
            await _signal_tree(tree, signal.SIGKILL, TERM_GRACE)
    if not await _wait_exit(proc, 1.0):  # only a process in uninterruptible sleep gets here
        log.warning("server process %d survived SIGKILL", proc.pid)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 1)  # reap and close the transport
    if not tree.alive():
        tree.release()


@dataclass
class StdioTransport:
    """An `mcp` client Transport over a child process.

    `exited` is set the moment the process dies, and `on_exit` is called then with the exit
    code (stdout may stay open: a grandchild can hold it). After the transport closes, `died`
    says whether the process exited by itself (a crash, not our shutdown) and `stdout_closed`
    whether it closed its stdout while alive.
    """

    connection: Connection
    tail: Tail
    warden: Warden | None = None
    on_exit: Callable[[int], None] | None = None
    returncode: int | None = None
    died: bool = False
    stdout_closed: bool = False
    garbage: int = 0
    """Lines on stdout that were not JSON-RPC."""
    first_garbage: str | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    _stack: contextlib.AsyncExitStack | None = None
    _closing: bool = False
    _tree: Tree | None = None

    @property
    def pid(self) -> int | None:
        """The server's pid (under a subreaper shim, the shim's child, once it has forked)."""
        return self._tree.server_pid() if self._tree is not None else None

    async def __aenter__(
        self,
    ) -> tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]:
        self._stack = contextlib.AsyncExitStack()
        cm = self._run()
        return await self._stack.enter_async_context(cm)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)  # the error decides how gently we stop

    @contextlib.asynccontextmanager
    async def _run(
        self,
    ) -> AsyncIterator[
        tuple[
            MemoryObjectReceiveStream[SessionMessage | Exception],
            MemoryObjectSendStream[SessionMessage],
        ]
    ]:
        try:
            tree = self.warden.tree() if self.warden is not None else Tree()
        except OSError as e:  # its cgroup: a full or vanished hierarchy, worth a retry
            raise RuntimeError(f"cannot make the process's cgroup: {e}") from e
        try:
            proc = await _spawn(self.connection, tree)
        except BaseException:
            tree.release()  # nothing was started in its cgroup
            raise
        self._tree = tree
        if self.warden is not None:
            self.warden.watch(tree)
        to_session, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_server, from_session = anyio.create_memory_object_stream[SessionMessage](0)
        assert proc.stdout and proc.stderr and proc.stdin
        stdout, stderr, stdin = proc.stdout, proc.stderr, proc.stdin
        eof = asyncio.Event()

        async def read_stdout() -> None:
            try:
                async with to_session:
                    while True:
                        try:
                            line = await stdout.readline()
                        except ValueError as e:  # a line beyond MAX_LINE
                            self._note_garbage(b"(a line longer than %d bytes)" % MAX_LINE)
                            eof.set()
                            await to_session.send(e)
                            return
                        if not line:
                            eof.set()
                            return
                        if not line.strip():
                            continue
                        try:
                            message = mcp_types.jsonrpc_message_adapter.validate_json(line)
                        except ValueError as e:
                            self._note_garbage(line)
                            if self.garbage <= GARBAGE_IN_TAIL:  # a flood is counted, not sent
                                await to_session.send(e)
                            continue
                        await to_session.send(SessionMessage(message))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the session is gone; shutdown follows

        async def read_stderr() -> None:
            while chunk := await stderr.read(65536):
                self.tail.feed_chunk(chunk)
            self.tail.flush()

        async def write_stdin() -> None:
            async with from_session:
                async for message in from_session:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    try:
                        stdin.write(data.encode() + b"\n")
                        await stdin.drain()
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the process is gone; the exit watcher tells the rest

        async def watch_exit() -> None:
            while proc.returncode is None:
                await asyncio.sleep(EXIT_POLL)
            self.returncode = proc.returncode
            self.exited.set()
            if self.on_exit is not None and not self._closing:  # not news if we stopped it
                self.on_exit(proc.returncode)

        tasks = [
            asyncio.create_task(read_stdout(), name=f"stdout-{proc.pid}"),
            asyncio.create_task(read_stderr(), name=f"stderr-{proc.pid}"),
            asyncio.create_task(write_stdin(), name=f"stdin-{proc.pid}"),
            asyncio.create_task(watch_exit(), name=f"exit-{proc.pid}"),
        ]
        graceful = False
        try:
            yield from_server, to_server
            graceful = True
        finally:
            # A connection that ended in an error is broken: the stdin grace is for servers
            # we stop on purpose, which may have state to flush.
            grace = STDIN_GRACE if graceful else BROKEN_GRACE
            await _to_the_end(self._shutdown(proc, tree, tasks, eof, grace, from_server, to_server))

    def _note_garbage(self, line: bytes) -> None:
        self.garbage += 1
        if self.first_garbage is None:
            self.first_garbage = redact(
                line[:200].decode(errors="replace").strip(), self.connection.secrets
            )
        if self.garbage <= GARBAGE_IN_TAIL:
            self.tail.feed(b"(stdout, not JSON-RPC) " + line[:200])

    async def _shutdown(
        self,
        proc: asyncio.subprocess.Process,
        tree: Tree,
        tasks: list[asyncio.Task[None]],
        eof: asyncio.Event,
        stdin_grace: float,
        *streams: MemoryObjectReceiveStream[SessionMessage | Exception]
        | MemoryObjectSendStream[SessionMessage],
    ) -> None:
        self._closing = True
        if eof.is_set():  # stdout ended: a crash usually; let its exit code arrive
            await _wait_exit(proc, EOF_EXIT_WAIT)
        self.died = proc.returncode is not None
        self.stdout_closed = eof.is_set() and not self.died
        await stop_process(proc, tree, stdin_grace)
        # stderr ends with the process unless a survivor holds it: keep its last words.
        await asyncio.wait(tasks[1:2], timeout=DRAIN_WAIT)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tail.flush()
        for stream in streams:
            await stream.aclose()
        if self.warden is not None:
            self.warden.forget(tree)
        self.returncode = proc.returncode
        self.exited.set()


async def _to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to completion even if we are cancelled meanwhile (a connect deadline, a
    stop), then re-raise the cancellation: a half-done shutdown would orphan the process."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


def describe_exit(returncode: int, tail: Tail) -> str:
    """`process exited with code 3: boom on start` / `process killed by SIGKILL`."""
    what = f"process exited with code {returncode}"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            what = f"process killed by {signal.Signals(-returncode).name}"
    last = tail.last()
    return f"{what}: {last}" if last else what
