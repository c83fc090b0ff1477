"""SQL of the statistics read path. Every query is a fixed text (or one of a few variants), so
asyncpg prepares it once per connection and reuses the plan. See README.md for the indexes."""

from __future__ import annotations

SESSION_COLS = """id, file_path, file_hash, file_size_bytes, patient_id, therapist_id,
    session_id, session_date, session_type, protocol_day, original_sampling_rate,
    original_duration_seconds, original_sample_count, channel_names, channel_count,
    processing_version, processing_status, processing_time_ms, created_at, processed_at,
    error_message"""

GET_SESSION = f"SELECT {SESSION_COLS} FROM therapy_sessions WHERE id = $1"

_STAT_COLS = """e.id, e.session_id, e.channel_name, e.mvc_peak_value, e.mvc_rms_value,
    e.mvc_confidence_score, e.mvc_calculation_method, e.total_contractions,
    e.good_contractions_intensity, e.good_contractions_duration, e.good_contractions_both,
    e.completion_rate, e.intensity_rate, e.duration_rate, e.muscle_compliance_score,
    e.signal_quality_score, e.noise_level_db, e.artifacts_detected, e.processing_confidence,
    e.processing_pipeline, e.processing_version, e.processing_time_ms,
    e.mvc_threshold_percentage, e.duration_threshold_seconds, e.processed_at, e.side,
    e.signal_flags, e.usable"""

# One row per channel, or one all-NULL row when the session exists without statistics,
# or no row when the session does not exist.
EMG_STATISTICS = f"""
SELECT s.id AS sid, {_STAT_COLS}
FROM therapy_sessions s
LEFT JOIN emg_statistics e ON e.session_id = s.id
WHERE s.id = $1
ORDER BY e.channel_name"""

EMG_STATISTICS_CHANNELS = f"""
SELECT s.id AS sid, {_STAT_COLS}
FROM therapy_sessions s
LEFT JOIN emg_statistics e ON e.session_id = s.id AND e.channel_name = ANY($2::text[])
WHERE s.id = $1
ORDER BY e.channel_name"""

_CONTRACTION_COLS = """statistics_id, contraction_index, start_time_s, end_time_s, duration_s,
    peak_amplitude, mean_amplitude, meets_intensity, meets_duration, is_good, partially_masked,
    masked_s"""

CONTRACTIONS = f"""
SELECT {_CONTRACTION_COLS} FROM emg_contractions
WHERE session_id = $1
ORDER BY session_id, channel_name, contraction_index"""

CONTRACTIONS_CHANNELS = f"""
SELECT {_CONTRACTION_COLS} FROM emg_contractions
WHERE session_id = $1 AND channel_name = ANY($2::text[])
ORDER BY session_id, channel_name, contraction_index"""

# The per-session child rows (performance score, BFR monitoring, settings) are read by their
# unique session_id index alone: one index scan, no join. Only when no row comes back does the
# servicer ask SESSION_STATUS whether the session exists (NOT_FOUND says which case it is).
_PERFORMANCE_COLS = """p.session_id AS sid,
    p.id, p.overall_performance_score, p.compliance_score, p.symmetry_score, p.effort_score,
    p.game_score, p.performance_weights, p.bfr_pressure_aop, p.bfr_compliance_gate,
    p.rpe_post_session, p.game_points_achieved, p.game_points_maximum,
    p.session_duration_minutes, p.left_muscle_completion_rate, p.left_muscle_intensity_rate,
    p.left_muscle_duration_rate, p.right_muscle_completion_rate, p.right_muscle_intensity_rate,
    p.right_muscle_duration_rate, p.calculated_at, p.scoring_config_version,
    o.session_id IS NOT NULL AS has_outcome, o.rpe_post_session AS o_rpe, o.game_points AS o_game_points,
    o.game_points_max AS o_game_points_max, o.bfr_actual_pressure_aop AS o_bfr_pressure,
    o.recorded_by AS o_recorded_by, o.recorded_at AS o_recorded_at"""
