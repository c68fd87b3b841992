"""`reactor run`: the reactor in the foreground until SIGTERM or SIGINT (Ctrl+C).

The signal handlers only set the stop event; the Reactor then stops taking work,
lets the image in flight finish (or time out) and writes its outcome, releases its
claims and returns, and the command exits 0.

On Windows a service manager (NSSM) stops a console program with Ctrl+C or Ctrl+Break:
SIGINT and SIGBREAK there. Windows event loops have no ``add_signal_handler``, so the
handler is a plain ``signal.signal`` one that hops onto the loop with
``call_soon_threadsafe`` (the Proactor loop wakes for signals: it sets the wakeup fd).
Tests select that path on Linux too (``PORTABLE_SIGNALS_ENV``), so it is not dead code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from reactor import db, logs, schema
from reactor.config import Config
from reactor.service import Reactor

log = logs.get("reactor.run")

# Tests only: "1" installs the Windows signal handlers on Linux.
PORTABLE_SIGNALS_ENV = "REACTOR_TEST_PORTABLE_SIGNALS"


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


def stop_signals() -> list[signal.Signals]:
    if sys.platform == "win32":
        return [signal.SIGINT, signal.SIGBREAK, signal.SIGTERM]
    return [signal.SIGTERM, signal.SIGINT]


def install_stop_signals(stop: asyncio.Event, portable: bool | None = None) -> None:
    loop = asyncio.get_running_loop()
    if portable is None:
        portable = os.environ.get(PORTABLE_SIGNALS_ENV) == "1"

    def request_stop(name: str) -> None:
        if not stop.is_set():
            log.info("stop_requested", signal=name)
        stop.set()

    def on_signal(signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(request_stop, signal.Signals(signum).name)

    for sig in stop_signals():
        if sys.platform == "win32" or portable:
            signal.signal(sig, on_signal)
        else:
            loop.add_signal_handler(sig, request_stop, sig.name)


async def serve(config: Config, dsn: str) -> int:
    await prepare_embedded(config, dsn)
    stop = asyncio.Event()
    install_stop_signals(stop)
    await Reactor(config, dsn).run(stop)
    return 0
