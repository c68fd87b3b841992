"""Network shares without a share: the attribute-cache window, file identity without
inodes, and the detector telling a copy in progress from a damaged photo."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor.config import Config, RetryConfig, load
from reactor.detector.loading import busy, changed_after_read, load_image, read_file, unfinished
from reactor.detector.types import DetectionFailure
from reactor.errors import UsageError
from reactor.failure_types import ErrorType
from reactor.handlers import deletions as deletions_handler
from reactor.ops import samples
from reactor.store import held, outcomes
from reactor.store.schema import failure_columns
from reactor.util.identity import fingerprint_of_bytes, read_identity
from reactor.watch.file_events import DatabaseSink, ReadyFile
from reactor.watch.mounts import attribute_cache_seconds, choose_observer, parse_mountinfo, stability_window
from reactor.watch.scanner import diff
from tests.ops_seed import invoke

MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:31 / /mnt/smb rw,relatime shared:20 - cifs //nas/vision rw,vers=3.0,actimeo=30
36 22 0:32 / /mnt/nfs rw shared:21 - nfs4 nas:/photos rw,vers=4.2,acregmin=3,acregmax=45,acdirmin=30
37 22 0:33 / /mnt/sshfs rw,nosuid shared:22 - fuse.sshfs me@box:/pics rw,user_id=0,group_id=0
38 22 0:34 / /mnt/nfs-noac rw shared:23 - nfs nas:/x rw,noac
39 22 0:35 / /mnt/smb-default rw shared:24 - cifs //nas/y rw,vers=3.0
40 22 0:36 / /mnt/odd rw shared:25 - fuse.rclone remote: rw
"""


def config_for(root: str, **watcher: Any) -> Config:
    base = load(None, env={})
    images = dataclasses.replace(base.images, root=root)
    return dataclasses.replace(base, images=images, watcher=dataclasses.replace(base.watcher, **watcher))


def window(root: str, **watcher: Any) -> float:
    config = config_for(root, **watcher)
    return stability_window(config, choose_observer(config, MOUNTINFO))


def test_attribute_cache_is_read_from_the_mount_options() -> None:
    by_point = {m.mount_point: m for m in parse_mountinfo(MOUNTINFO)}
    assert attribute_cache_seconds(by_point["/mnt/smb"]) == 30.0
    assert attribute_cache_seconds(by_point["/mnt/nfs"]) == 45.0  # acregmax wins over acregmin
    assert attribute_cache_seconds(by_point["/mnt/nfs-noac"]) == 0.0
    assert attribute_cache_seconds(by_point["/mnt/smb-default"]) == 1.0  # cifs's default actimeo
    assert attribute_cache_seconds(by_point["/mnt/sshfs"]) == 20.0  # sshfs's default cache timeout
    assert attribute_cache_seconds(by_point["/mnt/odd"]) == 60.0  # an unknown network type: safe
    assert attribute_cache_seconds(by_point["/"]) == 0.0


def test_the_window_outlasts_the_attribute_cache() -> None:
    assert window("/mnt/smb/a") == 45.0  # 30 s cache + 15 s margin, over the 15 s configured
    assert window("/mnt/smb-default/a") == 15.0  # a 1 s cache: the configured window is longer
    assert window("/mnt/sshfs", network_stability_seconds=5.0) == 30.0
    assert window("/mnt/sshfs", attribute_cache_seconds=2.0, network_stability_seconds=1.0) == 4.0
    assert window("/mnt/nfs-noac", network_stability_seconds=1.0) == 2.0
    assert window("/data") == 2.0  # local disk: watcher.stability_seconds
    assert window("\\\\nas\\photos", network_stability_seconds=1.0) == 15.0  # Windows SMB: 10 s cache


def test_a_remount_or_a_server_side_rename_changes_no_identity() -> None:
    # Without inodes (network shares: 0), a remount that renumbers inodes changes
    # nothing, and a path is modified only when its size or mtime changed.
    before = {"a.jpg": (10, 100, 0), "b.jpg": (20, 200, 0)}
    assert not diff(before, dict(before))
    changed = diff(before, {"a.jpg": (10, 100, 0), "b.jpg": (21, 300, 0)})
    assert changed.modified == ["b.jpg"] and not changed.created and not changed.deleted
    # Identical size and mtime at another path is not taken as a move by the diff
    # (no inode): the watcher confirms it by content fingerprint first.
    renamed = diff(before, {"a.jpg": (10, 100, 0), "c/b.jpg": (20, 200, 0)})
    assert renamed.created == ["c/b.jpg"] and renamed.deleted == ["b.jpg"] and not renamed.moved


