"""`jackfield import FORMAT FILE [--out servers.d] [--force]`: another client's MCP config, or
an MCP registry server.json, as one servers.d/ file per server (docs/gitops.md, "Importing from
other clients"). Invalid input is one line on stderr, exit 1, and nothing written."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jackfield.core.import_formats import FORMATS, convert
from jackfield.core.importing import ImportRefused, loads_jsonc

_FILES = {
    "claude-desktop": "claude_desktop_config.json",
    "claude-code": ".mcp.json",
    "vscode": ".vscode/mcp.json",
    "cursor": ".cursor/mcp.json",
    "registry": "server.json",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "import",
        help="turn another client's MCP config (or a registry server.json) into servers.d/ YAML",
    )
    parser.add_argument(
        "source",
        choices=FORMATS,
        help="format of FILE: " + ", ".join(f"{k} ({v})" for k, v in _FILES.items()),
    )
    parser.add_argument("file", type=Path, help="the file to import")
    parser.add_argument("--out", type=Path, default=Path("servers.d"), help="default: servers.d/")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument(
        "--package", type=int, metavar="N", help="registry: import packages[N] (from 0)"
    )
    parser.add_argument(
        "--remote", type=int, metavar="N", help="registry: import remotes[N] (from 0)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = loads_jsonc(args.file.read_text(encoding="utf-8"))
    except OSError as e:
        return _refuse(f"{args.file}: cannot read: {e.strerror or e}")
    except UnicodeDecodeError:
        return _refuse(f"{args.file}: not UTF-8 text")
    except json.JSONDecodeError as e:
        return _refuse(f"{args.file}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}")
    try:
        result = convert(args.source, config, package=args.package, remote=args.remote)
    except ImportRefused as e:
        return _refuse(f"{args.file}: not imported: {e}")
    existing = [n for n in result.files if (args.out / n).exists()]
    if existing and not args.force:
        for name in existing:
            print(f"{args.out / name}: exists; use --force to overwrite", file=sys.stderr)
        return 1
    for warning in result.warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in result.files.items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")
    if result.variables:
        print("set these environment variables (the files refer to them; no value was copied):")
        for var in result.variables:
            print(f"  {var}")
    return 0


def _refuse(line: str) -> int:
    print(line, file=sys.stderr)
    return 1
