-- Named queries of the reactor core: sweep, heartbeats (claims: claims.sql; outcomes: outcomes.sql).
-- Loaded with reactor.store.sql.Queries("queries.sql"); every block is run against a
-- real database by tests/test_store.py.
--
-- Legacy failures tables may lack optional columns (file_size_bytes, ...). Reads
-- therefore go through to_jsonb(f), which simply has no key for a missing column;
-- writes of optional columns are separate statements run only when the column exists.

-- ---------------------------------------------------------------- sweep

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

-- ---------------------------------------------------------------- instances

-- name: heartbeat
INSERT INTO reactor_instances (instance_id, hostname, pid, started_at, heartbeat_at, state)
VALUES ($1, $2, $3, $4, now(), $5::jsonb)
ON CONFLICT (instance_id) DO UPDATE
    SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
        heartbeat_at = now(), state = EXCLUDED.state
    -- started_at is the session epoch: a process whose id a later one took over (its
    -- lock lost, reactor.core.instance_lock) never overwrites the new owner's row.
    WHERE reactor_instances.started_at <= EXCLUDED.started_at

-- name: remove_instance
-- This process's row only (its session epoch and pid), never a later owner's of the id.
DELETE FROM reactor_instances WHERE instance_id = $1 AND started_at = $2 AND pid = $3

-- name: live_instances
SELECT instance_id FROM reactor_instances
WHERE heartbeat_at > now() - make_interval(secs => $1::float8)
ORDER BY instance_id

-- name: notify
SELECT pg_notify($1, $2)

-- name: control_reply_write
-- The reactor's reply to a `reactor sweep` request (reactor.core.control); replies
-- older than an hour go at the same time (no command waits that long).
WITH expired AS (
    DELETE FROM reactor_control_replies WHERE replied_at < now() - interval '1 hour'
)
INSERT INTO reactor_control_replies (request_id, instance_id, swept, reply)
VALUES ($1, $2, $3, $4)
ON CONFLICT (request_id, instance_id) DO UPDATE
SET swept = EXCLUDED.swept, reply = EXCLUDED.reply, replied_at = now()

-- name: control_replies
SELECT instance_id, swept, reply FROM reactor_control_replies WHERE request_id = $1 ORDER BY replied_at

-- name: backend_role
-- Who sent a notification (reactor.core.gate): asyncpg hands over the notifying backend's
-- pid; its role (usename) is visible in pg_stat_activity to every role.
SELECT usename::text FROM pg_stat_activity WHERE pid = $1

-- name: instance_try_lock
-- One process per instance id (reactor.core.instance_lock): a session lock, keyed on the id.
SELECT pg_try_advisory_lock(hashtextextended('face-reactor-instance:' || $1::text, 0))

-- name: current_role
SELECT current_user::text
