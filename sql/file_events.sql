-- File events from the share, applied to the database (reactor.store.file_events, for reactor.watch.file_events).
-- A move runs its blocks in one transaction: face_detections follow face_metadata
-- through ON UPDATE CASCADE, so the faces are never detected again. Prefixes end
-- with '/' so that moving "a" never touches "ab/x.jpg".

-- name: has_results
SELECT image_path FROM face_metadata WHERE image_path = ANY($1::text[])

-- name: delete_results
DELETE FROM face_metadata WHERE image_path = $1

-- name: delete_failure
DELETE FROM face_detection_failures WHERE image_path = $1

-- name: delete_registration
-- Standalone mode only: the reactor owns ai_metadata there.
DELETE FROM ai_metadata WHERE image_path = $1

-- name: move_results
-- Run after delete_results on $2: whatever was at the destination was replaced.
UPDATE face_metadata SET image_path = $2 WHERE image_path = $1

-- name: move_failure
UPDATE face_detection_failures SET image_path = $2 WHERE image_path = $1

-- name: clear_registration_target
-- Standalone mode only, before move_registration: the row of a replaced file goes.
DELETE FROM ai_metadata WHERE image_path = $2 AND EXISTS (SELECT 1 FROM ai_metadata WHERE image_path = $1)

-- name: move_registration
UPDATE ai_metadata SET image_path = $2 WHERE image_path = $1

-- name: delete_results_prefix
DELETE FROM face_metadata WHERE starts_with(image_path, $1)

-- name: delete_failures_prefix
DELETE FROM face_detection_failures WHERE starts_with(image_path, $1)

-- name: delete_registrations_prefix
DELETE FROM ai_metadata WHERE starts_with(image_path, $1)

-- name: move_results_prefix
UPDATE face_metadata SET image_path = $2 || substr(image_path, length($1) + 1)
WHERE starts_with(image_path, $1)

-- name: move_failures_prefix
UPDATE face_detection_failures SET image_path = $2 || substr(image_path, length($1) + 1)
WHERE starts_with(image_path, $1)

-- name: move_registrations_prefix
UPDATE ai_metadata SET image_path = $2 || substr(image_path, length($1) + 1)
WHERE starts_with(image_path, $1)

-- name: register_files
-- Standalone mode: a photo found on the share is "processed", so the ai_metadata
-- trigger's NOTIFY drives its detection exactly as upstream rows do.
INSERT INTO ai_metadata (image_path, is_processed)
SELECT p, TRUE FROM unnest($1::text[]) AS t(p)
ON CONFLICT (image_path) DO UPDATE SET is_processed = TRUE
WHERE NOT ai_metadata.is_processed

-- name: unreachable_under
-- Vision mode, a folder moved in on the share: the photos below it whose file could not be
-- reached when they were tried ($2: the file-access failure types), because the upstream's
-- new rows came before the files. A file event takes them past their backoff.
SELECT image_path FROM face_detection_failures
WHERE starts_with(image_path, $1::text) AND last_error_type = ANY($2::text[])

-- name: registered_page
-- Keyset pagination over the registered paths, for the start-up reconciliation.
SELECT image_path FROM ai_metadata WHERE image_path > $1 ORDER BY image_path LIMIT $2

-- name: row_forms
-- Vision mode: the ai_metadata spelling of file names the watcher saw (NFC/NFD variants).
SELECT image_path FROM ai_metadata WHERE image_path = ANY($1::text[])

-- name: record_invalid_names
-- File names that are not valid UTF-8 cannot be registered or stored as they are: each
-- is recorded once as a permanent invalid_path failure, its bytes escaped (\xNN).
INSERT INTO face_detection_failures AS f
    (image_path, retry_count, last_error, last_error_type, last_failure_at, next_retry_after, permanently_failed)
SELECT p, 1, 'the file name is not valid UTF-8; rename the file', 'invalid_path', now(), now(), TRUE
FROM unnest($1::text[]) AS t(p)
ON CONFLICT (image_path) DO NOTHING

-- name: requeue_changed_failures
-- Photos permanently failed as corrupt, unsupported or too_large whose file is no longer
-- the one that failed: a copy caught half-written and finished since. Their failure
-- rows go, so they are detected as new. $1 paths, $2 sizes, $3 mtimes (ns), $4 whether
-- the watcher saw the file change: the only evidence for a row without a recorded mtime.
-- file_mtime_ns and file_size_bytes are optional columns (a legacy table may lack
-- either): read through to_jsonb(f), which has no key for a missing column, so this
-- one block runs on every shape of the table (sql/claims.sql and sql/outcomes.sql do the same).
DELETE FROM face_detection_failures f
USING unnest($1::text[], $2::bigint[], $3::bigint[], $4::bool[]) AS t(p, size, mtime, changed)
WHERE f.image_path = t.p AND f.permanently_failed
  AND f.last_error_type IN ('corrupt', 'unsupported', 'too_large')
  AND CASE WHEN (to_jsonb(f) ->> 'file_mtime_ns') IS NULL THEN t.changed
           ELSE (to_jsonb(f) ->> 'file_mtime_ns')::bigint IS DISTINCT FROM t.mtime
                OR ((to_jsonb(f) ->> 'file_size_bytes') IS NOT NULL
                    AND (to_jsonb(f) ->> 'file_size_bytes')::bigint IS DISTINCT FROM t.size) END
RETURNING f.image_path

-- name: file_identities
-- What the files of these results were when detected (reactor.util.identity, reactor.watch.moves).
SELECT image_path, size_bytes, mtime_ns, fingerprint FROM reactor_file_identity WHERE image_path = ANY($1::text[])
