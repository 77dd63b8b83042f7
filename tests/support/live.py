"""The real stack in-process: watcher -> reconciler -> manager -> hub, over a temp config dir.

Servers are real processes (tests/servers/echo.py, mcp-server-time); only timings shrink.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from jackfield.app import build
from jackfield.reconciler import Reconciler
from jackfield.settings import Settings
from jackfield.shell.hub import ToolHub
from jackfield.shell.servers import ServerManager
from jackfield.shell.supervisor import Timing
from jackfield.shell.watcher import ConfigWatcher
from tests.support.controller import until
from tests.support.servers import echo_server

__all__ = ["FAST", "TOKEN", "Stack", "echo_server", "echo_stack", "live_stack"]

TOKEN = "test-hub-token-0123456789"
FAST = Timing(backoff_base=0.05, backoff_cap=0.5, grace=0.5)
"""Quick restarts and grace; health checks at their default pace, so a loaded machine does not
turn a slow ping into a restart in tests that are not about health."""


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
    """The controller `jackfield run` builds (`app.build`), over `config_dir`, hub on any port."""
    settings = Settings(_env_file=None, config_dir=config_dir, hub_port=0, debounce_ms=20)
    controller = build(settings, hub_token=TOKEN, env=dict(os.environ), timing=timing, tick_ms=50)
    async with controller.running(first_pass=20):
        watcher = controller.watcher
        assert watcher is not None
        await until(lambda: watcher.state in ("Watching", "Polling"), what="watcher start")
        yield Stack(config_dir, controller.reconciler, controller.manager, controller.hub, watcher)


@contextlib.asynccontextmanager
async def echo_stack(config_dir: Path, extra: str = "") -> AsyncIterator[Stack]:
    """A live stack over a config with one Ready echo server named `echo`."""
    (config_dir / "servers.d" / "echo.yaml").write_text(echo_server("echo", extra=extra))
    async with live_stack(config_dir) as stack:
        await stack.ready("echo")
        yield stack
