"""Benchmark 7: how long a caller waits in silence during a slow tool call.

A 5 s tool (tests/servers/voice.py `progress`, a notice each second, or `slow`, no notices) is
called from a real LiveKit job process on the pipeline (tests/support/jobs.py: the job's real
AgentSession, the real openai plugins against the local stubs). The time measured is from the
moment the server starts the call (its own record, `time.monotonic()`: one clock for every
process on Linux) to the first request the job's TTS makes after it: the first word the caller
hears. Subjects, called in turn so machine noise hits them alike:

  - jackfield (defaults), a tool that reports progress: the filler at `fillerAfter` (1.5 s),
    then progress lines at most every `progressEvery` (5 s);
  - the same with `progressEvery: 2`: progress lines within the call too;
  - jackfield (defaults), a tool that reports nothing: the filler all the same;
  - no voice feedback (`filler: ""`, `progress: silent`): the caller hears nothing until the
    result, as with an MCP client that has no progress to speech.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from tests.support.jobs import PIPELINE_AGENT, job_worker
from tests.support.live import TOKEN, live_stack
from tests.support.openai_stub import OpenAIStub

from bench.common import REPO, Goal, Row, find, make_config, write

NAME = "voice"
CASE = "5 s tool: first word heard"
SECONDS, STEPS = 5.0, 5
FILLER_AFTER = 1.5
TURN = 60.0


@dataclass(kw_only=True)
class HeardStub(OpenAIStub):
    """The OpenAI stub, noting when each TTS request arrives (what the caller hears next)."""

    heard: list[tuple[float, str]] = field(default_factory=list)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp keeps the body: the stub reads it again
        self.heard.append((time.monotonic(), str(body.get("input", ""))))
        return await super()._speech(request)


@dataclass(frozen=True)
class Subject:
    label: str
    server: str
    call: str
    voice: str
    """The server's `voice:` settings (YAML flow mapping), "" for the agent's defaults."""


SUBJECTS = (
    Subject(
        "jackfield, progress notices",
        "talk",
        f'talk_progress {{"steps": {STEPS}, "interval": {SECONDS / STEPS}}}',
        "",
    ),  # fmt: skip
    Subject(
        "jackfield, progressEvery 2 s",
        "pace",
        f'pace_progress {{"steps": {STEPS}, "interval": {SECONDS / STEPS}}}',
        "{progressEvery: 2}",
    ),  # fmt: skip
    Subject("jackfield, no notices", "still", f'still_slow {{"seconds": {SECONDS}}}', ""),
    Subject(
        "no voice feedback",
        "quiet",
        f'quiet_progress {{"steps": {STEPS}, "interval": {SECONDS / STEPS}}}',
        '{filler: "", progress: silent}',
    ),  # fmt: skip
)


def _server(subject: Subject, record: Path) -> str:
    args = ", ".join(f'"{a}"' for a in ["-m", "tests.servers.voice", "--record", str(record)])
    voice = f"  voice: {subject.voice}\n" if subject.voice else ""
    return (
        f"apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {{name: {subject.server}}}\n"
        f"spec:\n  command: {sys.executable}\n  args: [{args}]\n  cwd: {REPO}\n"
        f"  timeouts: {{call: 30}}\n{voice}"
    )


def _started(record: Path) -> list[float]:
    lines = record.read_text().splitlines() if record.exists() else []
    return [float(r["at"]) for r in map(json.loads, lines) if r.get("event") == "started"]


@contextlib.asynccontextmanager
async def _job(root: Path, stub: OpenAIStub) -> AsyncIterator[Any]:
    async with live_stack(root) as stack:
        await stack.ready(*(s.server for s in SUBJECTS), timeout=60)
        async with job_worker(stack.hub.url, TOKEN, stub) as jobs:
            yield await jobs.start()


async def run(quick: bool) -> list[Row]:
    samples = 2 if quick else 8
    rows = {s.label: Row(NAME, CASE, s.label, base=s is SUBJECTS[0]) for s in SUBJECTS}
    lines: dict[str, list[int]] = {s.label: [] for s in SUBJECTS}
    with tempfile.TemporaryDirectory(prefix="bench-voice-") as tmp:
        root = make_config(Path(tmp))
        write(root / "agent.yaml", PIPELINE_AGENT)
        records = {s.label: Path(tmp) / f"{s.server}.jsonl" for s in SUBJECTS}
        for s in SUBJECTS:
            write(root / f"servers.d/{s.server}.yaml", _server(s, records[s.label]))
        async with HeardStub() as stub, _job(root, stub) as end:
            for _ in range(samples):
                for s in SUBJECTS:
                    calls = len(_started(records[s.label]))
                    messages = await end.turn(f"call {s.call}", timeout=TURN)
                    start = _started(records[s.label])[calls]
                    after = [at for at, _ in stub.heard if at >= start]
                    if not after:
                        raise AssertionError(f"{s.label}: nothing was said after the call")
                    rows[s.label].samples.append(after[0] - start)
                    lines[s.label].append(sum(1 for m in messages if "said" in m))
    for s in SUBJECTS:
        counts = lines[s.label]
        rows[s.label].note = f"lines spoken during the call: {min(counts)}-{max(counts)}"
    return list(rows.values())


def goals(rows: list[Row]) -> list[Goal]:
    talk = find(rows, CASE, "jackfield, progress")
    still = find(rows, CASE, "jackfield, no notices")
    quiet = find(rows, CASE, "no voice feedback")
    bound = (FILLER_AFTER + 0.5) * 1000
    return [
        Goal(
            f"voice: first word of a 5 s call p95 < {bound:,.0f} ms, 2.5x sooner than silence",
            talk.p(95) < bound and still.p(95) < bound and quiet.p(50) >= 2.5 * talk.p(50),
            f"p50 {talk.p(50):,.0f} ms with notices, {still.p(50):,.0f} ms without, "
            f"{quiet.p(50):,.0f} ms with no voice feedback",
        )
    ]
