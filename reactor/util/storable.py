"""What PostgreSQL can store in a text column, checked before a string reaches a query.

Strings from outside (a notification's payload, a file name, a legacy row) can hold
what a ``text`` value cannot: a NUL (the server refuses it, SQLSTATE 22021, an error
that is not transient), a lone surrogate (a JSON ``"\\ud800"`` escape, or a file name
that is not UTF-8 decoded with ``surrogateescape``: asyncpg's encoder refuses it), or a
length past any sensible bound. One such string must cost one hint, never a task: the
caller checks it here first and drops (and logs once) what does not pass.
"""

from __future__ import annotations

from enum import StrEnum


class Unstorable(StrEnum):
    """Why a string cannot be stored as PostgreSQL text; the values go into log lines."""

    NUL = "nul"
    NOT_UTF8 = "not_utf8"
    TOO_LONG = "too_long"


def problem(text: str, max_bytes: int | None = None) -> Unstorable | None:
    """Why ``text`` cannot be a query's text parameter, or None when it can."""
    if "\x00" in text:
        return Unstorable.NUL
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        return Unstorable.NOT_UTF8
    if max_bytes is not None and len(raw) > max_bytes:
        return Unstorable.TOO_LONG
    return None


def storable(text: str, max_bytes: int | None = None) -> bool:
    return problem(text, max_bytes) is None
