"""The status server against a hostile browser page (DNS rebinding) and its public probes
against curious callers: nothing but loopback Host names is answered on a loopback bind, and
/readyz says why in words that name no host, port or credential. Marked `faults`."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest

from jackfield.settings import Settings
from tests.support.process import echo_yaml, jackfield_run, plain_config
from tests.support.status import serving

pytestmark = pytest.mark.faults

ROUTES = ["/", "/status", "/status/servers/time", "/livez", "/healthz", "/readyz", "/metrics"]
# What a page at the attacker's name sends once its name resolves to 127.0.0.1, and the other
# shapes of a non-loopback name: a loopback-looking prefix or suffix is still someone else's.
REBOUND = [
    "evil.example",
    "evil.example:{port}",
    "127.0.0.1.evil.example:{port}",
    "localhost.evil.example",
    "10.0.0.7:{port}",
    "[2001:db8::1]:{port}",
]
LOOPBACK = [
    "127.0.0.1:{port}",
    "localhost:{port}",
    "LOCALHOST",
    "localhost.:{port}",
    "[::1]:{port}",
    "127.0.0.2",
    "jackfield.localhost:{port}",
]


async def _get(url: str, host: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url, headers={"Host": host}) as got:
            return got.status, await got.text()


@pytest.mark.parametrize("host", REBOUND)
async def test_a_rebound_host_name_reads_nothing_from_a_loopback_status_server(host: str) -> None:
    async with serving() as (server, fake):
        for path in ROUTES:
            code, body = await _get(server.url + path, host.format(port=server.port))
            assert code == 421, (path, code, body)
            assert "loopback" in body and "time" not in body, body
        assert fake.status_calls == 0


@pytest.mark.parametrize("host", LOOPBACK)
async def test_loopback_host_names_are_answered(host: str) -> None:
    async with serving() as (server, _):
        for path in ROUTES:
            code, body = await _get(server.url + path, host.format(port=server.port))
            assert code == 200, (path, code, body)


async def test_allowed_hosts_extend_the_loopback_names_and_nothing_else() -> None:
    async with serving(allowed_hosts=("status.internal",)) as (server, _):
        assert (await _get(server.url + "/status", f"Status.Internal:{server.port}"))[0] == 200
        assert (await _get(server.url + "/status", "other.internal"))[0] == 421


async def test_a_status_server_bound_beyond_loopback_checks_no_host() -> None:
    """Bound to every address, it is meant to be reached by whatever name the network gives it
    (a pod IP, a Service name); the token is what guards it then."""
    async with serving(host="0.0.0.0") as (server, _):
        url = f"http://127.0.0.1:{server.port}/status"
        assert (await _get(url, "jackfield.default.svc:8080"))[0] == 200


def test_allowed_hosts_are_read_from_the_environment_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JACKFIELD_STATUS_ALLOWED_HOSTS", " status.internal, ,ops.example ")
    assert Settings().status_allowed_hosts == ("status.internal", "ops.example")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on return: connecting is refused


def test_readyz_names_no_host_port_or_password_of_an_unreachable_store(tmp_path: Path) -> None:
    port = _closed_port()
    password = "pw-9f3c1e77d2"
    url = f"postgresql+psycopg://jack:{password}@127.0.0.1:{port}/jackfield"
    config = plain_config(tmp_path / "config", {"a": echo_yaml("a", "--tools", "echo")})
    with jackfield_run(tmp_path / "run", config, database_url=url) as jackfield:
        status = jackfield.servers_ready("a")  # served from memory meanwhile
        message = status["store"]["message"] or ""
        assert str(port) in message, status["store"]  # the operator's view has the detail
        code, reason = jackfield.readyz()
        assert code == 503 and "store unavailable" in reason, reason
        assert str(port) not in reason and "127.0.0.1" not in reason, reason
        assert password not in jackfield.log_tail(10_000)
        assert password not in jackfield.get("/status")[1].decode()
