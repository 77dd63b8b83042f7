"""Faults in what upstream servers list: catalogs too large for one client event (a megabyte
description, thousands of tools, a huge input schema, many large tools within every limit) and
tools that fail validation. One bad server, or one bad tool, must never hold the others back:
the offending tool is withheld and named in its server's status, the rest serves, and the hub
pages `tools/list` so the whole catalog never has to fit one event.

Real processes throughout: the servers are tests/servers/catalog.py (SDK or raw JSON-RPC), the
hub's clients are plain SDK clients over streamable HTTP and a job's HubLink.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import mcp_types
import pytest
from mcp import Client

from jackfield.core.limits import (
    HUB_PAGE_BYTES,
    MAX_DESCRIPTION_BYTES,
    MAX_INPUT_SCHEMA_BYTES,
    MAX_TOOLS_PER_SERVER,
)
from jackfield.core.status import ServerStatus
from jackfield.shell.hub_link import linked
from tests.conftest import REPO
from tests.servers.launch import spawn
from tests.support.clients import hub_client, text
from tests.support.controller import until
from tests.support.live import TOKEN, Stack, echo_server, live_stack
from tests.test_hub_faults import raw_session

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

SDK_EVENT_LIMIT = 1024 * 1024
"""The SDK client's limit on one SSE event (mcp.client.streamable_http)."""
WAIT = 40.0


def catalog_server(name: str, *flags: str, extra: str = "") -> str:
    """An MCPServer document running tests/servers/catalog.py over stdio."""
    args = ", ".join(f'"{a}"' for a in ["-m", "tests.servers.catalog", *flags])
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  command: {sys.executable}\n  args: [{args}]\n  cwd: {REPO}\n{extra}"
    )


def http_server(name: str, url: str) -> str:
    return (
        "apiVersion: jackfield/v1\nkind: MCPServer\n"
        f"metadata: {{name: {name}}}\nspec:\n  transport: http\n  url: {url}\n"
    )


async def pages(client: Client) -> list[mcp_types.ListToolsResult]:
    """Every page of the hub's `tools/list`, following nextCursor like a careful client."""
    out: list[mcp_types.ListToolsResult] = []
    cursor: str | None = None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor)
        out.append(page)
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("the hub's cursor never ended")


async def event_sizes(url: str) -> list[int]:
    """The bytes of each `tools/list` answer as the hub sends it (one SSE event per page)."""
    sizes: list[int] = []
    cursor: str | None = None
    async with aiohttp.ClientSession() as http, raw_session(http, url) as headers:
        for i in range(100):
            params = {"cursor": cursor} if cursor is not None else {}
            listing = {"jsonrpc": "2.0", "id": i + 2, "method": "tools/list", "params": params}
            async with http.post(url, json=listing, headers=headers) as r:
                body = await r.read()
            [event] = [line for line in body.splitlines() if line.startswith(b"data:")]
            sizes.append(len(event))
            cursor = json.loads(event[5:])["result"].get("nextCursor")
            if cursor is None:
                return sizes
    raise AssertionError("the hub's cursor never ended")


def names(listing: list[mcp_types.ListToolsResult]) -> list[str]:
    return [t.name for page in listing for t in page.tools]


def status_of(stack: Stack, name: str) -> ServerStatus:
    [status] = [s for s in stack.manager.statuses() if s.name == name]
    return status


async def ready(stack: Stack, *servers: str) -> None:
    await stack.ready(*servers, timeout=WAIT)


# --- one server's catalog too large for an event ------------------------------------------------


async def test_a_megabyte_description_and_five_thousand_tools_hold_no_other_server_back(
    config_dir: Path,
) -> None:
    servers = config_dir / "servers.d"
    (servers / "echo.yaml").write_text(echo_server("echo"))
    (servers / "bloated.yaml").write_text(
        catalog_server("bloated", "--description-bytes", "1100000")
    )
    (servers / "crowd.yaml").write_text(catalog_server("crowd", "--tools", "5000"))
    async with live_stack(config_dir) as stack:
        await ready(stack, "echo", "bloated", "crowd")
        async with hub_client(stack.hub.url) as client:
            listed = names(await pages(client))
            assert "echo_add" in listed and "bloated_ok" in listed
            assert "bloated_long_doc" not in listed
            crowd = [n for n in listed if n.startswith("crowd_")]
            # `ok` first, then t0000...: the first ones are kept
            assert crowd == sorted(["crowd_ok", *(f"crowd_t{i:04d}" for i in range(255))])
            assert text(await client.call_tool("echo_add", {"a": 20, "b": 22})) == "42"
            assert text(await client.call_tool("bloated_ok", {})) == "ok"
            assert text(await client.call_tool("crowd_t0254", {})) == "t0254"

        bloated = status_of(stack, "bloated")
        assert bloated.state == "Ready" and bloated.tools == ("bloated_ok",)
        assert bloated.withheld == (
            f"'long_doc': withheld: description is 1,100,000 bytes"
            f" (limit {MAX_DESCRIPTION_BYTES:,} bytes)",
        )
        [note] = status_of(stack, "crowd").withheld
        assert note.startswith(
            f"4,745 tools withheld: 5,001 offered, at most {MAX_TOOLS_PER_SERVER} per server;"
            f" the first {MAX_TOOLS_PER_SERVER} are kept (withheld: 't0255', 't0256'"
        )
        assert note.endswith("and 4,740 more)")
        assert status_of(stack, "bloated").to_json()["withheld"] == list(bloated.withheld)


