-- 007_create_backward_compatibility_views.sql
--
-- What: backward-compatibility layer for the old application (plan, Story 3):
--   * legacy_c3d_sources: one row per legacy c3d_metadata row, written by the data migration
--     (`ghostly migrate-legacy`): which therapy session it became, whether it is the primary
--     row of its file_hash or a second path of the same content, the chosen analysis_results
--     id, the legacy values the statistics-first tables have no column for (`legacy_values`,
--     used by the views) and what was nulled/defaulted (`notes`).
--   * c3d_metadata_view and analysis_results_view: the legacy tables' columns, types and
--     JSON shapes (analytics_data keyed by channel, contractions list) rebuilt on the fly from
--     therapy_sessions / emg_statistics / emg_contractions / performance_scores.
-- Why:  the old application keeps working, reading the views, until 008 decommissions.
--
-- Late binding: the views read columns and tables added by 009 (game_metadata, error_message,
-- emg_statistics.rms_value ..., emg_contractions), and the runner applies 007 before 009. So
-- each view selects from a LANGUAGE sql STABLE function created with check_function_bodies
-- off (the body is checked when first used, after 009). Such functions are inlined by the
-- planner, so WHERE clauses on the views are pushed down as for a plain view.
-- The name `analysis_summary` (legacy view) is NOT reused.
--
-- Runs inside the single transaction opened by the migration runner.

SET LOCAL check_function_bodies = off;

