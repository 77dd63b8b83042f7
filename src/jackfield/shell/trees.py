"""Process trees: everything a stdio server starts, including what leaves its process group.

A process group holds a server's `sh -c`, `npx` and `uvx` children, but a descendant that calls
`setsid()` or `setpgid()` (a daemonising helper, a detached browser) leaves it and `killpg`
misses it. Two ways to hold the whole tree, chosen once per manager (`Containment.start`):

- cgroup v2, when our own cgroup is writable and has `cgroup.kill` (Linux 5.14): each server
  process starts in a child cgroup of its own. A `sh` prelude moves itself in before it execs
  the server, so nothing can fork outside first. An unprivileged process cannot leave its
  cgroup, and `cgroup.kill` SIGKILLs every member at once. The warden gets the parent cgroup
  and kills all of it when jackfield dies.
- otherwise (a container with a read-only /sys/fs/cgroup), a subreaper shim: a small Python
  process with PR_SET_CHILD_SUBREAPER that forks the server. Every orphan below it is
  re-parented to it, so walking /proc down from the shim finds every descendant, however it
  detached. The shim forwards SIGTERM to the whole tree. It kills the tree on SIGUSR1, on
  jackfield's death (its PDEATHSIG) and when the server exits, then exits with the server's
  status. It costs a Python start (about 40 ms of CPU and 10 MB) per server process. The shim
  must never get SIGKILL while its tree lives: the tree would go to init. So its SIGKILL is
  asked for with SIGUSR1.

Members are signalled the moment a scan finds them. The warden, which outlives what it was
told, signals a shim only while its start time still matches: a pid can be reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

TreeMode = Literal["auto", "cgroup", "subreaper"]
SH = shutil.which("sh") or "/bin/sh"
SHIM = str(Path(__file__).resolve().with_name("subreaper.py"))
"""The subreaper shim, run by path (`-I -S`: no site, no user paths, a quick start)."""
_PRELUDE = 'echo 0 >"$0" && exec "$@"'
"""Run by `sh` as `sh -c PRELUDE <cgroup.procs> argv...`: `echo` is a builtin, so the shell
moves itself into the cgroup, then becomes the server."""


# --------------------------------------------------------------------------- /proc


def _stat(pid: int | str) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, start time) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    # stime cutime cstime priority nice threads itrealvalue starttime; comm may hold ")"
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19])


def processes() -> dict[int, tuple[str, int, int, int]]:
    """Every process on /proc: pid -> (state, ppid, pgid, start time)."""
    out: dict[int, tuple[str, int, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if entry.isdigit() and (info := _stat(entry)) is not None:
            out[int(entry)] = info
    return out


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in a process group, read from /proc."""
    if not os.path.isdir("/proc"):  # ask the kernel, zombies included
        return [pgid] if _killpg_alive(pgid) else []
    return [pid for pid, (state, _, group, _) in processes().items()
            if group == pgid and state != "Z"]  # fmt: skip


def _killpg_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --------------------------------------------------------------------------- trees


@dataclass
class Tree:
    """One server process and what it starts; this base holds only its process group."""

    pgid: int = 0
    """The leader's pid once spawned (it starts a session of its own)."""

    def spawned(self, pid: int) -> None:
        self.pgid = pid

    def server_pid(self) -> int | None:
        """The server process itself (the leader, unless a shim stands in between)."""
        return self.pgid or None

    def argv(self, argv: list[str]) -> list[str]:
        """What to exec instead of `argv`."""
        return argv

    @property
    def pdeathsig(self) -> bool:
        """Whether the leader should get SIGKILL when jackfield dies (the shim arms itself)."""
        return True

    def signal(self, sig: int) -> None:
        """SIGTERM (or SIGCONT) to the whole tree."""
        _killpg(self.pgid, sig)

    def kill(self) -> None:
        """SIGKILL to the whole tree."""
        _killpg(self.pgid, signal.SIGKILL)

    def alive(self) -> bool:
        return bool(group_members(self.pgid))

    def warden_lines(self) -> list[str]:
        """What the warden needs to kill this tree when jackfield dies."""
        return [f"g{self.pgid}"]

    def release(self) -> None:
        """Forget the tree once it is gone."""


@dataclass
class CgroupTree(Tree):
    path: Path = Path()

    def argv(self, argv: list[str]) -> list[str]:
        return [SH, "-c", _PRELUDE, str(self.path / "cgroup.procs"), *argv]

    def members(self) -> list[int]:
        try:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def signal(self, sig: int) -> None:
        super().signal(sig)
        for pid in self.members():  # exited processes leave cgroup.procs: no zombie is here
            with contextlib.suppress(OSError):
                os.kill(pid, sig)

    def kill(self) -> None:
        super().kill()
        with contextlib.suppress(OSError):
            (self.path / "cgroup.kill").write_text("1")

    def alive(self) -> bool:
        return bool(self.members()) or super().alive()

    def release(self) -> None:
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:  # a member in uninterruptible sleep; the warden retries at exit
            log.warning("cgroup %s not removed: %s", self.path, e.strerror)