async def test_a_huge_input_schema_over_http_is_withheld_and_named_while_its_sibling_serves(
    config_dir: Path,
) -> None:
    """Two megabytes in one SSE event from an HTTP server: jackfield's own client reads it (the
    SDK's 1 MiB default failed the whole server) and withholds just that tool."""
    args = ("-m", "tests.servers.catalog", "--transport", "http", "--port", "0",
            "--schema-bytes", "2000000")  # fmt: skip
    async with spawn(*args, stderr=asyncio.subprocess.DEVNULL) as (_, port):
        url = f"http://127.0.0.1:{port}/mcp"
        (config_dir / "servers.d" / "wide.yaml").write_text(http_server("wide", url))
        async with live_stack(config_dir) as stack:
            await ready(stack, "wide")
            status = status_of(stack, "wide")
            assert status.tools == ("wide_ok",)
            [note] = status.withheld
            assert note.startswith("'huge_schema': withheld: inputSchema is 2,")
            assert note.endswith(f" bytes (limit {MAX_INPUT_SCHEMA_BYTES:,} bytes)")
            async with hub_client(stack.hub.url) as client:
                assert names(await pages(client)) == ["wide_ok"]
                assert text(await client.call_tool("wide_ok", {})) == "ok"


# --- a catalog over the event limit in total: pages --------------------------------------------


async def test_a_catalog_over_a_megabyte_within_every_limit_is_paged_and_listed_whole(
    config_dir: Path,
) -> None:
    """200 tools of 8 KB descriptions (1.6 MB in all, each well within the limits)."""
    servers = config_dir / "servers.d"
    (servers / "echo.yaml").write_text(echo_server("echo"))
    (servers / "manual.yaml").write_text(
        catalog_server("manual", "--tools", "200", "--description-each", "8000")
    )
    async with live_stack(config_dir) as stack:
        await ready(stack, "echo", "manual")
        assert not status_of(stack, "manual").withheld
        expected = sorted(stack.hub.manager.catalog.entries)
        assert len(expected) > 201
        async with hub_client(stack.hub.url) as client:
            listing = await pages(client)
            assert sorted(names(listing)) == expected
            assert len(listing) >= 3
            assert text(await client.call_tool("manual_t0199", {})) == "t0199"
        sizes = await event_sizes(stack.hub.url)
        assert len(sizes) == len(listing)
        assert max(sizes) <= HUB_PAGE_BYTES < SDK_EVENT_LIMIT, sizes
        # a job's own link to the hub follows the pages too
        async with linked(stack.hub.url, TOKEN, session_id="job-pages") as link:
            assert sorted(t.name for t in await link.tools()) == expected


# --- tools that fail validation ----------------------------------------------------------------


async def test_tools_that_fail_validation_are_withheld_and_named_while_their_siblings_serve(
    config_dir: Path,
) -> None:
    servers = config_dir / "servers.d"
    (servers / "echo.yaml").write_text(echo_server("echo"))
    (servers / "odd.yaml").write_text(catalog_server("odd", "--invalid"))
    async with live_stack(config_dir) as stack:
        await ready(stack, "echo", "odd")
        status = status_of(stack, "odd")
        assert status.tools == ("odd_also_ok", "odd_ok")
        withheld = dict(note.split(": withheld: invalid listing ", 1) for note in status.withheld)
        assert set(withheld) == {
            "'bad_schema'", "'bad_type'", "'bad_hint'", "'(tool #5, no valid name)'",
        }  # fmt: skip
        assert withheld["'bad_schema'"].startswith("(inputSchema: Input should be a valid dict")
        assert withheld["'bad_type'"] == "(inputSchema.type: Input should be 'object')"
        assert withheld["'bad_hint'"].startswith("(annotations.readOnlyHint: Input should be")
        async with hub_client(stack.hub.url) as client:
            listed = names(await pages(client))
            assert {"odd_ok", "odd_also_ok", "echo_add"} <= set(listed)
            assert not [n for n in listed if n.startswith("odd_bad")]
            assert text(await client.call_tool("odd_also_ok", {})) == "also_ok"

        # An operator who excludes the bad tools silences their notes (no reconnect needed).
        stack.write(
            "servers.d/odd.yaml",
            catalog_server("odd", "--invalid", extra="  tools: {exclude: ['bad_*']}\n"),
        )
        await until(
            lambda: status_of(stack, "odd").withheld == (
                "'(tool #5, no valid name)': withheld: invalid listing (name: Field required)",
            ),
            timeout=WAIT,
            what=f"only the nameless tool withheld ({status_of(stack, 'odd').withheld})",
        )  # fmt: skip
        assert status_of(stack, "odd").tools == ("odd_also_ok", "odd_ok")
