-- Similarity search over face embeddings (pgvector, sql/vector.sql): `reactor similar`.

-- name: backfill_embeddings
-- Faces written before the embedding column existed, one page per statement.
UPDATE face_detections SET embedding = encoding::vector(128)
WHERE face_id IN (SELECT face_id FROM face_detections WHERE embedding IS NULL LIMIT $1);

-- name: query_faces
-- The faces of the query image, in order.
SELECT face_id, face_index, box_top, box_right, box_bottom, box_left, embedding IS NOT NULL AS has_embedding
FROM face_detections WHERE image_path = $1 ORDER BY face_index;

-- name: nearest_faces
-- The nearest faces to face $1 across the library, by L2 distance on the HNSW index
-- (ORDER BY the distance to a constant is what the index serves).
SELECT d.image_path, d.face_id, d.face_index, d.box_top, d.box_right, d.box_bottom, d.box_left,
       d.embedding <-> q.embedding AS distance
FROM (SELECT embedding FROM face_detections WHERE face_id = $1) AS q,
     LATERAL (SELECT * FROM face_detections f
              WHERE f.face_id <> $1 AND f.embedding IS NOT NULL
              ORDER BY f.embedding <-> q.embedding
              LIMIT $2) AS d
ORDER BY distance;

-- name: missing_embeddings
SELECT count(*)::int FROM face_detections WHERE embedding IS NULL;

-- name: result_of
SELECT face_count FROM face_metadata WHERE image_path = $1;

-- name: search_breadth
-- For this transaction: HNSW returns at most ef_search rows, so ask for the limit.
SELECT set_config('hnsw.ef_search', $1::text, true);

-- name: exact_search
-- For this transaction: no index, every face compared (the benchmark's reference).
SELECT set_config('enable_indexscan', 'off', true);
