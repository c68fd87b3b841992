"""`reactor failures list|retry|forget` and `reactor blacklist`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from reactor.config import Config
from reactor.errors import UsageError
from reactor.failure_types import ADVICE, ErrorType
from reactor.handlers.common import db_paths, logs_to_stderr
from reactor.ops import failures
from reactor.store import db

TYPES = sorted(t.value for t in ErrorType)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("failures", help="list, retry or forget failed images")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    ls = actions.add_parser("list", help="failed images, with type, tries and next retry")
    ls.add_argument("--type", choices=TYPES, help="only failures of this type")
    ls.add_argument("--permanent", action="store_true", help="only permanently failed images")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(handler=run_list)

    retry = actions.add_parser("retry", help="clear the backoff so the images are queued again at once")
    retry.add_argument("paths", nargs="*", metavar="PATH", help="image paths (relative to the share root)")
    retry.add_argument("--type", choices=TYPES, help="retry every failure of this type")
    retry.add_argument("--all", action="store_true", help="retry every failure but blacklisted ones (name those)")
    retry.set_defaults(handler=run_retry)

    forget = actions.add_parser("forget", help="delete failure rows (the sweep queues the image again)")
    forget.add_argument("paths", nargs="+", metavar="PATH")
    forget.set_defaults(handler=run_forget)

    black = sub.add_parser("blacklist", help="mark images permanently failed, so they are never examined")
    black.add_argument("paths", nargs="+", metavar="PATH")
    black.add_argument("--reason", required=True, help="why, recorded as the failure message")
    black.set_defaults(handler=run_blacklist)


async def run_list(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    with db.resolved_dsn(config) as dsn:
        async with db.connection(dsn, config) as conn:
            rows = await failures.list_failures(conn, args.type, args.permanent)
    if args.json:
        for row in rows:
            print(json.dumps(row.as_json()))
        return 0
    if not rows:
        print("no failures")
        return 0
    table = [(row.image_path, row.error_type, f"tries={row.retry_count}", _when(row), row.last_error) for row in rows]
    # Align the short columns; a very long path only pushes its own line.
    widths = [min(60, max(len(r[i]) for r in table)) for i in range(4)]
    for r in table:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    print(f"{len(rows)} failures")
    for t in sorted({r.error_type for r in rows}):
        advice = advice_for(t)
        if advice:
            print(f"  {t}: {advice}")
    return 0


def _when(row: failures.FailureRow) -> str:
    if row.permanent:
        return "permanent"
    if row.next_retry_after is None or row.next_retry_after <= dt.datetime.now(dt.UTC):
        return "due now"
    return f"retry after {failures.iso(row.next_retry_after)}"


def advice_for(error_type: str) -> str | None:
    """What to do about a failure type, as in the README's table."""
    try:
        return ADVICE[ErrorType(error_type)]
    except ValueError:
        return None


def _report(verb: str, result: failures.Changed) -> int:
    for path in result.done:
        print(f"{verb}: {path}")
    for path in result.not_found:
        print(f"not found: {path} (no failure recorded for it)", file=sys.stderr)
    summary = f"{len(result.done)} {verb}"
    if result.not_found:
        summary += f", {len(result.not_found)} not found"
    print(summary)
    return 1 if result.not_found else 0


async def run_retry(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    chosen = sum((bool(args.paths), args.type is not None, args.all))
    if chosen != 1:
        raise UsageError("failures retry: give image paths, or --type TYPE, or --all (exactly one of them)")
    if args.type == ErrorType.BLACKLISTED:
        # As for --all: a person excluded them one by one, and takes them back by name.
        raise UsageError(
            "failures retry: blacklisted images are taken back one by one, by name, as with --all: "
            "`reactor failures list --type blacklisted` lists them, `reactor failures retry PATH...` takes them back"
        )
    paths = db_paths(config, args.paths, strict=False)
    with db.resolved_dsn(config) as dsn:
        async with db.connection(dsn, config) as conn:
            result = await failures.retry(
                conn, config.database.channel, paths=paths, error_type=args.type, everything=args.all
            )
    return _report("queued", result)


async def run_forget(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    paths = db_paths(config, args.paths, strict=False)
    with db.resolved_dsn(config) as dsn:
        async with db.connection(dsn, config) as conn:
            result = await failures.forget(conn, paths)
    return _report("forgotten", result)


async def run_blacklist(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    if not args.reason.strip():
        raise UsageError("blacklist: --reason must say why, e.g. --reason 'a painting, not a photo'")
    paths = db_paths(config, args.paths, strict=True)
    with db.resolved_dsn(config) as dsn:
        async with db.connection(dsn, config) as conn:
            result = await failures.blacklist(conn, paths, args.reason)
    return _report("blacklisted", result)
