"""Reading one photo into an upright 8-bit RGB array, or a typed failure.

Runs in the detector child. The file is read into memory in one go first, so that an
I/O problem on the share (``unreadable``, ``missing``) is never confused with a damaged
image (``corrupt``) or something that is not an image at all (``unsupported``).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import struct
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from reactor.detector.types import DetectionFailure
from reactor.failure_types import ErrorType
from reactor.util.identity import fingerprint_of_bytes, read_identity

# Leading bytes of formats the reactor accepts: a file that starts like one of these but
# cannot be decoded is a damaged image, anything else is not an image at all.
_SIGNATURES: tuple[bytes, ...] = (
    b"\xff\xd8",  # JPEG
    b"\x89PNG",
    b"GIF8",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"BM",
)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif")

# Orientations 5-8 swap width and height.
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class LoadedImage:
    pixels: np.ndarray  # (height, width, 3) uint8, upright
    original_size: tuple[int, int]  # (width, height) of the full-size oriented image
    file_size_bytes: int
    decode_ms: float
    # The file's mtime when it was read, and its content fingerprint (reactor.util.identity).
    file_mtime_ns: int | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class FileBytes:
    data: bytes
    mtime_ns: int | None


def prepare_pillow() -> None:
    """Process-wide Pillow settings for the child; called once before the first image."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    # face_recognition sets this to True on import, which turns a truncated JPEG into a
    # half-grey picture instead of a `corrupt` failure.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # The pixel guard below uses detector.max_pixels; Pillow's own guard would use its
    # built-in limit and warn or raise before ours could give a typed failure.
    Image.MAX_IMAGE_PIXELS = None


def _looks_like_image(head: bytes) -> bool:
    if head.startswith(_SIGNATURES):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def read_file(path: str) -> FileBytes | DetectionFailure:
    """The whole file, or ``incomplete`` when its size or mtime changed while it was read
    (a copy still under way: the reader must not see a mix of old and new bytes)."""
    try:
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            data = fh.read()
            after = os.fstat(fh.fileno())
    except FileNotFoundError:
        return DetectionFailure(ErrorType.MISSING, f"file not found: {path}")
    except NotADirectoryError:
        return DetectionFailure(ErrorType.MISSING, f"a folder on the path is a file: {path}")
    except IsADirectoryError:
        return DetectionFailure(ErrorType.UNREADABLE, f"is a directory, not a file: {path}")
    except OSError as exc:
        if busy(exc):
            # Held open by another program or client: this file's transient failure.
            return DetectionFailure(ErrorType.UNREADABLE, f"busy: locked by another program: {path} ({exc})")
        if isinstance(exc, PermissionError):
            return DetectionFailure(ErrorType.UNREADABLE, f"permission denied: {path} ({exc.strerror})")
        return DetectionFailure(ErrorType.UNREADABLE, f"cannot read {path}: {exc.strerror or exc}")
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
        return DetectionFailure(
            ErrorType.INCOMPLETE,
            f"changed while being read ({before.st_size} -> {after.st_size} bytes, {len(data)} read): "
            "still being written",
            file_size_bytes=len(data),
            file_mtime_ns=after.st_mtime_ns,
        )
    return FileBytes(data, after.st_mtime_ns)


# Windows: another process holds the file open without sharing, or a byte range locked.
_SHARING_VIOLATIONS = (32, 33)


def busy(exc: OSError) -> bool:
    """The open or read failed because another program or client holds the file."""
    return exc.errno in (errno.EBUSY, errno.ETXTBSY) or getattr(exc, "winerror", None) in _SHARING_VIOLATIONS


