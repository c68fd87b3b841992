"""Failure types: what went wrong with one image, and what each type does next.

The type is stored in face_detection_failures.last_error_type. What a type does is
asked of the type itself, never of a list kept by its caller: how many tries it gets
(``tries_allowed``: transient types retry.max_attempts, permanent ones
retry.max_attempts_permanent, one confirmation, invalid_path none), whether the next
try starts at a lower scale (``scales_down``), whether a file event takes it back
(``file_access``), whether the file may be arriving (``may_be_arriving``), whether it
waits for a file still being written (``settling``) and what it becomes when that file
stops changing (``unchanged_becomes``). When it is tried again is the retry policy's
(reactor.util.backoff).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reactor.config import RetryConfig


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

    @classmethod
    def parse(cls, value: str | None) -> ErrorType | None:
        """The type a failure row names; None for none, or for a type this version does not
        know (a legacy row's, or a later version's)."""
        try:
            return cls(value) if value is not None else None
        except ValueError:
            return None

    @property
    def permanent(self) -> bool:
        return self in PERMANENT

    def tries_allowed(self, retry: RetryConfig) -> int:
        """How many failed tries make the image permanently failed: an invalid path is never
        opened again, a permanent type gets one confirmation (by default), the rest
        retry.max_attempts."""
        if self is ErrorType.INVALID_PATH:
            return 1
        if self.permanent:
            return max(1, retry.max_attempts_permanent)
        return max(1, retry.max_attempts)

    @property
    def scales_down(self) -> bool:
        """A failure of the resources the image needed: the next try starts below the scale
        that failed (reactor.store.claims.Claim.last_scale)."""
        return self in (ErrorType.OOM, ErrorType.TIMEOUT)

    @property
    def file_access(self) -> bool:
        """A failure to reach the file, not of its content (FILE_ACCESS): believed only while
        the share is online, and taken back by a file event for its path."""
        return self in FILE_ACCESS

    @property
    def may_be_arriving(self) -> bool:
        """The file was not found: it may be arriving this moment (a folder moved in just as
        its upstream rows were tried), so the loop looks once more after the failure is written."""
        return self is ErrorType.MISSING

    @property
    def settling(self) -> bool:
        """The file is still being written: tried again after the share's stability window,
        without counting a try (sql/outcomes.sql record_incomplete), and not logged as failed."""
        return self is ErrorType.INCOMPLETE

    @property
    def unchanged_becomes(self) -> ErrorType | None:
        """What a failure of this type is when its file is found exactly as at its last try of
        this type: a file cut short that stopped changing is corrupt, not a copy in progress."""
        return ErrorType.CORRUPT if self is ErrorType.INCOMPLETE else None


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
