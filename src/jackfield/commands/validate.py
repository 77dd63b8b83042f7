"""`jackfield validate [DIR]`: exit 0 when valid, 1 with one `path:line:col: message` per error.

Warnings (`path:line:col: warning: message`, fields that have no effect) are printed and exit 0.
Among the errors: `${VAR}`s that are unset, and caller context names (`${caller.identity}`)
where there is no caller (a shared server's connection, instructions, prompts) or that name
nothing, each at its `${` (docs/config.md, "Caller context").
"""

from __future__ import annotations

import argparse

from jackfield.commands._common import add_dir_argument, config_dir, load_or_report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate", help="check the config files; one line per error or warning"
    )
    add_dir_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = config_dir(args)
    snapshot = load_or_report(root)
    if snapshot is None:
        return 1
    print(
        f"valid: agent {snapshot.agent.name}, {len(snapshot.servers)} server(s),"
        f" {len(snapshot.prompts)} prompt(s); revision {snapshot.revision}"
    )
    return 0
