"""Start a test server as a subprocess and always clean it up.

    async with spawn("-m", "tests.servers.echo", "--transport", "http", "--port", "0") as (p, port):
        url = f"http://127.0.0.1:{port}/mcp"

The arguments follow `sys.executable`; the working directory is the repo root, so `-m tests...`
resolves. When a port is expected (by default: when `--port` is among the arguments) the
server's stdout is read until its `LISTENING <port>` line, within `listen_timeout` seconds.
The server runs in its own process group; on exit the group gets SIGTERM, then SIGKILL after
`kill_after` seconds, and the process is reaped, so grandchildren do not outlive the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL

Process = asyncio.subprocess.Process


@contextlib.asynccontextmanager
async def spawn(
    *args: str,
    expect_port: bool | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int = PIPE,
    stdout: int = PIPE,
    stderr: int = PIPE,
    listen_timeout: float = 20.0,
    kill_after: float = 5.0,
) -> AsyncIterator[tuple[Process, int | None]]:
    """Run `sys.executable *args`; yield `(process, port)` (`port` is None unless expected).

    `env` entries are merged over the current environment. With `stderr=PIPE` (the default) a
    server that writes a lot to stderr must be read by the caller, or it blocks on the pipe.
    """
    if expect_port is None:
        expect_port = "--port" in args
    if expect_port and stdout != PIPE:
        raise ValueError("waiting for LISTENING needs stdout=PIPE")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    try:
        port = await _wait_listening(process, listen_timeout) if expect_port else None
        yield process, port
    finally:
        await stop(process, kill_after)


async def _wait_listening(process: Process, timeout: float) -> int:
    assert process.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            while line := await process.stdout.readline():
                words = line.decode(errors="replace").split()
                if len(words) == 2 and words[0] == "LISTENING":
                    return int(words[1])
    except TimeoutError:
        raise RuntimeError(f"server printed no LISTENING line within {timeout:g}s") from None
    # EOF: the server died (or closed stdout) before listening.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await process.wait()
    err = b""
    if process.stderr is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                err = await process.stderr.read()
    raise RuntimeError(
        f"server exited (rc={process.returncode}) before LISTENING: {err.decode(errors='replace')}"
    )


def _signal_group(process: Process, sig: signal.Signals) -> None:
    # The server leads its own session, so its pid is the group id; the group outlives the
    # leader while any member (a grandchild) is alive.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def stop(process: Process, kill_after: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL it after `kill_after` s, reap, release the pipes."""
    if process.stdin is not None:
        process.stdin.close()
    if process.returncode is None:
        _signal_group(process, signal.SIGTERM)
        try:
            async with asyncio.timeout(kill_after):
                await process.wait()
        except TimeoutError:
            _signal_group(process, signal.SIGKILL)
            await process.wait()
    _signal_group(process, signal.SIGKILL)  # stragglers holding the group (and our pipes)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            # Reading to EOF lets asyncio close the subprocess transport (else: ResourceWarning).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(kill_after):
                    while await stream.read(65536):
                        pass
    if process.stdin is not None:
        with contextlib.suppress(Exception):
            await process.stdin.wait_closed()
