"""Vision-database mode: a folder renamed on the share, and in ai_metadata by the upstream
pipeline, keeps its results and its face ids, with no detection (reactor.core.moved). Each
upstream style: UPDATE image_path; INSERT the new rows then DELETE the old; DELETE then
INSERT. A changed photo at a new path is detected. Real database, real files, real
detector, the reactor in this process with its watcher."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from PIL import ImageOps

from reactor.config import Config
from reactor.core import metrics
from reactor.ops import samples
from reactor.util.identity import fingerprint_of_bytes
from tests.reactor_support import add_processed, reported, small_astronaut, wait_until
from tests.test_reactor import HOG, connection, running

PHOTOS = 5


def write_distinct_photos(folder: Path) -> list[str]:
    """Five different photos with one face each (each a different size, so another file)."""
    names = []
    for i in range(PHOTOS):
        size = 240 + 16 * i
        samples.write_jpeg(small_astronaut().resize((size, size)), folder, f"{i:02}.jpg")
        names.append(f"{i:02}.jpg")
    return names


async def snapshot(conn: asyncpg.Connection, folder: str) -> dict[str, tuple[int, tuple[int, ...]]]:
    """file name -> (the result's claim token, its face ids), for the results under ``folder``."""
    rows = await conn.fetch(
        "SELECT m.image_path, m.claim_token, array_agg(d.face_id ORDER BY d.face_index) AS ids "
        "FROM face_metadata m LEFT JOIN face_detections d USING (image_path) "
        "WHERE starts_with(m.image_path, $1) GROUP BY m.image_path, m.claim_token",
        folder + "/",
    )
    return {r["image_path"].split("/", 1)[1]: (r["claim_token"], tuple(r["ids"])) for r in rows}


def detected() -> float:
    return float(metrics.IMAGES_PROCESSED.labels("detected")._value.get())


async def test_a_renamed_folder_keeps_results_and_face_ids_in_every_upstream_style(
    make_config: Callable[..., Config], dsn: str, share: Path
) -> None:
    config = make_config(detector=HOG, images={"register_files": "never"})
    names = write_distinct_photos(share / "album")
    # The counter is the process's: what earlier tests in this worker counted is the start.
    start = detected()
    async with running(config, dsn) as _reactor, connection(dsn) as conn:
        await add_processed(conn, [f"album/{n}" for n in names])

        async def results_in(folder: str) -> bool:
            return len(await snapshot(conn, folder)) == PHOTOS

        await wait_until(lambda: results_in("album"), 120, "the first detection of the album")
        before = await snapshot(conn, "album")
        assert all(len(ids) == 1 for _, ids in before.values()), before
        detections = start + PHOTOS
        await reported(detected, detections, "the album's detections counted")

        async def moved(old: str, new: str, upstream: Callable[[], Awaitable[object]]) -> None:
            os.rename(share / old, share / new)
            await upstream()

            async def followed() -> bool:
                return await results_in(new) and not await snapshot(conn, old)

            await wait_until(followed, 90, f"the results to follow {old} -> {new}")
            assert await snapshot(conn, new) == before, f"{old} -> {new} changed a result or a face id"

        # 1. The upstream renames its rows in place.
        await moved(
            "album",
            "renamed",
            lambda: conn.execute(
                "UPDATE ai_metadata SET image_path = 'renamed/' || substr(image_path, 7) "
                "WHERE starts_with(image_path, 'album/')"
            ),
        )

        # 2. The new rows first, then the old ones go.
        async def insert_then_delete() -> None:
            await add_processed(conn, [f"second/{n}" for n in names])
            await conn.execute("DELETE FROM ai_metadata WHERE starts_with(image_path, 'renamed/')")

        await moved("renamed", "second", insert_then_delete)

        # 3. The old rows go first (the sweep marks their results orphaned), then the new.
        async def delete_then_insert() -> None:
            await conn.execute("DELETE FROM ai_metadata WHERE starts_with(image_path, 'second/')")
            await add_processed(conn, [f"fourth/{n}" for n in names])

        await moved("second", "fourth", delete_then_insert)

        # 4. The upstream first, the share after it: the new paths fail as missing for a
        #    moment, then the watcher sees the files arrive and the results follow.
        await conn.execute(
            "UPDATE ai_metadata SET image_path = 'third/' || substr(image_path, 8) "
            "WHERE starts_with(image_path, 'fourth/')"
        )

        async def missing_first() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM face_detection_failures WHERE starts_with(image_path, 'third/')"
                )
            )

        await wait_until(missing_first, 60, "the new paths to be tried before their files arrive")

        async def no_rows() -> None:
            pass

        await moved("fourth", "third", no_rows)
        assert not await conn.fetchval("SELECT count(*) FROM face_detection_failures")
        assert detected() == detections, "a moved photo was detected again"
        assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE orphaned_at IS NOT NULL") == 0

        # A changed photo at a new path is another photo: detected, with a new face id.
        (share / "changed").mkdir()
        mirrored = ImageOps.mirror(small_astronaut().resize((240, 240)))
        samples.write_jpeg(mirrored, share / "changed", "00.jpg")
        os.remove(share / "third" / "00.jpg")
        await conn.execute("DELETE FROM ai_metadata WHERE image_path = 'third/00.jpg'")
        await add_processed(conn, ["changed/00.jpg"])

        async def changed_detected() -> bool:
            return bool(await snapshot(conn, "changed"))

        await wait_until(changed_detected, 90, "the changed photo's detection")
        token, ids = (await snapshot(conn, "changed"))["00.jpg"]
        assert token != before["00.jpg"][0] and ids != before["00.jpg"][1]
        await reported(detected, detections + 1, "the changed photo's detection count")
    shutil.rmtree(share / "third", ignore_errors=True)


async def test_a_folder_of_a_thousand_results_moves_without_detection(
    make_config: Callable[..., Config], dsn: str, share: Path
) -> None:
    """1,000 results (their files' identity recorded as a detection would) follow an
    UPDATE of their folder's rows. The files are not even images: a detection would fail."""
    count = 1000
    folder = share / "big"
    folder.mkdir()
    rows = []
    for i in range(count):
        data = f"photo {i} ".encode() * (10 + i % 7)
        (folder / f"{i:04}.jpg").write_bytes(data)
        st = (folder / f"{i:04}.jpg").stat()
        rows.append((f"big/{i:04}.jpg", st.st_size, st.st_mtime_ns, fingerprint_of_bytes(data)))
    config = make_config(detector=HOG, images={"register_files": "never"}, sweep={"page_size": 200})
    async with connection(dsn) as conn:
        await add_processed(conn, [r[0] for r in rows])
        await conn.executemany(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1)",
            [(r[0],) for r in rows],
        )
        await conn.executemany(
            "INSERT INTO reactor_file_identity (image_path, size_bytes, mtime_ns, fingerprint) VALUES ($1, $2, $3, $4)",
            rows,
        )
        os.rename(folder, share / "bigger")
        await conn.execute(
            "UPDATE ai_metadata SET image_path = 'bigger/' || substr(image_path, 5) "
            "WHERE starts_with(image_path, 'big/')"
        )
        async with running(config, dsn):

            async def all_moved() -> bool:
                return bool(
                    await conn.fetchval("SELECT count(*) FROM face_metadata WHERE starts_with(image_path, 'bigger/')")
                    == count
                )

            await wait_until(all_moved, 120, "1,000 results to follow their folder")
        assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 0
        assert await conn.fetchval("SELECT count(*) FROM face_metadata") == count
