"""Database paths <-> local paths on POSIX mounts and Windows UNC roots, and every
path that must never be opened."""

from __future__ import annotations

import os
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

import pytest

from reactor.paths import InvalidPath, PathMapper
from tests.wine import running_under_wine

DERIVED = ("face_crops", "thumbnails", "thumbs", ".thumbnails", "@eaDir")
POSIX = PathMapper("/mnt/vision_images", DERIVED)
UNC = PathMapper("\\\\nas\\vision_images", DERIVED)
DRIVE = PathMapper("Z:\\photos", DERIVED)


# Decided under a real Windows CPython (tests/test_windows_wine.py runs this file there):
# on Windows a root spelled without a drive, "/mnt/vision_images", is the folder
# \\mnt\\vision_images of the current drive. Windows opens it with its own rules, so the
# mapper applies them (reactor.paths._is_windows_root): the expectations below that speak of
# "a Linux mount" hold on a POSIX machine, and their Windows counterparts are the Windows
# rules. The tests that assumed a POSIX machine now say which machine they are on.
WINDOWS_HOST = os.name == "nt"
HOST_FLAVOUR: type[PurePath] = PureWindowsPath if WINDOWS_HOST else PurePosixPath


def test_posix_mapping_round_trip() -> None:
    # On Windows the same root maps to \mnt\vision_images\apple\..., and back.
    local = POSIX.to_local("apple/IMG_0073(1).PNG")
    assert local == HOST_FLAVOUR("/mnt/vision_images/apple/IMG_0073(1).PNG")
    assert POSIX.to_db(local) == "apple/IMG_0073(1).PNG"
    assert POSIX.to_db("/mnt/vision_images/a b/ü é.jpg") == "a b/ü é.jpg"


def test_windows_unc_mapping_round_trip() -> None:
    assert UNC.windows
    local = UNC.to_local("apple/2019/IMG_0073(1).PNG")
    assert isinstance(local, PureWindowsPath)
    assert str(local) == "\\\\nas\\vision_images\\apple\\2019\\IMG_0073(1).PNG"
    assert UNC.to_db(local) == "apple/2019/IMG_0073(1).PNG"
    # Windows compares case-insensitively and accepts either separator.
    assert UNC.to_db("\\\\NAS\\Vision_Images\\apple\\x.jpg") == "apple/x.jpg"
    assert UNC.to_db("//nas/vision_images/apple/x.jpg") == "apple/x.jpg"


def test_windows_drive_root() -> None:
    assert DRIVE.windows
    assert str(DRIVE.to_local("a/b.jpg")) == "Z:\\photos\\a\\b.jpg"
    assert DRIVE.to_db("Z:\\photos\\a\\b.jpg") == "a/b.jpg"


@pytest.mark.parametrize(
    ("db_path", "reason"),
    [
        ("", "empty"),
        ("a/\x00b.jpg", "nul"),
        ("/etc/passwd", "absolute"),
        ("C:/Windows/win.ini", "absolute"),
        ("C:evil.jpg", "absolute"),
        ("a\\b.jpg", "backslash"),
        ("\\\\server\\share\\x.jpg", "backslash"),
        ("../outside.jpg", "dotdot"),
        ("a/../../outside.jpg", "dotdot"),
        ("a/./b.jpg", "dotdot"),
        ("a//b.jpg", "empty_segment"),
        ("a/", "empty_segment"),
        ("face_crops/IMG_0001_face0.jpg", "derived"),
        ("apple/Face_Crops/x.jpg", "derived"),
        ("apple/thumbnails/x.jpg", "derived"),
        ("apple/@eaDir/x.jpg/SYNOPHOTO_THUMB_XL.jpg", "derived"),
        ("a/" * 600 + "x.jpg", "too_long"),
    ],
)
@pytest.mark.parametrize("mapper", [POSIX, UNC], ids=["posix", "windows"])
def test_rejected_paths(mapper: PathMapper, db_path: str, reason: str) -> None:
    with pytest.raises(InvalidPath) as err:
        mapper.to_local(db_path)
    assert err.value.reason == reason
    assert err.value.path == db_path


def test_length_is_counted_in_bytes() -> None:
    mapper = PathMapper("/mnt/x", max_length=10)
    assert mapper.validate("abcdefghij") == "abcdefghij"
    with pytest.raises(InvalidPath, match="longer than 10 bytes"):
        mapper.validate("ééééé.jpg")


