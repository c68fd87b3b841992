-- `reactor failures`, `reactor blacklist` (reactor.store.failures_admin).
-- Only the columns every legacy copy of face_detection_failures has are used here
-- (seeds/000, seeds/001); permanently_failed may be NULL on legacy rows, hence IS TRUE.
-- Legacy copies keep their times as `timestamp without time zone`; every time read
-- from them is cast to timestamptz, which takes it as the server's TimeZone setting
-- (the zone the legacy worker's CURRENT_TIMESTAMP defaults wrote it in): a no-op on a
-- timestamptz column, and Python always gets an aware datetime.

-- name: failures_list
-- $1: error type or NULL for all; $2: only permanently failed ones.
SELECT image_path,
       coalesce(last_error_type, 'unknown') AS error_type,
       coalesce(retry_count, 0) AS retry_count,
       permanently_failed IS TRUE AS permanent,
       next_retry_after::timestamptz AS next_retry_after,
       last_failure_at::timestamptz AS last_failure_at,
       coalesce(last_error, '') AS last_error
FROM face_detection_failures
WHERE ($1::text IS NULL OR last_error_type = $1::text)
  AND (NOT $2::boolean OR permanently_failed IS TRUE)
ORDER BY image_path;

-- name: failures_retry_paths
-- Clearing the backoff: due now, not permanent, and a fresh count of tries, so a
-- failure that returns is retried with the full schedule again.
UPDATE face_detection_failures
SET next_retry_after = now(), permanently_failed = FALSE, retry_count = 0
WHERE image_path = ANY($1::text[])
RETURNING image_path;

-- name: failures_retry_type
-- Never the blacklist, as for failures_retry_all: only its paths, named, take it back.
UPDATE face_detection_failures
SET next_retry_after = now(), permanently_failed = FALSE, retry_count = 0
WHERE last_error_type = $1::text AND last_error_type <> 'blacklisted'
RETURNING image_path;

-- name: failures_retry_all
-- Every failure but the blacklist: a person excluded those one by one, and only
-- naming them (`reactor failures retry PATH`) takes them back.
UPDATE face_detection_failures
SET next_retry_after = now(), permanently_failed = FALSE, retry_count = 0
WHERE last_error_type IS DISTINCT FROM 'blacklisted'
RETURNING image_path;

-- name: failures_forget
DELETE FROM face_detection_failures
WHERE image_path = ANY($1::text[])
RETURNING image_path;

-- name: blacklist_fence_claims
-- First, so that a detection in flight cannot undo the blacklist: its result or
-- failure write finds no claim for its token and is fenced (never written). Under READ
-- COMMITTED this waits for a write that already released the claim to commit, and the
-- next statement then sees (and drops) its result.
DELETE FROM reactor_claims
WHERE image_path = ANY($1::text[]);

-- name: blacklist_drop_results
-- An image is in one state: a blacklisted image keeps no results (its face rows cascade).
DELETE FROM face_metadata
WHERE image_path = ANY($1::text[]);

-- name: blacklist_upsert
INSERT INTO face_detection_failures AS f
    (image_path, retry_count, last_error, last_error_type, permanently_failed,
     first_failure_at, last_failure_at, next_retry_after)
SELECT p, 0, $2::text, 'blacklisted', TRUE, now(), now(), 'infinity'::timestamptz
FROM unnest($1::text[]) AS p
ON CONFLICT (image_path) DO UPDATE
SET last_error = EXCLUDED.last_error,
    last_error_type = 'blacklisted',
    permanently_failed = TRUE,
    last_failure_at = now(),
    next_retry_after = 'infinity'::timestamptz
RETURNING f.image_path;

-- name: notify_retry
-- Wakes a running reactor: the trigger's payload format, with type "manual" so the
-- image is queued at the manual (highest) priority.
SELECT pg_notify($1::text, json_build_object('type', 'manual', 'path', p)::text)
FROM unnest($2::text[]) AS p;

-- name: notify_bulk
-- Too many paths for one notification each: the trigger's "run the sweep" hint.
SELECT pg_notify($1::text, json_build_object('type', 'bulk', 'count', $2::int)::text);
