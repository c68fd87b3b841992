-- Notifications (reactor.store.notifications): sending one, and the roles that may send
-- what acts (reactor.core.gate).

-- name: notify
SELECT pg_notify($1, $2)

-- name: backend_role
-- Who sent a notification (reactor.core.gate): asyncpg hands over the notifying backend's
-- pid; its role (usename) is visible in pg_stat_activity to every role.
SELECT usename::text FROM pg_stat_activity WHERE pid = $1

-- name: current_role
SELECT current_user::text