CREATE TABLE legacy_c3d_sources (
    c3d_metadata_id     UUID PRIMARY KEY,                  -- legacy c3d_metadata.id
    session_id          UUID NOT NULL REFERENCES therapy_sessions (id) ON DELETE CASCADE,
    file_path           TEXT NOT NULL UNIQUE,              -- legacy path (primary or second path)
    is_primary          BOOLEAN NOT NULL,                  -- true: therapy_sessions.id = c3d_metadata_id
    analysis_result_id  UUID,                              -- legacy analysis_results.id migrated (primary rows)
    legacy_values       JSONB NOT NULL DEFAULT '{}',       -- legacy columns without a home; overrides for the views
    notes               JSONB NOT NULL DEFAULT '{}',       -- what was nulled / defaulted / de-duplicated, and why
    migrated_at         TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
CREATE INDEX idx_legacy_c3d_sources_session ON legacy_c3d_sources (session_id);
-- At most one primary row per session.
CREATE UNIQUE INDEX legacy_c3d_sources_one_primary ON legacy_c3d_sources (session_id) WHERE is_primary;

COMMENT ON TABLE legacy_c3d_sources IS
    'Provenance of migrated legacy c3d_metadata rows (one per legacy row) and the values the compatibility views need. Written by ghostly migrate-legacy.';

------------------------------------------------------------------------------
-- c3d_metadata_view
------------------------------------------------------------------------------
-- A key present in legacy_values overrides the value derived from the new tables (second
-- paths carry their whole legacy row there; primary rows only what the new schema cannot
-- hold or holds differently: unknown patient codes, non-UUID therapist ids, NULL technical
-- values that had to be defaulted, a status changed by the migration).
CREATE FUNCTION legacy_compat_c3d_metadata()
RETURNS TABLE (
    id UUID, file_path TEXT, file_hash TEXT, file_size_bytes BIGINT,
    patient_id TEXT, therapist_id TEXT, session_id TEXT, session_date TIMESTAMP,
    session_type TEXT, session_duration FLOAT, session_notes TEXT, game_metadata JSONB,
    channel_names JSONB, channel_count INTEGER, sampling_rate FLOAT, duration_seconds FLOAT,
    frame_count INTEGER, resolved_patient_id TEXT, resolved_therapist_id TEXT,
    resolved_session_date TIMESTAMP, size_category TEXT, content_type TEXT,
    upload_date TIMESTAMP WITH TIME ZONE, bucket_name TEXT, object_metadata JSONB,
    processing_status TEXT, processing_version TEXT, error_message TEXT,
    created_at TIMESTAMP WITH TIME ZONE, updated_at TIMESTAMP WITH TIME ZONE,
    processed_at TIMESTAMP WITH TIME ZONE)
LANGUAGE sql STABLE
AS $fn$
SELECT
    coalesce(src.c3d_metadata_id, ts.id),
    coalesce(src.file_path, ts.file_path),
    ts.file_hash,
    CASE WHEN lv ? 'file_size_bytes' THEN (lv->>'file_size_bytes')::bigint ELSE ts.file_size_bytes END,
    CASE WHEN lv ? 'patient_id' THEN lv->>'patient_id' ELSE ts.patient_id END,
    CASE WHEN lv ? 'therapist_id' THEN lv->>'therapist_id' ELSE ts.therapist_id::text END,
    CASE WHEN lv ? 'session_id' THEN lv->>'session_id' ELSE ts.session_id END,
    CASE WHEN lv ? 'session_date' THEN (lv->>'session_date')::timestamp
         ELSE ts.session_date AT TIME ZONE 'UTC' END,
    CASE WHEN lv ? 'session_type' THEN lv->>'session_type' ELSE ts.session_type END,
    CASE WHEN lv ? 'session_duration' THEN (lv->>'session_duration')::float8
         ELSE (SELECT ps.session_duration_minutes * 60 FROM performance_scores ps WHERE ps.session_id = ts.id) END,
    lv->>'session_notes',
    CASE WHEN lv ? 'game_metadata' THEN nullif(lv->'game_metadata', 'null'::jsonb) ELSE ts.game_metadata END,
    CASE WHEN lv ? 'channel_names' THEN nullif(lv->'channel_names', 'null'::jsonb) ELSE ts.channel_names END,
    CASE WHEN lv ? 'channel_count' THEN (lv->>'channel_count')::int ELSE ts.channel_count END,
    CASE WHEN lv ? 'sampling_rate' THEN (lv->>'sampling_rate')::float8 ELSE ts.original_sampling_rate END,
    CASE WHEN lv ? 'duration_seconds' THEN (lv->>'duration_seconds')::float8 ELSE ts.original_duration_seconds END,
    CASE WHEN lv ? 'frame_count' THEN (lv->>'frame_count')::int ELSE ts.original_sample_count END,
    lv->>'resolved_patient_id',
    lv->>'resolved_therapist_id',
    (lv->>'resolved_session_date')::timestamp,
    lv->>'size_category',
    lv->>'content_type',
    (lv->>'upload_date')::timestamptz,
    CASE WHEN lv ? 'bucket_name' THEN lv->>'bucket_name' ELSE 'c3d-files' END,
    nullif(lv->'object_metadata', 'null'::jsonb),
    CASE WHEN lv ? 'processing_status' THEN lv->>'processing_status' ELSE ts.processing_status END,
    CASE WHEN lv ? 'processing_version' THEN lv->>'processing_version' ELSE ts.processing_version END,
    CASE WHEN lv ? 'error_message' THEN lv->>'error_message' ELSE ts.error_message END,
    CASE WHEN lv ? 'created_at' THEN (lv->>'created_at')::timestamptz ELSE ts.created_at END,
    CASE WHEN lv ? 'updated_at' THEN (lv->>'updated_at')::timestamptz
         ELSE coalesce(ts.processed_at, ts.created_at) END,
    CASE WHEN lv ? 'processed_at' THEN (lv->>'processed_at')::timestamptz ELSE ts.processed_at END
FROM therapy_sessions ts
LEFT JOIN legacy_c3d_sources src ON src.session_id = ts.id
CROSS JOIN LATERAL (SELECT src.legacy_values AS lv) x
$fn$;

CREATE VIEW c3d_metadata_view AS SELECT * FROM legacy_compat_c3d_metadata();

COMMENT ON VIEW c3d_metadata_view IS
    'Backward compatibility (007): the legacy c3d_metadata rows rebuilt from therapy_sessions + legacy_c3d_sources (one row per legacy path; sessions ingested after the migration appear once). Dropped by 008.';

------------------------------------------------------------------------------
-- analysis_results_view
------------------------------------------------------------------------------
-- One row per session that has statistics or whose legacy analysis was migrated (an empty
-- legacy analysis gives analytics_data = {}). Per channel, the legacy keys are rebuilt from
-- the emg_statistics columns and emg_contractions, then the values the migration kept in
-- analysis_details.legacy (keys without a column, original values of defaulted counts) are
-- laid over them. Sessions ingested after the migration get the keys derivable from columns.
CREATE FUNCTION legacy_compat_channel(es emg_statistics)
RETURNS JSONB
LANGUAGE sql STABLE
AS $fn$
SELECT jsonb_build_object(
        'contraction_count', es.total_contractions,
        'good_contraction_count', es.good_contractions_both,
        'mvc_contraction_count', es.good_contractions_intensity,
        'duration_contraction_count', es.good_contractions_duration,
        'rms', es.rms_value,
        'mav', es.mav_value,
        'mpf', es.mean_frequency_hz,
        'mdf', es.median_frequency_hz,
        'fatigue_index_fi_nsm5', es.fatigue_index,
        'mvc_threshold_actual_value', es.mvc_peak_value * es.mvc_threshold_percentage,
        'duration_threshold_actual_value', es.duration_threshold_seconds * 1000,
        'mvc_estimation_method', es.mvc_calculation_method,
        'avg_duration_ms', c.avg_ms, 'min_duration_ms', c.min_ms, 'max_duration_ms', c.max_ms,
        'total_time_under_tension_ms', c.sum_ms,
        'avg_amplitude', c.avg_amp, 'max_amplitude', c.max_amp,
        'contractions', c.list)
    || coalesce(es.analysis_details->'legacy', '{}'::jsonb)
FROM (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'start_time_ms', k.start_time_s * 1000,
               'end_time_ms', k.end_time_s * 1000,
               'duration_ms', k.duration_s * 1000,
               'mean_amplitude', k.mean_amplitude,
               'max_amplitude', k.peak_amplitude,
               'is_good', k.is_good,
               'meets_mvc', k.meets_intensity,
               'meets_duration', k.meets_duration) ORDER BY k.contraction_index), '[]'::jsonb) AS list,
           avg(k.duration_s) * 1000 AS avg_ms, min(k.duration_s) * 1000 AS min_ms,
           max(k.duration_s) * 1000 AS max_ms, coalesce(sum(k.duration_s) * 1000, 0) AS sum_ms,
           avg(k.mean_amplitude) AS avg_amp, max(k.peak_amplitude) AS max_amp
    FROM emg_contractions k
    WHERE k.statistics_id = es.id
) c
$fn$;

