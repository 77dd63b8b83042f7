"""The LiveKit side: a job entrypoint whose agent follows the hub live, and the worker.

Each LiveKit job runs in its own process, so the agent reaches the tools as a plain MCP client
of the hub (DESIGN.md section 5). Session start never waits on an MCP server: the hub answers
at once with whatever is Ready, and later announcements bring the rest. Announcements are
applied with `Agent.update_tools` / `Agent.update_instructions` at a safe point: never while a
tool call runs; a change that arrives during one is applied when the last call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import mcp_types
from livekit.agents import Agent, AgentSession, RunContext, llm
from livekit.agents.llm import function_tool
from livekit.agents.types import NOT_GIVEN, NotGiven
from livekit.agents.voice.turn import TurnHandlingOptions
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from jackfield import __version__
from jackfield.core.desired import sha256
from jackfield.settings import Settings
from jackfield.shell.hub import PROMPT_NAME, SESSION_HEADER
from jackfield.spec.models import AgentSpec, TurnSpec

log = logging.getLogger(__name__)

HUB_URL_ENV = "JACKFIELD_HUB_URL"
HUB_TOKEN_ENV = "JACKFIELD_HUB_TOKEN"
FILLER = "One moment."
FILLER_AFTER = 2.0


class HubClient:
    """One agent session's connection to the hub: tools as LiveKit function tools."""

    def __init__(self, url: str, token: str, *, session_id: str) -> None:
        self.url = url
        self.token = token
        self.session_id = session_id
        self.changed = asyncio.Event()
        self.in_flight = 0
        self.call_finished: Callable[[], None] = lambda: None
        self._client: Client | None = None

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[HubClient]:
        headers = {"Authorization": f"Bearer {self.token}", SESSION_HEADER: self.session_id}
        http = create_mcp_http_client(headers=headers)
        async with (
            http,
            Client(
                streamable_http_client(self.url, http_client=http),
                mode="legacy",
                cache=None,
                message_handler=self._on_message,
                client_info=mcp_types.Implementation(name="jackfield-agent", version=__version__),
            ) as client,
        ):
            self._client = client
            try:
                yield self
            finally:
                self._client = None

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(
            message,
            mcp_types.ToolListChangedNotification | mcp_types.PromptListChangedNotification,
        ):
            self.changed.set()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("not connected to the hub")
        return self._client

    async def instructions(self) -> str:
        prompt = await self.client.get_prompt(PROMPT_NAME)
        content = prompt.messages[0].content if prompt.messages else None
        return content.text if isinstance(content, mcp_types.TextContent) else ""

    async def tools(self) -> list[llm.Tool]:
        listing = await self.client.list_tools()
        return [self._tool(t) for t in listing.tools]

    def _tool(self, tool: mcp_types.Tool) -> llm.Tool:
        name = tool.name

        async def call(ctx: RunContext[Any], raw_arguments: dict[str, Any]) -> str:
            self.in_flight += 1
            try:
                async with ctx.with_filler(FILLER, delay=FILLER_AFTER):
                    result = await self.client.call_tool(name, raw_arguments)
            except Exception as e:  # the hub itself is unreachable
                log.warning("tool %s: %s", name, e)
                raise llm.ToolError(f"The {name} tool is unavailable right now.") from e
            finally:
                self.in_flight -= 1
                self.call_finished()
            text = "\n".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))
            if result.is_error:
                raise llm.ToolError(text or f"The {name} tool failed.")
            return text

        schema = {
            "name": name,
            "description": tool.description or "",
            "parameters": tool.input_schema,
        }
        return function_tool(call, raw_schema=schema)


