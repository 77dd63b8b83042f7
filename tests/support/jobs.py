"""Real LiveKit job processes without a LiveKit server, the way `jackfield console` runs them.

A `Worker` in unregistered mode (livekit-agents' `AgentServer.run(unregistered=True)`) launches
each job with `simulate_job(fake_job=True)` in a forkserver process of its own; the job builds
its session from the hub and links back to a `TextLink` here, so a test types turns into the
job's real AgentSession and reads what it did. The model services are the only fakes: the
OpenAI-compatible stub (chat, TTS, STT) and the Realtime websocket stub.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from jackfield.shell.agent import JobConfig, JobEntry
from jackfield.shell.text_link import ConsoleEnd, TextLink
from jackfield.shell.worker import PRELOAD, Worker, WorkerOptions
from tests.conftest import REPO
from tests.support.openai_stub import OpenAIStub
from tests.support.process import MARK_VAR
from tests.support.realtime_stub import RealtimeStub

JOB_START = 60.0
"""Seconds a job may take to come up (a cold forkserver imports livekit on a loaded machine)."""
TURN = 30.0

PIPELINE_AGENT = (
    "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
    "spec:\n  instructions: You are a test agent.\n  greeting: Greet the caller.\n"
    "  llm: {mode: pipeline, model: gpt-4o-mini}\n"
)
REALTIME_AGENT = (
    "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
    "spec:\n  instructions: You are a test agent.\n  greeting: Greet the caller.\n"
    "  llm: {mode: realtime, model: gpt-realtime}\n"
    "  fallback: {mode: pipeline, model: gpt-4o-mini}\n"
)


JOB_HOST = [sys.executable, "-m", "tests.job_host"]
"""`jackfield run` as tests/job_host.py runs it: the production App, jobs linked to a TextLink."""


def job_host_env(link: TextLink, openai: OpenAIStub) -> dict[str, str]:
    """The environment of a JOB_HOST process whose jobs link to `link` and talk to `openai`."""
    address = link.address
    return {
        "JACKFIELD_TEST_TEXT_LINK": f"{address.host}:{address.port}:{address.token}",
        "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": openai.base_url,
        "JACKFIELD_AGENT_IDLE_PROCESSES": "0", "PYTHONPATH": str(REPO),
        MARK_VAR: "job-host",
    }  # fmt: skip


@dataclass
class Jobs:
    worker: Worker
    link: TextLink

    async def start(self, room: str = "room", *, greeted: bool = True) -> ConsoleEnd:
        """Launch one job process; return its end of the link once its session is up (and,
        with `greeted`, once the greeting has been said)."""
        await self.worker.simulate(room)
        end = await self.link.next_job(timeout=JOB_START)
        ready = (await end.until("ready", timeout=JOB_START))["ready"]
        # nothing the job needs is imported on its event loop (no stall at the first call)
        assert ready["preloaded"] == sorted(PRELOAD), ready
        if greeted:
            await end.until("agent", timeout=TURN)
        return end


def said(messages: list[dict[str, Any]]) -> list[str]:
    return [m["agent"] for m in messages if "agent" in m]


def tool_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if "tool" in m]


async def next_update(end: ConsoleEnd, *, having: str, timeout: float = TURN) -> dict[str, Any]:
    """The first update the job applied whose tools or instructions contain `having`."""
    while True:
        update = (await end.until("updated", timeout=timeout))["updated"]
        if having in update["tools"] or having in update["instructions"]:
            return dict(update)


@contextlib.asynccontextmanager
async def job_worker(
    hub_url: str,
    token: str,
    openai: OpenAIStub,
    realtime: RealtimeStub | None = None,
    *,
    agent_spec: dict[str, Any] | None = None,
) -> AsyncIterator[Jobs]:
    async with TextLink() as link:
        config = JobConfig(
            hub_url=hub_url, hub_token=token, openai_api_key="test-key",
            openai_base_url=openai.base_url,
            realtime_base_url=realtime.base_url if realtime is not None else None,
            text_link=link.address, agent_spec=agent_spec,
        )  # fmt: skip
        worker = Worker(WorkerOptions(unregistered=True, idle_processes=0), JobEntry(config))
        task = asyncio.create_task(worker.run(), name="worker")
        try:
            async with asyncio.timeout(JOB_START):
                await worker.started.wait()
            yield Jobs(worker, link)
        finally:
            await link.aclose()  # hang up every job: they end
            await worker.drain(timeout=20)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
