-- Orphans (reactor.store.orphans): results and failure rows whose ai_metadata row is gone.
-- They are marked (orphaned_at), never deleted at once: an upstream table that is
-- truncated and refilled, or a `deleted` hint for a file that comes back, must cost
-- no result. A row whose ai_metadata row returns is un-marked; a marked row is
-- purged only after the grace period, and only if it is still orphaned then.
-- Every purge and mark re-checks the anti-join in its own statement, so a row that
-- came back since a page was read is kept.
-- Only results the reactor wrote are ever marked or purged: a legacy result (written
-- by the legacy worker, `model IS NULL`, reactor.store.legacy) is another program's
-- data; `reactor audit` reports those whose path left ai_metadata and only
-- `reactor repair --legacy-orphans --apply` removes them, after a backup.

-- name: orphan_results
-- Keyset page of results that have no ai_metadata row and are not marked yet, after
-- $1 and up to $3 (the sweep's full walk reads the table in such windows).
SELECT m.image_path FROM face_metadata m
WHERE m.image_path > $1
  AND m.image_path <= $3
  AND m.orphaned_at IS NULL
  AND m.model IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)
  -- A legacy row that breaks the path rule cannot be updated (its NOT VALID CHECK
  -- applies to new versions of a row); it is `reactor audit`'s, not the sweep's.
  AND reactor_valid_image_path(m.image_path)
ORDER BY m.image_path
LIMIT $2

-- name: orphan_failures
SELECT f.image_path FROM face_detection_failures f
WHERE f.image_path > $1
  AND f.image_path <= $3
  AND f.orphaned_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path)
  AND (f.last_error_type IS NOT DISTINCT FROM 'invalid_path' OR reactor_valid_image_path(f.image_path))
ORDER BY f.image_path
LIMIT $2

-- name: mark_orphan_results
UPDATE face_metadata m SET orphaned_at = now()
WHERE m.image_path = ANY($1::text[])
  AND m.orphaned_at IS NULL
  AND m.model IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)
  AND reactor_valid_image_path(m.image_path)

-- name: mark_orphan_failures
UPDATE face_detection_failures f SET orphaned_at = now()
WHERE f.image_path = ANY($1::text[])
  AND f.orphaned_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path)
  AND (f.last_error_type IS NOT DISTINCT FROM 'invalid_path' OR reactor_valid_image_path(f.image_path))

-- name: mark_gone_results
-- The file itself is gone (a standalone watcher's deletion, the registration goes
-- in the same transaction): no ai_metadata re-check. $1 exact paths, $2 folder
-- prefixes ending in '/'.
UPDATE face_metadata SET orphaned_at = now()
WHERE orphaned_at IS NULL
  AND model IS NOT NULL
  AND (image_path = ANY($1::text[]) OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS p(prefix)
                                               WHERE starts_with(image_path, p.prefix)))
  AND reactor_valid_image_path(image_path)

-- name: mark_gone_failures
UPDATE face_detection_failures SET orphaned_at = now()
WHERE orphaned_at IS NULL
  AND (image_path = ANY($1::text[]) OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS p(prefix)
                                               WHERE starts_with(image_path, p.prefix)))
  AND (last_error_type IS NOT DISTINCT FROM 'invalid_path' OR reactor_valid_image_path(image_path))

-- name: unmark_returned_results
-- A row whose ai_metadata row came back is simply un-marked: nothing is detected again.
UPDATE face_metadata m SET orphaned_at = NULL
WHERE m.orphaned_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)

-- name: unmark_legacy_results
-- Legacy results an earlier version marked: the mark is the reactor's own column, and
-- it goes (such a row is never purged, marked or not). A row that breaks the path rule
-- cannot be updated (its NOT VALID CHECK); it stays marked and is still never purged.
UPDATE face_metadata m SET orphaned_at = NULL
WHERE m.orphaned_at IS NOT NULL
  AND m.model IS NULL
  AND reactor_valid_image_path(m.image_path)

-- name: unmark_returned_failures
UPDATE face_detection_failures f SET orphaned_at = NULL
WHERE f.orphaned_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path)

-- name: orphan_stats_results
-- $1 grace in seconds, $2 purge window in seconds, $3 how many rows of the table to count
-- at most. due: marked longer than the grace and still orphaned; spent: purged by the
-- sweeps in the window (the bound counts it). Each count but the total reads the partial
-- index on orphaned_at (the marked rows only); the total stops at $3, the size past which
-- the bound no longer depends on it (OrphanPolicy.count_cap): the sweep runs this while
-- orphans are due, and a count of the whole table took 14 s at 10M rows (issue 28).
SELECT (SELECT count(*) FROM (SELECT 1 FROM face_metadata LIMIT $3) AS t) AS total,
       (SELECT count(*) FROM face_metadata m
        WHERE m.orphaned_at IS NOT NULL AND m.model IS NOT NULL) AS marked,
       (SELECT count(*) FROM face_metadata m
        WHERE m.orphaned_at < now() - make_interval(secs => $1::float8)
          AND m.model IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)) AS due,
       (SELECT min(m.orphaned_at) FROM face_metadata m
        WHERE m.orphaned_at IS NOT NULL AND m.model IS NOT NULL) AS oldest,
       (SELECT coalesce(sum(p.purged), 0) FROM reactor_orphan_purges p
        WHERE p.table_name = 'face_metadata'
          AND p.purged_at > now() - make_interval(secs => $2::float8))::bigint AS spent

