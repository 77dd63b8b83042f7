"""`jackfield plan [DIR] [--database-url URL] [--exit-code]`: what applying the files would change.

Compares the files with what the store last applied, the way the controller plans its store side,
and writes nothing but the schema (opening the store migrates it). Exit codes: 0 no changes (or
changes without --exit-code), 1 invalid config or store unavailable, 2 changes with --exit-code.
Config warnings are printed first, as `jackfield validate` prints them; they change no exit code.
A server created or updated that is not the same for every caller (identity-scoped, restricted
to some callers, hiding arguments) says so under its line (core/plan_render.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from jackfield.commands._common import add_dir_argument, config_dir, load_or_report
from jackfield.core.desired import Snapshot
from jackfield.core.plan_render import render
from jackfield.core.planning import plan
from jackfield.errors import StoreUnavailable
from jackfield.settings import Settings
from jackfield.shell.store import Store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("plan", help="show what applying the config would change in the store")
    add_dir_argument(parser)
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL of the store (default: JACKFIELD_DATABASE_URL or the SQLite file)",
    )
    parser.add_argument(
        "--exit-code", action="store_true", help="exit 2 when there are changes, 0 when none"
    )
    parser.set_defaults(func=run)


async def _render(snapshot: Snapshot, url: str) -> tuple[str, bool]:
    store = await Store.open(url)
    try:
        applied = await store.applied()
    finally:
        await store.close()
    changes = plan(snapshot, applied)
    return render(changes, applied), not changes.empty


def run(args: argparse.Namespace) -> int:
    root = config_dir(args)
    snapshot = load_or_report(root)
    if snapshot is None:
        return 1
    url = args.database_url or Settings().database_url
    try:
        text, changed = asyncio.run(_render(snapshot, url))
    except StoreUnavailable as e:
        print(f"store unavailable: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    return 2 if changed and args.exit_code else 0
