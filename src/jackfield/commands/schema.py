"""`jackfield schema [--check] [--out DIR]`: write (or check) schemas/ from the models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jackfield.spec.schema import render_all


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("schema", help="write the JSON Schemas of the config documents")
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    parser.add_argument("--out", type=Path, default=Path("schemas"), help="default: schemas/")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    stale = []
    for name, text in render_all().items():
        path = out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run 'jackfield schema'", file=sys.stderr)
        return 1
    return 0
