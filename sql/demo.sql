-- `reactor demo` (reactor.store.demo): its outcomes, on its own embedded database.

-- name: outcomes_done
-- How many of these paths have an outcome: a result or a failure (a file still being
-- written, `incomplete`, has none yet: it is tried again shortly).
SELECT count(*) FROM unnest($1::text[]) AS t(p)
WHERE EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = t.p)
   OR EXISTS (SELECT 1 FROM face_detection_failures f WHERE f.image_path = t.p
              AND f.last_error_type IS DISTINCT FROM 'incomplete');

-- name: outcome_results
SELECT image_path, face_count, model FROM face_metadata WHERE image_path = ANY($1::text[]);

-- name: outcome_boxes
SELECT image_path, box_top, box_right, box_bottom, box_left
FROM face_detections WHERE image_path = ANY($1::text[])
ORDER BY image_path, face_index;

-- name: outcome_failures
SELECT image_path, coalesce(last_error_type, 'unknown') AS error_type, coalesce(last_error, '') AS last_error
FROM face_detection_failures WHERE image_path = ANY($1::text[]);

-- name: demo_reset
-- `reactor demo` only, on its own embedded database: start from an empty library.
TRUNCATE ai_metadata, face_detections, reactor_file_identity, face_metadata, face_detection_failures, reactor_claims,
    reactor_instances, reactor_orphan_purges, reactor_control_replies, reactor_changes, reactor_sweep_state;
