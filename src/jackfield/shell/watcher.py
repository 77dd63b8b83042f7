"""Watches the config dir and says "look again". Never derives adds/deletes from event paths.

The native watcher (inotify via watchfiles) watches the *resolved* config dir. Three things make
that watch stale without any event in it, so every tick (250 ms) re-checks the root's identity:
- git-sync flips the symlink that is the config dir to a new worktree;
- the config dir is deleted and created again (same path, new inode);
- the dir disappears (then we wait for it to come back).
When the identity changes the watch restarts on the new target and a pass is triggered. If the
native watcher fails it restarts with backoff, and after repeated failures falls back to polling
(state Polling); status says Degraded meanwhile. Polling is ours, not the notify crate's: it
stats what the scan reads, by the scan's rules (`sources.stamp`), so a symlink loop that makes
notify's poller fail on every walk costs one stat per directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from watchfiles import Change, awatch

from jackfield.core.status import WatcherState, WatcherStatus, utcnow
from jackfield.shell.sources import stamp

log = logging.getLogger(__name__)

FAILURES_BEFORE_POLLING = 3
MAX_BACKOFF = 30.0


def identity(path: Path) -> tuple[str, int, int] | None:
    """What the config dir is right now: resolved path and inode, or None when it is gone."""
    try:
        real = path.resolve(strict=True)
        st = os.stat(real)
    except (OSError, RuntimeError):
        return None
    return (str(real), st.st_dev, st.st_ino)


class Ignored:
    """Files that live in the config dir but are never config: the SQLite store (and its
    `-journal`/`-wal`/`-shm` companions) writes on every pass, and each write would trigger the
    next. Paths are compared resolved, as the native watch reports them."""

    def __init__(self, paths: Sequence[Path], root: Path) -> None:
        self.paths = tuple(str(p.resolve()) for p in paths)
        # its own directory too (`.jackfield/`, created by the first open), unless that is root
        self.dirs = tuple({str(p.resolve().parent) for p in paths} - {str(root.resolve())})

    def counts(self, change: Change, path: str) -> bool:
        if path in self.dirs:
            return False
        return not any(path == p or path.startswith(p + "-") for p in self.paths)


class ConfigWatcher:
    def __init__(
        self,
        config_dir: Path,
        on_change: Callable[[], None],
        *,
        debounce_ms: int = 30,
        tick_ms: int = 250,
        force_polling: bool = False,
        ignore: Sequence[Path] = (),
    ) -> None:
        self.config_dir = config_dir
        self.ignored = Ignored(ignore, config_dir)
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self.tick_ms = tick_ms
        self.polling = force_polling
        self.state: WatcherState = "Starting"
        self.message: str | None = None
        self.last_event_at: datetime | None = None
        self.events = 0
        self.restarts = 0
        self.heartbeat = asyncio.get_running_loop().time() if _loop_running() else 0.0

    def status(self) -> WatcherStatus:
        return WatcherStatus(self.state, self.last_event_at, self.message)

    def _event(self) -> None:
        self.events += 1
        self.last_event_at = utcnow()
        self.on_change()

    async def run(self) -> None:
        """Watch until cancelled."""
        failures = 0
        watched: tuple[str, int, int] | None = None
        was_missing = False
        while True:
            self._beat()
            current = identity(self.config_dir)
            if current is None:
                self.state, self.message = "Degraded", f"config dir {self.config_dir} is missing"
                was_missing = True
                await asyncio.sleep(self.tick_ms / 1000)
                continue
            # a recreated dir may get the same inode number back, hence `was_missing`
            catch_up = watched is not None and (current != watched or was_missing)
            watched, was_missing = current, False
            try:
                await self._watch(current, catch_up=catch_up)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                self.restarts += 1
                if failures >= FAILURES_BEFORE_POLLING and not self.polling:
                    self.polling = True
                    log.warning(
                        "native file watcher keeps failing (%s); falling back to polling", e
                    )
                self.state = "Degraded"
                leaf = _leaf(e)
                self.message = f"watcher failed ({type(leaf).__name__}: {leaf}); restarting"
                log.warning("%s", self.message)
                await asyncio.sleep(min(MAX_BACKOFF, 0.5 * 2**failures))
            # whatever ended the watch (flip, recreate, failure), the files may differ: look again
            self._event()

    async def _watch(self, current: tuple[str, int, int], *, catch_up: bool) -> None:
        """One native watch of one resolved root; returns when the root's identity changes.

        With `catch_up`, a pass is triggered once the watch is established (its first tick):
        files written while no watch existed would otherwise go unseen until the resync.
        """
        root = current[0]
        self.state = "Polling" if self.polling else "Watching"
        if self.polling and self.restarts:
            self.message = (
                f"WatcherDegraded: the native watcher failed {self.restarts} time(s); polling"
            )
        else:
            self.message = None
        if self.polling:
            await self._poll(current, catch_up=catch_up)
            return
        async for changes in awatch(
            root,
            watch_filter=self.ignored.counts,
            debounce=max(self.debounce_ms * 10, 300),
            step=self.debounce_ms,
            rust_timeout=self.tick_ms,
            yield_on_timeout=True,
            recursive=True,
            ignore_permission_denied=True,
        ):
            self._beat()
            if changes or catch_up:
                catch_up = False
                log.debug("file events: %s", sorted(p for _, p in changes))
                self._event()
            root_gone = any(c == Change.deleted and p == root for c, p in changes)
            if root_gone or identity(self.config_dir) != current:
                log.info("config dir %s changed identity; restarting the watch", self.config_dir)
                return
        raise RuntimeError("the native watch ended")

    async def _poll(self, current: tuple[str, int, int], *, catch_up: bool) -> None:
        """Stat what the scan reads every tick (in a thread: a large dir costs the loop
        nothing); returns when the root's identity changes."""
        root = Path(current[0])
        last = await asyncio.to_thread(stamp, root)
        if catch_up:
            self._event()
        while True:
            await asyncio.sleep(max(self.tick_ms, 100) / 1000)
            self._beat()
            if identity(self.config_dir) != current:
                log.info("config dir %s changed identity; restarting the watch", self.config_dir)
                return
            now = await asyncio.to_thread(stamp, root)
            if now != last:
                last = now
                self._event()

    def _beat(self) -> None:
        self.heartbeat = asyncio.get_running_loop().time()

    def alive(self, max_silence: float = 10.0) -> bool:
        """The watch loop has ticked recently (it ticks every `tick_ms` even without events)."""
        return (
            asyncio.get_running_loop().time() - self.heartbeat < max_silence + self.tick_ms / 1000
        )


def _leaf(e: BaseException) -> BaseException:
    """The first real error inside exception groups (watchfiles wraps its own in a TaskGroup's)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
