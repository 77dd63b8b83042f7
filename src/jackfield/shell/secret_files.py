"""The files `${file:/path}` refers to (mounted Secrets): reading them for a pass, and watching
them so that a rotation is seen.

The pure core expands a file reference by looking up `file_key(path)` in the environment it is
handed; an absent key means "cannot read". `SecretFiles.environment()` is that environment for
one pass: the process env plus the files, each read once per pass on first lookup, so one pass
sees one value per file. After the pass, `settle` adds the files it looked up to the watch set
(and drops the ones no longer referenced, when told which are).

What is kept of a file between passes is whether it was readable and an HMAC of its value under
a random per-process key: never the value, and never a plain hash (a secret's hash, logged or
compared by mistake, can be tested against guesses).

The watcher watches the directories a read goes through, not the files: kubelet updates a Secret
volume by renaming `..data` (a symlink to a timestamped dir that `key -> ..data/key` goes
through), so the event is on `..data`, never on `key`. Events are only a hint: on each one, and
on every tick, the watched files are read again and `on_change` is called only when a value or
its readability differs from what the watcher last saw. That filters out unrelated files in the
same directory, and the tick catches what no event announces (a volume mounted over an existing
dir, a dir renamed higher up, a filesystem without inotify).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from watchfiles import awatch

from jackfield.core.expansion import file_path, is_file_name

log = logging.getLogger(__name__)

MAX_SECRET_BYTES = 64 * 1024
"""A larger file is not a secret value (a mistaken path to a log or a binary): unreadable."""
MAX_LINKS = 40
"""Symlinks followed when working out what to watch (the kernel's limit)."""
MAX_BACKOFF = 30.0

_KEY = secrets.token_bytes(32)
"""The HMAC key of fingerprints: random per process, so a fingerprint means nothing outside."""
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
"""O_NONBLOCK: a FIFO swapped in after the stat cannot block the read on open."""
_TRAILING_NEWLINES = re.compile(r"(?:\r?\n)+\Z")


@dataclass(frozen=True)
class Mark:
    """What is remembered of one read of a file: an HMAC of its value (None: unreadable) and why
    it was unreadable. Never the value."""

    fingerprint: bytes | None = field(repr=False)
    reason: str | None = None

    @property
    def readable(self) -> bool:
        return self.fingerprint is not None


@dataclass(frozen=True)
class Reading:
    """One read of a file: its value (None: unreadable) and what is remembered of it."""

    value: str | None = field(repr=False)
    mark: Mark


def read_secret(path: Path) -> tuple[str | None, str | None]:
    """(the file's text with trailing newlines trimmed, None) or (None, why it is unreadable).

    Symlinks are followed. A directory, a special file, a file over `MAX_SECRET_BYTES`, a file
    that is not UTF-8, and any OS error count as unreadable. Never raises for the file's sake.
    """
    try:
        # stat before opening: a device or a FIFO is never opened
        before = os.stat(path)
        if (why := _not_regular(before.st_mode)) is not None:
            return None, why
        if before.st_size > MAX_SECRET_BYTES:
            return None, _TOO_LARGE
        fd = os.open(path, _OPEN_FLAGS)
        try:
            if (why := _not_regular(os.fstat(fd).st_mode)) is not None:  # swapped since the stat
                return None, why
            chunks: list[bytes] = []
            got = 0
            while got <= MAX_SECRET_BYTES and (chunk := os.read(fd, MAX_SECRET_BYTES + 1 - got)):
                chunks.append(chunk)
                got += len(chunk)
        finally:
            os.close(fd)
    except OSError as e:
        return None, e.strerror or type(e).__name__
    if got > MAX_SECRET_BYTES:  # it grew while we read
        return None, _TOO_LARGE
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    return _TRAILING_NEWLINES.sub("", text), None


_TOO_LARGE = f"larger than {MAX_SECRET_BYTES // 1024} KiB"


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return os.strerror(errno.EISDIR)
    return "not a regular file"


def fingerprint(value: str) -> bytes:
    return hmac.new(_KEY, value.encode(), hashlib.sha256).digest()


def watch_points(path: Path) -> set[str]:
    """The directories in which a change can alter what reading `path` gives: the one holding
    each symlink met on the way (a link is replaced by an event in its directory, not in its
    target's), and the one holding the file. Where a part is missing, the directory it would
    appear in, so that its creation is an event. All of them exist and are resolved."""
    found: set[str] = set()
    todo = list(reversed(path.absolute().parts))
    here = os.sep
    links = 0
    while todo:
        part = todo.pop()
        if part == os.sep:  # an absolute path, or an absolute link target: start from the root
            here = os.sep
            continue
        if part in ("", "."):
            continue
        if part == "..":
            here = os.path.dirname(here)
            continue
        entry = os.path.join(here, part)
        try:
            st = os.lstat(entry)
        except OSError:
            found.add(here)
            break
        if stat.S_ISLNK(st.st_mode):
            found.add(here)
            links += 1
            try:
                target = os.readlink(entry)
            except OSError:
                break
            if links > MAX_LINKS:
                break
            todo.extend(reversed(PurePath(target).parts))
            continue
        if not todo or not stat.S_ISDIR(st.st_mode):
            found.add(here)  # the file itself (or a non-directory where one was expected)
            break
        here = entry
    return found


class FileEnvironment(Mapping[str, str]):
    """The environment of one pass: the process env, plus `file:<path>` keys read on first
    lookup and then memoised. Iteration and len() cover the process env only. One pass, one
    user: it is not meant to be shared between threads at once."""

    def __init__(self, files: SecretFiles, base: Mapping[str, str], preload: Iterable[str]) -> None:
        self._files = files
        self._base = base
        self._reads: dict[str, Reading] = {}
        self._looked_up: dict[str, None] = {}
        for path in preload:
            self._read(path)

    def __getitem__(self, key: str) -> str:
        if not is_file_name(key):
            return self._base[key]
        path = file_path(key)
        self._looked_up[path] = None
        value = self._read(path).value
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)

    def __repr__(self) -> str:
        return f"<FileEnvironment: {len(self._base)} variable(s), {len(self._reads)} file(s)>"

    @property
    def looked_up(self) -> tuple[str, ...]:
        """The files the pass looked up (as written), in order: referenced now, though not
        necessarily all of those (see `SecretFiles.settle`)."""
        return tuple(self._looked_up)

    def marks(self) -> dict[str, Mark]:
        """What this pass read of each file, looked up or read ahead."""
        return {path: read.mark for path, read in self._reads.items()}

    def mark(self, path: str) -> Mark:
        """What this pass reads of `path` (reading it now if it has not yet)."""
        return self._read(path).mark

    def reason(self, path: str) -> str | None:
        """Why this pass could not read `path` (as written); None if it could, or did not try."""
        read = self._reads.get(path)
        return None if read is None else read.mark.reason

    def digest(self) -> str:
        """Identifies which of the files read so far were readable (not their values): mixed
        into the pass digest, so that a file becoming readable or not re-validates the config."""
        h = hashlib.sha256()
        for path in sorted(self._reads):
            h.update(f"{path}\0{int(self._reads[path].mark.readable)}\0".encode())
        return "sha256:" + h.hexdigest()

    def _read(self, path: str) -> Reading:
        if (read := self._reads.get(path)) is None:
            read = self._reads[path] = self._files.read(path)
            if read.mark.reason is not None:
                log.debug("secret file %s is unreadable: %s", path, read.mark.reason)
        return read