# The post-session outcome (migration 016) by its primary key, in the same statement.
_PERFORMANCE_FROM = "performance_scores p LEFT JOIN session_outcomes o ON o.session_id = p.session_id"

PERFORMANCE_SCORE = f"SELECT {_PERFORMANCE_COLS} FROM {_PERFORMANCE_FROM} WHERE p.session_id = $1"

SESSION_STATUS = "SELECT processing_status FROM therapy_sessions WHERE id = $1"

# Batch variants (BatchGetSessionStatistics): the same columns for a set of sessions.
BATCH_SESSIONS = f"SELECT {SESSION_COLS} FROM therapy_sessions WHERE id = ANY($1::uuid[])"
BATCH_EMG_STATISTICS = f"""
SELECT e.session_id AS sid, {_STAT_COLS}
FROM emg_statistics e
WHERE e.session_id = ANY($1::uuid[]) AND (cardinality($2::text[]) = 0 OR e.channel_name = ANY($2::text[]))
ORDER BY e.session_id, e.channel_name"""
BATCH_PERFORMANCE = f"SELECT {_PERFORMANCE_COLS} FROM {_PERFORMANCE_FROM} WHERE p.session_id = ANY($1::uuid[])"

BFR_MONITORING = """
SELECT b.session_id AS sid, b.id, b.target_pressure_aop, b.actual_pressure_aop,
    b.pressure_stability_coefficient, b.safety_gate_status, b.safety_violations_count,
    b.safety_violations_duration_seconds, b.max_pressure_deviation_aop,
    b.patient_aop_baseline_mmhg, b.patient_limb_circumference_cm, b.cuff_size, b.cuff_position,
    b.monitoring_device, b.device_calibration_date, b.device_serial_number,
    b.bfr_session_duration_minutes, b.monitoring_frequency_hz, b.created_at
FROM bfr_monitoring b
WHERE b.session_id = $1"""

SESSION_SETTINGS = """
SELECT t.session_id AS sid, t.id, t.mvc_calculation_method, t.mvc_threshold_percentage,
    t.mvc_user_left_quad, t.mvc_user_right_quad, t.performance_weights,
    t.duration_threshold_seconds, t.duration_threshold_left_quad, t.duration_threshold_right_quad,
    t.target_contractions_per_muscle, t.rest_period_between_contractions_seconds,
    t.rest_period_between_sets_seconds, t.bfr_enabled, t.bfr_target_pressure_aop,
    t.game_difficulty_level, t.visual_feedback_enabled, t.audio_feedback_enabled,
    t.real_time_mvc_display, t.created_at, t.updated_at, t.calibration_id, t.value_sources,
    c.source AS calibration_source
FROM session_settings t
LEFT JOIN patient_calibrations c ON c.id = t.calibration_id
WHERE t.session_id = $1"""


