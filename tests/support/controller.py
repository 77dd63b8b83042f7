"""A running controller + watcher over a temp config dir, with an in-memory live target."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jackfield.core.connection import Connection
from jackfield.reconciler import PassStore, Reconciler
from jackfield.shell.watcher import ConfigWatcher
from jackfield.spec.models import MCPServerSpec
from tests.support.polling import until

__all__ = ["MemoryTarget", "running", "settled", "until"]


@dataclass
class MemoryTarget:
    """Implements reconciler.LiveTarget; records what was asked of it."""

    servers: dict[str, MCPServerSpec] = field(default_factory=dict)
    calls: list[tuple[str, str, bool]] = field(default_factory=list)
    connections: dict[str, Connection] = field(default_factory=dict)

    async def put(
        self, name: str, spec: MCPServerSpec, connection: Connection, *, reconnect: bool
    ) -> None:
        self.servers[name] = spec
        self.connections[name] = connection
        self.calls.append(("put", name, reconnect))

    async def remove(self, name: str) -> None:
        self.servers.pop(name, None)
        self.calls.append(("remove", name, True))

    async def rotate(self, name: str, connection: Connection) -> None:
        self.connections[name] = connection
        self.calls.append(("rotate", name, False))

    @property
    def reconnects(self) -> list[str]:
        return [name for op, name, reconnect in self.calls if reconnect]


async def settled(reconciler: Reconciler, condition: Callable[[], Any], what: str = "") -> None:
    """Wait until the condition holds with no reconcile pass running or pending."""
    await until(lambda: reconciler.settled and condition(), what=what)


@contextlib.asynccontextmanager
async def running(
    config_dir: Path,
    *,
    store: PassStore | None = None,
    allow_empty: bool = False,
    **kwargs: Any,
) -> AsyncIterator[tuple[Reconciler, MemoryTarget, ConfigWatcher]]:
    target = MemoryTarget()
    reconciler = Reconciler(
        config_dir=config_dir,
        env=kwargs.pop("env", {}),
        target=target,
        store=store,
        allow_empty=allow_empty,
        **kwargs,
    )
    watcher = ConfigWatcher(config_dir, reconciler.trigger, debounce_ms=20, tick_ms=50)
    tasks = [asyncio.create_task(reconciler.run()), asyncio.create_task(watcher.run())]
    try:
        await asyncio.wait_for(reconciler.wait_first_pass(), 10)
        await until(lambda: watcher.state in ("Watching", "Polling"), what="watcher start")
        yield reconciler, target, watcher
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
