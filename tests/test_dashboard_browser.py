"""The dashboard as a real headless Chromium renders it, from a real StatusServer.

Skipped when Chromium is not installed, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import asyncio
import re
import struct
from pathlib import Path

import pytest

from jackfield.core.dashboard import BADGE
from tests.support.status import SERVERS, FakeProvider, sample_status, serving

BROWSER_TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(180)


async def browse(chromium: str, tmp_path: Path, *args: str) -> str:
    """Run headless Chromium without blocking the loop serving the page; its stdout."""
    process = await asyncio.create_subprocess_exec(
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), BROWSER_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
async def test_the_dashboard_renders_at_desktop_and_phone_widths(
    chromium: str, tmp_path: Path, width: int, height: int
) -> None:
    shot = tmp_path / f"dash-{width}.png"
    async with serving() as (server, _):
        await browse(
            chromium,
            tmp_path,
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            server.url + "/",
        )
    assert shot.exists()
    assert png_size(shot) == (width, height)
    # A blank or error page compresses to a few KB; cards, badges and text do not.
    assert shot.stat().st_size > 15_000, shot.stat().st_size


async def test_the_rendered_dom_shows_every_server_and_its_state(
    chromium: str, tmp_path: Path
) -> None:
    async with serving(FakeProvider(sample_status(ready=False))) as (server, _):
        dom = await browse(
            chromium, tmp_path, "--window-size=1280,800", "--dump-dom", server.url + "/"
        )
    assert 'id="overall">Not ready<' in dom
    assert "servers.d/bad.yaml:5:3" in dom
    for s in SERVERS:
        card = re.search(
            rf'<section class="panel server" id="server-{s.name}">.*?</section>', dom, re.S
        )
        assert card, s.name
        assert f"<h3>{s.name}</h3>" in card.group(0)
        assert f'<span class="badge {BADGE[s.state]}">{s.state}</span>' in card.group(0)
    assert re.findall(r"<script[^>]*>", dom) == ['<script src="dashboard.js" defer="">'], (
        "only ours"
    )
