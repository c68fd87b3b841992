-- The sweep's own statements (reactor.store.sweeps): its advisory lock, and the pages of
-- due retries and pending rows the full walk reads. The change log's are in changes.sql,
-- the orphans' in orphans.sql.

-- name: sweep_try_lock
SELECT pg_try_advisory_lock($1)

-- name: sweep_unlock
SELECT pg_advisory_unlock($1)

-- name: due_retries
-- Keyset pagination on image_path: each page starts after the last path seen.
-- Images under another instance's live claim are left to it ($3: this instance).
SELECT f.image_path
FROM face_detection_failures f
WHERE f.image_path > $1
  AND NOT coalesce(f.permanently_failed, false)
  AND coalesce(f.next_retry_after, now()) <= now()
  AND EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path AND a.is_processed)
  AND NOT EXISTS (SELECT 1 FROM reactor_claims c
                  WHERE c.image_path = f.image_path AND c.lease_until > now() AND c.instance_id <> $3)
ORDER BY f.image_path
LIMIT $2

-- name: pending_images
-- Processed rows with no result and no failure row: missed notifications, and
-- results whose re-detection was requested (`reactor redetect`). The full walk reads
-- the table in windows (changes.sql walk_window): rows after $1 up to $4.
SELECT a.image_path
FROM ai_metadata a
WHERE a.image_path > $1
  AND a.image_path <= $4
  AND a.is_processed
  AND (NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = a.image_path)
       OR EXISTS (SELECT 1 FROM reactor_redetect q WHERE q.image_path = a.image_path))
  AND NOT EXISTS (SELECT 1 FROM face_detection_failures f WHERE f.image_path = a.image_path)
  AND NOT EXISTS (SELECT 1 FROM reactor_claims c
                  WHERE c.image_path = a.image_path AND c.lease_until > now() AND c.instance_id <> $3)
ORDER BY a.image_path
LIMIT $2

-- name: ai_metadata_is_empty
SELECT NOT EXISTS (SELECT 1 FROM ai_metadata)
