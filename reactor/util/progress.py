"""Progress for long runs (`reactor sweep --once`, `reactor db init`, the demo).

On a terminal: one bar on stderr, redrawn in place at most a few times a second.
Otherwise (a service manager, a pipe, JSON logs): a `progress` log event every
`interval` seconds and one at the end, so a log shipper sees the run advance without
a line per item.

    with Progress(total, "sweep") as progress:
        for page in pages:
            ...
            progress.advance(len(page))

`total` may be None (unknown) or raised later with `set_total`. When the counts live
elsewhere (a worker's `processed`, a queue's length), `follow` polls them:

    with Progress(None, "sweep --once") as progress:
        follower = asyncio.create_task(follow(progress, lambda: worker.processed,
                                              lambda: worker.processed + len(queue)))
        try:
            ...
        finally:
            follower.cancel()
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal, TextIO

from reactor import logs

log = logs.get("reactor.progress")

Mode = Literal["auto", "bar", "events", "off"]
BAR_WIDTH = 30
REDRAW_SECONDS = 0.1


class Progress:
    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        mode: Mode = "auto",
        stream: TextIO | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "events"
        self.mode = mode
        self.interval = interval
        self._clock = clock
        self._started = clock()
        self._last_emit = self._started
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        # On an error the error's own one-line message is what the user reads: end a drawn
        # bar's line so that message starts clean, and claim no "done".
        self._closed = True
        if self.mode == "bar" and self.done:
            self.stream.write("\n")
            self.stream.flush()

    def set_total(self, total: int | None) -> None:
        self.total = total

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        wait = REDRAW_SECONDS if self.mode == "bar" else self.interval
        if now - self._last_emit >= wait:
            self._last_emit = now
            self._emit(final=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.done == 0 and self.total is None:
            return  # nothing was to do (e.g. `db init` on a current schema): nothing to report
        self._emit(final=True)

    # -- rendering -------------------------------------------------------------

    @property
    def rate(self) -> float:
        elapsed = self._clock() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if not self.total or self.done >= self.total or self.rate <= 0:
            return None
        return (self.total - self.done) / self.rate

    def line(self) -> str:
        """The bar as text, e.g. `sweep [#######-------] 120/400 30% 12.0/s eta 23s`."""
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * BAR_WIDTH)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total} {frac:.0%} {self.rate:.1f}/s"
        else:
            text = f"{self.label} {self.done} {self.rate:.1f}/s"
        eta = self.eta_seconds
        if eta is not None:
            text += f" eta {_duration(eta)}"
        return text

    def _emit(self, *, final: bool) -> None:
        if self.mode == "off":
            return
        if self.mode == "bar":
            self.stream.write("\r\x1b[2K" + self.line() + ("\n" if final else ""))
            self.stream.flush()
            return
        percent = round(100 * self.done / self.total, 1) if self.total else None
        log.info(
            "progress_done" if final else "progress",
            label=self.label,
            done=self.done,
            total=self.total,
            percent=percent,
            rate_per_s=round(self.rate, 2),
            eta_s=None if final or self.eta_seconds is None else round(self.eta_seconds),
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


async def follow(
    progress: Progress,
    done: Callable[[], int],
    total: Callable[[], int | None],
    every: float = REDRAW_SECONDS * 2,
) -> None:
    """Advance `progress` from counters that other code updates, until cancelled."""
    while True:
        progress.set_total(total())
        progress.advance(done() - progress.done)
        await asyncio.sleep(every)
