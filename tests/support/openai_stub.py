"""An OpenAI-compatible chat-completions server on 127.0.0.1, for the real `openai.LLM` plugin.

This is a network-boundary fake: everything in front of it (livekit's `openai.LLM`, the openai
SDK, its HTTP client) is the real thing. `POST /v1/chat/completions` answers with a streamed
response (`data: {chunk}` events, then `data: [DONE]`), scripted from the conversation:

  the request forces a tool            -> one call of that tool, its arguments the next entry
    (`tool_choice: {"type": "function",    of `script` (first in first out), else `{}`: how
     "function": {"name": ...}}`)          a test says what the model reads out of a caller's
                                           words (`stub.script.append({"tool": "fill_form",
                                           "arguments": {"name": "Ada"}})`; an entry naming
                                           another tool is a test bug and fails the request)
  last message is a tool result        -> text: "The tool said: <its content>" (agent lines
                                          said during the call, after the result, are skipped)
  last user message `call TOOL {json}` -> one tool call
  anything else                        -> text: "You said: <the message>"

Every request is recorded, and every tool's `function.parameters` is checked with
`Draft202012Validator.check_schema` and its name against OpenAI's rule, so tests assert on what
a real provider would have rejected.

It also fakes the two audio endpoints, for the real `openai.TTS` and `openai.STT`:

  POST /v1/audio/speech          -> silent PCM16 24 kHz mono, 20 ms a word (at most 1 s). Asked
                                    for `response_format="pcm"` with `stream_format="sse"` (what
                                    `openai.TTS` sends for gpt-4o-mini-tts) it streams
                                    `speech.audio.delta` events as OpenAI does; anything else
                                    gets the raw bytes as `Content-Type: audio/pcm`, like an
                                    OpenAI-compatible server that ignores both options (the
                                    plugin trusts the declared type, so no mp3 codec is needed).
  POST /v1/audio/transcriptions  -> the next string of `transcripts` (a queue), else "".

`openai.STT` takes this HTTP path unless it is given `use_realtime=True` or a realtime-only
model (gpt-realtime-whisper, gpt-live-transcribe); its default gpt-4o-mini-transcribe is fine.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tests.support.stub_server import StubServer

NAME_RULE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What OpenAI accepts as a function name."""


