-- 004_create_c3d_metadata.sql
--
-- What: the legacy `c3d_metadata` table (one row per uploaded C3D file) with its
--       CHECKs, indexes and the updated_at trigger, exactly as described in
--       shared/design/legacy-schema.md.
-- Why:  real legacy databases contain this table; recreating it lets the data
--       migration (c3d_metadata -> therapy_sessions) and the compatibility views
--       (007) be developed and tested against the legacy shape. It is replaced
--       by therapy_sessions (006) and archived only by migration 008.
--
-- Legacy quirks kept on purpose: session_date/resolved_session_date are
-- TIMESTAMP WITHOUT TIME ZONE; patient_id/therapist_id are free TEXT (patient
-- codes like 'P005', not FKs); file_hash is indexed but NOT unique (the same file
-- may be uploaded under two paths); game_metadata values are strings.
--
-- Runs inside the single transaction opened by the migration runner.

CREATE TABLE c3d_metadata (
    id                     UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    -- file
    file_path              TEXT NOT NULL UNIQUE,
    file_hash              TEXT NOT NULL,            -- SHA-256 hex of the file contents
    file_size_bytes        BIGINT NOT NULL,

    -- clinical ids
    patient_id             TEXT,                     -- patient code, e.g. 'P005' (from the storage folder)
    therapist_id           TEXT,
    session_id             TEXT,
    session_date           TIMESTAMP,                -- no time zone (legacy)
    session_type           TEXT CHECK (session_type IN ('baseline', 'training', 'assessment')),
    session_duration       FLOAT,                    -- seconds
    session_notes          TEXT,

    -- game (values stored as strings): game_name, level, duration, therapist_id,
    -- group_id, time, player_name, score
    game_metadata          JSONB,

    -- technical (from the C3D header)
    channel_names          JSONB,                    -- array of C3D analog labels
    channel_count          INTEGER,
    sampling_rate          FLOAT,                    -- Hz
    duration_seconds       FLOAT,
    frame_count            INTEGER,

    -- resolved
    resolved_patient_id    TEXT,
    resolved_therapist_id  TEXT,
    resolved_session_date  TIMESTAMP,                -- no time zone (legacy)
    size_category          TEXT CHECK (size_category IN ('small', 'medium', 'large')),

    -- storage
    content_type           TEXT,
    upload_date            TIMESTAMP WITH TIME ZONE,
    bucket_name            TEXT DEFAULT 'c3d-files',
    object_metadata        JSONB,

    -- processing
    processing_status      TEXT DEFAULT 'pending'
                           CHECK (processing_status IN ('pending', 'processing', 'completed', 'failed')),
    processing_version     TEXT,
    error_message          TEXT,

    -- times
    created_at             TIMESTAMP WITH TIME ZONE DEFAULT now(),
    updated_at             TIMESTAMP WITH TIME ZONE DEFAULT now(),   -- trigger-maintained
    processed_at           TIMESTAMP WITH TIME ZONE
);

CREATE INDEX idx_c3d_metadata_file_hash             ON c3d_metadata (file_hash);
CREATE INDEX idx_c3d_metadata_patient_id            ON c3d_metadata (patient_id);
CREATE INDEX idx_c3d_metadata_therapist_id          ON c3d_metadata (therapist_id);
CREATE INDEX idx_c3d_metadata_resolved_patient_id   ON c3d_metadata (resolved_patient_id);
CREATE INDEX idx_c3d_metadata_resolved_therapist_id ON c3d_metadata (resolved_therapist_id);
CREATE INDEX idx_c3d_metadata_session_date          ON c3d_metadata (session_date);
CREATE INDEX idx_c3d_metadata_resolved_session_date ON c3d_metadata (resolved_session_date);
CREATE INDEX idx_c3d_metadata_size_category         ON c3d_metadata (size_category);
CREATE INDEX idx_c3d_metadata_processing_status     ON c3d_metadata (processing_status);
CREATE INDEX idx_c3d_metadata_created_at            ON c3d_metadata (created_at DESC);
CREATE INDEX idx_c3d_metadata_upload_date           ON c3d_metadata (upload_date DESC);

CREATE TRIGGER trg_c3d_metadata_updated_at
    BEFORE UPDATE ON c3d_metadata
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

COMMENT ON TABLE c3d_metadata IS 'Legacy: one row per uploaded C3D file. Superseded by therapy_sessions (006); archived by 008.';
