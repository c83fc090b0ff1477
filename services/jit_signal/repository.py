"""All the SQL of JitSignalService: therapy_sessions, emg_statistics, emg_contractions (read)
and its own cache index signal_processing_cache (read, written). Queries run as the caller
(access.acquire: RLS of the ghostly_jit_signal role)."""

from __future__ import annotations

TTL = "7 days"  # a cache row's life (expires_at); an expired row is recomputed

# The hot path: ONE indexed statement. The cache key is sha256(file_hash || suffix), computed
# here from the session's file_hash so the session and its cache row come back together.
HOT = """
SELECT s.file_path, s.file_hash, s.file_size_bytes, s.processing_status, s.error_message,
       s.patient_id, s.processed_at, s.original_sampling_rate, s.original_sample_count, s.channel_names,
       c.id AS cache_id, c.cache_valid, c.processing_version AS cache_version,
       (c.expires_at IS NOT NULL AND c.expires_at <= now()) AS cache_expired
FROM therapy_sessions s
LEFT JOIN signal_processing_cache c
       ON c.session_id = s.id
      AND c.processing_request_hash = encode(sha256(convert_to(s.file_hash || $2, 'UTF8')), 'hex')
WHERE s.id = $1
"""

# Cold path: the ingest run's contractions and processing parameters, with processed_at read in
# the same snapshot (it is the generation the payload belongs to).
RUN = """
SELECT s.processed_at, st.channel_name, st.side,
       COALESCE(st.analysis_details -> 'processing_params',   -- libs.emg.settings.PARAMS_KEY (codec)
                st.analysis_details -> 'parameters' -> 'settings' -> 'processing') AS processing,
       CASE WHEN $2 THEN COALESCE((
           SELECT jsonb_agg(jsonb_build_array(c.contraction_index, c.start_time_s, c.end_time_s, c.duration_s,
                                              c.peak_amplitude, c.mean_amplitude, c.meets_intensity,
                                              c.meets_duration, c.is_good, c.partially_masked, c.masked_s)
                             ORDER BY c.contraction_index)
           FROM emg_contractions c WHERE c.statistics_id = st.id), '[]'::jsonb) END AS contractions
FROM therapy_sessions s
LEFT JOIN emg_statistics st ON st.session_id = s.id
WHERE s.id = $1
"""

# The row is (re)validated only if the session is still the ingest run the payload was built
# from: FOR SHARE waits for a concurrent reprocess (which updates therapy_sessions and then
# invalidates the cache in one transaction) and the processed_at check then fails.
UPSERT = f"""
WITH s AS (
    SELECT id FROM therapy_sessions
    WHERE id = $1 AND processing_status = 'completed' AND processed_at IS NOT DISTINCT FROM $3
    FOR SHARE
)
INSERT INTO signal_processing_cache AS c (session_id, processing_request_hash, processing_version, cache_type,
                                          hit_count, last_accessed_at, expires_at, cache_valid, created_at)
SELECT s.id, $2, $4, $5, 0, now(), now() + INTERVAL '{TTL}', true, now() FROM s
ON CONFLICT (session_id, processing_request_hash) DO UPDATE SET
    processing_version = EXCLUDED.processing_version, cache_type = EXCLUDED.cache_type,
    hit_count = 0, last_accessed_at = now(), expires_at = EXCLUDED.expires_at,
    cache_valid = true, created_at = now()
RETURNING c.id
"""

MARK_EXPIRED = """
UPDATE signal_processing_cache SET cache_valid = false, invalidated_reason = 'expired', invalidated_at = now()
WHERE id = $1 AND cache_valid
"""

HITS = """
UPDATE signal_processing_cache c SET hit_count = COALESCE(c.hit_count, 0) + v.n, last_accessed_at = now()
FROM unnest($1::uuid[], $2::int[]) AS v(id, n)
WHERE c.id = v.id
"""

LIST = """
SELECT s.processing_status, s.error_message, s.patient_id, s.original_sampling_rate, s.original_sample_count,
       s.original_duration_seconds, s.channel_names,
       (SELECT jsonb_object_agg(st.channel_name, jsonb_build_object(
                   'side', st.side, 'unit', st.analysis_details ->> 'unit'))
        FROM emg_statistics st WHERE st.session_id = s.id) AS stats
FROM therapy_sessions s WHERE s.id = $1
"""

# Maintenance (JitSignalServicer.sweep, at start and every SWEEP_INTERVAL_S): expired rows are
# marked, the payload files of rows no longer valid deleted, and invalid rows untouched for
# $1 days dropped. The role's policy covers every row (migration 012): no caller identity.
SWEEP_EXPIRED = """
UPDATE signal_processing_cache SET cache_valid = false, invalidated_reason = 'expired', invalidated_at = now()
WHERE cache_valid AND expires_at <= now()
"""

SWEEP_INVALID = "SELECT processing_request_hash FROM signal_processing_cache WHERE NOT cache_valid"

SWEEP_DELETE = """
DELETE FROM signal_processing_cache
WHERE NOT cache_valid AND COALESCE(invalidated_at, created_at) < now() - make_interval(days => $1)
"""
