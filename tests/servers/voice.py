"""An MCP server for jackfield's voice tests (issue #14), built on the SDK's `MCPServer`.

Run from the repo root:

    python -m tests.servers.voice [--transport stdio|http] [--port 0] [--record PATH]

Transports: stdio (default) and streamable HTTP (`--transport http`, endpoint `/mcp`; the
server prints `LISTENING <port>` once it accepts requests, `--port 0` picks a free port, so
tests/servers/launch.py `spawn` works as for echo.py). It speaks both protocol eras: on a
handshake-era connection elicitation and sampling are standalone server-to-client requests, on
a 2026-07-28 connection they are `InputRequiredResult` rounds.

`--record PATH` (or the environment variable VOICE_RECORD) names a file the server appends one
JSON object per line to, so a test can see what the server observed (it is flushed at once;
each line also has `at`, the server's `time.monotonic()`, one clock for all processes on Linux):

    {"tool": "slow", "event": "started", "seconds": 30.0}
    {"tool": "slow", "event": "cancelled"}            # its handler was cancelled
    {"tool": "slow", "event": "finished"}
    {"tool": "delete_note", "event": "called", "note": "shopping"}
    {"tool": "progress", "event": "started", "steps": 3}
    {"tool": "ask_name", "event": "answered", "action": "accept", "content": {...}}
    {"tool": "sample", "event": "refused", "message": "..."}

Tools (names, arguments and answers are stable; the voice tests rely on them):

- `progress(steps: int = 3, interval: float = 0.2)`, read-only: for i in 1..steps, waits
  `interval` s, then sends a progress notice (progress=i, total=steps,
  message="step i of steps"); answers "done after <steps> steps". Notices reach a client only
  when it asked for progress (a progressToken).
- `silent_progress(steps: int = 3, interval: float = 0.2)`, read-only: the same with no
  message (progress and total only), for spoken lines built from the numbers.
- `slow(seconds: float = 30)`, read-only: records `started`, sleeps, records `finished` and
  answers "slept <seconds>"; when its handler is cancelled (notifications/cancelled, or the
  request closed) it records `cancelled`.
- `delete_note(note: str)`, title "Delete a note", annotations destructiveHint=true,
  readOnlyHint=false: records `called` with the note and answers "deleted <note>".
- `ask_name()`, title "Ask for a name": elicits a flat form, message "What is your name?",
  schema {name: string (required), subscribe: boolean (optional)}; records `answered` and
  answers "accepted name=<name> subscribe=<true|false|unset>", "declined" or "cancelled". A
  client that declared no elicitation gets the SDK's error (missing client capability).
- `ask_raw()`: the same question as `ask_name`, asked with the plain SDK calls (an
  `elicitation/create`, or a hand-rolled `InputRequiredResult` round), schema {name: string
  (required)}; records `answered` with the whole result as received (`"result": {"action":
  ..., "content": ..., "_meta": ...}`) and answers its action ("accept", "decline", "cancel").
- `ask_url()`: a URL-mode elicitation, message "Please sign in to continue.", url
  "https://example.com/login", elicitationId "login-1" (the 2026-07-28 wire carries no id:
  a client on that era sees none); records `answered` with the result and answers its action.
- `sample()`: asks the client to sample its model (`sampling/createMessage`, whatever the
  client declared) and answers "sampled: <text>", or "sampling refused: <the error's
  message>" (recording `refused`) when the client refuses. On a 2026-07-28 connection the ask
  is an `InputRequiredResult`; a client that refuses it fails the call itself (the server
  never hears back), as the SDK's client does.
- `media()`, read-only: no text; an image (1x1 PNG, image/png), a resource link (name
  "report.pdf", title "Quarterly report", uri "file:///notes/report.pdf", application/pdf) and
  structuredContent {"temperature": 21, "unit": "C"}.
- `weather()`, read-only: content [] and structuredContent {"city": "Oslo",
  "temperature": 4, "sky": "cloudy"} only.
- `client_capabilities()`, read-only: the capabilities the client declared, as JSON text
  (`{}` when none), e.g. `{"elicitation": {"form": {}, "url": {}}}`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Sequence
from typing import Annotated, Any

import anyio
import mcp_types
from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

from tests.servers.echo import serve_mcp

PNG_1X1 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
    "awAAAABJRU5ErkJggg=="
)
READ_ONLY = mcp_types.ToolAnnotations(readOnlyHint=True)
SAMPLE_KEY = "sample"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.servers.voice", description=__doc__)
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="http; 0 picks a free port")
    p.add_argument("--name", default="voice", help="server name reported in serverInfo")
    p.add_argument("--record", default=os.environ.get("VOICE_RECORD"), metavar="PATH")
    return p.parse_args(argv)


class NameForm(BaseModel):
    name: str = Field(description="Your name")
    subscribe: bool | None = Field(default=None, description="Subscribe to the newsletter?")


def ask(ctx: Context) -> Elicit[NameForm]:
    return Elicit("What is your name?", NameForm)


def build_server(args: argparse.Namespace) -> MCPServer:
    mcp = MCPServer(args.name, version="1.0", log_level="WARNING")

    def record(tool: str, event: str, **fields: Any) -> None:
        if not args.record:
            return
        with open(args.record, "a", encoding="utf-8") as f:
            line = {"tool": tool, "event": event, "at": time.monotonic(), **fields}
            f.write(json.dumps(line) + "\n")

    @mcp.tool(description="Report progress in steps, then answer.", annotations=READ_ONLY)
    async def progress(ctx: Context, steps: int = 3, interval: float = 0.2) -> str:
        record("progress", "started", steps=steps)
        for i in range(1, steps + 1):
            await anyio.sleep(interval)
            await ctx.report_progress(i, steps, f"step {i} of {steps}")
        return f"done after {steps} steps"

    @mcp.tool(description="Report progress without messages.", annotations=READ_ONLY)
    async def silent_progress(ctx: Context, steps: int = 3, interval: float = 0.2) -> str:
        for i in range(1, steps + 1):
            await anyio.sleep(interval)
            await ctx.report_progress(i, steps)
        return f"done after {steps} steps"

    @mcp.tool(description="Sleep for the given seconds, then answer.", annotations=READ_ONLY)
    async def slow(seconds: float = 30.0) -> str:
        record("slow", "started", seconds=seconds)
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            record("slow", "cancelled")
            raise
        record("slow", "finished")
        return f"slept {seconds:g}"

    @mcp.tool(
        title="Delete a note",
        description="Delete the named note for good.",
        annotations=mcp_types.ToolAnnotations(destructiveHint=True, readOnlyHint=False),
    )
    def delete_note(note: str) -> str:
        record("delete_note", "called", note=note)
        return f"deleted {note}"

    @mcp.tool(title="Ask for a name", description="Ask the user for their name.")
    def ask_name(answer: Annotated[ElicitationResult[NameForm], Resolve(ask)]) -> str:
        if answer.action == "accept":
            data = answer.data
            record("ask_name", "answered", action="accept", content=data.model_dump())
            subscribe = "unset" if data.subscribe is None else str(data.subscribe).lower()
            return f"accepted name={data.name} subscribe={subscribe}"
        record("ask_name", "answered", action=answer.action)
        return "declined" if answer.action == "decline" else "cancelled"

    async def elicited(
        ctx: Context, key: str, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.InputRequiredResult:
        """The client's answer to `params`, whichever era: a request on the call's stream, or
        an `InputRequiredResult` round (its answer comes in the retried call)."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            answer = (ctx.input_responses or {}).get(key)
            if isinstance(answer, mcp_types.ElicitResult):
                return answer
            request = mcp_types.ElicitRequest(params=params)
            return mcp_types.InputRequiredResult(input_requests={key: request})
        result: mcp_types.ElicitResult = await ctx.session.send_request(
            mcp_types.ElicitRequest(params=params), mcp_types.ElicitResult,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )  # fmt: skip
        return result

    async def ask_and_record(
        ctx: Context, tool: str, params: mcp_types.ElicitRequestParams
    ) -> str | mcp_types.InputRequiredResult:
        try:
            got = await elicited(ctx, tool, params)
        except MCPError as e:
            record(tool, "refused", message=e.message)
            return f"refused: {e.message}"
        if isinstance(got, mcp_types.InputRequiredResult):
            return got
        record(tool, "answered", result=got.model_dump(mode="json", by_alias=True,
                                                       exclude_none=True))  # fmt: skip
        return got.action

    @mcp.tool(description="Ask the user for their name, the plain way.")
    async def ask_raw(ctx: Context) -> str | mcp_types.InputRequiredResult:
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        }
        params = mcp_types.ElicitRequestFormParams(
            message="What is your name?", requestedSchema=schema
        )
        return await ask_and_record(ctx, "ask_raw", params)

    @mcp.tool(description="Ask the user to sign in on a web page.")
    async def ask_url(ctx: Context) -> str | mcp_types.InputRequiredResult:
        params = mcp_types.ElicitRequestURLParams(
            message="Please sign in to continue.", url="https://example.com/login",
            elicitationId="login-1",
        )  # fmt: skip
        return await ask_and_record(ctx, "ask_url", params)

    @mcp.tool(description="Ask the client to sample its model.")
    async def sample(ctx: Context) -> str | mcp_types.InputRequiredResult:
        question = mcp_types.SamplingMessage(
            role="user", content=mcp_types.TextContent(type="text", text="Say hello.")
        )
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            answers = ctx.input_responses or {}
            if SAMPLE_KEY not in answers:
                request = mcp_types.CreateMessageRequest(
                    params=mcp_types.CreateMessageRequestParams(messages=[question], max_tokens=20)
                )
                return mcp_types.InputRequiredResult(input_requests={SAMPLE_KEY: request})
            return f"sampled: {_sampled_text(answers[SAMPLE_KEY])}"
        try:
            with warnings.catch_warnings():  # sampling is deprecated as of 2026-07-28
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                result = await ctx.session.create_message([question], max_tokens=20)
        except MCPError as e:
            record("sample", "refused", message=e.message)
            return f"sampling refused: {e.message}"
        return f"sampled: {_sampled_text(result)}"

    @mcp.tool(description="An image, a link and structured data.", annotations=READ_ONLY)
    def media() -> mcp_types.CallToolResult:
        return mcp_types.CallToolResult(
            content=[
                mcp_types.ImageContent(type="image", data=PNG_1X1, mimeType="image/png"),
                mcp_types.ResourceLink(
                    type="resource_link",
                    name="report.pdf",
                    title="Quarterly report",
                    uri="file:///notes/report.pdf",
                    mimeType="application/pdf",
                ),
            ],
            structuredContent={"temperature": 21, "unit": "C"},
        )

    @mcp.tool(description="Structured weather only.", annotations=READ_ONLY)
    def weather() -> mcp_types.CallToolResult:
        return mcp_types.CallToolResult(
            content=[], structuredContent={"city": "Oslo", "temperature": 4, "sky": "cloudy"}
        )

    @mcp.tool(description="The capabilities the client declared.", annotations=READ_ONLY)
    def client_capabilities(ctx: Context) -> str:
        declared = ctx.client_capabilities
        if declared is None:
            return "{}"
        return json.dumps(declared.model_dump(mode="json", by_alias=True, exclude_none=True))

    return mcp


def _sampled_text(result: Any) -> str:
    content = getattr(result, "content", None)
    if content is None and isinstance(result, dict):
        content = result.get("content")
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(getattr(content, "text", content))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    serve_mcp(build_server(args), args.transport, args.host, args.port)


if __name__ == "__main__":
    main()
