-- `reactor redetect`: re-detection on demand (reactor.store.redetect, for reactor.handlers.redetect). A selection
-- is one of: paths, a folder prefix, a failure type, a model, or everything (all
-- NULL). Paths that break the path rule are never requested (`reactor audit` deals
-- with those).

-- name: request_results
-- --refresh / --reset: one durable request per selected result ($1 batch, $2 mode;
-- $3 paths, $4 prefix, $5 failure type, $6 model; $7, when given, keeps only results
-- made with other detector settings than these fingerprints, today's for each model
-- the configuration allows: --stale). A request already waiting takes the newer batch
-- and mode. Requests that would never be taken are withdrawn right after, with their
-- reason (pending_states).
INSERT INTO reactor_redetect AS q (image_path, reason, mode)
SELECT m.image_path, $1::text, $2::text
FROM face_metadata m
WHERE reactor_valid_image_path(m.image_path)
  AND ($3::text[] IS NULL OR m.image_path = ANY($3::text[]))
  AND ($4::text IS NULL OR starts_with(m.image_path, $4::text))
  AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM face_detection_failures f
                                   WHERE f.image_path = m.image_path AND f.last_error_type = $5::text))
  AND ($6::text IS NULL OR m.model IS NOT DISTINCT FROM $6::text)
  AND ($7::text[] IS NULL OR NOT coalesce(m.settings = ANY($7::text[]), false))
ON CONFLICT (image_path) DO UPDATE
    SET reason = EXCLUDED.reason, mode = EXCLUDED.mode, requested_at = now();

-- name: retry_missing
-- --missing: selected images without a result whose failure waits for its next try
-- ($1 paths, $2 prefix, $3 failure type): due now. A blacklisted image stays
-- blacklisted; an invalid path stays refused.
UPDATE face_detection_failures f
SET next_retry_after = now(), permanently_failed = FALSE, retry_count = 0
WHERE NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = f.image_path)
  AND f.last_error_type IS DISTINCT FROM 'blacklisted'
  AND f.last_error_type IS DISTINCT FROM 'invalid_path'
  AND ($1::text[] IS NULL OR f.image_path = ANY($1::text[]))
  AND ($2::text IS NULL OR starts_with(f.image_path, $2::text))
  AND ($3::text IS NULL OR f.last_error_type = $3::text);

-- name: pending_selected
-- --missing: processed images with neither result nor failure (the sweep queues them).
SELECT count(*)::int
FROM ai_metadata a
WHERE a.is_processed
  AND NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = a.image_path)
  AND NOT EXISTS (SELECT 1 FROM face_detection_failures f WHERE f.image_path = a.image_path)
  AND ($1::text[] IS NULL OR a.image_path = ANY($1::text[]))
  AND ($2::text IS NULL OR starts_with(a.image_path, $2::text));

-- name: pending_states
-- Why each request of batch $2 not answered yet waits (a success removes the request;
-- a failure recorded since it was asked answers it too), and each named path of $1
-- too (the paths a request names that have no result). The first three states are
-- never taken by the sweep (pending_images needs a processed row and no failure;
-- due_retries leaves permanent failures alone): `reactor redetect` refuses them and
-- says why, instead of waiting. backing_off is taken at next_retry_after; waiting is
-- for the running reactor. A legacy failure time without a time zone is read in the
-- server's TimeZone.
SELECT r.image_path,
       CASE
           WHEN f.permanently_failed AND f.last_error_type = 'blacklisted' THEN 'blacklisted'
           WHEN f.permanently_failed THEN 'permanently_failed'
           WHEN NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = r.image_path AND a.is_processed)
               THEN 'not_processed'
           WHEN f.next_retry_after > now() THEN 'backing_off'
           ELSE 'waiting'
       END AS state
FROM (
    SELECT p AS image_path, NULL::timestamptz AS requested_at FROM unnest($1::text[]) AS p
    UNION ALL
    SELECT q.image_path, q.requested_at FROM reactor_redetect q WHERE q.reason = $2::text
) AS r
LEFT JOIN face_detection_failures f ON f.image_path = r.image_path
WHERE NOT coalesce(f.last_failure_at::timestamptz >= r.requested_at, false)

-- name: withdraw
-- Requests of batch $1 that will never be taken (pending_states), by path ($2).
DELETE FROM reactor_redetect WHERE reason = $1::text AND image_path = ANY($2::text[]);

-- name: without_result
-- Named paths that have no result to detect again.
SELECT array_agg(p ORDER BY p) FROM unnest($1::text[]) AS p
WHERE NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = p);

-- name: missing_refused
-- --missing: selected images it will not retry ($1 paths, $2 prefix, $3 failure
-- type), with why: a blacklisted or invalid path failure, or a named path that is not
-- processed in ai_metadata (the sweep takes only processed images).
SELECT f.image_path, f.last_error_type AS state
FROM face_detection_failures f
WHERE NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = f.image_path)
  AND f.last_error_type IN ('blacklisted', 'invalid_path')
  AND ($1::text[] IS NULL OR f.image_path = ANY($1::text[]))
  AND ($2::text IS NULL OR starts_with(f.image_path, $2::text))
  AND ($3::text IS NULL OR f.last_error_type = $3::text)
UNION ALL
SELECT p, 'not_processed'
FROM unnest($1::text[]) AS p
WHERE NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = p AND a.is_processed)
  AND NOT EXISTS (SELECT 1 FROM face_detection_failures f
                  WHERE f.image_path = p AND f.last_error_type IN ('blacklisted', 'invalid_path'))
ORDER BY 1;

-- name: cancel
-- --cancel: selected requests are withdrawn; the results stay as they are.
DELETE FROM reactor_redetect q
WHERE ($1::text[] IS NULL OR q.image_path = ANY($1::text[]))
  AND ($2::text IS NULL OR starts_with(q.image_path, $2::text));
