"""The stdio transport: one MCP server process per connection, and nothing left behind.

The SDK's `stdio_client` cannot give us what supervision needs (the exit code the moment the
process dies, a redacted stderr tail, the MCP spec's 5 s + 5 s shutdown, and cleanup after our
own crash), so this is a small transport of our own that yields the SDK's stream pair.

Nothing left behind: each server runs in its own session, so its process group holds every
`npx`/`uvx`/`sh -c` grandchild and the group is what gets signalled. If jackfield itself dies
(even by SIGKILL), the leader gets SIGKILL from PR_SET_PDEATHSIG and the warden, a tiny process
holding a pipe from us, sees EOF and kills every group still registered with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import anyio
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage

from jackfield.core.connection import Connection, redact
from jackfield.errors import PermanentError

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024 * 1024
"""A JSON-RPC line longer than this is a broken server, not a big result."""
STDIN_GRACE = 5.0
TERM_GRACE = 5.0
EXIT_POLL = 0.02

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_WARDEN = r"""
import os, signal, sys
groups = set()
for line in sys.stdin:
    op, pgid = line[0], int(line[1:])
    (groups.add if op == "+" else groups.discard)(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Warden:
    """Kills registered process groups when jackfield dies, however it dies."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", _WARDEN,
            stdin=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    def _send(self, line: str) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._proc.stdin.write(line.encode())

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    async def stop(self) -> None:
        """Closing the pipe is the signal: the warden kills what is left and exits."""
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class Tail:
    """The last lines of a server's stderr, bounded in lines and bytes, secrets masked."""

    secrets: frozenset[str] = frozenset()
    max_lines: int = 50
    max_bytes: int = 8192
    _lines: deque[str] = field(default_factory=deque)
    _size: int = 0

    def feed(self, raw: bytes) -> None:
        line = redact(raw.decode(errors="replace").rstrip("\r\n"), self.secrets)[: self.max_bytes]
        self._lines.append(line)
        self._size += len(line) + 1
        while len(self._lines) > self.max_lines or self._size > self.max_bytes:
            self._size -= len(self._lines.popleft()) + 1

    def text(self) -> str | None:
        return "\n".join(self._lines) if self._lines else None

    def last(self) -> str | None:
        return self._lines[-1] if self._lines else None


def _environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """A minimal safe environment (the SDK's list) plus what the spec sets, never our secrets."""
    return get_default_environment() | dict(overrides)


async def _spawn(connection: Connection) -> asyncio.subprocess.Process:
    assert connection.command is not None
    if connection.cwd is not None and not os.path.isdir(connection.cwd):
        raise PermanentError(f"working directory {connection.cwd!r} does not exist")
    try:
        return await asyncio.create_subprocess_exec(
            connection.command,
            *(a.reveal() for a in connection.args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_environment({k: v.reveal() for k, v in connection.env.items()}),
            cwd=connection.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=MAX_LINE,
        )
    except FileNotFoundError as e:
        raise PermanentError(f"command not found: {connection.command}") from e
    except PermissionError as e:
        raise PermanentError(f"command not executable: {connection.command}") from e


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    # Not proc.wait(): it also waits for pipe EOF, which a grandchild can hold open.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.returncode is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(EXIT_POLL)
    return True


async def _signal_group(pgid: int, sig: int, then_wait: float) -> bool:
    """Signal the group; True when it is gone within `then_wait` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + then_wait
    while _group_alive(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(EXIT_POLL)
    return True


async def stop_process(proc: asyncio.subprocess.Process, stdin_grace: float = STDIN_GRACE) -> None:
    """The MCP spec's stdio shutdown, applied to the whole group: close stdin, wait, SIGTERM,
    wait, SIGKILL. Descendants still in the group after the leader exits are terminated too."""
    pgid = proc.pid
    if proc.stdin is not None:
        with contextlib.suppress(OSError, RuntimeError):
            proc.stdin.close()
    if not await _wait_exit(proc, stdin_grace):
        if not await _signal_group(pgid, signal.SIGTERM, TERM_GRACE):
            await _signal_group(pgid, signal.SIGKILL, TERM_GRACE)
    elif _group_alive(pgid) and not await _signal_group(pgid, signal.SIGTERM, TERM_GRACE):
        await _signal_group(pgid, signal.SIGKILL, TERM_GRACE)
    if proc.returncode is None:  # only a process in uninterruptible sleep gets here
        log.warning("server process %d survived SIGKILL", pgid)
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 1)  # reap and close the transport


@dataclass
class StdioTransport:
    """An `mcp` client Transport over a child process. `exited` is set the moment it dies."""

    connection: Connection
    tail: Tail
    warden: Warden | None = None
    on_exit: Callable[[int], None] | None = None
    returncode: int | None = None
    pid: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    _stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(
        self,
    ) -> tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]:
        self._stack = contextlib.AsyncExitStack()
        cm = self._run()
        return await self._stack.enter_async_context(cm)

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    @contextlib.asynccontextmanager
    async def _run(
        self,
    ) -> AsyncIterator[
        tuple[
            MemoryObjectReceiveStream[SessionMessage | Exception],
            MemoryObjectSendStream[SessionMessage],
        ]
    ]:
        proc = await _spawn(self.connection)
        self.pid = proc.pid
        if self.warden is not None:
            self.warden.watch(proc.pid)
        to_session, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_server, from_session = anyio.create_memory_object_stream[SessionMessage](0)
        assert proc.stdout and proc.stderr and proc.stdin
        stdout, stderr, stdin = proc.stdout, proc.stderr, proc.stdin

        async def read_stdout() -> None:
            async with to_session:
                while True:
                    try:
                        line = await stdout.readline()
                    except ValueError as e:  # a line beyond MAX_LINE
                        await to_session.send(e)
                        return
                    if not line:
                        return
                    if not line.strip():
                        continue
                    try:
                        message = mcp_types.jsonrpc_message_adapter.validate_json(line)
                    except ValueError as e:
                        self.tail.feed(b"(stdout, not JSON-RPC) " + line[:200])
                        await to_session.send(e)
                        continue
                    await to_session.send(SessionMessage(message))

        async def read_stderr() -> None:
            while line := await stderr.readline():
                self.tail.feed(line)

        async def write_stdin() -> None:
            async with from_session:
                async for message in from_session:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    stdin.write(data.encode() + b"\n")
                    await stdin.drain()

        async def watch_exit() -> None:
            while proc.returncode is None:
                await asyncio.sleep(EXIT_POLL)
            self.returncode = proc.returncode
            self.exited.set()
            if self.on_exit is not None:
                self.on_exit(proc.returncode)

        tasks = [
            asyncio.create_task(read_stdout(), name=f"stdout-{proc.pid}"),
            asyncio.create_task(read_stderr(), name=f"stderr-{proc.pid}"),
            asyncio.create_task(write_stdin(), name=f"stdin-{proc.pid}"),
            asyncio.create_task(watch_exit(), name=f"exit-{proc.pid}"),
        ]
        try:
            yield from_server, to_server
        finally:
            await asyncio.shield(self._shutdown(proc, tasks, from_server, to_server))

    async def _shutdown(
        self,
        proc: asyncio.subprocess.Process,
        tasks: list[asyncio.Task[None]],
        *streams: MemoryObjectReceiveStream[SessionMessage | Exception]
        | MemoryObjectSendStream[SessionMessage],
    ) -> None:
        await stop_process(proc)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
        if self.warden is not None:
            self.warden.forget(proc.pid)
        self.returncode = proc.returncode
        self.exited.set()


def describe_exit(returncode: int, tail: Tail) -> str:
    """`process exited with code 3: boom on start` / `killed by SIGKILL`."""
    what = f"process exited with code {returncode}"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            what = f"process killed by {signal.Signals(-returncode).name}"
    last = tail.last()
    return f"{what}: {last}" if last else what
