"""The job's hub link carries the session's caller context (issue #16), against a real hub.

The hub reads CONTEXT_HEADER per connection, so a new context means a new connection: the link
reconnects when no call is in flight, without backoff, and sets `changed` so the agent
refetches what the hub now serves it. A call is never cut off for it, and nothing asked after
the change runs under the context before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jackfield.core.caller_context import (
    ANONYMOUS,
    CONTEXT_HEADER,
    MAX_CONTEXT_BYTES,
    CallerContext,
)
from jackfield.shell.hub_link import HubLink, linked
from tests.support.controller import until
from tests.support.live import TOKEN, Stack, echo_stack

pytestmark = pytest.mark.timeout(60)

ALICE = CallerContext(identity="alice", name="Alice", attributes={"tenant": "acme"}, room="r1")
BOB = CallerContext(identity="bob", attributes={"tenant": "globex"}, room="r1")
SESSION = "job-caller-link"


@pytest.fixture
async def stack(config_dir: Path) -> AsyncIterator[Stack]:
    async with echo_stack(config_dir) as stack:
        yield stack


async def test_caller_link_sends_its_context_and_a_change_reconnects_at_once_and_sets_changed(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jackfield")
    async with linked(stack.hub.url, TOKEN, session_id=SESSION, context=ALICE) as link:
        assert link.headers[CONTEXT_HEADER] == ALICE.to_header()
        assert await link.wait_current(10)
        await link.tools()  # a request: the hub knows the session by now
        assert stack.hub.context(SESSION) == ALICE
        assert link.connects == 1
        link.changed.clear()

        assert not link.set_context(ALICE), "the same context changes nothing"
        assert link.connects == 1 and not link.changed.is_set()

        started = asyncio.get_running_loop().time()
        assert link.set_context(BOB)
        assert link.context == BOB and link.headers[CONTEXT_HEADER] == BOB.to_header()
        # a request now waits for the connection that carries bob's context
        result = await link.call("echo_echo", {"text": "after the change"})
        assert result.content[0].text == "after the change"  # type: ignore[union-attr]
        assert link.connects == 2 and link.changed.is_set()
        assert stack.hub.context(SESSION) == BOB
        assert asyncio.get_running_loop().time() - started < 5, "no backoff for a deliberate one"
    for value in ("alice", "Alice", "acme", "bob", "globex", ALICE.to_header(), BOB.to_header()):
        assert value not in caplog.text, "context values are secrets: never logged"


async def test_caller_link_waits_for_a_call_in_flight_before_it_reconnects(stack: Stack) -> None:
    async with linked(stack.hub.url, TOKEN, session_id=SESSION, context=ALICE) as link:
        slow = asyncio.create_task(link.call("echo_slow", {"seconds": 1.0}))
        await until(lambda: link.in_flight == 1, what="the slow call runs")
        link.set_context(BOB)
        assert not await link.wait_current(0.3), "not while the call runs"
        assert link.connects == 1 and stack.hub.context(SESSION) == ALICE
        result = await slow
        assert result.content[0].text == "slept 1", "the call was not cut off"  # type: ignore[union-attr]
        assert await link.wait_current(10)
        assert link.connects == 2
        await link.tools()
        assert stack.hub.context(SESSION) == BOB


async def test_caller_link_sends_no_context_too_large_and_says_so_once_without_its_values(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-" + "x" * MAX_CONTEXT_BYTES
    huge = CallerContext(identity="carol-the-caller", attributes={"blob": secret})
    link = HubLink(stack.hub.url, TOKEN, session_id=SESSION)
    with caplog.at_level(logging.WARNING, logger="jackfield.shell.hub_link"):
        assert link.set_context(huge)
        assert link.set_context(CallerContext(identity="carol-the-caller", attributes={
            "blob": secret + "y"}))  # fmt: skip
    assert CONTEXT_HEADER not in link.headers
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "s3cret" not in warnings[0] and "carol" not in warnings[0]
    owner = asyncio.create_task(link.run())
    try:
        assert await link.wait_current(10)
        await link.tools()
        assert stack.hub.context(SESSION) == ANONYMOUS
    finally:
        owner.cancel()
        await asyncio.gather(owner, return_exceptions=True)


async def test_caller_link_changed_back_before_the_call_ends_keeps_its_connection(
    stack: Stack,
) -> None:
    async with linked(stack.hub.url, TOKEN, session_id=SESSION, context=ALICE) as link:
        slow = asyncio.create_task(link.call("echo_slow", {"seconds": 0.5}))
        await until(lambda: link.in_flight == 1, what="the slow call runs")
        assert link.set_context(BOB)
        assert link.set_context(ALICE), "back to what the hub has"
        assert await link.wait_current(0), "current at once: nothing to reconnect for"
        await slow
        result = await link.call("echo_echo", {"text": "same connection"})
        assert not result.is_error
        assert link.connects == 1 and stack.hub.context(SESSION) == ALICE
