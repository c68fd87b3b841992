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
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath


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
    return root.startswith("\\\\") or (len(root) >= 2 and root[1] == ":" and root[0].isalpha())


@dataclass(frozen=True)
class PathMapper:
    """Maps between relative database paths and paths under the share root."""

    root: str
    derived_folders: tuple[str, ...] = ("face_crops", "thumbnails")
    max_length: int = 1024

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

    def to_db(self, local: str | os.PathLike[str]) -> str:
        """The database path of a local path under the root; InvalidPath if outside."""
        flavour: type[PurePath] = PureWindowsPath if self.windows else PurePosixPath
        local_p = flavour(os.fspath(local))
        root_p = flavour(self.root)
        try:
            rel = local_p.relative_to(root_p)
        except ValueError:
            raise InvalidPath(str(local), "outside", f"the path is not under the share root {self.root}") from None
        return self.validate("/".join(rel.parts))

    def open_safely(self, db_path: str) -> Path:
        """The real local path, refusing symlinks that lead out of the share root.

        Only for real (non-Windows-on-Linux) roots: it resolves the file on disk.
        """
        local = Path(self.to_local(db_path))
        if not db_path.isascii() and not local.exists():
            # The row's name in the other Unicode normalization is the same file.
            for variant in unicode_variants(db_path)[1:]:
                candidate = Path(self.to_local(variant))
                if candidate.exists():
                    local = candidate
                    break
        try:
            root = Path(self.root).resolve()
            real = local.resolve()
        except RuntimeError:  # pathlib's "Symlink loop from ..."
            raise InvalidPath(db_path, "symlink_loop", "the path is a symlink loop") from None
        except OSError as exc:  # Windows: ERROR_CANT_RESOLVE_FILENAME, a name too long, ...
            raise InvalidPath(db_path, "unresolvable", f"the path cannot be resolved: {exc}") from None
        if real != root and root not in real.parents:
            raise InvalidPath(db_path, "escapes_root", "the path resolves outside the share root (symlink)")
        # The derived-folder rule holds for where the path leads, not only for its name.
        if real != root and self.is_derived("/".join(real.relative_to(root).parts)):
            raise InvalidPath(db_path, "derived", "the path resolves into a derived folder (symlink)")
        return real
