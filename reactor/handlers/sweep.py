"""`reactor sweep`: ask the running reactor to sweep now, or sweep here (--once, --dry-run)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from reactor.config import Config
from reactor.core import control
from reactor.core.queue import ImageQueue
from reactor.core.sweep import COUNTS, SweepCounts, Sweeper
from reactor.errors import UsageError
from reactor.handlers.common import above_zero, logs_to_stderr, sweep_once_here
from reactor.store import db
from reactor.store.orphans import RELEASE_HINT, OrphanPolicy
from reactor.watch.share import ShareMonitor


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sweep",
        help="find missed, due and orphaned images now",
        description="Ask the running reactor to sweep now and print what it found. "
        "--once sweeps and processes here without a daemon; --dry-run only lists.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="sweep and process what it finds here, then exit")
    mode.add_argument(
        "--dry-run", action="store_true", help="list what would be queued, marked orphaned or purged; change nothing"
    )
    parser.add_argument(
        "--timeout",
        type=above_zero,
        default=120.0,
        help="seconds to wait for the running reactor's answer (default 120)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=sweep_command)


def sweep_command(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    with db.resolved_dsn(config) as dsn:
        if args.dry_run:
            return asyncio.run(_dry_run(args, config, dsn))
        if args.once:
            return asyncio.run(_once(args, config, dsn))
        return asyncio.run(_remote(args, config, dsn))


def _print_counts(args: argparse.Namespace, counts: dict[str, object], who: str) -> None:
    if args.json:
        print(json.dumps({"by": who, **counts}))
        return
    keys = (*COUNTS, "processed") if "processed" in counts else COUNTS
    summary = " ".join(f"{k}={counts.get(k, 0)}" for k in keys)
    extra = f" (orphans not purged: {counts['orphans_skipped']})" if counts.get("orphans_skipped") else ""
    if counts.get("orphans_held"):
        extra += f" (orphans held: {counts['orphans_held']}; {RELEASE_HINT})"
    print(f"sweep by {who}: {summary} in {counts.get('seconds', 0)} s{extra}")


async def _remote(args: argparse.Namespace, config: Config, dsn: str) -> int:
    async with db.connection(dsn, config) as conn:
        live = await control.live_instances(conn, config.health.heartbeat_seconds)
        if not live:
            raise UsageError(
                "no running reactor found (no recent heartbeat in reactor_instances); start `reactor run`, "
                "or use `reactor sweep --once` to sweep and process here"
            )
        replies = await control.request_sweep(conn, config.database.control_channel, args.timeout)
    if replies.swept is not None:
        _print_counts(args, dict(replies.swept.get("counts") or {}), str(replies.swept.get("instance_id")))
        return 0
    if replies.skipped:
        reason = replies.skipped[0].get("counts", {}).get("skipped")
        print(f"reactor sweep: not swept: {reason}; try again in a moment", file=sys.stderr)
        return 1
    print(
        f"reactor sweep: no answer from {', '.join(live)} within {args.timeout:g} s; "
        "check that it is running (`reactor status`) or raise --timeout",
        file=sys.stderr,
    )
    return 1


async def _once(args: argparse.Namespace, config: Config, dsn: str) -> int:
    here = await sweep_once_here(config, dsn, "sweep --once")
    if here.counts.skipped:
        print(f"reactor sweep: not swept: {here.counts.skipped}; try again in a moment", file=sys.stderr)
        return 1
    _print_counts(args, {**here.counts.as_dict(), "processed": here.processed}, f"{here.instance_id} (--once)")
    return 0


async def _dry_run(args: argparse.Namespace, config: Config, dsn: str) -> int:
    pool = await db.create_pool(dsn, config)
    try:
        share = ShareMonitor(config.images, config.watcher)
        share.check()
        sweeper = Sweeper(
            pool,
            ImageQueue(1),
            page_size=config.sweep.page_size,
            lease_seconds=config.service.lease_seconds,
            instance_id="dry-run",
            share_online=lambda: share.online,
            orphan_policy=OrphanPolicy.from_config(config.sweep),
        )
        counts: SweepCounts = await sweeper.sweep(dry_run=True)
    finally:
        await pool.close()
    if args.json:
        print(json.dumps({"paths": counts.paths, **counts.as_dict()}))
        return 0
    for kind in ("retry", "pending", "orphan", "purge"):
        for path in counts.paths.get(kind, []):
            print(f"{kind}\t{path}")
    _print_counts(args, counts.as_dict(), "dry run (nothing changed)")
    return 0
