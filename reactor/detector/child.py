"""The detector child process: load the engine once, then serve one job at a time.

Started by ``Detector`` with the multiprocessing spawn context, so it shares no state with
the reactor (no asyncpg sockets, no threads, no CUDA context). The protocol on the pipe:

    child -> parent   ("ready", {"cuda": bool, "pid": int}) once the models are loaded
                      ("failed", "reason") when the engine could not be built
    parent -> child   (DetectionJob, bytes | None), or None to exit; the bytes are the
                      file's content when the parent read it ahead (see prefetch.py)
    child -> parent   ("result", Outcome) for each job
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from reactor.config import DetectorConfig
from reactor.detector import lifetime
from reactor.detector.types import DetectionFailure, DetectionJob, Engine, Outcome
from reactor.errors import ErrorType

# Exit status when the engine cannot be built; the parent counts it as a start-up failure.
EXIT_ENGINE_FAILED = 3


def serve(conn: Connection, config: DetectorConfig) -> None:
    """Entry point of the child process."""
    lifetime.prepare_child()
    try:
        engine = _build(config)
    except BaseException as exc:  # anything, even SystemExit from a library, is a start-up failure
        _send(conn, ("failed", f"{config.engine}: {type(exc).__name__}: {exc}"))
        sys.exit(EXIT_ENGINE_FAILED)
    _send(conn, ("ready", {"cuda": engine.cuda, "pid": os.getpid()}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message is None:
            return
        job, data = message
        _send(conn, ("result", run_one(engine, job, data)))


def _build(config: DetectorConfig) -> Engine:
    module = importlib.import_module(config.engine)
    factory: Any = module.create_engine
    engine: Engine = factory(config)
    return engine


def run_one(engine: Engine, job: DetectionJob, data: bytes | None = None) -> Outcome:
    """The engine's outcome; an exception it lets escape becomes a typed failure, not a dead child."""
    with_bytes = getattr(engine, "detect_prefetched", None)
    try:
        if data is not None and with_bytes is not None:
            outcome: Outcome = with_bytes(job, data)
            return outcome
        return engine.detect(job)
    except MemoryError:
        return DetectionFailure(ErrorType.OOM, "out of memory in the detector process")
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        origin = f" at {where[0].filename}:{where[0].lineno}" if where else ""
        return DetectionFailure(ErrorType.RUNTIME, f"{type(exc).__name__}: {exc}{origin}")


def _send(conn: Connection, message: tuple[str, Any]) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, EOFError, OSError):
        sys.exit(0)  # the parent is gone; nobody is left to tell