@pytest.mark.parametrize("name", ["dir/c:evil.jpg", "a/x:y.jpg", "a/CON", "a/nul.txt", "a/what?.jpg", 'a/"q".jpg'])
def test_windows_only_names(name: str) -> None:
    with pytest.raises(InvalidPath) as err:
        UNC.to_local(name)
    assert err.value.reason == "windows_name"
    if WINDOWS_HOST:
        # On Windows "c:evil.jpg" and "x:y.jpg" are drive-relative names (joined to any root
        # they leave it) and "CON" a device, whatever the root's spelling: refused the same way.
        with pytest.raises(InvalidPath) as err:
            POSIX.to_local(name)
        assert err.value.reason == "windows_name"
        return
    # The same name is an ordinary file on a Linux mount.
    assert POSIX.to_local(name).name == PurePosixPath(name).name


@pytest.mark.parametrize("mapper", [POSIX, UNC], ids=["posix", "windows"])
def test_to_db_refuses_paths_outside_the_root(mapper: PathMapper) -> None:
    # [posix] on Windows: to_local gives \mnt\vision_images\face_crops\f.jpg, which is under the
    # root only when to_db reads it with Windows' rules too (it did not: "outside", not "derived").
    outside = "/mnt/other/x.jpg" if mapper is POSIX else "\\\\nas\\other\\x.jpg"
    with pytest.raises(InvalidPath) as err:
        mapper.to_db(outside)
    assert err.value.reason == "outside"
    with pytest.raises(InvalidPath) as err:
        mapper.to_db(str(mapper.to_local("ok.jpg").parent / "face_crops" / "f.jpg"))
    assert err.value.reason == "derived"


def test_derived_patterns_match_folders_not_files() -> None:
    assert POSIX.is_derived("a/thumbs/x.jpg")
    assert not POSIX.is_derived("a/thumbs.jpg")
    assert not POSIX.is_derived("thumbnails_of_summer/x.jpg")
    globbing = PathMapper("/r", ("*_crops",))
    assert globbing.is_derived("people/FACE_CROPS/x.jpg")


# Wine 8.0's Path.resolve does not follow symlinks (GetFinalPathNameByHandle); on a real
# Windows these tests need the right to create symlinks (developer mode or an administrator).
resolves_symlinks = pytest.mark.skipif(running_under_wine(), reason="Wine's Path.resolve does not follow symlinks")


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "album").mkdir(parents=True)
    (root / "album" / "photo.jpg").write_bytes(b"jpeg")
    return root


@resolves_symlinks
def test_resolve_in_share_follows_links_inside_the_root(share: Path) -> None:
    mapper = PathMapper(str(share))
    (share / "album" / "alias.jpg").symlink_to(share / "album" / "photo.jpg")
    (share / "linked").symlink_to(share / "album", target_is_directory=True)
    assert mapper.resolve_in_share("album/photo.jpg") == (share / "album" / "photo.jpg").resolve()
    assert mapper.resolve_in_share("album/alias.jpg") == (share / "album" / "photo.jpg").resolve()
    assert mapper.resolve_in_share("linked/photo.jpg").read_bytes() == b"jpeg"


@resolves_symlinks
def test_resolve_in_share_refuses_symlinks_out_of_the_root(share: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not a photo")
    (share / "album" / "escape.jpg").symlink_to(secret)
    (share / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    mapper = PathMapper(str(share))
    for db_path in ("album/escape.jpg", "elsewhere/secret.txt"):
        with pytest.raises(InvalidPath) as err:
            mapper.resolve_in_share(db_path)
        assert err.value.reason == "escapes_root"


@resolves_symlinks
def test_resolve_in_share_through_a_symlinked_root(share: Path, tmp_path: Path) -> None:
    """A share root that is itself a link (e.g. /mnt/vision -> /srv/photos) is not an escape."""
    link = tmp_path / "mount"
    link.symlink_to(share, target_is_directory=True)
    mapper = PathMapper(str(link))
    assert mapper.resolve_in_share("album/photo.jpg") == (share / "album" / "photo.jpg").resolve()
    assert os.fspath(mapper.to_local("album/photo.jpg")) == f"{link}/album/photo.jpg"