def patient_progress(date_from: bool, date_to: bool) -> str:
    """Series + aggregates of one patient in ONE statement.

    `pts` walks idx_therapy_sessions_patient_date and joins performance_scores by its unique
    session index; `agg` computes the aggregates in SQL (least squares via regr_slope); the
    final select adds the per-channel rows (unique (session_id, channel_name) index). `agg` is
    the driving row so that a patient without sessions still yields one row (and says whether
    the patient exists)."""
    window = ""
    if date_from:
        window += " AND s.session_date >= $2"
    if date_to:
        window += f" AND s.session_date < ${3 if date_from else 2}"
    return f"""
WITH pts AS MATERIALIZED (
    SELECT s.id, s.session_date, s.protocol_day, s.session_type,
        p.overall_performance_score AS overall, p.compliance_score, p.symmetry_score,
        p.effort_score, p.game_score, p.performance_weights
    FROM therapy_sessions s
    JOIN performance_scores p ON p.session_id = s.id
    WHERE s.patient_id = $1 AND s.processing_status = 'completed'{window}
), agg AS (
    SELECT count(*) AS n,
        regr_slope(overall, extract(epoch FROM session_date) / 86400.0) AS slope,
        (array_agg(overall ORDER BY session_date ASC NULLS LAST, id ASC))[1] AS first_score,
        (array_agg(overall ORDER BY session_date DESC NULLS FIRST, id DESC))[1] AS last_score,
        max(overall) AS best_score,
        (array_agg(id ORDER BY overall DESC, session_date ASC NULLS LAST, id ASC))[1] AS best_id,
        count(DISTINCT COALESCE('day ' || protocol_day::text,
                                ((session_date AT TIME ZONE 'UTC')::date)::text)) AS days_done,
        EXISTS (SELECT 1 FROM patients WHERE patient_code = $1) AS patient_exists
    FROM pts
)
SELECT agg.*, pts.id AS sid, pts.session_date, pts.protocol_day, pts.session_type, pts.overall,
    pts.compliance_score, pts.symmetry_score, pts.effort_score, pts.game_score,
    pts.performance_weights, e.channel_name, e.side, e.completion_rate, e.intensity_rate,
    e.duration_rate, e.muscle_compliance_score, e.mvc_peak_value, e.total_contractions,
    e.good_contractions_both
FROM agg
LEFT JOIN pts ON true
LEFT JOIN emg_statistics e ON e.session_id = pts.id
ORDER BY pts.session_date ASC NULLS LAST, pts.id ASC, e.channel_name"""


def cohort_summary(therapist: bool, date_from: bool, date_to: bool) -> str:
    """Mean/stddev of the scores per protocol day plus the cohort totals, one statement.

    Without a date range: the rows of cohort_summary_scores (migration 021, kept by triggers) of
    the whole cohort (therapist_id IS NULL) or of one therapist ($1), at most one per protocol
    day plus the all-days row: O(days) whatever the size of the registry (unique index
    (therapist_id, protocol_day)). The sums are NUMERIC (exact); the means and the sample stddev
    are computed from them and returned as double precision. With no session the total line is
    the empty total (0 sessions, 0 patients, no mean).

    With a date range: the two-level aggregation of the sessions of that range (see
    `_cohort_per_from_sessions`). Sessions without a protocol day are day 0 (unknown).

    With `therapist` ($1), every row also carries `therapist_known` (the therapist exists)."""
    # A therapist's summary says in the same statement whether the therapist exists (every row,
    # the total line included: one round trip for NOT_FOUND too).
    known = ", EXISTS (SELECT 1 FROM therapists WHERE id = $1) AS therapist_known" if therapist else ""
    if not (date_from or date_to):
        scope = "therapist_id = $1" if therapist else "therapist_id IS NULL"
        return f"""
WITH r AS MATERIALIZED (
    SELECT protocol_day IS NULL AS is_total, COALESCE(protocol_day, 0) AS protocol_day,
        session_count, patient_count,
        (sum_overall / session_count)::float8 AS mean_overall,
        CASE WHEN protocol_day IS NOT NULL AND session_count > 1
             THEN sqrt(greatest(sumsq_overall - sum_overall * sum_overall / session_count, 0)
                       / (session_count - 1))::float8 END AS stddev_overall,
        CASE WHEN protocol_day IS NOT NULL THEN (sum_compliance / session_count)::float8 END AS mean_compliance,
        CASE WHEN protocol_day IS NOT NULL THEN (sum_symmetry / session_count)::float8 END AS mean_symmetry
    FROM cohort_summary_scores WHERE {scope}
)
SELECT *{known} FROM r
UNION ALL
SELECT true, 0, 0::bigint, 0::bigint, NULL::float8, NULL::float8, NULL::float8, NULL::float8{known}
WHERE NOT EXISTS (SELECT 1 FROM r WHERE is_total)
ORDER BY is_total DESC, protocol_day"""
    per = _cohort_per_from_sessions(therapist, date_from, date_to)
    return f"""
WITH per AS MATERIALIZED ({per}
)
SELECT false AS is_total, protocol_day, sum(n)::bigint AS session_count, count(*) AS patient_count,
    sum(so) / sum(n) AS mean_overall,
    CASE WHEN sum(n) > 1
         THEN sqrt(greatest(sum(sq) - sum(so) * sum(so) / sum(n), 0) / (sum(n) - 1)) END AS stddev_overall,
    sum(sc) / sum(n) AS mean_compliance, sum(ss) / sum(n) AS mean_symmetry{known}
FROM per GROUP BY protocol_day
UNION ALL
SELECT true, 0, COALESCE(sum(n), 0)::bigint, count(DISTINCT patient_id), sum(so) / sum(n), NULL, NULL, NULL{known}
FROM per
ORDER BY is_total DESC, protocol_day"""


