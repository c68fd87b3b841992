"""Windows shares seen from the GPU box: UNC roots, drive letters, paths past MAX_PATH and
names that compare case-insensitively. Linux CI has no Windows file system, so the paths are
PureWindowsPath values, and the scanner walks a real folder through a UNC name."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from reactor.config import ImagesConfig, WatcherConfig
from reactor.paths import WINDOWS_LONG_PATH, PathMapper, contained, extended_length, plain_windows
from reactor.watch import scanner
from reactor.watch.candidates import Candidates

UNC_ROOT = "\\\\nas\\vision_images"
UNC = PathMapper(UNC_ROOT)
DRIVE = PathMapper("Z:\\photos")
POSIX = PathMapper("/mnt/vision_images")
# A real library's depth: 12 folders of 24 characters put a photo past MAX_PATH.
DEEP = "/".join(f"{i:02d}_an_album_with_a_long_name"[:24] for i in range(12)) + "/IMG_0073.JPG"


def test_long_unc_and_drive_paths_get_the_extended_length_prefix() -> None:
    unc = UNC.os_path(DEEP)
    assert len(unc) > 260
    assert unc.startswith("\\\\?\\UNC\\nas\\vision_images\\00_an_album")
    assert "/" not in unc and unc.endswith("\\IMG_0073.JPG")
    drive = DRIVE.os_path(DEEP)
    assert drive.startswith("\\\\?\\Z:\\photos\\00_an_album")
    # Short paths keep the usual spelling, which logs and operators read.
    assert UNC.os_path("apple/IMG_0073(1).PNG") == "\\\\nas\\vision_images\\apple\\IMG_0073(1).PNG"
    if os.name != "nt":  # on Windows a root without a drive is a Windows path (tests/test_paths.py)
        assert POSIX.os_path(DEEP) == str(PurePosixPath("/mnt/vision_images", *DEEP.split("/")))


def test_the_prefix_starts_where_win32_needs_it() -> None:
    short = "Z:\\" + "a" * (WINDOWS_LONG_PATH - 4)
    assert extended_length(short) == short and len(short) == WINDOWS_LONG_PATH - 1
    assert extended_length(short + "b") == "\\\\?\\" + short + "b"
    # Forward slashes and a prefix already there are normalised, never doubled.
    assert extended_length("//nas/share/" + "x" * 300) == "\\\\?\\UNC\\nas\\share\\" + "x" * 300
    assert extended_length(extended_length("//nas/share/" + "x" * 300)) == extended_length("//nas/share/" + "x" * 300)
    assert extended_length("relative\\" + "x" * 300) == "relative\\" + "x" * 300


def test_extended_paths_map_back_to_database_paths() -> None:
    long_local = UNC.os_path(DEEP)
    assert plain_windows(long_local) == str(UNC.to_local(DEEP))
    assert UNC.to_db(long_local) == DEEP
    assert DRIVE.to_db(DRIVE.os_path(DEEP)) == DEEP
    assert UNC.to_db("\\\\?\\unc\\NAS\\vision_images\\a\\b.jpg") == "a/b.jpg"


def test_a_database_path_matches_its_file_whatever_the_case_on_windows() -> None:
    on_share = "\\\\NAS\\Vision_Images\\Apple\\img_0073(1).png"
    assert UNC.matches("apple/IMG_0073(1).PNG", on_share)
    assert UNC.matches("apple/IMG_0073(1).PNG", "//nas/vision_images/APPLE/IMG_0073(1).PNG")
    assert UNC.matches(DEEP.upper(), UNC.os_path(DEEP).lower())
    assert not UNC.matches("apple/IMG_0074.PNG", on_share)
    assert not UNC.matches("../x.png", "\\\\nas\\x.png")
    # A Linux mount of the same share compares names exactly, as the kernel does; on Windows
    # the same root is a Windows folder, whose names compare as the share's do.
    assert POSIX.matches("apple/a.png", "/mnt/vision_images/apple/a.png")
    assert POSIX.matches("apple/a.png", "/mnt/vision_images/Apple/a.png") == (os.name == "nt")


def test_containment_is_case_insensitive_and_spelling_blind_on_windows() -> None:
    root = PureWindowsPath(UNC_ROOT)
    assert contained(PureWindowsPath("\\\\NAS\\VISION_IMAGES\\Apple\\x.jpg"), root)
    assert contained(PureWindowsPath(UNC.os_path(DEEP)), root)  # resolve() keeps the \\?\ form
    assert contained(PureWindowsPath("\\\\?\\UNC\\nas\\vision_images"), root)
    assert not contained(PureWindowsPath("\\\\nas\\vision_images_old\\x.jpg"), root)
    assert not contained(PureWindowsPath("\\\\nas\\other\\x.jpg"), root)
    assert not contained(PureWindowsPath("C:\\Windows\\win.ini"), PureWindowsPath("Z:\\photos"))
    assert contained(PurePosixPath("/mnt/a/x"), PurePosixPath("/mnt/a"))
    assert not contained(PurePosixPath("/mnt/A/x"), PurePosixPath("/mnt/a"))


@pytest.fixture
def unc_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A real folder that the scanner reaches only through ``\\\\nas\\vision_images`` names.

    Below the boundary under test: the operating system's directory listing, given the
    Windows path the scanner built (it must carry the \\\\?\\ prefix once it is long).
    """
    share = tmp_path / "share"
    real_scandir = os.scandir
    seen: list[str] = []

    def scandir(path: str) -> Iterator[os.DirEntry[str]]:
        seen.append(path)
        plain = PureWindowsPath(plain_windows(path))
        assert (len(str(plain)) >= WINDOWS_LONG_PATH) == path.startswith("\\\\?\\UNC\\"), path
        rel = plain.relative_to(PureWindowsPath(UNC_ROOT))
        return real_scandir(share.joinpath(*rel.parts))

    monkeypatch.setattr(os, "scandir", scandir)  # the scanner calls os.scandir
    return share, seen


def test_the_polling_scanner_walks_a_unc_root(unc_share: tuple[Path, list[str]]) -> None:
    share, listed = unc_share
    for rel in ("apple/IMG_0073(1).PNG", "Apple Trip/x.jpg", "face_crops/f.jpg", DEEP):
        (share / rel).parent.mkdir(parents=True, exist_ok=True)
        (share / rel).write_bytes(b"jpeg")
    images = dataclasses.replace(ImagesConfig(), root=UNC_ROOT)
    candidates = Candidates(images, WatcherConfig(), PathMapper(UNC_ROOT, images.derived_folders))
    found = scanner.walk(candidates)
    assert found.complete, found.errors
    assert sorted(found.files) == sorted(["apple/IMG_0073(1).PNG", "Apple Trip/x.jpg", DEEP])
    # The deepest folders were listed through the extended-length form.
    assert any(p.startswith("\\\\?\\UNC\\nas\\vision_images\\") for p in listed)
    assert candidates.image_path(candidates.local(DEEP)) == DEEP
