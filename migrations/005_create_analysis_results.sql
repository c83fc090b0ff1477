-- 005_create_analysis_results.sql
--
-- What: the legacy `analysis_results` table (JSONB-heavy analysis output, one or
--       more rows per file hash / processing version) and the legacy
--       `analysis_summary` view joining it to c3d_metadata.
-- Why:  real legacy databases contain both; the data migration reads
--       analytics_data from here into emg_statistics / performance_scores /
--       bfr_monitoring (006). The name `analysis_summary` belongs to this legacy
--       view - later migrations must not reuse it.
--
-- processing_params defaults to '{}' (in practice always {} in legacy data):
-- with NULL the UNIQUE(file_hash, processing_version, processing_params) would
-- never fire because NULLs are distinct.
--
-- Runs inside the single transaction opened by the migration runner.

CREATE TABLE analysis_results (
    id                        UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    c3d_metadata_id           UUID NOT NULL REFERENCES c3d_metadata (id) ON DELETE CASCADE,
    file_hash                 TEXT NOT NULL,
    processing_version        TEXT NOT NULL,
    processing_params         JSONB DEFAULT '{}'::jsonb,
    analytics_data            JSONB NOT NULL,        -- per-channel metrics; {} when processing failed
    emg_signals               JSONB,                 -- in practice NULL
    contractions_data         JSONB,                 -- in practice NULL
    processing_time_ms        INTEGER,
    good_contractions_count   INTEGER,               -- in practice NULL
    total_contractions_count  INTEGER,               -- in practice NULL
    cache_hits                INTEGER DEFAULT 0,
    last_accessed_at          TIMESTAMP WITH TIME ZONE DEFAULT now(),
    created_at                TIMESTAMP WITH TIME ZONE DEFAULT now(),
    expires_at                TIMESTAMP WITH TIME ZONE DEFAULT (now() + INTERVAL '30 days'),
    mvc_values                JSONB,                 -- {channel: float}; in practice NULL
    compliance_scores         JSONB,                 -- {left, right}; in practice NULL
    temporal_stats            JSONB,                 -- in practice NULL

    CONSTRAINT analysis_results_file_hash_version_params_key
        UNIQUE (file_hash, processing_version, processing_params)
);

-- Supports the FK (ON DELETE CASCADE from c3d_metadata) and the join in
-- analysis_summary / the data migration. file_hash lookups use the UNIQUE index.
CREATE INDEX idx_analysis_results_c3d_metadata_id ON analysis_results (c3d_metadata_id);

COMMENT ON TABLE analysis_results IS 'Legacy: JSONB analysis output per (file_hash, processing_version, processing_params). Superseded by emg_statistics/performance_scores/bfr_monitoring (006); archived by 008.';

CREATE VIEW analysis_summary AS
SELECT
    m.id                  AS c3d_metadata_id,
    m.file_path,
    m.file_hash,
    m.patient_id,
    m.therapist_id,
    m.session_id,
    m.session_date,
    m.session_type,
    m.channel_count,
    m.duration_seconds,
    m.processing_status,
    r.id                  AS analysis_result_id,
    r.processing_version,
    r.processing_time_ms,
    r.good_contractions_count,
    r.total_contractions_count,
    r.cache_hits,
    r.created_at          AS analyzed_at,
    r.expires_at
FROM c3d_metadata AS m
JOIN analysis_results AS r ON r.c3d_metadata_id = m.id;

COMMENT ON VIEW analysis_summary IS 'Legacy view (name reserved): c3d_metadata joined with its analysis_results rows.';