-- name: orphan_stats_failures
SELECT (SELECT count(*) FROM (SELECT 1 FROM face_detection_failures LIMIT $3) AS t) AS total,
       (SELECT count(*) FROM face_detection_failures f WHERE f.orphaned_at IS NOT NULL) AS marked,
       (SELECT count(*) FROM face_detection_failures f
        WHERE f.orphaned_at < now() - make_interval(secs => $1::float8)
          AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path)) AS due,
       (SELECT min(f.orphaned_at) FROM face_detection_failures f WHERE f.orphaned_at IS NOT NULL) AS oldest,
       (SELECT coalesce(sum(p.purged), 0) FROM reactor_orphan_purges p
        WHERE p.table_name = 'face_detection_failures'
          AND p.purged_at > now() - make_interval(secs => $2::float8))::bigint AS spent

-- name: due_orphan_results
-- $1 grace in seconds, $2 after this path, $3 page size (dry runs list these).
SELECT m.image_path FROM face_metadata m
WHERE m.image_path > $2
  AND m.orphaned_at < now() - make_interval(secs => $1::float8)
  AND m.model IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)
ORDER BY m.image_path
LIMIT $3

-- name: due_orphan_failures
SELECT f.image_path FROM face_detection_failures f
WHERE f.image_path > $2
  AND f.orphaned_at < now() - make_interval(secs => $1::float8)
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path)
ORDER BY f.image_path
LIMIT $3

-- name: purge_orphan_results
-- Face rows go with their result (ON DELETE CASCADE).
DELETE FROM face_metadata m
WHERE m.image_path = ANY($2::text[])
  AND m.orphaned_at < now() - make_interval(secs => $1::float8)
  AND m.model IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)

-- name: purge_orphan_failures
DELETE FROM face_detection_failures f
WHERE f.image_path = ANY($2::text[])
  AND f.orphaned_at < now() - make_interval(secs => $1::float8)
  AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path)

-- name: purge_orphan_results_bounded
-- The sweep's purge: every orphan past its grace, or none. $1 grace in seconds, $2 the
-- bound (rows per window), $3 the window in seconds. The bound is counted here, in the
-- statement that deletes: the rows due now plus what the sweeps purged in the window
-- (reactor_orphan_purges) must fit in it, and what is deleted is recorded in the same
-- statement. One sweep at a time (its advisory lock), so no two purges share a window
-- count. 0: nothing was purged (none due, or past the bound: held).
WITH due AS (
    SELECT m.image_path FROM face_metadata m
    WHERE m.orphaned_at < now() - make_interval(secs => $1::float8)
      AND m.model IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)
    FOR UPDATE
), gone AS (
    DELETE FROM face_metadata m USING due
    WHERE m.image_path = due.image_path
      AND (SELECT count(*) FROM due)
          + (SELECT coalesce(sum(p.purged), 0) FROM reactor_orphan_purges p
             WHERE p.table_name = 'face_metadata'
               AND p.purged_at > now() - make_interval(secs => $3::float8)) <= $2::bigint
    RETURNING m.image_path
), recorded AS (
    INSERT INTO reactor_orphan_purges AS p (table_name, purged)
    SELECT 'face_metadata', count(*) FROM gone HAVING count(*) > 0
    ON CONFLICT (table_name, purged_at) DO UPDATE SET purged = p.purged + EXCLUDED.purged
)
SELECT count(*) AS purged FROM gone

-- name: purge_orphan_failures_bounded
WITH due AS (
    SELECT f.image_path FROM face_detection_failures f
    WHERE f.orphaned_at < now() - make_interval(secs => $1::float8)
      AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path)
    FOR UPDATE
), gone AS (
    DELETE FROM face_detection_failures f USING due
    WHERE f.image_path = due.image_path
      AND (SELECT count(*) FROM due)
          + (SELECT coalesce(sum(p.purged), 0) FROM reactor_orphan_purges p
             WHERE p.table_name = 'face_detection_failures'
               AND p.purged_at > now() - make_interval(secs => $3::float8)) <= $2::bigint
    RETURNING f.image_path
), recorded AS (
    INSERT INTO reactor_orphan_purges AS p (table_name, purged)
    SELECT 'face_detection_failures', count(*) FROM gone HAVING count(*) > 0
    ON CONFLICT (table_name, purged_at) DO UPDATE SET purged = p.purged + EXCLUDED.purged
)
SELECT count(*) AS purged FROM gone

-- name: forget_old_purges
-- The history outlives the window only as long as an operator may want to read it.
DELETE FROM reactor_orphan_purges WHERE purged_at < now() - make_interval(secs => $1::float8)

-- name: orphan_columns
-- Which of the two tables carry orphaned_at (a legacy failures table may not yet).
SELECT c.relname AS table_name
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relname IN ('face_metadata', 'face_detection_failures')
  AND pg_table_is_visible(c.oid)
  AND a.attname = 'orphaned_at' AND NOT a.attisdropped
