"""A stand-in reactor for the lifetime test: start a detector child, make it hang in the
engine on one photo, and wait to be killed.

    python -m tests.orphan_parent PHOTO

Prints ``child=PID`` on a line of its own once the child is ready (log lines go to stdout too).
"""

from __future__ import annotations

import asyncio
import sys

from reactor.config import DetectorConfig
from reactor.detector import DetectionJob, Detector


async def main(photo: str) -> None:
    detector = Detector(DetectorConfig(engine="tests.fault_engine", timeout_seconds=3600.0))
    await detector.start()
    print(f"child={detector.pid}", flush=True)
    await detector.detect(DetectionJob(local_path=photo))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
