"""Pieces shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from jackfield.core.desired import Snapshot, build_snapshot
from jackfield.errors import ConfigError, ConfigInvalid
from jackfield.settings import Settings, environment
from jackfield.shell.secret_files import SecretFiles
from jackfield.shell.sources import scan


def add_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=None,
        help="config dir holding agent.yaml and servers.d/ (default: JACKFIELD_CONFIG_DIR or .)",
    )


def config_dir(args: argparse.Namespace) -> Path:
    return args.dir if args.dir is not None else Settings().config_dir


def shown_path(root: Path, error: ConfigError, *, warning: bool = False) -> str:
    """An error (or warning) as a line an editor or CI annotator can jump to, relative to where
    we run: `path:line:col: message`, or `path:line:col: warning: message`."""
    path = os.path.normpath(os.path.join(root, error.path))
    label = "warning: " if warning else ""
    return f"{path}:{error.line}:{error.column}: {label}{error.message}"


def load(root: Path) -> Snapshot:
    """Scan and validate a config dir.

    Raises:
        ConfigInvalid: every error found.
    """
    found = scan(root)
    return build_snapshot(found.files, environment_of(root), found.errors)


def environment_of(root: Path) -> Mapping[str, str]:
    """What `${...}` expands from for the config in `root`: the process environment, and the
    secret files (`${file:...}`) read as `jackfield run` reads them."""
    return SecretFiles(root, environment()).environment()


def load_or_report(root: Path) -> Snapshot | None:
    """The snapshot after printing its warnings, or None after printing every error (one
    `path:line:col: [warning: ]message` per line)."""
    try:
        snapshot = load(root)
    except ConfigInvalid as e:
        for error in e.errors:
            print(shown_path(root, error))
        print(f"{len(e.errors)} error(s)", file=sys.stderr)
        return None
    except (OSError, RuntimeError, RecursionError) as e:
        # the scan reports what is in the dir as errors; this is the belt: a line, no traceback
        print(f"{root}: error: cannot read the config: {type(e).__name__}: {e}")
        print("1 error(s)", file=sys.stderr)
        return None
    for warning in snapshot.warnings:
        print(shown_path(root, warning, warning=True))
    return snapshot


__all__ = [
    "ConfigInvalid",
    "add_dir_argument",
    "config_dir",
    "load",
    "load_or_report",
    "shown_path",
]
