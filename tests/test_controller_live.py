"""The controller driven by a real watcher on a temp dir: the applied state is always exactly
the last valid snapshot, and nothing else is touched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jackfield.reconciler import Reconciler
from tests.support.config import AGENT, server_yaml, write
from tests.support.controller import running, settled, until


def ready(reconciler: Reconciler) -> str:
    return next(str(c.status) for c in reconciler.status.conditions if c.type == "Ready")


def stalled(reconciler) -> str | None:  # type: ignore[no-untyped-def]
    return next((c.reason for c in reconciler.status.conditions if c.type == "Stalled"), None)


async def test_add_edit_rename_delete_follow_the_files(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir) as (rec, target, _):
        assert set(target.servers) == {"a"} and ready(rec) == "True"
        write(config_dir, {"servers.d/b.yaml": server_yaml("b")})
        await settled(rec, lambda: set(target.servers) == {"a", "b"}, what="b added")
        write(config_dir, {"servers.d/b.yaml": server_yaml("b", "  command: python3\n")})
        await settled(rec, lambda: target.servers["b"].command == "python3", what="b edited")
        os.rename(config_dir / "servers.d/b.yaml", config_dir / "servers.d/renamed.yaml")
        (config_dir / "servers.d/a.yaml").unlink()
        await settled(
            rec, lambda: set(target.servers) == {"b"}, what="a deleted, b kept through rename"
        )
        assert ("put", "b", True) in target.calls and target.calls.count(("put", "b", True)) == 2


async def test_a_broken_file_applies_nothing_and_fixing_it_applies_everything(
    config_dir: Path,
) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir) as (rec, target, _):
        applied = rec.status.applied_revision
        write(
            config_dir,
            {
                "servers.d/new.yaml": server_yaml("new"),  # valid, but in a broken snapshot
                "servers.d/broken.yaml": server_yaml("broken", "  comand: x\n"),
            },
        )
        await until(lambda: stalled(rec) == "ValidationFailed", what="stalled")
        assert set(target.servers) == {"a"} and rec.status.applied_revision == applied
        assert rec.status.attempted_revision != applied
        (error,) = rec.status.errors
        assert error["file"] == "servers.d/broken.yaml" and error["line"] == 5
        calls = len(target.calls)
        rec.trigger()  # a resync of the same broken files is not a retry
        await settled(rec, lambda: True)
        write(config_dir, {"servers.d/broken.yaml": server_yaml("broken")})
        await settled(rec, lambda: set(target.servers) == {"a", "new", "broken"}, what="fixed")
        assert stalled(rec) is None, rec.status
        assert ready(rec) == "True" and len(target.calls) == calls + 2


async def test_editor_style_saves_apply_once_with_the_final_content(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir) as (rec, target, _):
        tmp = config_dir / "servers.d" / ".a.yaml.swp"
        tmp.write_text(server_yaml("a", "  command: vim-saved\n"))
        (config_dir / "servers.d" / "a.yaml~").write_text("backup: [")  # backup files are ignored
        os.replace(tmp, config_dir / "servers.d" / "a.yaml")
        await settled(rec, lambda: target.servers["a"].command == "vim-saved", what="atomic save")
        assert stalled(rec) is None


async def test_a_comment_only_edit_changes_no_revision_and_touches_nothing(
    config_dir: Path,
) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir) as (rec, target, watcher):
        revision, calls, events = rec.status.applied_revision, list(target.calls), watcher.events
        write(config_dir, {"servers.d/a.yaml": "# reviewed\n" + server_yaml("a")})
        await until(lambda: watcher.events > events, what="event seen")
        await settled(rec, lambda: True)
        result = await rec.reconcile_once()
        assert result.outcome == "noop" and rec.status.applied_revision == revision
        assert target.calls == calls


async def test_a_filter_only_edit_never_reconnects(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir) as (rec, target, _):
        body = "  command: python\n  tools: {include: ['echo_*']}\n  prompt: Use echo.\n"
        write(config_dir, {"servers.d/a.yaml": server_yaml("a", body)})
        await settled(rec, lambda: target.servers["a"].tools.include == ["echo_*"], what="filter")
        assert target.calls[-1] == ("put", "a", False)
        assert target.reconnects == ["a"]  # only the initial create


async def test_deleting_every_server_is_refused_unless_allowed(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a"), "servers.d/b.yaml": server_yaml("b")})
    async with running(config_dir) as (rec, target, _):
        for f in (config_dir / "servers.d").iterdir():
            f.unlink()
        await until(lambda: stalled(rec) == "EmptySnapshotRejected", what="rejected")
        assert set(target.servers) == {"a", "b"}
    async with running(config_dir, allow_empty=True) as (rec, target, _):
        assert target.servers == {} and stalled(rec) is None


async def test_a_configmap_swap_applies_the_new_data(tmp_path: Path) -> None:
    root = tmp_path / "cm"

    def publish(stamp: str, servers: dict[str, str]) -> None:
        data = root / f"..{stamp}"
        write(data, {"agent.yaml": AGENT, **{f"servers.d/{n}.yaml": t for n, t in servers.items()}})
        os.symlink(data.name, root / "..data_tmp")
        os.replace(root / "..data_tmp", root / "..data")  # what kubelet does: atomic rename

    root.mkdir()
    publish("2026_11_24_1", {"a": server_yaml("a")})
    os.symlink("..data/agent.yaml", root / "agent.yaml")
    os.symlink("..data/servers.d", root / "servers.d")
    async with running(root) as (rec, target, _):
        assert set(target.servers) == {"a"}
        publish("2026_11_24_2", {"b": server_yaml("b")})
        shutil.rmtree(root / "..2026_11_24_1")
        await settled(rec, lambda: set(target.servers) == {"b"}, what="swap applied")
        assert stalled(rec) is None


async def test_a_git_sync_flip_then_an_edit_in_the_new_worktree(tmp_path: Path) -> None:
    link = tmp_path / "repo"
    first, second = tmp_path / ".worktrees" / ("a" * 40), tmp_path / ".worktrees" / ("b" * 40)
    write(first, {"agent.yaml": AGENT, "servers.d/a.yaml": server_yaml("a")})
    write(second, {"agent.yaml": AGENT, "servers.d/b.yaml": server_yaml("b")})
    os.symlink(first, link)
    async with running(link) as (rec, target, _):
        assert set(target.servers) == {"a"} and rec.status.git_commit == "a" * 40
        os.symlink(second, tmp_path / "repo.tmp")
        os.replace(tmp_path / "repo.tmp", link)
        await settled(rec, lambda: set(target.servers) == {"b"}, what="flip applied")
        assert rec.status.git_commit == "b" * 40
        write(second, {"servers.d/c.yaml": server_yaml("c")})  # the watch follows the new target
        await settled(rec, lambda: set(target.servers) == {"b", "c"}, what="edit after flip")


async def test_the_config_dir_deleted_and_recreated(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir) as (rec, target, watcher):
        shutil.rmtree(config_dir)
        await until(lambda: watcher.state == "Degraded", what="missing dir noticed")
        assert set(target.servers) == {"a"}  # a missing dir is not an empty config
        write(config_dir, {"agent.yaml": AGENT, "servers.d/z.yaml": server_yaml("z")})
        await settled(rec, lambda: set(target.servers) == {"z"}, what="recreated dir applied")
        await until(lambda: watcher.state == "Watching", what="watching again")
        write(config_dir, {"servers.d/y.yaml": server_yaml("y")})
        await settled(
            rec, lambda: set(target.servers) == {"z", "y"}, what="edits seen in the new dir"
        )


async def test_two_hundred_rapid_edits_end_in_the_last_state(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir) as (rec, target, _):
        for i in range(200):
            write(config_dir, {"servers.d/a.yaml": server_yaml("a", f"  command: cmd{i}\n")})
        await settled(
            rec, lambda: target.servers["a"].command == "cmd199", what="last edit applied"
        )
        puts = [c for c in target.calls if c[0] == "put"]
        assert len(puts) < 200  # coalesced, not one pass per write
        assert stalled(rec) is None


async def test_a_sighup_style_trigger_rescans_without_any_event(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a")})
    async with running(config_dir, resync_interval=3600) as (rec, target, watcher):
        watcher.on_change = lambda: None  # deaf watcher: only the explicit trigger remains
        write(config_dir, {"servers.d/b.yaml": server_yaml("b")})
        rec.trigger()
        await settled(rec, lambda: "b" in target.servers, what="manual resync")


async def test_a_relative_cwd_is_relative_to_the_config_dir(config_dir: Path) -> None:
    write(config_dir, {"servers.d/a.yaml": server_yaml("a", "  command: python\n  cwd: tools\n")})
    async with running(config_dir) as (_, target, _watcher):
        assert target.connections["a"].cwd == str((config_dir / "tools").resolve())
