-- A photo moved or renamed on the share, and in ai_metadata, keeps its result and its
-- face ids (reactor.store.moves, reactor.core.moved): a claimed path without a result
-- whose file is one that a vanished result was detected in takes that result over.

-- name: moved_result_candidates
-- Results at other paths whose file had this size and mtime ($1 size, $2 mtime_ns;
-- a NULL mtime_ns was not recorded): the fingerprint decides (reactor.util.identity).
-- registered: whether the old path still has an ai_metadata row (the upstream may
-- insert the new row before it deletes the old one).
SELECT i.image_path, i.fingerprint,
       EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = i.image_path) AS registered
FROM reactor_file_identity i
WHERE i.size_bytes = $1::bigint
  AND (i.mtime_ns IS NULL OR i.mtime_ns = $2::bigint)
  AND i.image_path <> $3::text
ORDER BY i.image_path
LIMIT 32

-- name: move_result
-- The result follows its photo: face rows and the file identity through ON UPDATE
-- CASCADE, so the faces keep their ids. Only while the new path has no result.
-- A row the old path's orphan mark was on is found again: the mark goes.
UPDATE face_metadata m SET image_path = $2::text, orphaned_at = NULL
WHERE m.image_path = $1::text
  AND NOT EXISTS (SELECT 1 FROM face_metadata n WHERE n.image_path = $2::text)
RETURNING m.face_count

-- name: move_request
-- A re-detection asked for the old path applies to the photo at its new path.
UPDATE reactor_redetect SET image_path = $2::text
WHERE image_path = $1::text AND NOT EXISTS (SELECT 1 FROM reactor_redetect q WHERE q.image_path = $2::text)

-- name: moved_cleanup
-- A failure recorded for the new path (a notification before the file arrived) is
-- superseded; a deletion held for the old path is moot: the photo was found.
WITH failure AS (
    DELETE FROM face_detection_failures WHERE image_path = $2::text
)
DELETE FROM reactor_held_deletions WHERE image_path = $1::text
