"""One name for "a connection", whether opened directly or borrowed from the pool,
and what its commands return."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = "asyncpg.Connection | PoolConnectionProxy"
# The pool, named here so that the layers above the store never import asyncpg.
Pool: TypeAlias = "asyncpg.Pool"


def rows_affected(status: str) -> int:
    """Rows affected, from a command tag such as 'UPDATE 3'; 0 for a tag without a count."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
