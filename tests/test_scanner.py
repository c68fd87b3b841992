from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import asyncpg
import pytest

from reactor.config import Config, ImagesConfig, WatcherConfig, load
from reactor.paths import PathMapper, certainly_gone
from reactor.store import sql
from reactor.watch.candidates import Candidates
from reactor.watch.mounts import (
    attribute_cache_seconds,
    choose_observer,
    mount_for,
    mount_point_found,
    network_mount_of,
    parse_mountinfo,
)
from reactor.watch.scanner import ScanDiff, Scanner, diff, walk
from reactor.watch.share import ShareMonitor

MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:31 / /mnt/vision_images rw,relatime shared:20 - cifs //nas/vision rw,vers=3.0
36 22 0:32 / /mnt/nfs\040photos rw shared:21 - nfs4 nas:/photos rw
37 22 0:33 / /home/me/remote rw shared:22 - fuse.sshfs me@box:/pics rw
38 22 8:2 / /data rw - xfs /dev/sdb1 rw
"""


def candidates_for(root: Path, **watcher: object) -> Candidates:
    images = dataclasses.replace(ImagesConfig(), root=str(root))
    wcfg = dataclasses.replace(WatcherConfig(), **watcher)  # type: ignore[arg-type]
    return Candidates(images, wcfg, PathMapper(str(root), images.derived_folders, images.max_path_length))


def test_parse_mountinfo_and_choice() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.fstype for m in mounts] == ["ext4", "cifs", "nfs4", "fuse.sshfs", "xfs"]
    assert mounts[2].mount_point == "/mnt/nfs photos"
    m = mount_for("/mnt/vision_images/2024/a.jpg", mounts)
    assert m is not None and m.fstype == "cifs"
    assert mount_for("/mnt/vision_images_other", mounts).mount_point == "/"  # type: ignore[union-attr]

    def choice(root: str, observer: str = "auto") -> tuple[str, str]:
        base = load(None, env={})
        cfg: Config = dataclasses.replace(
            base,
            images=dataclasses.replace(base.images, root=root),
            watcher=dataclasses.replace(base.watcher, observer=observer),  # type: ignore[arg-type]
        )
        c = choose_observer(cfg, MOUNTINFO)
        return c.kind, c.fstype or c.reason

    assert choice("/mnt/vision_images") == ("polling", "cifs")
    assert choice("/mnt/nfs photos/x") == ("polling", "nfs4")
    assert choice("/home/me/remote") == ("polling", "fuse.sshfs")
    assert choice("/data/photos") == ("native", "xfs")
    assert choice("\\\\nas\\vision_images") == ("polling", "unc_root")
    # A forced observer still names the filesystem (its attribute cache sets the window).
    assert choice("/mnt/vision_images", "native") == ("native", "cifs")
    assert choice("/data/photos", "polling") == ("polling", "xfs")


def test_a_root_below_a_network_mount_point_is_on_the_share() -> None:
    # smbnetfs mounts the whole network at one point; a share is MNT/host/share.
    text = MOUNTINFO + "39 22 0:40 / /mnt/smb rw,nosuid,nodev - fuse.smbnetfs smbnetfs rw,user_id=0\n"
    below = network_mount_of("/mnt/smb/127.0.0.1/share", text)
    assert below is not None and below.mount_point == "/mnt/smb" and below.fstype == "fuse.smbnetfs"
    assert attribute_cache_seconds(below) == 1.0  # the FUSE default smbnetfs keeps (measured in test_smb_share)
    assert network_mount_of("/mnt/vision_images/2024", text) is not None
    assert network_mount_of("/data/photos", text) is None  # a local disk: not a share
    assert network_mount_of("/data/photos", "") is None  # no mountinfo: nothing known
    assert mount_point_found("/data/photos", text) == "/data (xfs)"


def test_choice_reads_this_machines_mountinfo(tmp_path: Path) -> None:
    base = load(None, env={})
    cfg = dataclasses.replace(base, images=dataclasses.replace(base.images, root=str(tmp_path)))
    c = choose_observer(cfg)
    assert c.kind in ("native", "polling")
    assert c.reason in ("filesystem_type", "no_mountinfo", "mount_unknown")


def test_candidates(tmp_path: Path) -> None:
    c = candidates_for(tmp_path)
    root = str(tmp_path)
    ok = ["a.jpg", "b/IMG_0073(1).PNG", "c/d/e.HeIc", "x.webp"]
    bad = [
        "face_crops/a.jpg",
        "b/Thumbnails/a.jpg",
        "@eaDir/a.jpg",
        "b/#recycle/a.jpg",
        "._a.jpg",
        ".hidden.jpg",
        "a.jpg.part",
        "a.tmp",
        "~$a.jpg",
        "notes.txt",
        "b/.thumbnails/a.png",
        "a.jpg.crdownload",
    ]
    for rel in ok:
        assert c.image_path(os.path.join(root, rel)) == rel, rel
    for rel in bad:
        assert c.image_path(os.path.join(root, rel)) is None, rel
    assert c.image_path("/elsewhere/a.jpg") is None
    assert c.dir_path(os.path.join(root, "b", "c")) == "b/c"
    assert c.dir_path(os.path.join(root, "face_crops")) is None
    assert c.skip_dir("@eaDir") and c.skip_dir("THUMBS") and not c.skip_dir("2024")


def make_tree(root: Path, files: list[str]) -> None:
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 10)


def test_walk_skips_ignored_folders_and_diff_finds_moves(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a.jpg", "b/c.png", "face_crops/f.jpg", "@eaDir/x/y.jpg", "b/z.part", "b/notes.txt"])
    c = candidates_for(tmp_path)
    first = walk(c)
    assert first.complete
    assert sorted(first.files) == ["a.jpg", "b/c.png"]
    assert first.dirs == 2  # root and b; face_crops and @eaDir are never entered
    (tmp_path / "b" / "c.png").rename(tmp_path / "b" / "d.png")
    (tmp_path / "a.jpg").unlink()
    make_tree(tmp_path, ["new.jpg"])
    second = walk(c)
    d = diff(first.files, second.files)
    assert d.moved == [("b/c.png", "b/d.png")]
    assert d.created == ["new.jpg"]
    assert d.deleted == ["a.jpg"]
    assert d.modified == []


def test_walk_of_a_missing_root_is_incomplete(tmp_path: Path) -> None:
    w = walk(candidates_for(tmp_path / "gone"))
    assert not w.complete and w.files == {}


@pytest.mark.parametrize("error", [errno.EIO, errno.EACCES, errno.ENOENT, errno.ESTALE])
async def test_a_subtree_that_errors_keeps_its_files(share: Path, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    """A partial outage is not a deletion: the failing folder's files are unknown (ENOENT
    on a folder its parent just listed too: a dead automount or DFS link), while the
    healthy folder's real deletion is reported."""
    make_tree(share, ["ok/a.jpg", "ok/b.jpg", "sick/c.jpg", "sick/d.jpg"])
    images = dataclasses.replace(ImagesConfig(), root=str(share))
    monitor = ShareMonitor(images, online_interval=0.0, offline_initial=0.0)
    scanner = Scanner(Candidates(images, WatcherConfig(), PathMapper(str(share))), monitor)
    assert await scanner.scan() is not None
    (share / "ok" / "b.jpg").unlink()
    real_scandir = os.scandir
    sick = str(share / "sick")

    def failing_scandir(path: str) -> object:
        if str(path) == sick:
            raise OSError(error, os.strerror(error), path)
        return real_scandir(path)

    monkeypatch.setattr("reactor.watch.scanner.os.scandir", failing_scandir)
    d = await scanner.scan()
    assert d is not None and d.deleted == ["ok/b.jpg"]
    assert "sick/c.jpg" in scanner.snapshot and "sick/d.jpg" in scanner.snapshot
    # The folder heals: nothing under it was ever reported deleted.
    monkeypatch.setattr("reactor.watch.scanner.os.scandir", real_scandir)
    scanner.forget("ok/b.jpg")
    assert await scanner.scan() == ScanDiff()


