"""The store's own exceptions: what the layers above catch instead of asyncpg's.

The database driver's errors stop at the store's boundary (as procrastinate's
``wrap_exceptions`` does): a repository runs its statements inside ``translated()``
and the code above sees one of these, each saying what the caller can do about it.

- ``StoreUnavailable``: the connection or the server went away (restart, broken socket,
  server starting up, a timeout). The same statement can succeed later on a new connection.
- ``Fenced``: the claim this write was made under was taken over by another instance;
  the outcome is discarded, never written over a newer one.
- ``UnwritableSchema``: a table, column or function is missing, or the role lacks a
  privilege: no retry mends it, a person must (``reactor doctor`` says what);
  ``MissingTable`` and ``NoPrivilege`` say which of the two.
- ``RejectedPath``: the database refuses the path itself (one of the path constraints).
- ``StatementFailed``: any other error the server reported. Retrying the same statement
  fails the same way, so the caller records it instead of looping.

The original asyncpg error stays the ``__cause__``, and its text is the message.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import ParamSpec, TypeVar

import asyncpg

from reactor.store.constraints import PathRejected, path_rejection
from reactor.store.db import UNAVAILABLE_ERRORS


class StoreError(Exception):
    """A database problem seen through the store."""


class StoreUnavailable(StoreError):
    """The database could not be reached for this statement; try again later."""


class Fenced(StoreError):
    """The claim was taken over by another instance: this outcome must not be written."""


class UnwritableSchema(StoreError):
    """The schema or the role's privileges do not allow the statement; a person must fix it."""


class MissingTable(UnwritableSchema):
    """A table the statement names is not in this database (`reactor db init` creates it)."""


class NoPrivilege(UnwritableSchema):
    """The role lacks a privilege the statement needs (`reactor doctor` lists them)."""


class RejectedPath(StoreError):
    """The database refuses this path (a path constraint)."""

    def __init__(self, rejection: PathRejected) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


class StatementFailed(StoreError):
    """The server reported an error that a retry of the same statement would meet again."""


# Errors that no retry mends: the schema or the role's privileges are wrong.
_SCHEMA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedTableError,
    asyncpg.InsufficientPrivilegeError,
    asyncpg.NotNullViolationError,
    asyncpg.UndefinedFunctionError,
    asyncpg.DatatypeMismatchError,
)


_DRIVER_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, asyncpg.PostgresError)


def _translate(exc: BaseException, path: str | None) -> StoreError:
    """The store's exception for a driver error (one of _DRIVER_ERRORS)."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return StoreUnavailable(str(exc) or type(exc).__name__)
    if isinstance(exc, asyncpg.UndefinedTableError):
        return MissingTable(str(exc))
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return NoPrivilege(str(exc))
    if isinstance(exc, _SCHEMA_ERRORS):
        return UnwritableSchema(str(exc))
    rejection = path_rejection(exc, path)
    if rejection is not None:
        return RejectedPath(rejection)
    return StatementFailed(str(exc))


@contextlib.contextmanager
def translated(path: str | None = None) -> Iterator[None]:
    """Run statements (awaited inside the block) with asyncpg's errors raised as the store's.

    Only statements belong inside: an ``OSError`` is a broken socket here, never a file error."""
    try:
        yield
    except StoreError:
        raise
    except _DRIVER_ERRORS as exc:
        raise _translate(exc, path) from exc


P = ParamSpec("P")
T = TypeVar("T")


def translating(statements: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A repository function whose body is only statements and the bookkeeping around
    them, run inside ``translated()`` as a whole."""

    @functools.wraps(statements)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with translated():
            return await statements(*args, **kwargs)

    return run
