"""`jackfield audit [--server S] [--caller ID] [--since 1h] [--limit N] [--json]
[--database-url URL]`: the tool-call audit trail, newest first.

When any row shown has a caller context, the table has CALLER and ROOM columns: the identity
and room of the session that made each call (`-` when it had none). `--caller` keeps the rows
of one identity (exact).

Reads the store's `tool_calls` rows (opening the store migrates its schema, nothing else is
written). Exit codes: 0 shown (possibly no rows), 1 store unavailable, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
from datetime import datetime, timedelta
from typing import Any

from jackfield.core.status import rfc3339, utcnow
from jackfield.errors import StoreUnavailable
from jackfield.settings import Settings
from jackfield.shell.store import AuditRecord, Store

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
COLUMNS = ("TIME", "SERVER", "TOOL", "OUTCOME", "MS", "IN", "OUT", "CALLER", "ROOM", "SESSION")


def duration(text: str) -> timedelta:
    """`30s`, `30m`, `1h`, `2d`, `1w` as a timedelta.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    match = _DURATION.match(text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number and a unit, like 30m, 1h or 2d"
        )
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def positive(text: str) -> int:
    """Raises: argparse.ArgumentTypeError for anything but a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("audit", help="show the tool-call audit trail, newest first")
    parser.add_argument("--server", default=None, help="only calls to this MCPServer")
    parser.add_argument(
        "--caller", default=None, help="only calls of this caller identity (exact match)"
    )
    parser.add_argument(
        "--since", type=duration, default=None, help="only calls this recent: 30m, 1h, 2d, 1w"
    )
    parser.add_argument(
        "--limit", type=positive, default=100, help="at most this many rows (default 100)"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON array")
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL of the store (default: JACKFIELD_DATABASE_URL or the SQLite file)",
    )
    parser.set_defaults(func=run)


async def _read(
    url: str, server: str | None, since: datetime | None, limit: int, caller: str | None
) -> list[AuditRecord]:
    store = await Store.open(url)
    try:
        return await store.audit(server=server, since=since, limit=limit, caller=caller)
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    url = args.database_url or Settings().database_url
    since = utcnow() - args.since if args.since is not None else None
    try:
        records = asyncio.run(_read(url, args.server, since, args.limit, args.caller))
    except StoreUnavailable as e:
        print(f"store unavailable: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([as_json(r) for r in records], indent=2))
    else:
        sys.stdout.write(table(records))
    return 0


def as_json(record: AuditRecord) -> dict[str, Any]:
    """One row with its time as RFC 3339; arguments and result are null unless `audit: full`;
    `confirmation` (the caller was asked first) as an object, null when nobody was asked."""
    row = {f: getattr(record, f) for f in AuditRecord.__dataclass_fields__}
    row["at"] = rfc3339(record.at)
    if record.confirmation is not None:
        with contextlib.suppress(ValueError):  # a row written by hand stays as it is
            row["confirmation"] = json.loads(record.confirmation)
    return row


def table(records: list[AuditRecord]) -> str:
    """Aligned columns, one line per call; the session is the agent's, else the hub's. CALLER
    and ROOM only when a row has either (a deployment without callers has no use for them)."""
    if not records:
        return "no tool calls recorded\n"
    callers = any(r.caller is not None or r.room is not None for r in records)
    rows: list[tuple[str, ...]] = [
        COLUMNS,
        *(
            (
                rfc3339(r.at) or "",
                r.server,
                r.tool,
                r.outcome,
                f"{r.duration_ms:.0f}",
                str(r.bytes_in),
                str(r.bytes_out),
                r.caller or "-",
                r.room or "-",
                r.agent_session or r.hub_session or "-",
            )
            for r in records
        ),
    ]
    if not callers:
        rows = [row[:7] + row[9:] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )
