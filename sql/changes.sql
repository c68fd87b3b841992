-- The change log and the sweep's state (reactor.store.changes, schema version 5).

-- name: custom_plans
-- For the sweep's connection (the pool's RESET ALL undoes it on release). Its statements
-- take arrays of paths and keyset bounds; the generic plan PostgreSQL may switch to after
-- five executions of a prepared statement estimates those blindly, and chose sequential
-- scans of face_metadata (0.04 s sweeps became 1.2 s at 10M rows, benchmarks.md).
SET plan_cache_mode = force_custom_plan

-- name: ensure_state
INSERT INTO reactor_sweep_state (singleton) VALUES (TRUE) ON CONFLICT (singleton) DO NOTHING

-- name: state
-- $1 the full walk's interval in seconds: due when under way, asked for, never
-- finished, or finished longer ago than that.
SELECT s.watermark, s.walk_phase, s.walk_after, s.walk_rows, s.walk_started_at, s.walk_finished_at,
       s.walk_requested_at,
       (s.walk_phase IS NOT NULL OR s.walk_requested_at IS NOT NULL OR s.walk_finished_at IS NULL
        OR s.walk_finished_at < now() - make_interval(secs => $1::float8)) AS walk_due,
       -- $2: with the log's size. The sweep asks without (before every chunk of the walk):
       -- a log that holds a storm is millions of rows to count. The subqueries are init
       -- plans, run only when the CASE reaches them.
       CASE WHEN $2::boolean THEN (SELECT count(*) FROM reactor_changes) END AS backlog,
       CASE WHEN $2::boolean THEN (SELECT min(changed_at) FROM reactor_changes) END AS oldest_change
FROM reactor_sweep_state s

-- name: change_page
-- The oldest changes not read yet. A TRUNCATE is a row with a NULL path.
SELECT seq, image_path FROM reactor_changes ORDER BY seq LIMIT $1

-- name: consume_changes
-- Exactly the rows read are deleted (not "up to the highest seq": a transaction that
-- took a lower seq may commit after it was read); the watermark is the highest one.
WITH gone AS (DELETE FROM reactor_changes WHERE seq = ANY($1::bigint[]) RETURNING seq)
UPDATE reactor_sweep_state
SET watermark = greatest(watermark, (SELECT coalesce(max(seq), 0) FROM gone)), updated_at = now()

-- name: pending_among
-- Which of the paths $1 are pending: the conditions of sweep.sql pending_images
-- (keep the two together), on a list of paths instead of a keyset page of the table.
SELECT DISTINCT a.image_path
FROM ai_metadata a
WHERE a.image_path = ANY($1::text[])
  AND a.is_processed
  AND (NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = a.image_path)
       OR EXISTS (SELECT 1 FROM reactor_redetect q WHERE q.image_path = a.image_path))
  AND NOT EXISTS (SELECT 1 FROM face_detection_failures f WHERE f.image_path = a.image_path)
  AND NOT EXISTS (SELECT 1 FROM reactor_claims c
                  WHERE c.image_path = a.image_path AND c.lease_until > now() AND c.instance_id <> $2)
ORDER BY a.image_path

-- name: redetect_page
-- Re-detection requests (`reactor redetect`) change no ai_metadata row: the regular
-- sweep reads them from their own table. Keyset page after $1, $2 rows.
SELECT image_path FROM reactor_redetect WHERE image_path > $1 ORDER BY image_path LIMIT $2

