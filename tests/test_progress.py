import io

from structlog.testing import capture_logs

from reactor.util.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal() -> None:
    clock, out = Clock(), Tty()
    with Progress(400, "sweep", stream=out, clock=clock) as progress:
        clock.now = 10.0
        progress.advance(120)
        assert progress.line() == "sweep [#########---------------------] 120/400 30% 12.0/s eta 23s"
    frames = out.getvalue().split("\r\x1b[2K")
    assert frames[1] == "sweep [#########---------------------] 120/400 30% 12.0/s eta 23s"
    assert frames[-1].endswith("\n")


def test_unknown_total() -> None:
    clock = Clock()
    progress = Progress(None, "scan", mode="off", clock=clock)
    clock.now = 2.0
    progress.advance(5)
    assert progress.line() == "scan 5 2.5/s"


def test_events_when_not_a_terminal() -> None:
    clock = Clock()
    progress = Progress(100, "db init", stream=io.StringIO(), interval=5.0, clock=clock)
    assert progress.mode == "events"
    with capture_logs() as events:
        clock.now = 1.0
        progress.advance(10)  # within the interval: no event yet
        clock.now = 6.0
        progress.advance(20)
        clock.now = 7.0
        progress.advance(70)
        progress.close()
        progress.close()
    progress_events = [e for e in events if e["event"].startswith("progress")]
    assert [(e["event"], e["done"], e["total"], e["percent"]) for e in progress_events] == [
        ("progress", 30, 100, 30.0),
        ("progress_done", 100, 100, 100.0),
    ]
    assert progress_events[0]["label"] == "db init"


async def test_follow_polls_counters() -> None:
    import asyncio
    import contextlib

    from reactor.util.progress import follow

    counters = {"done": 0, "queued": 5}
    progress = Progress(None, "sweep --once", mode="off")
    follower = asyncio.create_task(
        follow(progress, lambda: counters["done"], lambda: counters["done"] + counters["queued"], every=0.01)
    )
    try:
        counters.update(done=3, queued=4)
        deadline = asyncio.get_running_loop().time() + 10
        while (progress.done, progress.total) != (3, 7):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
