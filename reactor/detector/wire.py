"""What the detector child may say to the reactor, as plain JSON, checked field by field.

The child runs third-party code on untrusted images; the parent holds the database. So
the parent never unpickles what the child sends (unpickling runs arbitrary code): each
message is one JSON document of primitives, at most ``MAX_MESSAGE_BYTES``, and becomes a
Detection or DetectionFailure only if every field has the expected type and range.
Anything else is a protocol error (the child is replaced, the image gets ``runtime``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from reactor.detector.types import Detection, DetectionFailure, Face
from reactor.failure_types import ErrorType

# 1,000 faces of 128 floats fit comfortably; more is not a photo the reactor will store.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_FACES = 1000
MAX_TEXT = 4000
KINDS = ("ready", "failed", "result")


class BadMessage(ValueError):
    """A message from the child that is not one the protocol allows."""


def encode(kind: str, payload: Any) -> bytes:
    if isinstance(payload, Detection):
        body: Any = {"detection": _detection(payload)}
    elif isinstance(payload, DetectionFailure):
        body = {"failure": _failure(payload)}
    else:
        body = payload
    return json.dumps({"kind": kind, "payload": body}, allow_nan=False).encode()


def _detection(d: Detection) -> dict[str, Any]:
    return {
        "faces": [[f.top, f.right, f.bottom, f.left, f.score, list(f.encoding)] for f in d.faces],
        "model": d.model,
        "scale": d.scale,
        "original_size": list(d.original_size),
        "decode_ms": d.decode_ms,
        "detect_ms": d.detect_ms,
        "encode_ms": d.encode_ms,
        "file_size_bytes": d.file_size_bytes,
        "cascade_scale": d.cascade_scale,
        "upsample": d.upsample,
        "rejected_weak": d.rejected_weak,
        "detect_size": list(d.detect_size) if d.detect_size else None,
        "min_face_px": d.min_face_px,
        "file_mtime_ns": d.file_mtime_ns,
        "fingerprint": d.fingerprint,
    }


def _failure(f: DetectionFailure) -> dict[str, Any]:
    return {
        "error_type": f.error_type.value,
        "message": f.message[:MAX_TEXT],
        "scale": f.scale,
        "original_size": list(f.original_size) if f.original_size else None,
        "file_size_bytes": f.file_size_bytes,
        "file_mtime_ns": f.file_mtime_ns,
        "details": {str(k): str(v)[:MAX_TEXT] for k, v in f.details.items()},
    }


def decode(raw: bytes) -> tuple[str, Any]:
    """(kind, payload) with the payload validated; BadMessage otherwise."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message of {len(raw)} bytes")
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or message.get("kind") not in KINDS:
        raise BadMessage("no known kind")
    kind, payload = message["kind"], message.get("payload")
    if kind == "ready":
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("cuda"), bool)
            or not _int(payload.get("pid"))
            or not _int(payload.get("gpus", 0), 0, 1024)
            or not (payload.get("gpu_memory_mb") is None or _int(payload.get("gpu_memory_mb")))
            or not isinstance(payload.get("smallest_algorithms", False), bool)
            or not (payload.get("card_pixels") is None or _int(payload.get("card_pixels")))
            or not (payload.get("card") is None or _short_text(payload.get("card")))
        ):
            raise BadMessage(
                "ready: expected cuda, gpus, pid, gpu_memory_mb, smallest_algorithms, card and card_pixels"
            )
        ready = {"cuda": payload["cuda"], "gpus": payload.get("gpus", 0), "pid": payload["pid"]}
        # What a CUDA child decided at start (reactor.detector.engine), when it says so.
        keys = ("gpu_memory_mb", "smallest_algorithms", "card", "card_pixels")
        ready.update({k: payload[k] for k in keys if k in payload})
        return kind, ready
    if kind == "failed":
        return kind, _text(payload, "failed")
    if isinstance(payload, dict) and set(payload) == {"detection"}:
        return kind, _to_detection(payload["detection"])
    if isinstance(payload, dict) and set(payload) == {"failure"}:
        return kind, _to_failure(payload["failure"])
    raise BadMessage("result: expected a detection or a failure")


def _int(value: Any, low: int = 0, high: int = 2**62) -> bool:
    return type(value) is int and low <= value <= high