@dataclass
class ShimTree(Tree):
    grace: float = 5.0
    """How long the shim gives the tree after SIGTERM before it SIGKILLs it by itself."""
    started: int = 0
    """The shim's start time, for the warden, which may signal it after its pid is reused."""

    def spawned(self, pid: int) -> None:
        super().spawned(pid)
        info = _stat(pid)
        self.started = info[3] if info is not None else 0

    _server: int | None = None

    def server_pid(self) -> int | None:
        """The shim's first child: its oldest one (orphans re-parented to it come later)."""
        if self._server is None and self.pgid:
            children = [(start, pid) for pid, (state, ppid, _, start) in processes().items()
                        if ppid == self.pgid and state != "Z"]  # fmt: skip
            self._server = min(children)[1] if children else None
        return self._server or self.pgid or None

    def argv(self, argv: list[str]) -> list[str]:
        return [sys.executable, "-I", "-S", SHIM, str(os.getpid()), str(self.grace), *argv]

    @property
    def pdeathsig(self) -> bool:
        return False

    def kill(self) -> None:
        """The shim kills its tree and exits; the rest of the group gets SIGKILL directly."""
        with contextlib.suppress(OSError):
            os.kill(self.pgid, signal.SIGUSR1)
            os.kill(self.pgid, signal.SIGCONT)
        for pid in group_members(self.pgid):
            if pid != self.pgid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def warden_lines(self) -> list[str]:
        return [f"s{self.pgid}:{self.started}"]


@dataclass
class Containment:
    """How this manager holds its servers' trees: `mode` after `start`, and the cgroup."""

    wanted: TreeMode = "auto"
    mode: Literal["cgroup", "subreaper", "group"] = "group"
    root: Path | None = None
    """The cgroup of this manager (one child per server process) in cgroup mode."""
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def start(self) -> None:
        if self.wanted != "subreaper":
            _sweep_stale_cgroups()
            self.root = await _probe_cgroup()
            if self.root is not None:
                self.mode = "cgroup"
                log.info("process trees: a cgroup per server process under %s", self.root)
                return
            if self.wanted == "cgroup":
                log.warning("cgroup v2 is not available or not writable: using a subreaper")
        self.mode = "subreaper" if os.path.isdir("/proc") else "group"
        log.info("process trees: %s", self.mode)

    def tree(self, grace: float) -> Tree:
        """A new tree for one server process.

        Raises:
            OSError: its cgroup could not be made (the caller retries like a failed spawn).
        """
        if self.mode == "cgroup" and self.root is not None:
            path = self.root / f"p{next(self._ids)}"
            path.mkdir()
            return CgroupTree(path=path)
        if self.mode == "subreaper":
            return ShimTree(grace=grace)
        return Tree()

    def close(self) -> None:
        """Remove the (empty) cgroup of this manager; the warden already killed what was in."""
        if self.root is not None:
            with contextlib.suppress(OSError):
                for child in self.root.iterdir():
                    if child.is_dir():
                        child.rmdir()
                self.root.rmdir()


def _own_cgroup() -> Path | None:
    """The cgroup v2 directory this process is in, or None (cgroup v1 only, not mounted)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None:
        return None
    for mount in mounts:
        left, _, right = mount.partition(" - ")
        fields = left.split()
        if right.split()[:1] != ["cgroup2"] or len(fields) < 5:
            continue
        root, point = fields[3].rstrip("/"), fields[4].replace("\\040", " ")
        if own == root or own.startswith(root + "/"):  # else our cgroup is outside this mount
            return Path(point) / own[len(root) :].lstrip("/")
    return None


def _sweep_stale_cgroups() -> None:
    """Remove the empty cgroups of managers that died with their warden (both SIGKILLed)."""
    own = _own_cgroup()
    if own is None:
        return
    with contextlib.suppress(OSError):
        for entry in own.glob("jackfield-*"):
            pid = entry.name.split("-")[1]
            if not pid.isdigit() or _stat(pid) is not None:
                continue
            with contextlib.suppress(OSError):
                for child in entry.iterdir():
                    if child.is_dir():
                        child.rmdir()
                entry.rmdir()


_MANAGERS = itertools.count()
"""Numbers the managers of this process (tests run many), each with a cgroup of its own."""


async def _probe_cgroup() -> Path | None:
    """Make this manager's cgroup and move a real `sh` into a child of it, or None."""
    own = _own_cgroup()
    if own is None:
        return None
    root = own / f"jackfield-{os.getpid()}-{next(_MANAGERS)}"
    probe = root / "probe"
    try:
        root.mkdir()
        probe.mkdir()
        if not (probe / "cgroup.kill").exists():
            raise OSError("no cgroup.kill (Linux before 5.14)")
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", _PRELUDE, str(probe / "cgroup.procs"), "true",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await proc.wait() != 0:
            raise OSError("cannot move a process into it")
        probe.rmdir()
    except OSError as e:
        log.debug("no cgroup for process trees under %s: %s", own, e)
        for path in (probe, root):
            with contextlib.suppress(OSError):
                path.rmdir()
        return None
    return root
