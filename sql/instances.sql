-- Running instances (reactor.store.instances): heartbeat rows in reactor_instances, and the
-- session lock that keeps one process per instance id.

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

-- name: instance_try_lock
-- One process per instance id (reactor.core.instance_lock): a session lock, keyed on the id.
SELECT pg_try_advisory_lock(hashtextextended('face-reactor-instance:' || $1::text, 0))
