-- `reactor redetect`: re-detection on demand (reactor.handlers.redetect). A selection
-- is one of: paths, a folder prefix, a failure type, a model, or everything (all
-- NULL). Paths that break the path rule are never requested (`reactor audit` deals
-- with those).

-- name: request_results
-- --refresh / --reset: one durable request per selected result ($1 batch, $2 mode;
-- $3 paths, $4 prefix, $5 failure type, $6 model; $7, when given, keeps only results
-- made with other detector settings than this fingerprint: --stale). A request
-- already waiting takes the newer batch and mode.
INSERT INTO reactor_redetect AS q (image_path, reason, mode)
SELECT m.image_path, $1::text, $2::text
FROM face_metadata m
WHERE reactor_valid_image_path(m.image_path)
  AND ($3::text[] IS NULL OR m.image_path = ANY($3::text[]))
  AND ($4::text IS NULL OR starts_with(m.image_path, $4::text))
  AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM face_detection_failures f
                                   WHERE f.image_path = m.image_path AND f.last_error_type = $5::text))
  AND ($6::text IS NULL OR m.model IS NOT DISTINCT FROM $6::text)
  AND ($7::text IS NULL OR m.settings IS DISTINCT FROM $7::text)
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

-- name: remaining
-- Requests of one batch not yet answered: no success (which removes the request) and
-- no failure recorded since it was asked. A legacy failure time without a time zone
-- is read in the server's TimeZone.
SELECT count(*)::int
FROM reactor_redetect q
WHERE q.reason = $1
  AND NOT EXISTS (SELECT 1 FROM face_detection_failures f
                  WHERE f.image_path = q.image_path AND f.last_failure_at::timestamptz >= q.requested_at);

-- name: cancel
-- --cancel: selected requests are withdrawn; the results stay as they are.
DELETE FROM reactor_redetect q
WHERE ($1::text[] IS NULL OR q.image_path = ANY($1::text[]))
  AND ($2::text IS NULL OR starts_with(q.image_path, $2::text));
