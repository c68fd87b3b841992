"""What the NVIDIA driver says about the GPUs: names and memory, through nvidia-smi.

One home for the query that `reactor doctor` shows and the detector child uses to
decide dlib's algorithm choice on small cards. No CUDA library is loaded here.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    free_mib: int | None
    total_mib: int | None


class GpuQueryFailed(Exception):
    """nvidia-smi is there but did not answer; the message says how it failed."""


def _mib(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def query(timeout: float = 20.0) -> list[Gpu] | None:
    """The GPUs nvidia-smi lists; None when there is no nvidia-smi (no driver, or not NVIDIA)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.free,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GpuQueryFailed(str(exc)) from None
    gpus = []
    for row in out.strip().splitlines():
        name, free, total = (c.strip() for c in row.split(",", 2))
        gpus.append(Gpu(name, _mib(free), _mib(total)))
    return gpus


# GPU memory the MMOD CNN takes per megapixel scanned in one call, beyond the loaded
# models: from the premise the CNN budget was set by (4 Mpx fits a 4 GB card, about
# 3.7 GB free once the CUDA context and the models are loaded), not measured on a card
# yet (bench/gpu_check.sh prints it where a GPU is lent). The learned budget
# (reactor.detector.budget) corrects it at the first out-of-memory.
CNN_MIB_PER_MPX = 850
# Kept back for cuDNN's workspace and the allocator's fragmentation.
RESERVE_MIB = 256


def cnn_pixels(card: Gpu) -> int | None:
    """The pixels one CNN call may scan on ``card``: its free memory when the child has
    loaded its models (what its scans can use), else its total; None when unknown."""
    mib = card.free_mib if card.free_mib is not None else card.total_mib
    if mib is None:
        return None
    return max(0, mib - RESERVE_MIB) * 1_000_000 // CNN_MIB_PER_MPX


def card_key(card: Gpu) -> str:
    """What a learned budget is kept under: the card's model and memory, so the same card
    after a restart (or another of the same kind) starts from what was learned on it."""
    return f"{card.name} {card.total_mib} MiB"
