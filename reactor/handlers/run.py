"""`reactor run`: the reactor in the foreground until SIGTERM or SIGINT.

The signal handlers only set the stop event; the Reactor then stops taking work,
lets the image in flight finish (or time out) and writes its outcome, releases its
claims and returns, and the command exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from reactor import db, logs, schema
from reactor.cli import UsageError
from reactor.config import Config
from reactor.instance_lock import InstanceTaken
from reactor.service import Reactor

log = logs.get("reactor.run")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run", help="run the reactor in the foreground",
        description="Run the reactor in the foreground; SIGTERM or Ctrl-C stops it gracefully.",
    )
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, config: Config) -> int:
    with db.resolved_dsn(config) as dsn:
        return asyncio.run(serve(config, dsn))


async def prepare_embedded(config: Config, dsn: str) -> None:
    """The embedded database is ours: apply the standalone schema before running."""
    if config.embedded:
        async with db.connection(dsn, config) as conn:
            await schema.init_schema(conn, standalone=True, channel=config.database.channel)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def request_stop(name: str) -> None:
        if not stop.is_set():
            log.info("stop_requested", signal=name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        if sys.platform == "win32":
            # Windows event loops have no add_signal_handler: hop onto the loop from the handler.
            signal.signal(sig, lambda signum, _frame: loop.call_soon_threadsafe(request_stop,
                                                                                signal.Signals(signum).name))
        else:
            loop.add_signal_handler(sig, request_stop, sig.name)


async def serve(config: Config, dsn: str) -> int:
    await prepare_embedded(config, dsn)
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        await Reactor(config, dsn).run(stop)
    except InstanceTaken as exc:
        raise UsageError(str(exc)) from None
    return 0
