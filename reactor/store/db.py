"""Connecting to PostgreSQL: the DSN, the password, the embedded default, one-line errors."""

from __future__ import annotations

import contextlib
import getpass
import os
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg

from reactor import logs
from reactor.config import ENV_PREFIX, Config, ConfigError, database_password
from reactor.errors import ReactorError
from reactor.util import dsn as dsn_mod

log = logs.get("reactor.db")


class DatabaseUnavailable(ReactorError):
    """The database cannot be reached; the message names host, port and database, never the password."""


# Errors after which the same write can succeed on a new connection: the server
# restarted, the socket broke, or the server is still starting up.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # asyncpg's protocol caught between two states when the server goes away during a
    # COMMIT ("cannot switch to state 15; another operation is in progress"): the
    # connection is broken, and the write is tried again on a new one.
    asyncpg.InternalClientError,
)
# The same, plus a pool or connection that could not be opened at all.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *TRANSIENT_DB_ERRORS)
# The same, plus any error the server reported.
ANY_DB_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError)


def describe_target(dsn: str) -> str:
    """host=... port=... database=... for messages, from a DSN, without user or password."""
    return dsn_mod.peek(dsn).describe()


def asyncpg_dsn(dsn: str) -> str:
    """What asyncpg reads: a URL as given, key/value pairs as the same URL."""
    parsed = dsn_mod.parse(dsn)
    return dsn if parsed.form == "url" else parsed.url()


def configured_role(config: Config) -> str:
    """The user the reactor connects as: the DSN's, else libpq's defaults."""
    user = dsn_mod.parse(config.database.dsn).user if config.database.dsn else ""
    return user or os.environ.get("PGUSER") or getpass.getuser()


def configured_database(config: Config) -> str:
    """The database the owner's SQL is for: the DSN's, else libpq's default, else vision."""
    name = dsn_mod.parse(config.database.dsn).database if config.database.dsn else ""
    return name or os.environ.get("PGDATABASE") or "vision"


# REACTOR_DATABASE__* variables that make sense for the embedded database too.
EMBEDDED_ENV = ("REACTOR_DATABASE__EMBEDDED_DIR",)


def refuse_unintended_embedded(config: Config, env: Mapping[str, str] | None = None) -> None:
    """No dsn but database variables set: the operator meant a real database (a typo, an
    unset shell variable); creating an embedded one would look like success."""
    env = os.environ if env is None else env
    if (Path(config.database.embedded_dir) / "PG_VERSION").exists():
        return  # an embedded database that exists already is joined, not created
    database_vars = sorted(v for v in env if v.startswith(f"{ENV_PREFIX}DATABASE__") and v not in EMBEDDED_ENV)
    if database_vars:
        raise ConfigError(
            f"{', '.join(database_vars)} set but database.dsn is empty: this would create a new embedded "
            f"database in {Path(config.database.embedded_dir).resolve()}; set REACTOR_DATABASE__DSN to the vision "
            f"database, or unset {', '.join(database_vars)} to use the embedded one"
        )


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

            server = pgserver.get_server(path, cleanup_mode="stop")
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
def resolved_dsn(config: Config, *, embedded_on_purpose: bool = False) -> Iterator[str]:
    """The configured DSN, or the embedded database's while the block runs.

    `embedded_on_purpose`: the command always uses its own embedded database (the demo),
    so database variables meant for a real server are no reason to stop.
    """
    if config.embedded:
        if not embedded_on_purpose:
            refuse_unintended_embedded(config)
        with embedded_server(config.database.embedded_dir) as dsn:
            yield dsn
    else:
        yield config.database.dsn


def connect_kwargs(config: Config) -> dict[str, Any]:
    password = database_password(config)
    logs.register_secret(password)
    kwargs: dict[str, Any] = {"timeout": config.database.connect_timeout_seconds}
    if password:
        kwargs["password"] = password
    return kwargs


def _unavailable(dsn: str, exc: BaseException, config: Config) -> DatabaseUnavailable:
    # Config refuses a DSN with a password; should one get here anyway, an error that
    # echoes the DSN must not show it.
    logs.register_secret(dsn_mod.peek(dsn).password)
    target = describe_target(dsn)
    if isinstance(exc, asyncpg.InvalidPasswordError) and database_password(config) is None:
        return DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {target}: the server asks for a password and no password is "
            "configured; set REACTOR_DATABASE__PASSWORD, PGPASSWORD or database.password_file"
        )
    reason = logs.mask(str(exc) or type(exc).__name__)
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {target}: {reason}; "
        "check [database] dsn, that the server is running, and the password"
    )


# OSError covers a refused connection, a timeout and a name that does not resolve (socket.gaierror).
_CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def connect(dsn: str, config: Config, **extra: Any) -> asyncpg.Connection:
    """One connection; DatabaseUnavailable (one line, no password) if it fails."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(asyncpg_dsn(dsn), **connect_kwargs(config), **extra)
    except _CONNECT_ERRORS as exc:
        raise _unavailable(dsn, exc, config) from None
    return conn


async def create_pool(dsn: str, config: Config, **extra: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            asyncpg_dsn(dsn), min_size=1, max_size=config.database.pool_size, **connect_kwargs(config), **extra
        )
    except _CONNECT_ERRORS as exc:
        raise _unavailable(dsn, exc, config) from None
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def connection(dsn: str, config: Config) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(dsn, config)
    try:
        yield conn
    finally:
        await conn.close()
