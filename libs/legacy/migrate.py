"""`ghostly migrate-legacy`: c3d_metadata / analysis_results -> the statistics-first tables.

Set-based: each batch of legacy rows (keyset over c3d_metadata.id) is migrated by a handful of
INSERT ... SELECT statements with jsonb functions, in ONE transaction. The rules are those of
libs/legacy/mapping.py (the reference implementation, checked against this SQL by the tests).

* Idempotent: a file_hash already in therapy_sessions is skipped, so a re-run creates nothing.
* Resumable: committed batches stay; after a crash, re-running skips them (by file_hash) and
  continues. A hash is always handled whole, in the batch that holds its primary row.
* --dry-run: every batch runs and is rolled back; the counts say what would be written.
* Validation (after the run, or alone with --validate-only): expected per file_hash, recomputed
  from the legacy tables, against what is in the new tables; any difference -> ValidationFailed.

Cost per batch (100k legacy sessions in ~30-45 s on 2 cores, was ~60-80 s; see
bench/bench_legacy_migration.py): four statements. (1) staging of the batch's hashes with the
chosen analysis; (2) therapy_sessions; (3) legacy_c3d_sources; (4) ONE statement that expands
the analytics JSON once into an in-memory channel set and inserts emg_statistics,
emg_contractions, performance_scores and session_settings from it. Every lookup is an index
probe (no per-batch scan of a table that grows with the migration), and the ids of
emg_statistics / emg_contractions are time-ordered (UUIDv7 layout) so their indexes are appended
to rather than written at random. What remains is mostly fixed cost: the two foreign-key checks
per contraction (~25 % of the CPU) and index maintenance. Transaction settings: _TX_SETTINGS.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field

import asyncpg

from . import mapping as M

log = logging.getLogger("ghostly.legacy")

_UUID_RE = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_ZERO = uuid.UUID(int=0)
# JIT compilation of these large statements costs more than it saves (hundreds of ms per
# statement); the work is I/O- and jsonb-bound, not expression-bound.
_SESSION = {"jit": "off", "application_name": "ghostly-migrate-legacy"}


class ValidationFailed(RuntimeError):
    def __init__(self, report: "ValidationReport"):
        super().__init__(report.text())
        self.report = report


class InjectedFailure(RuntimeError):
    """Raised by fail_after_batches (tests: crash mid-way)."""


@dataclass
class MigrationStats:
    legacy_rows: int = 0
    batches: int = 0
    sessions: int = 0
    second_paths: int = 0
    failed_sessions: int = 0
    statistics: int = 0
    contractions: int = 0
    performance_scores: int = 0
    session_settings: int = 0
    skipped_already_migrated: int = 0
    unknown_patient_codes: int = 0
    unmapped_therapist_ids: int = 0
    dry_run: bool = False
    seconds: float = 0.0


@dataclass
class ValidationReport:
    counts: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = ["legacy migration validation: " + ("OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))")]
        lines += [f"  {k:<40} {v}" for k, v in self.counts.items()]
        lines += [f"  LOSS: {p}" for p in self.problems]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- SQL

# The analysis chosen for a file hash (mapping.choose_analysis). $1 = now.
_CHOOSE = """
    SELECT r.id, r.c3d_metadata_id, r.processing_version, r.analytics_data, r.created_at,
           r.processing_time_ms, r.expires_at, r.mvc_values,
           (jsonb_typeof(r.analytics_data) = 'object' AND r.analytics_data <> '{}'::jsonb) AS usable,
           (r.expires_at IS NOT NULL AND r.expires_at <= $1) AS expired
    FROM analysis_results r
    WHERE r.file_hash = m.file_hash
    ORDER BY (jsonb_typeof(r.analytics_data) = 'object' AND r.analytics_data <> '{}'::jsonb) DESC,
             (r.expires_at IS NULL OR r.expires_at > $1) DESC,
             r.created_at DESC NULLS LAST, r.id DESC
    LIMIT 1"""

# Primary row of a hash: the chosen analysis' row if it has this hash, else the earliest.
_PRIMARY = """
    coalesce(
        (SELECT d.id FROM c3d_metadata d WHERE d.id = a.c3d_metadata_id AND d.file_hash = m.file_hash),
        (SELECT d.id FROM c3d_metadata d WHERE d.file_hash = m.file_hash
         ORDER BY d.created_at NULLS LAST, d.id LIMIT 1))"""

# Status / version / error message of the new session, computed once in the staging table (the
# sessions INSERT writes them; legacy_c3d_sources records what changed without re-reading them).
_STATUS = """(CASE WHEN ok THEN 'completed'
      WHEN ar_id IS NOT NULL OR processing_status IS NULL OR processing_status IN ('completed', 'failed') THEN 'failed'
      ELSE processing_status END)"""

# Staging: one row per file_hash whose primary legacy row lies in this batch and which is not
# migrated yet. The "already migrated?" test is an index probe (LIMIT 1 keeps it a nested-loop
# anti join): a hash join would read the whole, growing, therapy_sessions table in every batch.
_STAGE = f"""
CREATE TEMP TABLE _lm_src ON COMMIT DROP AS
SELECT x.*,
       coalesce(x.ar_version, x.processing_version, '{M.UNKNOWN_VERSION}') AS ts_version,
       {_STATUS} AS ts_status,
       coalesce(x.error_message, CASE WHEN NOT x.ok AND {_STATUS} = 'failed' THEN
           CASE WHEN x.ar_id IS NULL THEN 'migrated from legacy: no analysis_results row'
                ELSE 'migrated from legacy: analytics_data empty (processing failed)' END END) AS ts_error
