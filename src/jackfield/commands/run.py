"""`jackfield run [DIR] [--no-agent]`: controller + hub + status server (+ LiveKit worker)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jackfield.app import App

THREAD_GRACE = 5.0
"""Seconds the process waits, after the app stopped, for worker threads still busy."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="watch the config and run the agent, hub and status server")
    parser.add_argument("dir", nargs="?", type=Path, default=None, help="config dir (default: .)")
    parser.add_argument("--no-agent", action="store_true", help="do not start the LiveKit worker")
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL of the store")
    parser.add_argument("--status-port", type=int, default=None, help="status server port")
    parser.add_argument("--hub-port", type=int, default=None, help="tool hub port")
    parser.set_defaults(func=run)


class _StoppedBeforeStart(BaseException):
    """Raised out of the start-up imports by an early SIGTERM/SIGINT (a BaseException, so no
    `except Exception` in an imported module swallows it)."""


class EarlyStop:
    """SIGTERM/SIGINT that arrive before the event loop takes the signals over.

    Importing and building the app takes a second or more (much more on a busy node); a SIGTERM
    in that window would otherwise kill the process with the default action (exit 143). Until
    `armed` is cleared the handler aborts the start-up by raising; after that it only records
    the request, which `App.run` honours once its own handlers are in place.
    """

    def __init__(self) -> None:
        self.requested = False
        self.armed = True

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.armed:
            self.armed = False
            raise _StoppedBeforeStart

    def __call__(self) -> bool:
        return self.requested


def run(args: argparse.Namespace) -> int:
    early = EarlyStop()
    try:
        early.install()  # first, before the heavy imports below
        from jackfield.app import App
        from jackfield.settings import Settings

        overrides: dict[str, Any] = {
            key: value
            for key, value in {
                "config_dir": args.dir,
                "database_url": args.database_url,
                "status_port": args.status_port,
                "hub_port": args.hub_port,
            }.items()
            if value is not None
        }
        app = App(Settings(**overrides), agent=not args.no_agent)
        early.armed = False
    except _StoppedBeforeStart:
        return _stopped_before_start()
    if early.requested:  # the raise was caught somewhere on the way: the request still stands
        return _stopped_before_start()
    app.stop_requested_early = early
    code = _serve(app)
    _exit_despite_stuck_threads(code)
    return code


def _serve(app: App) -> int:
    """`asyncio.run(app.run())`, minus its wait for the default executor: a store call stuck on
    an unreachable database (a connect with no timeout) would hold the exit for minutes."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        code = loop.run_until_complete(app.run())
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()  # shuts the executor down without waiting for its threads
    return code


def _exit_despite_stuck_threads(code: int, wait: float = THREAD_GRACE) -> None:
    """Threads still busy after the app stopped are blocked on I/O that will not finish soon;
    the interpreter would wait for them at exit, so exit without them (after flushing logs)."""
    deadline = time.monotonic() + wait
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [
        t.name
        for t in threading.enumerate()
        if t is not threading.current_thread() and not t.daemon and t.is_alive()
    ]
    if stuck:
        logging.getLogger(__name__).warning(
            "exiting with %d thread(s) still blocked: %s", len(stuck), ", ".join(stuck)
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _stopped_before_start() -> int:
    print("jackfield: stop requested during start-up; nothing was started", file=sys.stderr)
    return 0
