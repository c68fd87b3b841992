"""The GPU memory budget, learned from out-of-memory errors.

dlib's CNN needs memory in proportion to the pixels it scans, and a modest card (4 GB)
runs out well below a phone photo's size. The parent keeps, per model, the largest
pixel count that succeeded and the smallest that ran out of memory, and caps each new
image's detection size by what was learned: after the first few images an
out-of-memory is rare, instead of once per photo. The budget lives in the parent, so
it survives the child restart that follows every CUDA out-of-memory (dlib issue 1725),
and it is kept per card (its model and memory, reactor.detector.gpu.card_key) in a
small JSON state file (``detector.gpu_budget_file``), so a restart of the reactor starts
from what was learned on that card, and another card starts afresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reactor import logs

log = logs.get("reactor.detector")

# Below the smallest size that ran out, by this factor: freed GPU memory is not always
# released at once (dlib issue 2537), so the size right under a failure is not safe.
SAFETY = 0.85


@dataclass
class ModelBudget:
    largest_ok: int = 0
    smallest_oom: int | None = None

    def cap(self, wanted: int) -> int:
        if self.smallest_oom is None:
            return wanted
        return min(wanted, max(self.largest_ok, int(self.smallest_oom * SAFETY)))


class MemoryBudget:
    """Per model: what fitted and what did not, in pixels scanned (after upsampling)."""

    def __init__(self, path: str | None = None) -> None:
        """``path``: the state file the budget of each card is kept in; None keeps nothing."""
        self._models: dict[str, ModelBudget] = {}
        self._path = Path(path) if path else None
        self._card: str | None = None

    def use_card(self, card: str | None) -> None:
        """The card the child found (None: no CUDA card). The same card again (a child
        replaced after an out-of-memory) keeps what was learned; another card starts from
        what the state file kept for it, or afresh."""
        if card == self._card:
            return
        self._card = card
        self._models = {}
        if card is None or self._path is None:
            return
        kept = _read(self._path).get(card)
        for model, state in (kept if isinstance(kept, dict) else {}).items():
            if isinstance(state, dict) and _pixels(state.get("largest_ok_pixels")) is not None:
                self._models[str(model)] = ModelBudget(
                    _pixels(state.get("largest_ok_pixels")) or 0, _pixels(state.get("smallest_oom_pixels"))
                )
        if self._models:
            log.info("gpu_budget_loaded", card=card, path=str(self._path), **self.snapshot())

    def cap(self, model: str, wanted: int) -> int:
        """The pixel count to start an image at: ``wanted``, or less where it ran out before."""
        return self._models.get(model, ModelBudget()).cap(wanted)

    def caps(self) -> dict[str, int]:
        """The learned limit of each model that ever ran out of memory (for the child's job)."""
        return {m: b.cap(2**62) for m, b in self._models.items() if b.smallest_oom is not None}

    def succeeded(self, model: str, pixels: int) -> None:
        budget = self._models.setdefault(model, ModelBudget())
        if pixels > budget.largest_ok:
            budget.largest_ok = pixels
            if budget.smallest_oom is not None:
                self._changed(model, "success")

    def ran_out(self, model: str, pixels: int) -> None:
        budget = self._models.setdefault(model, ModelBudget())
        if budget.smallest_oom is None or pixels < budget.smallest_oom:
            budget.smallest_oom = pixels
            # What fitted before may not fit now (fragmentation): stay below this failure.
            budget.largest_ok = min(budget.largest_ok, int(pixels * SAFETY))
            self._changed(model, "out_of_memory")

    def snapshot(self) -> dict[str, dict[str, int | None]]:
        return {
            m: {
                "largest_ok_pixels": b.largest_ok,
                "smallest_oom_pixels": b.smallest_oom,
                "cap_pixels": b.cap(2**62) if b.smallest_oom is not None else None,
            }
            for m, b in sorted(self._models.items())
        }

    def _changed(self, model: str, reason: str) -> None:
        state = self.snapshot()[model]
        log.info("gpu_budget_changed", model=model, reason=reason, **state)
        self._save()

    def _save(self) -> None:
        if self._card is None or self._path is None:
            return
        kept = _read(self._path)
        kept[self._card] = {
            m: {"largest_ok_pixels": b.largest_ok, "smallest_oom_pixels": b.smallest_oom}
            for m, b in sorted(self._models.items())
        }
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            partial = self._path.with_name(self._path.name + ".partial")
            partial.write_text(json.dumps(kept, indent=1, sort_keys=True))
            os.replace(partial, self._path)
        except OSError as exc:
            # Only the next start is slower to learn: not a reason to stop detecting.
            log.warning("gpu_budget_not_kept", path=str(self._path), error=str(exc))


def _read(path: Path) -> dict[str, Any]:
    try:
        kept = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("gpu_budget_unreadable", path=str(path), error=str(exc))
        return {}
    return kept if isinstance(kept, dict) else {}


def _pixels(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None
