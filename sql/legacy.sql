-- The legacy worker's results, adopted in place (reactor.store.legacy): importing their
-- faces (`reactor db import-legacy`) and re-detecting their zero-face rows
-- (`reactor redetect --legacy-zero`). Blocks that read the legacy JSON columns run
-- only on a face_metadata that has them.

-- Legacy results (no model: the reactor did not write them) with faces in the
-- legacy columns and none in face_detections, one keyset page at a time. The JSON
-- is read as text whatever the column's type (text, json or jsonb); run only when
-- both legacy columns exist.
-- name: legacy_to_import
SELECT m.image_path, m.face_count, m.face_locations::text AS boxes, m.face_encodings::text AS encodings,
       reactor_valid_image_path(m.image_path) AS path_valid
FROM face_metadata m
WHERE m.image_path > $1
  AND m.model IS NULL AND coalesce(m.face_count, 0) > 0
  AND NOT EXISTS (SELECT 1 FROM face_detections d WHERE d.image_path = m.image_path)
ORDER BY m.image_path
LIMIT $2;

-- ON CONFLICT: a face row written meanwhile (a run beside this import) stays.
-- name: legacy_insert_face
INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left,
                             score, encoding, model, scale)
SELECT $1, $2, $3, $4, $5, $6, NULL, $7, $8, NULL
WHERE EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = $1 AND m.model IS NULL)
ON CONFLICT (image_path, face_index) DO NOTHING;

-- Zero-face results the reactor did not write: before its fix the legacy worker
-- saved failures as face_count = 0 (seeds/001), so each may hide faces.
-- name: legacy_zero_request
-- Idempotent: a second run adds only what is neither requested nor re-detected.
INSERT INTO reactor_redetect (image_path, reason)
SELECT m.image_path, 'legacy_zero'
FROM face_metadata m
WHERE m.model IS NULL AND m.face_count = 0 AND reactor_valid_image_path(m.image_path)
ON CONFLICT (image_path) DO NOTHING
RETURNING image_path;

-- name: redetect_requested
SELECT count(*)::int FROM reactor_redetect WHERE reason = $1;

-- Where a rerun of the import resumes (reactor.store.legacy_import): the greatest path
-- among the face rows it imported ($1: their model). Pages commit in path order, so
-- every legacy row up to it was examined by an earlier run.
-- name: legacy_resume_point
SELECT max(image_path) FROM face_detections WHERE model = $1::text;

-- Legacy rows with faces not imported yet, after the resume point $1 (this run's work)
-- and up to it (left by an earlier run, or added behind it).
-- name: legacy_not_imported_around
SELECT count(*) FILTER (WHERE m.image_path > $1::text)::int AS after,
       count(*) FILTER (WHERE m.image_path <= $1::text)::int AS before
FROM face_metadata m
WHERE m.model IS NULL AND coalesce(m.face_count, 0) > 0
  AND NOT EXISTS (SELECT 1 FROM face_detections d WHERE d.image_path = m.image_path);
