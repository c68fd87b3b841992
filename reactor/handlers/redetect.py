"""`reactor redetect`: detect images again, in the three modes photo libraries offer.

- ``--missing``: only what has no result (what the sweep does anyway): the selected
  failures become due now (a blacklisted image stays blacklisted).
- ``--refresh``: detect results again; faces still there keep their ids (by overlap,
  reactor.util.identity). ``--stale`` takes only results made with other detector settings
  than today's (their settings fingerprint differs).
- ``--reset``: detect results again; every face gets a new id.
- ``--legacy-zero``: the zero-face results the legacy worker wrote, which may be
  failures it saved as 0 faces (seeds/001).

A selection is PATH..., ``--prefix``, ``--type``, ``--model`` or ``--all``. Requests are
durable rows (reactor_redetect) taken by the sweep at backlog priority; a request
goes with the image's next success, and a failure keeps the old result. With a
running reactor the command wakes it and follows the progress (Ctrl-C stops
following, not the work; ``--cancel`` withdraws requests); without one it processes
them here, like `reactor sweep --once`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

from reactor.config import Config
from reactor.core import control
from reactor.detector.settings import settings_fingerprint
from reactor.errors import UsageError
from reactor.handlers.common import logs_to_stderr, sweep_once_here
from reactor.ops import audit
from reactor.store import db
from reactor.store.claims import RedetectMode
from reactor.store.dbtypes import rows_affected
from reactor.store.sql import Queries
from reactor.util.progress import Progress

Q = Queries("redetect.sql")
LEGACY = Queries("legacy.sql")
LEGACY_ZERO = "legacy_zero"
FOLLOW_SECONDS = 1.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "redetect",
        help="detect images again: missing, refresh (keep face ids), reset (new ids)",
        description="Request re-detection; a running reactor takes the requests at backlog priority and this "
        "command follows its progress, or, without one, processes them here.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--missing", action="store_true", help="only images without a result: retry them now")
    mode.add_argument("--refresh", action="store_true", help="detect results again; faces keep their ids")
    mode.add_argument("--reset", action="store_true", help="detect results again; all faces get new ids")
    mode.add_argument(
        "--legacy-zero",
        action="store_true",
        help="the zero-face results the legacy worker wrote (failures it saved as 0 faces)",
    )
    mode.add_argument("--cancel", action="store_true", help="withdraw waiting requests of the selection")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="images, as in ai_metadata")
    parser.add_argument("--prefix", help="every image under this folder, e.g. 2024/holiday/")
    parser.add_argument("--type", dest="error_type", help="images whose failure has this type, e.g. timeout")
    parser.add_argument("--model", help="results made by this model (hog, cnn)")
    parser.add_argument("--all", action="store_true", help="every image")
    parser.add_argument(
        "--stale",
        action="store_true",
        help="with --refresh/--reset: only results made with other detector settings than today's",
    )
    parser.add_argument("--no-wait", action="store_true", help="record the requests and return")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=redetect_command)


@dataclass(frozen=True)
class Selection:
    paths: list[str] | None
    prefix: str | None
    error_type: str | None
    model: str | None


def _selection(args: argparse.Namespace) -> Selection:
    chosen = [bool(args.paths), args.prefix is not None, args.error_type is not None, args.model is not None, args.all]
    if args.legacy_zero:
        if any(chosen):
            raise UsageError("--legacy-zero takes no selection: it is every legacy zero-face result")
    elif sum(chosen) != 1:
        raise UsageError("choose what to re-detect: PATH..., --prefix, --type, --model or --all (one of them)")
    if args.stale and not (args.refresh or args.reset):
        raise UsageError("--stale goes with --refresh or --reset")
    if (args.missing or args.cancel) and args.model is not None:
        raise UsageError("--model selects results; images without a result have no model")
    return Selection(args.paths or None, args.prefix, args.error_type, args.model)


def redetect_command(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    selection = _selection(args)
    with db.resolved_dsn(config) as dsn:
        counts = asyncio.run(_redetect(args, config, dsn, selection))
    if args.json:
        print(json.dumps(counts))
    else:
        print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


async def _redetect(args: argparse.Namespace, config: Config, dsn: str, sel: Selection) -> dict[str, Any]:
    async with db.connection(dsn, config) as conn:
        if await audit.missing_tables(conn):
            raise UsageError("the reactor's tables are missing; run `reactor db init` first")
        if args.cancel:
            return {"cancelled": rows_affected(await conn.execute(Q.cancel, sel.paths, sel.prefix))}
        batch, counts = await _record(conn, args, config, sel)
        live = await control.live_instances(conn, config.health.heartbeat_seconds)
        counts["by"] = live[0] if live else "here"
        if live:
            # A wake-up only: the requests are in the database, the sweep is the truth.
            await control.send(conn, config.database.control_channel, control.request_payload(batch))
            if not args.no_wait and "requested" in counts:
                counts["answered"] = await _follow(conn, batch, int(counts["requested"]))
            return counts
    if not args.no_wait:
        counts["processed"] = (await sweep_once_here(config, dsn, "redetect")).processed
    return counts


async def _record(conn: Any, args: argparse.Namespace, config: Config, sel: Selection) -> tuple[str, dict[str, Any]]:
    if args.legacy_zero:
        added = rows_affected(await conn.execute(LEGACY.legacy_zero_request))
        waiting = int(await conn.fetchval(LEGACY.redetect_requested, LEGACY_ZERO))
        return LEGACY_ZERO, {"added": added, "requested": waiting}
    if args.missing:
        retried = rows_affected(await conn.execute(Q.retry_missing, sel.paths, sel.prefix, sel.error_type))
        pending = int(await conn.fetchval(Q.pending_selected, sel.paths, sel.prefix)) if not sel.error_type else 0
        return "missing", {"retried": retried, "pending": pending}
    mode = RedetectMode.RESET if args.reset else RedetectMode.REFRESH
    batch = f"{mode}:{uuid.uuid4().hex[:12]}"
    stale = settings_fingerprint(config.detector) if args.stale else None
    requested = rows_affected(
        await conn.execute(Q.request_results, batch, mode, sel.paths, sel.prefix, sel.error_type, sel.model, stale)
    )
    return batch, {"mode": mode, "requested": requested}


async def _follow(conn: Any, batch: str, total: int) -> int:
    """Progress of a running reactor through this batch. Ctrl-C ends the command, not
    the work: the requests stay, and the reactor goes on with them."""
    answered = 0
    with Progress(total, "redetect") as progress:
        while answered < total:
            remaining = int(await conn.fetchval(Q.remaining, batch))
            progress.advance(total - remaining - answered)
            answered = total - remaining
            if answered < total:
                await asyncio.sleep(FOLLOW_SECONDS)
    return answered
