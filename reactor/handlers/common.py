"""Pieces several command handlers share (handlers never import each other).

Stop signals: on Windows a service manager (NSSM) stops a console program with Ctrl+C
or Ctrl+Break: SIGINT and SIGBREAK there. Windows event loops have no
``add_signal_handler``, so the handler is a plain ``signal.signal`` one that hops onto
the loop with ``call_soon_threadsafe`` (the Proactor loop wakes for signals: it sets
the wakeup fd). Tests select that path on Linux too (``PORTABLE_SIGNALS_ENV``), so it
is not dead code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

from reactor import logs
from reactor.config import Config
from reactor.core.service import Reactor, default_instance_id
from reactor.core.sweep import SweepCounts
from reactor.errors import UsageError
from reactor.ops import audit
from reactor.paths import InvalidPath, PathMapper
from reactor.store import advice, db, schema
from reactor.store.dbtypes import Conn
from reactor.store.errors import MissingTable, NoPrivilege, StoreUnavailable, UnwritableSchema
from reactor.util.progress import Progress, follow

log = logs.get("reactor.run")

# Tests only: "1" installs the Windows signal handlers on Linux.
PORTABLE_SIGNALS_ENV = "REACTOR_TEST_PORTABLE_SIGNALS"


def logs_to_stderr(args: argparse.Namespace, config: Config, level: str | None = None) -> None:
    """For commands whose stdout is data (a table, JSON, SQL): log lines (the embedded
    database starting and stopping, a repair applied) go to stderr, never into it.

    `level` replaces logging.level (not --log-level) for commands whose own output says enough.
    """
    logs.configure(
        fmt=getattr(args, "log_format", None) or config.logging.format,
        level=getattr(args, "log_level", None) or level or config.logging.level,
        stream=sys.stderr,
    )


@contextlib.contextmanager
def database_problems(config: Config) -> Iterator[None]:
    """What the database did to a command becomes one line with the next step, not a
    traceback: a missing table, column or privilege, or a server that went away.
    ``reactor.cli.main`` runs every command inside it."""
    try:
        yield
    except MissingTable as exc:
        raise UsageError(
            f"{exc}: the reactor's schema is not in this database; run `reactor db init` "
            "(`reactor db check` lists what is missing)"
        ) from None
    except NoPrivilege as exc:
        grants = advice.grants(db.configured_role(config))
        raise UsageError(f"{exc}; {grants} (`reactor doctor` lists what is missing)") from None
    except UnwritableSchema as exc:
        raise UsageError(
            f"{exc}: the database is not as the reactor needs it; `reactor db check` says what to do"
        ) from None
    except StoreUnavailable as exc:
        raise db.DatabaseUnavailable(
            f"the database connection broke or stopped answering during the command ({exc}); "
            "check the server (`reactor doctor`), then run the command again"
        ) from None


def db_paths(config: Config, raw: Sequence[str], *, strict: bool) -> list[str]:
    """Database paths from the command line: a relative path as stored, a local path under
    the share root converted. ``strict``: an invalid path is one line; else it is kept as
    given (a failure may be recorded under a path the reactor would refuse)."""
    mapper = PathMapper.for_images(config.images)
    out: list[str] = []
    for arg in raw:
        local = os.path.isabs(arg) or arg.startswith("\\\\")
        try:
            out.append(mapper.to_db(arg) if local else mapper.validate(arg.replace(os.sep, "/")))
        except InvalidPath as exc:
            if strict:
                hint = "give the path as stored (relative to the share root) or a file under it"
                raise UsageError(f"{exc}; {hint}") from None
            out.append(arg)
    return out


def whole(minimum: int) -> Callable[[str], int]:
    """An option's type: a whole number of at least ``minimum`` (argparse says which option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def above_zero(text: str) -> float:
    """An option's type: a number above 0 (seconds, a distance)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def zero_or_more(text: str) -> float:
    """An option's type: 0 (which the option's help says the meaning of) or more."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """The options `reactor audit` and `reactor repair` share."""
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    parser.add_argument("--sample", type=whole(0), default=5, metavar="N", help="rows shown per check (default 5)")
    parser.add_argument(
        "--skip-files", action="store_true", help="do not stat every result's file (slow on a large network share)"
    )


@dataclass(frozen=True)
class ShareAndDatabase:
    """What audit, repair and deletions start from: the share's state and a connection."""

    conn: Conn
    online: bool
    reason: str | None


@contextlib.asynccontextmanager
async def share_and_database(args: argparse.Namespace, config: Config) -> AsyncIterator[ShareAndDatabase]:
    """Logs to stderr, whether the share is online (a missing file is believed only then),
    and a connection, closed (and an embedded database stopped) on the way out."""
    logs_to_stderr(args, config)
    online, reason = audit.share_state(config)
    with db.resolved_dsn(config) as dsn:
        async with db.connection(dsn, config) as conn:
            yield ShareAndDatabase(conn, online, reason)


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


@dataclass(frozen=True)
class HereOutcome:
    counts: SweepCounts
    processed: int
    instance_id: str


async def sweep_once_here(config: Config, dsn: str, label: str) -> HereOutcome:
    """One sweep and everything it queued, processed in this process (no daemon needed);
    SIGTERM or Ctrl-C stops it gracefully, the image in flight written."""
    await schema.prepare_embedded(config, dsn)
    stop = asyncio.Event()
    install_stop_signals(stop)
    # An id of its own: beside a daemon with the configured id, the daemon's claims are
    # never taken over (claims of one's own id may be re-taken) nor released at exit.
    own_id = f"{config.service.instance_id or default_instance_id()}:once:{os.getpid()}"
    reactor = Reactor(config, dsn, instance_id=own_id)
    with Progress(None, label) as progress:
        # The lanes exist only once run_once has connected; until then nothing is done.
        # An image taken from the queue is in flight (claimed, detected or being written)
        # until its outcome is written: count it, or the total runs one or two short.
        follower = asyncio.create_task(
            follow(
                progress,
                lambda: reactor.lanes.processed if reactor.started else 0,
                lambda: (
                    reactor.lanes.processed + len(reactor.queue) + len(reactor.lanes.in_flight)
                    if reactor.started
                    else None
                ),
            )
        )
        try:
            counts = await reactor.run_once(stop)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        # The last poll may predate the last write: end on the run's own counts.
        processed = reactor.lanes.processed
        progress.set_total(counts.queued)
        progress.advance(processed - progress.done)
    return HereOutcome(counts, processed, reactor.instance_id)
