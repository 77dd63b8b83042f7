"""Reading the config dir: which files count, their bytes, and the git commit if known.

Files are read fresh on every pass (level-triggered): the watcher only says "look again".
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jackfield.core.desired import AGENT_FILE
from jackfield.core.loading import MAX_FILE_BYTES, Budget, SourceFile, too_large
from jackfield.errors import ConfigError

SERVERS_DIR = "servers.d"
_SUFFIXES = (".yaml", ".yml")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
"""O_NONBLOCK: a FIFO swapped in after the type check cannot block the scan on open. The path
opened is resolved already, so O_NOFOLLOW only refuses a symlink swapped in meanwhile."""

_SPECIAL = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass(frozen=True)
class Scan:
    root: Path
    """The config dir as resolved for this scan (git-sync flips its target)."""
    files: list[SourceFile]
    errors: list[ConfigError]


class _OutOfTime(Exception):
    pass


def is_config_name(name: str) -> bool:
    """Only `*.yaml`/`*.yml` not starting with '.' (skips `..data`, `.#x.yaml`, swap files)."""
    return name.endswith(_SUFFIXES) and not name.startswith(".")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _resolve(path: Path) -> Path:
    """`path` with every symlink followed.

    Raises:
        OSError: ELOOP for a symlink loop (pathlib says RuntimeError), ENOENT if dangling.
    """
    try:
        return path.resolve(strict=True)
    except RuntimeError as e:  # Python < 3.13
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)) from e


def _reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    return e.strerror or str(e)


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    what = _SPECIAL.get(stat.S_IFMT(mode), "not a regular file")
    return f"{what}, not a regular file; not read"


def _read(path: Path, rel: str, root: Path, errors: list[ConfigError]) -> SourceFile | None:
    """The bytes of a config file; None (with an error, unless it is simply gone) otherwise.
    Never opens what is not a regular file: a FIFO would block the scan for good."""
    try:
        real = _resolve(path)
        if not _inside(real, root):
            errors.append(
                ConfigError(rel, 1, 1, "symlink points outside the config dir; not followed")
            )
            return None
        before = os.stat(real)
        if stat.S_ISDIR(before.st_mode):
            return None
        if (why := _not_regular(before.st_mode)) is not None:
            errors.append(ConfigError(rel, 1, 1, why))
            return None
        if before.st_size > MAX_FILE_BYTES:
            errors.append(too_large(rel, before.st_size))  # refused unread
            return None
        fd = os.open(real, _OPEN_FLAGS)
        try:
            opened = os.fstat(fd)
            if (why := _not_regular(opened.st_mode)) is not None:  # swapped since the stat
                errors.append(ConfigError(rel, 1, 1, why))
                return None
            chunks: list[bytes] = []
            got = 0
            while got <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - got)):
                chunks.append(chunk)
                got += len(chunk)
            if got > MAX_FILE_BYTES:  # it grew while we read: say how large it is now
                errors.append(too_large(rel, max(os.fstat(fd).st_size, got)))
                return None
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None  # deleted between listing and reading: the next pass sees the new state
    except OSError as e:
        errors.append(ConfigError(rel, 1, 1, f"cannot read file: {_reason(e)}"))
        return None
    return SourceFile(rel, b"".join(chunks))


@dataclass
class _Walk:
    """One scan of servers.d/: each directory is read once, however many links reach it."""

    root: Path
    files: list[SourceFile]
    errors: list[ConfigError]
    budget: Budget | None
    seen: dict[tuple[int, int], str]
    """(st_dev, st_ino) of each directory read -> the path it was read as."""
    stamps: list[tuple[object, ...]] | None = None
    """When a list, config files are not read: what identifies their content is put there."""

    def tick(self, rel: str) -> None:
        if self.budget is not None and self.budget.check_time():
            raise _OutOfTime(rel)

    def directory(self, path: Path, rel: str) -> None:
        """Every config file under `path` (shown as `rel`), depth first in name order.

        An explicit stack, not recursion: a deep tree must not overflow Python's stack."""
        stack = [(path, rel)]
        while stack:
            path, rel = stack.pop()
            self.tick(rel)
            try:
                with os.scandir(path) as listing:
                    names = [entry.name for entry in listing]
            except FileNotFoundError:
                continue  # removed while we looked
            except OSError as e:
                # an error, not a skip: pruning what it holds would delete its servers
                self.errors.append(ConfigError(rel, 1, 1, f"cannot read directory: {_reason(e)}"))
                continue
            below: list[tuple[Path, str]] = []
            # in name order, but real directories claim their inode before links to them do
            names.sort(key=lambda name: (os.path.islink(path / name), name))
            for name in names:
                if name.startswith("."):
                    continue
                child, child_rel = path / name, f"{rel}/{name}"
                try:
                    st = os.stat(child)  # follows links; never opens
                except FileNotFoundError:
                    continue  # a dangling link, or gone meanwhile
                except OSError as e:
                    if is_config_name(name):
                        self.errors.append(
                            ConfigError(child_rel, 1, 1, f"cannot read file: {_reason(e)}")
                        )
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if self.enter(child, child_rel, st):
                        below.append((child, child_rel))
                elif is_config_name(name):
                    self.tick(child_rel)
                    if self.stamps is not None:
                        self.stamps.append((child_rel, *_stamp(st)))
                        continue
                    got = _read(child, child_rel, self.root, self.errors)
                    if got:
                        self.files.append(got)
            stack.extend(reversed(below))

    def enter(self, path: Path, rel: str, st: os.stat_result) -> bool:
        """Whether to read the directory at `path`: inside the config dir, and not read yet."""
        try:
            real = _resolve(path)
        except OSError as e:
            self.errors.append(ConfigError(rel, 1, 1, f"cannot read directory: {_reason(e)}"))
            return False
        if not _inside(real, self.root):
            self.errors.append(
                ConfigError(rel, 1, 1, "symlink points outside the config dir; not followed")
            )
            return False
        first = self.seen.setdefault((st.st_dev, st.st_ino), rel)
        if first != rel:
            self.errors.append(
                ConfigError(
                    rel,
                    1,
                    1,
                    f"directory already read as {first} (a symlink loop?); a directory is"
                    " read once",
                )
            )
            return False
        return True


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    # mtime, not ctime, as notify's poller: an edit that keeps size and mtime is SIGHUP's to see
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def stamp(config_dir: Path) -> tuple[object, ...]:
    """What changes when anything `scan` reads changes, from stat alone: the same walk (each
    directory once, links inside the dir only), no file opened. For polling."""
    try:
        root = _resolve(config_dir)
    except OSError as e:
        return (str(config_dir), _reason(e))
    stamps: list[tuple[object, ...]] = [(str(root),)]
    for name in (AGENT_FILE, "agent.yml"):
        with contextlib.suppress(OSError):
            stamps.append((name, *_stamp(os.stat(root / name))))
    walk = _Walk(root, [], [], None, {}, stamps)
    servers = root / SERVERS_DIR
    try:
        st = os.stat(servers)
    except OSError as e:
        return (*stamps, (SERVERS_DIR, _reason(e)))
    if stat.S_ISDIR(st.st_mode) and walk.enter(servers, SERVERS_DIR, st):
        walk.directory(servers, SERVERS_DIR)
    return (*stamps, *(str(e) for e in walk.errors))


