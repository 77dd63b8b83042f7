"""When the native watcher fails (inotify limits, ENOSPC), the watch restarts with backoff and
then falls back to polling; status says so, and changes still apply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import watchfiles

from jackfield.shell import watcher as watcher_module
from tests.support.config import server_yaml
from tests.support.controller import running, settled

pytestmark = pytest.mark.faults


def failing_native_watch(*args: Any, **kwargs: Any) -> AsyncIterator[set[tuple[Any, str]]]:
    """The OS refuses inotify watches (as with fs.inotify.max_user_watches exhausted)."""
    if not kwargs.get("force_polling"):
        raise OSError(28, "No space left on device (inotify watch limit)")
    return watchfiles.awatch(*args, **kwargs)


async def test_a_failing_native_watcher_falls_back_to_polling_and_keeps_applying(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher_module, "FAILURES_BEFORE_POLLING", 2)
    monkeypatch.setattr(watcher_module, "awatch", failing_native_watch)
    async with running(config_dir) as (reconciler, target, watcher):
        await settled(reconciler, lambda: watcher.state == "Polling", "polling fallback")
        assert watcher.restarts >= 2
        message = watcher.status().message or ""
        assert message.startswith("WatcherDegraded")
        (config_dir / "servers.d" / "a.yaml").write_text(server_yaml("a"))
        await settled(reconciler, lambda: "a" in target.servers, "change seen by polling")
