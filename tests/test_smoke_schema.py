import asyncpg


async def test_template_has_tables(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert {"face_metadata", "face_detections", "face_detection_failures", "reactor_claims", "ai_metadata"} <= tables
