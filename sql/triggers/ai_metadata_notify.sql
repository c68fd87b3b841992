-- NOTIFY the reactor when an ai_metadata row becomes processed or a processed row
-- goes away, and record the row's path in the change log (reactor_changes, through
-- reactor_log_changes in schema.sql) that the regular sweep reads. `reactor db init` runs this file as one script inside its transaction;
-- every statement is idempotent.
--
-- Statement-level triggers with transition tables, so that a bulk UPDATE of 100,000
-- rows costs one trigger call and at most one "bulk" hint, not 100,000 queued
-- notifications. PostgreSQL forbids transition tables on a trigger that fires for
-- several events, hence three triggers sharing one function.
--
-- Payloads (JSON text, far below the 8000-byte NOTIFY limit):
--   {"type": "processed", "path": "<image_path>"}   a row became processed, or a
--                                                   processed row got this new path
--   {"type": "deleted", "path": "<image_path>"}     a processed row was deleted, or
--                                                   its path changed away from this one
--   {"type": "bulk", "count": N}                    more than 1000 rows in one statement
--                                                   (or paths too long for a payload):
--                                                   run the sweep instead
--
-- Rows are compared as sets of paths, not paired by key: the upstream table's key
-- is not ours to rely on, and a path change is exactly "old path gone, new path
-- processed". A no-op UPDATE yields no difference and so sends nothing.
--
-- The NOTIFY queue (8 GB by default) fills when a listener stops reading; a full queue
-- fails the *commit* of the transaction that notified, outside any exception block. So
-- the trigger looks at pg_notification_queue_usage() first: above half full it sends one
-- bulk hint instead of a notification per row, above 90 % nothing (the reactor's sweep
-- finds those rows anyway), and the upstream's write never fails for a hint.
--
-- The channel is a literal in the function's body: `reactor db init` and `reactor db
-- sql` write database.channel into the `channel CONSTANT` line below before running
-- this file, and `reactor db check` reads it back. A literal, not a custom setting
-- (`SET reactor.channel`): setting a custom parameter needs a superuser on PostgreSQL
-- 15+, and the owner of ai_metadata is usually not one. The function runs as whichever
-- role writes ai_metadata (it is not SECURITY DEFINER): pg_notify needs no privilege.

CREATE OR REPLACE FUNCTION reactor_ai_metadata_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    -- Above this many events in one statement, send one bulk hint instead.
    max_rows integer := 1000;
    -- pg_notify rejects payloads of 8000 bytes or more.
    max_payload CONSTANT integer := 7999;
    channel CONSTANT text := 'face_reactor';
    kinds text[] := '{}';
    paths text[] := '{}';
    total integer;
    i integer;
    overflow integer := 0;
    payload text;
    payloads text[] := '{}';
    queue_usage double precision;
BEGIN
    -- A notification is only a hint (the sweep is the truth): whatever goes wrong
    -- here must never fail the upstream pipeline's write, so errors become a WARNING.
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            -- No rows to name: the change log asks the sweep for its full walk.
            PERFORM reactor_log_changes(NULL);
            RETURN NULL;
        ELSIF TG_OP = 'INSERT' THEN
            SELECT coalesce(array_agg(e.type ORDER BY e.path), '{}'), coalesce(array_agg(e.path ORDER BY e.path), '{}')
            INTO kinds, paths
            FROM (SELECT DISTINCT 'processed' AS type, image_path AS path
                  FROM new_rows WHERE is_processed IS TRUE AND image_path IS NOT NULL) AS e;
        ELSIF TG_OP = 'UPDATE' THEN
            SELECT coalesce(array_agg(e.type ORDER BY e.path, e.type), '{}'),
                   coalesce(array_agg(e.path ORDER BY e.path, e.type), '{}')
            INTO kinds, paths
            FROM (
                SELECT 'processed' AS type, p AS path FROM (
                    SELECT image_path FROM new_rows WHERE is_processed IS TRUE AND image_path IS NOT NULL
                    EXCEPT
                    SELECT image_path FROM old_rows WHERE is_processed IS TRUE
                ) AS became(p)
                UNION ALL
                SELECT 'deleted', p FROM (
                    SELECT image_path FROM old_rows WHERE is_processed IS TRUE AND image_path IS NOT NULL
                    EXCEPT
                    SELECT image_path FROM new_rows WHERE image_path IS NOT NULL
                ) AS gone(p)
            ) AS e;
        ELSE
            SELECT coalesce(array_agg(e.type ORDER BY e.path), '{}'), coalesce(array_agg(e.path ORDER BY e.path), '{}')
            INTO kinds, paths
            FROM (SELECT DISTINCT 'deleted' AS type, image_path AS path
                  FROM old_rows WHERE is_processed IS TRUE AND image_path IS NOT NULL) AS e;
        END IF;
        total := cardinality(paths);
        IF total = 0 THEN
            RETURN NULL;
        END IF;
        -- Every event goes to the change log (the regular sweep's input), whatever the
        -- NOTIFY queue holds: a notification may be dropped below, a change may not.
        PERFORM reactor_log_changes(paths);
    EXCEPTION WHEN OTHERS THEN
        -- Without the log the full walk (sweep.walk_interval_hours) still finds the rows.
        RAISE WARNING 'face-reactor: ai_metadata notification skipped (change log not written): % (%)', SQLERRM, SQLSTATE;
        IF total IS NULL OR total = 0 THEN
            RETURN NULL;
        END IF;
    END;
    BEGIN
        queue_usage := pg_notification_queue_usage();
        IF queue_usage > 0.9 THEN
            RAISE WARNING 'face-reactor: NOTIFY queue % %% full, no notification sent (the sweep finds the rows)',
                round((queue_usage * 100)::numeric, 1);
            RETURN NULL;
        ELSIF queue_usage > 0.5 THEN
            max_rows := 0;  -- one bulk hint for the whole statement
        END IF;
        IF total > max_rows THEN
            PERFORM pg_notify(channel, json_build_object('type', 'bulk', 'count', total)::text);
            RETURN NULL;
        END IF;
        FOR i IN 1 .. total LOOP
            payload := json_build_object('type', kinds[i], 'path', paths[i])::text;
            IF octet_length(payload) > max_payload THEN
                overflow := overflow + 1;
            ELSE
                payloads := payloads || payload;
            END IF;
        END LOOP;
        FOREACH payload IN ARRAY payloads LOOP
            PERFORM pg_notify(channel, payload);
        END LOOP;
        IF overflow > 0 THEN
            PERFORM pg_notify(channel, json_build_object('type', 'bulk', 'count', overflow)::text);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'face-reactor: ai_metadata notification skipped: % (%)', SQLERRM, SQLSTATE;
    END;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER reactor_notify_insert
    AFTER INSERT ON ai_metadata
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reactor_ai_metadata_notify();

CREATE OR REPLACE TRIGGER reactor_notify_update
    AFTER UPDATE ON ai_metadata
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reactor_ai_metadata_notify();

CREATE OR REPLACE TRIGGER reactor_notify_delete
    AFTER DELETE ON ai_metadata
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reactor_ai_metadata_notify();

-- TRUNCATE has no transition table: the function only records it in the change log.
CREATE OR REPLACE TRIGGER reactor_notify_truncate
    AFTER TRUNCATE ON ai_metadata
    FOR EACH STATEMENT EXECUTE FUNCTION reactor_ai_metadata_notify();
