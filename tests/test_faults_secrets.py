"""A planted secret in every form a server or a client can give it (raw, percent-encoded,
base64 at each alignment inside a larger payload, JSON-escaped, a multi-line PEM key on
stderr, echoed in serverInfo, in a URL query) reaches no status response, log line (at DEBUG
either, from the first connect on), database row or `jackfield test` output; audit rows are
capped; and a JSON-RPC error the server answers with is reported as its answer, never as a
lost connection."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from jackfield.core.redaction import MASK
from jackfield.shell.servers import ServerManager, text_of
from tests.conftest import JACKFIELD, REPO
from tests.support.manager import checked_manager, ready, serving, stdio_spec
from tests.support.process import Jackfield, hub_client, jackfield_run, plain_config, poll

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

SECRET = 'sk-plant Ωd/7f+3a=9c"21'
"""A space, a quote, a non-ASCII letter and `/ + =`: every encoding writes it differently."""
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
    "-----END PRIVATE KEY-----"
)
BODY = PEM.splitlines()[1:-1]
HIDDEN = "tk-hidden Ωq/8e+1b=7d'34"
"""A second secret, used only as a hidden argument's value (issue #16)."""


def b64(data: bytes, urlsafe: bool = False) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()


def in_payload(before: int) -> str:
    """The secret base64-encoded inside a larger payload, `before` bytes into it."""
    return b64(b"{" * before + b'{"token": "' + SECRET.encode() + b'"}')


def forms(secret: str = SECRET) -> dict[str, str]:
    """Each form a reader could recover the secret (and the PEM key) from, by name."""
    found = {
        "raw": secret,
        "percent": quote(secret, safe=""),
        "percent, slash kept": quote(secret),
        "percent, lower-case": quote(secret, safe="").lower(),
        "form-encoded": quote_plus(secret),
        "httpx query": quote(secret, safe="".join(chr(i) for i in range(0x21, 0x7F) if i != 0x22)),
        "JSON-escaped": json.dumps(secret)[1:-1],
        "JSON-escaped, Unicode kept": json.dumps(secret, ensure_ascii=False)[1:-1],
        "base64": b64(secret.encode()),
        "base64 URL-safe": b64(secret.encode(), urlsafe=True).rstrip("="),
        "PEM": PEM,
        **{f"PEM line {i}": line for i, line in enumerate(BODY)},
    }
    for before in range(3):
        # the characters made of the secret's bits alone, whatever its neighbours
        found[f"base64 at alignment {before}"] = b64(b"\0" * before + secret.encode())[4:-4]
    return found


def leaks(text: str, secrets: tuple[str, ...] = (SECRET,)) -> list[str]:
    return [f"{name} of {s[:2]}" if s != SECRET else name
            for s in secrets for name, form in forms(s).items() if form in text]  # fmt: skip


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document, keys included (so JSON escapes are undone)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def json_leaks(body: str, secrets: tuple[str, ...] = (SECRET,)) -> list[str]:
    return leaks(body, secrets) + [
        f"{name} (decoded)" for s in strings(json.loads(body)) for name in leaks(s, secrets)
    ]


LEAKY = r"""
import base64, json, os, sys, urllib.parse
s, pem = os.environ["LEAK"], os.environ["PEM"]
lines = [s, urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s).lower(),
         json.dumps({"token": s}), base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")]
for before in range(3):
    blob = b"{" * before + b'{"token": "' + s.encode() + b'"}'
    lines.append(base64.b64encode(blob).decode())
for line in lines:
    sys.stderr.write("leak: " + line + "\n")
sys.stderr.write("key follows\n" + pem + "\nkey done\n")
sys.stderr.flush()
if sys.argv[1] == "crash":
    sys.stderr.write("bad key line " + pem.splitlines()[2] + "\n")
    sys.exit(3)
os.execv(sys.executable, [sys.executable, "-m", "tests.servers.echo", *sys.argv[2:]])
"""


def leaky_yaml(name: str, script: Path, mode: str, extra: str = "") -> str:
    """A stdio server that writes the secret in each form (and the PEM key) to stderr, then
    serves tests/servers/echo.py named after the secret (`serve`) or exits with 3 (`crash`)."""
    return (
        f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\n"
        f"spec:\n  command: {sys.executable}\n"
        f"  args: ['{script}', {mode}, --name, '${{PLANTED}}', --tools, echo]\n"
        f"  cwd: {REPO}\n  env: {{LEAK: '${{PLANTED}}', PEM: '${{PLANTED_PEM}}'}}\n"
        f"  timeouts: {{connect: 30}}\n{extra}"
    )


