"""`jackfield validate [DIR] [--format text|github]`: exit 0 when valid, 1 with one line per
error.

`text` (the default): `path:line:col: message` per error; warnings (`path:line:col: warning:
message`, fields that have no effect) are printed and exit 0. `github`: the same errors and
warnings as GitHub Actions workflow commands (`::error file=...,line=...,col=...::message`), the
path relative to the working directory (run it from the repository root), so each lands on its
line of the pull request.
Among the errors: `${VAR}`s that are unset, and caller context names (`${caller.identity}`)
where there is no caller (a shared server's connection, instructions, prompts) or that name
nothing, each at its `${` (docs/config.md, "Caller context").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jackfield.commands._common import add_dir_argument, config_dir, load, load_or_report
from jackfield.core.annotations import Level, annotation
from jackfield.core.desired import Snapshot
from jackfield.errors import ConfigError, ConfigInvalid

_TITLE = "jackfield validate"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate", help="check the config files; one line per error or warning"
    )
    add_dir_argument(parser)
    parser.add_argument(
        "--format",
        choices=["text", "github"],
        default="text",
        help="text: path:line:col: message (default); github: GitHub Actions annotations",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = config_dir(args)
    snapshot = load_or_annotate(root) if args.format == "github" else load_or_report(root)
    if snapshot is None:
        return 1
    print(
        f"valid: agent {snapshot.agent.name}, {len(snapshot.servers)} server(s),"
        f" {len(snapshot.prompts)} prompt(s); revision {snapshot.revision}"
    )
    return 0


def load_or_annotate(root: Path) -> Snapshot | None:
    """`load_or_report`, with each error and warning printed as a workflow command."""
    try:
        snapshot = load(root)
    except ConfigInvalid as e:
        for error in e.errors:
            print(_annotate("error", root, error))
        print(f"{len(e.errors)} error(s)", file=sys.stderr)
        return None
    except (OSError, RuntimeError, RecursionError) as e:
        message = f"cannot read the config: {type(e).__name__}: {e}"
        print(annotation("error", message, file=_relative(root, "."), title=_TITLE))
        print("1 error(s)", file=sys.stderr)
        return None
    for warning in snapshot.warnings:
        print(_annotate("warning", root, warning))
    return snapshot


def _annotate(level: Level, root: Path, error: ConfigError) -> str:
    return annotation(
        level,
        error.message,
        file=_relative(root, error.path),
        line=error.line,
        col=error.column,
        title=_TITLE,
    )


def _relative(root: Path, path: str) -> str:
    """The file as GitHub names it: relative to where we run, with `/`."""
    return Path(os.path.relpath(os.path.join(root, path))).as_posix()