def test_a_recheck_that_fails_is_unknown_not_gone(share: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(share, ["here.jpg"])
    (share / "dir").mkdir()
    real_lstat = os.lstat
    flaky = str(share / "flaky.jpg")

    def lstat(path: str) -> os.stat_result:
        if str(path) == flaky:
            raise OSError(errno.EIO, "I/O error", path)
        return real_lstat(path)

    monkeypatch.setattr("reactor.watch.scanner.os.lstat", lstat)
    paths = [
        str(share / "here.jpg"),
        str(share / "gone.jpg"),
        flaky,
        str(share / "nodir" / "x" / "y.jpg"),
        str(share / "dir" / "gone.jpg"),
    ]
    states = certainly_gone(paths)
    assert [states[p] for p in paths] == [False, True, None, None, True]


async def test_scanner_withholds_a_mass_vanish_until_confirmed(share: Path) -> None:
    files = [f"d/{i:03}.jpg" for i in range(50)]
    make_tree(share, files)
    images = dataclasses.replace(ImagesConfig(), root=str(share))
    wcfg = dataclasses.replace(WatcherConfig(), vanish_fraction=0.2, vanish_min_files=5)
    monitor = ShareMonitor(images, wcfg, online_interval=0.0, offline_initial=0.0)
    scanner = Scanner(Candidates(images, wcfg, PathMapper(str(share))), monitor)
    assert (await scanner.scan()) is not None
    assert len(scanner.snapshot) == 50
    # A few deletions are deletions.
    for rel in files[:3]:
        (share / rel).unlink()
    d = await scanner.scan()
    assert d is not None and sorted(d.deleted) == files[:3]
    for rel in d.deleted:
        scanner.forget(rel)
    # Half the share vanishing is held: nothing is reported, the snapshot keeps them.
    for rel in files[3:30]:
        (share / rel).unlink()
    d = await scanner.scan()
    assert d is not None and d.deleted == []
    assert len(scanner.snapshot) == 47
    # The share does not go offline for it (a confirmed mass deletion must not flap it).
    assert monitor.online
    # The same files still gone at the next scan: a confirmed mass deletion, held for
    # the operator (reactor.store.held), not reported as deletions.
    d = await scanner.scan()
    assert d is not None and sorted(d.held) == files[3:30] and d.deleted == []
    # They stay in the snapshot until the watcher has held them.
    assert len(scanner.snapshot) == 47
    for rel in d.held:
        scanner.forget(rel)
    assert await scanner.scan() == ScanDiff()


async def test_scanner_reports_nothing_while_offline(share: Path) -> None:
    make_tree(share, ["a.jpg"])
    images = dataclasses.replace(ImagesConfig(), root=str(share))
    monitor = ShareMonitor(images)
    scanner = Scanner(Candidates(images, WatcherConfig(), PathMapper(str(share))), monitor)
    assert await scanner.scan() is not None
    (share / ".reactor-share").unlink()
    assert await scanner.scan() is None
    assert scanner.snapshot == {"a.jpg": scanner.snapshot["a.jpg"]}


async def test_every_watcher_sql_block_runs(dsn: str) -> None:
    """Each named block in sql/file_events.sql parses and runs against the real schema."""
    args: dict[str, tuple[object, ...]] = {
        "has_results": (["a.jpg"],),
        "register_files": (["a.jpg"],),
        "registered_page": ("", 10),
        "row_forms": (["a.jpg"],),
        "unreachable_under": ("a/", ["missing"]),
        "record_invalid_names": (["bad\\xff.jpg"],),
        "requeue_changed_failures": (["a.jpg"], [1], [2], [True]),
        "requeue_changed_failures_untracked": (["a.jpg"], [1], [2], [True]),
        "file_identities": (["a.jpg"],),
    }
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for name, text in sql.blocks("file_events.sql").items():
                params = args.get(name)
                if params is None:
                    params = ("a/", "b/") if text.count("$2") else ("a.jpg",)
                await conn.execute(text, *params) if "SELECT" not in text.split()[0] else await conn.fetch(
                    text, *params
                )
    finally:
        await conn.close()
