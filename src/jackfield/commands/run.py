"""`jackfield run [DIR] [--no-agent]`: controller + hub + status server (+ LiveKit worker)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="watch the config and run the agent, hub and status server")
    parser.add_argument("dir", nargs="?", type=Path, default=None, help="config dir (default: .)")
    parser.add_argument("--no-agent", action="store_true", help="do not start the LiveKit worker")
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL of the store")
    parser.add_argument("--status-port", type=int, default=None, help="status server port")
    parser.add_argument("--hub-port", type=int, default=None, help="tool hub port")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    settings = Settings(**overrides)
    return asyncio.run(App(settings, agent=not args.no_agent).run())
