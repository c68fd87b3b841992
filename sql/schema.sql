-- face-reactor schema. `reactor db init` runs this file as one script, in one
-- transaction, under an advisory lock. Every statement is idempotent, so a second
-- run changes nothing. Bump reactor.schema.SCHEMA_VERSION when this file changes.

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
    CONSTRAINT face_metadata_path_valid CHECK (reactor_valid_image_path(image_path))
);

-- The resolution each result was detected at (issue 16): the size of the image the model
-- scanned, dlib's upsampling on top of it, and the smallest face (in the original's
-- pixels) findable there. Added to tables made before these columns existed; NULL on
-- rows written before them.
ALTER TABLE face_metadata
    ADD COLUMN IF NOT EXISTS detect_width INTEGER,
    ADD COLUMN IF NOT EXISTS detect_height INTEGER,
    ADD COLUMN IF NOT EXISTS upsample INTEGER,
    ADD COLUMN IF NOT EXISTS min_face_px INTEGER;

-- One row per face: the box in the original, EXIF-oriented image's pixels.
CREATE TABLE IF NOT EXISTS face_detections (
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
    scale REAL NOT NULL,
    PRIMARY KEY (image_path, face_index),
    CONSTRAINT face_detections_path_valid CHECK (reactor_valid_image_path(image_path))
);

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

CREATE INDEX IF NOT EXISTS idx_fdf_next_retry
    ON face_detection_failures (next_retry_after) WHERE permanently_failed = FALSE;
CREATE INDEX IF NOT EXISTS idx_fdf_error_type ON face_detection_failures (last_error_type);

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