CREATE FUNCTION legacy_compat_analysis_results()
RETURNS TABLE (
    id UUID, c3d_metadata_id UUID, file_hash TEXT, processing_version TEXT,
    processing_params JSONB, analytics_data JSONB, emg_signals JSONB, contractions_data JSONB,
    processing_time_ms INTEGER, good_contractions_count INTEGER, total_contractions_count INTEGER,
    cache_hits INTEGER, last_accessed_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE, expires_at TIMESTAMP WITH TIME ZONE,
    mvc_values JSONB, compliance_scores JSONB, temporal_stats JSONB)
LANGUAGE sql STABLE
AS $fn$
SELECT
    coalesce(src.analysis_result_id, ts.id),
    ts.id,
    ts.file_hash,
    coalesce(st.version, ts.processing_version),
    '{}'::jsonb,
    coalesce(st.data, '{}'::jsonb),
    NULL::jsonb, NULL::jsonb,
    ts.processing_time_ms,
    NULL::int, NULL::int,
    0,
    coalesce((src.legacy_values->>'analysis_created_at')::timestamptz, st.at, ts.processed_at),
    coalesce((src.legacy_values->>'analysis_created_at')::timestamptz, st.at, ts.processed_at),
    'infinity'::timestamptz,
    NULL::jsonb, NULL::jsonb, NULL::jsonb
FROM therapy_sessions ts
LEFT JOIN legacy_c3d_sources src ON src.session_id = ts.id AND src.is_primary
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(es.channel_name, legacy_compat_channel(es)) AS data,
           min(es.processing_version) AS version, min(es.processed_at) AS at
    FROM emg_statistics es
    WHERE es.session_id = ts.id
) st ON true
WHERE st.data IS NOT NULL OR src.analysis_result_id IS NOT NULL
$fn$;

CREATE VIEW analysis_results_view AS SELECT * FROM legacy_compat_analysis_results();

COMMENT ON VIEW analysis_results_view IS
    'Backward compatibility (007): legacy analysis_results rebuilt from emg_statistics/emg_contractions (analytics_data keyed by channel, legacy keys). One row per session (the migrated analysis); expires_at is infinity (statistics do not expire). Dropped by 008.';