@dataclass(kw_only=True)
class OpenAIStub(StubServer):
    requests: list[dict[str, Any]] = field(default_factory=list)
    tools_seen: dict[str, Any] = field(default_factory=dict)
    """Every tool name that reached the stub -> the last `parameters` sent for it."""
    schema_problems: dict[str, str] = field(default_factory=dict)
    """Tool name -> why its parameters are not a valid JSON Schema (2020-12)."""
    bad_names: set[str] = field(default_factory=set)
    speech: list[dict[str, Any]] = field(default_factory=list)
    """Every `/audio/speech` request body; the text to say is `input`."""
    transcripts: list[str] = field(default_factory=list)
    """What the next `/audio/transcriptions` requests hear, first in first out; then ""."""
    transcription_requests: list[dict[str, Any]] = field(default_factory=list)
    """Every `/audio/transcriptions` form, the file as `file_name`, `file_type`, `file_bytes`."""
    script: list[dict[str, Any]] = field(default_factory=list)
    """What the next requests that force a tool get: `{"tool": name, "arguments": {...}}`."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)

    # --- what was seen ----------------------------------------------------------------------------

    def _inspect(self, body: dict[str, Any]) -> None:
        for tool in body.get("tools") or []:
            function = tool.get("function") or {}
            name = str(function.get("name"))
            parameters = function.get("parameters")
            self.tools_seen[name] = parameters
            if not NAME_RULE.match(name):
                self.bad_names.add(name)
            try:
                Draft202012Validator.check_schema(parameters)
            except SchemaError as e:
                self.schema_problems[name] = e.message

    @staticmethod
    def tool_results(body: dict[str, Any]) -> list[str]:
        """The contents of the `role: tool` messages in one request."""
        return [str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "tool"]

    # --- answering --------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini",
                                                               "object": "model"}]})  # fmt: skip

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self._inspect(body)
        chunks = self._answer(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.speech.append(body)
        pcm = _silence(str(body.get("input", "")))
        sse = body.get("stream_format") == "sse" and body.get("response_format") == "pcm"
        if not sse:
            return web.Response(body=pcm, content_type="audio/pcm")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        step = len(pcm) // 2 or len(pcm)  # two deltas, to exercise the streaming
        for start in range(0, len(pcm), step):
            delta = base64.b64encode(pcm[start : start + step]).decode()
            await _sse(response, {"type": "speech.audio.delta", "audio": delta})
        usage = {"input_tokens": 5, "output_tokens": 10, "total_tokens": 15}
        await _sse(response, {"type": "speech.audio.done", "usage": usage})
        await response.write_eof()
        return response

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        record: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                content = value.file.read()
                record.update(
                    file_name=value.filename, file_type=value.content_type, file_bytes=len(content)
                )
            else:
                record[key] = value
        self.transcription_requests.append(record)
        text = self.transcripts.pop(0) if self.transcripts else ""
        response_format = record.get("response_format", "json")
        if response_format == "text":
            return web.Response(text=text)
        if response_format == "verbose_json":
            language = str(record.get("language") or "english")
            verbose = {"task": "transcribe", "language": language, "duration": 0.0, "text": text}
            return web.json_response(verbose)
        usage = {"type": "duration", "seconds": 1}
        return web.json_response({"text": text, "usage": usage})

    def _answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        messages = body.get("messages") or [{}]
        last = _answered(messages)
        model = str(body.get("model", "stub"))
        reply_id = f"chatcmpl-{next(self._ids)}"
        content = _text(last.get("content"))
        forced = body.get("tool_choice")
        if isinstance(forced, dict) and (forced.get("function") or {}).get("name"):
            name = str(forced["function"]["name"])
            entry = self.script.pop(0) if self.script else {"tool": name, "arguments": {}}
            if entry.get("tool", name) != name:
                raise web.HTTPBadRequest(text=f"scripted {entry['tool']!r}, forced {name!r}")
            arguments = json.dumps(entry.get("arguments", {}))
            return _call_chunks(reply_id, model, name, arguments, f"call_{next(self._ids)}")
        if last.get("role") == "tool":
            return _text_chunks(reply_id, model, f"The tool said: {content}")
        if last.get("role") == "user" and content.startswith("call "):
            _, name, *rest = content.split(" ", 2)
            arguments = rest[0] if rest else "{}"
            return _call_chunks(reply_id, model, name, arguments, f"call_{next(self._ids)}")
        return _text_chunks(reply_id, model, f"You said: {content}")


def _answered(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The message the reply answers: the last one, except that what the agent said while a
    tool ran (a filler, progress) lands after the tool's result, which is what is answered."""
    for message in reversed(messages):
        if message.get("role") != "assistant" or message.get("tool_calls"):
            return message if message.get("role") == "tool" else messages[-1]
    return messages[-1]


SPEECH_RATE = 24000
"""Samples a second of what `/audio/speech` returns (PCM16 mono, what openai.TTS expects)."""


def _silence(text: str) -> bytes:
    """PCM16 silence for `text`: 20 ms a word, at least one word's worth, at most 1 s."""
    words = max(1, len(text.split()))
    samples = min(words * SPEECH_RATE // 50, SPEECH_RATE)
    return bytes(2 * samples)


async def _sse(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(event)}\n\n".encode())


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _chunk(
    reply_id: str, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": reply_id,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage(reply_id: str, model: str) -> dict[str, Any]:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    return {"id": reply_id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [], "usage": usage}  # fmt: skip


def _text_chunks(reply_id: str, model: str, text: str) -> list[dict[str, Any]]:
    half = len(text) // 2
    return [
        _chunk(reply_id, model, {"role": "assistant", "content": ""}),
        _chunk(reply_id, model, {"content": text[:half]}),
        _chunk(reply_id, model, {"content": text[half:]}),
        _chunk(reply_id, model, {}, "stop"),
        _usage(reply_id, model),
    ]


def _call_chunks(
    reply_id: str, model: str, name: str, arguments: str, call_id: str
) -> list[dict[str, Any]]:
    half = len(arguments) // 2
    start = {"index": 0, "id": call_id, "type": "function",
             "function": {"name": name, "arguments": arguments[:half]}}  # fmt: skip
    rest = {"index": 0, "function": {"arguments": arguments[half:]}}
    return [
        _chunk(reply_id, model, {"role": "assistant", "content": None, "tool_calls": [start]}),
        _chunk(reply_id, model, {"tool_calls": [rest]}),
        _chunk(reply_id, model, {}, "tool_calls"),
        _usage(reply_id, model),
    ]
