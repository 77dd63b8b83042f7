"""Secret files (`${file:/path}`): read once per pass, unreadable for good reasons, remembered
only as fingerprints, and watched so that every kind of rotation calls `on_change`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import statistics
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from jackfield.core.expansion import expand, file_key, problems
from jackfield.shell import secret_files
from jackfield.shell.secret_files import (
    MAX_SECRET_BYTES,
    FileEnvironment,
    SecretFiles,
    fingerprint,
    read_secret,
    watch_points,
)
from tests.support.polling import until

NO_TICK = 60_000
"""A tick so long that whatever a watcher test sees within its deadline came from an event."""
DEADLINE = 10.0


def one_pass(
    files: SecretFiles, *paths: str, referenced: Iterable[str] | None = None
) -> FileEnvironment:
    """A reconcile pass that looks `paths` up, settled (told what is `referenced`, if given)."""
    env = files.environment()
    for path in paths:
        env.get(file_key(path))
    files.settle(env, referenced)
    return env


# --- kubelet's Secret volume, as atomic_writer.go lays it out -------------------------------


def kubelet_volume(root: Path, data: dict[str, str], stamp: int = 0) -> None:
    """`key -> ..data/key`, `..data -> ..<stamp>` holding the files."""
    root.mkdir(parents=True, exist_ok=True)
    version = root / f"..2026_12_01_10_00_00.{stamp:03d}"
    version.mkdir()
    for key, value in data.items():
        (version / key).write_text(value)
    os.symlink(version.name, root / "..data")
    for key in data:
        os.symlink(f"..data/{key}", root / key)


def kubelet_update(root: Path, data: dict[str, str], stamp: int) -> None:
    """A new timestamped dir, `..data_tmp -> it`, renamed over `..data`, the old dir deleted."""
    old = os.readlink(root / "..data")
    version = root / f"..2026_12_01_10_00_00.{stamp:03d}"
    version.mkdir()
    for key, value in data.items():
        (version / key).write_text(value)
    os.symlink(version.name, root / "..data_tmp")
    os.rename(root / "..data_tmp", root / "..data")
    shutil.rmtree(root / old)


# --- reading ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ("tok", "tok"),
        ("tok\n", "tok"),
        ("tok\r\n", "tok"),
        ("tok\n\n\r\n", "tok"),
        ("line1\nline2\n", "line1\nline2"),
        ("tok \t\n", "tok \t"),
        ("tok\r", "tok\r"),
        ("", ""),
        ("\n", ""),
    ],
)
def test_a_lookup_gives_the_content_with_trailing_newlines_trimmed(
    tmp_path: Path, content: str, value: str
) -> None:
    (tmp_path / "token").write_bytes(content.encode())
    env = SecretFiles(tmp_path, {}).environment()
    assert env[file_key(str(tmp_path / "token"))] == value
    assert expand("Bearer ${file:" + str(tmp_path / "token") + "}", env) == f"Bearer {value}"


def test_a_relative_path_is_relative_to_the_config_dir_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    (config / "secrets").mkdir(parents=True)
    (config / "secrets" / "token").write_text("from-config\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "secrets").mkdir(parents=True)
    (elsewhere / "secrets" / "token").write_text("from-cwd\n")
    monkeypatch.chdir(elsewhere)
    env = SecretFiles(config, {}).environment()
    assert env[file_key("secrets/token")] == "from-config"
    assert env[file_key("./secrets/../secrets/token")] == "from-config"


def test_symlinks_are_followed_through_a_kubelet_volume(tmp_path: Path) -> None:
    kubelet_volume(tmp_path / "vol", {"token": "v0\n"})
    env = SecretFiles(tmp_path, {}).environment()
    assert env[file_key("vol/token")] == "v0"


def test_the_base_env_passes_through_and_is_all_that_iteration_shows(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret")
    env = SecretFiles(tmp_path, {"HOME": "/root", "file:token": "not from a file"}).environment()
    assert env[file_key("token")] == "secret"  # a file key always means the file
    assert env["HOME"] == "/root"
    assert "UNSET" not in env
    assert sorted(env) == ["HOME", "file:token"] and len(env) == 2
    assert "secret" not in repr(env)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "No such file or directory"),
        (lambda p: p.mkdir(), "Is a directory"),
        (lambda p: p.write_bytes(b"x" * (MAX_SECRET_BYTES + 1)), "larger than 64 KiB"),
        (lambda p: p.write_bytes(b"s3cret\xff\xfe"), "not UTF-8 text"),
        (lambda p: os.mkfifo(p), "not a regular file"),
        (lambda p: os.symlink(p.with_name("nowhere"), p), "No such file or directory"),
        (lambda p: os.symlink(p.name, p), "Too many levels of symbolic links"),
    ],
    ids=["missing", "directory", "too-big", "not-utf8", "fifo", "dangling-link", "link-loop"],
)
def test_an_unreadable_file_is_absent_from_the_env_with_its_reason(
    tmp_path: Path, make: object, reason: str
) -> None:
    target = tmp_path / "token"
    make(target)  # type: ignore[operator]
    files = SecretFiles(tmp_path, {})
    env = files.environment()
    assert file_key("token") not in env
    with pytest.raises(KeyError):
        env[file_key("token")]
    assert env.reason("token") == reason
    found = problems("${file:token}", env)
    assert len(found) == 1 and "cannot read secret file token" in found[0].message
    files.settle(env)
    assert files.reason("token") == reason


def test_a_file_of_exactly_the_limit_is_readable(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(b"x" * MAX_SECRET_BYTES)
    assert read_secret(tmp_path / "token") == ("x" * MAX_SECRET_BYTES, None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file: nothing to refuse")
def test_a_file_jackfield_may_not_read_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret")
    (tmp_path / "token").chmod(0)
    assert read_secret(tmp_path / "token") == (None, "Permission denied")


def test_unreadable_files_are_logged_at_debug_with_path_and_reason_never_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "binary").write_bytes(b"s3cret\xff")
    (tmp_path / "huge").write_text("s3cret" * MAX_SECRET_BYTES)
    (tmp_path / "good").write_text("s3cret")
    env = SecretFiles(tmp_path, {}).environment()
    with caplog.at_level(logging.DEBUG, logger="jackfield.shell.secret_files"):
        for name in ("binary", "huge", "good", "missing"):
            env.get(file_key(name))
    assert "binary is unreadable: not UTF-8 text" in caplog.text
    assert "huge is unreadable: larger than 64 KiB" in caplog.text
    assert "missing is unreadable: No such file or directory" in caplog.text
    assert "s3cret" not in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_one_pass_sees_one_value_per_file_and_the_next_pass_a_fresh_one(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one")
    files = SecretFiles(tmp_path, {})
    env = files.environment()
    assert env[file_key("token")] == "one"
    (tmp_path / "token").write_text("two")
    assert env[file_key("token")] == "one"
    (tmp_path / "token").unlink()
    assert file_key("token") in env
    assert files.environment().get(file_key("token")) is None


def test_a_file_missing_at_first_lookup_stays_missing_for_the_pass(tmp_path: Path) -> None:
    env = SecretFiles(tmp_path, {}).environment()
    assert file_key("token") not in env
    (tmp_path / "token").write_text("late")
    assert file_key("token") not in env


# --- what is remembered -------------------------------------------------------------------


def test_the_files_a_pass_looks_up_join_the_watch_set(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path, {})
    one_pass(files, "a", "b")
    assert files.watched == {"a", "b"}
    one_pass(files, "b", "c")
    assert files.watched == {"a", "b", "c"}


def test_a_pass_that_looked_nothing_up_keeps_the_watch_set(tmp_path: Path) -> None:
    """An unchanged config is skipped without loading: it refers to what the last load did."""
    files = SecretFiles(tmp_path, {})
    one_pass(files, "a")
    one_pass(files)
    assert files.watched == {"a"}


def test_told_what_is_referenced_the_watch_set_drops_the_rest(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path, {})
    one_pass(files, "a", "b")
    one_pass(files, "c", referenced=["b", "c"])
    assert files.watched == {"b", "c"}
    one_pass(files, "d", referenced=[])  # a lookup is a reference, whatever the caller says
    assert files.watched == {"d"}
    one_pass(files, referenced=[])
    assert files.watched == frozenset()


def test_a_file_referenced_but_not_looked_up_keeps_what_was_remembered(tmp_path: Path) -> None:
    """Its references came from the parse cache: the live connection has the value read then."""
    (tmp_path / "a").write_text("one")
    (tmp_path / "b").write_text("new")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "a")
    (tmp_path / "a").write_text("two")
    one_pass(files, referenced=["a", "b"])
    assert files.changed() == {"a"}  # not settled by a pass that did not look it up
    assert files.watched == {"a", "b"}  # b, never read before, is read as it is now
    one_pass(files, "a", referenced=["a", "b"])
    assert files.changed() == set()


def test_changed_reports_content_and_readability_changes_until_settled(tmp_path: Path) -> None:
    token, other = tmp_path / "token", tmp_path / "other"
    token.write_text("one")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "token", "other")
    assert files.changed() == set()
    token.write_text("one\n")  # same value: a trailing newline is not part of it
    assert files.changed() == set()
    token.write_text("two")
    assert files.changed() == {"token"}
    assert files.changed() == {"token"}  # asking is not settling
    other.write_text("now readable")
    assert files.changed() == {"token", "other"}
    one_pass(files, "token", "other")
    assert files.changed() == set()
    token.unlink()
    assert files.changed() == {"token"}
    token.write_text("two")
    assert files.changed() == set()


def test_the_digest_follows_readability_not_content(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    files = SecretFiles(tmp_path, {})

    def digest() -> str:
        return one_pass(files, "token").digest()

    readable = digest()
    token.write_text("two")
    assert digest() == readable
    token.unlink()
    unreadable = digest()
    assert unreadable != readable
    token.write_text("three")
    assert digest() == readable
    assert one_pass(files, "token", "missing").digest() not in (readable, unreadable)


def test_a_pass_reads_the_watched_files_ahead_so_its_digest_covers_them(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    files = SecretFiles(tmp_path, {})
    looked_up = one_pass(files, "token").digest()
    assert files.environment().digest() == looked_up  # this pass looks nothing up
    token.unlink()
    ahead = files.environment()
    assert ahead.digest() != looked_up
    assert ahead.reason("token") == "No such file or directory"


def test_values_are_remembered_only_as_keyed_fingerprints(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret")
    files = SecretFiles(tmp_path, {})
    env = one_pass(files, "token")
    mark = env.marks()["token"]
    assert mark.fingerprint == fingerprint("s3cret")
    assert mark.fingerprint != hashlib.sha256(b"s3cret").digest()
    assert "s3cret" not in repr(mark) and "s3cret" not in repr(files.__dict__)


def test_watch_points_are_the_dirs_a_read_goes_through(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    kubelet_volume(vol, {"token": "v0"})
    version = os.readlink(vol / "..data")
    assert watch_points(vol / "token") == {str(vol), str(vol / version)}
    assert watch_points(tmp_path / "plain") == {str(tmp_path)}
    assert watch_points(tmp_path / "not" / "yet" / "there") == {str(tmp_path)}
    os.symlink(vol, tmp_path / "link")
    assert watch_points(tmp_path / "link" / "token") == {
        str(tmp_path),
        str(vol),
        str(vol / version),
    }


# --- watching -----------------------------------------------------------------------------


class Calls:
    """An `on_change` that tests can await."""

    def __init__(self) -> None:
        self.count = 0
        self.at: list[float] = []
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.at.append(asyncio.get_running_loop().time())
        self._event.set()

    async def next(self, what: str) -> None:
        try:
            async with asyncio.timeout(DEADLINE):
                await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"on_change was not called for {what}") from None
        self._event.clear()


@contextlib.asynccontextmanager
async def watching(files: SecretFiles, tick_ms: int = NO_TICK) -> AsyncIterator[Calls]:
    """The watcher running on the settled watch set, armed; cancelled cleanly on exit."""
    calls = Calls()
    task = asyncio.create_task(files.watch(calls, tick_ms=tick_ms))
    try:
        await armed(files, 1)
        yield calls
    finally:
        await stopped(task, files)


async def stopped(task: asyncio.Task[None], files: SecretFiles) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        async with asyncio.timeout(DEADLINE):
            await task
    assert task.cancelled()
    assert files.watching == frozenset()


async def armed(files: SecretFiles, arms: int) -> None:
    await until(lambda: files.arms >= arms, timeout=DEADLINE, what=f"arm #{arms}")


async def test_an_in_place_rewrite_calls_on_change(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "token")
    async with watching(files) as calls:
        with open(tmp_path / "token", "r+") as f:
            f.write("two")
        await calls.next("an in-place rewrite")
        assert files.changed() == {"token"}


async def test_an_atomic_rename_over_the_file_calls_on_change(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "token")
    async with watching(files) as calls:
        (tmp_path / ".token.tmp").write_text("two")
        os.replace(tmp_path / ".token.tmp", tmp_path / "token")
        await calls.next("a rename over the file")


async def test_deleting_the_file_calls_on_change(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "token")
    async with watching(files) as calls:
        (tmp_path / "token").unlink()
        await calls.next("a deletion")
        assert files.changed() == {"token"}


async def test_creating_a_missing_file_calls_on_change(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path, {})
    one_pass(files, "token")
    async with watching(files) as calls:
        (tmp_path / "token").write_text("here now")
        await calls.next("a creation")


async def test_a_missing_dir_is_watched_from_its_nearest_existing_parent(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path, {})
    one_pass(files, "run/secrets/app/token")
    async with watching(files) as calls:
        assert files.watching == {str(tmp_path)}
        (tmp_path / "run" / "secrets" / "app").mkdir(parents=True)
        (tmp_path / "run" / "secrets" / "app" / "token").write_text("mounted")
        await calls.next("a dir and its file created")
        await until(lambda: files.watching == {str(tmp_path / "run/secrets/app")}, DEADLINE)


async def test_a_symlink_flipped_to_a_new_target_calls_on_change(tmp_path: Path) -> None:
    """The old target stays in place: the only event is the link's, in the link's dir."""
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "token").write_text(version)
    os.symlink("v1/token", tmp_path / "token")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "token")
    async with watching(files) as calls:
        os.symlink("v2/token", tmp_path / "token.new")
        os.rename(tmp_path / "token.new", tmp_path / "token")
        await calls.next("a flipped link")


async def test_each_kubelet_swap_calls_on_change(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    kubelet_volume(vol, {"token": "v0", "other": "unchanged"})
    files = SecretFiles(tmp_path, {})
    one_pass(files, "vol/token")
    async with watching(files) as calls:
        for stamp in range(1, 6):
            # no waiting for the re-arm: a swap during it is caught when the watch is back
            kubelet_update(vol, {"token": f"v{stamp}", "other": "unchanged"}, stamp)
            await calls.next(f"swap #{stamp}")
            assert files.environment()[file_key("vol/token")] == f"v{stamp}"
            one_pass(files, "vol/token")
        assert calls.count == 5


async def test_a_kubelet_swap_is_seen_within_a_short_latency(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    kubelet_volume(vol, {"token": "v0"})
    files = SecretFiles(tmp_path, {})
    one_pass(files, "vol/token")
    latencies = []
    loop = asyncio.get_running_loop()
    async with watching(files) as calls:
        for stamp in range(1, 21):
            await armed(files, stamp)  # as in production: swaps are minutes apart
            kubelet_update(vol, {"token": f"v{stamp}"}, stamp)
            swapped = loop.time()
            await calls.next(f"swap #{stamp}")
            latencies.append(calls.at[-1] - swapped)
    # generous bounds: this proves the event path (the tick is a minute), not speed under load
    assert statistics.median(latencies) < 2.0, latencies
    assert calls.count == 20


async def test_unrelated_files_in_the_same_dir_do_not_call_on_change(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "token")
    async with watching(files) as calls:
        (tmp_path / "unrelated").write_text("noise")
        (tmp_path / "token").write_text("one\n")  # same value
        os.replace(tmp_path / "unrelated", tmp_path / "unrelated2")
        (tmp_path / "token").write_text("two")
        await calls.next("the watched file")
        assert calls.count == 1


async def test_a_watch_set_changed_by_settle_is_watched_instead(tmp_path: Path) -> None:
    """The watcher re-arms on the new set (what changes before it is armed is caught when it
    is), and a file dropped from the set is watched no longer."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    (tmp_path / "old" / "token").write_text("old")
    (tmp_path / "new" / "token").write_text("new")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "old/token")
    async with watching(files) as calls:
        assert files.watching == {str(tmp_path / "old")}
        one_pass(files, "new/token", referenced=["new/token"])
        await until(lambda: files.watching == {str(tmp_path / "new")}, DEADLINE)
        (tmp_path / "old" / "token").write_text("no longer referenced")
        (tmp_path / "new" / "token").write_text("rotated")
        await calls.next("the newly referenced file")
        assert calls.count == 1


