-- 023_legacy_migration_real_data.sql
--
-- What: the legacy data migration on a real legacy database (issue 17):
--   * emg_statistics: the counts, rates, muscle compliance and mvc_peak_value may be NULL. A
--     legacy channel that lacks a value (in both generations of analytics_data key names) is
--     migrated with NULL there, listed under analysis_details -> migrated_from_legacy ->
--     missing; a 0 would flow into the rates and scores as if measured. Rows written by ingest
--     always set them (nothing changes for them).
--   * legacy_migration_errors: per-row quarantine of `ghostly migrate-legacy`. A legacy row that
--     cannot be migrated (e.g. a contraction without numeric times) is recorded with its reason
--     and the run continues (exit 3); a later run retries it and deletes the row on success.
--   * legacy_compat_channel (the per-channel JSON of analysis_results_view, 007) is recreated
--     when the 007 views exist (i.e. 008 not applied): for migrated channels it gives back only
--     the keys the legacy channel had, under their own (Aug or Sep 2025) names, with the JSON
--     number types recorded at migration (analysis_details -> migrated_from_legacy -> carried /
--     contraction_keys); sessions ingested after the migration keep the 007 keys.
-- Why:  the rows of a real deployment carry the Sep 2025 keys, values outside the new
--       constraints and rows that still cannot be migrated; the views must invent nothing.
--
-- Runs inside the single transaction opened by the migration runner.

ALTER TABLE emg_statistics
    ALTER COLUMN total_contractions DROP NOT NULL,
    ALTER COLUMN good_contractions_intensity DROP NOT NULL,
    ALTER COLUMN good_contractions_duration DROP NOT NULL,
    ALTER COLUMN good_contractions_both DROP NOT NULL,
    ALTER COLUMN completion_rate DROP NOT NULL,
    ALTER COLUMN intensity_rate DROP NOT NULL,
    ALTER COLUMN duration_rate DROP NOT NULL,
    ALTER COLUMN muscle_compliance_score DROP NOT NULL,
    ALTER COLUMN mvc_peak_value DROP NOT NULL;

COMMENT ON COLUMN emg_statistics.total_contractions IS
    'NULL only for a migrated legacy channel that lacked the value (analysis_details.migrated_from_legacy.missing).';

CREATE TABLE legacy_migration_errors (
    c3d_metadata_id  UUID PRIMARY KEY,                 -- the primary legacy row of the file
    file_hash        TEXT NOT NULL,
    file_path        TEXT,
    reason           TEXT NOT NULL,                    -- the error the row's migration raised
    attempts         INTEGER NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_failed_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    last_failed_at   TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
CREATE INDEX idx_legacy_migration_errors_file_hash ON legacy_migration_errors (file_hash);

COMMENT ON TABLE legacy_migration_errors IS
    'Quarantine of ghostly migrate-legacy: legacy rows that could not be migrated, with the reason; retried by every run.';

SET LOCAL check_function_bodies = off;

-- a JSON number rebuilt from a column, in the JSON number type the legacy row had:
-- kind 'f' = a float literal (2000.0), 'i' = an integer literal, anything else unchanged
CREATE FUNCTION legacy_compat_typed(v JSONB, kind TEXT)
RETURNS JSONB
LANGUAGE sql IMMUTABLE
AS $fn$
SELECT CASE WHEN v IS NULL THEN 'null'::jsonb
            WHEN jsonb_typeof(v) <> 'number' THEN v
            WHEN kind = 'f' AND v::text !~ '[.eE]' THEN (v::text || '.0')::jsonb
            WHEN kind = 'i' AND v::text ~ '[.eE]' AND (v::text)::numeric = trunc((v::text)::numeric)
                 THEN to_jsonb(trunc((v::text)::numeric)::bigint)
            ELSE v END
$fn$;

DO $do$
BEGIN
    IF to_regclass('analysis_results_view') IS NULL THEN
        RETURN;   -- 008 applied: the compatibility views are gone, nothing to recreate
    END IF;
    EXECUTE $def$
CREATE OR REPLACE FUNCTION legacy_compat_channel(es emg_statistics)
RETURNS JSONB
LANGUAGE sql STABLE
AS $fn$
SELECT CASE WHEN mfl ? 'carried' THEN
    (SELECT coalesce(jsonb_object_agg(k.key, legacy_compat_typed(CASE k.key
                 WHEN 'contraction_count' THEN to_jsonb(es.total_contractions)
                 WHEN 'mvc_contraction_count' THEN to_jsonb(es.good_contractions_intensity)
                 WHEN 'mvc_compliant_count' THEN to_jsonb(es.good_contractions_intensity)
                 WHEN 'duration_contraction_count' THEN to_jsonb(es.good_contractions_duration)
                 WHEN 'duration_compliant_count' THEN to_jsonb(es.good_contractions_duration)
                 WHEN 'good_contraction_count' THEN to_jsonb(es.good_contractions_both)
                 WHEN 'rms' THEN to_jsonb(es.rms_value)
                 WHEN 'mav' THEN to_jsonb(es.mav_value)
                 WHEN 'mpf' THEN to_jsonb(es.mean_frequency_hz)
                 WHEN 'mdf' THEN to_jsonb(es.median_frequency_hz)
                 WHEN 'fatigue_index_fi_nsm5' THEN to_jsonb(es.fatigue_index)
                 WHEN 'contractions' THEN (
                     SELECT coalesce(jsonb_agg((
                         SELECT coalesce(jsonb_object_agg(ck.key, legacy_compat_typed(CASE ck.key
                                    WHEN 'start_time_ms' THEN to_jsonb(k2.start_time_s * 1000)
                                    WHEN 'start_ms' THEN to_jsonb(k2.start_time_s * 1000)
                                    WHEN 'end_time_ms' THEN to_jsonb(k2.end_time_s * 1000)
                                    WHEN 'end_ms' THEN to_jsonb(k2.end_time_s * 1000)
                                    WHEN 'duration_ms' THEN to_jsonb(k2.duration_s * 1000)
                                    WHEN 'mean_amplitude' THEN to_jsonb(k2.mean_amplitude)
                                    WHEN 'max_amplitude' THEN to_jsonb(k2.peak_amplitude)
                                    WHEN 'is_good' THEN to_jsonb(k2.is_good)
                                    WHEN 'meets_mvc' THEN to_jsonb(k2.meets_intensity)
                                    WHEN 'meets_duration' THEN to_jsonb(k2.meets_duration) END, ck.value #>> '{}')),
                                    '{}'::jsonb)
                         FROM jsonb_each(coalesce(mfl->'contraction_keys', '{}'::jsonb)) ck)
                         ORDER BY k2.contraction_index), '[]'::jsonb)
                     FROM emg_contractions k2 WHERE k2.statistics_id = es.id) END, k.value #>> '{}')),
                 '{}'::jsonb)
     FROM jsonb_each(mfl->'carried') k)
    || coalesce(es.analysis_details->'legacy', '{}'::jsonb)
ELSE
    (SELECT jsonb_build_object(
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
        WHERE k.statistics_id = es.id) c)
END
FROM (SELECT es.analysis_details->'migrated_from_legacy' AS mfl) m
$fn$
$def$;
END
$do$;
