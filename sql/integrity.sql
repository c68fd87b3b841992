-- `reactor audit` and `reactor repair`: finding and fixing rows that break the
-- reactor's invariants (seeds/002, seeds/003). Every block is read-only except
-- the repair_* blocks, which run inside repair's one transaction. A backup table's
-- name carries the time of the repair, so the blocks that touch one hold `{backup}`
-- and `{source}`, which reactor.store.repair fills with quoted identifiers before running.

-- name: missing_tables
SELECT t AS table_name
FROM unnest($1::text[]) AS t
WHERE to_regclass(t) IS NULL
ORDER BY t;

-- name: table_columns
SELECT attname::text AS column_name, format_type(atttypid, atttypmod) AS column_type
FROM pg_attribute
WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
ORDER BY attnum;

-- Face rows whose image has no done marker: a restore with triggers off, or a
-- second store that fell out of sync (seeds/003).
-- name: orphan_faces
SELECT d.image_path, count(*)::int AS faces
FROM face_detections d
WHERE NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = d.image_path)
GROUP BY d.image_path
ORDER BY d.image_path;

-- name: face_count_mismatch
SELECT m.image_path, m.face_count, coalesce(d.faces, 0)::int AS faces
FROM face_metadata m
LEFT JOIN (
    SELECT image_path, count(*) AS faces FROM face_detections GROUP BY image_path
) d ON d.image_path = m.image_path
WHERE m.face_count <> coalesce(d.faces, 0)
  -- A legacy result whose faces are still only in its JSON columns is not a
  -- mismatch (repair would delete it): it is legacy_not_imported.
  AND NOT (m.model IS NULL AND d.faces IS NULL)
ORDER BY m.image_path;

-- name: legacy_not_imported_rows
SELECT m.image_path, m.face_count
FROM face_metadata m
WHERE m.model IS NULL AND coalesce(m.face_count, 0) > 0
  AND NOT EXISTS (SELECT 1 FROM face_detections d WHERE d.image_path = m.image_path)
ORDER BY m.image_path;

-- Legacy results (the legacy worker's, model IS NULL) whose path left ai_metadata:
-- another program's data, so the sweep never marks nor purges them
-- (sql/orphans.sql); only `reactor repair --legacy-orphans --apply` removes them.
-- name: legacy_orphan_rows
SELECT m.image_path, m.face_count
FROM face_metadata m
WHERE m.model IS NULL
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)
ORDER BY m.image_path;

-- name: legacy_zero_rows
SELECT m.image_path, EXISTS (SELECT 1 FROM reactor_redetect q WHERE q.image_path = m.image_path) AS requested
FROM face_metadata m
WHERE m.model IS NULL AND m.face_count = 0
ORDER BY m.image_path;

-- Every path in a reactor table, streamed through a cursor: the configured
-- derived-folder patterns are fnmatch patterns, so Python (reactor.paths) judges
-- them; the SQL function is the floor the constraints enforce.
-- name: reactor_paths
SELECT 'face_metadata' AS table_name, image_path, reactor_valid_image_path(image_path) AS sql_valid,
       NULL::bigint AS token
FROM face_metadata
UNION ALL
-- An invalid_path failure is the reactor's own record of an ai_metadata path it
-- refused (the constraint allows exactly those): not corruption.
SELECT 'face_detection_failures', image_path, reactor_valid_image_path(image_path), NULL
FROM face_detection_failures
WHERE last_error_type IS DISTINCT FROM 'invalid_path'
UNION ALL
SELECT 'reactor_claims', image_path, reactor_valid_image_path(image_path), token
FROM reactor_claims;

-- name: result_paths
SELECT image_path FROM face_metadata;

-- name: legacy_among
-- Which of these results the legacy worker wrote (no model): another program's rows,
-- which repair removes only when the operator asks (`--legacy-orphans`).
SELECT image_path FROM face_metadata WHERE image_path = ANY($1::text[]) AND model IS NULL;

-- name: results_present
SELECT image_path FROM face_metadata WHERE image_path = ANY($1::text[]) ORDER BY image_path;

-- name: result_paths_unorphaned
-- missing_files where face_metadata carries orphaned_at: a result already marked orphaned
-- is known to be gone and waits for its grace period (reactor.store.orphans).
SELECT image_path FROM face_metadata WHERE orphaned_at IS NULL;

-- name: results_present_unorphaned
SELECT image_path FROM face_metadata
WHERE image_path = ANY($1::text[]) AND orphaned_at IS NULL ORDER BY image_path;

-- name: superseded_failures
SELECT f.image_path, f.last_error_type, f.retry_count
FROM face_detection_failures f
WHERE EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = f.image_path)
  -- A re-detection that failed keeps the old result beside its failure until it succeeds.
  AND NOT EXISTS (SELECT 1 FROM reactor_redetect q WHERE q.image_path = f.image_path)
ORDER BY f.image_path;

