"""The hub per caller: each hub session's context (CONTEXT_HEADER) decides what it lists, reads
and may call. A real stack (watcher, reconciler, manager, hub) with real server processes, and
plain MCP SDK clients of both protocol eras, each with its own context."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import mcp_types
import pytest
from mcp import Client

from jackfield.core.agent_view import AGENT_VIEW_URI, EVENTS_PATH, PROMPT_NAME, SESSION_HEADER
from jackfield.core.caller_context import (
    ANONYMOUS,
    CONTEXT_HEADER,
    MAX_CONTEXT_BYTES,
    CallerContext,
)
from jackfield.core.catalog import Entry
from jackfield.core.desired import build_snapshot
from jackfield.core.loading import SourceFile
from jackfield.shell.hub_sessions import Views
from jackfield.shell.servers import CallEvent
from tests.conftest import REPO
from tests.support.clients import INITIALIZE, Heard, hub_client, process_gone, text
from tests.support.controller import until
from tests.support.live import TOKEN, Stack, echo_server, live_stack

pytestmark = pytest.mark.timeout(90)

ALICE = CallerContext(identity="alice", name="Alice", attributes={"tenant": "acme"}, room="r1")
BOB = CallerContext(identity="bob", name="Bob", attributes={"tenant": "globex"}, room="r2")
CAROL = CallerContext(identity="carol", attributes={"tenant": "acme"}, room="r3")
ACME_ONLY = "  access:\n    callers:\n      - attributes: {tenant: acme}\n"
ACME_PROMPT = "Acme orders are looked up with acme_echo."


def caller_server(name: str, extra: str = "") -> str:
    """An MCPServer document running tests/servers/caller.py."""
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f'spec:\n  command: {sys.executable}\n  args: ["-m", "tests.servers.caller"]\n'
        f"  cwd: {REPO}\n{extra}"
    )


def headers_of(context: CallerContext | None, session: str | None = None) -> dict[str, str]:
    headers = {CONTEXT_HEADER: context.to_header()} if context is not None else {}
    if session is not None:
        headers[SESSION_HEADER] = session
    return headers


@contextlib.asynccontextmanager
async def caller_client(
    stack: Stack,
    context: CallerContext | None,
    *,
    session: str | None = None,
    mode: Literal["legacy", "auto"] = "legacy",
    heard: Heard | None = None,
) -> AsyncIterator[Client]:
    """A plain MCP SDK client of the hub, its requests carrying `context` (None: no header)."""
    headers = headers_of(context, session)
    async with hub_client(stack.hub.url, mode=mode, headers=headers, on_message=heard) as client:
        yield client


async def names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def instructions(client: Client) -> str:
    prompt = await client.get_prompt(PROMPT_NAME)
    content = prompt.messages[0].content
    assert isinstance(content, mcp_types.TextContent)
    return content.text


async def agent_view(client: Client) -> dict[str, Any]:
    result = await client.read_resource(AGENT_VIEW_URI)
    contents = result.contents[0]
    assert isinstance(contents, mcp_types.TextResourceContents)
    view: dict[str, Any] = json.loads(contents.text)
    return view


@pytest.fixture
async def tenants(config_dir: Path) -> AsyncIterator[Stack]:
    """`acme` serves callers of tenant acme only; `open` serves everyone."""
    servers = config_dir / "servers.d"
    servers.joinpath("acme.yaml").write_text(
        echo_server("acme", "--tools", "echo", extra=f"  prompt: {ACME_PROMPT}\n{ACME_ONLY}")
    )
    servers.joinpath("open.yaml").write_text(
        echo_server("open", "--tools", "add", extra="  prompt: Add with open_add.\n")
    )
    async with live_stack(config_dir) as stack:
        await stack.ready("acme", "open")
        await until(lambda: "acme_echo" in {t.name for t in stack.hub.tools()}, what="served")
        yield stack


# --- who sees and may call a restricted server ---------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_caller_restricted_server_is_listed_and_callable_for_admitted_callers_only(
    tenants: Stack, mode: Literal["legacy", "auto"]
) -> None:
    events: list[CallEvent] = []
    tenants.manager.observer = events.append
    async with (
        caller_client(tenants, ALICE, mode=mode) as alice,
        caller_client(tenants, BOB, mode=mode) as bob,
    ):
        assert await names(alice) == {"acme_echo", "open_add"}
        assert await names(bob) == {"open_add"}

        allowed = await alice.call_tool("acme_echo", {"text": "for alice"})
        assert not allowed.is_error and text(allowed) == "for alice"
        refused = await bob.call_tool("acme_echo", {"text": "for bob"})
        assert refused.is_error
        assert "not available" in text(refused) and "for bob" not in text(refused)
        assert not (await bob.call_tool("open_add", {"a": 1, "b": 2})).is_error

    audited = [(e.tool, e.outcome, e.caller) for e in events]
    assert ("echo", "ok", "alice") in audited
    assert ("echo", "rejected:access", "bob") in audited, audited
    assert ("add", "ok", "bob") in audited


async def test_caller_restricted_servers_prompt_is_in_its_callers_instructions_only(
    tenants: Stack,
) -> None:
    async with (
        caller_client(tenants, ALICE, session="job-alice") as alice,
        caller_client(tenants, BOB, session="job-bob") as bob,
        caller_client(tenants, CAROL, session="job-carol") as carol,
    ):
        assert ACME_PROMPT in await instructions(alice)
        assert ACME_PROMPT not in await instructions(bob)
        assert "Add with open_add." in await instructions(bob)

        seen = {who: await agent_view(c) for who, c in (("a", alice), ("b", bob), ("c", carol))}
        assert ACME_PROMPT in seen["a"]["instructions"]
        assert ACME_PROMPT not in seen["b"]["instructions"]
        assert seen["a"]["revision"] != seen["b"]["revision"]
        assert seen["a"]["revision"] == seen["c"]["revision"], "the same servers: one view"
        # the prompt listing names each caller's own instructions revision
        [listed] = (await bob.list_prompts()).prompts
        assert seen["b"]["instructions_revision"] in (listed.description or "")

        by_revision = tenants.hub.agent_sessions_by_revision()
        assert by_revision == {seen["a"]["revision"]: 2, seen["b"]["revision"]: 1}
        # callers the same servers admit share what they are served
        assert tenants.hub.served("job-alice") is tenants.hub.served("job-carol")
        assert tenants.hub.served("job-bob") is not tenants.hub.served("job-alice")


async def test_caller_without_a_context_sees_no_restricted_server(tenants: Stack) -> None:
    async with caller_client(tenants, None) as nobody:
        assert await names(nobody) == {"open_add"}
        assert ACME_PROMPT not in await instructions(nobody)
        refused = await nobody.call_tool("acme_echo", {"text": "x"})
        assert refused.is_error and "not available" in text(refused)


async def test_caller_access_edit_is_announced_and_each_client_rereads_its_own(
    tenants: Stack,
) -> None:
    heard = Heard()
    async with caller_client(tenants, BOB, session="job-bob", heard=heard) as bob:
        assert await names(bob) == {"open_add"}
        both = ACME_ONLY + "      - attributes: {tenant: globex}\n"
        tenants.write(
            "servers.d/acme.yaml",
            echo_server("acme", "--tools", "echo", extra=f"  prompt: {ACME_PROMPT}\n{both}"),
        )
        await until(
            lambda: "acme_echo" in {t.name for t in tenants.hub.served("job-bob").tools},
            timeout=20, what="acme admits bob",
        )  # fmt: skip
        await heard.wait_for(mcp_types.ToolListChangedNotification)
        assert await names(bob) == {"acme_echo", "open_add"}
        assert ACME_PROMPT in await instructions(bob)


# --- the header itself ---------------------------------------------------------------------------


def _b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


INVALID_CONTEXTS = [
    "not base64 at all!",
    _b64([1, 2]),
    _b64({"identity": 5}),
    _b64({"attributes": {"tenant": ["acme"]}}),
    "A" * (MAX_CONTEXT_BYTES + 4),
]


async def test_caller_context_header_that_is_not_one_is_refused_with_400_after_the_token(
    tenants: Stack,
) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as http:
        for value in INVALID_CONTEXTS:
            with_token = {**headers, "Authorization": f"Bearer {TOKEN}", CONTEXT_HEADER: value}
            async with http.post(tenants.hub.url, headers=with_token, json=INITIALIZE) as r:
                assert r.status == 400, value
                error = (await r.json())["error"]
                assert error.startswith(f"The {CONTEXT_HEADER} header was refused: ")
                assert error.endswith(".") and "mcp-session-id" not in r.headers
            # no token: 401 first, whatever the context
            async with http.post(
                tenants.hub.url, headers={**headers, CONTEXT_HEADER: value}, json=INITIALIZE
            ) as r:
                assert r.status == 401
                assert "caller context" not in await r.text()
        # a job's report is refused the same way
        report = {"Authorization": f"Bearer {TOKEN}", CONTEXT_HEADER: INVALID_CONTEXTS[0]}
        events = tenants.hub.url.replace("/mcp", "/agent/events")
        async with http.post(events, headers=report, json={"event": "fallback"}) as r:
            assert r.status == 400
    assert tenants.hub.status().sessions == 0
    assert sum(tenants.hub.fallbacks.values()) == 0


# --- a session whose caller changes ---------------------------------------------------------------


@pytest.fixture
async def scoped(config_dir: Path) -> AsyncIterator[Stack]:
    (config_dir / "servers.d" / "own.yaml").write_text(
        echo_server("own", "--tools", "pid", extra="  scope: session\n")
    )
    async with live_stack(config_dir) as stack:
        await stack.ready("own")
        yield stack


async def pid_of(client: Client) -> int:
    result = await client.call_tool("own_pid", {})
    assert not result.is_error, text(result)
    return int(text(result))


async def test_caller_change_on_a_new_connection_of_a_session_reopens_its_session_servers(
    scoped: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jackfield")
    key = "job-room-1"
    async with caller_client(scoped, ALICE, session=key) as first:
        alices = await pid_of(first)
        async with caller_client(scoped, ALICE, session=key) as again:
            assert await pid_of(again) == alices, "the same caller: the same connection"
        assert scoped.hub.context(key) == ALICE

        async with caller_client(scoped, BOB, session=key) as second:
            await until(lambda: process_gone(alices), what="alice's session server closed")
            bobs = await pid_of(second)
            assert bobs != alices
            assert scoped.hub.context(key) == BOB
            assert await pid_of(first) == bobs, "the session has one caller: the latest"
    await until(lambda: process_gone(bobs), what="the session ended")
    assert scoped.hub.context(key) == ANONYMOUS, "forgotten with the session"
    logged = caplog.text
    assert "new caller context" in logged
    for value in ("alice", "Alice", "acme", "globex", ALICE.to_header(), BOB.to_header()):
        assert value not in logged


async def test_caller_change_between_2026_requests_of_a_session_reopens_its_session_servers(
    scoped: Stack,
) -> None:
    key = "job-room-2"
    # a handshake-era connection holds the session open between its 2026 requests
    async with caller_client(scoped, ALICE, session=key) as holder:
        first = await pid_of(holder)
        async with caller_client(scoped, ALICE, session=key, mode="auto") as alice:
            assert await pid_of(alice) == first
            assert await pid_of(alice) == first, "each request is a connection: the same caller"
        async with caller_client(scoped, BOB, session=key, mode="auto") as bob:
            second = await pid_of(bob)  # its request waits for alice's server to close
            assert second != first
            await until(lambda: process_gone(first), what="alice's session server gone")
            assert await pid_of(holder) == second


# --- hidden arguments ----------------------------------------------------------------------------


async def test_caller_hidden_arguments_are_not_in_the_hubs_schema_and_come_from_the_caller(
    config_dir: Path,
) -> None:
    hidden = '  tools:\n    arguments: {user_id: "${caller.identity}", tenant: fixed}\n'
    (config_dir / "servers.d" / "shop.yaml").write_text(caller_server("shop", hidden))
    async with live_stack(config_dir) as stack:
        await stack.ready("shop")
        async with (
            caller_client(stack, ALICE) as alice,
            caller_client(stack, BOB, mode="auto") as bob,
        ):
            for client in (alice, bob):
                listed = {t.name: t for t in (await client.list_tools()).tools}
                schema = listed["shop_orders"].input_schema
                assert set(schema.get("properties", {})) == {"query"}
                assert "user_id" not in schema.get("required", [])
                lookup = listed["shop_lookup"].input_schema  # every tool of the server
                assert "user_id" not in lookup.get("properties", {})
                assert "user_id" not in lookup.get("required", [])
            tried = {"user_id": "mallory", "tenant": "evil", "query": "shoes"}
            said = text(await alice.call_tool("shop_orders", tried))
            assert said == "orders user_id=alice tenant=fixed query=shoes"
            said = text(await bob.call_tool("shop_orders", {"query": "hats"}))
            assert said == "orders user_id=bob tenant=fixed query=hats"


# --- a refused confirmation ----------------------------------------------------------------------


async def test_caller_refused_confirmation_is_recorded_for_the_caller_who_was_asked(
    tenants: Stack,
) -> None:
    events: list[CallEvent] = []
    tenants.manager.observer = events.append
    url = tenants.hub.url.removesuffix("/mcp") + EVENTS_PATH
    report = {"event": "confirmation", "tool": "open_add", "question": "Add?", "answer": "no"}

    async def post(headers: dict[str, str]) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}", **headers}
        async with aiohttp.ClientSession() as http, http.post(url, json=report, headers=auth) as r:
            assert r.status == 202

    await post(headers_of(ALICE, "job-alice"))  # the report says who
    async with caller_client(tenants, BOB, session="job-bob") as bob:
        await bob.list_tools()
        await post(headers_of(None, "job-bob"))  # else its session's caller
    await post(headers_of(None, "job-gone"))
    declined = [(e.outcome, e.session, e.caller) for e in events]
    assert declined == [
        ("declined", "job-alice", "alice"),
        ("declined", "job-bob", "bob"),
        ("declined", "job-gone", None),
    ]


# --- what sessions share -------------------------------------------------------------------------


def _views(access: str) -> Views:
    agent = (
        "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
        "spec:\n  instructions: Be brief.\n"
    )
    server = (
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\n"
        "spec:\n  command: x\n  prompt: {name} prompt.\n{access}"
    )
    files = [SourceFile("agent.yaml", agent.encode())] + [
        SourceFile(f"servers.d/{n}.yaml", server.format(name=n, access=a).encode())
        for n, a in (("acme", access), ("open", ""))
    ]
    snapshot = build_snapshot(files, {})
    specs = {n: s.document.spec for n, s in snapshot.servers.items()}
    entries = [
        Entry(f"{n}_t", n, "t", "", {"type": "object", "properties": {}}) for n in ("acme", "open")
    ]
    views = Views()
    views.rebuild(snapshot, {"acme", "open"}, entries, specs, realtime=True)
    return views


def test_caller_sessions_share_one_view_when_no_server_restricts_access() -> None:
    views = _views("")
    assert views.of(ALICE) is views.of(BOB) is views.of(ANONYMOUS) is views.full
    assert [t.name for t in views.full.tools] == ["acme_t", "open_t"]


def test_caller_sessions_with_the_same_hidden_servers_share_one_narrowed_view() -> None:
    views = _views(ACME_ONLY)
    assert views.of(ALICE) is views.full and views.of(CAROL) is views.full
    bobs = views.of(BOB)
    assert bobs is views.of(ANONYMOUS) and bobs is not views.full
    assert [t.name for t in bobs.tools] == ["open_t"]
    assert bobs.view is not None and "acme prompt." not in bobs.view.instructions
    assert views.full.view is not None and "acme prompt." in views.full.view.instructions
    assert bobs.page(None).tools == list(bobs.tools)
