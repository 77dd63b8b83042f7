"""The real stack in-process: watcher -> reconciler -> manager -> hub, over a temp config dir.

Servers are real processes (tests/servers/echo.py, mcp-server-time); only timings shrink.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from jackfield.reconciler import Reconciler
from jackfield.shell.hub import ToolHub
from jackfield.shell.manager import ServerManager
from jackfield.shell.supervisor import Timing
from jackfield.shell.watcher import ConfigWatcher
from tests.conftest import REPO
from tests.controller_support import until

TOKEN = "test-hub-token-0123456789"
FAST = Timing(backoff_base=0.05, backoff_cap=0.5, grace=0.5)
"""Quick restarts and grace; health checks at their default pace, so a loaded machine does not
turn a slow ping into a restart in tests that are not about health."""


def echo_server(name: str, *flags: str, extra: str = "") -> str:
    """An MCPServer document running tests/servers/echo.py over stdio."""
    args = ", ".join(f'"{a}"' for a in ["-m", "tests.servers.echo", *flags])
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  command: {sys.executable}\n  args: [{args}]\n  cwd: {REPO}\n{extra}"
    )


@dataclass
class Stack:
    config_dir: Path
    reconciler: Reconciler
    manager: ServerManager
    hub: ToolHub
    watcher: ConfigWatcher

    def write(self, relative: str, text: str) -> None:
        """Write a config file the way editors do: temp file, then rename."""
        path = self.config_dir / relative
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(text)
        os.replace(temp, path)

    async def ready(self, *names: str, timeout: float = 20.0) -> None:
        await until(
            lambda: all(self.manager.states().get(n) == "Ready" for n in names),
            timeout=timeout,
            what=f"{names} Ready (now {self.manager.states()})",
        )


@contextlib.asynccontextmanager
async def live_stack(config_dir: Path, timing: Timing = FAST) -> AsyncIterator[Stack]:
    env = dict(os.environ)
    async with ServerManager(timing=timing) as manager:
        hub = ToolHub(manager, host="127.0.0.1", port=0, token=TOKEN)
        reconciler = Reconciler(config_dir=config_dir, env=env, target=manager, store=None)
        reconciler.listeners.append(hub.set_snapshot)
        watcher = ConfigWatcher(config_dir, reconciler.trigger, debounce_ms=20, tick_ms=50)
        await hub.start()
        tasks = [asyncio.create_task(reconciler.run()), asyncio.create_task(watcher.run())]
        try:
            await asyncio.wait_for(reconciler.wait_first_pass(), 20)
            await until(lambda: watcher.state in ("Watching", "Polling"), what="watcher start")
            yield Stack(config_dir, reconciler, manager, hub, watcher)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await hub.stop()


@contextlib.asynccontextmanager
async def echo_stack(config_dir: Path, extra: str = "") -> AsyncIterator[Stack]:
    """A live stack over a config with one Ready echo server named `echo`."""
    (config_dir / "servers.d" / "echo.yaml").write_text(echo_server("echo", extra=extra))
    async with live_stack(config_dir) as stack:
        await stack.ready("echo")
        yield stack
