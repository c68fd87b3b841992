"""`reactor similar`: the faces nearest to one face, across the library, in PostgreSQL.

The query is one face of one image (its ``face_id``); the answer is the nearest
faces by L2 distance between their dlib encodings, served by the HNSW index of
sql/vector.sql. dlib's same-person threshold is a distance of 0.6: faces closer than
that are most likely the same person.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from reactor.errors import ReactorError
from reactor.ops.contact_sheet import Box
from reactor.store import vectors
from reactor.store.dbtypes import Conn

SAME_PERSON_DISTANCE = 0.6
# pgvector's HNSW search returns at most ef_search rows; ask for enough.
DEFAULT_EF_SEARCH = 40


class SimilarError(ReactorError):
    """The query cannot be answered; the message says what to do."""


@dataclass(frozen=True)
class FaceRef:
    image_path: str
    face_id: int
    face_index: int
    box: Box
    distance: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "box": list(self.box)}


async def query_face(conn: Conn, path: str, face: int | None) -> FaceRef:
    """Face ``face`` of ``path`` (the only one when ``face`` is None)."""
    _, installed = await vectors.state(conn)
    if installed is None:
        raise SimilarError(
            "similarity search needs the vector extension, which this database does not have; "
            "`reactor db check` says how to install it"
        )
    done = await vectors.has_result(conn, path)
    rows = await vectors.faces_of(conn, path)
    if not done and not rows:
        raise SimilarError(
            f"{path} has no result; check the path (relative to the share root, as in ai_metadata), "
            "or `reactor failures list` for why it has none"
        )
    if not rows:
        raise SimilarError(
            f"{path} has no face rows (0 faces, or legacy faces not imported: `reactor db import-legacy`)"
        )
    if face is None and len(rows) > 1:
        listed = "; ".join(f"--face {r.face_index}: box {list(r.box)}" for r in rows)
        raise SimilarError(f"{path} has {len(rows)} faces; choose one ({listed})")
    index = 0 if face is None else face
    chosen = next((r for r in rows if r.face_index == index), None)
    if chosen is None:
        raise SimilarError(f"{path} has {len(rows)} face(s): --face takes 0 to {len(rows) - 1}, not {index}")
    if not chosen.has_embedding:
        raise SimilarError(f"face {index} of {path} has no embedding yet; `reactor db init` fills them")
    return FaceRef(path, chosen.face_id, chosen.face_index, chosen.box)


async def nearest(conn: Conn, face_id: int, *, limit: int, max_distance: float, exact: bool = False) -> list[FaceRef]:
    """The nearest faces to ``face_id`` within ``max_distance``, closest first.

    ``exact`` scans every face instead of using the index (the benchmark's reference)."""
    rows = await vectors.nearest(conn, face_id, limit=limit, ef_search=max(DEFAULT_EF_SEARCH, limit), exact=exact)
    return [
        FaceRef(r.image_path, r.face_id, r.face_index, r.box, r.distance) for r in rows if r.distance <= max_distance
    ]
