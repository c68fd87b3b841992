"""Connecting to PostgreSQL: the DSN, the password, the embedded default, one-line errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from reactor import logs
from reactor.config import Config, database_password

log = logs.get("reactor.db")


class DatabaseUnavailable(Exception):
    """The database cannot be reached; the message names host, port and database, never the password."""


def describe_target(dsn: str) -> str:
    """host:port/database for messages, from a DSN, without user or password."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host", [""])[0]) or os.environ.get("PGHOST", "localhost")
    port = parts.port or int(query.get("port", ["5432"])[0])
    database = (parts.path or "/").lstrip("/") or (query.get("dbname", [""])[0]) or parts.username or "postgres"
    return f"host={host} port={port} database={database}"


@contextlib.contextmanager
def embedded_server(data_dir: str) -> Iterator[str]:
    """Start (or join) the embedded PostgreSQL under data_dir; yield its DSN; stop it on exit."""
    path = Path(data_dir).resolve()
    log.info("embedded_db_starting", data_dir=str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (services, CI); pgserver copes.
            warnings.simplefilter("ignore")
            import pgserver  # imported lazily: only standalone mode needs it

            server = pgserver.get_server(path, cleanup_mode="stop")  # type: ignore[attr-defined]
    # pgserver raises whatever initdb/pg_ctl or the filesystem raised; all mean the same to a user.
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {path}: {logs.mask(first_line)}; set [database] "
            "embedded_dir to a writable directory, or [database] dsn to use an existing server"
        ) from None
    try:
        yield server.get_uri()
    finally:
        # pgserver counts its users; the server stops when the last one leaves.
        server.cleanup()
        log.info("embedded_db_stopped", data_dir=str(path))


@contextlib.contextmanager
def resolved_dsn(config: Config) -> Iterator[str]:
    """The configured DSN, or the embedded database's while the block runs."""
    if config.embedded:
        with embedded_server(config.database.embedded_dir) as dsn:
            yield dsn
    else:
        yield config.database.dsn


def connect_kwargs(config: Config) -> dict[str, Any]:
    password = database_password(config)
    logs.register_secret(password)
    # A password left in the DSN itself is masked too, wherever an error echoes it.
    logs.register_secret(unquote(urlsplit(config.database.dsn).password or ""))
    kwargs: dict[str, Any] = {"timeout": config.database.connect_timeout_seconds}
    if password:
        kwargs["password"] = password
    return kwargs


def _unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    reason = logs.mask(str(exc) or type(exc).__name__)
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {describe_target(dsn)}: {reason}; "
        "check [database] dsn, that the server is running, and the password"
    )


_CONNECT_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, socket.gaierror)


async def connect(dsn: str, config: Config, **extra: Any) -> asyncpg.Connection:
    """One connection; DatabaseUnavailable (one line, no password) if it fails."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **connect_kwargs(config), **extra)
    except asyncpg.InvalidPasswordError as exc:
        raise _unavailable(dsn, exc) from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise _unavailable(dsn, exc) from None
    except _CONNECT_ERRORS as exc:
        raise _unavailable(dsn, exc) from None
    return conn


async def create_pool(dsn: str, config: Config, **extra: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=config.database.pool_size, **connect_kwargs(config), **extra
        )
    except _CONNECT_ERRORS as exc:
        raise _unavailable(dsn, exc) from None
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def connection(dsn: str, config: Config) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(dsn, config)
    try:
        yield conn
    finally:
        await conn.close()