-- name: expired_claim_page
-- Images whose claim expired (a crashed instance's): pending again once their lease is over.
SELECT image_path FROM reactor_claims WHERE image_path > $1 AND lease_until <= now() ORDER BY image_path LIMIT $2

-- name: walk_window
-- The last path of the next $2 processed rows after $1 (an index-only scan of
-- idx_ai_metadata_processed_path) and their number, NULL at the end: a chunk of the walk reads a
-- bounded stretch of the table, however few of its rows are pending.
SELECT max(w.image_path) AS upper, count(*) AS rows FROM (
    SELECT image_path FROM ai_metadata WHERE image_path > $1 AND is_processed ORDER BY image_path LIMIT $2
) AS w

-- name: results_window
-- The same for the orphan pass: the next $2 results after $1 (the primary key).
SELECT max(w.image_path) AS upper, count(*) AS rows FROM (
    SELECT image_path FROM face_metadata WHERE image_path > $1 ORDER BY image_path LIMIT $2
) AS w

-- name: failures_window
SELECT max(w.image_path) AS upper, count(*) AS rows FROM (
    SELECT image_path FROM face_detection_failures WHERE image_path > $1 ORDER BY image_path LIMIT $2
) AS w

-- name: request_walk
-- Creates the state's row on first use, as ensure_state does: one statement for callers
-- that have not read the state yet.
INSERT INTO reactor_sweep_state AS s (singleton, walk_requested_at) VALUES (TRUE, now())
ON CONFLICT (singleton) DO UPDATE
    SET walk_requested_at = coalesce(s.walk_requested_at, now()), updated_at = now()

-- name: save_walk
-- The full walk's position: $1 phase, $2 last path read, $3 rows read since the last save.
UPDATE reactor_sweep_state
SET walk_phase = $1, walk_after = $2, walk_rows = walk_rows + $3, updated_at = now()

-- name: start_walk
UPDATE reactor_sweep_state
SET walk_phase = NULL, walk_after = '', walk_rows = 0, walk_started_at = now(), updated_at = now()

-- name: finish_walk
-- $1 rows read since the last save. A request that came in during the walk is met by it
-- only if made before the walk started.
UPDATE reactor_sweep_state
SET walk_phase = NULL, walk_after = '', walk_rows = walk_rows + $1, walk_finished_at = now(),
    walk_requested_at = CASE WHEN walk_requested_at < walk_started_at THEN NULL ELSE walk_requested_at END,
    updated_at = now()

-- name: any_due_results
-- Marked longer ago than the grace ($1 seconds): the partial index on orphaned_at answers.
SELECT EXISTS (SELECT 1 FROM face_metadata WHERE orphaned_at < now() - make_interval(secs => $1::float8))

-- name: any_due_failures
SELECT EXISTS (SELECT 1 FROM face_detection_failures WHERE orphaned_at < now() - make_interval(secs => $1::float8))

-- ---------------------------------------------------------------- shares (several instances)

-- name: share_page
-- The oldest changes in this instance's share of the paths (issue 28): $2 live instances,
-- $3 this instance's rank among them. The share is the path's md5 modulo the count, the
-- same as reactor.store.changes.share_of (a test keeps the two equal); a TRUNCATE (NULL
-- path) is rank 0's. Read by seq: the rows of the other shares that are passed over are
-- at most those the other instances have not read yet.
SELECT seq, image_path FROM reactor_changes
WHERE mod(coalesce(('x' || substr(md5(image_path), 1, 8))::bit(32)::bigint, 0), $2::bigint) = $3::bigint
ORDER BY seq LIMIT $1

-- name: overdue_page
-- Changes of any share left unread longer than $2 seconds (their instance is busy or
-- gone): read once this instance's own share is done, so the idle take over the busy.
SELECT seq, image_path FROM reactor_changes
WHERE changed_at < now() - make_interval(secs => $2::float8)
ORDER BY seq LIMIT $1

-- name: share_of
-- The share of each path of $1 among $2 instances (tests compare it with share_of in Python).
SELECT p AS image_path, mod(('x' || substr(md5(p), 1, 8))::bit(32)::bigint, $2::bigint)::int AS share
FROM unnest($1::text[]) AS p

-- name: hand_back
-- An instance that stops puts the paths still in its queue back into the log, so the next
-- regular sweep of any instance reads them (their changes were read, and deleted).
SELECT reactor_log_changes($1::text[])

-- name: take_gone_instances
-- Instances gone without a clean stop (a clean stop deletes its row): rows whose
-- heartbeat is older than $1 seconds, or this instance id's row from an earlier process
-- ($2 the id, $3 this process's start). What they had queued is in no queue and, its
-- changes read, in no log. The rows are deleted as they are taken, so one instance
-- asks for the walk once.
DELETE FROM reactor_instances
WHERE heartbeat_at < now() - make_interval(secs => $1::float8)
   OR (instance_id = $2 AND started_at < $3)
RETURNING instance_id
