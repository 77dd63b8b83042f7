"""The dashboard's routes on a real StatusServer: the script, the parts JSON, the activity JSON,
and the page's CSP; the same guard as every other route."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from jackfield.core.activity import Activity, when
from jackfield.shell.redaction import MASK, register_secrets
from tests.support.status import FakeProvider, sample_status, serving

pytestmark = pytest.mark.timeout(60)

ROUTES = ("/", "/dashboard.js", "/dashboard.json", "/status/activity")


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_the_page_allows_its_own_script_and_fetches_only(
    client: aiohttp.ClientSession,
) -> None:
    async with serving() as (server, _):
        async with client.get(server.url + "/") as got:
            csp = got.headers["Content-Security-Policy"]
            page = await got.text()
        async with client.get(server.url + "/dashboard.js") as got:
            assert got.content_type == "text/javascript"
            script = await got.text()
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["style-src"] == "'unsafe-inline'"
    assert re.findall(r"<script[^>]*>", page) == ['<script src="dashboard.js" defer>']
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in page
    assert "eval(" not in script and "new Function" not in script
    assert "fetch('dashboard.json'" in script or "'dashboard.json'" in script


@pytest.mark.parametrize("path", ROUTES)
async def test_every_dashboard_route_wants_the_token(
    client: aiohttp.ClientSession, path: str
) -> None:
    async with serving(token="s3cret-token") as (server, _):
        async with client.get(server.url + path) as got:
            assert got.status == 401
            assert "jackfield" not in await got.text()
        auth = {"Authorization": "Bearer s3cret-token"}
        async with client.get(server.url + path, headers=auth) as got:
            assert got.status == 200


@pytest.mark.parametrize("path", ROUTES)
async def test_every_dashboard_route_refuses_a_rebound_host_name(
    client: aiohttp.ClientSession, path: str
) -> None:
    async with serving() as (server, _):
        async with client.get(server.url + path, headers={"Host": "evil.example"}) as got:
            assert got.status == 421


async def test_the_activity_json_has_calls_passes_and_per_server_windows(
    client: aiohttp.ClientSession,
) -> None:
    activity = Activity()
    now = 1_800_000_030.0  # 30 s into a minute
    activity.call(now - 5, server="time", tool="time_get", outcome="ok", seconds=0.012,
                  session="abcdef0123456789", caller="caller:alice")  # fmt: skip
    activity.reconciled(now - 9, outcome="applied", revision="sha256:aa", changes=2, errors=0,
                        seconds=0.01)  # fmt: skip
    async with serving(activity=activity, clock=lambda: now) as (server, fake):
        async with client.get(server.url + "/status/activity") as got:
            document = await got.json()
    assert set(document) == {"at", "window_minutes", "window_start", "servers", "calls", "passes"}
    assert document["window_minutes"] == 30
    assert set(document["servers"]) == {s.name for s in fake.current.servers}, "observed"
    time = document["servers"]["time"]
    assert time["calls_per_minute"][-1] == 1 and len(time["calls_per_minute"]) == 30
    assert time["calls"] == 1 and time["errors"] == 0 and time["window_p50_ms"] == 12.0
    assert time["transitions"][0]["state"] == "Ready"
    [call] = document["calls"]
    assert call == {"at": when(now - 5), "server": "time", "tool": "time_get",
                    "outcome": "ok", "ms": 12.0, "session": "abcdef0123456789",
                    "caller": "caller:alice"}  # fmt: skip
    assert document["passes"][0]["outcome"] == "applied"


async def test_recorded_strings_are_masked_before_they_reach_the_page(
    client: aiohttp.ClientSession,
) -> None:
    register_secrets(["caller-secret-0042"])
    async with serving() as (server, _):
        server.activity.call(1.0, server="time", tool="t", outcome="ok", seconds=0.1,
                             caller="id caller-secret-0042")  # fmt: skip
        for path in ("/", "/dashboard.json", "/status/activity"):
            async with client.get(server.url + path) as got:
                text = await got.text()
            assert "caller-secret-0042" not in text, path
        async with client.get(server.url + "/status/activity") as got:
            assert (await got.json())["calls"][0]["caller"] == f"id {MASK}"


async def test_an_unchanged_page_gets_204_and_a_stranger_token_gets_everything(
    client: aiohttp.ClientSession,
) -> None:
    url = ""
    async with serving() as (server, fake):
        url = server.url + "/dashboard.json"
        async with client.get(url) as got:
            first = await got.json()
        assert set(first["html"]) == {i for ids in first["layout"].values() for i in ids}
        async with client.get(url, params={"since": first["since"]}) as got:
            assert got.status == 204
        fake.current = replace(fake.current, hub=replace(fake.current.hub, sessions=9))
        async with client.get(url, params={"since": first["since"]}) as got:
            changed = await got.json()
        assert set(changed["html"]) == {"p-summary", "p-components"}, "only what changed"
        assert changed["layout"] == first["layout"]
        for stale in ("otherepoch.1", "garbage", first["since"].split(".")[0] + ".99999"):
            async with client.get(url, params={"since": stale}) as got:
                assert set((await got.json())["html"]) == set(first["html"]), stale


async def test_the_status_document_is_unchanged_by_the_activity(
    client: aiohttp.ClientSession,
) -> None:
    async with serving(FakeProvider(sample_status())) as (server, fake):
        server.activity.call(1.0, server="time", tool="t", outcome="ok", seconds=0.1)
        async with client.get(server.url + "/status") as got:
            assert await got.json() == json.loads(json.dumps(fake.current.to_json()))
