-- `reactor status` (reactor.store.status_reads).
-- Only the columns every legacy copy of face_detection_failures has are used here
-- (seeds/000, seeds/001); permanently_failed may be NULL on legacy rows, hence IS TRUE.
-- Legacy copies keep their times as `timestamp without time zone`; every time read
-- from them is cast to timestamptz, which takes it as the server's TimeZone setting
-- (the zone the legacy worker's CURRENT_TIMESTAMP defaults wrote it in): a no-op on a
-- timestamptz column, and Python always gets an aware datetime.

-- name: status_results
-- Legacy results (adopted from the legacy worker) have no model. A legacy
-- detected_at without a time zone is read in the server's TimeZone (the cast).
SELECT count(*) AS images,
       coalesce(sum(face_count), 0)::bigint AS faces,
       max(detected_at)::timestamptz AS last_detection,
       count(*) FILTER (WHERE model IS NULL) AS legacy,
       count(*) FILTER (WHERE model IS NULL AND face_count = 0) AS legacy_zero,
       (SELECT count(*) FROM reactor_redetect) AS redetect_requested,
       (SELECT count(*) FROM reactor_held_deletions) AS held_deletions
FROM face_metadata;

-- name: status_failures_by_type
SELECT coalesce(last_error_type, 'unknown') AS error_type,
       count(*) AS failures,
       count(*) FILTER (WHERE permanently_failed IS TRUE) AS permanent,
       count(*) FILTER (WHERE permanently_failed IS NOT TRUE
                          AND coalesce(next_retry_after, now()) <= now()) AS due
FROM face_detection_failures
GROUP BY 1
ORDER BY 1;

-- name: status_pending
-- Processed upstream, with neither a result nor a failure yet.
SELECT count(*) AS pending
FROM ai_metadata a
WHERE a.is_processed
  AND NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = a.image_path)
  AND NOT EXISTS (SELECT 1 FROM face_detection_failures f WHERE f.image_path = a.image_path);

-- name: status_instances
-- $1: seconds after which a heartbeat is stale (a few heartbeat intervals).
SELECT instance_id, hostname, pid, started_at, heartbeat_at, state,
       extract(epoch FROM now() - heartbeat_at)::float8 AS age_seconds
FROM reactor_instances
WHERE heartbeat_at > now() - make_interval(secs => $1::float8)
ORDER BY heartbeat_at DESC;
