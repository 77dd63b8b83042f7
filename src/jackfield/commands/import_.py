"""`jackfield import claude-desktop FILE [--out servers.d] [--force]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jackfield.core.importing import convert


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("import", help="turn another tool's MCP config into servers.d/ YAML")
    parser.add_argument("source", choices=["claude-desktop"], help="format of FILE")
    parser.add_argument("file", type=Path, help="claude_desktop_config.json or .mcp.json")
    parser.add_argument("--out", type=Path, default=Path("servers.d"), help="default: servers.d/")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = json.loads(args.file.read_text(encoding="utf-8"))
    except OSError as e:
        print(f"{args.file}: cannot read: {e.strerror or e}", file=sys.stderr)
        return 1
    except json.JSONDecodeError as e:
        print(f"{args.file}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}", file=sys.stderr)
        return 1
    if not isinstance(config, dict):
        print(f"{args.file}: expected a JSON object with 'mcpServers'", file=sys.stderr)
        return 1
    result = convert(config)
    for problem in result.problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    existing = [n for n in result.files if (args.out / n).exists()]
    if existing and not args.force:
        for name in existing:
            print(f"{args.out / name}: exists; use --force to overwrite", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in result.files.items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")
    if result.variables:
        print("set these environment variables (the values were taken out of the files):")
        for var in result.variables:
            print(f"  {var}")
    return 1 if result.problems and not result.files else 0