def _cohort_per_from_sessions(therapist: bool, date_from: bool, date_to: bool) -> str:
    """The first level of cohort_summary aggregated from the session tables (hashed, no sort
    of the whole cohort)."""
    conds = ["s.processing_status = 'completed'"]
    n = 0
    if therapist:
        n += 1
        conds.append(f"s.patient_id IN (SELECT patient_code FROM patients WHERE therapist_id = ${n})")
    if date_from:
        n += 1
        conds.append(f"s.session_date >= ${n}")
    if date_to:
        n += 1
        conds.append(f"s.session_date < ${n}")
    return f"""
    SELECT COALESCE(s.protocol_day, 0) AS protocol_day, s.patient_id, count(*) AS n,
        sum(p.overall_performance_score) AS so,
        sum(p.overall_performance_score * p.overall_performance_score) AS sq,
        sum(p.compliance_score) AS sc, sum(p.symmetry_score) AS ss
    FROM therapy_sessions s
    JOIN performance_scores p ON p.session_id = s.id
    WHERE {" AND ".join(conds)}
    GROUP BY 1, 2"""


def list_sessions(
    conds: list[str], cursor_date_arg: int | None, cursor_id_arg: int | None, dated_only: bool, limit_arg: int
) -> str:
    """Keyset page ordered (session_date DESC NULLS LAST, id DESC).

    The indexes are (..., session_date DESC, id DESC), i.e. DESC NULLS FIRST, which cannot
    serve NULLS LAST directly. So the page is the union of two index-ordered branches, each
    limited to the page size: dated rows (session_date IS NOT NULL, keyset on (date, id)) and
    undated rows (session_date IS NULL, keyset on id); a sort of <= 2 x limit rows merges
    them. The undated branch is skipped when a date filter is present, the dated one when the
    cursor is already among undated rows."""
    where = list(conds)
    branches = []
    cursor_null_date = cursor_id_arg is not None and cursor_date_arg is None
    if not cursor_null_date:
        dated = [*where, "session_date IS NOT NULL"]
        if cursor_date_arg is not None:
            dated.append(f"(session_date, id) < (${cursor_date_arg}, ${cursor_id_arg})")
        branches.append(
            f"(SELECT {SESSION_COLS} FROM therapy_sessions WHERE {' AND '.join(dated)} "
            f"ORDER BY session_date DESC, id DESC LIMIT ${limit_arg})"
        )
    if not dated_only:
        undated = [*where, "session_date IS NULL"]
        if cursor_null_date:
            undated.append(f"id < ${cursor_id_arg}")
        branches.append(
            f"(SELECT {SESSION_COLS} FROM therapy_sessions WHERE {' AND '.join(undated)} "
            f"ORDER BY session_date DESC, id DESC LIMIT ${limit_arg})"
        )
    if len(branches) == 1:
        return branches[0][1:-1]
    return (
        f"SELECT * FROM ({' UNION ALL '.join(branches)}) page "
        f"ORDER BY session_date DESC NULLS LAST, id DESC LIMIT ${limit_arg}"
    )


