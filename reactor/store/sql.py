"""Named SQL blocks loaded from the ``sql/`` folder.

A file holds blocks introduced by ``-- name: block_name``; text up to the next
such line belongs to the block. The folder is found inside the installed wheel
(``reactor/_sql``) or, in a source checkout, beside the package.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def sql_root() -> Path:
    packaged = resources.files("reactor").joinpath("_sql")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent.parent / "sql"


def parse_blocks(text: str, origin: str = "<sql>") -> dict[str, str]:
    blocks: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = match.group("name")
        if name in blocks:
            raise ValueError(f"{origin}: duplicate SQL block {name!r}")
        body = text[match.end() : end].strip()
        if not body:
            raise ValueError(f"{origin}: SQL block {name!r} is empty")
        blocks[name] = body
    return blocks


@functools.cache
def _load(relative: str) -> dict[str, str]:
    path = sql_root() / relative
    return parse_blocks(path.read_text(encoding="utf-8"), str(path))


def blocks(relative: str) -> dict[str, str]:
    """All named blocks of one file under sql/, e.g. ``blocks("claims.sql")``."""
    return _load(relative)


def text(relative: str) -> str:
    """A whole file under sql/, for DDL run as one script."""
    return (sql_root() / relative).read_text(encoding="utf-8")


def fill_identifiers(sql_text: str, **identifiers: str) -> str:
    """``{name}`` placeholders in a block replaced by quoted identifiers (a backup table's
    generated name, a constraint): identifiers cannot be bind parameters."""
    for key, name in identifiers.items():
        sql_text = sql_text.replace("{" + key + "}", quote_identifier(name))
    return sql_text


def quote_identifier(name: str) -> str:
    """``name`` as one SQL identifier, its case kept."""
    return '"' + name.replace('"', '""') + '"'


class Queries:
    """Attribute access to the blocks of one file: ``Q.pending_images``."""

    def __init__(self, relative: str) -> None:
        self._relative = relative

    def __getattr__(self, name: str) -> Any:
        try:
            return blocks(self._relative)[name]
        except KeyError:
            raise AttributeError(f"no SQL block {name!r} in sql/{self._relative}") from None
