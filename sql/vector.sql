-- Similarity search in PostgreSQL (`reactor similar`), where the server has the
-- pgvector extension (the embedded pgserver ships it). `reactor db init` runs this
-- file after schema.sql, inside the same transaction, only when the extension is
-- available; without it everything else works as before and `db check` says so.
-- Every statement is idempotent.
CREATE EXTENSION IF NOT EXISTS vector;

-- The encoding again, as a vector: dlib's same-person threshold is an L2 distance of 0.6.
ALTER TABLE face_detections ADD COLUMN IF NOT EXISTS embedding vector(128);

-- Kept in step with encoding by the database itself, so that no writer of face rows
-- (the reactor, an import, a restore) can leave the two apart.
CREATE OR REPLACE FUNCTION reactor_face_embedding() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.embedding := NEW.encoding::vector(128);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER reactor_face_embedding
    BEFORE INSERT OR UPDATE OF encoding ON face_detections
    FOR EACH ROW EXECUTE FUNCTION reactor_face_embedding();

CREATE INDEX IF NOT EXISTS idx_face_detections_embedding
    ON face_detections USING hnsw (embedding vector_l2_ops);