def changed_after_read(path: str, data: bytes, mtime_ns: int | None, content: str | None = None) -> str | None:
    """Why the file no longer matches the bytes just read, or None: its size, mtime and
    head/tail fingerprint looked at again right after the read. Through an SMB client a
    copy in progress keeps its final size and a frozen mtime, but its bytes still move.
    ``content``: the bytes' fingerprint, where the caller has it already."""
    now = read_identity(path)
    if now is None:
        return "could not be looked at again after the read"
    if now.size != len(data) or (mtime_ns is not None and now.mtime_ns != mtime_ns):
        return f"changed right after the read ({len(data)} -> {now.size} bytes)"
    if now.fingerprint != (content if content is not None else fingerprint_of_bytes(data)):
        return "its first or last 64 KiB changed right after the read"
    return None


def _prefetched(path: str, data: bytes, mtime_ns: int | None = None) -> FileBytes:
    """Bytes the parent read ahead (it checked size and mtime around its read); ``mtime_ns``:
    the mtime it looked at the file with on its way in, which they were checked against."""
    if mtime_ns is not None:
        return FileBytes(data, mtime_ns)
    try:
        st = os.stat(path)
    except OSError:
        return FileBytes(data, None)
    return FileBytes(data, st.st_mtime_ns if st.st_size == len(data) else None)


def unfinished(data: bytes, decoded: bool = False) -> str | None:
    """Why an image looks cut short rather than damaged, or None.

    A copy in progress ends anywhere: a JPEG then lacks its end-of-image marker (FFD9)
    and a PNG its IEND chunk; some writers pad after the marker (zeros, line ends).
    Other formats cannot tell, and a decode failure of theirs stays ``corrupt``.

    ``decoded``: the decode succeeded. Data after the end marker is then normal (a
    phone's motion photo appends a video, Samsung a trailer), but zeros at the end
    are not, unless the end marker comes right before them: a copy made the way Windows
    Explorer makes it sets the final size first, the part not yet written reads as
    zeros, and a JPEG missing only its last bytes decodes.
    """
    if decoded and not data.endswith(b"\x00"):
        return None
    end = data.rstrip(b"\x00\r\n ")
    if data.startswith(b"\xff\xd8"):
        return None if end[-2:] == b"\xff\xd9" else "JPEG without its end marker (FFD9)"
    if data.startswith(b"\x89PNG"):
        # The IEND chunk: its type, then its CRC, which ends in a byte other than zero.
        return None if end[-8:-4] == b"IEND" else "PNG without its IEND chunk"
    return None


def oriented_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    orientation = image.getexif().get(0x0112, 1)
    if orientation in _TRANSPOSED_ORIENTATIONS:
        return height, width
    return width, height


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to an (h, w, 3) uint8 array."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        # 16-bit and 32-bit greyscale: Pillow's convert("L") clips at 255 instead of scaling.
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
        if mode == "F" and grey.max(initial=0) <= 1.0:
            top = 1.0
        scaled = np.clip(grey * (255.0 / top), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([scaled] * 3, axis=-1))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        # Transparent areas become white, as a viewer shows them, not whatever colour hides under alpha 0.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def load_image(
    path: str,
    target_dimension: Callable[[tuple[int, int]], int],
    max_pixels: int,
    clock: float,
    prefetched: bytes | None = None,
    prefetched_mtime_ns: int | None = None,
) -> LoadedImage | DetectionFailure:
    """Decode ``path`` upright; ``target_dimension(oriented size)`` is the largest side the
    detector will use on it, so a JPEG needing much less is decoded at 1/2, 1/4 or 1/8.

    ``clock`` is the ``time.perf_counter()`` when the job started, for ``decode_ms``;
    ``prefetched`` the file's bytes when the parent already read them, and
    ``prefetched_mtime_ns`` the mtime it looked at the file with on its way in (else the
    file is looked at here for it).

    The file is looked at by path once here, after the read and the decode
    (``changed_after_read``): not the look on the way in again, but the check that the
    bytes are still the file's. Through SMB a copy in progress keeps its size and mtime
    while its bytes move, so only a look after the read can tell.
    """
    read = _prefetched(path, prefetched, prefetched_mtime_ns) if prefetched is not None else read_file(path)
    if isinstance(read, DetectionFailure):
        return read
    loaded = _decode(path, read.data, target_dimension, max_pixels, clock)
    content = fingerprint_of_bytes(read.data)
    if isinstance(loaded, LoadedImage):
        cut = unfinished(read.data, decoded=True) or changed_after_read(path, read.data, read.mtime_ns, content)
    else:
        cut = unfinished(read.data) if loaded.error_type is ErrorType.CORRUPT else None
    if cut is not None:
        # Told apart from damage: the worker retries it soon, and only the same cut
        # file found again unchanged is recorded as corrupt (reactor.store.outcomes).
        # The content's fingerprint is in the message: through SMB a copy in progress
        # keeps its size and mtime, only its bytes tell that it moved on.
        return DetectionFailure(
            ErrorType.INCOMPLETE,
            f"{cut} at {len(read.data)} bytes, mtime_ns {read.mtime_ns}, content {content[:16]}: still being written?",
            file_size_bytes=len(read.data),
            file_mtime_ns=read.mtime_ns,
        )
    if isinstance(loaded, LoadedImage):
        return LoadedImage(
            loaded.pixels,
            loaded.original_size,
            loaded.file_size_bytes,
            loaded.decode_ms,
            read.mtime_ns,
            content,
        )
    return dataclasses.replace(loaded, file_mtime_ns=read.mtime_ns)


