"""`jackfield test NAME [DIR] [--call TOOL --args JSON] [--timeout S]`: start one MCPServer of
the config exactly as `jackfield run` would (same ServerManager, same supervisor), show whether
it gets Ready and which tools it offers, and optionally call one of them.

Exit 0 when the server is Ready (and the call, if any, returned a result that is not an error);
1 otherwise: invalid config, unknown server, a server that does not get Ready, a failed call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jackfield.commands._common import (
    ConfigInvalid,
    add_dir_argument,
    config_dir,
    environment_of,
    load,
    shown_path,
)
from jackfield.core.connection import redact, resolve
from jackfield.core.status import SERVING_STATES

if TYPE_CHECKING:  # the manager (and the SDK behind it) loads only when this command runs
    from jackfield.core.catalog import Entry
    from jackfield.shell.servers import ServerManager
    from jackfield.shell.supervisor import Supervisor
    from jackfield.spec.models import MCPServerSpec

SETTLED = ("Ready", "Degraded", "Backoff", "Failed", "Disabled")
SHUTDOWN_ROOM = 15.0
"""Beyond the connect timeout: how long a failed attempt may take to be torn down and told."""


class Failure(Exception):
    """What went wrong, for a person; the command prints it and exits 1."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "test",
        help="start one MCP server from the config, list its tools, optionally call one",
        description="Start one MCPServer of the config through the same supervisor "
        "`jackfield run` uses. Exit 0 when it gets Ready (and the call succeeds), 1 otherwise.",
    )
    parser.add_argument("name", help="metadata.name of the MCPServer")
    add_dir_argument(parser)
    parser.add_argument(
        "--call", metavar="TOOL", help="call this tool (its exposed or its upstream name)"
    )
    parser.add_argument(
        "--args",
        metavar="JSON",
        default="{}",
        help='arguments of the call, a JSON object: {"a": 1}',
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=_seconds,
        default=None,
        help="seconds the server may take to start and answer (default: its timeouts.connect)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the supervisor's log")
    parser.set_defaults(func=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 3600]")
    return value


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        arguments = _arguments(args.args) if args.call else {}
        root = config_dir(args)
        spec = _spec(args.name, root, args.timeout)
        return asyncio.run(_test(args.name, spec, args.call, arguments, environment_of(root)))
    except Failure as e:
        print(f"jackfield test: {e}", file=sys.stderr)
        return 1


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise Failure(f"--args is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise Failure('--args must be a JSON object, like {"text": "hi"}')
    return value


def _spec(name: str, root: Path, timeout: float | None) -> MCPServerSpec:
    """The server's spec from the config, with `cwd` made absolute (it is relative to the
    config dir) and the connect timeout overridden by --timeout.

    Raises:
        Failure: the config is invalid, or has no such server.
    """
    try:
        snapshot = load(root)
    except ConfigInvalid as e:
        lines = "\n".join(shown_path(root, error) for error in e.errors)
        raise Failure(f"the config in {root} is invalid:\n{lines}") from None
    placed = snapshot.servers.get(name)
    if placed is None:
        known = ", ".join(sorted(snapshot.servers)) or "none"
        raise Failure(f"no MCPServer named {name!r} in {root} (known: {known})")
    spec = placed.document.spec
    update: dict[str, Any] = {}
    if spec.cwd is not None and not Path(spec.cwd).is_absolute():
        update["cwd"] = str((root / spec.cwd).resolve())
    if timeout is not None:
        update["timeouts"] = spec.timeouts.model_copy(update={"connect": timeout})
    return spec.model_copy(update=update) if update else spec


async def _test(
    name: str,
    spec: MCPServerSpec,
    call: str | None,
    arguments: dict[str, Any],
    env: Mapping[str, str],
) -> int:
    from jackfield.shell.servers import ServerManager

    try:
        connection = resolve(spec, env)
    except KeyError as e:
        raise Failure(f"{e.args[0]} cannot be expanded (unset, or an unreadable file)") from None
    async with ServerManager() as manager:
        settled = asyncio.Event()

        def watch(_: object) -> None:
            if manager.states().get(name) in SETTLED:
                settled.set()

        manager.listeners.append(watch)
        started = time.monotonic()
        await manager.put(name, spec, connection, reconnect=True)
        watch(None)
        try:
            async with asyncio.timeout(spec.timeouts.connect + SHUTDOWN_ROOM):
                await settled.wait()
        except TimeoutError:
            pass
        supervisor = manager.supervisor(name)
        assert supervisor is not None
        seconds = time.monotonic() - started
        entries = sorted(
            (e for e in manager.catalog.entries.values() if e.server == name),
            key=lambda e: e.name,
        )
        _report_auth(supervisor)
        if supervisor.state not in SERVING_STATES:
            _report_failure(supervisor, seconds)
            return 1
        withheld = next((s.withheld for s in manager.statuses() if s.name == name), ())
        _report_ready(supervisor, seconds, entries, withheld)
        if call is None:
            return 0
        return await _call(manager, name, call, arguments, entries)


def _report_ready(
    supervisor: Supervisor, seconds: float, entries: list[Entry], withheld: tuple[str, ...]
) -> None:
    shown = supervisor.status((), ()).extra  # the server's own words, secrets masked
    details = [f"protocol {shown.get('protocol_version')}"]
    info: dict[str, Any] = shown.get("server_info") or {}
    if info.get("name"):
        details.append(f"server {info['name']} {info.get('version', '')}".rstrip())
    if supervisor.pid is not None:
        details.append(f"pid {supervisor.pid}")
    print(f"{supervisor.name}: {supervisor.state} in {seconds:.1f} s ({', '.join(details)})")
    print(f"tools ({len(entries)}):")
    width = max((len(e.name) for e in entries), default=0)
    for entry in entries:
        summary = entry.description.strip().splitlines()[0] if entry.description.strip() else ""
        print(f"  {entry.name:<{width}}  {summary}".rstrip())
    if withheld:  # listed upstream but not offered: what the operator has to fix or exclude
        print(f"withheld ({len(withheld)}):")
        for note in withheld:
            print(f"  {note}")


def _report_auth(supervisor: Supervisor) -> None:
    """The auth flow step by step (discovery, token, expiry), then its outcome; no secret is
    in either (a token endpoint's words are masked like the server's)."""
    credentials = supervisor.credentials
    status = credentials.auth_status if credentials is not None else None
    if credentials is None or status is None:
        return
    secrets = supervisor.connection.secrets
    print(f"auth ({status.kind}):")
    for step in credentials.steps:
        print(f"  {redact(step, secrets)}")
    shown = status.to_json()
    if shown["expires_at"] is not None:
        print(f"  token expires at {shown['expires_at']}")
    if status.last_outcome not in (None, "ok"):
        print(f"  last outcome: {redact(status.last_outcome or '', secrets)}")


def _report_failure(supervisor: Supervisor, seconds: float) -> None:
    state = supervisor.state
    if state in ("Connecting", "Pending"):
        what = f"not Ready after {seconds:.1f} s (still {state.lower()})"
    else:
        what = state
    print(f"{supervisor.name}: {what}", file=sys.stderr)
    shown = supervisor.status((), ())  # secrets masked
    if shown.last_error:
        print(f"last error: {shown.last_error}", file=sys.stderr)
    tail = shown.stderr_tail
    if tail:
        print("stderr (last lines):", file=sys.stderr)
        for line in tail.splitlines():
            print(f"  {line}", file=sys.stderr)


async def _call(
    manager: ServerManager,
    name: str,
    tool: str,
    arguments: dict[str, Any],
    entries: list[Entry],
) -> int:
    entry = next((e for e in entries if e.name == tool), None) or next(
        (e for e in entries if e.upstream == tool), None
    )
    if entry is None:
        names = ", ".join(e.name for e in entries) or "none"
        print(f"jackfield test: {name} has no tool {tool!r} (tools: {names})", file=sys.stderr)
        return 1
    from jackfield.shell.servers import text_of

    started = time.monotonic()
    result = await manager.call(entry.name, arguments)
    outcome = "error" if result.is_error else "ok"
    print(f"call {entry.name} -> {outcome} in {time.monotonic() - started:.2f} s")
    print(text_of(result))
    return 1 if result.is_error else 0
