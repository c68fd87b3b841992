"""reactor.store.errors: asyncpg's errors become the store's at the boundary, on a real server."""

from __future__ import annotations

import asyncpg
import pytest

from reactor.store import errors
from reactor.store.db import DatabaseUnavailable
from tests.pg import PgServer


async def test_server_errors_become_store_errors(pg: PgServer) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        with pytest.raises(errors.UnwritableSchema) as schema, errors.translated():
            await conn.execute("SELECT * FROM no_such_table_anywhere")
        assert isinstance(schema.value.__cause__, asyncpg.UndefinedTableError)
        with pytest.raises(errors.StatementFailed), errors.translated():
            await conn.execute("SELECT 1 / 0")
    finally:
        await conn.close()
    with pytest.raises(errors.StoreUnavailable), errors.translated():
        await conn.execute("SELECT 1")  # closed: the driver's InterfaceError


def test_unavailable_and_store_errors_pass_through() -> None:
    with pytest.raises(errors.StoreUnavailable), errors.translated():
        raise DatabaseUnavailable("cannot reach database x on 127.0.0.1:1")
    with pytest.raises(errors.Fenced), errors.translated():
        raise errors.Fenced("taken over")
    with pytest.raises(ValueError), errors.translated():
        raise ValueError("not a database error: left alone")


async def test_a_translating_repository_function_raises_the_stores_errors(pg: PgServer) -> None:
    @errors.translating
    async def divide(conn: asyncpg.Connection, by: int) -> int:
        """One statement: a repository function's body."""
        return int(await conn.fetchval("SELECT 6 / $1::int", by))

    conn = await asyncpg.connect(pg.dsn())
    try:
        assert await divide(conn, 3) == 2
        with pytest.raises(errors.StatementFailed) as failed:
            await divide(conn, 0)
        assert isinstance(failed.value.__cause__, asyncpg.DivisionByZeroError)
    finally:
        await conn.close()
    assert divide.__name__ == "divide" and divide.__doc__ == "One statement: a repository function's body."