def _decode(
    path: str, data: bytes, target_dimension: Callable[[tuple[int, int]], int], max_pixels: int, clock: float
) -> LoadedImage | DetectionFailure:
    size = len(data)
    if size == 0:
        return DetectionFailure(ErrorType.CORRUPT, "empty file (0 bytes)", file_size_bytes=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            # Checked on the header's size before anything else: reading EXIF from a PNG
            # decodes the whole image first, which is exactly what a bomb must not get.
            width, height = image.size
            if width * height > max_pixels:
                return DetectionFailure(
                    ErrorType.TOO_LARGE,
                    f"{width}x{height} is {width * height} pixels, over detector.max_pixels={max_pixels}",
                    original_size=(width, height),
                    file_size_bytes=size,
                )
            width, height = oriented_size(image)
            _draft(image, target_dimension((width, height)), (width, height))
            image.load()
            upright = ImageOps.exif_transpose(image)
            pixels = to_rgb(upright)
    except UnidentifiedImageError:
        kind = ErrorType.CORRUPT if _looks_like_image(data[:16]) else ErrorType.UNSUPPORTED
        what = "a damaged image" if kind is ErrorType.CORRUPT else "not an image Pillow can read"
        return DetectionFailure(kind, f"{what}: {path}", file_size_bytes=size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return DetectionFailure(ErrorType.TOO_LARGE, str(exc), file_size_bytes=size)
    except MemoryError:
        return DetectionFailure(ErrorType.OOM, "out of memory while decoding", file_size_bytes=size)
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.EACCES, errno.ENOENT):
            return DetectionFailure(ErrorType.UNREADABLE, f"I/O error while decoding: {exc}", file_size_bytes=size)
        return DetectionFailure(ErrorType.CORRUPT, f"damaged image: {exc}", file_size_bytes=size)
    except (SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError) as exc:
        # Pillow's plugins signal malformed data with all of these.
        return DetectionFailure(ErrorType.CORRUPT, f"damaged image: {exc!r}", file_size_bytes=size)
    decode_ms = (time.perf_counter() - clock) * 1000.0
    return LoadedImage(pixels=pixels, original_size=(width, height), file_size_bytes=size, decode_ms=decode_ms)


def _draft(image: Image.Image, target_dimension: int, oriented: tuple[int, int]) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 size when the detector needs no more."""
    if image.format != "JPEG" or max(oriented) <= 2 * target_dimension:
        return
    ratio = target_dimension / max(oriented)
    stored_w, stored_h = image.size
    # draft() keeps the result at least this large, so nothing below target is lost.
    image.draft("RGB", (max(1, int(stored_w * ratio) + 1), max(1, int(stored_h * ratio) + 1)))
