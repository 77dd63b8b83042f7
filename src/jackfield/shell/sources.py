"""Reading the config dir: which files count, their bytes, and the git commit if known.

Files are read fresh on every pass (level-triggered): the watcher only says "look again".
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jackfield.core.desired import AGENT_FILE
from jackfield.core.loading import MAX_FILE_BYTES, SourceFile
from jackfield.errors import ConfigError

SERVERS_DIR = "servers.d"
_SUFFIXES = (".yaml", ".yml")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Scan:
    root: Path
    """The config dir as resolved for this scan (git-sync flips its target)."""
    files: list[SourceFile]
    errors: list[ConfigError]


def is_config_name(name: str) -> bool:
    """Only `*.yaml`/`*.yml` not starting with '.' (skips `..data`, `.#x.yaml`, swap files)."""
    return name.endswith(_SUFFIXES) and not name.startswith(".")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _read(path: Path, rel: str, root: Path, errors: list[ConfigError]) -> SourceFile | None:
    try:
        real = path.resolve(strict=True)
        if not _inside(real, root):
            errors.append(
                ConfigError(rel, 1, 1, "symlink points outside the config dir; not followed")
            )
            return None
        with open(real, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None  # deleted between listing and reading: the next pass sees the new state
    except IsADirectoryError:
        return None
    except OSError as e:
        errors.append(ConfigError(rel, 1, 1, f"cannot read file: {e.strerror or e}"))
        return None
    return SourceFile(rel, data)


def scan(config_dir: Path) -> Scan:
    """Read agent.yaml and every config file under servers.d/ (recursively)."""
    errors: list[ConfigError] = []
    files: list[SourceFile] = []
    try:
        root = config_dir.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        return Scan(
            config_dir, [], [ConfigError(".", 1, 1, f"config dir {config_dir} does not exist")]
        )
    for name in (AGENT_FILE, "agent.yml"):
        if (root / name).exists():
            got = _read(root / name, AGENT_FILE, root, errors)
            if got:
                files.append(got)
            break
    servers = root / SERVERS_DIR
    if servers.is_dir():
        for dirpath, dirnames, filenames in os.walk(servers, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not is_config_name(name):
                    continue
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                got = _read(path, rel, root, errors)
                if got:
                    files.append(got)
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
