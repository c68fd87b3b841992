"""Every named block in every sql/*.sql file parses, plans and runs against the real
schema, with dummy arguments of the types PostgreSQL infers for its parameters.

DDL scripts without named blocks (schema.sql, standalone.sql, triggers/) are run by
`reactor db init` and covered by tests/test_schema.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from reactor.store import outcomes, sql
from tests import production_shape
from tests.pg import PgServer

DUMMY_PATH = "sql-block-test/dummy.jpg"

SCALARS: dict[str, Any] = {
    "text": DUMMY_PATH,
    "varchar": DUMMY_PATH,
    "bpchar": "x",
    "name": "face_metadata",
    "regclass": "face_metadata",
    "int2": 1,
    "int4": 1,
    "int8": 1,
    "oid": 1,
    "float4": 1.0,
    "float8": 1.0,
    "numeric": decimal.Decimal(1),
    "bool": False,
    "timestamptz": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    "timestamp": dt.datetime(2024, 1, 1),
    "date": dt.date(2024, 1, 1),
    "interval": dt.timedelta(seconds=1),
    "json": "{}",
    "jsonb": "{}",
    "uuid": uuid.UUID(int=1),
    "bytea": b"",
}
# Errors that dummy values may cause at run time (a foreign key, a check, a cast of
# the dummy text): the statement parsed, planned and executed, which is the point.
RUNTIME_DATA_ERRORS = ("22", "23")


# Blocks that name a table chosen at run time (reactor.ops.repair fills `{backup}`,
# `{source}` and `{constraint}` with quoted identifiers) get a scratch backup table
# shaped like the table the block reads, plus that table's path constraint.
_FIELD = re.compile(r"\{([a-z_]+)\}")
_READS = re.compile(r"\bFROM\s+([a-z_]+)\b")
BACKUP = "sql_block_backup"


async def fill_template(conn: asyncpg.Connection, text: str) -> str:
    if not _FIELD.search(text):
        return text
    source = next(iter(_READS.findall(text)), "face_metadata")
    if not text.lstrip().upper().startswith("CREATE TABLE"):
        await conn.execute(
            f"CREATE TEMP TABLE {BACKUP} (LIKE {source}, repair_reason TEXT NOT NULL, repaired_at TIMESTAMPTZ)"
        )
    fields = {"backup": BACKUP, "source": source, "constraint": f"{source}_path_valid"}
    return _FIELD.sub(lambda m: fields[m.group(1)], text)


def all_blocks() -> Iterator[tuple[str, str]]:
    for path in sorted(sql.sql_root().glob("*.sql")):
        for name in sorted(sql.blocks(path.name)):
            yield path.name, name


async def dummy(conn: asyncpg.Connection, oid: int) -> Any:
    """A value of the type with this oid: scalars from SCALARS, arrays and domains via pg_type."""
    row = await conn.fetchrow(
        "SELECT typname::text AS name, typelem, typbasetype, typcategory::text FROM pg_type WHERE oid = $1", oid
    )
    assert row is not None
    if row["typcategory"] == "A":
        return [await dummy(conn, row["typelem"])]
    if row["typbasetype"]:
        return await dummy(conn, row["typbasetype"])
    if row["name"] not in SCALARS:
        raise AssertionError(f"no dummy value for parameter type {row['name']}; add one to SCALARS")
    return SCALARS[row["name"]]


@pytest.fixture(scope="module")
def block_database(pg: PgServer) -> Iterator[str]:
    name = pg.fresh_database()
    # An adopted legacy face_metadata has the legacy JSON columns too (reactor.store.legacy),
    # which the blocks of sql/legacy.sql read.
    pg.psql("ALTER TABLE face_metadata ADD COLUMN face_locations TEXT, ADD COLUMN face_encodings JSONB", name)
    yield name
    pg.drop_database(name)


@pytest.fixture
async def conn(pg: PgServer, block_database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg.dsn(block_database))
    try:
        yield connection
    finally:
        await connection.close()


def test_there_are_blocks() -> None:
    files = {file for file, _ in all_blocks()}
    assert "catalog.sql" in files


async def run_block(conn: asyncpg.Connection, file: str, block: str) -> None:
    """Prepare one block and run it with dummy arguments, in a transaction rolled back after.
    Errors that the dummy values may cause at run time (RUNTIME_DATA_ERRORS) are printed."""
    tx = conn.transaction()
    await tx.start()
    try:
        text = await fill_template(conn, sql.blocks(file)[block])
        try:
            stmt = await conn.prepare(text)
        except asyncpg.PostgresError as exc:
            if "multiple commands" not in str(exc):
                raise
            # A multi-statement block takes no parameters; run it as a script.
            await conn.execute(text)
            return
        args = [await dummy(conn, p.oid) for p in stmt.get_parameters()]
        try:
            await stmt.fetch(*args)
        except asyncpg.PostgresError as exc:
            if not (exc.sqlstate or "").startswith(RUNTIME_DATA_ERRORS):
                raise
            print(f"{file}:{block}: dummy arguments gave {exc.sqlstate} {exc}")
    finally:
        await tx.rollback()


@pytest.mark.parametrize(("file", "block"), list(all_blocks()))
async def test_block_parses_and_runs(conn: asyncpg.Connection, file: str, block: str) -> None:
    await run_block(conn, file, block)


@pytest.fixture(scope="module")
def production_database(pg: PgServer) -> Iterator[str]:
    """The legacy production shape (tests/production_shape.py) after `reactor db init`."""
    name = f"blocks_prod_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE DATABASE {name}")

    async def create() -> None:
        conn = await asyncpg.connect(pg.dsn(name))
        try:
            await production_shape.create(conn)
        finally:
            await conn.close()

    asyncio.run(create())  # a module fixture outside the tests' event loops
    yield name
    pg.drop_database(name)


@pytest.fixture
async def prod_conn(pg: PgServer, production_database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg.dsn(production_database))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.mark.parametrize(("file", "block"), list(all_blocks()))
async def test_block_runs_on_the_production_shape(prod_conn: asyncpg.Connection, file: str, block: str) -> None:
    """No query fails at run time on a column that a legacy table lacks: every block runs on
    production's shape, except the few that write an optional column, which the store runs
    only where the column exists (outcomes.OPTIONAL_FAILURE_BLOCKS, the one list of them)."""
    guarded = outcomes.OPTIONAL_FAILURE_BLOCKS.get(block) if file == "outcomes.sql" else None
    try:
        await run_block(prod_conn, file, block)
    except asyncpg.UndefinedColumnError as exc:
        assert guarded is not None, f"{file}:{block} fails on the legacy production shape: {exc}"
        assert guarded & production_shape.PRODUCTION_LACKS, f"{file}:{block}: {exc}"
        return
    except asyncpg.InvalidColumnReferenceError:
        # Upserts into ai_metadata need the key of the reactor's own ai_metadata: they run
        # only in standalone mode, which the block's comment says.
        assert "Standalone mode" in sql.blocks(file)[block], f"{file}:{block} fails on the production shape"
        return
    assert guarded is None or not guarded & production_shape.PRODUCTION_LACKS, (
        f"{file}:{block} ran although it needs {sorted(guarded or ())}"
    )


@pytest.mark.parametrize("block", ["record_failure", "record_incomplete"])
async def test_failure_writes_run_with_the_columns_each_shape_has(
    conn: asyncpg.Connection, prod_conn: asyncpg.Connection, block: str
) -> None:
    """The failure writes name the optional columns the table has (outcomes.failure_write_sql):
    with the production shape's columns they run there, with every one they need the full schema."""
    every = frozenset(outcomes.FAILURE_WRITE_COLUMNS)
    shapes = [(prod_conn, every - production_shape.PRODUCTION_LACKS), (conn, every)]
    for connection, columns in shapes:
        tx = connection.transaction()
        await tx.start()
        try:
            stmt = await connection.prepare(outcomes.failure_write_sql(block, columns))
            assert len(stmt.get_parameters()) == outcomes.FAILURE_FIXED_PARAMS[block] + len(columns)
            await stmt.fetch(*[await dummy(connection, p.oid) for p in stmt.get_parameters()])
        finally:
            await tx.rollback()
    with pytest.raises(asyncpg.UndefinedColumnError):
        await prod_conn.prepare(outcomes.failure_write_sql(block, every))
