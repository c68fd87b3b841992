"""Mapped network drives on Windows: GetDriveTypeW decides there, as mountinfo does on Linux.

A drive letter that Windows reports as DRIVE_REMOTE (``net use Z: \\\\nas\\share``) gets the
network-share rules: the polling scanner, the network stability window, files known by path,
size and mtime rather than inode. Here with a stand-in for Windows' answer; under Windows
(tests/test_windows_wine.py runs this file with a real Windows CPython under Wine) also with
its real answer: Wine's Z: (the Linux root) is a fixed drive, and tools/wine/setup makes N:
a local folder that Wine types as a network drive.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reactor.config import Config, load
from reactor.ops import doctor
from reactor.paths import PathMapper
from reactor.watch import mounts, scanner
from reactor.watch.candidates import Candidates

NETWORK_DRIVE = "N:\\"
windows_only = pytest.mark.skipif(sys.platform != "win32", reason="asks Windows itself (GetDriveTypeW)")


def config_for(root: str, **watcher: Any) -> Config:
    base = load(None, env={})
    images = dataclasses.replace(base.images, root=root)
    return dataclasses.replace(base, images=images, watcher=dataclasses.replace(base.watcher, **watcher))


def test_the_drive_windows_is_asked_about() -> None:
    assert mounts.drive_root("Y:\\photos\\2024") == "Y:\\"
    assert mounts.drive_root("y:/photos") == "y:\\"
    assert mounts.drive_root("\\\\?\\Y:\\" + "a" * 300) == "Y:\\"
    assert mounts.drive_root("\\\\nas\\vision_images\\apple") == "\\\\nas\\vision_images\\"


@pytest.mark.parametrize(
    ("answer", "kind", "reason", "window", "stable_inodes"),
    [
        # net use Y: \\nas\vision_images: the share's rules; Windows' SMB client caches
        # file information for 10 s, so the window is at least 10 + 5 s.
        (mounts.DRIVE_REMOTE, "polling", "network_drive", 15.0, False),
        (3, "native", "local_drive", 2.0, True),  # DRIVE_FIXED
        (2, "native", "local_drive", 2.0, True),  # DRIVE_REMOVABLE: a USB disk sees only this machine
    ],
)
def test_windows_answer_decides_the_observer(
    monkeypatch: pytest.MonkeyPatch, answer: int, kind: str, reason: str, window: float, stable_inodes: bool
) -> None:
    # The stand-in for GetDriveTypeW: below the boundary under test, and Wine cannot map a real NAS.
    asked: list[str] = []

    def drive_type(root: str) -> int:
        asked.append(root)
        return answer

    monkeypatch.setattr(mounts, "drive_type", drive_type)
    config = config_for("Y:\\photos", network_stability_seconds=15.0, stability_seconds=2.0)
    choice = mounts.choose_observer(config)
    assert asked == ["Y:\\photos"]
    assert (choice.kind, choice.reason, choice.mount_point) == (kind, reason, "Y:\\")
    assert choice.stable_inodes is stable_inodes
    assert mounts.stability_window(config, choice) == window


def test_a_forced_observer_keeps_the_network_drives_identity_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mounts, "drive_type", lambda root: mounts.DRIVE_REMOTE)
    choice = mounts.choose_observer(config_for("Y:\\photos", observer="native"))
    assert (choice.kind, choice.reason, choice.fstype) == ("native", "configured", mounts.REMOTE_DRIVE)
    assert not choice.stable_inodes


def test_off_windows_no_answer_is_the_native_observer() -> None:
    if sys.platform == "win32":
        pytest.skip("Windows always answers")
    choice = mounts.choose_observer(config_for("Y:\\photos"))
    assert (choice.kind, choice.reason) == ("native", "no_mountinfo")


@windows_only
def test_windows_answers_fixed_for_a_local_folder(tmp_path: Path) -> None:
    # Under Wine tmp_path is on Z:, the Linux root; on Windows on C:.
    assert mounts.drive_type(str(tmp_path)) == 3  # DRIVE_FIXED
    config = config_for(str(tmp_path))
    choice = mounts.choose_observer(config)
    assert (choice.kind, choice.reason, choice.fstype) == ("native", "local_drive", "drive_fixed")
    assert doctor.observer_check(config).detail.startswith("native (inotify/OS events): drive_fixed at ")


@pytest.fixture
def on_network_drive() -> Iterator[Path]:
    if mounts.drive_type(NETWORK_DRIVE) != mounts.DRIVE_REMOTE:
        pytest.skip(
            f"{NETWORK_DRIVE} is not a network drive here (net use N: \\\\nas\\share; under Wine tools/wine/setup)"
        )
    folder = Path(NETWORK_DRIVE) / f"face-reactor-test-{os.getpid()}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@windows_only
def test_a_network_drive_is_walked_by_the_polling_scanner(on_network_drive: Path) -> None:
    root = str(on_network_drive)
    for rel in ("apple/IMG_0073(1).PNG", "face_crops/f.jpg", "b.jpg"):
        (on_network_drive / rel).parent.mkdir(parents=True, exist_ok=True)
        (on_network_drive / rel).write_bytes(b"jpeg")
    config = config_for(root)
    choice = mounts.choose_observer(config)
    assert (choice.kind, choice.reason, choice.mount_point) == ("polling", "network_drive", NETWORK_DRIVE)
    assert not choice.stable_inodes
    assert mounts.stability_window(config, choice) >= mounts.WINDOWS_SMB_CACHE
    # What `reactor doctor` prints for it (deploy/windows-service.md).
    assert doctor.observer_check(config).detail.startswith(f"polling scanner: drive_remote at {NETWORK_DRIVE} ")
    mapper = PathMapper(root, config.images.derived_folders)
    found = scanner.walk(Candidates(config.images, config.watcher, mapper))
    assert found.complete, found.errors
    assert sorted(found.files) == ["apple/IMG_0073(1).PNG", "b.jpg"]
