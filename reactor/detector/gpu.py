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
