"""An OpenAI Realtime websocket server on 127.0.0.1, for the real `openai.realtime.RealtimeModel`.

This is a network-boundary fake: everything in front of it (livekit's `RealtimeModel`, its
protocol engine `livekit.agents.llm._realtime.openai`, aiohttp's websocket client, a real
`AgentSession`) is the real thing. Pass `base_url=stub.base_url` (`http://127.0.0.1:PORT/v1`);
the client turns it into `ws://127.0.0.1:PORT/v1/realtime?model=...`.

Each connection keeps its own conversation, as the real server does: `session.update` is merged
and answered with `session.updated`; `conversation.item.create`/`.delete`/`.truncate` are applied
and confirmed (`conversation.item.added` + `conversation.item.done`, `.deleted`, `.truncated`);
`response.create` is scripted like tests/support/openai_stub.py, from the last conversation item:

  a `function_call_output`          -> "The tool said: <its output>" (assistant messages after
                                       it, said while the tool ran, are skipped)
  a user message `call TOOL {json}` -> one function call (name TOOL, arguments the json)
  a user message                    -> "You said: <its text>"
  anything else (e.g. a greeting)   -> the last line of the response's `instructions` if that
                                       is `call TOOL {json}`, else "Hello from the realtime stub."
  instructions ending `Say only: TEXT` -> TEXT, whatever the last item (a model that obeys;
                                       how the agent says a line without TTS)

Replies are audio (a little PCM16 24 kHz silence plus its transcript) or text, following the
session's `output_modalities`, in the order the real server sends them.

`caller_says(text)` is the caller speaking into the call, as the server hears it with its own
turn detection: `input_audio_buffer.speech_started` / `.speech_stopped` / `.committed`, the
user item (its transcript not yet known to the client), a response the server starts by itself
when the session's turn detection has `create_response` (not tied to any `response.create`, so
the client sees it as server-initiated), then
`conversation.item.input_audio_transcription.completed` with `text`, after that response began,
as OpenAI's transcripts usually come.

Failures, for the client's reconnect loop (`RealtimeSession._main_task`):

  refuse="http"   the handshake is answered `refuse_status` (403): the client sees a retryable
                  APIConnectionError, emits `error` recoverable=True per retry and then
                  recoverable=False once `conn_options.max_retry` retries are spent.
  refuse="fatal"  the socket is accepted, then an `error` event with `fatal_code`
                  (invalid_api_key) is sent and the socket closed: not retried at all, `error`
                  recoverable=False at once.
  reject_tools    a `session.update` offering one of these tool names is answered with an
                  `error` (invalid_function_parameters) naming that event, and not applied.
  fail_now()      aborts every live connection (no close frame) and sets `refuse`: the drop
                  is a retryable error (recoverable=True, unless max_retry=0), then the
                  reconnects fail as above.

In livekit-agents 1.8.9 the AgentSession's "error" event carries the final recoverable=False, but
its "close" event never fires: the close it starts re-raises the error from
`RealtimeSession.aclose()` (see tests/test_model_stubs.py).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web

from tests.support.stub_server import StubServer

Refusal = Literal["http", "fatal"]

GREETING = "Hello from the realtime stub."
SAY_ONLY = "Say only: "
SAMPLE_RATE = 24000
AUDIO_DELTA = base64.b64encode(bytes(2 * SAMPLE_RATE // 20)).decode()
"""50 ms of PCM16 mono silence at 24 kHz, base64: every `response.output_audio.delta`."""
USAGE = {"total_tokens": 15, "input_tokens": 10, "output_tokens": 5,
         "input_token_details": {"text_tokens": 10, "audio_tokens": 0},
         "output_token_details": {"text_tokens": 5, "audio_tokens": 0}}  # fmt: skip


@dataclass(eq=False)
class _Connection:
    """One websocket and the conversation the server holds for it."""

    ws: web.WebSocketResponse
    request: web.Request
    session: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)

    def index(self, item_id: str | None) -> int | None:
        return next((i for i, item in enumerate(self.items) if item.get("id") == item_id), None)

    def previous_id(self, index: int) -> str | None:
        return str(self.items[index - 1]["id"]) if index > 0 else None


@dataclass(kw_only=True)
class RealtimeStub(StubServer):
    refuse: Refusal | None = None
    """How new connections are refused (settable at any time); None accepts them."""
    refuse_status: int = 403
    """The HTTP status of a `refuse="http"` handshake."""
    fatal_code: str = "invalid_api_key"
    """The error code sent on a `refuse="fatal"` connection; one `_is_fatal_error` knows."""
    reject_tools: set[str] = field(default_factory=set)
    """A `session.update` offering one of these tools is refused with an `error` naming it."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every client event, from every connection, in arrival order."""
    handshakes: list[dict[str, str]] = field(default_factory=list)
    """Every connection attempt, refused or not: `path_qs` and `authorization`."""
    connections: int = 0
    """Websocket handshakes accepted (a `refuse="fatal"` connection counts; "http" does not)."""
    server_responses: int = 0
    """Responses the server started by itself after a `caller_says` (create_response)."""
    _live: set[_Connection] = field(default_factory=set)
    _received: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/realtime", self._realtime)

    async def stop(self) -> None:
        for conn in list(self._live):
            await conn.ws.close()
        await super().stop()

    async def fail_now(self, refuse_after: Refusal | None = "http") -> None:
        """Drop every live connection abruptly (no close frame); refuse reconnects as given."""
        self.refuse = refuse_after
        for conn in list(self._live):
            self._live.discard(conn)
            if conn.request.transport is not None:
                conn.request.transport.abort()

    async def caller_says(self, text: str) -> None:
        """The caller speaks `text` on every live connection (see the module docstring)."""
        for conn in list(self._live):
            item_id = self._id("item")
            await self._send(conn, "input_audio_buffer.speech_started", audio_start_ms=0,
                             item_id=item_id)  # fmt: skip
            await self._send(conn, "input_audio_buffer.speech_stopped", audio_end_ms=600,
                             item_id=item_id)  # fmt: skip
            previous = str(conn.items[-1]["id"]) if conn.items else None
            await self._send(conn, "input_audio_buffer.committed", item_id=item_id,
                             previous_item_id=previous)  # fmt: skip
            heard = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                     "status": "completed",
                     "content": [{"type": "input_audio", "transcript": None}]}  # fmt: skip
            conn.items.append({**heard, "content": [{"type": "input_audio", "transcript": text}]})
            for kind in ("conversation.item.added", "conversation.item.done"):
                await self._send(conn, kind, previous_item_id=previous, item=heard)
            detection = ((conn.session.get("audio") or {}).get("input") or {}).get(
                "turn_detection")  # fmt: skip
            if isinstance(detection, dict) and detection.get("create_response", True):
                self.server_responses += 1
                await self._respond(conn, {})
            await self._send(conn, "conversation.item.input_audio_transcription.completed",
                             item_id=item_id, content_index=0, transcript=text)  # fmt: skip

    # --- what was seen ----------------------------------------------------------------------------

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait, re-checking on every client event, until `condition()` holds (or time out).

        The client only queues what it sends (`update_tools`, `update_instructions`, ...), so a
        test waits here before asserting on `events`."""
        async with self._received:
            await asyncio.wait_for(self._received.wait_for(condition), timeout)

    @property
    def session_updates(self) -> list[dict[str, Any]]:
        """The `session` payloads of the `session.update` events, in order."""
        return [e.get("session") or {} for e in self.events if e.get("type") == "session.update"]

    @property
    def responses(self) -> list[dict[str, Any]]:
        """The `response` payloads of the `response.create` events, in order."""
        return [e.get("response") or {} for e in self.events if e.get("type") == "response.create"]

    def tools_seen(self) -> list[str]:
        """The tool names of the last `session.update` that carried `tools`."""
        for session in reversed(self.session_updates):
            if "tools" in session:
                return [str(t.get("name")) for t in session["tools"] or []]
        return []

    def instructions(self) -> str | None:
        """The last `instructions` a `session.update` sent, None if none did."""
        for session in reversed(self.session_updates):
            if "instructions" in session:
                return str(session["instructions"])
        return None

    def turn_detection(self) -> dict[str, Any] | None:
        """The last `audio.input.turn_detection` sent (None: turned off); LookupError if never."""
        for session in reversed(self.session_updates):
            audio_input = (session.get("audio") or {}).get("input") or {}
            if "turn_detection" in audio_input:
                value: dict[str, Any] | None = audio_input["turn_detection"]
                return value
        raise LookupError("no session.update carried turn_detection")

    # --- the connection -------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_stub{next(self._ids)}"

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        self.handshakes.append({"path_qs": request.path_qs, "authorization": authorization})
        if self.refuse == "http":
            body = {"error": {"message": "refused by the stub", "type": "server_error"}}
            return web.json_response(body, status=self.refuse_status)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        session = {"object": "realtime.session", "id": self._id("sess"), "type": "realtime",
                   "model": request.query.get("model", "gpt-realtime"),
                   "output_modalities": ["audio"], "instructions": ""}  # fmt: skip
        conn = _Connection(ws=ws, request=request, session=session)
        if self.refuse == "fatal":
            await self._error(conn, {}, self.fatal_code, f"refused by the stub: {self.fatal_code}")
            await ws.close()
            return ws
        self._live.add(conn)
        try:
            await self._send(conn, "session.created", session=conn.session)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    event = json.loads(msg.data)
                    self.events.append(event)
                    async with self._received:
                        self._received.notify_all()
                    await self._handle(conn, event)
        finally:
            self._live.discard(conn)
        return ws

    async def _send(self, conn: _Connection, kind: str, **fields: Any) -> None:
        if not conn.ws.closed:
            await conn.ws.send_json({"type": kind, "event_id": self._id("event"), **fields})

    async def _error(self, conn: _Connection, event: dict[str, Any], code: str, text: str) -> None:
        """An `error` event answering the client `event` (its event_id lets the client match)."""
        error = {"type": "invalid_request_error", "code": code, "message": text, "param": None,
                 "event_id": event.get("event_id")}  # fmt: skip
        await self._send(conn, "error", error=error)

    async def _handle(self, conn: _Connection, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            offered = {str(t.get("name")) for t in (event.get("session") or {}).get("tools") or []}
            if refused := sorted(offered & self.reject_tools):
                text = f"Invalid schema for function {refused[0]!r}"  # as OpenAI words it
                await self._error(conn, event, "invalid_function_parameters", text)
                return
            _merge(conn.session, event.get("session") or {})
            await self._send(conn, "session.updated", session=conn.session)
        elif kind == "conversation.item.create":
            await self._create_item(conn, event)
        elif kind == "conversation.item.delete":
            await self._delete_item(conn, event)
        elif kind == "conversation.item.truncate":
            keys = ("item_id", "content_index", "audio_end_ms")
            await self._send(conn, "conversation.item.truncated", **{k: event.get(k) for k in keys})
        elif kind == "input_audio_buffer.clear":
            await self._send(conn, "input_audio_buffer.cleared")
        elif kind == "response.cancel":  # every response is over before the client can cancel
            text = "Cancellation failed: no active response found"
            await self._error(conn, event, "response_cancel_not_active", text)
        elif kind == "response.create":
            await self._respond(conn, event.get("response") or {})

    async def _create_item(self, conn: _Connection, event: dict[str, Any]) -> None:
        item = {**event.get("item", {}), "object": "realtime.item", "status": "completed"}
        item.setdefault("id", self._id("item"))
        if conn.index(item["id"]) is not None:
            text = f"an item with id {item['id']} already exists"
            await self._error(conn, event, "item_create_duplicate_item_id", text)
            return
        previous = event.get("previous_item_id")
        if previous == "root":
            index = 0
        elif previous is None:
            index = len(conn.items)
        elif (at := conn.index(previous)) is not None:
            index = at + 1
        else:
            text = f"no item with id {previous}"
            await self._error(conn, event, "item_create_invalid_previous_item_id", text)
            return
        conn.items.insert(index, item)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self._send(conn, kind, previous_item_id=conn.previous_id(index), item=item)

    async def _delete_item(self, conn: _Connection, event: dict[str, Any]) -> None:
        index = conn.index(event.get("item_id"))
        if index is None:
            text = f"no item with id {event.get('item_id')}"
            await self._error(conn, event, "item_delete_invalid_item_id", text)
            return
        del conn.items[index]
        await self._send(conn, "conversation.item.deleted", item_id=event["item_id"])

    # --- answering --------------------------------------------------------------------------------

    def _script(self, conn: _Connection, params: dict[str, Any]) -> tuple[str, str] | str:
        """(tool name, arguments) for a function call, or the text of the reply."""
        said = told_to_say(params)
        if said is not None:
            return said
        last = _answered(conn.items)
        if last.get("type") == "function_call_output":
            return f"The tool said: {last.get('output')}"
        if last.get("type") == "message" and last.get("role") == "user":
            said = _text(last)
            return _call(said) or f"You said: {said}"
        lines = str(params.get("instructions") or "").splitlines()
        return (_call(lines[-1]) if lines else None) or GREETING

    async def _respond(self, conn: _Connection, params: dict[str, Any]) -> None:
        response: dict[str, Any] = {"object": "realtime.response", "id": self._id("resp"),
                                    "status": "in_progress", "status_details": None,
                                    "output": [], "metadata": params.get("metadata")}  # fmt: skip
        await self._send(conn, "response.created", response=response)
        script = self._script(conn, params)
        refs = {"response_id": response["id"], "output_index": 0}
        if isinstance(script, tuple):
            item = await self._function_call(conn, refs, *script)
        else:
            item = await self._message(conn, refs, script)
        done = {**response, "status": "completed", "output": [item], "usage": USAGE}
        await self._send(conn, "response.done", response=done)

    async def _add_output_item(
        self, conn: _Connection, refs: dict[str, Any], item: dict[str, Any]
    ) -> None:
        conn.items.append(dict(item))
        previous = conn.previous_id(len(conn.items) - 1)
        await self._send(conn, "response.output_item.added", **refs, item=item)
        await self._send(conn, "conversation.item.added", previous_item_id=previous, item=item)

    async def _finish_output_item(
        self, conn: _Connection, refs: dict[str, Any], item: dict[str, Any]
    ) -> None:
        index = conn.index(item["id"]) or 0
        conn.items[index] = item
        previous = conn.previous_id(index)
        await self._send(conn, "response.output_item.done", **refs, item=item)
        await self._send(conn, "conversation.item.done", previous_item_id=previous, item=item)

    async def _function_call(
        self, conn: _Connection, refs: dict[str, Any], name: str, arguments: str
    ) -> dict[str, Any]:
        item_id, call_id = self._id("item"), self._id("call")
        item = {"id": item_id, "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "name": name, "call_id": call_id,
                "arguments": ""}  # fmt: skip
        await self._add_output_item(conn, refs, item)
        call = {**refs, "item_id": item_id, "call_id": call_id}
        for delta in _halves(arguments):
            await self._send(conn, "response.function_call_arguments.delta", **call, delta=delta)
        await self._send(
            conn, "response.function_call_arguments.done", **call, name=name, arguments=arguments
        )
        item = {**item, "status": "completed", "arguments": arguments}
        await self._finish_output_item(conn, refs, item)
        return item

    async def _message(self, conn: _Connection, refs: dict[str, Any], text: str) -> dict[str, Any]:
        item_id = self._id("item")
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message",
                                "status": "in_progress", "role": "assistant",
                                "content": []}  # fmt: skip
        await self._add_output_item(conn, refs, item)
        audio = "audio" in (conn.session.get("output_modalities") or ["audio"])
        # audio: the text is the transcript of the audio; text: it is the text itself
        if audio:
            part_type, stream, key = "audio", "response.output_audio_transcript", "transcript"
        else:
            part_type, stream, key = "text", "response.output_text", "text"
        part = {**refs, "item_id": item_id, "content_index": 0}
        added = {"type": part_type, key: ""}
        await self._send(conn, "response.content_part.added", **part, part=added)
        for delta in _halves(text):
            await self._send(conn, f"{stream}.delta", **part, delta=delta)
            if audio:
                await self._send(conn, "response.output_audio.delta", **part, delta=AUDIO_DELTA)
        if audio:
            await self._send(conn, "response.output_audio.done", **part)
        await self._send(conn, f"{stream}.done", **part, **{key: text})
        done_part = {"type": part_type, key: text}
        await self._send(conn, "response.content_part.done", **part, part=done_part)
        content = {"type": f"output_{part_type}", key: text}
        item = {**item, "status": "completed", "content": [content]}
        await self._finish_output_item(conn, refs, item)
        return item


def _answered(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The item a response answers: the last one, except that what the agent said while a tool
    ran (a filler, progress) may come after the tool's output, which is what is answered."""
    for item in reversed(items):
        if not (item.get("type") == "message" and item.get("role") == "assistant"):
            return item if item.get("type") == "function_call_output" else items[-1]
    return items[-1] if items else {}


def told_to_say(response: dict[str, Any]) -> str | None:
    """TEXT when a `response.create`'s instructions end in the line `Say only: TEXT`."""
    lines = str(response.get("instructions") or "").splitlines()
    if lines and lines[-1].startswith(SAY_ONLY):
        return lines[-1][len(SAY_ONLY) :]
    return None


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Merge a `session.update` into the session: nested objects key by key, as OpenAI does."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _halves(text: str) -> tuple[str, str]:
    """Two deltas, so the client's accumulation is exercised."""
    half = len(text) // 2
    return text[:half], text[half:]


def _text(item: dict[str, Any]) -> str:
    """The text of a message item: its text parts, or the transcripts of its audio parts."""
    parts = item.get("content") or []
    return "".join(str(p.get("text") or p.get("transcript") or "") for p in parts)


def _call(text: str) -> tuple[str, str] | None:
    """`call TOOL {json}` -> (TOOL, json); anything else -> None."""
    if not text.startswith("call "):
        return None
    _, name, *rest = text.split(" ", 2)
    return name, rest[0] if rest else "{}"
