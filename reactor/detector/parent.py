"""The parent side of the detector: one supervised child process, an async API.

A crash, a hang or a CUDA out-of-memory in dlib kills at most the child, never the reactor:

- per-image timeout: the child is killed, the image gets ``timeout``, a new child serves the next one;
- the child dies on an image (segfault, abort, OOM killer): ``crash`` for that image, new child;
- CUDA out-of-memory: the child is replaced at once and the same image resumes below the
  failed (model, scale) step, because dlib's CUDA state may be broken (dlib issue 1725);
- a batch (``detect_many``, see batching.py) that crashes, hangs or runs out of memory:
  each of its images is detected again alone, so only the image at fault fails;
- children that die at start-up ``max_start_failures`` times in a row: ``DetectorUnavailable``
  and state "unavailable"; the reactor stops taking work and may call ``start()`` later.

Waiting on the pipe never blocks the event loop (``waiting.py``, the same on Linux and Windows),
and the child dies with the reactor however the reactor ends (``lifetime.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from reactor import logs
from reactor.config import DetectorConfig
from reactor.detector import batching, cascade, child, lifetime, memory
from reactor.detector.budget import MemoryBudget
from reactor.detector.prefetch import (
    MAX_PREFETCH_BYTES,
    STREAM_CHUNK_BYTES,
    STREAMED,
    Prefetcher,
    ReadStalled,
    Seen,
    Streamed,
    file_size,
    read_chunk,
)
from reactor.detector.types import (
    DETAIL_ALONE,
    DETAIL_MODEL,
    DETAIL_PIXELS,
    DETAIL_REPLACE_CHILD,
    Detection,
    DetectionFailure,
    DetectionJob,
    DetectorState,
    Outcome,
)
from reactor.detector.waiting import EXIT_GRACE_SECONDS, ChildPipe, describe_exit, reap, receive
from reactor.failure_types import ErrorType
from reactor.util.shareio import ShareIO

log = logs.get("reactor.detector")

# A job this small is sent from the event loop: the child has read every earlier job
# before answering it, so the pipe is empty and a write this size cannot block.
_INLINE_SEND_BYTES = 32 * 1024


class DetectorUnavailable(Exception):
    """The detector child keeps dying at start-up: models missing, CUDA broken, no memory."""


class _StartFailed(Exception):
    pass


class Detector:
    def __init__(
        self, config: DetectorConfig, index: int = 0, device: int | None = None, io: ShareIO | None = None
    ) -> None:
        """``index`` names the child among several (reactor.core.lanes); ``device`` is the CUDA
        device it must use, on a machine with more than one GPU (None: dlib's default)."""
        self._config = config
        self.index = index
        self._device = device
        self._gpus = 0
        self._process: BaseProcess | None = None
        self._conn: ChildPipe | None = None
        self._state = DetectorState.STOPPED
        # True while a job is with the child (sent, answer not read yet).
        self.job_in_child = False
        self._restarts = 0
        self._cuda = False
        # The resident size (MB) of the child killed over detector.max_memory_mb, while its answer is awaited.
        self._over_memory: int | None = None
        self._ever_started = False
        self._lock: asyncio.Lock | None = None
        # Every read of the share on its own threads (reactor.util.shareio); a lone detector
        # (`reactor detect`, `doctor`) has its own.
        self._prefetcher = Prefetcher(io)
        # Images whose outcome came from a batch (for `reactor status`).
        self.batched = 0
        # What the GPU holds, learned from out-of-memory errors; kept across child restarts.
        self.budget = MemoryBudget(config.gpu_budget_file or None)
        # The card the child runs on and the pixels one CNN call may scan there, as it said
        # when it started (None on a CPU-only dlib).
        self.card: str | None = None
        self.card_pixels: int | None = None

    @property
    def state(self) -> DetectorState:
        return self._state

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def cuda(self) -> bool:
        return self._cuda

    @property
    def gpus(self) -> int:
        """CUDA devices the child saw when it last started (0 on a CPU-only dlib)."""
        return self._gpus

    @property
    def batch_limit(self) -> int:
        """How many claimed images ``detect_many`` takes at once (1: no batching)."""
        return batching.batch_limit(self._config, self._cuda)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def prefetch_hits(self) -> int:
        """Images whose bytes were read ahead and used."""
        return self._prefetcher.hits

    def prefetch(self, local_path: str, size: int | None = None, mtime_ns: int | None = None) -> None:
        """Hint: ``local_path`` is the next image. Its bytes are read in a thread now, while
        the current image is being detected, and sent with the job if they are still current.
        ``size``, ``mtime_ns``: the file as the reactor looked at it (then not looked at
        again). Optional and cheap to ignore; only the latest hint is kept."""
        self._prefetcher.start(local_path, _seen(size, mtime_ns))

    def _mutex(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def start(self) -> None:
        """Spawn the child and wait until its models are loaded.

        Raises DetectorUnavailable after max_start_failures children in a row died or
        failed before becoming ready. Calling it again later tries again from zero.
        """
        if self._process is not None:
            return
        self._state = DetectorState.STARTING
        failures = 0
        while True:
            try:
                await self._spawn()
                self._state = DetectorState.READY
                return
            except _StartFailed as exc:
                failures += 1
                log.warning("detector_start_failed", attempt=failures, reason=str(exc))
                if failures >= self._config.max_start_failures:
                    self._state = DetectorState.UNAVAILABLE
                    log.error("detector_unavailable", failures=failures, reason=str(exc))
                    raise DetectorUnavailable(
                        f"the detector process failed to start {failures} times in a row ({exc}); "
                        "run `reactor detect` on one photo to see why (models installed? CUDA working?)"
                    ) from exc
                await asyncio.sleep(min(0.5 * 2 ** (failures - 1), 10.0))

    async def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=child.serve,
            args=(child_conn, self._config, self._device),
            name=f"reactor-detector-{self.index}",
            daemon=True,
        )
        started = time.perf_counter()
        # Started from the event-loop thread on purpose: the child's parent-death signal
        # fires when the *thread* that forked it exits, so no worker thread may do this.
        with child.without_secrets():
            process.start()
        lifetime.adopt(process)
        child_conn.close()  # only the child holds its end now, so its death reads as EOF here
        try:
            kind, payload = await receive(parent_conn, self._config.startup_timeout_seconds)
        except asyncio.CancelledError:
            # Shutdown while the models load: the half-started child must not outlive us.
            process.kill()
            process.join(1.0)
            parent_conn.close()
            raise
        except TimeoutError:
            await reap(process, kill=True)
            parent_conn.close()
            raise _StartFailed(f"not ready within {self._config.startup_timeout_seconds} s") from None
        except (EOFError, OSError):
            code = await reap(process, kill=False)
            parent_conn.close()
            raise _StartFailed(f"the process {describe_exit(code)} while loading models") from None
        if kind != "ready":
            await reap(process, kill=False)
            parent_conn.close()
            raise _StartFailed(str(payload))
        if self._ever_started:
            self._restarts += 1
        self._ever_started = True
        self._process, self._conn = process, parent_conn
        self._cuda = bool(payload.get("cuda", False))
        self._gpus = int(payload.get("gpus", 0))
        card, card_pixels = payload.get("card"), payload.get("card_pixels")
        self.card = card if isinstance(card, str) else None
        self.card_pixels = card_pixels if isinstance(card_pixels, int) else None
        self.budget.use_card(self.card)
        ms = round((time.perf_counter() - started) * 1000)
        gpu = (
            {
                "gpu_memory_mb": payload.get("gpu_memory_mb"),
                "smallest_algorithms": bool(payload.get("smallest_algorithms", False)),
                "batch_limit": self.batch_limit,
                "card": self.card,
                "card_pixels": self.card_pixels,
            }
            if self._cuda
            else {}
        )
        log.info(
            "detector_ready", child=self.index, pid=process.pid, cuda=self._cuda, model=self._config.model, ms=ms, **gpu
        )

    async def detect(self, job: DetectionJob) -> Outcome:
        """Detect faces in one image. Per-image problems come back as DetectionFailure;
        only DetectorUnavailable is raised, when no child can be started."""
        async with self._mutex():
            await self._child_ready()
            self._state = DetectorState.BUSY
            try:
                return await self._detect_with_replacements(job)
            finally:
                self._idle()

    async def read_bytes(self, job: DetectionJob) -> bytes | DetectionFailure | None:
        """The photo's bytes, read as ``detect`` reads them (the read-ahead, or now), for
        parts of it detected by several children (reactor.core.tile_sharing); None where
        they cannot be held here (a file streamed to the child, one that changed)."""
        data = await self._read(job)
        return None if isinstance(data, Streamed) else data

    async def detect_part(self, job: DetectionJob, data: bytes, whole: bool = False) -> Outcome:
        """One part of a photo shared by idle lanes, on bytes already read; ``whole``: the
        photo as ``detect`` does it (the cascade's replacements included), when its parts
        did not agree. Raises as ``detect`` does."""
        async with self._mutex():
            await self._child_ready()
            self._state = DetectorState.BUSY
            try:
                if whole:
                    return await self._detect_with_replacements(job, data)
                return await self._run_within_budget(job, data)
            finally:
                self._idle()

    async def detect_many(self, jobs: Sequence[DetectionJob]) -> list[Outcome]:
        """Detect several images, in one CNN call where they share a detection size
        (batching.py); an outcome per job, in order. Raises as ``detect`` does."""
        if len(jobs) <= 1:
            return [await self.detect(job) for job in jobs]
        async with self._mutex():
            await self._child_ready()
            self._state = DetectorState.BUSY
            try:
                outcomes = await self._run_batch(jobs)
                done: list[Outcome] = []
                for job, outcome in zip(jobs, outcomes, strict=True):
                    if outcome is None:
                        await self._child_ready()
                        self._state = DetectorState.BUSY
                        outcome = await self._detect_with_replacements(job)
                    done.append(outcome)
                return done
            finally:
                self._idle()

    async def _child_ready(self) -> None:
        if self._process is not None and not self._process.is_alive():
            # Killed while idle (the kernel's OOM killer, an operator): not this image's fault.
            await self._discard(reason="died_idle")
        if self._process is None:
            await self.start()

    def _idle(self) -> None:
        if self._state == DetectorState.BUSY:
            self._state = DetectorState.READY if self._process is not None else DetectorState.STOPPED

    async def _detect_with_replacements(self, job: DetectionJob, given: bytes | None = None) -> Outcome:
        outcome = await self._run_within_budget(job, given)
        hops = len(self._config.scales) * 2
        while isinstance(outcome, DetectionFailure) and outcome.details.get(DETAIL_REPLACE_CHILD) == "1":
            await self._discard(reason="cuda_oom")
            models = cascade.models_for(self._config.model, self._cuda)
            failed_model = outcome.details.get(DETAIL_MODEL)
            if (
                hops == 0
                or outcome.scale is None
                or not cascade.has_step_below(models, self._config.scales, outcome.scale, failed_model)
            ):
                return outcome
            hops -= 1
            job = dataclasses.replace(job, last_scale=outcome.scale, last_model=failed_model)
            log.warning("detector_oom_retry", path=job.local_path, below_scale=job.last_scale, model=job.last_model)
            try:
                await self.start()
            except DetectorUnavailable:
                return outcome
            self._state = DetectorState.BUSY
            outcome = await self._run_within_budget(job, given)
        return outcome

    async def _run_within_budget(self, job: DetectionJob, given: bytes | None = None) -> Outcome:
        """Run the job capped by the learned GPU budget, and learn from its outcome.

        The budget lives here, in the parent, so it outlasts the child that a CUDA
        out-of-memory replaces (reactor.detector.budget)."""
        outcome = await self._run(self._capped(job), given)
        self._learn(outcome)
        return outcome

    def _capped(self, job: DetectionJob) -> DetectionJob:
        caps = self.budget.caps()
        return dataclasses.replace(job, max_detect_pixels=tuple(sorted(caps.items()))) if caps else job

    def _learn(self, outcome: Outcome) -> None:
        if isinstance(outcome, Detection) and outcome.detect_size is not None:
            self.budget.succeeded(outcome.model, outcome.detect_size[0] * outcome.detect_size[1])
        elif isinstance(outcome, DetectionFailure) and outcome.details.get(DETAIL_REPLACE_CHILD) == "1":
            # A batch's failure carries the pixels of the whole batch: the memory it needed.
            pixels = outcome.details.get(DETAIL_PIXELS, "")
            if pixels.isdigit():
                self.budget.ran_out(outcome.details.get(DETAIL_MODEL, "cnn"), int(pixels))

    async def _run_batch(self, jobs: Sequence[DetectionJob]) -> list[Outcome | None]:
        """One exchange with the child for several jobs; None where a job must run alone."""
        outcomes: list[Outcome | None] = [None] * len(jobs)
        items: list[tuple[int, DetectionJob, bytes | None]] = []
        capped = [self._capped(job) for job in jobs]
        # Read together: on a network share the reads, not the GPU, would set the pace.
        reads = await asyncio.gather(*(self._read(job, beside=True) for job in capped))
        for index, (job, read) in enumerate(zip(capped, reads, strict=True)):
            if isinstance(read, DetectionFailure):
                outcomes[index] = read
            elif not isinstance(read, Streamed):  # a large file runs alone, streamed
                items.append((index, job, read))
        if len(items) < 2:
            return outcomes  # what is left runs alone, as any single job
        answers = await self._exchange_batch([(job, data) for _, job, data in items])
        replace = False
        for (index, _, _), answer in zip(items, answers, strict=True):
            if answer is None:
                continue
            self._learn(answer)
            if isinstance(answer, DetectionFailure) and answer.details.get(DETAIL_ALONE) == "1":
                replace = replace or answer.details.get(DETAIL_REPLACE_CHILD) == "1"
                continue
            outcomes[index] = answer
            self.batched += 1
        if replace:
            await self._discard(reason="cuda_oom")
        alone = sum(1 for index, _, _ in items if outcomes[index] is None)
        if alone:
            log.warning("detector_batch_split", child=self.index, batch=len(items), alone=alone)
        return outcomes

    async def _exchange_batch(self, items: list[tuple[DetectionJob, bytes | None]]) -> list[Outcome | None]:
        """The child's answers to a batch, in order; None for each one it did not give."""
        conn = self._conn
        assert conn is not None
        answers: list[Outcome | None] = []
        try:
            await self._send(conn, items, sum(len(data or b"") for _, data in items))
            self.job_in_child = True
            # The whole batch is scanned before the first answer comes.
            wait = self._config.timeout_seconds * len(items)
            for _ in items:
                kind, payload = await self._receive(conn, wait)
                if kind != "result" or not isinstance(payload, Detection | DetectionFailure):
                    await self._discard(reason="protocol")
                    break
                answers.append(payload)
                wait = self._config.timeout_seconds
        except TimeoutError:
            await self._discard(reason="timeout")
        except (EOFError, OSError):
            await self._discard(reason="memory" if self._over_memory else "crash")
        except asyncio.CancelledError:
            self._kill_now()
            raise
        finally:
            self.job_in_child = False
        return answers + [None] * (len(items) - len(answers))

    async def _send(self, conn: ChildPipe, message: object, nbytes: int) -> None:
        if nbytes <= _INLINE_SEND_BYTES:
            conn.send(message)
        else:
            # Megabytes through a pipe: written from a thread while the child reads them.
            await asyncio.to_thread(conn.send, message)

    async def _read(self, job: DetectionJob, beside: bool = False) -> bytes | DetectionFailure | Streamed | None:
        """The file's bytes for the child (None: it reads them; STREAMED: too large to hold
        here, streamed to it in chunks), or why it never gets the job. ``beside``: one of
        several read at once (a batch), leaving the read-ahead of the next image alone
        unless it is this one."""
        seen = _seen(job.seen_size, job.seen_mtime_ns)
        try:
            size = (
                seen.size  # looked at on its way in: not again
                if seen is not None
                else await file_size(job.local_path, self._config.timeout_seconds, self._prefetcher.io)
            )
            if size is not None and size > self._config.max_file_bytes:
                # Before a byte is read: a 2 GB file (sparse or not) never reaches memory.
                if not beside or self._prefetcher.hinted(job.local_path):
                    self._prefetcher.discard()
                return DetectionFailure(
                    ErrorType.TOO_LARGE,
                    f"{size} bytes is over detector.max_file_bytes={self._config.max_file_bytes}",
                    file_size_bytes=size,
                )
            if size is not None and size > MAX_PREFETCH_BYTES:
                if not beside or self._prefetcher.hinted(job.local_path):
                    self._prefetcher.discard()
                return STREAMED
            if beside and not self._prefetcher.hinted(job.local_path):
                return await self._prefetcher.read_now(job.local_path, self._config.timeout_seconds, seen)
            return await self._prefetcher.take(job.local_path, self._config.timeout_seconds, seen)
        except ReadStalled as exc:
            # The child never saw this job: it stays, and the next try keeps its scale.
            return DetectionFailure(ErrorType.IO_STALL, str(exc), details={DETAIL_MODEL: self._first_step(job).model})

    async def _run(self, job: DetectionJob, given: bytes | None = None) -> Outcome:
        """One job in the child; ``given``: its bytes, already read."""
        conn = self._conn
        assert conn is not None
        first = self._first_step(job)
        data = given if given is not None else await self._read(job)
        if isinstance(data, DetectionFailure):
            return data
        try:
            if isinstance(data, Streamed):
                await self._send(conn, (job, child.STREAM), 0)
                self.job_in_child = True
                stalled = await self._stream(conn, job.local_path)
                if stalled is not None:
                    # The child waits for the rest: it goes, and the image keeps its scale.
                    await self._discard(reason="io_stall")
                    return DetectionFailure(ErrorType.IO_STALL, str(stalled), details={DETAIL_MODEL: first.model})
            else:
                await self._send(conn, (job, data), len(data or b""))
                self.job_in_child = True
            kind, payload = await self._receive(conn, self._config.timeout_seconds)
        except TimeoutError:
            await self._discard(reason="timeout")
            return DetectionFailure(
                ErrorType.TIMEOUT,
                f"no result within detector.timeout_seconds={self._config.timeout_seconds}; the process was replaced",
                scale=first.scale,
                details={DETAIL_MODEL: first.model},
            )
        except (EOFError, OSError):
            over = self._over_memory
            code = await self._discard(reason="memory" if over else "crash")
            if over:
                return DetectionFailure(
                    ErrorType.OOM,
                    f"the detector process held {over} MB, over detector.max_memory_mb="
                    f"{self._config.max_memory_mb}; it was replaced",
                    scale=first.scale,
                    details={DETAIL_MODEL: first.model},
                )
            return DetectionFailure(
                ErrorType.CRASH,
                f"the detector process {describe_exit(code)} on this image",
                scale=first.scale,
                details={DETAIL_MODEL: first.model, "exitcode": str(code)},
            )
        except asyncio.CancelledError:
            # The child is still working on this job; its late answer would be taken for
            # the next job's, so it goes.
            self._kill_now()
            raise
        finally:
            self.job_in_child = False
        if kind != "result" or not isinstance(payload, Detection | DetectionFailure):
            await self._discard(reason="protocol")
            return DetectionFailure(
                ErrorType.RUNTIME, f"unexpected message from the detector process: {kind!r} {str(payload)[:200]}"
            )
        outcome: Outcome = payload
        return outcome

    async def _receive(self, conn: ChildPipe, seconds: float) -> tuple[str, Any]:
        """The child's next answer, while its resident size is watched: a child over
        detector.max_memory_mb is killed (the caller sees it die, ``_over_memory`` says why).
        A CUDA child has no RLIMIT_AS (reactor.detector.memory), a CPU child on Windows
        neither; on Linux a CPU child's RLIMIT_AS usually strikes first."""
        self._over_memory = None
        process = self._process
        if self._config.max_memory_mb <= 0 or process is None or process.pid is None:
            return await receive(conn, seconds)
        watch = asyncio.ensure_future(self._watch_memory(process.pid))
        try:
            return await receive(conn, seconds)
        finally:
            watch.cancel()

    async def _watch_memory(self, pid: int) -> None:
        limit = self._config.max_memory_mb * 1024 * 1024
        while True:
            await asyncio.sleep(memory.POLL_SECONDS)
            resident = memory.resident_bytes(pid)
            if resident is not None and resident > limit and self._process is not None and self._process.pid == pid:
                self._over_memory = resident // (1024 * 1024)
                log.warning(
                    "detector_child_over_memory", pid=pid, mb=self._over_memory, limit_mb=self._config.max_memory_mb
                )
                self._process.kill()
                return

    async def _stream(self, conn: ChildPipe, path: str) -> ReadStalled | None:
        """A large file to the child in chunks, each read on the share's threads with its
        deadline (reactor.util.shareio), then an empty chunk; the stall if a read hangs.
        The reactor holds one chunk at a time, never the whole file."""
        offset = 0
        limit = self._config.max_file_bytes + 1  # a file that grew meanwhile is cut: too large
        while offset < limit:
            at = offset
            try:
                chunk = await read_chunk(
                    path, at, min(STREAM_CHUNK_BYTES, limit - at), self._config.timeout_seconds, self._prefetcher.io
                )
            except ReadStalled as exc:
                return exc
            if not chunk:
                break
            await asyncio.to_thread(conn.send_bytes, chunk)
            offset += len(chunk)
        conn.send_bytes(b"")
        return None

    def _first_step(self, job: DetectionJob) -> cascade.Step:
        models = cascade.models_for(self._config.model, self._cuda)
        return cascade.plan(models, self._config.scales, job.last_scale, job.last_model)[0]

    async def _discard(self, reason: str) -> int | None:
        """Take the current child out of service; the next detect() starts a new one."""
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if process is None:
            return None
        # A child that timed out or must be replaced is killed; one that crashed is dying already.
        code = await reap(process, kill=reason in ("timeout", "cuda_oom", "protocol", "memory", "io_stall"))
        if conn is not None:
            conn.close()
        log.warning("detector_child_replaced", reason=reason, pid=process.pid, exit=describe_exit(code))
        return code

    def _kill_now(self) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if process is not None and process.is_alive():
            process.kill()
            process.join(1.0)
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Let the current image finish (bounded by the per-image timeout and the time a child
        may take to exit), then stop the child."""
        self._prefetcher.discard()
        try:
            await asyncio.wait_for(self._mutex().acquire(), self._config.timeout_seconds + EXIT_GRACE_SECONDS)
        except TimeoutError:
            self._kill_now()
            self._state = DetectorState.STOPPED
            return
        try:
            process, conn = self._process, self._conn
            self._process, self._conn = None, None
            if process is not None and conn is not None:
                with contextlib.suppress(OSError):  # a child that already died has closed its end
                    conn.send(None)
                code = await reap(process, kill=False)
                conn.close()
                log.info("detector_stopped", pid=process.pid, exit=describe_exit(code))
            self._state = DetectorState.STOPPED
        finally:
            self._mutex().release()


def _seen(size: int | None, mtime_ns: int | None) -> Seen | None:
    return Seen(size, mtime_ns) if size is not None and mtime_ns is not None else None
