"""`jackfield console [DIR]`: chat with the configured agent in the terminal, in text.

Runs the job code LiveKit runs, in a real job process: an unregistered LiveKit worker launches
one job (`simulate_job`), which builds its agent from a hub and takes typed turns over a local
text link. The hub is a running `jackfield run` (`--hub-url`, token from `--hub-token` or
JACKFIELD_HUB_TOKEN), or by default one this process starts with its own controller (watcher ->
reconciler -> live MCP servers) over DIR. Edits to the config apply while you chat. Tool calls
are shown as they finish, before the reply. The console is text: the session is the agent's
pipeline chat model (for a realtime agent, its fallback's, else gpt-4o-mini), no STT or TTS.

Needs OPENAI_API_KEY (exit 2 without it); OPENAI_BASE_URL points it at any OpenAI-compatible
server. Reads lines until end of input or `/quit`. When the agent asks something (to confirm a
call, or a server's question), the next line is the answer.

`--identity ID` (with `--name`, `--attribute KEY=VALUE`, `--metadata TEXT`) plays a LiveKit
participant: the session's caller context (`${caller.identity}`, `${caller.attributes.KEY}`,
`${job.metadata}`; docs/config.md) is that participant's, so identity-scoped servers, hidden
arguments and `access` rules apply as they would to that caller. Without it, the caller is
LiveKit's console stand-in (identity `mock_user`, no attributes).
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from jackfield.commands._common import ConfigInvalid, add_dir_argument, config_dir, load, shown_path
from jackfield.settings import Settings

if TYPE_CHECKING:  # the MCP and LiveKit stacks load when a chat starts, not with every command
    from jackfield.shell.hub import ToolHub
    from jackfield.shell.servers import ServerManager
    from jackfield.shell.text_link import ConsoleEnd
    from jackfield.spec.models import AgentSpec

DEFAULT_TEXT_MODEL = "gpt-4o-mini"
"""For a realtime (speech-to-speech) agent without a pipeline fallback: the console is text."""
READY_WAIT = 20.0
"""Seconds the console waits for servers to connect before the first prompt."""
JOB_START = 60.0
"""Seconds the job process may take to start and greet."""
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
    parser.add_argument("--hub-url", default=None, help="use the hub of a running jackfield run")
    parser.add_argument(
        "--hub-token", default=None, help="that hub's token (default: JACKFIELD_HUB_TOKEN)"
    )
    parser.add_argument(
        "--identity", default=None, help="play a LiveKit participant with this identity"
    )
    parser.add_argument("--name", default=None, help="that participant's name")
    parser.add_argument(
        "--attribute", action="append", default=[], type=_attribute, metavar="KEY=VALUE",
        help="one of that participant's attributes (repeatable)",
    )  # fmt: skip
    parser.add_argument("--metadata", default=None, help="the job's dispatch metadata to play")
    parser.add_argument(
        "--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level on stderr (default WARNING)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def _attribute(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


@dataclass(frozen=True)
class Participant:
    """The participant the console plays (`--identity` and the rest)."""

    identity: str
    name: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    metadata: str | None = None


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
    spec = None
    if args.hub_url is None:
        try:
            spec = load(root).agent.document.spec
        except ConfigInvalid as e:
            for error in e.errors:
                print(shown_path(root, error), file=sys.stderr)
            return 1
    if args.identity is None and (args.name or args.attribute or args.metadata is not None):
        print("jackfield console: --name, --attribute and --metadata need --identity",
              file=sys.stderr)  # fmt: skip
        return 2
    participant = None
    if args.identity is not None:
        participant = Participant(args.identity, args.name, dict(args.attribute), args.metadata)
    token = args.hub_token or (settings.hub_token.get_secret_value() if settings.hub_token else "")
    if args.hub_url is not None and not token:
        print("jackfield console --hub-url needs the hub's token: --hub-token or"
              " JACKFIELD_HUB_TOKEN", file=sys.stderr)  # fmt: skip
        return 2
    from jackfield.shell.logs import configure_logging

    configure_logging(args.log_level, "text")
    console = Console(settings, spec, model=args.model, out=sys.stdout,
                      hub=(args.hub_url, token) if args.hub_url else None,
                      participant=participant)  # fmt: skip
    try:
        return asyncio.run(console.chat(sys.stdin))
    except ConsoleFailed as e:
        print(f"jackfield console: {e}", file=sys.stderr)
        return 1


class ConsoleFailed(Exception):
    """The console could not get an agent session going; the message says why."""


class Console:
    def __init__(
        self,
        settings: Settings,
        spec: AgentSpec | None,
        *,
        model: str | None,
        out: TextIO,
        hub: tuple[str, str] | None = None,
        participant: Participant | None = None,
    ) -> None:
        self.settings = settings
        self.participant = participant
        self.spec = spec
        self.model = model
        self.out = out
        self.hub = hub
        """(url, token) of a running jackfield's hub; None: start our own."""
        self._asked: str | None = None
        """The agent's question just shown, until its own line comes (not shown twice)."""

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    @contextlib.asynccontextmanager
    async def stack(self) -> AsyncIterator[ToolHub]:
        """Controller and hub, as `jackfield run` has them, without store or status server."""
        from jackfield.app import build

        local = self.settings.model_copy(update={"hub_host": "127.0.0.1", "hub_port": 0})
        controller = build(local, hub_token=secrets.token_urlsafe(32))
        async with controller.running(first_pass=None):
            await self._connected(controller.manager)
            yield controller.hub

    async def _connected(self, manager: ServerManager) -> None:
        """Wait, bounded, until every server has connected or given up for now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WAIT
        while loop.time() < deadline:
            if not any(s in ("Pending", "Connecting") for s in manager.states().values()):
                return
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def hub_address(self) -> AsyncIterator[tuple[str, str, AgentSpec]]:
        """The hub to use and the agent spec it serves."""
        if self.hub is None:
            assert self.spec is not None
            async with self.stack() as hub:
                yield hub.url, hub.token, self.spec
            return
        from jackfield.shell.hub_link import HubUnavailable, linked
        from jackfield.spec.models import AgentSpec

        url, token = self.hub
        try:
            async with linked(url, token, session_id="console-probe", wait=10) as link:
                view = await link.view()
        except HubUnavailable as e:
            raise ConsoleFailed(str(e)) from None
        yield url, token, AgentSpec.model_validate(view["spec"])

    async def chat(self, stdin: TextIO) -> int:
        from jackfield.shell.agent import JobConfig, JobEntry
        from jackfield.shell.text_link import TextLink
        from jackfield.shell.worker import Worker, WorkerOptions

        s = self.settings
        async with self.hub_address() as (url, token, spec), TextLink() as link:
            model = self.model or text_model(spec)
            config = JobConfig(
                hub_url=url, hub_token=token,
                openai_api_key=s.openai_api_key.get_secret_value() if s.openai_api_key else None,
                openai_base_url=s.openai_base_url, text_link=link.address, text_model=model,
            )  # fmt: skip
            worker = Worker(WorkerOptions(unregistered=True, idle_processes=0), JobEntry(config))
            running = asyncio.create_task(worker.run(), name="worker")
            try:
                await worker.simulate("console")
                try:
                    end = await link.next_job(timeout=JOB_START)
                    ready = (await end.until("ready", timeout=JOB_START))["ready"]
                except (TimeoutError, ConnectionError) as e:
                    raise ConsoleFailed(f"the agent job did not start: {e or 'timed out'}") from e
                self.say(
                    f"jackfield console: {model}, {ready['tools']} tool(s) live."
                    f" Type a message; /quit or end of input leaves."
                )
                if spec.greeting:
                    self._show(await end.until("agent", timeout=JOB_START))
                if self.participant is not None:
                    await self._join(end, self.participant)
                await self._converse(end, stdin)
                await end.aclose()
            finally:
                await worker.drain(timeout=10)
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
        return 0

    async def _join(self, end: ConsoleEnd, p: Participant) -> None:
        """Play the participant: the job's tools become what the hub serves that caller."""
        try:
            caller = await end.join(p.identity, name=p.name, attributes=p.attributes,
                                    metadata=p.metadata, timeout=JOB_START)  # fmt: skip
        except (TimeoutError, ConnectionError) as e:
            raise ConsoleFailed(f"the agent job did not take the caller: {e or 'timed out'}") from e
        if caller.get("error"):
            self.say(f"(playing {p.identity}: {caller['error']})")
        self.say(f"jackfield console: playing {p.identity}, {len(caller['tools'])} tool(s) live.")

    async def _converse(self, end: ConsoleEnd, stdin: TextIO) -> None:
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
            await end.say(text)
            await self._until_turn_or_question(end)

    async def _until_turn_or_question(self, end: ConsoleEnd) -> None:
        """Show the job's messages until the turn is over, or until the agent asks something:
        the next line is then the answer (the job hears it as one, and the turn goes on)."""
        while True:
            message = await end.next()
            if message is None:
                raise ConnectionError(f"job {end.job} left during a turn")
            self._show(message)
            if "turn_done" in message or "question" in message:
                return

    def _show(self, message: dict[str, Any]) -> None:
        if "question" in message and "kind" in message:
            self._asked = str(message["question"])
            self.say(f"agent> {self._asked}")
        elif "agent" in message and message["agent"] == self._asked:
            self._asked = None  # the question, said: already shown
        elif "cancelled" in message:
            cancelled = message["cancelled"]
            self.say(f"  [tool] {cancelled['tool']} cancelled: {cancelled['reason']}")
        elif "tool" in message:
            output = str(message["output"])
            shown = output if len(output) <= SHOWN_RESULT else output[:SHOWN_RESULT] + "..."
            status = "error" if message["is_error"] else "ok"
            self.say(f"  [tool] {message['tool']} {_compact(message['arguments'])}"
                     f" -> {status}: {shown}")  # fmt: skip
        elif "agent" in message:
            self.say(f"agent> {message['agent']}")
        elif message.get("error"):
            self.say(f"(that turn failed: {message['error']})")
        elif "fallback" in message:
            self.say(f"(the agent moved to its fallback pipeline: {message['fallback']})")


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
