-- Catalog queries for `reactor db init` and `reactor db check`. Relations are named
-- as text and resolved with to_regclass, so they follow search_path like the rest
-- of the reactor's SQL and a missing relation yields no rows instead of an error.

-- name: relation_info
SELECT c.oid::bigint AS oid,
       c.relkind::text AS kind,
       pg_get_userbyid(c.relowner) AS owner,
       pg_has_role(current_user, c.relowner, 'USAGE') AS owned
FROM pg_class AS c
WHERE c.oid = to_regclass($1::text);

-- name: table_columns
SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') AS has_default
FROM pg_attribute AS a
WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: table_indexes
SELECT i.relname::text AS name, pg_get_indexdef(i.oid) AS definition, x.indisunique AS is_unique,
       (SELECT array_agg(a.attname::text ORDER BY k.ord)
        FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute AS a ON a.attrelid = x.indrelid AND a.attnum = k.attnum) AS columns,
       x.indpred IS NOT NULL AS partial
FROM pg_index AS x
JOIN pg_class AS i ON i.oid = x.indexrelid
WHERE x.indrelid = to_regclass($1::text)
ORDER BY i.relname;

-- name: check_constraints
SELECT conname::text AS name, pg_get_constraintdef(oid) AS definition, convalidated AS validated
FROM pg_constraint
WHERE conrelid = to_regclass($1::text) AND contype = 'c'
ORDER BY conname;

-- name: foreign_keys
SELECT conname::text AS name, pg_get_constraintdef(oid) AS definition
FROM pg_constraint
WHERE conrelid = to_regclass($1::text) AND contype = 'f'
ORDER BY conname;

-- name: table_triggers
SELECT t.tgname::text AS name, t.tgtype::integer AS type, t.tgenabled::text AS enabled,
       p.proname::text AS function, t.tgoldtable::text AS old_table, t.tgnewtable::text AS new_table
FROM pg_trigger AS t
JOIN pg_proc AS p ON p.oid = t.tgfoid
WHERE t.tgrelid = to_regclass($1::text) AND NOT t.tgisinternal
ORDER BY t.tgname;

-- name: function_info
SELECT p.oid::bigint AS oid, pg_get_userbyid(p.proowner) AS owner,
       pg_has_role(current_user, p.proowner, 'USAGE') AS owned,
       coalesce(p.proconfig, '{}') AS config, p.prosrc AS source
FROM pg_proc AS p
WHERE p.proname = $1::text AND pg_function_is_visible(p.oid);

-- name: role_context
SELECT current_user::text AS role, current_schema()::text AS schema,
       coalesce(has_schema_privilege(current_schema(), 'CREATE'), FALSE) AS can_create,
       current_database()::text AS database,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser;

-- name: table_privilege
SELECT coalesce(has_table_privilege(to_regclass($1::text), $2::text), FALSE) AS granted;

-- name: sequence_privilege
SELECT coalesce(has_sequence_privilege(to_regclass($1::text), 'USAGE'), FALSE) AS granted;

-- name: serial_sequence
-- The sequence behind a serial or identity column (pg_get_serial_sequence raises
-- on a missing table; this yields no row).
SELECT s.oid::regclass::text AS sequence
FROM pg_depend AS d
JOIN pg_class AS s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i') AND d.refobjid = to_regclass($1::text) AND a.attname = $2::text;

-- name: schema_version
SELECT version, applied_at FROM reactor_schema;

-- name: record_version
INSERT INTO reactor_schema (version) VALUES ($1)
ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, applied_at = now()
WHERE reactor_schema.version IS DISTINCT FROM EXCLUDED.version;

-- name: init_lock
SELECT pg_advisory_xact_lock($1);

-- name: duplicate_paths
-- Paths that a legacy face_metadata holds more than once: a unique index on
-- image_path cannot be built over them.
SELECT image_path, count(*)::int AS copies
FROM face_metadata
GROUP BY image_path
HAVING count(*) > 1
ORDER BY image_path
LIMIT 5;

-- name: legacy_not_imported
-- Legacy results (no model: the reactor did not write them) that have faces in the
-- legacy columns and none in face_detections: `reactor db import-legacy` copies them.
SELECT count(*)::int
FROM face_metadata m
WHERE m.model IS NULL AND coalesce(m.face_count, 0) > 0
  AND NOT EXISTS (SELECT 1 FROM face_detections d WHERE d.image_path = m.image_path);

-- name: vector_extension
SELECT exists(SELECT 1 FROM pg_available_extensions WHERE name = 'vector') AS available,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS installed;

-- name: embedding_column
SELECT exists(SELECT 1 FROM pg_attribute
              WHERE attrelid = to_regclass('face_detections') AND attname = 'embedding' AND NOT attisdropped);
-- name: schemas_without_usage
-- Schemas that hold one of these relations, invisible to the current role because
-- it lacks USAGE there: to_regclass then finds nothing, as if the table did not exist.
SELECT DISTINCT n.nspname::text AS schema, pg_get_userbyid(n.nspowner) AS owner
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relname = ANY($1::text[])
  AND NOT has_schema_privilege(n.oid, 'USAGE')
  AND to_regclass(c.relname::text) IS NULL
ORDER BY 1;
