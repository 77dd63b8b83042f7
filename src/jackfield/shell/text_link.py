"""Typed turns into a real LiveKit job process: the link between a text console and a job.

A LiveKit job runs in a process of its own, in a room; without a LiveKit server (the console,
the tests) nobody is in that room to talk to it. `TextLink` is a small JSON-lines server on
127.0.0.1 that the job connects back to (its address and a token travel in the job's config).
When the console closes the link, the job ends, as a call ends when the caller hangs up.

The console sends what a caller would do:

  {"user": text}       a typed turn, delivered as speech would be: the answer to a question
                       the agent is waiting on (no turn of its own), else a new turn, which
                       first interrupts a turn still running (like talking over the agent)
  {"interrupt": true}  talking over the agent without a turn (`session.interrupt()`)
  {"participant": {"identity": id, "name": n|null, "attributes": {k: v}}, "metadata"?: text}
                       the caller joined, or changed its name or attributes: the session's
                       caller context (core/caller_context.py) is this participant's from now
                       on, in place of the fake job's stand-in (`mock_user`); `metadata`, when
                       given, plays the job's dispatch metadata. Strings only.

The job answers with what happened. Times `at` are the job's `time.monotonic()` (one clock for
every process on Linux):

  {"ready": {...}}                       a session started (mode, revision, tools, preloaded)
  {"agent": text, "at": t}               the agent said it (a conversation item)
  {"tool": name, "arguments": json, "output": text, "is_error": bool}   a call finished
  {"turn_done": true, "error": e|null}   the turn of one {"user": ...} is over
  {"said": text, "kind": k, "call": name, "at": t}   a line the agent was told to say during a
                                         call; kind: filler, progress, question, notice
  {"question": text, "kind": k, "call": name, "at": t}   the agent waits for the caller's answer
                                         (kind: confirmation, elicitation)
  {"answer": text, "to": question, "at": t}   that answer was heard (typed or spoken)
  {"confirmation": {"tool", "question", "answer": "yes"|"no"|"timeout"}}
  {"cancelled": {"tool", "reason": "interrupted"|"hangup", "at": t}}   a call was cancelled
  {"elicitation": {"tool", "mode", "action", "content"?, "reason"?, "at"}}   a server's question
                                         was answered (accept, decline, cancel)
  {"interrupted": {"at": t}}             the ack of {"interrupt": true}
  {"fallback": reason}, {"updated": ...}, {"update_rejected": message}
  {"caller": {"identity", "tools", "error"?}}   the answer to {"participant": ...}: the hub link
                                         carries the new context and the agent's tools are
                                         what the hub serves that caller (`tools`: their
                                         names, sorted); `error` when that did not happen in
                                         time (the tools are then the agent's as they are)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 1024 * 1024
JOIN_TIMEOUT = 60.0
"""Seconds `ConsoleEnd.join` waits for the job's answer (the job gives up after 30)."""


@dataclass(frozen=True)
class PlayedParticipant:
    """The participant a console plays (`{"participant": ...}`): what CallerContext.of reads
    of a LiveKit participant."""

    identity: str
    name: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, message: dict[str, Any]) -> PlayedParticipant:
        """The participant of a console's message (as `JobChannel.messages` let it through)."""
        played = message["participant"]
        return cls(played["identity"], played.get("name"), dict(played.get("attributes") or {}))

    def __repr__(self) -> str:  # who the caller is stays out of logs and tracebacks
        return "PlayedParticipant(...)"


def _is_participant(message: dict[str, Any]) -> bool:
    played = message.get("participant")
    if not isinstance(played, dict) or not isinstance(played.get("identity"), str):
        return False
    name, attributes = played.get("name"), played.get("attributes") or {}
    return (
        (name is None or isinstance(name, str))
        and isinstance(attributes, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())
        and isinstance(message.get("metadata", ""), str)
    )


@dataclass(frozen=True)
class TextLinkAddress:
    host: str
    port: int
    token: str

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"TextLinkAddress({self.host}:{self.port})"