FROM (
    SELECT m.*,
           a.id AS ar_id, a.processing_version AS ar_version,
           a.created_at AS ar_created_at, a.processing_time_ms AS ar_time_ms,
           coalesce(a.usable, false) AS ok, coalesce(a.expired, false) AS ar_expired,
           p.patient_code AS new_patient, t.id AS new_therapist
    FROM c3d_metadata m
    LEFT JOIN LATERAL ({_CHOOSE}) a ON true
    LEFT JOIN patients p ON p.patient_code = m.patient_id
    LEFT JOIN therapists t
           ON t.id = CASE WHEN btrim(m.therapist_id) ~ '{_UUID_RE}' THEN btrim(m.therapist_id)::uuid END
    WHERE m.id > $2 AND m.id <= $3
      AND m.id = {_PRIMARY}
      AND NOT EXISTS (SELECT 1 FROM therapy_sessions s WHERE s.file_hash = m.file_hash LIMIT 1)
) x
"""

_INSERT_SESSIONS = """
WITH ins AS (
    INSERT INTO therapy_sessions (
        id, file_path, file_hash, file_size_bytes, patient_id, therapist_id, session_id,
        session_date, session_type, protocol_day, original_sampling_rate,
        original_duration_seconds, original_sample_count, channel_names, channel_count,
        processing_version, processing_status, processing_time_ms, created_at, processed_at,
        error_message, game_metadata)
    SELECT id, file_path, file_hash, file_size_bytes, new_patient, new_therapist, session_id,
           session_date AT TIME ZONE 'UTC', session_type, NULL,
           coalesce(sampling_rate, 0), coalesce(duration_seconds, 0), coalesce(frame_count, 0),
           coalesce(channel_names, '[]'::jsonb), coalesce(channel_count, 0),
           ts_version, ts_status, ar_time_ms, created_at, processed_at, ts_error, game_metadata
    FROM _lm_src
    ON CONFLICT DO NOTHING
    RETURNING id)
