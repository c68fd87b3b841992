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

Nothing is waited for that will not come: a request for an image the sweep never
takes (blacklisted, permanently failed, not processed in ai_metadata) is withdrawn
at once and reported with its reason, and following ends when nothing pending is
about to be taken (what is left backs off until its next try), when the reactor is
gone, or after ``--timeout``, saying what is still pending and why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reactor.config import Config
from reactor.core import control
from reactor.detector.settings import current_fingerprints
from reactor.errors import UsageError
from reactor.handlers.common import db_paths, logs_to_stderr, sweep_once_here, zero_or_more
from reactor.store import db, relations
from reactor.store import redetect as requests
from reactor.store.claims import RedetectMode
from reactor.store.dbtypes import Conn
from reactor.store.redetect import LEGACY_ZERO
from reactor.util.progress import Progress

FOLLOW_SECONDS = 1.0
# Why a request is not answered yet (pending_states, missing_refused, without_result),
# and what to do. The first five are never taken: such a request is refused.
WHY = {
    "blacklisted": "blacklisted: `reactor failures retry PATH` takes it back",
    "permanently_failed": "permanently failed: `reactor failures retry PATH` makes it due again",
    "invalid_path": "the path is refused (invalid_path): fix it in ai_metadata",
    "not_processed": "not processed in ai_metadata: the reactor detects processed images only",
    "no_result": "no result to detect again: `reactor redetect --missing PATH` retries it",
    "backing_off": "its last try failed: it is taken again at its next retry",
    "waiting": "waiting for the running reactor",
}
NEVER_TAKEN = ("blacklisted", "permanently_failed", "not_processed")
# Refusals listed one by one; the rest are counted.
MAX_LISTED = 50


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
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="images, as in ai_metadata, or their files under the share root"
    )
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
    parser.add_argument(
        "--timeout",
        type=zero_or_more,
        default=0.0,
        metavar="SECONDS",
        help="stop following a running reactor after this long, saying what is still pending (0: no limit)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=redetect_command)


@dataclass(frozen=True)
class Selection:
    paths: list[str] | None
    prefix: str | None
    error_type: str | None
    model: str | None


def _selection(args: argparse.Namespace, config: Config) -> Selection:
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
    # A local file under the share root is its stored path; any other as given (a request
    # for a path the reactor would refuse is refused with its reason, never lost).
    paths = db_paths(config, args.paths, strict=False) if args.paths else None
    return Selection(paths, args.prefix, args.error_type, args.model)


def redetect_command(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    selection = _selection(args, config)
    with db.resolved_dsn(config) as dsn:
        counts = asyncio.run(_redetect(args, config, dsn, selection))
    if args.json:
        print(json.dumps(counts))
        return 0
    print(" ".join(f"{k}={v}" for k, v in counts.items() if not isinstance(v, list | dict)))
    for refusal in counts.get("refusals", []):
        print(f"refused\t{refusal['image_path']}\t{refusal['reason']}")
    for state, pending in counts.get("still_pending", {}).items():
        print(f"pending\t{pending['images']} image(s), e.g. {pending['example']}\t{WHY[state]}")
    return 0


def _refusals(rows: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The counts' refusal keys: how many, and the first ones with their reason."""
    listed = [{"image_path": path, "reason": WHY[state]} for path, state in rows[:MAX_LISTED]]
    return {"refused": len(rows), "refusals": listed}


async def _redetect(args: argparse.Namespace, config: Config, dsn: str, sel: Selection) -> dict[str, Any]:
    async with db.connection(dsn, config) as conn:
        if await relations.missing(conn):
            raise UsageError("the reactor's tables are missing; run `reactor db init` first")
        if args.cancel:
            return {"cancelled": await requests.cancel(conn, sel.paths, sel.prefix)}
        batch, counts = await _record(conn, args, config, sel)
        live = await control.live_instances(conn, config.health.heartbeat_seconds)
        counts["by"] = live[0] if live else "here"
        if live:
            # A wake-up only: the requests are in the database, the sweep is the truth.
            await control.send(conn, config.database.control_channel, control.request_payload(batch))
            if not args.no_wait and "requested" in counts:
                counts.update(await _follow(conn, config, batch, int(counts["requested"]), args.timeout))
            return counts
    if not args.no_wait:
        counts["processed"] = (await sweep_once_here(config, dsn, "redetect")).processed
    return counts


async def _record(conn: Conn, args: argparse.Namespace, config: Config, sel: Selection) -> tuple[str, dict[str, Any]]:
    if args.missing:
        retried = await requests.retry_missing(conn, sel.paths, sel.prefix, sel.error_type)
        pending = await requests.pending_selected(conn, sel.paths, sel.prefix) if not sel.error_type else 0
        refused = await requests.missing_refused(conn, sel.paths, sel.prefix, sel.error_type)
        return "missing", {"retried": retried, "pending": pending, **_refusals(refused)}
    if args.legacy_zero:
        batch = LEGACY_ZERO
        recorded = await requests.record(conn, batch, never_taken=NEVER_TAKEN, paths=sel.paths)
        counts: dict[str, Any] = {"added": len((recorded.added or set()) - {path for path, _ in recorded.refused})}
    else:
        mode = RedetectMode.RESET if args.reset else RedetectMode.REFRESH
        batch = f"{mode}:{uuid.uuid4().hex[:12]}"
        stale = current_fingerprints(config.detector) if args.stale else None
        recorded = await requests.record(
            conn,
            batch,
            never_taken=NEVER_TAKEN,
            mode=mode,
            paths=sel.paths,
            prefix=sel.prefix,
            error_type=sel.error_type,
            model=sel.model,
            stale=stale,
        )
        counts = {"mode": mode}
    counts["requested"] = recorded.requested
    return batch, {**counts, **_refusals(recorded.refused)}


async def _follow(conn: Conn, config: Config, batch: str, total: int, limit_seconds: float) -> dict[str, Any]:
    """Progress of a running reactor through this batch, until every request is answered,
    nothing pending is about to be taken, the reactor is gone, or ``limit_seconds``
    (0: no limit). Ctrl-C ends the command, not the work: the requests stay, and the
    reactor goes on with them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds if limit_seconds > 0 else None
    answered = 0
    with Progress(total, "redetect") as progress:
        while True:
            states = await requests.pending_summary(conn, batch)
            now_answered = total - sum(images for images, _ in states.values())
            progress.advance(max(0, now_answered - answered))
            answered = now_answered
            if not states:
                stopped = "done"
            elif "waiting" not in states:
                stopped = "nothing_about_to_be_taken"
            elif deadline is not None and loop.time() >= deadline:
                stopped = "timeout"
            elif not await control.live_instances(conn, config.health.heartbeat_seconds):
                stopped = "reactor_gone"
            else:
                await asyncio.sleep(FOLLOW_SECONDS)
                continue
            break
    pending = {state: {"images": images, "example": example} for state, (images, example) in states.items()}
    return {"answered": answered, "stopped": stopped, "still_pending": pending}
