"""`reactor deletions`: the deletions held after a confirmed mass vanish; `--apply` them."""

from __future__ import annotations

import argparse
import json
import sys

from reactor.config import Config
from reactor.errors import UsageError
from reactor.handlers.common import share_and_database, whole
from reactor.paths import PathMapper
from reactor.store import held, relations
from reactor.store.dbtypes import Conn


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "deletions", help="list deletions held after a mass vanish; --apply backs up and deletes their results"
    )
    parser.add_argument(
        "--apply",
        action="store_true",
        help="back up, then delete the results of held files still missing on the (online) share",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    parser.add_argument("--sample", type=whole(0), default=20, metavar="N", help="paths listed (default 20)")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    async with share_and_database(args, config) as here:
        if await relations.missing(here.conn, ("reactor_held_deletions",)):
            raise UsageError("reactor_held_deletions is missing: run `reactor db init` (or the owner's SQL)")
        if not args.apply:
            return await _list(here.conn, args)
        if not here.online:
            raise UsageError(
                f"the share is offline ({here.reason}): a missing file cannot be believed; mount it "
                "(README: Watching the share), then run `reactor deletions --apply` again"
            )
        result = await held.apply(here.conn, PathMapper.for_images(config.images), standalone=config.register_files)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2 if sys.stdout.isatty() else None))
        return 0
    for source, (table, copied) in result.backups.items():
        print(f"backed up {copied} {source} rows into {table}")
    print(f"deleted the results of {len(result.deleted)} held files; released {len(result.released)} that are back")
    if result.undecided:
        print(f"kept {len(result.undecided)} held: they could not be looked at (an I/O error or an unreachable folder)")
    if result.rejected:
        print(
            f"skipped {len(result.rejected)} held paths that are not valid share paths (never opened, still held; "
            "`reactor audit` lists their rows under invalid_paths, `reactor repair --apply` removes those):"
        )
        for path, reason in sorted(result.rejected.items())[: args.sample]:
            print(f"    - {path!r} ({reason})")
    return 0


async def _list(conn: Conn, args: argparse.Namespace) -> int:
    total = await held.count(conn)
    rows = await held.listed(conn, args.sample)
    if args.json:
        sample = [
            {
                "image_path": r["image_path"],
                "held_at": r["held_at"].isoformat(),
                "reason": r["reason"],
                "has_result": r["has_result"],
            }
            for r in rows
        ]
        print(json.dumps({"held": total, "sample": sample}))
        return 0
    if not total:
        print("deletions: none held")
        return 0
    print(f"deletions: {total} held (their results are kept until applied)")
    for r in rows:
        print(f"    - {r['image_path']} ({r['reason']}, {r['held_at']:%Y-%m-%d %H:%M})")
    print("apply: `reactor deletions --apply` (backs up the rows first); files that come back are released")
    return 0