async def test_a_change_between_the_pass_and_the_re_arm_is_caught(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one")
    files = SecretFiles(tmp_path, {})
    calls = Calls()
    task = asyncio.create_task(files.watch(calls, tick_ms=NO_TICK))
    try:
        await until(lambda: files._wake is not None, DEADLINE)  # nothing referenced: unarmed
        env = files.environment()
        env.get(file_key("token"))
        (tmp_path / "token").write_text("two")  # after the pass read it, before the watch
        files.settle(env)
        await calls.next("a change the pass did not see")
        assert calls.count == 1
    finally:
        await stopped(task, files)


async def test_the_tick_catches_what_no_event_announces(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "token").write_text("one")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "a/b/token")
    async with watching(files, tick_ms=50) as calls:
        # the watched dir moves away whole (its watch with it); a new one takes its path
        os.rename(tmp_path / "a", tmp_path / "a.old")
        (tmp_path / "a" / "b").mkdir(parents=True)
        (tmp_path / "a" / "b" / "token").write_text("two")
        await calls.next("a change seen by the tick")
        await until(lambda: files.watching == {str(tmp_path / "a" / "b")}, DEADLINE)


async def test_when_the_native_watch_fails_the_files_are_read_every_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*args: object, **kwargs: object) -> AsyncIterator[set[tuple[object, str]]]:
        """The OS refuses inotify watches (fs.inotify.max_user_watches exhausted)."""
        raise OSError(28, "No space left on device (inotify watch limit)")

    monkeypatch.setattr(secret_files, "awatch", refused)
    (tmp_path / "token").write_text("one")
    files = SecretFiles(tmp_path, {})
    one_pass(files, "token")
    calls = Calls()
    task = asyncio.create_task(files.watch(calls, tick_ms=50))
    try:
        (tmp_path / "token").write_text("two")
        await calls.next("a change seen by reading every tick")
        assert "watching the secret files failed (OSError" in caplog.text
        assert files.arms == 0
    finally:
        await stopped(task, files)


async def test_the_watcher_waits_for_a_watch_set_and_cancels_cleanly(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path, {})
    calls = Calls()
    task = asyncio.create_task(files.watch(calls, tick_ms=NO_TICK))
    await until(lambda: files._wake is not None, DEADLINE)
    one_pass(files, "token")
    await armed(files, 1)
    await stopped(task, files)
    assert calls.count == 0
