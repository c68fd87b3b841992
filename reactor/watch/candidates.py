"""Which files on the share are photos to detect, and which folders are never looked into.

Ignored: derived folders (face crops, thumbnails: seeds/002), hidden files, NAS
metadata (``@eaDir``, ``#recycle``, ``._*``) and partial or temporary files
(``.part``, ``.tmp``, ``~$*``). Ignored folders are never walked and never watched.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from pathlib import PurePath, PurePosixPath, PureWindowsPath

from reactor.config import ImagesConfig, WatcherConfig
from reactor.paths import InvalidPath, PathMapper, extended_length, plain_windows


class Candidates:
    def __init__(self, images: ImagesConfig, watcher: WatcherConfig, mapper: PathMapper) -> None:
        self.mapper = mapper
        self.windows = mapper.windows
        self.root = images.root if self.windows else os.path.abspath(images.root)
        # One compiled alternation: called for every entry of every scan (50,000+).
        self._ignore = _compile(watcher.ignore_patterns)
        self._skip = _compile((*watcher.ignore_patterns, *images.derived_folders))
        self._extensions = frozenset("." + e.lower().lstrip(".") for e in images.extensions)

    def ignored_name(self, name: str) -> bool:
        return self._ignore.match(name.lower()) is not None

    def skip_dir(self, name: str) -> bool:
        """True for a folder that is never walked or watched."""
        return self._skip.match(name.lower()) is not None

    def image_name(self, name: str) -> bool:
        # The cheap extension test first: most entries of a photo share pass it.
        dot = name.rfind(".")
        return dot > 0 and name[dot:].lower() in self._extensions and not self.ignored_name(name)

    def relative(self, local: str | os.PathLike[str]) -> str | None:
        """The forward-slash path of ``local`` under the root; None outside it or at the root."""
        flavour: type[PurePath] = PureWindowsPath if self.windows else PurePosixPath
        name = os.fsdecode(local)
        try:
            rel = flavour(plain_windows(name) if self.windows else name).relative_to(flavour(self.root))
        except ValueError:
            return None
        return "/".join(rel.parts) or None

    def local(self, rel: str) -> str:
        """The path of a database path (or folder prefix) to hand to the OS; see PathMapper.os_path."""
        if self.windows:
            return extended_length(str(self.mapper.root_path.joinpath(*rel.split("/"))))
        return os.path.join(self.root, *rel.split("/"))

    def dir_path(self, local: str | os.PathLike[str]) -> str | None:
        """The database prefix (``a/b``) of a watched folder, or None if it is ignored."""
        rel = self.relative(local)
        if rel is None or any(self.skip_dir(part) for part in rel.split("/")):
            return None
        return rel

    def image_path(self, local: str | os.PathLike[str]) -> str | None:
        """The database path of a candidate photo, or None for anything else."""
        rel = self.relative(local)
        return None if rel is None else self.accepts(rel)

    def accepts(self, rel: str) -> str | None:
        """``rel`` if this database path is a candidate photo, else None."""
        *folders, name = rel.split("/")
        if any(self.skip_dir(f) for f in folders) or not self.image_name(name):
            return None
        try:
            return self.mapper.validate(rel)
        except InvalidPath:
            return None


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    """fnmatch patterns, case-insensitive (names are lowered before matching)."""
    alternatives = [fnmatch.translate(p.lower()) for p in patterns]
    return re.compile("|".join(f"(?:{a})" for a in alternatives) or "(?!)")
