"""Waiting with a bounded deadline, never a fixed sleep (STYLE.md habit 9)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def until(
    condition: Callable[[], Any], timeout: float = 10.0, what: str = "", interval: float = 0.01
) -> None:
    """Poll a condition on the event loop until it holds.

    Raises:
        AssertionError: it did not hold within `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(interval)


def poll(
    probe: Callable[[], T | None], *, timeout: float = 60.0, what: str = "", every: float = 0.05
) -> T:
    """Call `probe` (blocking) until it returns something truthy, which is returned.

    Raises:
        AssertionError: it did not within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or probe}")
        time.sleep(every)
