-- Pieces of the SQL a database owner runs (`reactor db sql`), around schema.sql and
-- the trigger. psql runs the file with ON_ERROR_STOP, so a RAISE here stops it
-- before anything is changed, with one line saying who must do what.

-- name: owner_preflight
-- Who runs the file must own ai_metadata and every reactor object that exists
-- already (a legacy face_detection_failures gets columns added), and may create
-- objects in the schema. A superuser passes every test (pg_has_role is true).
DO $preflight$
DECLARE
    obj record;
    schema_name text := current_schema();
BEGIN
    IF to_regclass('ai_metadata') IS NULL THEN
        RAISE EXCEPTION 'face-reactor: no ai_metadata visible in database % (search_path %); run this file in the vision database, as the owner of ai_metadata',
            current_database(), current_setting('search_path');
    END IF;
    FOR obj IN
        SELECT c.relname::text AS name, pg_get_userbyid(c.relowner) AS owner, 'table'::text AS kind
        FROM pg_class AS c
        WHERE c.oid IN (SELECT to_regclass(n) FROM unnest(ARRAY[
            'ai_metadata', 'face_metadata', 'face_detections', 'face_detection_failures', 'reactor_claims',
            'reactor_instances', 'reactor_schema', 'reactor_claim_token_seq', 'reactor_redetect',
            'reactor_file_identity', 'reactor_held_deletions', 'reactor_orphan_purges',
            'reactor_control_replies', 'reactor_changes', 'reactor_sweep_state']) AS n)
          AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
        UNION ALL
        SELECT p.proname::text, pg_get_userbyid(p.proowner), 'function'
        FROM pg_proc AS p
        WHERE p.proname IN ('reactor_valid_image_path', 'reactor_ai_metadata_notify', 'reactor_face_embedding',
                            'reactor_log_changes')
          AND pg_function_is_visible(p.oid) AND NOT pg_has_role(current_user, p.proowner, 'USAGE')
    LOOP
        RAISE EXCEPTION 'face-reactor: role % does not own % % (owned by %); run this file as that owner or a superuser (docs/database-setup.md)',
            current_user, obj.kind, obj.name, obj.owner;
    END LOOP;
    IF schema_name IS NULL OR NOT has_schema_privilege(schema_name, 'CREATE') THEN
        RAISE EXCEPTION 'face-reactor: role % lacks CREATE on schema %; the database owner runs: GRANT CREATE ON SCHEMA % TO %',
            current_user, coalesce(schema_name, 'public'), coalesce(schema_name, 'public'), current_user;
    END IF;
END
$preflight$;
