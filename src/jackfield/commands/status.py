"""`jackfield status [--url URL] [--json] [--token T]`: what a running jackfield reports.

Exit 0 when it is ready, 1 when it answers but is not ready, 2 when the status cannot be read
(unreachable, refused token, not a jackfield status document).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from jackfield.core.dashboard import short_revision
from jackfield.settings import Settings

TIMEOUT_SECONDS = 10.0
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class Unreadable(Exception):
    """The status could not be fetched or parsed; the message says why, for a person."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        help="show a running jackfield's status; exit 0 ready, 1 not ready, 2 unreachable",
    )
    parser.add_argument(
        "--url",
        default=None,
        help="status server base URL (default: from JACKFIELD_STATUS_HOST/JACKFIELD_STATUS_PORT)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw /status JSON")
    parser.add_argument(
        "--token", default=None, help="bearer token (default: JACKFIELD_STATUS_TOKEN)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    url = args.url or default_url(settings.status_host, settings.status_port)
    token = args.token
    if token is None and settings.status_token is not None:
        token = settings.status_token.get_secret_value()
    try:
        raw, document = fetch(url, token)
    except Unreadable as e:
        print(f"jackfield status: {e}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(raw if raw.endswith("\n") else raw + "\n")
    else:
        sys.stdout.write(table(document))
    return 0 if document.get("ready") is True else 1


def default_url(host: str, port: int) -> str:
    host = WILDCARD_HOSTS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def fetch(base_url: str, token: str | None) -> tuple[str, dict[str, Any]]:
    """GET {base_url}/status; the body as text and parsed.

    Raises:
        Unreadable: connection failure, an HTTP error, or a body that is no status document.
    """
    url = base_url.rstrip("/") + "/status"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            raw = response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        hint = " (pass --token or set JACKFIELD_STATUS_TOKEN)" if e.code == 401 else ""
        raise Unreadable(f"{url} answered HTTP {e.code} {e.reason}{hint}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise Unreadable(f"cannot reach {url}: {reason}; is jackfield running?") from e
    except ValueError as e:
        raise Unreadable(f"bad status URL {url!r}: {e}") from e
    try:
        document = json.loads(raw)
    except ValueError as e:
        raise Unreadable(f"{url} did not answer JSON: {e}") from e
    if not isinstance(document, dict) or "ready" not in document:
        raise Unreadable(f"{url} did not answer a jackfield status document")
    return raw, document


def table(status: dict[str, Any]) -> str:
    """The status as a few header lines and one row per server."""
    config: dict[str, Any] = status.get("config") or {}
    lines = [
        f"overall:   {'READY' if status.get('ready') else 'NOT READY'}",
        f"revision:  {_short(config.get('applied_revision'))}"
        + (
            f" (attempted {_short(config.get('attempted_revision'))})"
            if config.get("attempted_revision") != config.get("applied_revision")
            else ""
        ),
    ]
    if config.get("git_commit"):
        lines.append(f"commit:    {str(config['git_commit'])[:12]}")
    for c in config.get("conditions") or []:
        message = f": {c.get('message')}" if c.get("message") else ""
        lines.append(f"condition: {c.get('type')}={c.get('status')} {c.get('reason')}{message}")
    for e in config.get("errors") or []:
        lines.append(
            f"error:     {e.get('file')}:{e.get('line')}:{e.get('column')}: {e.get('message')}"
        )
    rows = [["NAME", "STATE", "TRANSPORT", "TOOLS", "RESTARTS", "LAST ERROR"]]
    for s in status.get("servers") or []:
        rows.append(
            [
                _one_line(s.get("name")),
                _one_line(s.get("state")),
                _one_line(s.get("transport")),
                str(len(s.get("tools") or [])),
                str(s.get("restarts", 0)),
                _one_line(s.get("last_error")) or "-",
            ]
        )
    lines.append("")
    if len(rows) == 1:
        lines.append("no servers")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            cells = [cell.ljust(w) for cell, w in zip(r, widths, strict=False)]
            lines.append("  ".join([*cells, r[-1]]).rstrip())
    return "\n".join(_printable(line) for line in lines) + "\n"


def _short(revision: Any) -> str:
    return short_revision(str(revision)) if revision else "none"


def _one_line(text: Any, limit: int = 80) -> str:
    """Whitespace collapsed, cut to `limit` characters."""
    if not text:
        return ""
    flat = _printable(" ".join(str(text).split()))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _printable(text: str) -> str:
    """Control characters (terminal escapes from a server's error text) shown as '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)
