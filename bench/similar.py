"""Similarity search: `reactor similar`'s query on 100,000 faces, HNSW index against an
exact scan, in the same run on the same database.

The library: real dlib encodings of the sample photos (the astronaut and her copies,
detected here by the reactor's own engine code path through face_recognition), each
repeated with small noise as "the same person" and with large noise as other
people, so that every query has true neighbours within dlib's same-person distance
of 0.6 and many faces beyond it. For each query face it measures the latency of
reactor.ops.similar.nearest with the index and with an exact scan (index scans off),
and the recall of the index against the exact answer at the 0.6 threshold.

    .venv/bin/python -m bench.similar [--faces 100000] [--queries 200] [--limit 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg
import face_recognition
import numpy as np

from bench import common
from reactor.ops import samples, similar
from reactor.store import vectors

# Noise per dimension: two faces of the same person are about 0.4 apart, two people
# about 1.6. About ten faces a person, so that a query's true neighbours fit the limit.
SAME_SIGMA = 0.025
OTHER_SIGMA = 0.1
FACES_PER_PERSON = 10


def seed_encodings() -> np.ndarray:
    """Real encodings: the astronaut at several sizes and the collage."""
    images = [samples.astronaut(), samples.astronaut().resize((256, 256)), samples.collage(samples.astronaut())]
    found = []
    for image in images:
        array = np.asarray(image.convert("RGB"))
        boxes = face_recognition.face_locations(array, number_of_times_to_upsample=1)
        found.extend(face_recognition.face_encodings(array, boxes))
    return np.array(found)


def library(faces: int, rng: np.random.Generator) -> np.ndarray:
    """`faces` encodings of people who are each a real encoding moved far off, with
    about FACES_PER_PERSON faces each a small step from that person."""
    seeds = seed_encodings()
    people = max(1, faces // FACES_PER_PERSON)
    centres = seeds[rng.integers(0, len(seeds), people)] + rng.normal(0, OTHER_SIGMA, (people, 128))
    owners = rng.integers(0, people, faces)
    return centres[owners] + rng.normal(0, SAME_SIGMA, (faces, 128))


async def load(conn: asyncpg.Connection, encodings: np.ndarray) -> None:
    images = [(f"lib/{i // 1000:03d}/{i}.jpg",) for i in range(len(encodings))]
    await conn.copy_records_to_table(
        "face_metadata",
        records=[(p, 1, "hog", 1.0) for (p,) in images],
        columns=["image_path", "face_count", "model", "scale"],
    )
    rows = [
        (p, 0, 0, 10, 10, 0, enc.astype(np.float32).tolist(), "hog", 1.0)
        for (p,), enc in zip(images, encodings, strict=True)
    ]
    await conn.copy_records_to_table(
        "face_detections",
        records=rows,
        columns=[
            "image_path",
            "face_index",
            "box_top",
            "box_right",
            "box_bottom",
            "box_left",
            "encoding",
            "model",
            "scale",
        ],
    )


def run(args: argparse.Namespace) -> dict[str, object]:
    rng = np.random.default_rng(2026)
    encodings = library(args.faces, rng)
    with common.workdir() as work, common.postgres(work) as pg:
        return asyncio.run(measure(pg.dsn, encodings, args))


async def measure(dsn: str, encodings: np.ndarray, args: argparse.Namespace) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        # The embedding trigger fills the vector column as rows arrive; the index
        # is built afterwards, as `reactor db init` does on an existing table.
        await conn.execute("DROP INDEX idx_face_detections_embedding")
        await load(conn, encodings)
        loaded = time.monotonic() - started
        started = time.monotonic()
        await conn.execute(
            "CREATE INDEX idx_face_detections_embedding ON face_detections USING hnsw (embedding vector_l2_ops)"
        )
        await conn.execute("ANALYZE face_detections")
        indexed = time.monotonic() - started
        ids = [
            r["face_id"]
            for r in await conn.fetch("SELECT face_id FROM face_detections ORDER BY random() LIMIT $1", args.queries)
        ]
        timings: dict[str, list[float]] = {"hnsw": [], "exact": []}
        found = expected = 0
        for face_id in ids:
            answers = {}
            for name, exact in (("exact", True), ("hnsw", False)):
                t0 = time.perf_counter()
                rows = await similar.nearest(
                    conn, face_id, limit=args.limit, max_distance=similar.SAME_PERSON_DISTANCE, exact=exact
                )
                timings[name].append((time.perf_counter() - t0) * 1000)
                answers[name] = {r.face_id for r in rows}
            expected += len(answers["exact"])
            found += len(answers["exact"] & answers["hnsw"])
        plan = await conn.fetch("EXPLAIN " + vectors.SEARCH.nearest_faces, ids[0], args.limit)
    finally:
        await conn.close()
    p50 = {k: round(common.percentile(v, 50), 2) for k, v in timings.items()}
    p95 = {k: round(common.percentile(v, 95), 2) for k, v in timings.items()}
    return {
        "faces": args.faces,
        "queries": len(ids),
        "limit": args.limit,
        "load_seconds": round(loaded, 1),
        "index_build_seconds": round(indexed, 1),
        "hnsw_p50_ms": p50["hnsw"],
        "hnsw_p95_ms": p95["hnsw"],
        "exact_p50_ms": p50["exact"],
        "exact_p95_ms": p95["exact"],
        "speedup_p50": round(p50["exact"] / p50["hnsw"], 1) if p50["hnsw"] else None,
        "neighbours_within_0.6": expected,
        "recall_at_0.6": round(found / expected, 4) if expected else None,
        "plan": [r[0] for r in plan],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=20)
    result = run(parser.parse_args())
    common.report("similar", result, skip=("plan",))
    print("plan:", *result["plan"], sep="\n  ")  # type: ignore[misc]


if __name__ == "__main__":
    main()
