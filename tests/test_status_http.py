"""The status server over real HTTP on 127.0.0.1, and `jackfield status` run against it."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from jackfield.commands.status import table
from tests.support.status import HOSTILE, FakeProvider, run_cli, sample_status, serving

ROUTES = ["/", "/status", "/status/servers/time", "/livez", "/healthz", "/readyz", "/metrics"]
PROBES = ["/livez", "/healthz", "/readyz"]
TOKEN = "t0ken-for-tests"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and nobody else can take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize("path", ROUTES)
async def test_every_route_answers_get_and_head_alike(
    client: aiohttp.ClientSession, path: str
) -> None:
    async with serving() as (server, _):
        async with client.get(server.url + path) as got:
            body = await got.read()
            assert got.status == 200, body
            assert body
            get_type = got.headers["Content-Type"]
        async with client.head(server.url + path) as head:
            assert head.status == 200
            assert await head.read() == b""
            assert head.headers["Content-Type"] == get_type
            assert head.headers["X-Content-Type-Options"] == "nosniff"
            assert head.headers["Cache-Control"] == "no-store"


async def test_status_is_the_providers_document(client: aiohttp.ClientSession) -> None:
    async with serving() as (server, fake):
        async with client.get(server.url + "/status") as got:
            assert got.content_type == "application/json"
            assert await got.json() == json.loads(json.dumps(fake.current.to_json()))
        fake.current = sample_status(ready=False)
        async with client.get(server.url + "/status") as got:
            document = await got.json()
        assert document["ready"] is False
        assert document["config"]["errors"][0]["file"] == "servers.d/bad.yaml"


async def test_a_status_document_is_reused_within_its_ttl_then_rebuilt(
    client: aiohttp.ClientSession,
) -> None:
    async with serving(status_ttl=60.0) as (server, fake):
        async with client.get(server.url + "/status") as got:
            first = await got.read()
        fake.current = sample_status(servers=())
        async with client.get(server.url + "/status") as got:
            assert await got.read() == first, "within the TTL the rendered bytes are served"
        fake.current = sample_status(ready=False)
        fake.ready = (False, "shutting down")
        async with client.get(server.url + "/readyz") as got:
            assert got.status == 503, "probes are never cached"
        async with client.get(server.url + "/status") as got:
            assert (await got.json())["ready"] is False, "a readiness change is never stale"


async def test_one_server_is_served_by_name_and_an_unknown_one_is_a_json_404(
    client: aiohttp.ClientSession,
) -> None:
    async with serving() as (server, fake):
        async with client.get(server.url + "/status/servers/flaky") as got:
            assert got.status == 200
            flaky = await got.json()
        assert flaky == next(s for s in fake.current.to_json()["servers"] if s["name"] == "flaky")
        assert flaky["state"] == "Backoff" and flaky["restarts"] == 3
        async with client.get(server.url + "/status/servers/nope") as got:
            assert got.status == 404
            assert "nope" in (await got.json())["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/status", "/metrics", "/readyz", "/"])
async def test_methods_other_than_get_and_head_are_405_with_allow(
    client: aiohttp.ClientSession, method: str, path: str
) -> None:
    async with serving() as (server, _):
        async with client.request(method, server.url + path, data=b"{}") as got:
            assert got.status == 405
            assert got.headers["Allow"] == "GET, HEAD"
            assert (await got.json())["error"] == "method not allowed"


@pytest.mark.parametrize("path", ["/nope", "/status/", "/status/servers", "/metrics/x"])
async def test_unknown_paths_are_a_json_404(client: aiohttp.ClientSession, path: str) -> None:
    async with serving() as (server, _):
        async with client.get(server.url + path) as got:
            assert got.status == 404
            assert await got.json() == {"error": "not found"}
            assert got.headers["X-Content-Type-Options"] == "nosniff"


async def test_no_cors_headers_even_when_a_browser_asks(client: aiohttp.ClientSession) -> None:
    async with serving() as (server, _):
        async with client.get(
            server.url + "/status", headers={"Origin": "https://evil.example"}
        ) as got:
            assert got.status == 200
            assert not [h for h in got.headers if h.lower().startswith("access-control-")]


async def test_liveness_and_readiness_flip_to_503_with_the_reason_and_back(
    client: aiohttp.ClientSession,
) -> None:
    async with serving() as (server, fake):
        fake.ready = (False, "shutting down")
        async with client.get(server.url + "/readyz") as got:
            assert got.status == 503
            assert await got.json() == {"ok": False, "reason": "shutting down"}
        async with client.get(server.url + "/livez") as got:
            assert got.status == 200 and await got.json() == {"ok": True}
        fake.alive = (False, "watcher task died")
        for path in ("/livez", "/healthz"):
            async with client.get(server.url + path) as got:
                assert got.status == 503
                assert (await got.json())["reason"] == "watcher task died"
        fake.ready = fake.alive = (True, "")
        async with client.get(server.url + "/readyz") as got:
            assert got.status == 200 and await got.json() == {"ok": True}


async def test_probes_never_build_the_status(client: aiohttp.ClientSession) -> None:
    async with serving() as (server, fake):
        for path in PROBES:
            async with client.get(server.url + path) as got:
                assert got.status == 200
        assert fake.status_calls == 0


@pytest.mark.parametrize("path", ["/status", "/metrics", "/", "/status/servers/time"])
async def test_a_token_is_required_and_checked(client: aiohttp.ClientSession, path: str) -> None:
    async with serving(token=TOKEN) as (server, _):
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
        ):
            async with client.get(server.url + path, headers=headers) as got:
                assert got.status == 401, headers
                assert got.headers["WWW-Authenticate"] == "Bearer"
                assert TOKEN not in await got.text()
        async with client.get(
            server.url + path, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as got:
            assert got.status == 200


async def test_probes_are_exempt_from_the_token(client: aiohttp.ClientSession) -> None:
    async with serving(token=TOKEN) as (server, fake):
        for path in PROBES:
            async with client.get(server.url + path) as got:
                assert got.status == 200, path
        fake.ready = (False, "first reconcile pending")
        async with client.get(server.url + "/readyz") as got:
            assert got.status == 503
            assert (await got.json())["reason"] == "first reconcile pending"


async def test_metrics_are_prometheus_text_about_the_providers_servers(
    client: aiohttp.ClientSession,
) -> None:
    async with serving() as (server, _):
        async with client.get(server.url + "/metrics") as got:
            assert got.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await got.text()
    assert 'jackfield_server_up{server="time"} 1.0' in text
    assert 'jackfield_server_state{server="flaky",state="Backoff"} 1.0' in text
    assert 'jackfield_server_restarts_total{server="flaky"} 3.0' in text


async def test_the_dashboard_is_html_with_every_server_escaped_and_locked_down(
    client: aiohttp.ClientSession,
) -> None:
    async with serving() as (server, fake):
        async with client.get(server.url + "/") as got:
            assert got.content_type == "text/html"
            assert "script-src 'self'" in got.headers["Content-Security-Policy"]
            assert "default-src 'none'" in got.headers["Content-Security-Policy"]
            page = await got.text()
    for s in fake.current.servers:
        assert f'id="server-{s.name}"' in page
    assert HOSTILE not in page
    assert "&lt;script&gt;" in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="dashboard.js" defer>']


async def test_oversized_headers_are_refused(client: aiohttp.ClientSession) -> None:
    async with serving() as (server, _):
        async with client.get(server.url + "/livez", headers={"X-Big": "x" * 20_000}) as got:
            assert got.status in (400, 431)


async def test_port_zero_reads_back_the_real_port_and_stop_closes_it(
    client: aiohttp.ClientSession,
) -> None:
    async with serving() as (server, _):
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        url = server.url
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(url + "/livez"):
            pass


async def test_a_failing_provider_is_a_json_500(client: aiohttp.ClientSession) -> None:
    class Broken(FakeProvider):
        def status(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    async with serving(Broken()) as (server, _):
        async with client.get(server.url + "/status") as got:
            assert got.status == 500
            assert await got.json() == {"error": "internal error"}
            assert "boom" not in await got.text()


# --- jackfield status


async def test_cli_prints_the_raw_json_and_exits_0_when_ready(tmp_path: Path) -> None:
    async with serving() as (server, fake):
        ran = await run_cli("status", "--url", server.url, "--json", cwd=tmp_path)
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout) == json.loads(json.dumps(fake.current.to_json()))


async def test_cli_prints_a_table_and_exits_1_when_not_ready(tmp_path: Path) -> None:
    async with serving(FakeProvider(sample_status(ready=False))) as (server, _):
        ran = await run_cli("status", "--url", server.url, cwd=tmp_path)
    assert ran.code == 1, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].split() == ["overall:", "NOT", "READY"]
    assert "revision:  sha256:a1a1a1a1a1a1 (attempted sha256:b2b2b2b2b2b2)" in lines
    assert "commit:    0123456789ab" in lines
    assert any(line.startswith("condition: Stalled=True ValidationFailed") for line in lines)
    assert (
        "error:     servers.d/bad.yaml:5:3: unknown field 'comand'; did you mean 'command'?"
        in lines
    )
    header = next(line for line in lines if line.startswith("NAME"))
    assert header.split() == ["NAME", "STATE", "TRANSPORT", "TOOLS", "RESTARTS", "LAST", "ERROR"]
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1 :]}
    assert set(rows) == {"time", "files", "queued", "search", "flaky", "broken", "off"}
    assert rows["time"][:5] == ["time", "Ready", "stdio", "2", "0"]
    assert rows["flaky"][:6] == ["flaky", "Backoff", "stdio", "0", "3", "ConnectionError:"]
    assert rows["off"] == ["off", "Disabled", "stdio", "0", "0", "-"]


async def test_cli_sends_the_token_and_explains_a_refusal(tmp_path: Path) -> None:
    async with serving(token=TOKEN) as (server, _):
        refused = await run_cli("status", "--url", server.url, cwd=tmp_path)
        accepted = await run_cli("status", "--url", server.url, "--token", TOKEN, cwd=tmp_path)
    assert refused.code == 2 and "HTTP 401" in refused.stderr and "--token" in refused.stderr
    assert accepted.code == 0, accepted.stderr
    assert accepted.stdout.startswith("overall:   READY")


async def test_cli_exits_2_with_a_clear_message_when_nothing_listens(
    tmp_path: Path, closed_port: int
) -> None:
    ran = await run_cli("status", "--url", f"http://127.0.0.1:{closed_port}", cwd=tmp_path)
    assert ran.code == 2
    assert ran.stdout == ""
    assert f"cannot reach http://127.0.0.1:{closed_port}/status" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_the_table_shows_terminal_escapes_from_servers_as_question_marks() -> None:
    document = json.loads(json.dumps(sample_status().to_json()))
    document["servers"][0]["last_error"] = "bad\x1b[2J\x07 news"
    document["config"]["conditions"][0]["message"] = "\x1b]0;title\x07"
    text = table(document)
    assert "\x1b" not in text and "\x07" not in text
    assert "bad?[2J? news" in text
