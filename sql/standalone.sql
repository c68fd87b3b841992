-- Standalone mode only (the embedded database): the reactor owns ai_metadata here.
-- Against a vision database this file is never run; ai_metadata belongs upstream.
CREATE TABLE IF NOT EXISTS ai_metadata (
    id BIGSERIAL PRIMARY KEY,
    image_path TEXT NOT NULL UNIQUE,
    is_processed BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The sweep pages through processed paths; against a vision database `reactor db sql`
-- recommends the same index to the owner of ai_metadata.
CREATE INDEX IF NOT EXISTS idx_ai_metadata_processed_path ON ai_metadata (image_path) WHERE is_processed;