DELETE FROM _lm_src s WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = s.id)
"""

# legacy values with no column in the new schema (every legacy row keeps them)
_NO_HOME = ("session_duration", "session_notes", "resolved_patient_id", "resolved_therapist_id",
            "resolved_session_date", "size_category", "content_type", "upload_date", "bucket_name",
            "object_metadata", "updated_at")

_PRIMARY_LV = "jsonb_build_object(" + ", ".join(f"'{c}', s.{c}" for c in _NO_HOME) + """)
  || CASE WHEN s.new_patient IS DISTINCT FROM s.patient_id THEN jsonb_build_object('patient_id', s.patient_id) ELSE '{}' END
  || CASE WHEN s.new_therapist::text IS DISTINCT FROM s.therapist_id THEN jsonb_build_object('therapist_id', s.therapist_id) ELSE '{}' END
  || CASE WHEN s.sampling_rate IS NULL THEN '{"sampling_rate": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.duration_seconds IS NULL THEN '{"duration_seconds": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.frame_count IS NULL THEN '{"frame_count": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.channel_names IS NULL THEN '{"channel_names": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.channel_count IS NULL THEN '{"channel_count": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.ts_version IS DISTINCT FROM s.processing_version THEN jsonb_build_object('processing_version', s.processing_version) ELSE '{}' END
  || CASE WHEN s.ts_status IS DISTINCT FROM s.processing_status THEN jsonb_build_object('processing_status', s.processing_status) ELSE '{}' END
  || CASE WHEN s.ts_error IS DISTINCT FROM s.error_message THEN jsonb_build_object('error_message', s.error_message) ELSE '{}' END
  || CASE WHEN s.ar_id IS NOT NULL THEN jsonb_build_object('analysis_created_at', s.ar_created_at) ELSE '{}' END"""

_PRIMARY_NOTES = """jsonb_strip_nulls(jsonb_build_object(
    'patient_id', CASE WHEN s.patient_id IS NOT NULL AND s.new_patient IS NULL
                       THEN 'patient code ' || quote_literal(s.patient_id) || ' is not in patients: stored NULL' END,
    'therapist_id', CASE WHEN s.therapist_id IS NOT NULL AND s.new_therapist IS NULL
                         THEN quote_literal(s.therapist_id) || ' is not the id of an existing therapist: stored NULL' END,
    'defaulted', nullif(array_to_json(array_remove(ARRAY[
        CASE WHEN s.sampling_rate IS NULL THEN 'original_sampling_rate=0' END,
        CASE WHEN s.duration_seconds IS NULL THEN 'original_duration_seconds=0' END,
        CASE WHEN s.frame_count IS NULL THEN 'original_sample_count=0' END,
        CASE WHEN s.channel_names IS NULL THEN 'channel_names=[]' END,
        CASE WHEN s.channel_count IS NULL THEN 'channel_count=0' END,
        CASE WHEN s.processing_version IS NULL AND s.ar_version IS NULL THEN 'processing_version=legacy-unknown' END],
        NULL))::jsonb, '[]'::jsonb),
    'status', CASE WHEN s.ts_status IS DISTINCT FROM s.processing_status
                   THEN coalesce(s.processing_status, 'NULL') || ' -> ' || s.ts_status END,
    'analysis_expired', CASE WHEN s.ar_expired THEN true END,
    'second_paths', (SELECT nullif(count(*), 0) FROM c3d_metadata d WHERE d.file_hash = s.file_hash AND d.id <> s.id)))"""

# Every legacy row of the staged hashes (index probes by file_hash: OFFSET 0 keeps the lateral
# subquery a parameterised index scan instead of a hash join over all of c3d_metadata).
_INSERT_SOURCES = f"""
INSERT INTO legacy_c3d_sources (c3d_metadata_id, session_id, file_path, is_primary,
                                analysis_result_id, legacy_values, notes)
SELECT d.id, s.id, d.file_path, d.id = s.id,
       CASE WHEN d.id = s.id THEN s.ar_id END,
       CASE WHEN d.id = s.id THEN {_PRIMARY_LV}
            ELSE to_jsonb(d) - 'id' - 'file_path' - 'file_hash' END,
       CASE WHEN d.id = s.id THEN {_PRIMARY_NOTES}
            ELSE jsonb_build_object('second_path_of', s.id, 'reason',
                 'same file_hash as the primary row: one session per content (therapy_sessions.file_hash is UNIQUE)') END
FROM _lm_src s
CROSS JOIN LATERAL (SELECT d0.* FROM c3d_metadata d0 WHERE d0.file_hash = s.file_hash OFFSET 0) d
"""

_COUNT_KEYS_SQL = "ARRAY[" + ", ".join(f"'{k}'" for k in M.COUNT_KEYS) + "]"
_ALWAYS_SQL = "ARRAY[" + ", ".join(f"'{k}'" for k in M.ALWAYS_CARRIED) + "]::text[]"
_USER_METHODS = "(" + ", ".join(f"'{m}'" for m in M.USER_MVC_METHODS) + ")"

# Time-ordered ids (UUID version 7 layout: 48-bit Unix ms, version, random, variant, random, then
# a per-statement counter) for emg_statistics / emg_contractions. gen_random_uuid() scattered
# ~2M insertions over the whole primary-key and (statistics_id, contraction_index) indexes
# (random pages read, dirtied, evicted and read again); ordered ids append at the right edge.
# {p}: 24 hex digits made per batch and table by _id_prefix(); {n}: the row counter.
_ID = "({p} || lpad(to_hex({n}), 8, '0'))::uuid"


def _id_prefix() -> str:
    ms = time.time_ns() // 1_000_000
    r = int.from_bytes(os.urandom(6), "big")           # 42 random bits: 12 + 2 + 28
    return (f"{ms & (2**48 - 1):012x}7{(r >> 36) & 0xfff:03x}"
            f"{0x8 | ((r >> 28) & 0x3):x}{r & 0xfffffff:07x}")


def _cnt(key: str) -> str:
    return f"(CASE WHEN jsonb_typeof(c.value->'{key}') = 'number' THEN round((c.value->>'{key}')::numeric)::int END)"


def _num(key: str) -> str:
    return f"(CASE WHEN jsonb_typeof(c.value->'{key}') = 'number' THEN (c.value->>'{key}')::float8 END)"


# One row per channel of the chosen analyses: every value is extracted once from the in-memory
# jsonb_each value (one detoast of analytics_data per analysis), plus the derived rates, kept in
# memory (MATERIALIZED CTE) for the four INSERTs of _INSERT_CHANNELS.
_CHAN = f"""
SELECT c.*,
       least(coalesce(c.n_total, 0)::float8 / coalesce(nullif(greatest(c.expected, 0), 0), {M.DEFAULT_TARGET_CONTRACTIONS}), 1.0) AS comp,
       CASE WHEN coalesce(c.n_total, 0) = 0 THEN 0 ELSE least(coalesce(c.n_mvc, 0)::float8 / c.n_total, 1.0) END AS inten,
       CASE WHEN coalesce(c.n_total, 0) = 0 THEN 0 ELSE least(coalesce(c.n_dur, 0)::float8 / c.n_total, 1.0) END AS dur,
       CASE WHEN lower(c.ch) = 'ch1' OR lower(c.ch) LIKE '%left%' THEN 'left'
            WHEN lower(c.ch) = 'ch2' OR lower(c.ch) LIKE '%right%' THEN 'right' END AS side,
       coalesce(c.mvc_v, c.thr / {M.DEFAULT_MVC_THRESHOLD_PERCENTAGE}, 0) AS mvc_peak,
       CASE WHEN c.method IN {_USER_METHODS} THEN 'user_defined' ELSE 'backend_95percentile' END AS mvc_method
FROM (
    SELECT {_ID.format(p="$1", n="row_number() OVER ()")} AS stat_id, s.id AS session_id, c.key AS ch,
           s.ar_id, s.ar_version, s.ar_time_ms, s.ar_created_at,
           CASE WHEN jsonb_typeof(c.mvc_values -> c.key) = 'number' THEN (c.mvc_values ->> c.key)::float8 END AS mvc_v,
           {_cnt('contraction_count')} AS n_total,
           {_cnt('mvc_contraction_count')} AS n_mvc,
           {_cnt('duration_contraction_count')} AS n_dur,
           {_cnt('good_contraction_count')} AS n_good,
           {_cnt('expected_contractions')} AS expected,
           {_num('mvc_threshold_actual_value')} AS thr,
           {_num('duration_threshold_actual_value')} AS dthr,
           {_num('rms')} AS rms, {_num('mav')} AS mav, {_num('mpf')} AS mpf, {_num('mdf')} AS mdf,
           {_num('fatigue_index_fi_nsm5')} AS fi,
           c.value->>'mvc_estimation_method' AS method,
           CASE WHEN jsonb_typeof(c.value->'signal_processing'->'processing_steps') = 'array'
                THEN (SELECT string_agg(x, '->' ORDER BY o)
                      FROM jsonb_array_elements_text(c.value->'signal_processing'->'processing_steps') WITH ORDINALITY e(x, o))
           END AS steps,
           c.value - {_ALWAYS_SQL}
                   - ARRAY(SELECT k FROM unnest({_COUNT_KEYS_SQL}) k WHERE jsonb_typeof(c.value->k) = 'number') AS legacy,
           CASE WHEN jsonb_typeof(c.value->'contractions') = 'array' THEN c.value->'contractions' ELSE '[]'::jsonb END AS contr
    FROM _lm_src s
    CROSS JOIN LATERAL (SELECT r0.mvc_values, c0.key, c0.value
                        FROM analysis_results r0 CROSS JOIN LATERAL jsonb_each(r0.analytics_data) c0
                        WHERE r0.id = s.ar_id AND jsonb_typeof(c0.value) = 'object' OFFSET 0) c
    WHERE s.ok
) c
"""

_INS_STATS = f"""
INSERT INTO emg_statistics (
    id, session_id, channel_name, mvc_peak_value, mvc_rms_value, mvc_confidence_score,
    mvc_calculation_method, total_contractions, good_contractions_intensity,
    good_contractions_duration, good_contractions_both, completion_rate, intensity_rate,
    duration_rate, muscle_compliance_score, signal_quality_score, noise_level_db,
    artifacts_detected, processing_confidence, processing_pipeline, processing_version,
    processing_time_ms, mvc_threshold_percentage, duration_threshold_seconds, processed_at,
    side, rms_value, mav_value, mean_frequency_hz, median_frequency_hz, fatigue_index,
    analysis_details)
SELECT stat_id, session_id, ch, mvc_peak, 0, 0, mvc_method,
       coalesce(n_total, 0), coalesce(n_mvc, 0), coalesce(n_dur, 0), coalesce(n_good, 0),
       comp, inten, dur, (comp + inten + dur) / 3.0,
       0, NULL, NULL, 0,
       coalesce(nullif(steps, ''), '{M.DEFAULT_PIPELINE}'),
       ar_version, ar_time_ms,
       {M.DEFAULT_MVC_THRESHOLD_PERCENTAGE}, coalesce(dthr / 1000.0, {M.DEFAULT_DURATION_THRESHOLD_SECONDS}),
       ar_created_at, side, rms, mav, mpf, mdf, fi,
       jsonb_build_object(
           'legacy', legacy,
           'migrated_from_legacy', jsonb_build_object(
               'analysis_result_id', ar_id,
               'mvc_peak_value_source', CASE WHEN mvc_v IS NOT NULL THEN 'analysis_results.mvc_values'
                                             WHEN thr IS NOT NULL THEN 'mvc_threshold_actual_value / 0.75'
                                             ELSE 'none (defaulted 0)' END,
               'defaulted', to_jsonb(array_remove(ARRAY[
                   'mvc_confidence_score', 'mvc_rms_value', 'mvc_threshold_percentage',
                   'processing_confidence', 'signal_quality_score',
                   CASE WHEN mvc_v IS NULL AND thr IS NULL THEN 'mvc_peak_value' END,
                   CASE WHEN dthr IS NULL THEN 'duration_threshold_seconds' END,
                   CASE WHEN n_total IS NULL THEN 'total_contractions' END,
                   CASE WHEN n_mvc IS NULL THEN 'good_contractions_intensity' END,
                   CASE WHEN n_dur IS NULL THEN 'good_contractions_duration' END,
                   CASE WHEN n_good IS NULL THEN 'good_contractions_both' END], NULL))))
FROM chan
RETURNING 1"""

_INS_CONTRACTIONS = f"""
INSERT INTO emg_contractions (id, statistics_id, session_id, channel_name, contraction_index,
    start_time_s, end_time_s, duration_s, peak_amplitude, mean_amplitude,
    meets_intensity, meets_duration, is_good)
SELECT {_ID.format(p="$2", n="row_number() OVER ()")},
       c.stat_id, c.session_id, c.ch, (e.o - 1)::int,
       e.start_time_ms / 1000, e.end_time_ms / 1000, e.duration_ms / 1000,
       coalesce(e.max_amplitude, 0), coalesce(e.mean_amplitude, 0),
       coalesce(e.meets_mvc, false), coalesce(e.meets_duration, false), coalesce(e.is_good, false)
FROM chan c
CROSS JOIN LATERAL ROWS FROM (jsonb_to_recordset(c.contr) AS (
    start_time_ms float8, end_time_ms float8, duration_ms float8, max_amplitude float8,
    mean_amplitude float8, meets_mvc boolean, meets_duration boolean, is_good boolean)) WITH ORDINALITY
    e(start_time_ms, end_time_ms, duration_ms, max_amplitude, mean_amplitude, meets_mvc,
      meets_duration, is_good, o)
RETURNING 1"""

_REQ = json.dumps(M.REQUESTED_WEIGHTS)

# Per session, from the channel rows (the values just written to emg_statistics: side,
# muscle_compliance_score, rates, mvc_peak_value, mvc_calculation_method).
_SESSION_AGG = """
SELECT s.id, s.ar_id, s.ar_created_at, s.session_duration, s.game_metadata,
       k.mcs_avg, k.has_l, k.has_r, k.l_mcs, k.r_mcs, k.l_c, k.l_i, k.l_d, k.r_c, k.r_i, k.r_d,
       k.user_mvc, k.l_mvc, k.r_mvc, k.dthr, k.l_dthr, k.r_dthr, k.target
FROM _lm_src s
JOIN (SELECT session_id,
             avg((comp + inten + dur) / 3.0) AS mcs_avg,
             bool_or(side = 'left') AS has_l, bool_or(side = 'right') AS has_r,
             min((comp + inten + dur) / 3.0) FILTER (WHERE side = 'left') AS l_mcs,
             min((comp + inten + dur) / 3.0) FILTER (WHERE side = 'right') AS r_mcs,
             min(comp) FILTER (WHERE side = 'left') AS l_c,
             min(inten) FILTER (WHERE side = 'left') AS l_i,
             min(dur) FILTER (WHERE side = 'left') AS l_d,
             min(comp) FILTER (WHERE side = 'right') AS r_c,
             min(inten) FILTER (WHERE side = 'right') AS r_i,
             min(dur) FILTER (WHERE side = 'right') AS r_d,
             bool_or(mvc_method = 'user_defined') AS user_mvc,
             min(mvc_peak) FILTER (WHERE side = 'left') AS l_mvc,
             min(mvc_peak) FILTER (WHERE side = 'right') AS r_mvc,
             min(dthr) / 1000.0 AS dthr,
             min(dthr) FILTER (WHERE side = 'left') / 1000.0 AS l_dthr,
             min(dthr) FILTER (WHERE side = 'right') / 1000.0 AS r_dthr,
             nullif(max(expected), 0) AS target
      FROM chan GROUP BY session_id) k ON k.session_id = s.id
WHERE s.ok
"""

_INS_SCORES = f"""
INSERT INTO performance_scores (
    session_id, overall_performance_score, compliance_score, symmetry_score, effort_score,
    game_score, performance_weights, bfr_pressure_aop, bfr_compliance_gate, rpe_post_session,
    game_points_achieved, game_points_maximum, session_duration_minutes,
    left_muscle_completion_rate, left_muscle_intensity_rate, left_muscle_duration_rate,
    right_muscle_completion_rate, right_muscle_intensity_rate, right_muscle_duration_rate,
    calculated_at)
SELECT q.id,
       least(greatest(CASE WHEN q.has_sym THEN (0.40 / 0.65) * q.comp + (0.25 / 0.65) * q.sym ELSE q.comp END, 0), 100),
       q.comp, CASE WHEN q.has_sym THEN q.sym ELSE 0 END, 0, 0,
       CASE WHEN q.has_sym
            THEN jsonb_build_object('compliance', 0.40 / 0.65, 'symmetry', 0.25 / 0.65, 'effort', 0, 'game', 0)
            ELSE jsonb_build_object('compliance', 1, 'symmetry', 0, 'effort', 0, 'game', 0) END
       || jsonb_build_object(
            'requested', '{_REQ}'::jsonb,
            'excluded', jsonb_build_object('effort', 'no RPE in legacy data',
                                           'game', 'no maximum game score in legacy data')
                        || CASE WHEN q.has_sym THEN '{{}}'::jsonb
                                ELSE '{{"symmetry": "left/right pair not available"}}'::jsonb END,
            'migrated_from_legacy', jsonb_build_object(
                'analysis_result_id', q.ar_id,
                'derived', 'compliance = mean muscle_compliance_score x 100; symmetry = (1-|L-R|/(L+R)) x 100',
                'defaulted', '["game_points_maximum=1000 (column default; game excluded)", "bfr_compliance_gate=1.0 (not evaluated: no BFR data)"]'::jsonb
                             || CASE WHEN q.points IS NULL THEN '["game_points_achieved=0 (no numeric score)"]'::jsonb ELSE '[]'::jsonb END)),
       NULL, 1.0, NULL,
       coalesce(q.points, 0), 1000, q.session_duration / 60.0,
       q.l_c, q.l_i, q.l_d, q.r_c, q.r_i, q.r_d,
       q.ar_created_at
FROM (
    SELECT a.id, a.ar_id, a.ar_created_at, a.session_duration,
           CASE WHEN a.game_metadata->>'score' ~ '^[0-9]{{1,9}}$' THEN (a.game_metadata->>'score')::int END AS points,
           a.mcs_avg * 100 AS comp,
           a.has_l AND a.has_r AS has_sym,
           CASE WHEN coalesce(a.l_mcs, 0) + coalesce(a.r_mcs, 0) > 0
                THEN (1 - abs(a.l_mcs - a.r_mcs) / (a.l_mcs + a.r_mcs)) * 100
                ELSE 0 END AS sym,
           a.l_c, a.l_i, a.l_d, a.r_c, a.r_i, a.r_d
    FROM agg a
) q
RETURNING 1"""

_INS_SETTINGS = f"""
INSERT INTO session_settings (
    session_id, mvc_calculation_method, mvc_threshold_percentage, mvc_user_left_quad,
    mvc_user_right_quad, performance_weights, duration_threshold_seconds,
    duration_threshold_left_quad, duration_threshold_right_quad, target_contractions_per_muscle,
    rest_period_between_contractions_seconds, rest_period_between_sets_seconds, bfr_enabled,
    bfr_target_pressure_aop, game_difficulty_level, visual_feedback_enabled,
    audio_feedback_enabled, real_time_mvc_display, created_at, updated_at)
SELECT q.id,
       CASE WHEN q.user_mvc THEN 'user_defined' ELSE 'backend_calculated' END,
       {M.DEFAULT_MVC_THRESHOLD_PERCENTAGE},
       CASE WHEN q.user_mvc THEN q.l_mvc END, CASE WHEN q.user_mvc THEN q.r_mvc END,
       '{_REQ}'::jsonb || jsonb_build_object('migrated_from_legacy', jsonb_build_object(
           'analysis_result_id', q.ar_id,
           'defaulted', '["mvc_threshold_percentage=0.75", "performance_weights=requested defaults"]'::jsonb
               || CASE WHEN q.dthr IS NULL THEN '["duration_threshold_seconds=2.0"]'::jsonb ELSE '[]'::jsonb END
               || CASE WHEN q.target IS NULL THEN '["target_contractions_per_muscle=12"]'::jsonb ELSE '[]'::jsonb END,
           'unknown_set_null', '["rest periods", "bfr_enabled", "bfr_target_pressure_aop", "feedback flags"]'::jsonb)),
       coalesce(q.dthr, {M.DEFAULT_DURATION_THRESHOLD_SECONDS}), q.l_dthr, q.r_dthr,
       coalesce(q.target, {M.DEFAULT_TARGET_CONTRACTIONS}),
       NULL, NULL, NULL, NULL,
       CASE WHEN q.level ~ '^[0-9]{{1,2}}$' AND q.level::int BETWEEN 1 AND 10 THEN q.level::int END,
       NULL, NULL, NULL,
       q.ar_created_at, q.ar_created_at
FROM (SELECT a.*, a.game_metadata->>'level' AS level FROM agg a) q
RETURNING 1"""

# Statistics, contractions, scores and settings of the batch in ONE statement: the channel rows
# are built once (one pass over the JSON) and shared in memory; the foreign-key checks run at
# the end of the statement, when every row of every sub-statement is there.
_INSERT_CHANNELS = f"""
WITH chan AS MATERIALIZED ({_CHAN}),
     agg AS MATERIALIZED ({_SESSION_AGG}),
     st AS ({_INS_STATS}),
     co AS ({_INS_CONTRACTIONS}),
     sc AS ({_INS_SCORES}),
     se AS ({_INS_SETTINGS})
SELECT (SELECT count(*) FROM st) AS statistics, (SELECT count(*) FROM co) AS contractions,
       (SELECT count(*) FROM sc) AS performance_scores, (SELECT count(*) FROM se) AS session_settings
"""

# Settings of the migration transactions (SET LOCAL: they end with each batch). All are safe on
# a production server: they only concern this connection's own work.
_TX_SETTINGS = (
    # the channel rows of a batch (~40 MB for 5000 sessions) stay in memory
    "SET LOCAL work_mem = '128MB'",
    # the batches are the parallelism (--workers); parallel plans per statement only compete
    "SET LOCAL max_parallel_workers_per_gather = 0",
    # a crash may lose the last committed batches' WAL flush: they are re-done by the re-run
    # (idempotent, resumable); nothing else is written by this connection
    "SET LOCAL synchronous_commit = off",
)
# TOAST compression of the values this transaction writes (analysis_details, legacy_values):
# lz4 compresses several times faster than pglz; stored values read back identically. Used
# only when the server is built with lz4 (pg_settings lists it), else the server default stays.
_LZ4 = "SET LOCAL default_toast_compression = lz4"
_HAS_LZ4 = ("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")


async def _migrate_batch(conn: asyncpg.Connection, lo: uuid.UUID, hi: uuid.UUID, now,
                         settings: tuple[str, ...] = _TX_SETTINGS) -> dict:
    timings: dict[str, int] = {}
    t = time.perf_counter()

    async def step(name: str, sql: str, *args) -> int:
        nonlocal t
        status = await conn.execute(sql, *args)
        now_t = time.perf_counter()
        timings[name] = int((now_t - t) * 1000)
        t = now_t
        last = status.split()[-1]
        return int(last) if last.isdigit() else 0

    await conn.execute(";".join(settings))
    await step("stage", _STAGE, now, lo, hi)
    rows = await conn.fetchval("SELECT count(*) FROM c3d_metadata WHERE id > $1 AND id <= $2", lo, hi)
    await conn.execute("ANALYZE _lm_src")
    await step("sessions", _INSERT_SESSIONS)
    out = await conn.fetchrow("""
        SELECT count(*) AS sessions, count(*) FILTER (WHERE NOT ok) AS failed,
               count(*) FILTER (WHERE patient_id IS NOT NULL AND new_patient IS NULL) AS bad_patient,
               count(*) FILTER (WHERE therapist_id IS NOT NULL AND new_therapist IS NULL) AS bad_therapist
        FROM _lm_src""")
    res = dict(out)
    res["second_paths"] = await step("sources", _INSERT_SOURCES) - res["sessions"]
    counts = await conn.fetchrow(_INSERT_CHANNELS, _id_prefix(), _id_prefix())
    timings["channels"] = int((time.perf_counter() - t) * 1000)
    res.update(dict(counts))
    res["step_ms"] = timings
    res["rows"] = rows
    return res


async def _batch_bounds(conn: asyncpg.Connection, batch_size: int) -> list[uuid.UUID]:
    """Upper keys of the keyset batches over c3d_metadata.id (the last one is the max id)."""
    rows = await conn.fetch("""
        SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn, count(*) OVER () AS n
                        FROM c3d_metadata) x
        WHERE rn % $1 = 0 OR rn = n ORDER BY id""", batch_size)
    return [r["id"] for r in rows]


async def run(dsn: str, *, batch_size: int = 5000, dry_run: bool = False, progress: bool = True,
              fail_after_batches: int | None = None, validate_after: bool = True,
              workers: int = 2) -> tuple[MigrationStats, ValidationReport | None]:
    """Migrate every legacy row not yet migrated; then validate (unless dry-run)."""
    from tqdm import tqdm

    stats = MigrationStats(dry_run=dry_run)
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn, server_settings=_SESSION)
    try:
        if await conn.fetchval("SELECT to_regclass('legacy_c3d_sources') IS NULL"):
            raise RuntimeError("legacy_c3d_sources does not exist: apply the migrations first "
                               "(`ghostly migrate`: 001-007 and 009)")
        now = await conn.fetchval("SELECT now()")
        stats.legacy_rows = await conn.fetchval("SELECT count(*) FROM c3d_metadata")
        already = await conn.fetchval(
            "SELECT count(*) FROM c3d_metadata m WHERE EXISTS (SELECT 1 FROM therapy_sessions s WHERE s.file_hash = m.file_hash)")
        stats.skipped_already_migrated = already
        log.info("legacy migration starting", extra={"fields": {
            "legacy_rows": stats.legacy_rows, "already_migrated_rows": already,
            "batch_size": batch_size, "dry_run": dry_run}})
        bar = tqdm(total=stats.legacy_rows, unit="row", file=sys.stderr, disable=not progress,
                   desc="migrate-legacy" + (" (dry run)" if dry_run else ""))
        settings = _TX_SETTINGS + ((_LZ4,) if await conn.fetchval(_HAS_LZ4) else ())
        bounds = await _batch_bounds(conn, batch_size)
        ranges = list(zip([_ZERO] + bounds[:-1], bounds))
        queue = iter(ranges)
        state = {"committed": 0}

        async def worker(wconn: asyncpg.Connection) -> None:
            for lo, hi in queue:
                if fail_after_batches is not None and state["committed"] >= fail_after_batches:
                    return
                t0 = time.perf_counter()
                tx = wconn.transaction()
                await tx.start()
                try:
                    res = await _migrate_batch(wconn, lo, hi, now, settings)
                except BaseException:
                    await tx.rollback()
                    log.error("batch failed and was rolled back", extra={"fields": {"after_id": str(lo), "to_id": str(hi)}})
                    raise
                if dry_run:
                    await tx.rollback()
                else:
                    await tx.commit()
                n_rows = res.pop("rows")
                state["committed"] += 1
                stats.batches += 1
                stats.sessions += res["sessions"]
                stats.failed_sessions += res["failed"]
                stats.second_paths += res["second_paths"]
                stats.statistics += res["statistics"]
                stats.contractions += res["contractions"]
                stats.performance_scores += res["performance_scores"]
                stats.session_settings += res["session_settings"]
                stats.unknown_patient_codes += res["bad_patient"]
                stats.unmapped_therapist_ids += res["bad_therapist"]
                log.info("batch committed" if not dry_run else "batch rolled back (dry run)", extra={"fields": {
                    "batch": stats.batches, "after_id": str(lo), "to_id": str(hi), "rows": n_rows, **res,
                    "ms": int((time.perf_counter() - t0) * 1000)}})
                bar.update(n_rows)
                if fail_after_batches is not None and state["committed"] >= fail_after_batches:
                    raise InjectedFailure(f"injected failure after {state['committed']} batch(es)")

        conns = [conn] + [await asyncpg.connect(dsn, server_settings=_SESSION) for _ in range(max(1, workers) - 1)]
        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            bar.close()
            for c in conns[1:]:
                await c.close()
    finally:
        await conn.close()
    stats.seconds = time.perf_counter() - started
    log.info("legacy migration finished", extra={"fields": asdict(stats)})
    report = None
    if validate_after and not dry_run:
        report = await validate(dsn)
    return stats, report


# ----------------------------------------------------------------------------- validation

_VALIDATE_EXPECTED = f"""
CREATE TEMP TABLE _lv_exp AS
SELECT g.file_hash, g.n_rows, a.id AS ar_id, coalesce(a.usable, false) AS ok,
       coalesce(j.n_channels, 0) AS n_channels, coalesce(j.n_contr, 0) AS n_contr,
       coalesce(j.sum_cc, 0) AS sum_cc, coalesce(j.sum_rms, 0) AS sum_rms,
       p.id AS primary_id, p.file_path AS primary_path, p.file_size_bytes
FROM (SELECT file_hash, count(*) AS n_rows FROM c3d_metadata GROUP BY file_hash) g
CROSS JOIN LATERAL (SELECT g.file_hash) m
LEFT JOIN LATERAL ({_CHOOSE}) a ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS n_channels,
           sum(CASE WHEN jsonb_typeof(c.value->'contractions') = 'array' THEN jsonb_array_length(c.value->'contractions') ELSE 0 END) AS n_contr,
           sum(CASE WHEN jsonb_typeof(c.value->'contraction_count') = 'number' THEN round((c.value->>'contraction_count')::numeric) ELSE 0 END) AS sum_cc,
           sum(CASE WHEN jsonb_typeof(c.value->'rms') = 'number' THEN (c.value->>'rms')::float8 ELSE 0 END) AS sum_rms
    FROM analysis_results r CROSS JOIN LATERAL jsonb_each(r.analytics_data) c
    WHERE r.id = a.id AND a.usable AND jsonb_typeof(c.value) = 'object'
) j ON true
CROSS JOIN LATERAL (
    SELECT d.id, d.file_path, d.file_size_bytes FROM c3d_metadata d WHERE d.id = {_PRIMARY}) p