def database_text(path: Path) -> str:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            str(value)
            for table in tables
            for row in db.execute(f'SELECT * FROM "{table}"')
            for value in row
        )


def audit_rows(path: Path, server: str) -> list[tuple[str | None, str | None]]:
    with sqlite3.connect(path) as db:
        query = "SELECT arguments, result FROM tool_calls WHERE server = ?"
        return list(db.execute(query, (server,)))


def crash_stored(path: Path) -> bool:
    with sqlite3.connect(path) as db:
        query = "SELECT last_error FROM server_state WHERE name = 'crashy'"
        return any(error for (error,) in db.execute(query))


def surface(jackfield: Jackfield, *shown: str) -> dict[str, str]:
    """The status documents of a running jackfield by path: /status, /status/servers/NAME for
    each name in `shown`, and each other path in it as is (`/metrics`)."""
    paths = ["/status"] + [n if n.startswith("/") else f"/status/servers/{n}" for n in shown]
    return {path: jackfield.get(path)[1].decode() for path in paths}


def server(status: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in status["servers"] if s["name"] == name)
    return found


async def test_a_secret_in_every_form_reaches_no_status_log_line_or_row(tmp_path: Path) -> None:
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY)
    async with serving("http") as (url, _):
        servers = {
            "leaky": leaky_yaml("leaky", script, "serve", extra="  audit: full\n"),
            "crashy": leaky_yaml("crashy", script, "crash"),
            "remote": (
                "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: remote}\n"
                f"spec:\n  transport: http\n  url: '{url}?key=${{PLANTED}}'\n"
            ),
        }
        config = plain_config(tmp_path / "config", servers)
        env = {"PLANTED": SECRET, "PLANTED_PEM": PEM, "JACKFIELD_LOG_LEVEL": "DEBUG"}
        with jackfield_run(tmp_path / "run", config, env=env) as jackfield:
            await asyncio.to_thread(jackfield.wait_ready)
            await asyncio.to_thread(jackfield.servers_ready, "leaky", "remote")
            async with hub_client(jackfield.hub_url) as client:
                planted = [
                    f for name, f in forms().items() if not name.startswith(("PEM", "base64 at"))
                ]
                text = " ".join([*planted, *(in_payload(before) for before in range(3))])
                got = await client.call_tool("leaky_echo", {"text": text})
                await client.call_tool("leaky_echo", {"text": SECRET + "z" * 100_000 + SECRET})
                await client.call_tool("remote_echo", {"text": "over http"})
            assert got.content[0].type == "text" and got.content[0].text == text, "delivered"
            status = await asyncio.to_thread(
                jackfield.until,
                lambda s: server(s, "crashy")["last_error"] and server(s, "leaky")["stderr_tail"],
                what="the crashing server's error and the leaky server's stderr in status",
            )
            responses = surface(jackfield, "leaky", "crashy", "remote")
            dashboard = jackfield.get("/")[1].decode()
            cli = subprocess.run(
                [str(JACKFIELD), "status", "--json", "--url",
                 f"http://127.0.0.1:{jackfield.status_port}"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            db = jackfield.workdir / "state.db"
            await asyncio.to_thread(poll, lambda: len(audit_rows(db, "leaky")) >= 2, what="audit")
            await asyncio.to_thread(poll, lambda: crash_stored(db), what="server state stored")
            assert jackfield.stop() == 0

    records = jackfield.log_records()
    run = tmp_path / "run"
    found = {
        **{path: json_leaks(body) for path, body in responses.items()},
        "dashboard": leaks(dashboard),
        "status --json": json_leaks(cli.stdout),
        "log file": leaks((run / "jackfield.log").read_text()),
        "log records": [name for r in records for s in strings(r) for name in leaks(s)],
        "database": leaks(database_text(run / "state.db")),
    }
    assert {where: forms for where, forms in found.items() if forms} == {}

    leaky = server(status, "leaky")
    assert leaky["server_info"]["name"] == MASK, "the echoed name is shown, masked"
    assert f"leak: {MASK}" in leaky["stderr_tail"]
    assert "key follows\n" + "\n".join([MASK] * 5) + "\nkey done" in leaky["stderr_tail"]
    crashy = server(status, "crashy")
    assert crashy["last_error"] == f"process exited with code 3: bad key line {MASK}"
    assert any(r["level"] == "DEBUG" for r in records), "DEBUG logging was on"
    requests = [r["msg"] for r in records if r["msg"].startswith("HTTP Request: POST")]
    assert requests and all(f"?key={MASK}" in m for m in requests), requests[:3]
    echoes = [(a or "", r or "") for a, r in audit_rows(run / "state.db", "leaky")]
    assert len(echoes) == 2
    for arguments, result in echoes:
        assert MASK in arguments and MASK in result
        assert len(arguments) < 8192 + 100 and len(result) < 8192 + 100
    assert any(a.endswith("more characters cut]") for a, _ in echoes), "the big one is cut"


def caller_yaml(name: str, script: Path, extra: str) -> str:
    """The leaky server as an identity-scoped `scope: session` server: the secret comes from
    the session's caller context (an attribute), not from the environment."""
    return (
        f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\n"
        f"spec:\n  command: {sys.executable}\n  scope: session\n"
        f"  args: ['{script}', serve, --name, '${{caller.attributes.token:-x}}', --tools, echo]\n"
        f"  cwd: {REPO}\n  timeouts: {{connect: 30}}\n"
        "  env: {LEAK: '${caller.attributes.token}', PEM: '${caller.attributes.pem}'}\n"
        f"{extra}"
    )


async def test_a_secret_from_the_caller_context_reaches_no_status_log_line_or_row(
    tmp_path: Path,
) -> None:
    """Issue #16: values expanded from a session's caller context into a connection (env,
    args, url) or a hidden argument are secrets in every form; the audit row keeps the caller's
    identity and room, and nothing else of the context."""
    from jackfield.core.caller_context import CONTEXT_HEADER, CallerContext

    script = tmp_path / "leaky.py"
    script.write_text(LEAKY)
    caller = CallerContext(
        identity="alice-0042", name="Alice", room="support-room",
        attributes={"token": SECRET, "pem": PEM, "key": HIDDEN},
    )  # fmt: skip
    async with serving("http") as (url, _):
        servers = {
            "scoped": caller_yaml("scoped", script, "  audit: full\n"),
            "hidden": (
                "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: hidden}\n"
                f"spec:\n  command: {sys.executable}\n  args: [-m, tests.servers.echo]\n"
                f"  cwd: {REPO}\n  audit: full\n"
                "  tools: {arguments: {echo: {text: 'token ${caller.attributes.key}'}}}\n"
            ),
            "remote": (
                "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: remote}\n"
                f"spec:\n  transport: http\n  scope: session\n"
                f"  url: '{url}?key=${{caller.attributes.token:-none}}'\n"
            ),
        }
        config = plain_config(tmp_path / "config", servers)
        env = {"JACKFIELD_LOG_LEVEL": "DEBUG"}
        headers = {CONTEXT_HEADER: caller.to_header(), "x-jackfield-session": "job-leak"}
        with jackfield_run(tmp_path / "run", config, env=env) as jackfield:
            await asyncio.to_thread(jackfield.wait_ready)
            await asyncio.to_thread(jackfield.servers_ready, "scoped", "hidden", "remote")
            async with hub_client(jackfield.hub_url, headers=headers) as client:
                scoped = await client.call_tool("scoped_echo", {"text": "from the scoped one"})
                hidden = await client.call_tool("hidden_echo", {"text": "the LLM's own"})
                remote = await client.call_tool("remote_echo", {"text": "over http"})
            assert not scoped.is_error and not remote.is_error, (scoped, remote)
            assert hidden.content[0].type == "text"
            assert hidden.content[0].text == f"token {HIDDEN}", "the hidden argument was sent"
            db = jackfield.workdir / "state.db"
            await asyncio.to_thread(
                poll, lambda: all(audit_rows(db, n) for n in ("scoped", "hidden", "remote")),
                what="audit rows of the three calls",
            )  # fmt: skip
            responses = surface(jackfield, "scoped", "hidden", "remote", "/metrics")
            dashboard = jackfield.get("/")[1].decode()
            assert jackfield.stop() == 0

    records = jackfield.log_records()
    run = tmp_path / "run"
    both = (SECRET, HIDDEN)
    found = {
        **{path: json_leaks(body, both) for path, body in responses.items() if path != "/metrics"},
        "/metrics": leaks(responses["/metrics"], both),
        "dashboard": leaks(dashboard, both),
        "log file": leaks((run / "jackfield.log").read_text(), both),
        "log records": [name for r in records for s in strings(r) for name in leaks(s, both)],
        "database": leaks(database_text(run / "state.db"), both),
    }
    assert {where: forms for where, forms in found.items() if forms} == {}
    requests = [r["msg"] for r in records if r["msg"].startswith("HTTP Request: POST")]
    assert any(f"?key={MASK}" in m for m in requests), requests[:3]
    with sqlite3.connect(run / "state.db") as stored_db:
        rows = list(stored_db.execute("SELECT server, caller, room, arguments FROM tool_calls"))
    assert {(server, who, room) for server, who, room, _ in rows} == {
        (n, "alice-0042", "support-room") for n in ("scoped", "hidden", "remote")
    }, "the audit keeps who called, from which room"
    hidden_arguments = next(a for server, _, _, a in rows if server == "hidden")
    assert f"token {MASK}" in hidden_arguments
    stored = database_text(run / "state.db")
    assert "Alice" not in stored.replace("alice-0042", ""), "the caller's name is not kept"


def test_jackfield_test_shows_a_server_named_after_a_secret_masked(tmp_path: Path) -> None:
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY)
    config = plain_config(tmp_path / "config", {"leaky": leaky_yaml("leaky", script, "serve")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("JACKFIELD_")}
    env.update(PLANTED=SECRET, PLANTED_PEM=PEM, JACKFIELD_LOG_LEVEL="DEBUG")
    done = subprocess.run(
        [str(JACKFIELD), "test", "leaky", str(config)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=80, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"server {MASK}" in done.stdout
    assert leaks(done.stdout) == [] and leaks(done.stderr) == []


ANSWERS_WITH_ERROR = r"""
import json, sys
code, message = int(sys.argv[1]), sys.argv[2]
TOOL = {"name": "quota", "description": "Always over quota.", "inputSchema": {"type": "object"}}
for raw in sys.stdin:
    request = json.loads(raw)
    if "id" not in request:
        continue
    method = request.get("method")
    if method == "initialize":
        version = request["params"].get("protocolVersion", "2025-06-18")
        answer = {"result": {"protocolVersion": version, "capabilities": {"tools": {}},
                             "serverInfo": {"name": "quota", "version": "1"}}}
    elif method == "tools/list":
        answer = {"result": {"tools": [TOOL]}}
    elif method == "ping":
        answer = {"result": {}}
    elif method == "tools/call":
        answer = {"error": {"code": code, "message": message}}
    else:
        answer = {"error": {"code": -32601, "message": "Method not found"}}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request["id"], **answer}) + "\n")
    sys.stdout.flush()
"""


@pytest.fixture
async def manager() -> AsyncIterator[ServerManager]:
    async with checked_manager() as manager:
        yield manager


@pytest.mark.parametrize("code", [-32000, -32603, 1234], ids=["server-error", "internal", "app"])
async def test_an_error_the_server_answers_with_is_its_answer_not_a_lost_connection(
    manager: ServerManager, tmp_path: Path, code: int
) -> None:
    script = tmp_path / "answers.py"
    script.write_text(textwrap.dedent(ANSWERS_WITH_ERROR))
    message = f"quota exceeded for key {SECRET}, try again tomorrow"
    spec = stdio_spec(sys.executable, "-S", str(script), str(code), message, env={"K": "${K}"})
    supervisor = await ready(manager, "quota", spec, env={"K": SECRET})
    for _ in range(5):
        result = await manager.call("quota_quota", {})
        assert result.is_error
        assert text_of(result) == (
            "The quota tool from quota could not be used: the server answered with an error: "
            f"quota exceeded for key {MASK}, try again tomorrow."
        )
    assert supervisor.state == "Ready" and supervisor.restarts == 0
    assert supervisor.last_error is None
