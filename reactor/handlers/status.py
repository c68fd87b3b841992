"""`reactor status`: counts of results, failures and pending images, and running instances."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator

import asyncpg

from reactor import advice, db, status
from reactor.cli import UsageError
from reactor.config import Config
from reactor.handlers.common import logs_to_stderr
from reactor.orphans import OrphanPolicy


@contextlib.contextmanager
def database_problems(config: Config) -> Iterator[None]:
    """A missing table or privilege becomes one line with the fix, not a traceback."""
    try:
        yield
    except asyncpg.UndefinedTableError as exc:
        raise UsageError(
            f"{exc}: the reactor's schema is not in this database; run `reactor db init` "
            "(`reactor db check` lists what is missing)"
        ) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        grants = advice.grants(db.configured_role(config))
        raise UsageError(f"{exc}; {grants} (`reactor doctor` lists what is missing)") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("status", help="images processed, faces, failures, pending, running reactors")
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    with db.resolved_dsn(config) as dsn, database_problems(config):
        async with db.connection(dsn, config) as conn:
            report = await status.collect(conn, config.health.heartbeat_seconds, OrphanPolicy.from_config(config.sweep))
    if args.json:
        print(json.dumps(report.as_json(), indent=2 if sys.stdout.isatty() else None))
    else:
        print(status.render_table(report))
    return 0
