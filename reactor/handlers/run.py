"""`reactor run`: the reactor in the foreground until SIGTERM or SIGINT (Ctrl+C).

The signal handlers (reactor.handlers.common) only set the stop event; the Reactor
then stops taking work, lets the image in flight finish (or time out) and writes its
outcome, releases its claims and returns, and the command exits 0.
"""

from __future__ import annotations

import argparse
import asyncio

from reactor.config import Config
from reactor.core import heap_trim
from reactor.core.service import Reactor
from reactor.handlers.common import install_stop_signals
from reactor.store import db, schema


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        help="run the reactor in the foreground",
        description="Run the reactor in the foreground; SIGTERM or Ctrl-C stops it gracefully.",
    )
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, config: Config) -> int:
    # Process-wide, so here and not in the Reactor: before any thread exists (the embedded
    # database, the event loop's executor), threads share the main heap, which the
    # reactor's HeapTrimmer trims (reactor.core.heap_trim).
    heap_trim.single_arena()
    with db.resolved_dsn(config) as dsn:
        return asyncio.run(serve(config, dsn))


async def serve(config: Config, dsn: str) -> int:
    await schema.prepare_embedded(config, dsn)
    stop = asyncio.Event()
    install_stop_signals(stop)
    await Reactor(config, dsn).run(stop)
    return 0
