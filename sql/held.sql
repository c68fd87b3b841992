-- Deletions held for the operator (reactor.store.held): a confirmed mass vanish waits for
-- `reactor deletions --apply` instead of being applied, or retried, by the watcher.

-- name: hold_deletions
INSERT INTO reactor_held_deletions (image_path, reason)
SELECT p, $2::text FROM unnest($1::text[]) AS t(p)
ON CONFLICT (image_path) DO NOTHING
RETURNING image_path

-- name: release_deletions
DELETE FROM reactor_held_deletions WHERE image_path = ANY($1::text[]) RETURNING image_path

-- name: held_count
SELECT count(*) FROM reactor_held_deletions

-- name: held_list
SELECT image_path, held_at, reason,
       EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = h.image_path) AS has_result
FROM reactor_held_deletions h ORDER BY image_path LIMIT $1

-- name: held_all_locked
-- `reactor deletions --apply`: the rows it decides on, locked against a concurrent apply.
SELECT image_path FROM reactor_held_deletions ORDER BY image_path FOR UPDATE

-- name: held_delete
-- {source} is one of reactor.held's tables, filled in as a quoted identifier.
DELETE FROM {source} WHERE image_path = ANY($1::text[])
