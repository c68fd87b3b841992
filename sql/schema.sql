-- face-reactor schema. `reactor db init` runs this file as one script, in one
-- transaction, under an advisory lock. Every statement is idempotent, so a second
-- run changes nothing. Bump reactor.store.schema.SCHEMA_VERSION when this file changes.

-- One path rule for every reactor table: relative, forward slashes, no '.' or '..'
-- segment, and never inside a derived folder (seeds/002: face crops recorded as
-- photos). The application applies the configurable patterns; this is the floor.
CREATE OR REPLACE FUNCTION reactor_valid_image_path(p TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p IS NOT NULL
       AND p <> ''
       AND left(p, 1) <> '/'
       AND p !~ '^[A-Za-z]:'
       AND strpos(p, E'\\') = 0
       AND strpos(p, '//') = 0
       AND ('/' || p || '/') !~ '/\.{1,2}/'
       AND lower('/' || p) !~ '/(face_crops|thumbnails|thumbs|\.thumbnails)/'
$$;

CREATE TABLE IF NOT EXISTS reactor_schema (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version INTEGER NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The done marker: one row per image examined successfully, zero faces included.
CREATE TABLE IF NOT EXISTS face_metadata (
    image_path TEXT PRIMARY KEY,
    face_count INTEGER NOT NULL CHECK (face_count >= 0),
    model TEXT NOT NULL,
    scale REAL NOT NULL,
    original_width INTEGER,
    original_height INTEGER,
    decode_ms REAL,
    detect_ms REAL,
    encode_ms REAL,
    instance_id TEXT,
    claim_token BIGINT,
    detected_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Fingerprint of the detector settings that produced the result (`redetect --stale`).
    settings TEXT,
    CONSTRAINT face_metadata_path_valid CHECK (reactor_valid_image_path(image_path))
);

-- Adopting a legacy face_metadata (seeds/001, `save_face_data`): the table exists
-- and other programs read it, so CREATE TABLE above changed nothing. The columns the
-- reactor writes are added where missing, nullable (old rows have no value for
-- them); no legacy column is dropped, renamed or rewritten, and columns the reactor
-- does not know stay as they are. ALTER TABLE runs only when a column is missing:
-- it takes an exclusive lock on a table that readers use.
DO $$
DECLARE
    wanted CONSTANT TEXT[][] := ARRAY[
        ['face_count', 'INTEGER'], ['model', 'TEXT'], ['scale', 'REAL'],
        ['original_width', 'INTEGER'], ['original_height', 'INTEGER'], ['decode_ms', 'REAL'],
        ['detect_ms', 'REAL'], ['encode_ms', 'REAL'], ['instance_id', 'TEXT'], ['claim_token', 'BIGINT'],
        ['detected_at', 'TIMESTAMPTZ'], ['settings', 'TEXT'],
        -- The resolution each result was detected at: the size of the image the model
        -- scanned, dlib's upsampling on top of it, and the smallest face (in the
        -- original's pixels) findable there; NULL on rows written before them.
        ['detect_width', 'INTEGER'], ['detect_height', 'INTEGER'], ['upsample', 'INTEGER'],
        ['min_face_px', 'INTEGER']];
    i INTEGER;
BEGIN
    FOR i IN 1 .. array_length(wanted, 1) LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_attribute
            WHERE attrelid = 'face_metadata'::regclass AND attname = wanted[i][1] AND NOT attisdropped
        ) THEN
            EXECUTE format('ALTER TABLE face_metadata ADD COLUMN %I %s', wanted[i][1], wanted[i][2]);
        END IF;
    END LOOP;
    -- Results are upserted by image_path and face rows reference it: a legacy table
    -- keyed by a serial id needs a unique index on the path. `reactor db init` refuses
    -- first if legacy rows repeat a path.
    IF NOT EXISTS (
        SELECT 1 FROM pg_index x
        WHERE x.indrelid = 'face_metadata'::regclass AND x.indisunique AND x.indpred IS NULL
          AND x.indnatts = 1
          AND x.indkey[0] = (SELECT attnum FROM pg_attribute
                             WHERE attrelid = 'face_metadata'::regclass AND attname = 'image_path')
    ) THEN
        CREATE UNIQUE INDEX face_metadata_image_path_key ON face_metadata (image_path);
    END IF;
    -- Legacy rows predate the path rule (seeds/002: face crops): NOT VALID, as for failures.
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'face_metadata'::regclass AND conname = 'face_metadata_path_valid'
    ) THEN
        ALTER TABLE face_metadata ADD CONSTRAINT face_metadata_path_valid
            CHECK (reactor_valid_image_path(image_path)) NOT VALID;
    END IF;
END
$$;