class LiveAgent(Agent):
    """An Agent whose tools and instructions follow the hub."""

    def __init__(self, hub: HubClient, *, instructions: str, tools: list[llm.Tool]) -> None:
        super().__init__(instructions=instructions, tools=list(tools))
        self.hub = hub
        self.revision = sha256(instructions + "|" + ",".join(sorted(t.id for t in tools)))
        self.updates = 0
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        hub.call_finished = self._maybe_apply

    async def follow(self) -> None:
        """Runs for the session's life: each announcement marks an update pending."""
        while True:
            await self.hub.changed.wait()
            self.hub.changed.clear()
            self._pending = True
            self._maybe_apply()

    def _maybe_apply(self) -> None:
        if self._pending and self.hub.in_flight == 0 and (self._task is None or self._task.done()):
            self._pending = False
            self._task = asyncio.create_task(self._apply(), name="agent-update")

    async def _apply(self) -> None:
        try:
            tools, text = await self.hub.tools(), await self.hub.instructions()
            await self.update_tools(list(tools))
            await self.update_instructions(text)
            self.revision = sha256(text + "|" + ",".join(sorted(t.id for t in tools)))
            self.updates += 1
        except Exception:
            log.exception("applying a hub change failed; the next announcement retries")
            self._pending = True
        self._maybe_apply()  # a change that came in meanwhile

    async def aclose_follow(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


@contextlib.asynccontextmanager
async def live_agent(url: str, token: str, *, session_id: str) -> AsyncIterator[LiveAgent]:
    """Connect to the hub, build the agent from what is live now, follow changes until exit."""
    async with HubClient(url, token, session_id=session_id).connected() as hub:
        agent = LiveAgent(hub, instructions=await hub.instructions(), tools=await hub.tools())
        follower = asyncio.create_task(agent.follow(), name="agent-follow")
        try:
            yield agent
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await agent.aclose_follow()


# --- models and the worker ---------------------------------------------------------------------


def load_agent_spec(config_dir: Path) -> AgentSpec:
    from jackfield.core.desired import build_snapshot
    from jackfield.shell.sources import scan

    found = scan(config_dir)
    return build_snapshot(found.files, dict(os.environ), found.errors).agent.document.spec


def session_for(spec: AgentSpec) -> AgentSession[Any]:
    """OpenAI Realtime by default; the `fallback` pipeline when realtime cannot start."""
    from livekit.plugins import openai

    model = spec.llm
    turn = turn_handling(spec.turn)
    if model.mode == "realtime":
        try:
            realtime = openai.realtime.RealtimeModel(
                model=model.model,
                voice=model.voice or "alloy",
                temperature=_given(model.temperature),
            )
            return AgentSession(llm=realtime, turn_handling=turn)
        except Exception as e:
            if spec.fallback is None:
                raise
            log.warning("realtime model could not start (%s); using the fallback pipeline", e)
            model = spec.fallback
    return AgentSession(
        llm=openai.LLM(model=model.model, temperature=_given(model.temperature)),
        stt=openai.STT(model=model.stt or "gpt-4o-transcribe"),
        tts=openai.TTS(model=model.tts or "gpt-4o-mini-tts", voice=model.voice or "alloy"),
        turn_handling=turn,
    )


def _given(value: float | None) -> float | NotGiven:
    return NOT_GIVEN if value is None else value


def turn_handling(turn: TurnSpec) -> TurnHandlingOptions:
    """agent.yaml's `turn` in livekit-agents 1.8's TurnHandlingOptions shape."""
    return {
        "endpointing": {"min_delay": turn.min_endpointing_delay,
                        "max_delay": turn.max_endpointing_delay},
        "interruption": {"enabled": turn.allow_interruptions,
                         "min_duration": turn.min_interruption_duration},
    }  # fmt: skip


async def entrypoint(ctx: Any) -> None:
    """The LiveKit job: connect, build the session from agent.yaml and the hub, greet."""
    settings = Settings()
    spec = load_agent_spec(settings.config_dir)
    await ctx.connect()
    session = session_for(spec)
    url, token = os.environ[HUB_URL_ENV], os.environ[HUB_TOKEN_ENV]
    async with live_agent(url, token, session_id=f"job-{ctx.job.id}") as agent:
        await session.start(agent=agent, room=ctx.room)
        if spec.greeting:
            await session.generate_reply(instructions=spec.greeting)
        closed = asyncio.Event()
        session.on("close", lambda _ev: closed.set())
        await closed.wait()


async def run_worker(settings: Settings, hub_url: str, hub_token: str) -> None:
    """Run the LiveKit worker until cancelled; job processes inherit the hub's address."""
    from livekit.agents import AgentServer

    os.environ[HUB_URL_ENV] = hub_url
    os.environ[HUB_TOKEN_ENV] = hub_token
    server = AgentServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key.get_secret_value() if settings.livekit_api_key else None,
        api_secret=(
            settings.livekit_api_secret.get_secret_value() if settings.livekit_api_secret else None
        ),
        port=0,
    )
    server.rtc_session(entrypoint)
    try:
        await server.run()
    finally:
        await server.aclose()
