"""Database paths <-> local paths, for Linux mounts and Windows UNC roots.

The database stores paths relative to the share root with forward slashes
(``apple/IMG_0073(1).PNG``). This module is the only place that turns one into a
file the reactor may open, and it refuses anything that could escape the share or
point into a derived folder (face crops, thumbnails).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from reactor.util.shareio import IoStall, ShareIO

if TYPE_CHECKING:
    from reactor.config import ImagesConfig


class InvalidPath(ValueError):
    """A database path that must never be opened. ``reason`` is a short code."""

    def __init__(self, path: str, reason: str, detail: str) -> None:
        super().__init__(f"invalid image path {path!r}: {detail}")
        self.path = path
        self.reason = reason


# Characters Windows refuses in a file name, and its reserved device names.
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*\x00-\x1f]')
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)


def recordable(path: str) -> str:
    """A form of ``path`` the database can store: a name that is not valid UTF-8 (a lone
    surrogate from the file system) has those bytes written as ``\\xNN`` escapes."""
    try:
        path.encode("utf-8")
        return path.replace("\x00", "\\x00")
    except UnicodeEncodeError:
        try:
            raw = path.encode("utf-8", "surrogateescape")  # the file system's own bytes
        except UnicodeEncodeError:
            raw = path.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def unicode_variants(path: str) -> list[str]:
    """The path as written, then its NFC and NFD forms (macOS and some SMB clients write
    NFD; most databases hold NFC): the same name, as different bytes."""
    out = [path]
    for form in ("NFC", "NFD"):
        variant = unicodedata.normalize(form, path)
        if variant not in out:
            out.append(variant)
    return out


def _is_windows_root(root: str) -> bool:
    """A UNC or drive-letter root, or any root on Windows: there a root spelled without a
    drive (``/photos``) is the folder ``\\photos`` of the current drive, which Windows opens
    with its own rules (``CON`` a device, ``a:b.jpg`` a drive-relative name, names compared
    case-insensitively), so the mapper must apply them too."""
    return os.name == "nt" or root.startswith("\\\\") or (len(root) >= 2 and root[1] == ":" and root[0].isalpha())


# Win32 refuses a path of MAX_PATH (260) characters or more unless it is in the extended-length
# form, and a directory path of 248 or more (os.scandir also appends "\*"): from 248 on,
# every Windows path the reactor opens gets the prefix. Windows' LongPathsEnabled is not needed.
WINDOWS_LONG_PATH = 248
_EXTENDED = "\\\\?\\"
_EXTENDED_UNC = _EXTENDED + "UNC\\"


def extended_length(path: str) -> str:
    r"""A Windows path that Win32 opens whatever its length: ``\\?\Z:\...`` or ``\\?\UNC\nas\...``.

    The extended form is taken literally (no ``/``, ``.`` or ``..`` processing), so the path
    is normalised first; a short path is returned normalised and unprefixed.
    """
    plain = str(PureWindowsPath(plain_windows(path)))
    if len(plain) < WINDOWS_LONG_PATH:
        return plain
    if plain.startswith("\\\\"):
        return _EXTENDED_UNC + plain[2:]
    if PureWindowsPath(plain).drive:
        return _EXTENDED + plain
    return plain  # relative: there is no extended form


def plain_windows(path: str) -> str:
    """The usual spelling of a Windows path that may be in the extended-length form."""
    if path[:8].upper() == _EXTENDED_UNC.upper():
        return "\\\\" + path[8:]
    if path.startswith(_EXTENDED):
        return path[4:]
    return path


def contained(real: PurePath, root: PurePath) -> bool:
    """Whether ``real`` is ``root`` or under it; on Windows case-insensitively and whatever
    the spelling (extended-length, / or \\), as the share itself compares names."""
    if isinstance(real, PureWindowsPath) or isinstance(root, PureWindowsPath):
        real = PureWindowsPath(plain_windows(str(real)))
        root = PureWindowsPath(plain_windows(str(root)))
    return real == root or root in real.parents


def _relative(real: PurePath, root: PurePath) -> str:
    """``real`` under ``root`` (``contained`` holds) as a database path, whatever the spelling."""
    if isinstance(real, PureWindowsPath) or isinstance(root, PureWindowsPath):
        real = PureWindowsPath(plain_windows(str(real)))
        root = PureWindowsPath(plain_windows(str(root)))
    return "/".join(real.relative_to(root).parts)


@dataclass(frozen=True)
class PathMapper:
    """Maps between relative database paths and paths under the share root."""

    root: str
    derived_folders: tuple[str, ...] = ("face_crops", "thumbnails")
    max_length: int = 1024

    @classmethod
    def for_images(cls, images: ImagesConfig) -> PathMapper:
        """The mapper of the configured share ([images] root, derived_folders, max_path_length)."""
        return cls(images.root, tuple(images.derived_folders), images.max_path_length)

    @property
    def windows(self) -> bool:
        return _is_windows_root(self.root)

    @property
    def root_path(self) -> PurePath:
        return PureWindowsPath(self.root) if self.windows else Path(self.root)

    def is_derived(self, db_path: str) -> bool:
        folders = db_path.split("/")[:-1]
        return any(
            fnmatch.fnmatchcase(folder.lower(), pattern.lower())
            for folder in folders
            for pattern in self.derived_folders
        )

    def validate(self, db_path: str) -> str:
        """Return the path unchanged if it is a valid relative database path."""
        if not db_path:
            raise InvalidPath(db_path, "empty", "the path is empty")
        if "\x00" in db_path:
            raise InvalidPath(db_path, "nul", "the path contains a NUL byte")
        try:
            db_path.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPath(db_path, "undecodable", "the file name is not valid UTF-8") from None
        if len(db_path.encode("utf-8", "surrogateescape")) > self.max_length:
            raise InvalidPath(db_path, "too_long", f"the path is longer than {self.max_length} bytes")
        if "\\" in db_path:
            raise InvalidPath(db_path, "backslash", "database paths use forward slashes")
        if db_path.startswith("/") or PureWindowsPath(db_path).drive:
            raise InvalidPath(db_path, "absolute", "the path must be relative to the share root")
        parts = db_path.split("/")
        if any(p in ("..", ".") for p in parts):
            raise InvalidPath(db_path, "dotdot", "the path contains '.' or '..' segments")
        if any(p == "" for p in parts):
            raise InvalidPath(db_path, "empty_segment", "the path contains an empty segment")
        if self.is_derived(db_path):
            raise InvalidPath(db_path, "derived", "the path points into a derived folder (face crops, thumbnails)")
        return db_path

    def to_local(self, db_path: str) -> PurePath:
        """The local path of a database path, after validation."""
        parts = self.validate(db_path).split("/")
        if self.windows:
            # On Windows "c:x.jpg" is a drive-relative path and "CON" a device: joined
            # to the root, either would leave the share.
            for part in parts:
                if _WINDOWS_FORBIDDEN.search(part) or part.split(".")[0].upper() in _WINDOWS_DEVICES:
                    raise InvalidPath(db_path, "windows_name", f"{part!r} is not a valid Windows file name")
        local = self.root_path.joinpath(*parts)
        root_parts = self.root_path.parts
        if local.parts[: len(root_parts)] != root_parts:
            raise InvalidPath(db_path, "escapes_root", "the path leads outside the share root")
        return local

    def os_path(self, db_path: str) -> str:
        """The path to hand to the operating system: extended-length on Windows when long."""
        local = str(self.to_local(db_path))
        return extended_length(local) if self.windows else local

    def matches(self, db_path: str, local: str | os.PathLike[str]) -> bool:
        """Whether ``local`` names the file of ``db_path``. On a Windows share names compare
        case-insensitively: ``apple/IMG_0073.PNG`` is the file ``Apple\\img_0073.png``."""
        try:
            wanted = self.to_local(db_path)
        except InvalidPath:
            return False
        if self.windows:
            return PureWindowsPath(plain_windows(os.fspath(local))) == wanted
        return PurePosixPath(os.fspath(local)) == wanted

    def to_db(self, local: str | os.PathLike[str]) -> str:
        """The database path of a local path under the root; InvalidPath if outside.

        The folder and file names keep the spelling of ``local`` (its case on Windows)."""
        flavour: type[PurePath] = PureWindowsPath if self.windows else PurePosixPath
        local_p = flavour(plain_windows(os.fspath(local)) if self.windows else os.fspath(local))
        root_p = flavour(self.root)
        try:
            rel = local_p.relative_to(root_p)
        except ValueError:
            raise InvalidPath(str(local), "outside", f"the path is not under the share root {self.root}") from None
        return self.validate("/".join(rel.parts))

    def resolve_in_share(self, db_path: str) -> Path:
        """The real local path, refusing symlinks that lead out of the share root.

        Only for real (non-Windows-on-Linux) roots: it resolves the file on disk. On Windows
        the name may differ in case from the database's, and a long path comes back in the
        extended-length form, so that it opens without LongPathsEnabled.
        """
        return self.look_in_share(db_path)[0]

    def look_in_share(self, db_path: str) -> tuple[Path, os.stat_result | OSError]:
        """``resolve_in_share`` and the one look at the file on its way in (issue 26): its
        ``lstat`` (a link: its target's ``stat``), or the error it gave. The detection loop
        passes it along (the move check, the read's size and mtime), so the file is looked
        at once, not once per step: on a network share each look is a round trip.

        The folder is resolved, then the file looked at: the look says whether the file is
        itself a link (followed and checked like any) or not (its real path is the
        resolved folder's, which a full resolve would only have looked at it again for).
        """
        local = Path(self.os_path(db_path))
        seen = _look(local)
        if isinstance(seen, FileNotFoundError) and not db_path.isascii():
            # The row's name in the other Unicode normalization is the same file.
            for variant in unicode_variants(db_path)[1:]:
                candidate = Path(self.os_path(variant))
                other = _look(candidate)
                if not isinstance(other, OSError):
                    local, seen = candidate, other
                    break
        try:
            root = Path(self.root).resolve()
            if isinstance(seen, os.stat_result) and stat.S_ISLNK(seen.st_mode):
                real = local.resolve()
                seen = _look(real, follow=True)  # a link: its target is the file
            else:
                real = local.parent.resolve() / local.name
        except RuntimeError:  # pathlib's "Symlink loop from ..."
            raise InvalidPath(db_path, "symlink_loop", "the path is a symlink loop") from None
        except OSError as exc:  # Windows: ERROR_CANT_RESOLVE_FILENAME, a name too long, ...
            raise InvalidPath(db_path, "unresolvable", f"the path cannot be resolved: {exc}") from None
        if not contained(real, root):
            raise InvalidPath(db_path, "escapes_root", "the path resolves outside the share root (symlink)")
        # The derived-folder rule holds for where the path leads, not only for its name.
        if real != root and self.is_derived(_relative(real, root)):
            raise InvalidPath(db_path, "derived", "the path resolves into a derived folder (symlink)")
        return (Path(extended_length(str(real))) if self.windows else real), seen


def _look(path: Path, follow: bool = False) -> os.stat_result | OSError:
    try:
        return os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        return exc


def certainly_gone(paths: list[str]) -> dict[str, bool | None]:
    """Per path: True if certainly gone, False if present, None if unknown.

    Gone means "not found" for the path while its parent folder can still be looked
    at: a parent that is itself missing or erroring may be a dead link or mount.
    """
    out: dict[str, bool | None] = {}
    for path in paths:
        try:
            os.lstat(path)
            out[path] = False
            continue
        except FileNotFoundError:
            pass
        except OSError:
            out[path] = None
            continue
        try:
            os.stat(os.path.dirname(path))
            out[path] = True
        except FileNotFoundError:
            # The folder went too: gone if its own parent is there (a folder deletion).
            out[path] = _parent_listable(os.path.dirname(path))
        except OSError:
            out[path] = None
    return out


def gone_states(paths: Iterable[str], local: Callable[[str], object]) -> dict[str, bool | None]:
    """``certainly_gone`` for database paths (``local`` maps one to its file): a name
    stored in one Unicode normalization (NFC) whose file has the other (NFD) is the same
    file, so a path is present when any of its forms is there, and gone only when every
    form is certainly gone; otherwise it is unknown."""
    forms = {p: [str(local(v)) for v in unicode_variants(p)] for p in paths}
    states = certainly_gone(list(dict.fromkeys(f for fs in forms.values() for f in fs)))
    out: dict[str, bool | None] = {}
    for path, fs in forms.items():
        seen = [states[f] for f in fs]
        out[path] = False if any(s is False for s in seen) else (True if all(s is True for s in seen) else None)
    return out


async def gone_by_folder(io: ShareIO, paths: list[str], local: Callable[[str], object]) -> dict[str, bool | None]:
    """``gone_states`` of these database paths, one share-thread call per folder, each under
    its own folder's deadline: a folder that does not answer leaves its paths unknown (None)
    and is the one marked stalled, never another folder's."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(os.path.dirname(str(local(path))), []).append(path)
    out: dict[str, bool | None] = dict.fromkeys(paths)
    for folder, members in groups.items():
        try:
            out.update(await io.call(folder, gone_states, members, local))
        except IoStall:
            continue
    return out


def _parent_listable(folder: str) -> bool | None:
    try:
        os.stat(os.path.dirname(folder))
        return True
    except OSError:
        return None
