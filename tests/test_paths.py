"""Database paths <-> local paths on POSIX mounts and Windows UNC roots, and every
path that must never be opened."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from reactor.paths import InvalidPath, PathMapper

DERIVED = ("face_crops", "thumbnails", "thumbs", ".thumbnails", "@eaDir")
POSIX = PathMapper("/mnt/vision_images", DERIVED)
UNC = PathMapper("\\\\nas\\vision_images", DERIVED)
DRIVE = PathMapper("Z:\\photos", DERIVED)


def test_posix_mapping_round_trip() -> None:
    local = POSIX.to_local("apple/IMG_0073(1).PNG")
    assert local == PurePosixPath("/mnt/vision_images/apple/IMG_0073(1).PNG")
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
    # The same name is an ordinary file on a Linux mount.
    assert POSIX.to_local(name).name == PurePosixPath(name).name


@pytest.mark.parametrize("mapper", [POSIX, UNC], ids=["posix", "windows"])
def test_to_db_refuses_paths_outside_the_root(mapper: PathMapper) -> None:
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


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "album").mkdir(parents=True)
    (root / "album" / "photo.jpg").write_bytes(b"jpeg")
    return root


def test_resolve_in_share_follows_links_inside_the_root(share: Path) -> None:
    mapper = PathMapper(str(share))
    (share / "album" / "alias.jpg").symlink_to(share / "album" / "photo.jpg")
    (share / "linked").symlink_to(share / "album", target_is_directory=True)
    assert mapper.resolve_in_share("album/photo.jpg") == (share / "album" / "photo.jpg").resolve()
    assert mapper.resolve_in_share("album/alias.jpg") == (share / "album" / "photo.jpg").resolve()
    assert mapper.resolve_in_share("linked/photo.jpg").read_bytes() == b"jpeg"


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


def test_resolve_in_share_through_a_symlinked_root(share: Path, tmp_path: Path) -> None:
    """A share root that is itself a link (e.g. /mnt/vision -> /srv/photos) is not an escape."""
    link = tmp_path / "mount"
    link.symlink_to(share, target_is_directory=True)
    mapper = PathMapper(str(link))
    assert mapper.resolve_in_share("album/photo.jpg") == (share / "album" / "photo.jpg").resolve()
    assert os.fspath(mapper.to_local("album/photo.jpg")) == f"{link}/album/photo.jpg"