-- Re-detection requested for an image that already has a result (`reactor redetect`):
-- the request outlives restarts and failed tries, and goes with the next success.
CREATE TABLE IF NOT EXISTS reactor_redetect (
    image_path TEXT PRIMARY KEY,
    -- What asked for it (legacy_zero, or a `reactor redetect` run), for its progress.
    reason TEXT NOT NULL,
    -- refresh: matched faces keep their ids; reset: every face gets a new id.
    mode TEXT NOT NULL DEFAULT 'refresh' CHECK (mode IN ('refresh', 'reset')),
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT reactor_redetect_path_valid CHECK (reactor_valid_image_path(image_path))
);

-- One row per face: the box in the original, EXIF-oriented image's pixels.
-- face_id is the face's identity for downstream programs: it stays the same when the
-- image is detected again and the face is still there (reactor.util.identity).
CREATE TABLE IF NOT EXISTS face_detections (
    face_id BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
    image_path TEXT NOT NULL
        REFERENCES face_metadata (image_path) ON DELETE CASCADE ON UPDATE CASCADE,
    face_index INTEGER NOT NULL CHECK (face_index >= 0),
    box_top INTEGER NOT NULL,
    box_right INTEGER NOT NULL,
    box_bottom INTEGER NOT NULL,
    box_left INTEGER NOT NULL,
    score REAL,
    encoding REAL[] NOT NULL CHECK (cardinality(encoding) = 128),
    model TEXT NOT NULL,
    -- NULL for faces imported from the legacy columns: their detection scale is unknown.
    scale REAL,
    PRIMARY KEY (image_path, face_index),
    CONSTRAINT face_detections_path_valid CHECK (reactor_valid_image_path(image_path))
);
DO $$
BEGIN
    -- Schema version 1 had scale NOT NULL and no face ids.
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'face_detections'::regclass
               AND attname = 'scale' AND attnotnull) THEN
        ALTER TABLE face_detections ALTER COLUMN scale DROP NOT NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'face_detections'::regclass
                   AND attname = 'face_id' AND NOT attisdropped) THEN
        ALTER TABLE face_detections ADD COLUMN face_id BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE;
    END IF;
END
$$;

-- The legacy failures table (seeds/000, seeds/001). Production copies may lack
-- columns such as file_size_bytes; the reactor adapts to what exists.
CREATE TABLE IF NOT EXISTS face_detection_failures (
    id SERIAL PRIMARY KEY,
    image_path TEXT NOT NULL UNIQUE,
    retry_count INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_type TEXT,
    original_width INTEGER,
    original_height INTEGER,
    file_size_bytes BIGINT,
    last_attempted_scale REAL,
    first_failure_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    last_failure_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    next_retry_after TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    permanently_failed BOOLEAN DEFAULT FALSE,
    -- An ai_metadata path that breaks the rule is itself recorded here, as a permanent
    -- invalid_path failure (never opened), so that users see it in `reactor failures list`.
    -- IS NOT DISTINCT FROM: a NULL type must not slip past the rule (NULL OR FALSE passes a CHECK).
    CONSTRAINT face_detection_failures_path_valid
        CHECK (last_error_type IS NOT DISTINCT FROM 'invalid_path' OR reactor_valid_image_path(image_path))
);

-- A legacy table predates the path rule and may hold rows that break it (seeds/002:
-- face crops recorded as photos). NOT VALID checks new and updated rows only, so
-- init never fails on old data; `reactor db check` reports the constraint as not
-- validated until the integrity tools have cleaned those rows.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'face_detection_failures'::regclass
          AND conname = 'face_detection_failures_path_valid'
    ) THEN
        IF EXISTS (SELECT 1 FROM face_detection_failures) THEN
            ALTER TABLE face_detection_failures ADD CONSTRAINT face_detection_failures_path_valid
                CHECK (last_error_type IS NOT DISTINCT FROM 'invalid_path' OR reactor_valid_image_path(image_path)) NOT VALID;
        ELSE
            ALTER TABLE face_detection_failures ADD CONSTRAINT face_detection_failures_path_valid
                CHECK (last_error_type IS NOT DISTINCT FROM 'invalid_path' OR reactor_valid_image_path(image_path));
        END IF;
    END IF;
END
$$;

-- Schema version 3: the file's mtime when it failed (file_size_bytes holds its size),
-- so that a permanent failure is tried again once the file changes (a copy that was
-- caught half-written). Nullable; ALTER only when missing (it locks the table).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'face_detection_failures'::regclass
                   AND attname = 'file_mtime_ns' AND NOT attisdropped) THEN
        ALTER TABLE face_detection_failures ADD COLUMN file_mtime_ns BIGINT;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS idx_fdf_next_retry
    ON face_detection_failures (next_retry_after) WHERE permanently_failed = FALSE;
CREATE INDEX IF NOT EXISTS idx_fdf_error_type ON face_detection_failures (last_error_type);