def test_fingerprint_of_a_file_matches_the_detectors(tmp_path: Path) -> None:
    for size in (10, 64 * 1024, 100_000, 300_000):
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        path = tmp_path / f"f{size}.bin"
        path.write_bytes(data)
        identity = read_identity(str(path))
        assert identity is not None and identity.size == size
        assert identity.fingerprint == fingerprint_of_bytes(data)
    other = tmp_path / "other.bin"
    other.write_bytes(b"y" * 300_000)
    assert read_identity(str(other)).fingerprint != fingerprint_of_bytes(b"x" * 300_000)  # type: ignore[union-attr]


def cut(path: Path, fraction: float) -> bytes:
    data = path.read_bytes()
    return data[: int(len(data) * fraction)]


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_a_file_cut_short_is_incomplete_not_corrupt(tmp_path: Path, suffix: str) -> None:
    image = samples.astronaut().resize((200, 200))
    whole = tmp_path / f"whole.{suffix}"
    image.save(whole, quality=90) if suffix == "jpg" else image.save(whole)
    assert unfinished(whole.read_bytes()) is None
    partial = tmp_path / f"partial.{suffix}"
    partial.write_bytes(cut(whole, 0.5))
    outcome = load_image(str(partial), lambda _size: 200, 10**8, 0.0)
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.INCOMPLETE, outcome.message
    assert outcome.file_size_bytes == partial.stat().st_size
    assert outcome.file_mtime_ns == partial.stat().st_mtime_ns
    loaded = load_image(str(whole), lambda _size: 200, 10**8, 0.0)
    assert not isinstance(loaded, DetectionFailure)
    assert loaded.fingerprint == fingerprint_of_bytes(whole.read_bytes())
    assert loaded.file_mtime_ns == whole.stat().st_mtime_ns


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_a_preallocated_copy_is_incomplete_even_where_it_decodes(tmp_path: Path, suffix: str) -> None:
    # Explorer sets the final size first: the part not yet written reads as zeros. With
    # only its last bytes missing, a JPEG decodes, and must still not give a result.
    image = samples.astronaut().resize((200, 200))
    whole = tmp_path / f"whole.{suffix}"
    image.save(whole, quality=90) if suffix == "jpg" else image.save(whole)
    data = whole.read_bytes()
    for missing in (10, len(data) // 2):
        copy = tmp_path / f"copy-{missing}.{suffix}"
        copy.write_bytes(data[:-missing] + b"\x00" * missing)
        outcome = load_image(str(copy), lambda _size: 200, 10**8, 0.0)
        assert isinstance(outcome, DetectionFailure) and outcome.error_type is ErrorType.INCOMPLETE, missing
        # Its content's fingerprint is in the message: through SMB a copy's size and
        # mtime stay frozen, so only the content shows it moved on (outcomes.record_failure).
        assert fingerprint_of_bytes(copy.read_bytes())[:16] in outcome.message
    padded = tmp_path / f"padded.{suffix}"
    padded.write_bytes(data + b"\x00" * 64)  # some writers pad after the end marker
    assert not isinstance(load_image(str(padded), lambda _size: 200, 10**8, 0.0), DetectionFailure)
    # A motion photo: a video appended after the end marker. Complete, and detected.
    motion = tmp_path / f"motion.{suffix}"
    motion.write_bytes(data + b"\x00\x00\x00\x18ftypmp42" + bytes(range(1, 200)))
    assert not isinstance(load_image(str(motion), lambda _size: 200, 10**8, 0.0), DetectionFailure)


def test_a_file_that_moves_on_right_after_the_read_is_incomplete(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpg"
    samples.astronaut().resize((200, 200)).save(whole, quality=90)
    data = whole.read_bytes()
    st = whole.stat()
    assert changed_after_read(str(whole), data, st.st_mtime_ns) is None
    # Same size, same mtime, other bytes at the end: a copy written into a preallocated file.
    whole.write_bytes(data[:-100] + bytes(100))
    os.utime(whole, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "64 KiB changed" in (changed_after_read(str(whole), data, st.st_mtime_ns) or "")
    assert "could not be looked at" in (changed_after_read(str(tmp_path / "gone.jpg"), data, None) or "")


@pytest.mark.parametrize(
    "error", [OSError(errno.EBUSY, "Device or resource busy"), OSError(errno.ETXTBSY, "Text file busy")]
)
def test_a_file_locked_by_another_client_is_its_own_transient_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(b"\xff\xd8")

    def refuse(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr("builtins.open", refuse)
    outcome = read_file(str(locked))
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.UNREADABLE and outcome.message.startswith("busy: locked")
    winerror = OSError(13, "The process cannot access the file")
    winerror.winerror = 32  # type: ignore[attr-defined]
    assert busy(winerror) and not busy(OSError(errno.EIO, "Input/output error"))


async def test_a_copy_that_moves_on_with_a_frozen_size_and_mtime_stays_incomplete(conn: asyncpg.Connection) -> None:
    cols = await failure_columns(conn)

    def at(content: str) -> DetectionFailure:
        return DetectionFailure(
            ErrorType.INCOMPLETE,
            f"JPEG without its end marker (FFD9) at 300 bytes, mtime_ns 7, content {content}: still being written?",
            file_size_bytes=300,
            file_mtime_ns=7,
        )

    for content in ("aaaa", "bbbb", "cccc"):
        record = await outcomes.record_failure(conn, "smb.jpg", at(content), RETRY, cols, incomplete_delay=4.0)
        assert record.error_type is ErrorType.INCOMPLETE and record.retry_count == 0
    stuck = await outcomes.record_failure(conn, "smb.jpg", at("cccc"), RETRY, cols, incomplete_delay=4.0)
    assert stuck.error_type is ErrorType.CORRUPT  # the same bytes a window later: it stopped


def test_a_complete_but_damaged_jpeg_is_corrupt(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpg"
    samples.astronaut().resize((200, 200)).save(whole, quality=90)
    data = bytearray(whole.read_bytes())
    # Keep the start and end markers, break the headers: damage, not a copy in progress.
    data[2:400] = b"\x00" * 398
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(bytes(data))
    outcome = load_image(str(damaged), lambda _size: 200, 10**8, 0.0)
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.CORRUPT, outcome.message


RETRY = RetryConfig(
    base_seconds=10.0, multiplier=2.0, max_delay_seconds=35.0, jitter=0.0, max_attempts=3, max_attempts_permanent=2
)


def cut_short(size: int, mtime_ns: int) -> DetectionFailure:
    return DetectionFailure(
        ErrorType.INCOMPLETE,
        f"JPEG without its end marker (FFD9) at {size} bytes",
        file_size_bytes=size,
        file_mtime_ns=mtime_ns,
    )


async def test_incomplete_is_not_a_try_until_found_again_unchanged(conn: asyncpg.Connection) -> None:
    cols = await failure_columns(conn)
    assert "file_mtime_ns" in cols
    first = await outcomes.record_failure(conn, "copy.jpg", cut_short(100, 1), RETRY, cols, incomplete_delay=4.0)
    assert first.error_type is ErrorType.INCOMPLETE and first.retry_count == 0 and not first.permanently_failed
    due = await conn.fetchval("SELECT next_retry_after - last_failure_at FROM face_detection_failures")
    assert due.total_seconds() == pytest.approx(4.0, abs=0.5)
    grown = await outcomes.record_failure(conn, "copy.jpg", cut_short(200, 2), RETRY, cols, incomplete_delay=4.0)
    assert grown.error_type is ErrorType.INCOMPLETE and grown.retry_count == 0  # still growing: no try counted
    # The same cut file, unchanged a window later: it is damaged, not being copied.
    again = await outcomes.record_failure(conn, "copy.jpg", cut_short(200, 2), RETRY, cols, incomplete_delay=4.0)
    assert again.error_type is ErrorType.CORRUPT and again.retry_count == 1
    row = await conn.fetchrow("SELECT * FROM face_detection_failures")
    assert row is not None
    assert (row["last_error_type"], row["file_size_bytes"], row["file_mtime_ns"]) == ("corrupt", 200, 2)
    # Its retry finds the same cut file: corrupt again at once, then permanent.
    last = await outcomes.record_failure(conn, "copy.jpg", cut_short(200, 2), RETRY, cols, incomplete_delay=4.0)
    assert last.error_type is ErrorType.CORRUPT and last.retry_count == 2 and last.permanently_failed


async def test_a_permanent_failure_whose_file_changed_is_queued_again(dsn: str, conn: asyncpg.Connection) -> None:
    cols = await failure_columns(conn)
    for path in ("fixed.jpg", "same.jpg", "timeout.jpg"):
        kind = ErrorType.TIMEOUT if path == "timeout.jpg" else ErrorType.CORRUPT
        failure = DetectionFailure(kind, "damaged", file_size_bytes=100, file_mtime_ns=5)
        for _ in range(3):
            await outcomes.record_failure(conn, path, failure, RETRY, cols)
    # A legacy row without a recorded mtime: only a change the watcher saw counts.
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, retry_count, last_error, last_error_type, "
        "permanently_failed) VALUES ('legacy.jpg', 2, 'cut', 'corrupt', TRUE), "
        "('legacy_seen.jpg', 2, 'cut', 'corrupt', TRUE)"
    )
    queued: list[str] = []
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:

        def enqueue(path: str, redetect: bool) -> bool:
            queued.append(path)
            return True

        sink = DatabaseSink(pool, enqueue, register_files=False)
        requeued = await sink.refresh_failures(
            [
                ReadyFile("fixed.jpg", size=180, mtime_ns=9),
                ReadyFile("same.jpg", size=100, mtime_ns=5),
                ReadyFile("timeout.jpg", size=180, mtime_ns=9),
                ReadyFile("legacy.jpg", size=1, mtime_ns=1),
                ReadyFile("legacy_seen.jpg", changed=True, size=1, mtime_ns=1),
            ]
        )
    finally:
        await pool.close()
    assert sorted(requeued) == sorted(queued) == ["fixed.jpg", "legacy_seen.jpg"]
    left = {r["image_path"] for r in await conn.fetch("SELECT image_path FROM face_detection_failures")}
    assert left == {"same.jpg", "timeout.jpg", "legacy.jpg"}


async def test_deletions_command_lists_refuses_offline_and_applies_with_a_backup(
    make_config: Callable[..., Config], conn: asyncpg.Connection, share: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(images={"register_files": "always", "marker": ".reactor-share"})
    (share / "back.jpg").write_bytes(b"x")
    for path in ("gone.jpg", "back.jpg"):
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1)", path
        )
    await held.hold(conn, ["gone.jpg", "back.jpg"], "mass_vanish_confirmed")
    assert await invoke(deletions_handler.register, config, ["deletions"]) == 0
    out = capsys.readouterr().out
    assert "2 held" in out and "gone.jpg" in out and "--apply" in out
    (share / ".reactor-share").unlink(missing_ok=True)
    with pytest.raises(UsageError, match="share is offline"):
        await invoke(deletions_handler.register, config, ["deletions", "--apply"])
    (share / ".reactor-share").touch()
    assert await invoke(deletions_handler.register, config, ["deletions", "--apply", "--json"]) == 0
    applied = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert applied["deleted"] == 1 and applied["released"] == ["back.jpg"]
    backup = applied["backups"]["face_metadata"]["table"]
    assert [r["image_path"] for r in await conn.fetch(f'SELECT image_path FROM "{backup}"')] == ["gone.jpg"]
    assert [r["image_path"] for r in await conn.fetch("SELECT image_path FROM face_metadata")] == ["back.jpg"]
    assert [r["image_path"] for r in await conn.fetch("SELECT image_path FROM ai_metadata")] == ["back.jpg"]
    assert await held.count(conn) == 0


async def test_a_held_file_that_cannot_be_looked_at_stays_held_with_its_result(
    make_config: Callable[..., Config], conn: asyncpg.Connection, share: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two folders gone at once look like a dead link or mount: not a deletion."""
    config = make_config(images={"marker": ".reactor-share"})
    (share / ".reactor-share").touch()
    path = "gone/deeper/photo.jpg"  # neither gone/deeper nor gone can be looked at
    await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)
    await conn.execute(
        "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1)", path
    )
    await held.hold(conn, [path], "mass_vanish_confirmed")
    assert await invoke(deletions_handler.register, config, ["deletions", "--apply"]) == 0
    assert "kept 1 held" in capsys.readouterr().out
    assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = $1", path) == 1
    assert await held.count(conn) == 1
