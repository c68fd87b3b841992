"""Failure types: what went wrong with one image, and whether trying again can help.

The type is stored in face_detection_failures.last_error_type. Transient types are
retried with exponential backoff up to retry.max_attempts; permanent types get
retry.max_attempts_permanent tries (one confirmation), invalid_path none.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    MISSING = "missing"  # file not found; trusted only while the share is online
    UNREADABLE = "unreadable"  # permission denied or an I/O error reading the file
    CORRUPT = "corrupt"  # a truncated or damaged image
    INCOMPLETE = "incomplete"  # still being written: cut short, or changed while read
    UNSUPPORTED = "unsupported"  # not an image, or a format Pillow cannot read
    TOO_LARGE = "too_large"  # over detector.max_pixels (decompression-bomb guard) or max_file_bytes
    OOM = "oom"  # out of memory at every scale, CNN and HOG
    TIMEOUT = "timeout"  # over detector.timeout_seconds; the child was replaced
    IO_STALL = "io_stall"  # reading the file from the share stalled; not the detector's fault
    CRASH = "crash"  # the detector child died on this image
    RUNTIME = "runtime"  # any other error raised by the detector
    INVALID_PATH = "invalid_path"  # absolute, '..', derived folder, too long: never opened
    # Recorded by `reactor blacklist`, never by a detection: excluded by a person,
    # overridden by no hint.
    BLACKLISTED = "blacklisted"

    @property
    def permanent(self) -> bool:
        return self in PERMANENT


# Failures about reaching the file, not its content: a file event for the path (the
# file was restored, or its permissions fixed) queues it again even when it is
# permanently failed or backing off.
FILE_ACCESS = frozenset({ErrorType.MISSING, ErrorType.UNREADABLE, ErrorType.IO_STALL})

PERMANENT = frozenset(
    {ErrorType.CORRUPT, ErrorType.UNSUPPORTED, ErrorType.TOO_LARGE, ErrorType.INVALID_PATH, ErrorType.BLACKLISTED}
)

# What each type means and what to do, for the README and `reactor failures list`.
ADVICE: dict[ErrorType, str] = {
    ErrorType.MISSING: "the file is gone from the share; it is retried, then marked orphaned",
    ErrorType.UNREADABLE: "fix the file's permissions for the reactor's user; it is retried",
    ErrorType.CORRUPT: "replace the file; `reactor failures retry PATH` queues it again",
    ErrorType.INCOMPLETE: "still being copied; it is retried after the stability window, and is corrupt "
    "only if found cut short again unchanged",
    ErrorType.UNSUPPORTED: "not an image the detector can read; convert it or ignore it",
    ErrorType.TOO_LARGE: "over detector.max_pixels or max_file_bytes; raise it if the image is genuine",
    ErrorType.OOM: "out of memory at every scale; lower detector.cnn_max_detect_pixels or max_detect_pixels",
    ErrorType.TIMEOUT: "detection took longer than detector.timeout_seconds; it is retried at a smaller scale",
    ErrorType.IO_STALL: "reading the file stalled on the share (a hung mount?); it is retried at the same scale",
    ErrorType.CRASH: "the detector process died on this image; it is retried in a fresh process",
    ErrorType.RUNTIME: "an unexpected detector error; see last_error, it is retried",
    ErrorType.INVALID_PATH: "fix the path in ai_metadata: relative, forward slashes, no '..', no derived folder",
    ErrorType.BLACKLISTED: "excluded by `reactor blacklist`; `reactor failures retry PATH` takes it back",
}