-- What the file of a result was when it was detected: size, mtime and a fingerprint of
-- its first and last 64 KiB (reactor.util.identity). On a network share, where inodes are
-- not stable, a vanished result whose identity reappears at another path is a move.
-- It follows its result through ON UPDATE CASCADE and goes with it.
CREATE TABLE IF NOT EXISTS reactor_file_identity (
    image_path TEXT PRIMARY KEY
        REFERENCES face_metadata (image_path) ON DELETE CASCADE ON UPDATE CASCADE,
    size_bytes BIGINT NOT NULL,
    mtime_ns BIGINT,
    fingerprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_reactor_file_identity_size ON reactor_file_identity (size_bytes);

-- Deletions held for the operator: a confirmed mass vanish (more than
-- watcher.vanish_fraction of the share, seen twice) is a decision, not something the
-- watcher applies. The results stay until `reactor deletions --apply` (with a backup).
CREATE TABLE IF NOT EXISTS reactor_held_deletions (
    image_path TEXT PRIMARY KEY,
    held_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason TEXT NOT NULL
);

-- Replies to `reactor sweep`, written only by the reactor: anyone who can connect may
-- NOTIFY, so a notification on the control channel only wakes the command, which
-- believes nothing but these rows (no role but the reactor's may write them).
-- `reply` is the JSON text of the reply (ASCII, so whatever a count holds is storable).
CREATE TABLE IF NOT EXISTS reactor_control_replies (
    request_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    swept BOOLEAN NOT NULL,
    reply TEXT NOT NULL,
    replied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, instance_id)
);

-- Claims: an instance leases an image before detecting it. The token is a fencing
-- token: a result is written only while its claim row still carries that token.
CREATE SEQUENCE IF NOT EXISTS reactor_claim_token_seq;

CREATE TABLE IF NOT EXISTS reactor_claims (
    image_path TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    token BIGINT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ NOT NULL,
    CONSTRAINT reactor_claims_path_valid CHECK (reactor_valid_image_path(image_path))
);
CREATE INDEX IF NOT EXISTS idx_reactor_claims_instance ON reactor_claims (instance_id);

-- One heartbeat row per running instance, read by `reactor status`.
CREATE TABLE IF NOT EXISTS reactor_instances (
    instance_id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    state JSONB NOT NULL DEFAULT '{}'::jsonb
);

-- Orphans are held, not deleted (reactor.store.orphans): a result or failure whose
-- ai_metadata row is gone is marked with the time, and purged only after
-- sweep.orphan_grace_hours if it is still orphaned then. Added by ALTER so that
-- existing (legacy) tables get the column too.
ALTER TABLE face_metadata ADD COLUMN IF NOT EXISTS orphaned_at TIMESTAMPTZ;
ALTER TABLE face_detection_failures ADD COLUMN IF NOT EXISTS orphaned_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS idx_face_metadata_orphaned
    ON face_metadata (orphaned_at) WHERE orphaned_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_fdf_orphaned
    ON face_detection_failures (orphaned_at) WHERE orphaned_at IS NOT NULL;

-- What the sweeps purged, per table and time: the purge bound (sweep.orphan_purge_max
-- or the fraction) holds over a window of sweep.orphan_purge_window_hours, counted
-- from these rows in the statement that deletes, so orphans marked in batches at
-- different times cannot drain a table one batch per sweep.
CREATE TABLE IF NOT EXISTS reactor_orphan_purges (
    table_name TEXT NOT NULL,
    purged_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    purged INTEGER NOT NULL CHECK (purged >= 0),
    PRIMARY KEY (table_name, purged_at)
);

-- Schema version 5: the change log and the sweep's state (reactor.store.changes).
-- The ai_metadata trigger appends the path of every row that became processed or
-- went away; the regular sweep reads the log instead of the whole table, and deletes
-- what it has read (rows, not "everything up to a number": a transaction that took a
-- lower seq may commit after a higher one was read). A TRUNCATE of ai_metadata is one
-- row with a NULL path: it asks for the full walk. The log is a list of hints, never
-- the truth (the full walk is): anyone may append to it through reactor_log_changes.
CREATE TABLE IF NOT EXISTS reactor_changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    image_path TEXT,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row: the highest change read (watermark) and the full walk's position, so that
-- a restart, or another instance taking the sweep's advisory lock, continues the walk
-- where it stopped. walk_phase NULL: no walk under way.
CREATE TABLE IF NOT EXISTS reactor_sweep_state (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    watermark BIGINT NOT NULL DEFAULT 0,
    walk_phase TEXT,
    walk_after TEXT NOT NULL DEFAULT '',
    walk_rows BIGINT NOT NULL DEFAULT 0,
    walk_started_at TIMESTAMPTZ,
    walk_finished_at TIMESTAMPTZ,
    -- A TRUNCATE seen in the log, or a change log past its bound: walk now.
    walk_requested_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The trigger runs as whichever role writes ai_metadata, which has no privilege on
-- reactor tables: it appends through this function, which runs as its owner (the
-- search_path is fixed to the one it was created under, as SECURITY DEFINER needs).
-- NULL (not an empty array) records a TRUNCATE.
CREATE OR REPLACE FUNCTION reactor_log_changes(paths TEXT[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    INSERT INTO reactor_changes (image_path)
    SELECT p FROM unnest(coalesce(paths, ARRAY[NULL::text])) AS p
$$;