class JobChannel:
    """The job's end: turns in, events out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, address: TextLinkAddress, *, job: str) -> JobChannel:
        reader, writer = await asyncio.open_connection(address.host, address.port, limit=MAX_LINE)
        channel = cls(reader, writer)
        channel.send({"hello": address.token, "job": job})
        return channel

    def send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(json.dumps(message).encode() + b"\n")

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """What the console sends, until it leaves: `{"user": text}`, `{"interrupt": true}` or
        a well-formed `{"participant": ...}`; anything else is dropped."""
        while line := await self._reader.readline():
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and (
                    isinstance(message.get("user"), str)
                    or message.get("interrupt") is True
                    or _is_participant(message)
                ):
                    yield message

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class ConsoleEnd:
    """The console's end of one job's link."""

    def __init__(
        self, job: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.job = job
        self._reader = reader
        self._writer = writer
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pump = asyncio.create_task(self._read(), name=f"text-link-{job}")

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict):
                        await self.events.put(message)
        finally:
            await self.events.put(None)

    async def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The job's next message; None when the job has gone."""
        async with asyncio.timeout(timeout):
            return await self.events.get()

    async def until(self, key: str, timeout: float | None = None) -> dict[str, Any]:
        """Skip to the next message carrying `key`.

        Raises:
            ConnectionError: the job went away first.
        """
        while True:
            message = await self.next(timeout)
            if message is None:
                raise ConnectionError(f"job {self.job} left before sending {key!r}")
            if key in message:
                return message

    async def collect(self, key: str, timeout: float | None = None) -> list[dict[str, Any]]:
        """The job's messages up to and including the next one carrying `key`.

        Raises:
            ConnectionError: the job went away first.
        """
        seen: list[dict[str, Any]] = []
        while True:
            message = await self.next(timeout)
            if message is None:
                raise ConnectionError(f"job {self.job} left before sending {key!r}")
            seen.append(message)
            if key in message:
                return seen

    async def say(self, text: str) -> None:
        """Send what the caller says, without waiting for anything."""
        await self._write({"user": text})

    async def interrupt(self) -> None:
        """Talk over the agent (the job answers `{"interrupted": ...}`)."""
        await self._write({"interrupt": True})

    async def join(
        self,
        identity: str,
        *,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        metadata: str | None = None,
        timeout: float = JOIN_TIMEOUT,
    ) -> dict[str, Any]:
        """Play the participant `identity` joining (or, again, changing its name or attributes;
        `metadata` plays the job's dispatch metadata). Returns the job's `caller` answer once
        its agent follows (`{"identity", "tools", "error"?}`); the job's messages before that
        answer are skipped.

        Raises:
            ConnectionError: the job went away first.
            TimeoutError: no answer in `timeout` seconds.
        """
        played: dict[str, Any] = {"identity": identity, "name": name,
                                  "attributes": dict(attributes or {})}  # fmt: skip
        message: dict[str, Any] = {"participant": played}
        if metadata is not None:
            message["metadata"] = metadata
        await self._write(message)
        return dict((await self.until("caller", timeout))["caller"])

    async def _write(self, message: dict[str, Any]) -> None:
        self._writer.write(json.dumps(message).encode() + b"\n")
        await self._writer.drain()

    async def turn(self, text: str, timeout: float | None = None) -> list[dict[str, Any]]:
        """Send one user turn; the job's messages up to the end of that turn."""
        await self.say(text)
        return await self.collect("turn_done", timeout)

    async def aclose(self) -> None:
        """Hang up: the job ends."""
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        await asyncio.gather(self._pump, return_exceptions=True)


class TextLink:
    """The console's server: jobs connect to it; each connection is one job's `ConsoleEnd`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.token = secrets.token_urlsafe(24)
        self.jobs: asyncio.Queue[ConsoleEnd] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._ends: list[ConsoleEnd] = []

    @property
    def address(self) -> TextLinkAddress:
        assert self._server is not None, "start() first"
        port = self._server.sockets[0].getsockname()[1]
        return TextLinkAddress(self.host, int(port), self.token)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0, limit=MAX_LINE)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                hello = json.loads(await reader.readline())
            token = str(hello.get("hello", ""))
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                raise PermissionError("wrong token")
        except Exception:
            writer.close()
            return
        end = ConsoleEnd(str(hello.get("job", "?")), reader, writer)
        self._ends.append(end)
        await self.jobs.put(end)

    async def next_job(self, timeout: float | None = None) -> ConsoleEnd:
        async with asyncio.timeout(timeout):
            return await self.jobs.get()

    async def aclose(self) -> None:
        for end in self._ends:
            await end.aclose()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> TextLink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
