-- The replies to `reactor sweep` requests (reactor.store.control_replies).

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