# --------------------------------------------------------------------------- patients (016)
#
# patients, therapists and scoring_config have no row-level security: a therapist's caseload is
# filtered here, in the statement (`therapist_condition`). patient_calibrations and
# session_outcomes also have RLS (migration 016), the second wall.

PATIENT_COLS = """p.id, p.patient_code, p.therapist_id, p.first_name, p.last_name, p.date_of_birth,
    p.active, p.created_at, p.deactivated_at"""

CALIBRATION_COLUMNS = (
    "id",
    "patient_code",
    "mvc_left_v",
    "mvc_right_v",
    "duration_threshold_left_s",
    "duration_threshold_right_s",
    "target_contractions",
    "bfr_target_pressure_aop",
    "source",
    "source_session_id",
    "rule",
    "created_by",
    "created_by_role",
    "created_at",
    "notes",
)
_CAL_COLS = ", ".join(f"c.{col} AS cal_{col}" for col in CALIBRATION_COLUMNS)


# The therapists row of the caller (GetCohortSummary: a therapist's cohort is their caseload).
THERAPIST_OF_USER = "SELECT id FROM therapists WHERE user_id = $1"


def therapist_condition(subject_placeholder: str | None) -> str:
    """Patients (alias p) of the therapist whose auth user id is bound to the placeholder
    (therapists.user_id is UNIQUE; idx_patients_therapist). None: the caller's subject is not
    a UUID, so no therapist can be theirs."""
    if subject_placeholder is None:
        return "false"
    return f"p.therapist_id IN (SELECT t.id FROM therapists t WHERE t.user_id = {subject_placeholder})"


def patients(conds: list[str], limit_arg: int | None = None) -> str:
    """Patients matching `conds` (alias p) by patient code, each with its session count and its
    current calibration.

    The page is cut first (the unique patient_code index walked in order, or a caseload's
    idx_patients_therapist rows sorted; LIMIT), then each
    patient of the page gets its newest calibration by idx_patient_calibrations_current
    (patient_code, created_at DESC, id DESC; one index probe, LIMIT 1) and its session count
    from idx_therapy_sessions_patient_date (patient_id leading)."""
    where = " AND ".join(["p.patient_code IS NOT NULL", *conds])
    limit = f" LIMIT ${limit_arg}" if limit_arg is not None else ""
    return f"""
SELECT p.*,
    (SELECT count(*) FROM therapy_sessions s WHERE s.patient_id = p.patient_code) AS session_count,
    {_CAL_COLS}
FROM (SELECT {PATIENT_COLS} FROM patients p WHERE {where} ORDER BY p.patient_code{limit}) p
LEFT JOIN LATERAL (
    SELECT * FROM patient_calibrations c WHERE c.patient_code = p.patient_code
    ORDER BY c.created_at DESC, c.id DESC LIMIT 1) c ON true
ORDER BY p.patient_code"""


def patient_calibrations(caseload: str | None) -> str:
    """A patient's calibrations, newest first; one row with NULL calibration columns when the
    (visible) patient has none, no row when there is no such (visible) patient."""
    extra = f" AND {caseload}" if caseload else ""
    return f"""
SELECT {_CAL_COLS}
FROM patients p
LEFT JOIN patient_calibrations c ON c.patient_code = p.patient_code
WHERE p.patient_code = $1{extra}
ORDER BY c.created_at DESC, c.id DESC"""


# Highest version = current (primary key, read backwards).
_SCORING_COLS = "version, config, created_by, created_at, notes"
CURRENT_SCORING_CONFIG = f"SELECT {_SCORING_COLS} FROM scoring_config ORDER BY version DESC LIMIT 1"
SCORING_CONFIG = f"SELECT {_SCORING_COLS} FROM scoring_config WHERE version = $1"
