"""The fingerprint of the detector settings that shape a result.

Every result records it (face_metadata.settings), so that `reactor redetect
--refresh --stale` can take exactly the results made with other settings than
today's. It covers every detector setting except those that only say how the
detector runs (time-outs, restarts, the engine module, guards, process counts):
a setting added later changes what a result means unless it is listed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from reactor.config import DetectorConfig

# Settings that change how detection runs, not what it finds.
OPERATIONAL = frozenset(
    {
        "timeout_seconds",
        "startup_timeout_seconds",
        "max_start_failures",
        "max_pixels",
        "engine",
        "workers",
        "batch_size",
        # The same faces, found by several children side by side.
        "share_idle_lanes",
        "max_file_bytes",
        "prefer_smallest_algorithms_below_mb",
        # A memory limit makes an image fail (oom) or not; it never changes a result.
        "max_memory_mb",
        # Where the learned GPU budget is kept, not what it is.
        "gpu_budget_file",
    }
)
MODELS = ("hog", "cnn")


def settings_fingerprint(config: DetectorConfig, model: str) -> str:
    """The fingerprint of a result made by ``model`` (what ran: hog or cnn, never the
    configuration's "auto", which means either, depending on the machine)."""
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in OPERATIONAL}
    values["model"] = model
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:16]


def current_fingerprints(config: DetectorConfig) -> list[str]:
    """The fingerprints a result made today may have: one per model the configuration
    allows (both with "auto"). A result with another is stale (`redetect --stale`)."""
    models = MODELS if config.model == "auto" else (config.model,)
    return [settings_fingerprint(config, model) for model in models]
