"""How many photos go through one CNN call: the rules of ``detector.batch_size``.

dlib's ``cnn_face_detection_model_v1`` takes a list of images of one size and scans them
together, which on a GPU is 1.1x to 4.5x faster than one at a time, depending on the card
and the size. Its memory grows with the pixels of the whole batch, so "auto" fits as many
photos of one detection size as the card holds (its memory from nvidia-smi: a 4 GB card
one phone photo, an 11 GB card three, a large card AUTO_MAX_BATCH; the configured
``cnn_max_detect_pixels`` where the card is not known), or less where the learned GPU
budget says so. On a CPU-only
dlib batching gains nothing and is off, unless a number forces it (the tests do).

A batch that crashes, hangs or runs out of memory is not any one photo's fault: each of
its photos is detected again on its own (``DETAIL_ALONE``), so that one bad photo still
fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from reactor.config import DetectorConfig

# With "auto", at most this many photos per call: beyond it a batch wins little on any
# card, and a hang or crash costs this many photos a second try.
AUTO_MAX_BATCH = 8

T = TypeVar("T")


def batch_limit(config: DetectorConfig, cuda: bool) -> int:
    """How many claimed photos the parent sends to the child at once."""
    if config.batch_size != "auto":
        return config.batch_size
    return AUTO_MAX_BATCH if cuda else 1


def per_call(
    config: DetectorConfig, cuda: bool, pixels_each: int, learned_cap: int | None, card_pixels: int | None = None
) -> int:
    """How many photos of ``pixels_each`` detection pixels one CNN call may scan: as many as
    the card holds (``card_pixels``, from its memory: reactor.detector.gpu.cnn_pixels; not
    known: ``cnn_max_detect_pixels``), within what the card was learned to hold."""
    limit = batch_limit(config, cuda)
    if config.batch_size != "auto" or limit == 1:
        return limit
    budget = config.cnn_max_detect_pixels if card_pixels is None else card_pixels
    if learned_cap is not None:
        budget = min(budget, learned_cap)
    return max(1, min(limit, budget // max(1, pixels_each)))


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    size = max(1, size)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
