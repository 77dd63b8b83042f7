"""Benchmark 1: a config change until the running session's LiveAgent lists the new tools.

Three identical in-process stacks (reconciler -> manager -> hub, real stdio echo servers), each
with a running AgentSession (scripted LLM) on a LiveAgent that follows its hub. They differ only
in what tells the reconciler to look again:
  - jackfield: its ConfigWatcher with the production defaults (Settings: debounce_ms 30);
  - watchfiles defaults: `watchfiles.awatch(dir)` (debounce 1600 ms, step 50 ms);
  - 5 s mtime poll: stat every YAML file every 5 s.
Samples are interleaved across the stacks. The clock starts just before the file is renamed into
place and stops when the LiveAgent's tool list (what the next LLM turn is given) shows the change.
A poll sample first waits a random fraction of the period, so the write lands at a random phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession
from tests.support.agent import ScriptedLLM
from watchfiles import awatch

from bench.common import (
    TOKEN,
    Goal,
    Row,
    Stack,
    echo_doc,
    find,
    live_stack,
    make_config,
    until,
    write,
)
from jackfield.reconciler import PassResult
from jackfield.settings import Settings
from jackfield.shell.live_agent import LiveAgent, live_agent
from jackfield.shell.watcher import ConfigWatcher

NAME = "config change"
POLL_PERIOD = 5.0
FILTERS = ("  tools: {include: [echo, add]}\n", "  tools: {include: [echo]}\n")


async def jackfield_trigger(stack: Stack, poke: Callable[[], None]) -> None:
    defaults = Settings.model_fields
    watcher = ConfigWatcher(
        stack.root,
        poke,
        debounce_ms=defaults["debounce_ms"].default,
        force_polling=defaults["force_polling"].default,
    )
    await watcher.run()


async def watchfiles_trigger(stack: Stack, poke: Callable[[], None]) -> None:
    async for _changes in awatch(stack.root):
        poke()


async def poll_trigger(stack: Stack, poke: Callable[[], None]) -> None:
    def signature() -> set[tuple[str, int, int, int]]:
        out = set()
        for path in [stack.root / "agent.yaml", *(stack.root / "servers.d").rglob("*.y*ml")]:
            with contextlib.suppress(OSError):
                st = path.stat()
                out.add((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        return out

    last = signature()
    while True:
        await asyncio.sleep(POLL_PERIOD)
        now = signature()
        if now != last:
            last = now
            poke()


TRIGGERS: dict[str, Callable[[Stack, Callable[[], None]], Coroutine[Any, Any, None]]] = {
    "jackfield (ConfigWatcher, defaults)": jackfield_trigger,
    "watchfiles.awatch defaults": watchfiles_trigger,
    "5 s mtime poll": poll_trigger,
}


@dataclass
class Subject:
    label: str
    stack: Stack
    agent: LiveAgent
    session: AgentSession[Any]
    llm: ScriptedLLM
    pokes: list[float] = field(default_factory=list)
    """When the trigger told the reconciler to look again."""
    passes: list[float] = field(default_factory=list)
    """When applying passes finished (the hub has the new snapshot)."""
    stages: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    filter_state: int = 0
    added: int = 0

    def poke(self) -> None:
        self.pokes.append(time.perf_counter())
        self.stack.reconciler.trigger()

    def on_pass(self, result: PassResult) -> None:
        if result.outcome == "applied":
            self.passes.append(time.perf_counter())

    def tools(self) -> set[str]:
        return {t.id for t in self.agent.tools}

    async def settle(self) -> None:
        """The previous change fully applied (no pass running, the agent not mid-update)."""
        await self.stack.settled()
        await asyncio.sleep(0.05)
        await self.stack.settled()

    async def measure(
        self, case: str, write_change: Callable[[], None], done: Callable[[], bool]
    ) -> float:
        if self.label.startswith("5 s"):
            await asyncio.sleep(random.uniform(0, POLL_PERIOD))
        started = time.perf_counter()
        write_change()
        await until(done, timeout=POLL_PERIOD + 60, what=f"{self.label}: change reaches agent")
        finished = time.perf_counter()
        poked = next((t for t in self.pokes if t >= started), started)
        applied = next((t for t in self.passes if t >= poked), poked)
        self.stages.setdefault(case, []).append(
            (poked - started, applied - poked, finished - applied)
        )
        return finished - started

    def breakdown(self, case: str) -> str:
        """Median stages: file event seen, reconcile pass applied, agent updated."""
        parts = list(zip(*self.stages.get(case, []), strict=False))
        if not parts:
            return ""
        seen, applied, agent = (statistics.median(p) * 1000 for p in parts)
        return f"stages (medians): seen {seen:,.0f} + pass {applied:.0f} + to agent {agent:.0f} ms"

    async def filter_edit(self) -> float:
        self.filter_state ^= 1
        want_add = self.filter_state == 0
        path = self.stack.path("servers.d/echo.yaml")
        seconds = await self.measure(
            "filter edit",
            lambda: write(path, echo_doc("echo", extra=FILTERS[self.filter_state])),
            lambda: ("echo_add" in self.tools()) == want_add,
        )
        await self.settle()
        return seconds

    async def new_server(self) -> float:
        self.added += 1
        name = f"new{self.added}"
        path = self.stack.path(f"servers.d/{name}.yaml")
        seconds = await self.measure(
            "new stdio server",
            lambda: write(path, echo_doc(name, "--tools", "echo")),
            lambda: f"{name}_echo" in self.tools(),
        )
        path.unlink()  # cleanup, untimed: a direct trigger instead of waiting for the poll
        self.stack.reconciler.trigger()
        await until(lambda: f"{name}_echo" not in self.tools(), what=f"{name} removed")
        await until(lambda: name not in self.stack.manager.states(), what=f"{name} stopped")
        await self.settle()
        return seconds

    async def next_turn_sees(self, tool: str) -> bool:
        await self.session.run(user_input="what can you do")
        return tool in self.llm.last.tools


@contextlib.asynccontextmanager
async def subject(label: str, root: Path) -> AsyncIterator[Subject]:
    make_config(root)
    write(root / "servers.d/echo.yaml", echo_doc("echo", extra=FILTERS[0]))
    async with live_stack(root) as stack:
        await stack.ready(["echo"])
        llm = ScriptedLLM()
        async with (
            live_agent(stack.hub.url, TOKEN, session_id=f"job-{label}") as agent,
            AgentSession(llm=llm) as session,
        ):
            await session.start(agent)
            s = Subject(label, stack, agent, session, llm)
            stack.reconciler.pass_listeners.append(s.on_pass)
            trigger = asyncio.create_task(TRIGGERS[label](stack, s.poke), name=label)
            try:
                await asyncio.sleep(0.5)  # the watch is established
                yield s
            finally:
                trigger.cancel()
                await asyncio.gather(trigger, return_exceptions=True)


async def run(quick: bool) -> list[Row]:
    random.seed(8)
    counts = {
        "filter edit": {"jackfield": 20, "watchfiles": 6, "5 s": 1}
        if quick
        else {"jackfield": 200, "watchfiles": 40, "5 s": 12},
        "new stdio server": {"jackfield": 3, "watchfiles": 1, "5 s": 0}
        if quick
        else {"jackfield": 20, "watchfiles": 10, "5 s": 6},
    }
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        async with contextlib.AsyncExitStack() as exits:
            subjects = [
                await exits.enter_async_context(subject(label, Path(tmp) / f"s{i}"))
                for i, label in enumerate(TRIGGERS)
            ]
            for case, per in counts.items():
                case_rows = {
                    s.label: Row(NAME, case, s.label, base=s.label.startswith("jackfield"))
                    for s in subjects
                }
                for i in range(max(per.values())):
                    for s in subjects:
                        wanted = next(n for key, n in per.items() if s.label.startswith(key))
                        if i < wanted:
                            sample = s.filter_edit if case == "filter edit" else s.new_server
                            case_rows[s.label].samples.append(await sample())
                for s in subjects:
                    case_rows[s.label].note = s.breakdown(case)
                rows += [r for r in case_rows.values() if r.samples]
            for s in subjects:  # what the agent lists is what the next LLM turn gets
                if not await s.next_turn_sees("echo_echo"):
                    raise AssertionError(f"{s.label}: the next LLM turn lacks echo_echo")
    return rows


def goals(rows: list[Row]) -> list[Goal]:
    jf = find(rows, "filter edit", "jackfield")
    wf = find(rows, "filter edit", "watchfiles")
    poll = find(rows, "filter edit", "5 s")
    new = find(rows, "new stdio server", "jackfield")
    return [
        Goal(
            "config change: filter edit p50 < 50 ms, p99 < 150 ms",
            jf.p(50) < 50 and jf.p(99) < 150,
            f"p50 {jf.p(50):.0f} ms, p99 {jf.p(99):.0f} ms (watchfiles defaults p50 "
            f"{wf.p(50):.0f} ms, 5 s poll p50 {poll.p(50):,.0f} ms); new server p50 "
            f"{new.p(50):,.0f} ms",
        )
    ]