def _optional_mtime(value: Any) -> bool:
    # An mtime in nanoseconds may be before 1970 (negative) on a badly set share.
    return value is None or _int(value, -(2**62), 2**62)


def _optional_fingerprint(value: Any) -> bool:
    # reactor.util.identity's fingerprint: a short hex digest.
    return value is None or (isinstance(value, str) and len(value) <= 128 and value.isalnum())


def _num(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _short_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT * 4:
        raise BadMessage(f"{what}: expected text")
    return value


def _size(value: Any, what: str) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2 or not all(_int(v) for v in value):
        raise BadMessage(f"{what}: expected [width, height]")
    return value[0], value[1]


def _to_detection(d: Any) -> Detection:
    if not isinstance(d, dict):
        raise BadMessage("detection: expected an object")
    faces_raw = d.get("faces")
    if not isinstance(faces_raw, list) or len(faces_raw) > MAX_FACES:
        raise BadMessage("detection: expected a list of faces")
    faces = []
    for f in faces_raw:
        if not (
            isinstance(f, list)
            and len(f) == 6
            and all(_int(v, -(2**31), 2**31) for v in f[:4])
            and _num(f[4])
            and isinstance(f[5], list)
            # No encoding: a box located in a part of a shared photo, encoded after the merge
            # (reactor.detector.tiles); the database takes only 128 (face_detections' CHECK).
            and len(f[5]) in (0, 128)
            and all(_num(x) for x in f[5])
        ):
            raise BadMessage("detection: a face is not [top, right, bottom, left, score, 128 floats]")
        faces.append(Face(f[0], f[1], f[2], f[3], float(f[4]), tuple(float(x) for x in f[5])))
    numbers = ("scale", "decode_ms", "detect_ms", "encode_ms", "cascade_scale")
    if (
        not all(_num(d.get(k)) for k in numbers)
        or d.get("model") not in ("hog", "cnn")
        or not _int(d.get("upsample"), 0, 8)
        or not _int(d.get("rejected_weak"))
        or not (d.get("file_size_bytes") is None or _int(d.get("file_size_bytes")))
        or not (d.get("min_face_px") is None or _int(d.get("min_face_px")))
        or not _optional_mtime(d.get("file_mtime_ns"))
        or not _optional_fingerprint(d.get("fingerprint"))
    ):
        raise BadMessage("detection: a field has the wrong type")
    detect_size = d.get("detect_size")
    return Detection(
        faces=tuple(faces),
        model=d["model"],
        scale=float(d["scale"]),
        original_size=_size(d.get("original_size"), "detection"),
        decode_ms=float(d["decode_ms"]),
        detect_ms=float(d["detect_ms"]),
        encode_ms=float(d["encode_ms"]),
        file_size_bytes=d["file_size_bytes"],
        cascade_scale=float(d["cascade_scale"]),
        upsample=d["upsample"],
        rejected_weak=d["rejected_weak"],
        detect_size=None if detect_size is None else _size(detect_size, "detection"),
        min_face_px=d.get("min_face_px"),
        file_mtime_ns=d.get("file_mtime_ns"),
        fingerprint=d.get("fingerprint"),
    )


def _to_failure(f: Any) -> DetectionFailure:
    if not isinstance(f, dict):
        raise BadMessage("failure: expected an object")
    try:
        error_type = ErrorType(str(f.get("error_type")))
    except ValueError:
        raise BadMessage("failure: unknown error type") from None
    details = f.get("details")
    if (
        not isinstance(details, dict)
        or len(details) > 20
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in details.items())
    ):
        raise BadMessage("failure: details must map text to text")
    scale, size, file_size = f.get("scale"), f.get("original_size"), f.get("file_size_bytes")
    if (
        not (scale is None or _num(scale))
        or not (file_size is None or _int(file_size))
        or not _optional_mtime(f.get("file_mtime_ns"))
    ):
        raise BadMessage("failure: a field has the wrong type")
    return DetectionFailure(
        error_type,
        _text(f.get("message"), "failure")[:MAX_TEXT],
        scale=None if scale is None else float(scale),
        original_size=None if size is None else _size(size, "failure"),
        file_size_bytes=file_size,
        details={k[:100]: v[:MAX_TEXT] for k, v in details.items()},
        file_mtime_ns=f.get("file_mtime_ns"),
    )
