"""`jackfield console [DIR]`: chat with the configured agent in the terminal, in text.

Runs, in this process, what serves one agent session under `jackfield run`: the controller
(watcher -> reconciler -> live MCP servers), the hub (an ephemeral port, a fresh token), and one
agent session (a LiveAgent on an AgentSession with livekit's OpenAI LLM, text only). Edits to
the config dir apply while you chat. Tool calls are shown as they finish, before the reply.

Needs OPENAI_API_KEY (exit 2 without it); OPENAI_BASE_URL points it at any OpenAI-compatible
server. Reads lines until end of input or `/quit`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TextIO

from jackfield.commands._common import ConfigInvalid, add_dir_argument, config_dir, load, shown_path
from jackfield.settings import Settings, environment

if TYPE_CHECKING:  # the MCP and LiveKit stacks load when a chat starts, not with every command
    from jackfield.shell.hub import ToolHub
    from jackfield.shell.manager import ServerManager
    from jackfield.spec.models import AgentSpec

DEFAULT_TEXT_MODEL = "gpt-4o-mini"
"""For a realtime (speech-to-speech) agent without a pipeline fallback: the console is text."""
READY_WAIT = 20.0
"""Seconds the console waits for servers to connect before the first prompt."""
SHOWN_RESULT = 200
"""Characters of a tool result shown on its line."""
QUIT = ("/quit", "/exit")
NO_KEY = (
    "jackfield console needs OPENAI_API_KEY: set it to an OpenAI API key (or, with\n"
    "OPENAI_BASE_URL, to the key of an OpenAI-compatible server)."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "console", help="chat with the configured agent in the terminal (needs OPENAI_API_KEY)"
    )
    add_dir_argument(parser)
    parser.add_argument(
        "--model",
        default=None,
        help=f"chat model (default: agent.yaml's pipeline model, else {DEFAULT_TEXT_MODEL})",
    )
    parser.add_argument(
        "--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level on stderr (default WARNING)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def text_model(spec: AgentSpec) -> str:
    """The agent's chat model: its pipeline model, or its fallback's; realtime models speak."""
    for model in (spec.llm, spec.fallback):
        if model is not None and model.mode == "pipeline":
            return model.model
    return DEFAULT_TEXT_MODEL


def run(args: argparse.Namespace) -> int:
    root = config_dir(args)
    settings = Settings(config_dir=root)
    if settings.openai_api_key is None:
        print(NO_KEY, file=sys.stderr)
        return 2
    try:
        snapshot = load(root)
    except ConfigInvalid as e:
        for error in e.errors:
            print(shown_path(root, error), file=sys.stderr)
        return 1
    from jackfield.shell.logs import configure_logging

    configure_logging(args.log_level, "text")
    spec = snapshot.agent.document.spec
    console = Console(settings, spec, model=args.model or text_model(spec), out=sys.stdout)
    return asyncio.run(console.chat(sys.stdin))


class Console:
    def __init__(self, settings: Settings, spec: AgentSpec, *, model: str, out: TextIO) -> None:
        self.settings = settings
        self.spec = spec
        self.model = model
        self.out = out

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    @contextlib.asynccontextmanager
    async def stack(self) -> AsyncIterator[ToolHub]:
        """Controller and hub, as `jackfield run` has them, without store or status server."""
        from jackfield.reconciler import Reconciler
        from jackfield.shell.hub import ToolHub
        from jackfield.shell.manager import ServerManager
        from jackfield.shell.watcher import ConfigWatcher

        settings = self.settings
        async with ServerManager() as manager:
            hub = ToolHub(manager, host="127.0.0.1", port=0, token=secrets.token_urlsafe(32))
            reconciler = Reconciler(
                config_dir=settings.config_dir, env=environment(), target=manager, store=None,
                allow_empty=settings.allow_empty, resync_interval=settings.resync_interval,
            )  # fmt: skip
            reconciler.listeners.append(hub.set_snapshot)
            watcher = ConfigWatcher(
                settings.config_dir, reconciler.trigger, debounce_ms=settings.debounce_ms,
                force_polling=settings.force_polling,
            )  # fmt: skip
            await hub.start()
            tasks = [
                asyncio.create_task(reconciler.run(), name="reconciler"),
                asyncio.create_task(watcher.run(), name="watcher"),
            ]
            try:
                await reconciler.wait_first_pass()
                await self._connected(manager)
                yield hub
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await hub.stop()

    async def _connected(self, manager: ServerManager) -> None:
        """Wait, bounded, until every server has connected or given up for now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WAIT
        while loop.time() < deadline:
            if not any(s in ("Pending", "Connecting") for s in manager.states().values()):
                return
            await asyncio.sleep(0.05)

    async def chat(self, stdin: TextIO) -> int:
        from livekit.agents import AgentSession
        from livekit.plugins import openai

        from jackfield.shell.agent import live_agent

        llm = openai.LLM(model=self.model, temperature=_given(self.spec.llm.temperature))
        try:
            async with self.stack() as hub:
                async with (
                    live_agent(hub.url, hub.token, session_id="console") as agent,
                    AgentSession(llm=llm) as session,
                ):
                    session.on("function_tools_executed", self._show_tools)
                    session.on("conversation_item_added", self._show_reply)
                    await session.start(agent)
                    self._banner(hub)
                    if self.spec.greeting:
                        await session.generate_reply(instructions=self.spec.greeting)
                    await self._converse(session, stdin)
        finally:
            await llm.aclose()
        return 0

    def _banner(self, hub: ToolHub) -> None:
        tools = hub.status().tools
        self.say(
            f"jackfield console: {self.model}, {tools} tool(s) live."
            f" Type a message; /quit or end of input leaves."
        )

    async def _converse(self, session: Any, stdin: TextIO) -> None:
        lines = _lines(stdin)
        while True:
            if stdin.isatty():
                self.out.write("you> ")
                self.out.flush()
            line = await lines.get()
            if line is None or line.strip() in QUIT:
                return
            text = line.strip()
            if not text:
                continue
            try:
                await session.run(user_input=text)
            except Exception as e:  # a failed turn (the model unreachable...) ends no chat
                self.say(f"(that turn failed: {e})")

    def _show_tools(self, event: Any) -> None:
        for call, output in event.zipped():
            result = output.output if len(output.output) <= SHOWN_RESULT else (
                output.output[:SHOWN_RESULT] + "..."
            )  # fmt: skip
            status = "error" if output.is_error else "ok"
            self.say(f"  [tool] {call.name} {_compact(call.arguments)} -> {status}: {result}")

    def _show_reply(self, event: Any) -> None:
        item = event.item
        if getattr(item, "role", None) == "assistant" and getattr(item, "text_content", None):
            self.say(f"agent> {item.text_content}")


def _compact(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return arguments


def _given(value: float | None) -> Any:
    from livekit.agents.types import NOT_GIVEN

    return NOT_GIVEN if value is None else value


def _lines(stdin: TextIO) -> asyncio.Queue[str | None]:
    """Lines of stdin on a queue (None at the end), read by a daemon thread: a terminal, a
    pipe and a file all work, and Ctrl-C is not held up by a blocked read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:  # the chat ended first and its loop is closed
            return

    threading.Thread(target=read, name="console-stdin", daemon=True).start()
    return queue
