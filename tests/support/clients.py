"""Helpers for tests that talk to the hub as a plain MCP client."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any, Literal

import mcp_types
from mcp import Client
from mcp.client.session import IncomingMessage, MessageHandlerFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.support.live import TOKEN

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "0"},
    },
}
"""A handshake-era `initialize` request, for tests that speak raw HTTP to an MCP endpoint."""


def text(result: mcp_types.CallToolResult) -> str:
    """The text of a tool result, its parts joined by newlines."""
    return "\n".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))


class Heard:
    """What a handshake-era client's message handler received, awaitable."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.arrived = asyncio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def wait_for(self, kind: type[Any], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(isinstance(m, kind) for m in self.messages):
                self.arrived.clear()
                await self.arrived.wait()

    def count(self, kind: type[Any]) -> int:
        return sum(isinstance(m, kind) for m in self.messages)


@contextlib.asynccontextmanager
async def hub_client(
    url: str,
    *,
    mode: Literal["legacy", "auto"] = "legacy",
    token: str = TOKEN,
    headers: dict[str, str] | None = None,
    on_message: MessageHandlerFnT | None = None,
) -> AsyncIterator[Client]:
    """A plain MCP SDK client of the hub, the way any MCP client would connect."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}", **(headers or {})})
    async with (
        http,
        Client(
            streamable_http_client(url, http_client=http),
            mode=mode,
            cache=None,
            message_handler=on_message,
        ) as client,
    ):
        yield client


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
