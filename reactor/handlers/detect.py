"""`reactor detect PATH...`: run the detector on files, one JSON line per path.

Nothing is written to the database; this is for trying the detector on a photo, checking
a new dlib build, or seeing why one image fails. Log lines go to stderr so that stdout
holds only the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from reactor.config import Config
from reactor.detector import Detection, DetectionFailure, DetectionJob, Detector, DetectorUnavailable, Outcome
from reactor.failure_types import ADVICE
from reactor.handlers.common import logs_to_stderr

EXIT_SOME_FAILED = 1
EXIT_DETECTOR_UNAVAILABLE = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "detect",
        help="detect faces in image files and print one JSON line per file",
        description="Detect faces in image files with the configured detector and print one JSON line "
        "per path: the faces with boxes and scores, or the typed failure. Exit code 1 if any file failed.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files (local paths)")
    parser.add_argument("--encodings", action="store_true", help="include each face's 128-d encoding")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    detector = Detector(config.detector)
    failed = 0
    try:
        await detector.start()
        absolute = _absolute(args.paths)
        for path, local in zip(args.paths, absolute, strict=True):
            outcome = await detector.detect(DetectionJob(local_path=local))
            failed += isinstance(outcome, DetectionFailure)
            print(json.dumps(as_json(path, outcome, args.encodings, config.detector.min_face_px)), flush=True)
    except DetectorUnavailable as exc:
        print(f"reactor: {exc}", file=sys.stderr)
        return EXIT_DETECTOR_UNAVAILABLE
    finally:
        await detector.close()
    return EXIT_SOME_FAILED if failed else 0


def _absolute(paths: list[str]) -> list[str]:
    # The child may run with another working directory; it gets absolute paths.
    return [os.path.abspath(p) for p in paths]


def as_json(path: str, outcome: Outcome, encodings: bool = False, min_face_px: int | None = None) -> dict[str, Any]:
    """One result line; ``min_face_px`` (detector.min_face_px) adds a note when the pixel
    budget could not reach it on this photo."""
    if isinstance(outcome, Detection):
        faces = []
        for face in outcome.faces:
            item: dict[str, Any] = {
                "top": face.top,
                "right": face.right,
                "bottom": face.bottom,
                "left": face.left,
                "score": round(face.score, 4),
            }
            if encodings:
                item["encoding"] = [round(x, 6) for x in face.encoding]
            faces.append(item)
        result: dict[str, Any] = {
            "path": path,
            "ok": True,
            "face_count": outcome.face_count,
            "faces": faces,
            "model": outcome.model,
            "scale": round(outcome.scale, 4),
            "cascade_scale": outcome.cascade_scale,
            "detect_size": list(outcome.detect_size) if outcome.detect_size else None,
            "upsample": outcome.upsample,
            "min_face_px": outcome.min_face_px,
            "rejected_weak": outcome.rejected_weak,
            "original_size": list(outcome.original_size),
            "file_size_bytes": outcome.file_size_bytes,
            "ms": {
                "decode": round(outcome.decode_ms, 1),
                "detect": round(outcome.detect_ms, 1),
                "encode": round(outcome.encode_ms, 1),
            },
        }
        if min_face_px is not None and outcome.min_face_px is not None and outcome.min_face_px > min_face_px:
            result["note"] = (
                f"faces under {outcome.min_face_px} px cannot be found in this photo: detector.max_detect_pixels "
                f"does not reach detector.min_face_px={min_face_px} at {outcome.original_size[0]}x"
                f"{outcome.original_size[1]}; raise the budget to find smaller faces (slower)"
            )
        return result
    return {
        "path": path,
        "ok": False,
        "error_type": outcome.error_type.value,
        "permanent": outcome.error_type.permanent,
        "message": outcome.message,
        "advice": ADVICE[outcome.error_type],
        "scale": outcome.scale,
        "original_size": list(outcome.original_size) if outcome.original_size else None,
        "file_size_bytes": outcome.file_size_bytes,
    }
