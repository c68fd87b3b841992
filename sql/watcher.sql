-- File events from the share, applied to the database (reactor.file_events).
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