-- Processed rows with neither a result nor a failure, older than $1 seconds by the
-- ai_metadata timestamp column named $2 (upstream tables differ, so it is read by
-- name), and not claimed under a live lease. OFFSET 0 keeps the per-row to_jsonb
-- off the million rows that already have a result.
-- name: pending_processed
SELECT p.image_path, (to_jsonb(p) ->> $2)::timestamptz AS since
FROM (
    SELECT a.*
    FROM ai_metadata a
    WHERE a.is_processed
      AND NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = a.image_path)
      AND NOT EXISTS (SELECT 1 FROM face_detection_failures f WHERE f.image_path = a.image_path)
      AND NOT EXISTS (SELECT 1 FROM reactor_claims c WHERE c.image_path = a.image_path AND c.lease_until > now())
    OFFSET 0
) p
WHERE (to_jsonb(p) ->> $2)::timestamptz < now() - make_interval(secs => $1)
ORDER BY p.image_path;

-- A claim is dead when its lease expired, when its instance's heartbeat is older
-- than $1 seconds, or when its instance has no heartbeat row and the claim is
-- older than $1 seconds (an instance that has not yet written one is not gone).
-- name: dead_claims
SELECT c.image_path, c.instance_id, c.token, c.lease_until, i.heartbeat_at,
       CASE
           WHEN c.lease_until < now() THEN 'lease_expired'
           WHEN i.instance_id IS NULL THEN 'instance_unknown'
           ELSE 'heartbeat_stale'
       END AS reason
FROM reactor_claims c
LEFT JOIN reactor_instances i ON i.instance_id = c.instance_id
WHERE c.lease_until < now()
   OR (i.instance_id IS NOT NULL AND i.heartbeat_at < now() - make_interval(secs => $1))
   OR (i.instance_id IS NULL AND c.claimed_at < now() - make_interval(secs => $1))
ORDER BY c.image_path;

-- Repair runs in one transaction. It waits at most lock_timeout for a running
-- reactor's writes; the order matches the reactor's own (claims, then results).
-- name: repair_lock
LOCK TABLE reactor_claims, face_metadata, face_detections, face_detection_failures
    IN SHARE ROW EXCLUSIVE MODE;

-- A backup table has the source's columns (LIKE copies no constraints, so it keeps
-- rows the constraints would refuse) plus the reason the row was removed.
-- name: repair_create_backup
CREATE TABLE {backup} (LIKE {source}, repair_reason TEXT NOT NULL, repaired_at TIMESTAMPTZ NOT NULL DEFAULT now());

-- name: repair_backup_rows
INSERT INTO {backup}
SELECT s.*, $2::text FROM {source} s WHERE s.image_path = ANY($1::text[]);

-- name: repair_backup_orphan_faces
INSERT INTO {backup}
SELECT d.*, $2::text FROM face_detections d
WHERE d.image_path = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = d.image_path);

-- name: repair_backup_claims
INSERT INTO {backup}
SELECT c.*, x.reason FROM reactor_claims c
JOIN unnest($1::text[], $2::bigint[], $3::text[]) AS x(image_path, token, reason)
  ON c.image_path = x.image_path AND c.token = x.token;

-- name: repair_delete_orphan_faces
DELETE FROM face_detections d
WHERE d.image_path = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = d.image_path);

-- face_detections rows go with their result through ON DELETE CASCADE.
-- name: repair_delete_results
DELETE FROM face_metadata WHERE image_path = ANY($1::text[]);

-- name: repair_delete_failures
DELETE FROM face_detection_failures WHERE image_path = ANY($1::text[]);

-- Only the exact claim that was judged dead: a claim re-taken since (a new
-- fencing token) is left alone.
-- name: repair_delete_claims
DELETE FROM reactor_claims c
USING unnest($1::text[], $2::bigint[]) AS x(image_path, token)
WHERE c.image_path = x.image_path AND c.token = x.token;

-- Path constraints added NOT VALID over legacy rows (sql/schema.sql); once repair
-- has removed the offending rows, it validates them, so that `reactor db check` sees
-- them enforced for old rows too.
-- name: repair_unvalidated_constraints
SELECT conrelid::regclass::text AS table_name, conname::text AS constraint_name
FROM pg_constraint
WHERE conname = ANY($1::text[]) AND contype = 'c' AND NOT convalidated
ORDER BY 1;

-- name: repair_validate_constraint
ALTER TABLE {source} VALIDATE CONSTRAINT {constraint};

-- Re-queue: the same payload the ai_metadata trigger sends; delivered at commit.
-- Only processed rows without a result are sent: the reactor detects nothing else.
-- name: repair_requeue
SELECT count(pg_notify($1, json_build_object('type', 'processed', 'path', a.image_path)::text))::int AS sent
FROM ai_metadata a
WHERE a.image_path = ANY($2::text[])
  AND a.is_processed
  AND NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = a.image_path);

-- name: held_deletion_rows
-- Deletions held after a confirmed mass vanish (reactor.store.held): a decision still open.
SELECT image_path, held_at, reason FROM reactor_held_deletions ORDER BY image_path
