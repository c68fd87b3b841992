"""Which files on the share are photos to detect, and which folders are never looked into.

Ignored: derived folders (face crops, thumbnails: seeds/002), hidden files, NAS
metadata (``@eaDir``, ``#recycle``, ``._*``) and partial or temporary files
(``.part``, ``.tmp``, ``~$*``). Ignored folders are never walked and never watched.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import PurePath, PurePosixPath, PureWindowsPath

from reactor.config import ImagesConfig, WatcherConfig
from reactor.paths import InvalidPath, PathMapper


class Candidates:
    def __init__(self, images: ImagesConfig, watcher: WatcherConfig, mapper: PathMapper) -> None:
        self.mapper = mapper
        self.windows = mapper.windows
        self.root = images.root if self.windows else os.path.abspath(images.root)
        self._ignore = tuple(p.lower() for p in watcher.ignore_patterns)
        self._derived = tuple(p.lower() for p in images.derived_folders)
        self._extensions = frozenset("." + e.lower().lstrip(".") for e in images.extensions)

    def ignored_name(self, name: str) -> bool:
        low = name.lower()
        return any(fnmatch.fnmatchcase(low, p) for p in self._ignore)

    def skip_dir(self, name: str) -> bool:
        """True for a folder that is never walked or watched."""
        low = name.lower()
        return self.ignored_name(name) or any(fnmatch.fnmatchcase(low, p) for p in self._derived)

    def image_name(self, name: str) -> bool:
        return not self.ignored_name(name) and os.path.splitext(name)[1].lower() in self._extensions

    def relative(self, local: str | os.PathLike[str]) -> str | None:
        """The forward-slash path of ``local`` under the root; None outside it or at the root."""
        flavour: type[PurePath] = PureWindowsPath if self.windows else PurePosixPath
        try:
            rel = flavour(os.fsdecode(local)).relative_to(flavour(self.root))
        except ValueError:
            return None
        return "/".join(rel.parts) or None

    def local(self, rel: str) -> str:
        return str(self.mapper.root_path.joinpath(*rel.split("/"))) if self.windows else os.path.join(
            self.root, *rel.split("/"))

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
