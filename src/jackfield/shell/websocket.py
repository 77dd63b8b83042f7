"""An MCP client transport over WebSocket (aiohttp): one JSON-RPC message per text frame,
subprotocol `mcp`. The SDK ships no WebSocket client in v2, so this bridges aiohttp's client to
the SDK's stream pair the same way its own transports do."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp
import anyio
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

Streams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception],
    MemoryObjectSendStream[SessionMessage],
]

MAX_MESSAGE = 64 * 1024 * 1024
HEARTBEAT = 30.0
"""Seconds between WebSocket pings; a peer that stops answering them is a closed connection."""


@contextlib.asynccontextmanager
async def websocket_client(
    url: str,
    headers: Mapping[str, str],
    *,
    timeout: float,
    on_closed: Callable[[str], None] | None = None,
) -> AsyncIterator[Streams]:
    """Connect to `url` and yield the SDK's stream pair. `on_closed` is told, in a few words,
    when the connection ends underneath us (before the read stream ends).

    Raises:
        aiohttp.WSServerHandshakeError: the server refused the upgrade (`.status` says how).
        aiohttp.ClientError: the server cannot be reached.
    """
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=timeout)) as http,
        http.ws_connect(
            url,
            protocols=("mcp",),
            headers=dict(headers),
            max_msg_size=MAX_MESSAGE,
            heartbeat=HEARTBEAT,
        ) as ws,
    ):
        to_session, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_server, from_session = anyio.create_memory_object_stream[SessionMessage](0)

        async def read() -> None:
            async with to_session:
                try:
                    async for frame in ws:
                        if frame.type != aiohttp.WSMsgType.TEXT:
                            continue
                        try:
                            message = mcp_types.jsonrpc_message_adapter.validate_json(frame.data)
                        except ValueError as e:
                            await to_session.send(e)
                            continue
                        await to_session.send(SessionMessage(message))
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return  # the session is gone: we are closing
                if on_closed is not None:
                    on_closed(f"the server closed the WebSocket (code {ws.close_code})")

        async def write() -> None:
            async with from_session:
                async for message in from_session:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    try:
                        await ws.send_str(data)
                    except (ConnectionError, aiohttp.ClientError):
                        await ws.close()  # the reader ends, and with it the session
                        return

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                tg.start_soon(write)
                try:
                    yield from_server, to_server
                finally:
                    tg.cancel_scope.cancel()
                    await ws.close()
        finally:
            for stream in (to_session, from_server, to_server, from_session):
                await stream.aclose()