"""

_VALIDATE_ACTUAL = """
CREATE TEMP TABLE _lv_act AS
SELECT ts.id, ts.file_hash, ts.file_path, ts.file_size_bytes, ts.processing_status,
       src.n_rows, src.ar_id,
       coalesce(es.n, 0) AS n_channels, coalesce(es.sum_cc, 0) AS sum_cc, coalesce(es.sum_rms, 0) AS sum_rms,
       coalesce(k.n, 0) AS n_contr,
       EXISTS (SELECT 1 FROM performance_scores p WHERE p.session_id = ts.id) AS has_scores,
       EXISTS (SELECT 1 FROM session_settings p WHERE p.session_id = ts.id) AS has_settings
FROM therapy_sessions ts
JOIN (SELECT session_id, count(*) AS n_rows, max(analysis_result_id::text)::uuid AS ar_id
      FROM legacy_c3d_sources GROUP BY session_id) src ON src.session_id = ts.id
LEFT JOIN (SELECT session_id, count(*) AS n, sum(total_contractions) AS sum_cc, sum(coalesce(rms_value, 0)) AS sum_rms
           FROM emg_statistics GROUP BY session_id) es ON es.session_id = ts.id
LEFT JOIN (SELECT session_id, count(*) AS n FROM emg_contractions GROUP BY session_id) k ON k.session_id = ts.id
"""

_CHECKS = [
    ("legacy file_hash with no migrated session",
     "SELECT e.file_hash FROM _lv_exp e LEFT JOIN _lv_act a USING (file_hash) WHERE a.id IS NULL"),
    ("legacy c3d_metadata row with no legacy_c3d_sources row (path lost)",
     "SELECT m.file_path FROM c3d_metadata m WHERE NOT EXISTS (SELECT 1 FROM legacy_c3d_sources s WHERE s.c3d_metadata_id = m.id)"),
    ("legacy rows of a hash != recorded paths",
     "SELECT e.file_hash || ' expected ' || e.n_rows || ' got ' || a.n_rows FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.n_rows <> e.n_rows"),
    ("session key values differ from the primary legacy row (id, path, size)",
     "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE (a.id, a.file_path, a.file_size_bytes) IS DISTINCT FROM (e.primary_id, e.primary_path, e.file_size_bytes)"),
    ("chosen analysis differs",
     "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.ar_id IS DISTINCT FROM e.ar_id"),
    ("emg_statistics rows != channels in analytics_data",
     "SELECT e.file_hash || ' expected ' || e.n_channels || ' got ' || a.n_channels FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.n_channels <> e.n_channels"),
    ("emg_contractions rows != contractions lists",
     "SELECT e.file_hash || ' expected ' || e.n_contr || ' got ' || a.n_contr FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.n_contr <> e.n_contr"),
    ("sum of contraction_count differs",
     "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.sum_cc <> e.sum_cc"),
    ("sum of rms differs",
     "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE abs(a.sum_rms - e.sum_rms) > 1e-9 * greatest(abs(e.sum_rms), 1)"),
    ("performance_scores / session_settings missing for a session with statistics",
     "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE e.ok AND NOT (a.has_scores AND a.has_settings)"),
    ("status: usable analysis but not completed, or no usable analysis but completed",
     "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE e.ok <> (a.processing_status = 'completed')"),
]


async def validate(dsn: str, *, sample: int = 5) -> ValidationReport:
    """Compare the legacy tables with the new ones; problems list every kind of loss found."""
    t0 = time.perf_counter()
    report = ValidationReport()
    conn = await asyncpg.connect(dsn, server_settings=_SESSION)
    try:
        async with conn.transaction():
            now = await conn.fetchval("SELECT now()")
            await conn.execute(_VALIDATE_EXPECTED.replace("$1", "'" + now.isoformat() + "'::timestamptz"))
            await conn.execute(_VALIDATE_ACTUAL)
            await conn.execute("CREATE INDEX ON _lv_exp (file_hash); CREATE INDEX ON _lv_act (file_hash); "
                               "ANALYZE _lv_exp; ANALYZE _lv_act")
            c = report.counts
            c["legacy c3d_metadata rows"] = await conn.fetchval("SELECT count(*) FROM c3d_metadata")
            c["legacy distinct file_hash"] = await conn.fetchval("SELECT count(*) FROM _lv_exp")
            c["legacy second paths (same hash)"] = await conn.fetchval("SELECT coalesce(sum(n_rows - 1), 0) FROM _lv_exp")
            c["legacy analysis_results rows"] = await conn.fetchval("SELECT count(*) FROM analysis_results")
            c["  chosen (migrated)"] = await conn.fetchval("SELECT count(ar_id) FROM _lv_exp")
            c["  not chosen (older/expired/empty dup.)"] = c["legacy analysis_results rows"] - c["  chosen (migrated)"]
            c["  chosen but expired"] = await conn.fetchval(
                "SELECT count(*) FROM legacy_c3d_sources WHERE is_primary AND notes ? 'analysis_expired'")
            c["hashes without usable analysis (failed)"] = await conn.fetchval("SELECT count(*) FROM _lv_exp WHERE NOT ok")
            c["migrated sessions"] = await conn.fetchval("SELECT count(*) FROM _lv_act")
            c["legacy_c3d_sources rows"] = await conn.fetchval("SELECT count(*) FROM legacy_c3d_sources")
            c["expected / actual emg_statistics"] = (await conn.fetchval("SELECT coalesce(sum(n_channels),0) FROM _lv_exp"),
                                                     await conn.fetchval("SELECT coalesce(sum(n_channels),0) FROM _lv_act"))
            c["expected / actual emg_contractions"] = (await conn.fetchval("SELECT coalesce(sum(n_contr),0) FROM _lv_exp"),
                                                       await conn.fetchval("SELECT coalesce(sum(n_contr),0) FROM _lv_act"))
            c["unknown patient codes (NULL, recorded)"] = await conn.fetchval(
                "SELECT count(*) FROM legacy_c3d_sources WHERE is_primary AND notes ? 'patient_id'")
            c["unmapped therapist ids (NULL, recorded)"] = await conn.fetchval(
                "SELECT count(*) FROM legacy_c3d_sources WHERE is_primary AND notes ? 'therapist_id'")
            for title, sql in _CHECKS:
                rows = await conn.fetch(f"SELECT * FROM ({sql}) x LIMIT {sample}")
                if rows:
                    total = await conn.fetchval(f"SELECT count(*) FROM ({sql}) x")
                    report.problems.append(f"{title}: {total} (e.g. {', '.join(str(r[0]) for r in rows)})")
            await conn.execute("DROP TABLE _lv_exp; DROP TABLE _lv_act")
    finally:
        await conn.close()
    report.seconds = time.perf_counter() - t0
    (log.info if report.ok else log.error)("legacy migration validation", extra={"fields": {
        "ok": report.ok, "problems": report.problems, "seconds": round(report.seconds, 3)}})
    return report
