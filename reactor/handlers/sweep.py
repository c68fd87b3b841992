"""`reactor sweep`: ask the running reactor to sweep now, or sweep here (--once, --dry-run)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from reactor import control, db, logs
from reactor.cli import UsageError
from reactor.config import Config
from reactor.handlers.run import install_stop_signals, prepare_embedded
from reactor.progress import Progress, follow
from reactor.queue import ImageQueue
from reactor.service import Reactor
from reactor.share import ShareMonitor
from reactor.sweep import SweepCounts, Sweeper

SUMMARY_KEYS = ("retries", "pending", "orphans", "queued", "dropped", "stale_claims")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sweep", help="find missed, due and orphaned images now",
        description="Ask the running reactor to sweep now and print what it found. "
                    "--once sweeps and processes here without a daemon; --dry-run only lists.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="sweep and process what it finds here, then exit")
    mode.add_argument("--dry-run", action="store_true", help="list what would be queued or removed; change nothing")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the running reactor's answer (default 120)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=sweep_command)


def sweep_command(args: argparse.Namespace, config: Config) -> int:
    # The output is this command's stdout; log lines go to stderr.
    logs.configure(fmt=args.log_format or config.logging.format, level=args.log_level or config.logging.level,
                   stream=sys.stderr)
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
    summary = " ".join(f"{k}={counts.get(k, 0)}" for k in SUMMARY_KEYS)
    extra = f" (orphans not removed: {counts['orphans_skipped']})" if counts.get("orphans_skipped") else ""
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
    print(f"reactor sweep: no answer from {', '.join(live)} within {args.timeout:g} s; "
          "check that it is running (`reactor status`) or raise --timeout", file=sys.stderr)
    return 1


async def _once(args: argparse.Namespace, config: Config, dsn: str) -> int:
    await prepare_embedded(config, dsn)
    stop = asyncio.Event()
    install_stop_signals(stop)
    reactor = Reactor(config, dsn)
    with Progress(None, "sweep --once") as progress:
        # The worker exists only once run_once has connected; until then nothing is done.
        follower = asyncio.create_task(follow(
            progress,
            lambda: reactor.lanes.processed if reactor.worker else 0,
            lambda: reactor.lanes.processed + len(reactor.queue) if reactor.worker else None,
        ))
        try:
            counts = await reactor.run_once(stop)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    if counts.skipped:
        print(f"reactor sweep: not swept: {counts.skipped}; try again in a moment", file=sys.stderr)
        return 1
    processed = reactor.lanes.processed
    _print_counts(args, {**counts.as_dict(), "processed": processed}, f"{reactor.instance_id} (--once)")
    return 0


async def _dry_run(args: argparse.Namespace, config: Config, dsn: str) -> int:
    pool = await db.create_pool(dsn, config)
    try:
        share = ShareMonitor(config.images, config.watcher)
        share.check()
        sweeper = Sweeper(pool, ImageQueue(1), page_size=config.sweep.page_size,
                          lease_seconds=config.service.lease_seconds, instance_id="dry-run",
                          share_online=lambda: share.online)
        counts: SweepCounts = await sweeper.sweep(dry_run=True)
    finally:
        await pool.close()
    if args.json:
        print(json.dumps({"paths": counts.paths, **counts.as_dict()}))
        return 0
    for kind in ("retry", "pending", "orphan"):
        for path in counts.paths.get(kind, []):
            print(f"{kind}\t{path}")
    _print_counts(args, counts.as_dict(), "dry run (nothing changed)")
    return 0
