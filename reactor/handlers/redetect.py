"""`reactor redetect --legacy-zero`: ask for the legacy zero-face results to be detected again.

Before its fix the legacy worker saved a failed detection as ``face_count = 0``
(seeds/001), so a zero-face row it wrote may hide faces. The command records one
durable request per such row (reactor_redetect) and wakes a running reactor,
whose sweep queues them at backlog priority; without a daemon, `reactor sweep
--once` processes them here. A success replaces the row, legacy columns included;
a failure or a missing file keeps the old row and records the failure. The
requests survive restarts; running the command again adds only what is neither
requested nor detected yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from reactor import audit, claims, control, db, logs
from reactor.cli import UsageError
from reactor.config import Config
from reactor.sql import Queries

Q = Queries("legacy.sql")
LEGACY_ZERO = "legacy_zero"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "redetect",
        help="detect images again that already have a result",
        description="Request re-detection of results that may be wrong; a running reactor (or "
        "`reactor sweep --once`) processes the requests at backlog priority.",
    )
    parser.add_argument(
        "--legacy-zero",
        action="store_true",
        required=True,
        help="the zero-face results the legacy worker wrote (failures it saved as 0 faces)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=redetect_command)


def redetect_command(args: argparse.Namespace, config: Config) -> int:
    # The counts are this command's stdout; log lines go to stderr.
    logs.configure(
        fmt=args.log_format or config.logging.format, level=args.log_level or config.logging.level, stream=sys.stderr
    )
    with db.resolved_dsn(config) as dsn:
        counts = asyncio.run(_request(dsn, config))
    if args.json:
        print(json.dumps(counts))
        return 0
    woken = "a running reactor takes them now" if counts["woken"] else "run `reactor run` or `reactor sweep --once`"
    print(
        f"re-detection requested for {counts['added']} more legacy zero-face result(s), "
        f"{counts['waiting']} waiting in all: {woken}"
    )
    return 0


async def _request(dsn: str, config: Config) -> dict[str, object]:
    async with db.connection(dsn, config) as conn:
        if await audit.missing_tables(conn):
            raise UsageError("the reactor's tables are missing; run `reactor db init` first")
        added = claims.rows_affected(await conn.execute(Q.legacy_zero_request))
        waiting = int(await conn.fetchval(Q.redetect_requested, LEGACY_ZERO))
        live = await control.live_instances(conn, config.health.heartbeat_seconds)
        if live:
            # A wake-up only: the requests are in the table, the sweep is the truth.
            await control.send(conn, config.database.control_channel, control.request_payload("redetect"))
    return {"added": added, "waiting": waiting, "woken": bool(live)}
