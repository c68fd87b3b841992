"""The device check: the reactor's detector on a real GPU, at several batch sizes and budgets.

Run by ``bench/gpu_check.sh`` after it built dlib with CUDA (see bench/README.md); runs
anywhere with ``--quick`` (a CPU-only dlib takes minutes per phone photo, so the quick
run shrinks the photos: it checks the script, not the speed). It needs no database and
no network: the detector (``reactor.detector.Detector``: the supervised child, the
learned budget, batching) is driven directly on

- the sample library (``reactor.ops.samples``): faces found against the expected counts;
- phone-size group photos with known faces (``bench.photos``), once per batch size at the
  default budget, and once per CNN pixel budget; batch 1 at the default budget is the
  baseline that every ratio is against, measured in the same run;
- the same photos on a simulated small card: a helper process holds all but
  ``--card-gib`` of the GPU's memory (PyTorch or CuPy, whichever the machine has), and
  the detector runs with a budget above what fits, with and without dlib's smallest
  algorithms, so the out-of-memory path and the learned budget are exercised for real.

For each run it prints images/s, the ratio to the baseline, recall, GPU memory at peak
(nvidia-smi, sampled every 0.2 s, above what was used before the run), the out-of-memory
count (CUDA out-of-memory child replacements) and the learned budget; the whole result
goes to bench/out/gpu_check.json (and $OUT/gpu_check.json when $OUT is set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import photos
from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionFailure, DetectionJob, Detector, gpu
from reactor.failure_types import ErrorType
from reactor.ops import samples

OUT = Path(__file__).resolve().parent / "out"


def gpu_memory_used() -> int | None:
    """MiB in use on the first GPU (reactor.detector.gpu's nvidia-smi query); None without one."""
    try:
        cards = gpu.query(timeout=10)
    except gpu.GpuQueryFailed:
        return None
    if not cards or cards[0].total_mib is None or cards[0].free_mib is None:
        return None
    return cards[0].total_mib - cards[0].free_mib


class PeakSampler:
    """The highest GPU memory use seen while it runs (a thread polling nvidia-smi)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.before = gpu_memory_used()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            used = gpu_memory_used()
            if used is not None and (self.peak is None or used > self.peak):
                self.peak = used

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def above_before(self) -> int | None:
        return None if self.peak is None or self.before is None else self.peak - self.before


@dataclass
class Run:
    name: str
    images: int = 0
    seconds: float = 0.0
    faces_found: int = 0
    faces_true: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    oom_replacements: int = 0
    batched: int = 0
    peak_gpu_mib: int | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def recall(self) -> float | None:
        return self.faces_found / self.faces_true if self.faces_true else None


async def detect_all(name: str, config: DetectorConfig, truth: list[photos.Photo], rounds: int = 1) -> Run:
    """Every photo through one detector, ``batch_limit`` at a time; the first photo is
    detected once before the clock starts, so that model loading and cuDNN's first
    call are left out."""
    detector = Detector(config)
    await detector.start()
    ready = {"cuda": detector.cuda, "batch_limit": detector.batch_limit, "card": detector.card}
    run = Run(name, ready=ready | {"card_pixels": detector.card_pixels})
    try:
        await detector.detect(DetectionJob(str(truth[0].path)))
        warm_restarts = detector.restarts
        score = photos.Score()
        with PeakSampler() as sampler:
            started = time.perf_counter()
            for _ in range(rounds):
                for i in range(0, len(truth), detector.batch_limit):
                    chunk = truth[i : i + detector.batch_limit]
                    outcomes = await detector.detect_many([DetectionJob(str(p.path)) for p in chunk])
                    for photo, outcome in zip(chunk, outcomes, strict=True):
                        if isinstance(outcome, Detection):
                            score.add(photo.faces, [(f.top, f.right, f.bottom, f.left) for f in outcome.faces])
                        else:
                            score.add(photo.faces, [])
                            kind = outcome.error_type.value
                            run.failures[kind] = run.failures.get(kind, 0) + 1
            run.seconds = time.perf_counter() - started
        run.images = len(truth) * rounds
        run.faces_found, run.faces_true = score.found, score.faces
        run.oom_replacements = detector.restarts - warm_restarts
        run.batched = detector.batched
        run.peak_gpu_mib = sampler.above_before()
        run.budget = detector.budget.snapshot()
    finally:
        await detector.close()
    return run


async def sample_library(config: DetectorConfig, folder: Path) -> dict[str, Any]:
    """The bundled sample photos: found faces against what each should give."""
    library = samples.build_library(folder)
    detector = Detector(config)
    await detector.start()
    wrong: list[str] = []
    started = time.perf_counter()
    try:
        for sample in library:
            outcome = await detector.detect(DetectionJob(str(sample.path)))
            if sample.failure is not None:
                # A cut file is incomplete to the detector; the store records it as corrupt
                # once it is seen again unchanged.
                accepted = (
                    {sample.failure, ErrorType.INCOMPLETE} if sample.failure is ErrorType.CORRUPT else {sample.failure}
                )
                ok = isinstance(outcome, DetectionFailure) and outcome.error_type in accepted
            else:
                ok = isinstance(outcome, Detection) and outcome.face_count == sample.faces
            if not ok:
                got = outcome.face_count if isinstance(outcome, Detection) else outcome.error_type.value
                wrong.append(f"{sample.name}: expected {sample.failure or sample.faces}, got {got}")
    finally:
        await detector.close()
    return {
        "photos": len(library),
        "as_expected": len(library) - len(wrong),
        "seconds": round(time.perf_counter() - started, 1),
        "unexpected": wrong,
    }


HOLDER = """
import sys, time
need = int(sys.argv[1]) * 2**20
try:
    import torch
    free, total = torch.cuda.mem_get_info()
    held = torch.empty(max(0, free - need), dtype=torch.uint8, device="cuda")
except ImportError:
    import cupy
    free, total = cupy.cuda.runtime.memGetInfo()
    held = cupy.empty(max(0, free - need), dtype=cupy.uint8)
print(f"holding {(free - need) >> 20} MiB of {total >> 20} MiB", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def small_card(mib: int) -> Iterator[str]:
    """All but ``mib`` of the GPU's free memory held by another process while inside."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(mib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline().strip()
        if not line.startswith("holding"):
            raise RuntimeError(f"could not hold GPU memory: {line or holder.wait()}")
        yield line
    finally:
        holder.kill()
        holder.wait(10)


def show(run: Run, baseline: float) -> dict[str, Any]:
    row = {
        "run": run.name,
        "images": run.images,
        "images_per_s": round(run.images_per_second, 3),
        "ratio_to_batch_1": round(run.images_per_second / baseline, 3) if baseline else None,
        "recall": None if run.recall is None else round(run.recall, 3),
        "peak_gpu_mib": run.peak_gpu_mib,
        "oom_replacements": run.oom_replacements,
        "batched": run.batched,
        "failures": run.failures,
        "budget": run.budget,
        # What the child made of its card (free memory -> pixels per CNN call), and the
        # GPU memory per Mpx the peak shows: what reactor.detector.gpu.CNN_MIB_PER_MPX assumes.
        "card": run.ready.get("card"),
        "card_pixels": run.ready.get("card_pixels"),
    }
    print(json.dumps(row), flush=True)
    return row


def phone_set(folder: Path, count: int, quick: bool) -> list[photos.Photo]:
    built = photos.build(folder, count, phone=not quick)
    # Quick (a CPU-only dlib): the 1600x1200 photos; on a GPU the 4000x3000 phone photos.
    return built["native"] if quick else built["enlarged"]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    # gpu_budget_file "": each run learns its own budget, none inherits another's.
    base = DetectorConfig(
        model="cnn", timeout_seconds=args.timeout, startup_timeout_seconds=args.timeout, gpu_budget_file=""
    )
    if args.quick:
        # Few pixels, so that a CPU-only CNN takes seconds.
        base = dataclasses.replace(base, cnn_max_detect_pixels=300_000)
    result: dict[str, Any] = {"args": vars(args), "gpus": _cards()}
    print(f"== samples ({base.model}, defaults)", flush=True)
    result["samples"] = await sample_library(
        DetectorConfig(timeout_seconds=args.timeout, gpu_budget_file=""), work / "samples"
    )
    print(json.dumps(result["samples"]), flush=True)
    truth = phone_set(work / "phone", args.count, args.quick)
    rows: list[dict[str, Any]] = []
    # The command must end within the device's limit whatever the build took: each run
    # starts only if one more run of the longest so far still fits. The order puts the
    # baseline first and the out-of-memory path (the small card) right after it.
    deadline = time.monotonic() + args.max_seconds
    longest = 0.0
    baseline = 0.0

    async def measure(name: str, config: DetectorConfig) -> None:
        nonlocal longest, baseline
        if time.monotonic() + longest > deadline:
            print(json.dumps({"run": name, "skipped": f"--max-seconds {args.max_seconds:g} reached"}), flush=True)
            return
        began = time.monotonic()
        run = await detect_all(name, config, truth)
        longest = max(longest, time.monotonic() - began)
        baseline = baseline or run.images_per_second
        rows.append(show(run, baseline))

    print(f"== {len(truth)} photos of {truth[0].path.name}'s size: batch 1, the baseline", flush=True)
    await measure("batch 1", dataclasses.replace(base, batch_size=1))
    if args.card_gib and gpu_memory_used() is not None:
        print(f"== a {args.card_gib} GiB card: budget {args.card_budget}, learned from out-of-memory", flush=True)
        try:
            with small_card(args.card_gib * 1024) as held:
                print(held, flush=True)
                for smallest in (False, True):
                    config = dataclasses.replace(
                        base,
                        cnn_max_detect_pixels=args.card_budget,
                        # The real card is large: force the small-card choice either way.
                        prefer_smallest_algorithms_below_mb=10**7 if smallest else 0,
                    )
                    await measure(
                        f"{args.card_gib} GiB card, smallest algorithms {'on' if smallest else 'off'}", config
                    )
        except RuntimeError as exc:
            print(f"small card skipped: {exc}", flush=True)
    print(f"== batch sizes {[b for b in args.batches if b != 1]} and auto", flush=True)
    for size in args.batches:
        if size != 1:
            await measure(f"batch {size}", dataclasses.replace(base, batch_size=size))
    await measure("batch auto", base)
    print(f"== CNN pixel budgets {args.budgets} (batch auto)", flush=True)
    for pixels in args.budgets:
        await measure(f"budget {pixels}", dataclasses.replace(base, cnn_max_detect_pixels=pixels))
    result["runs"] = rows
    shutil.rmtree(work, ignore_errors=True)
    return result


def _cards() -> list[str] | None:
    with contextlib.suppress(gpu.GpuQueryFailed):
        cards = gpu.query(timeout=10)
        return None if cards is None else [f"{c.name}, {c.total_mib} MiB" for c in cards]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=24, help="phone photos per run")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--budgets", type=int, nargs="+", default=[2_000_000, 4_000_000, 8_000_000, 12_000_000])
    parser.add_argument("--card-gib", type=int, default=4, help="simulated card size; 0 skips it")
    parser.add_argument("--card-budget", type=int, default=12_000_000, help="CNN pixel budget on that card")
    parser.add_argument("--timeout", type=float, default=120.0, help="detector.timeout_seconds")
    parser.add_argument("--quick", action="store_true", help="small photos and budgets (a CPU-only dlib)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=420.0,
        help="start no run that would end after this (gpu_check.sh: what the build left)",
    )
    args = parser.parse_args()
    if args.quick:
        args.count = min(args.count, 4)
        args.batches = [b for b in args.batches if b <= 2] or [1]
        args.budgets = [b for b in args.budgets if b <= 2_000_000][:1]
    result = asyncio.run(main_async(args))
    OUT.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str)
    (OUT / "gpu_check.json").write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text)
    bad = [r["run"] for r in result["runs"] if r["failures"].get(ErrorType.OOM.value)]
    print(f"== done: {len(result['runs'])} runs; runs with photos failed as oom: {bad or 'none'}", flush=True)


if __name__ == "__main__":
    main()
