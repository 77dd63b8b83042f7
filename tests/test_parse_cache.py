"""The parse cache spares unchanged files and never changes the result."""

from __future__ import annotations

from pathlib import Path

from jackfield.core.desired import ParseCache, build_snapshot
from jackfield.shell.sources import scan
from tests.support.config import server_yaml, write


def test_the_cache_gives_the_same_snapshot_and_drops_files_that_are_gone(
    config_dir: Path,
) -> None:
    write(config_dir, {f"servers.d/s{i}.yaml": server_yaml(f"s{i}") for i in range(5)})
    cache: ParseCache = {}
    found = scan(config_dir)
    first = build_snapshot(found.files, {}, found.errors, cache=cache)
    assert len(cache) == 6  # agent.yaml and five servers

    write(config_dir, {"servers.d/s0.yaml": server_yaml("s0", "  command: python3\n")})
    (config_dir / "servers.d" / "s4.yaml").unlink()
    found = scan(config_dir)
    cached = build_snapshot(found.files, {}, found.errors, cache=cache)
    fresh = build_snapshot(found.files, {}, found.errors)
    assert cached == fresh and cached.revision != first.revision
    assert cached.servers["s0"].document.spec.command == "python3"
    assert len(cache) == 5 and not any(path.endswith("s4.yaml") for path, _ in cache)
