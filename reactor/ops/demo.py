"""`reactor demo`: the whole reactor on a small library, end to end, in one command.

It writes sample photos that ship inside scikit-image (the astronaut, a collage of
four faces, an EXIF-rotated copy, a HEIC copy, the cat and the coffee cup with no
face, a corrupt JPEG) into a demo folder, starts the embedded PostgreSQL in that
folder, registers the photos in ai_metadata as processed (as the upstream pipeline,
or the watcher in standalone mode, does), runs the reactor until every photo has a
result or a failure, and writes a summary and a contact sheet with every face boxed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reactor import logs
from reactor.config import Config, ConfigError
from reactor.failure_types import ErrorType
from reactor.ops import contact_sheet, samples
from reactor.store import db, demo, file_events, schema
from reactor.util.progress import Progress

log = logs.get("reactor.demo")

# The library, by sample name (reactor.ops.samples); the order is the contact sheet's.
LIBRARY = (
    "astronaut.jpg",
    "collage_2x2.jpg",
    "astronaut_exif6.jpg",
    "astronaut.heic",
    "cat.jpg",
    "coffee.jpg",
    "bad/truncated.jpg",
)
# A folder holding this file was made by the demo, so a new run may replace it.
FOLDER_MARKER = ".reactor-demo"
SHARE_MARKER = ".reactor-share"
DATABASE_DIR = "pgdata"
POLL_SECONDS = 0.25


class DemoError(ConfigError):
    """A demo problem the user can fix; one line, exit 2."""


@dataclass
class DemoReport:
    images: int
    done: int
    seconds: float
    results: dict[str, int]
    failures: dict[str, str]
    expected: dict[str, int | str]
    boxes_drawn: int
    contact_sheet: str

    @property
    def faces(self) -> int:
        return sum(self.results.values())

    def actual(self, name: str) -> int | str | None:
        return self.results.get(name, self.failures.get(name))

    @property
    def as_expected(self) -> bool:
        return all(self.actual(name) == want for name, want in self.expected.items())

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "faces": self.faces, "as_expected": self.as_expected}


def demo_config(base: Config, out: Path) -> Config:
    """The user's detector and retry settings; the demo's own database, share and ports."""
    return dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, dsn="", embedded_dir=str(out / DATABASE_DIR)),
        images=dataclasses.replace(
            base.images, root=str(out / "library"), marker=SHARE_MARKER, require_mount=False, register_files="always"
        ),
        # A reactor may already serve the configured health port on this machine.
        health=dataclasses.replace(base.health, enabled=False),
        service=dataclasses.replace(base.service, instance_id="demo"),
        source=f"{base.source} + demo",
    )


def prepare_folder(out: Path) -> None:
    """An empty or earlier demo folder is (re)made; anything else is refused.

    The database folder is kept: a new run empties the tables instead (`demo_reset`),
    which is faster than initdb and never races a server that is still shutting down.
    """
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / FOLDER_MARKER).exists()):
            raise DemoError(f"{out} exists and was not made by `reactor demo`; pass --out with a new folder")
        for child in out.iterdir():
            if child.name == DATABASE_DIR:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / FOLDER_MARKER).write_text("made by `reactor demo`; safe to delete\n")


def build_library(root: Path) -> list[samples.Sample]:
    built = samples.build_library(root, include=lambda name: name in LIBRARY)
    (root / SHARE_MARKER).write_text("face-reactor share marker (demo)\n")
    order = {name: i for i, name in enumerate(LIBRARY)}
    return sorted(built, key=lambda s: order[s.name])


async def _wait_done(dsn: str, config: Config, paths: list[str], run: asyncio.Task[None], limit_seconds: float) -> int:
    conn = await db.connect(dsn, config)
    try:
        deadline = time.monotonic() + limit_seconds
        with Progress(len(paths), "demo") as progress:
            while True:
                done = await demo.outcomes_done(conn, paths)
                progress.advance(done - progress.done)
                if done >= len(paths) or time.monotonic() > deadline:
                    return done
                if run.done():
                    # The reactor ended early: surface its exception (or stop waiting).
                    run.result()
                    return done
                await asyncio.sleep(POLL_SECONDS)
    finally:
        await conn.close()


async def run_demo(base: Config, out: Path, limit_seconds: float) -> DemoReport:
    """Run the demo in `out` (an absolute path); give up waiting after `limit_seconds`."""
    from reactor.core.service import Reactor

    prepare_folder(out)
    config = demo_config(base, out)
    library = build_library(out / "library")
    paths = [s.name for s in library]
    started = time.monotonic()
    with db.resolved_dsn(config, embedded_on_purpose=True) as dsn:
        await schema.prepare_embedded(config, dsn)
        async with db.connection(dsn, config) as conn:
            await demo.reset(conn)
            await file_events.register(conn, paths)
        stop = asyncio.Event()
        reactor = Reactor(config, dsn)
        run = asyncio.create_task(reactor.run(stop), name="demo-reactor")
        try:
            done = await _wait_done(dsn, config, paths, run, limit_seconds)
        finally:
            stop.set()
            await run
        async with db.connection(dsn, config) as conn:
            results, failures, boxes = await demo.outcomes(conn, paths)
    seconds = round(time.monotonic() - started, 1)
    items = [
        contact_sheet.SheetItem(s.name, s.path, boxes.get(s.name, ()), failures.get(s.name), s.note)
        for s in library
        if s.name in results or s.name in failures
    ]
    sheet = out / "contact_sheet.png"
    title = f"face-reactor demo: {len(results)} images detected, {sum(results.values())} faces, {len(failures)} failed"
    drawn = await asyncio.to_thread(contact_sheet.render, items, sheet, title)
    expected = {
        name: (want.value if isinstance(want, ErrorType) else want) for name, want in samples.expected(library).items()
    }
    report = DemoReport(
        images=len(paths),
        done=done,
        seconds=seconds,
        results=results,
        failures=failures,
        expected=expected,
        boxes_drawn=drawn,
        contact_sheet=str(sheet),
    )
    (out / "summary.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
    log.info("demo_done", images=len(paths), done=done, faces=report.faces, failures=len(failures), seconds=seconds)
    return report


def render_summary(report: DemoReport, out: Path) -> str:
    lines = [f"face-reactor demo: {report.done} of {report.images} images done in {report.seconds:.1f} s"]
    width = max(len(name) for name in report.expected)
    for name, want in report.expected.items():
        got = report.actual(name)
        shown = (
            "no outcome"
            if got is None
            else (f"{got} face" + ("" if got == 1 else "s") if isinstance(got, int) else f"failed: {got}")
        )
        verdict = "as expected" if got == want else f"UNEXPECTED (expected {want})"
        lines.append(f"  {name.ljust(width)}  {shown:<16} {verdict}")
    lines.append(f"faces found: {report.faces}; failures: {len(report.failures)}")
    lines.append(f"contact sheet: {report.contact_sheet} ({report.boxes_drawn} faces boxed)")
    lines.append(f"summary:       {out / 'summary.json'}")
    # An empty DSN selects the embedded database even when config.toml names a server.
    lines.append(
        f"explore:       REACTOR_DATABASE__DSN= REACTOR_DATABASE__EMBEDDED_DIR={out / DATABASE_DIR} reactor status"
    )
    return "\n".join(lines)
