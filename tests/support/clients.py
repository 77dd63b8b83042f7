"""Helpers for tests that talk to the hub as a plain MCP client."""

from __future__ import annotations

import asyncio
from typing import Any

import mcp_types
from mcp.client.session import IncomingMessage


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
