"""`reactor status`: counts of results, failures and pending images, and running instances."""

from __future__ import annotations

import argparse
import json
import sys

from reactor.config import Config
from reactor.handlers.common import logs_to_stderr
from reactor.ops import status
from reactor.store import db
from reactor.store.orphans import OrphanPolicy


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("status", help="images processed, faces, failures, pending, running reactors")
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    with db.resolved_dsn(config) as dsn:
        async with db.connection(dsn, config) as conn:
            report = await status.collect(
                conn,
                config.health.heartbeat_seconds,
                OrphanPolicy.from_config(config.sweep),
                config.sweep.walk_interval_hours * 3600.0,
            )
    if args.json:
        print(json.dumps(report.as_json(), indent=2 if sys.stdout.isatty() else None))
    else:
        print(status.render_table(report))
    return 0