class SecretFiles:
    """Owns reading and watching the secret files the config refers to."""

    def __init__(self, config_dir: Path, base: Mapping[str, str]) -> None:
        self.config_dir = config_dir
        self.base = base
        self._settled: Mapping[str, Mark] = {}
        """The watch set, with what its last pass read of each file; replaced, never mutated,
        so the watcher's thread and the reconciler's see a whole one."""
        self._stop = threading.Event()
        """Ends the current native watch (settle sets it: the watch set changed)."""
        self._wake: Callable[[], None] | None = None
        self.watching: frozenset[str] = frozenset()
        """The directories the watcher has armed on, once the watch is established."""
        self.arms = 0
        """How many times the watcher armed (for tests and status)."""

    def resolve(self, path: str) -> Path:
        """Where a file reference (as written) points: relative to the config dir."""
        return self.config_dir / path

    def read(self, path: str) -> Reading:
        value, reason = read_secret(self.resolve(path))
        return Reading(value, Mark(None if value is None else fingerprint(value), reason))

    def environment(self) -> FileEnvironment:
        """A fresh environment for one pass. The files watched now are read ahead, so `digest()`
        covers them even when the pass does not look them up (its config was unchanged, or came
        from the parse cache)."""
        return FileEnvironment(self, self.base, self._settled)

    def settle(self, env: FileEnvironment, referenced: Iterable[str] | None = None) -> None:
        """After a pass: remember the files it looked up as it read them, and watch them.

        A pass may look up only some of the files the config refers to: a pass that skips
        loading (an unchanged config) looks nothing up, and one that loads takes the files whose
        bytes did not change from the parse cache, without checking their references again. So
        without `referenced` the watch set only grows: the files looked up join it, and none
        leaves (one no longer referenced costs a spurious `on_change`, never a missed one).
        `referenced`: every file the config refers to now (as written); then the watch set is
        those and the ones looked up, and the others leave it.
        """
        looked_up = set(env.looked_up)
        before = self._settled
        paths = dict.fromkeys([*(before if referenced is None else referenced), *env.looked_up])
        marks = {p: before[p] for p in paths if p in before}
        marks |= {p: env.mark(p) for p in paths if p in looked_up or p not in marks}
        self._settled = marks
        if set(before) != set(marks):
            self._stop.set()
            if self._wake is not None:
                self._wake()

    @property
    def watched(self) -> frozenset[str]:
        """The referenced paths, as written."""
        return frozenset(self._settled)

    def reason(self, path: str) -> str | None:
        """Why the last settled pass could not read `path`; None if it could, or never tried."""
        mark = self._settled.get(path)
        return None if mark is None else mark.reason

    def changed(self) -> frozenset[str]:
        """The watched paths whose value or readability differs now from the last settled pass
        (each read again now)."""
        settled = self._settled
        now = self._fingerprints(settled)
        return frozenset(p for p, m in settled.items() if now[p] != m.fingerprint)

    def _fingerprints(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        return {p: self.read(p).mark.fingerprint for p in paths}

    def _points(self, paths: Iterable[str]) -> frozenset[str]:
        return frozenset(d for p in paths for d in watch_points(self.resolve(p)))

    # --- watching -------------------------------------------------------------------------

    async def watch(
        self, on_change: Callable[[], None], *, step_ms: int = 30, tick_ms: int = 250
    ) -> None:
        """Call `on_change()` whenever a watched file's value or readability may have changed
        (a burst of events is one call), until cancelled. Re-arms when `settle` changes the
        watch set, and when a change moves what the files resolve through. `tick_ms`: how often
        the files are read again without any event."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wake_up() -> None:  # settle may run in a worker thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
                loop.call_soon_threadsafe(wake.set)

        self._wake = wake_up
        seen: dict[str, bytes | None] = {}
        failures = 0
        try:
            while True:
                # in this order, so a settle after any of it ends the watch it is about
                wake.clear()
                stop = self._stop = threading.Event()
                settled = self._settled
                seen = {p: seen[p] if p in seen else m.fingerprint for p, m in settled.items()}
                points = await asyncio.to_thread(self._points, settled)
                if not points:
                    self.watching = frozenset()
                    await wake.wait()
                    continue
                try:
                    seen = await self._watch(points, seen, on_change, stop, step_ms, tick_ms)
                    failures = 0
                except Exception as e:
                    failures += 1
                    self.watching = frozenset()
                    delay = min(MAX_BACKOFF, 0.5 * 2**failures)
                    log.warning(
                        "watching the secret files failed (%s: %s); reading them every %d ms"
                        " for %.1f s, then watching again",
                        type(e).__name__, e, tick_ms, delay,
                    )  # fmt: skip
                    seen = await self._poll(seen, on_change, tick_ms, delay, wake)
        finally:
            self._wake = None
            self.watching = frozenset()

    async def _watch(
        self,
        points: frozenset[str],
        seen: dict[str, bytes | None],
        on_change: Callable[[], None],
        stop: threading.Event,
        step_ms: int,
        tick_ms: int,
    ) -> dict[str, bytes | None]:
        """One native watch of `points`; returns (with what it last saw) when `stop` is set or
        the files now resolve through other directories (kubelet's swap moves them)."""
        changes = awatch(
            *sorted(points),
            watch_filter=None,
            debounce=max(step_ms * 10, 300),
            step=step_ms,
            stop_event=stop,
            rust_timeout=tick_ms,
            yield_on_timeout=True,
            recursive=False,
            ignore_permission_denied=True,
        )
        try:
            # The generator's first step creates the native watch, then waits in a thread. Once
            # that step has run (one turn of the loop), every change is an event; a change
            # before it is caught by reading the files now.
            first = asyncio.ensure_future(anext(changes, None))
            try:
                await asyncio.sleep(0)
                if not first.done():  # else it failed, or was stopped: nothing is armed
                    seen = await self._compare(seen, on_change)
                    self.watching, self.arms = points, self.arms + 1
                got = await first
            finally:
                if not first.done():
                    first.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await first
            while got is not None:
                seen = await self._compare(seen, on_change)
                if stop.is_set() or await asyncio.to_thread(self._points, seen) != points:
                    return seen
                got = await anext(changes, None)
            return seen
        finally:
            stop.set()
            await changes.aclose()

    async def _poll(
        self,
        seen: dict[str, bytes | None],
        on_change: Callable[[], None],
        tick_ms: int,
        seconds: float,
        wake: asyncio.Event,
    ) -> dict[str, bytes | None]:
        """Read the files every tick for `seconds` (the native watch failed), or until the watch
        set changes."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until and not wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), tick_ms / 1000)
            seen = await self._compare(seen, on_change)
        return seen

    async def _compare(
        self, seen: dict[str, bytes | None], on_change: Callable[[], None]
    ) -> dict[str, bytes | None]:
        """Read the files again; call `on_change` if any differs from what was seen."""
        now = await asyncio.to_thread(self._fingerprints, seen)
        if now != seen:
            moved = sorted(p for p in now if now[p] != seen.get(p))
            log.info("secret file(s) changed: %s", ", ".join(moved))
            on_change()
        return now
