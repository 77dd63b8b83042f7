"""The agent of one session: its tools and instructions follow the hub, at safe points.

Announcements (and reconnects) set the hub link's `changed`; the agent refetches the view and
the tools and applies them with `Agent.update_tools` / `Agent.update_instructions` only while
no tool call of the session runs. Its tool calls go through the job's `Caller`, which speaks,
asks and hears for them (shell/voice_calls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from livekit.agents import Agent, llm

from jackfield.core.hashing import sha256
from jackfield.shell.caller import Caller
from jackfield.shell.hub_link import HubLink, HubUnavailable
from jackfield.shell.voice_calls import tools_of

log = logging.getLogger(__name__)

HUB_WAIT = 3.0
"""Seconds a new job waits for the hub before it starts without tools."""
NO_HUB_INSTRUCTIONS = (
    "You are a helpful voice assistant. Your tools are unavailable right now: if the caller asks"
    " for something that needs one, say so briefly and offer to try again in a moment."
)
TOOLS_DOWN = (
    "Your tools are unavailable right now: if the caller asks for something that needs one,"
    " say so briefly."
)


def _revision(instructions: str, tools: list[llm.Tool]) -> str:
    return sha256(instructions + "|" + ",".join(sorted(t.id for t in tools)))


class LiveAgent(Agent):
    """An Agent whose tools and instructions follow the hub, and whose calls ask the caller."""

    def __init__(
        self,
        link: HubLink,
        *,
        instructions: str,
        tools: list[llm.Tool],
        caller: Caller,
        chat_ctx: llm.ChatContext | None = None,
        built_on: int = 0,
    ) -> None:
        super().__init__(instructions=instructions, tools=list(tools), chat_ctx=chat_ctx)
        self.link = link
        self.caller = caller
        self.revision = _revision(instructions, tools)
        self.updates = 0
        self.applied_on = built_on
        """The link's connection (`HubLink.connects`) the tools and instructions were last
        fetched on, at the latest."""
        self._applied = asyncio.Condition()
        self.on_update: Callable[[LiveAgent], None] = lambda agent: None
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        link.call_finished = self._maybe_apply

    @property
    def hub(self) -> HubLink:
        return self.link

    async def on_enter(self) -> None:
        self.caller.attach(self.session)

    async def on_exit(self) -> None:
        self.caller.detach(self.session)

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        """A spoken turn while a call waits for the caller's answer is that answer, and the LLM
        does not answer it as well.

        Raises:
            llm.StopResponse: the turn answered a question.
        """
        if self.caller.hear(new_message.text_content or ""):
            raise llm.StopResponse()

    async def follow(self) -> None:
        """Runs for the session's life: each announcement (or reconnect) marks an update."""
        while True:
            await self.link.changed.wait()
            self.link.changed.clear()
            self._pending = True
            self._maybe_apply()

    def _maybe_apply(self) -> None:
        idle = self.link.in_flight == 0 and (self._task is None or self._task.done())
        if self._pending and idle:
            self._pending = False
            self._task = asyncio.create_task(self._apply(), name="agent-update")

    async def _apply(self) -> None:
        started_on = self.link.connects  # a reconnect during the fetch only makes it newer
        try:
            view = await self.link.view()
            tools = tools_of(self.link, await self.link.tools(), self.caller)
            await self.update_tools(list(tools))
            await self.update_instructions(view["instructions"])
            self.revision = _revision(view["instructions"], tools)
            self.updates += 1
            async with self._applied:
                self.applied_on = max(self.applied_on, started_on)
                self._applied.notify_all()
            self.on_update(self)
        except HubUnavailable:
            current = str(self.instructions)
            if TOOLS_DOWN not in current:
                await self.update_instructions(f"{current}\n\n{TOOLS_DOWN}")
        except Exception:  # no hot retry loop: the next announcement or reconnect retries
            log.exception("applying a hub change failed; the next announcement retries")
        self._maybe_apply()  # a change that came in meanwhile

    async def applied_since(self, connects: int) -> None:
        """Wait until the agent shows what it fetched on connection `connects` or later (a
        reconnect sets `changed`, so an update follows every one)."""
        async with self._applied:
            await self._applied.wait_for(lambda: self.applied_on >= connects)

    async def aclose_follow(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


async def build_agent(
    link: HubLink, *, chat_ctx: llm.ChatContext | None = None, caller: Caller | None = None
) -> LiveAgent:
    """The agent as the hub has it now, or one without tools that says so. `caller`: the job's
    (a fallback keeps it); a new one by default."""
    caller = caller if caller is not None else Caller()
    built_on = link.connects
    try:
        view = await link.view()
        tools = tools_of(link, await link.tools(), caller)
        instructions = view["instructions"]
    except HubUnavailable:
        tools, instructions, built_on = [], NO_HUB_INSTRUCTIONS, 0
    return LiveAgent(link, instructions=instructions, tools=tools, caller=caller,
                     chat_ctx=chat_ctx, built_on=built_on)  # fmt: skip


@contextlib.asynccontextmanager
async def live_agent(url: str, token: str, *, session_id: str) -> AsyncIterator[LiveAgent]:
    """Connect to the hub, build the agent from what is live now, follow changes until exit."""
    link = HubLink(url, token, session_id=session_id)
    owner = asyncio.create_task(link.run(), name="hub-link")
    try:
        await link.wait_up(HUB_WAIT)
        link.changed.clear()  # what the connect announced is what the agent is built from
        agent = await build_agent(link)
        follower = asyncio.create_task(agent.follow(), name="agent-follow")
        try:
            yield agent
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await agent.aclose_follow()
    finally:
        owner.cancel()
        await asyncio.gather(owner, return_exceptions=True)
