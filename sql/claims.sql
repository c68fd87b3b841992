-- Claims (reactor.store.claims): an instance leases an image before detecting it.
-- Loaded with reactor.store.sql.Queries("claims.sql"); every block is run against a real
-- database by tests/test_sql_blocks.py.

-- name: claim_image
-- A lease with a fencing token. A live lease of another instance blocks the
-- claim (no row returned); an expired one is taken over with a new token. This
-- instance may re-take its own claim (a commit whose reply was lost on a broken
-- connection): the detection loop never claims a path whose result it is still
-- writing, so no write of its own is fenced.
-- The claim's commit does not wait for the WAL flush (synchronous_commit off, for
-- this transaction only: set_config(..., true)). A crash of the server can lose
-- only the last few claims, never a result: WAL is written in order, so the
-- synchronous commit of a result flushes the claim before it too. A lost claim
-- means the image's lease is simply not there: the result write finds no row for
-- its token and is fenced (never written), and the image is claimed and detected
-- again, like after an expired lease. The token sequence may then hand a lost
-- token out again; if the new claimant gets it, the old write can still succeed
-- and the new claimant's write is fenced instead: one result either way, from an
-- instance that detected the image, and never over a newer one.
INSERT INTO reactor_claims AS c (image_path, instance_id, token, lease_until)
SELECT $1::text, $2::text, nextval('reactor_claim_token_seq'), now() + make_interval(secs => $3::float8)
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
ON CONFLICT (image_path) DO UPDATE
    SET instance_id = EXCLUDED.instance_id,
        token = EXCLUDED.token,
        claimed_at = now(),
        lease_until = EXCLUDED.lease_until
    WHERE c.lease_until < now() OR c.instance_id = EXCLUDED.instance_id
RETURNING token

-- name: image_state
-- Run after claim_image in the same transaction: a new statement under READ
-- COMMITTED sees a result committed by an instance that finished just before.
SELECT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = $1) AS done,
       EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = $1 AND a.is_processed) AS processed,
       f.image_path IS NOT NULL AS has_failure,
       coalesce((to_jsonb(f) ->> 'retry_count')::int, 0) AS retry_count,
       coalesce((to_jsonb(f) ->> 'permanently_failed')::boolean, false) AS permanently_failed,
       coalesce(f.next_retry_after > now(), false) AS backing_off,
       (to_jsonb(f) ->> 'last_attempted_scale')::real AS last_scale,
       f.last_error_type,
       q.image_path IS NOT NULL AS redetect_requested,
       q.mode AS redetect_mode
FROM (VALUES (1)) AS one (x)
LEFT JOIN face_detection_failures f ON f.image_path = $1
-- image_path is reactor_redetect's primary key: one request at most.
LEFT JOIN reactor_redetect q ON q.image_path = $1

-- name: renew_claim
-- Only the claim in flight is renewed: a claim this instance abandoned expires.
UPDATE reactor_claims SET lease_until = now() + make_interval(secs => $3::float8)
WHERE image_path = $1 AND token = $2

-- name: release_claim
DELETE FROM reactor_claims WHERE image_path = $1 AND token = $2 RETURNING token

-- name: release_instance_claims
-- Only the claims this process drew ($2, its fencing tokens): after its id was taken
-- over, the other claims under the id are the new owner's.
DELETE FROM reactor_claims WHERE instance_id = $1 AND token = ANY($2::bigint[])

-- name: purge_stale_claims
-- Claims expired long ago whose image nobody took over (its row went away).
DELETE FROM reactor_claims WHERE lease_until < now() - make_interval(secs => $1::float8)
