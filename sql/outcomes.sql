-- Outcomes (reactor.store.outcomes): a result, or a typed failure with its next try.
-- Loaded with reactor.store.sql.Queries("outcomes.sql"); every block is run against a real
-- database by tests/test_sql_blocks.py.
--
-- Legacy failures tables may lack optional columns (file_size_bytes, ...). Reads
-- therefore go through to_jsonb(f), which simply has no key for a missing column;
-- the failure writes name an optional column only where the table has it
-- (reactor.store.outcomes.failure_write_sql).

-- ---------------------------------------------------------------- results

-- name: record_result
-- A result in one statement, so it needs no transaction of its own when there are
-- no faces: release this instance's claim by its fencing token, and only if that
-- row was there (RETURNING feeds every other part) upsert face_metadata, delete
-- the image's old face rows and its failure row. Returns false when fenced (another
-- instance took the image over), in which case nothing was written. New face rows
-- follow with insert_face_detection in the same transaction.
-- $1 path, $2 token, $3 face_count, $4 model, $5 scale, $6 width, $7 height,
-- $8 decode_ms, $9 detect_ms, $10 encode_ms, $11 instance_id, $12 whether the old
-- face rows go (false: reactor.store.outcomes matches them to the new faces, which keep their
-- ids), $13 the settings fingerprint, $14 detect_width, $15 detect_height, $16 upsample,
-- $17 min_face_px; the file as read: $18 size, $19 mtime_ns, $20 fingerprint
-- (reactor.util.identity; NULL: none kept). On an adopted legacy face_metadata,
-- reactor.store.outcomes fills the three /*legacy_...*/ markers with the legacy JSON columns
-- (face_locations, face_encodings: $21, $22 as JSON text, cast to the column's type),
-- so that legacy readers see every new result too.
WITH released AS (
    DELETE FROM reactor_claims WHERE image_path = $1 AND token = $2 RETURNING image_path
), result AS (
    INSERT INTO face_metadata AS m (image_path, face_count, model, scale, original_width, original_height,
                                    decode_ms, detect_ms, encode_ms, instance_id, claim_token, detected_at,
                                    settings, detect_width, detect_height, upsample, min_face_px
                                    /*legacy_columns*/)
    SELECT r.image_path, $3::int, $4::text, $5::real, $6::int, $7::int, $8::real, $9::real, $10::real,
           $11::text, $2::bigint, now(), $13::text, $14::int, $15::int, $16::int, $17::int /*legacy_values*/
    FROM released r
    ON CONFLICT (image_path) DO UPDATE
        SET face_count = EXCLUDED.face_count, model = EXCLUDED.model, scale = EXCLUDED.scale,
            original_width = EXCLUDED.original_width, original_height = EXCLUDED.original_height,
            decode_ms = EXCLUDED.decode_ms, detect_ms = EXCLUDED.detect_ms, encode_ms = EXCLUDED.encode_ms,
            instance_id = EXCLUDED.instance_id, claim_token = EXCLUDED.claim_token, detected_at = now(),
            settings = EXCLUDED.settings, detect_width = EXCLUDED.detect_width,
            detect_height = EXCLUDED.detect_height, upsample = EXCLUDED.upsample,
            min_face_px = EXCLUDED.min_face_px /*legacy_updates*/
    RETURNING m.image_path
), old_faces AS (
    DELETE FROM face_detections d USING released r WHERE d.image_path = r.image_path AND $12::boolean
), old_failure AS (
    -- Never the blacklist (`reactor blacklist` fences the claims in flight as well).
    DELETE FROM face_detection_failures f USING released r WHERE f.image_path = r.image_path
        AND NOT (f.last_error_type = 'blacklisted' AND f.permanently_failed)
), old_request AS (
    DELETE FROM reactor_redetect q USING released r WHERE q.image_path = r.image_path
), old_identity AS (
    DELETE FROM reactor_file_identity i USING released r WHERE i.image_path = r.image_path AND $20::text IS NULL
), identity AS (
    -- The foreign key is checked at the end of the statement, after result's insert.
    INSERT INTO reactor_file_identity (image_path, size_bytes, mtime_ns, fingerprint)
    SELECT r.image_path, $18::bigint, $19::bigint, $20::text FROM released r WHERE $20::text IS NOT NULL
    ON CONFLICT (image_path) DO UPDATE
        SET size_bytes = EXCLUDED.size_bytes, mtime_ns = EXCLUDED.mtime_ns, fingerprint = EXCLUDED.fingerprint
)
SELECT EXISTS (SELECT 1 FROM result)

-- name: insert_face_detection
INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left,
                             score, encoding, model, scale)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)

