"""`reactor similar PATH`: the faces nearest to one face of PATH, across the library."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from reactor.config import Config
from reactor.handlers.common import above_zero, db_paths, logs_to_stderr, whole
from reactor.ops import contact_sheet, similar
from reactor.paths import PathMapper
from reactor.store import db


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "similar",
        help="list the faces nearest to a face, across the library",
        description="The faces nearest to one face of PATH by the distance between their encodings "
        "(dlib's same-person threshold is 0.6). Needs the vector extension (`reactor db check`).",
    )
    parser.add_argument("path", metavar="PATH", help="the image, as in ai_metadata (or a file under the share root)")
    parser.add_argument("--face", type=whole(0), help="which face of PATH, by index (needed when it has several)")
    parser.add_argument("--limit", type=whole(1), default=20, help="at most this many faces (default 20)")
    parser.add_argument(
        "--max-distance",
        type=above_zero,
        default=similar.SAME_PERSON_DISTANCE,
        help=f"only faces this close (default {similar.SAME_PERSON_DISTANCE})",
    )
    parser.add_argument("--sheet", metavar="FILE.png", help="also draw the query face and its matches as crops")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=similar_command)


def similar_command(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    mapper = PathMapper.for_images(config.images)
    # A local path must be under the share root; a stored path is looked up as given (a
    # result may sit under a path that today's settings would refuse, e.g. a later derived folder).
    (path,) = db_paths(config, [args.path], strict=os.path.isabs(args.path))
    with db.resolved_dsn(config) as dsn:
        query, matches = asyncio.run(_search(dsn, config, path, args))
    if args.sheet:
        _draw(mapper, Path(args.sheet), query, matches)
    if args.json:
        print(json.dumps({"query": query.as_dict(), "matches": [m.as_dict() for m in matches]}))
        return 0
    print(f"query: {query.image_path} face {query.face_index} (face id {query.face_id}) box {list(query.box)}")
    for m in matches:
        print(f"{m.distance:.3f}  {m.image_path}  face {m.face_index}  id {m.face_id}  box {list(m.box)}")
    if not matches:
        print(f"no other face within {args.max_distance}")
    return 0


async def _search(
    dsn: str, config: Config, path: str, args: argparse.Namespace
) -> tuple[similar.FaceRef, list[similar.FaceRef]]:
    async with db.connection(dsn, config) as conn:
        query = await similar.query_face(conn, path, args.face)
        matches = await similar.nearest(conn, query.face_id, limit=args.limit, max_distance=args.max_distance)
    return query, matches


def _draw(mapper: PathMapper, out: Path, query: similar.FaceRef, matches: list[similar.FaceRef]) -> None:
    items = [
        contact_sheet.SheetItem(
            Path(query.image_path).name, Path(mapper.to_local(query.image_path)), crop=query.box, note="query"
        ),
        *(
            contact_sheet.SheetItem(
                Path(m.image_path).name,
                Path(mapper.to_local(m.image_path)),
                crop=m.box,
                note=f"distance {m.distance:.3f}",
            )
            for m in matches
        ),
    ]
    readable = [item for item in items if item.path.is_file()]
    contact_sheet.render(readable, out, f"faces like {query.image_path} face {query.face_index}")