def scan(config_dir: Path, *, budget: Budget | None = None) -> Scan:
    """Read agent.yaml and every config file under servers.d/ (recursively).

    Never raises for what is in the dir: a symlink loop, a directory read twice, a FIFO, socket
    or device named *.yaml, an unreadable directory are each an error with its path. The
    deadline of `budget` (the pass's, shared with loading) is looked at before each directory
    and file; once it has passed the scan stops with an error.
    """
    errors: list[ConfigError] = []
    files: list[SourceFile] = []
    try:
        root = _resolve(config_dir)
    except FileNotFoundError:
        return Scan(
            config_dir, [], [ConfigError(".", 1, 1, f"config dir {config_dir} does not exist")]
        )
    except OSError as e:
        return Scan(
            config_dir, [], [ConfigError(".", 1, 1, f"cannot read config dir: {_reason(e)}")]
        )
    for name in (AGENT_FILE, "agent.yml"):
        if os.path.lexists(root / name):
            got = _read(root / name, AGENT_FILE, root, errors)
            if got:
                files.append(got)
            break
    walk = _Walk(root, files, errors, budget, {})
    servers = root / SERVERS_DIR
    try:
        st = os.stat(servers)
    except FileNotFoundError:
        return Scan(root, files, errors)
    except OSError as e:
        errors.append(ConfigError(SERVERS_DIR, 1, 1, f"cannot read directory: {_reason(e)}"))
        return Scan(root, files, errors)
    try:
        if stat.S_ISDIR(st.st_mode) and walk.enter(servers, SERVERS_DIR, st):
            walk.directory(servers, SERVERS_DIR)
    except _OutOfTime as e:
        assert budget is not None
        errors.append(ConfigError(str(e), 1, 1, budget.message()))
    return Scan(root, files, errors)


def git_commit(root: Path) -> str | None:
    """The commit the config comes from: a git-sync worktree name, else `git rev-parse HEAD`."""
    for part in reversed(root.parts):
        if _COMMIT.match(part):
            return part
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and _COMMIT.match(commit) else None