-- name: faces_of_image
-- The faces a re-detection is matched against (reactor.util.identity), locked until it is written.
SELECT face_id, box_top, box_right, box_bottom, box_left
FROM face_detections WHERE image_path = $1
ORDER BY face_index
FOR UPDATE

-- name: delete_faces
DELETE FROM face_detections WHERE face_id = ANY($1::bigint[])

-- name: shift_face_indexes
-- Out of the way of the new order, so that updating the kept faces' indexes one by
-- one never collides with the (image_path, face_index) key.
UPDATE face_detections SET face_index = face_index + 1000000 WHERE image_path = $1

-- name: update_face
-- A face that is still there keeps its row (its id and any column others added).
UPDATE face_detections
SET face_index = $2, box_top = $3, box_right = $4, box_bottom = $5, box_left = $6,
    score = $7, encoding = $8, model = $9, scale = $10
WHERE face_id = $1

-- name: current_xid
-- The id of the outcome write's transaction, read before its COMMIT (reactor.store.outcomes.landed).
SELECT txid_current()

-- name: writes_committed
-- After a write whose commit reply was lost: whether one of its tries committed.
SELECT EXISTS (SELECT 1 FROM unnest($1::bigint[]) AS x WHERE txid_status(x) = 'committed')

-- ---------------------------------------------------------------- failures

-- name: record_failure
-- The retry policy is reactor.util.backoff's (failure_retry); this block only applies it:
-- $4 the delay in seconds after the 1st, 2nd, ... failed try (the last one serves every
-- later try), $5 this write's jitter factor, $6 the tries that make it permanent.
-- next_retry_after = now + the delay for the row's new try count * the jitter factor.
-- The markers take the optional columns that this table has, from $7 on (store.failure_write_sql).
INSERT INTO face_detection_failures AS f
    (image_path, retry_count, last_error, last_error_type, last_failure_at, next_retry_after, permanently_failed
     /*optional_columns*/)
VALUES ($1, 1, $2, $3, now(),
        now() + make_interval(secs => ($4::float8[])[1] * $5::float8),
        1 >= $6::int /*optional_values*/)
ON CONFLICT (image_path) DO UPDATE
    SET retry_count = coalesce(f.retry_count, 0) + 1,
        last_error = EXCLUDED.last_error,
        last_error_type = EXCLUDED.last_error_type,
        last_failure_at = now(),
        next_retry_after = now() + make_interval(
            secs => ($4::float8[])[greatest(1, least(coalesce(f.retry_count, 0) + 1, cardinality($4::float8[])))]
                    * $5::float8),
        permanently_failed = coalesce(f.permanently_failed, false) OR coalesce(f.retry_count, 0) + 1 >= $6::int
        /*optional_updates*/
-- A legacy column is timestamp without time zone: read it as the server's TimeZone (sql/ops.sql).
RETURNING retry_count, permanently_failed, next_retry_after::timestamptz AS next_retry_after

-- name: failure_previous
SELECT last_error_type, last_error FROM face_detection_failures WHERE image_path = $1

-- name: failure_previous_file
SELECT file_size_bytes, file_mtime_ns FROM face_detection_failures WHERE image_path = $1

-- name: record_incomplete
-- A file still being written: retried after $4 seconds, never permanent, and its
-- tries are not counted (a row made for it starts at 0 tries; an existing row keeps
-- its count and stays due no later than asked). Optional columns from $5 on, as in record_failure.
INSERT INTO face_detection_failures AS f
    (image_path, retry_count, last_error, last_error_type, last_failure_at, next_retry_after, permanently_failed
     /*optional_columns*/)
VALUES ($1, 0, $2, $3, now(), now() + make_interval(secs => $4::float8), FALSE /*optional_values*/)
ON CONFLICT (image_path) DO UPDATE
    SET last_error = EXCLUDED.last_error,
        last_error_type = EXCLUDED.last_error_type,
        last_failure_at = now(),
        next_retry_after = EXCLUDED.next_retry_after,
        permanently_failed = FALSE
        /*optional_updates*/
RETURNING retry_count, permanently_failed, next_retry_after
