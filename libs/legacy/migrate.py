"""`ghostly migrate-legacy`: c3d_metadata / analysis_results -> the statistics-first tables.

Set-based: each batch of legacy rows (keyset over c3d_metadata.id) is migrated by a handful of
INSERT ... SELECT statements with jsonb functions, in ONE transaction. The rules are those of
libs/legacy/mapping.py (the reference implementation, checked against this SQL by the tests).

* Idempotent: a file_hash already in therapy_sessions is skipped, so a re-run creates nothing.
* Resumable: committed batches stay; after a crash, re-running skips them (by file_hash) and
  continues. A hash is always handled whole, in the batch that holds its primary row.
* --dry-run: every batch runs and is rolled back; the counts say what would be written.
* Validation (after the run, or alone with --validate-only): expected per file_hash, recomputed
  from the legacy tables, against what is in the new tables; any difference fails the validation (exit 1).
* Real legacy databases (issue 17): both generations of analytics_data key names
  (mapping.FIELD_MAP), absent values NULL (never 0), values outside the new constraints mapped or
  nulled and reported, optional legacy columns may be missing (read as NULL: Shape), per-row
  quarantine (a failing batch is split until the failing legacy row is found; it goes to
  legacy_migration_errors and the rest commits), delta runs (legacy rows edited or re-analysed
  since they were migrated are migrated again: stale_hashes), clinical validation (per channel
  counts, rates, MVC, thresholds; per session scores), and after 008 "archived", not a crash.

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
from typing import Any

import asyncpg

from . import mapping as M

log = logging.getLogger("ghostly.legacy")

_UUID_RE = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_ZERO = uuid.UUID(int=0)
# JIT compilation of these large statements costs more than it saves (hundreds of ms per
# statement); the work is I/O- and jsonb-bound, not expression-bound.
_SESSION = {"jit": "off", "application_name": "ghostly-migrate-legacy"}


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
    remigrated: int = 0  # delta: sessions re-migrated because their legacy rows changed
    quarantined: int = 0  # legacy rows put into legacy_migration_errors by this run
    missing_columns: list = field(default_factory=list)
    archived: bool = False  # 008 applied: nothing to do
    dry_run: bool = False
    bulk: bool = False  # emg_contractions' foreign keys dropped for the run (BULK_MIN_ROWS)
    seconds: float = 0.0


@dataclass
class ValidationReport:
    counts: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)  # "path: reason" of legacy_migration_errors
    values: list[str] = field(default_factory=list)  # values mapped / nulled (constraints), with counts
    notes: list[str] = field(default_factory=list)  # what validation repaired first (bulk-run foreign keys)
    archived: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        if self.archived:
            return "legacy migration validation: " + ARCHIVED_MESSAGE
        head = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        if self.ok and self.quarantined:
            head += f", {len(self.quarantined)} legacy row(s) quarantined (legacy_migration_errors)"
        lines = ["legacy migration validation: " + head]
        lines += [f"  {k:<40} {v}" for k, v in self.counts.items()]
        lines += [f"  VALUE: {v}" for v in self.values]
        lines += [f"  NOTE: {n}" for n in self.notes]
        lines += [f"  QUARANTINED: {q}" for q in self.quarantined]
        lines += [f"  LOSS: {p}" for p in self.problems]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- SQL

# The analysis chosen for a file hash (mapping.choose_analysis). $1 = now.
_CHOOSE = """
    SELECT r.id, r.c3d_metadata_id, r.processing_version, r.analytics_data, r.created_at,
           r.processing_time_ms, r.expires_at, r.mvc_values,
           (jsonb_typeof(r.analytics_data) = 'object' AND r.analytics_data <> '{}'::jsonb) AS usable,
           (r.expires_at IS NOT NULL AND r.expires_at <= $1) AS expired
    FROM __AR__ r
    WHERE r.file_hash = m.file_hash
    ORDER BY (jsonb_typeof(r.analytics_data) = 'object' AND r.analytics_data <> '{}'::jsonb) DESC,
             (r.expires_at IS NULL OR r.expires_at > $1) DESC,
             r.created_at DESC NULLS LAST, r.id DESC
    LIMIT 1"""

# Primary row of a hash: the chosen analysis' row if it has this hash, else the earliest.
_PRIMARY = """
    coalesce(
        (SELECT d.id FROM __C3D__ d WHERE d.id = a.c3d_metadata_id AND d.file_hash = m.file_hash),
        (SELECT d.id FROM __C3D__ d WHERE d.file_hash = m.file_hash
         ORDER BY d.created_at NULLS LAST, d.id LIMIT 1))"""

# Status / version / error message of the new session, computed once in the staging table (the
# sessions INSERT writes them; legacy_c3d_sources records what changed without re-reading them).
_STATUS = """(CASE WHEN ok THEN 'completed'
      WHEN ar_id IS NOT NULL OR processing_status IS NULL OR processing_status IN ('completed', 'failed') THEN 'failed'
      ELSE processing_status END)"""

# Staging: one row per file_hash whose primary legacy row lies in this batch and which is not
# migrated yet. The "already migrated?" test is an index probe (LIMIT 1 keeps it a nested-loop
# anti join): a hash join would read the whole, growing, therapy_sessions table in every batch.
# Values outside the new constraints (issue 17), computed once per staged row.
_SESSION_TYPE = (
    "(CASE WHEN lower(btrim(m.session_type)) IN ("
    + ", ".join(f"'{t}'" for t in M.SESSION_TYPES)
    + ") THEN lower(btrim(m.session_type)) "
    + " ".join(f"WHEN lower(btrim(m.session_type)) = '{k}' THEN '{v}'" for k, v in M.SESSION_TYPE_MAP.items())
    + " END)"
)
_LABEL = r"'([0-9]{4}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])_([01][0-9]|2[0-3])-[0-5][0-9]-[0-5][0-9])'"
_DATE_FROM_NAME = f"""(to_timestamp(coalesce(substring(m.session_id from {_LABEL}), substring(m.file_path from {_LABEL})),
                       'YYYYMMDD_HH24-MI-SS')::timestamp AT TIME ZONE 'UTC')"""


# a JSON number, or a string holding a plain non-negative decimal (mapping.parse_number)
def _jnum(expr: str) -> str:
    return (
        f"(CASE WHEN jsonb_typeof({expr}) = 'number' THEN ({expr})::text::numeric "
        f"WHEN jsonb_typeof({expr}) = 'string' AND ({expr}) #>> '{{}}' ~ '^\\s*[0-9]+(\\.[0-9]+)?\\s*$' "
        f"THEN btrim(({expr}) #>> '{{}}')::numeric END)"
    )


_GAME_SCORE = _jnum("m.game_metadata->'score'")
_GAME_LEVEL = _jnum("m.game_metadata->'level'")

# Staging: one row per file_hash whose primary legacy row lies in this batch (__FILTER__: a
# keyset range, or the hashes of a delta run) and which is not migrated yet. The "already
# migrated?" test is an index probe (LIMIT 1 keeps it a nested-loop anti join): a hash join
# would read the whole, growing, therapy_sessions table in every batch.
_STAGE = f"""
CREATE TEMP TABLE _lm_src ON COMMIT DROP AS
SELECT x.*,
       coalesce(x.ar_version, x.processing_version, '{M.UNKNOWN_VERSION}') AS ts_version,
       {_STATUS} AS ts_status,
       coalesce(x.error_message, CASE WHEN NOT x.ok AND {_STATUS} = 'failed' THEN
           CASE WHEN x.ar_id IS NULL THEN 'migrated from legacy: no analysis_results row'
                ELSE 'migrated from legacy: analytics_data empty (processing failed)' END END) AS ts_error,
       CASE WHEN x.score_num >= 0 AND x.score_num < 1e9 THEN floor(x.score_num + 0.5)::int END AS points,
       CASE WHEN x.level_num = trunc(x.level_num) AND x.level_num BETWEEN {M.GAME_LEVEL_RANGE[0]} AND {M.GAME_LEVEL_RANGE[1]}
            THEN x.level_num::int END AS level_new,
       CASE WHEN coalesce(x.game_metadata->>'level', '') = '' THEN NULL
            WHEN x.level_num IS NULL OR x.level_num <> trunc(x.level_num)
            THEN 'legacy level ' || quote_literal(x.game_metadata->>'level') || ' is not a whole number: stored NULL'
            WHEN x.level_num NOT BETWEEN {M.GAME_LEVEL_RANGE[0]} AND {M.GAME_LEVEL_RANGE[1]}
            THEN 'legacy level ' || quote_literal(x.game_metadata->>'level') || ' outside 1-10: stored NULL' END AS level_note
FROM (
    SELECT m.*,
           a.id AS ar_id, a.processing_version AS ar_version,
           a.created_at AS ar_created_at, a.processing_time_ms AS ar_time_ms,
           coalesce(a.usable, false) AS ok, coalesce(a.expired, false) AS ar_expired,
           p.patient_code AS new_patient, t.id AS new_therapist,
           {_SESSION_TYPE} AS st_new,
           coalesce(m.session_date AT TIME ZONE 'UTC', {_DATE_FROM_NAME}) AS date_new,
           {_GAME_SCORE} AS score_num, {_GAME_LEVEL} AS level_num
    FROM __C3D__ m
    LEFT JOIN LATERAL ({_CHOOSE}) a ON true
    LEFT JOIN patients p ON p.patient_code = m.patient_id
    LEFT JOIN therapists t
           ON t.id = CASE WHEN btrim(m.therapist_id) ~ '{_UUID_RE}' THEN btrim(m.therapist_id)::uuid END
    WHERE __FILTER__
      AND m.id = {_PRIMARY}
      AND NOT EXISTS (SELECT 1 FROM therapy_sessions s WHERE s.file_hash = m.file_hash LIMIT 1)
) x
"""
_RANGE_FILTER = "m.id > $2 AND m.id <= $3"
_HASH_FILTER = "m.file_hash = ANY($2::text[])"

_INSERT_SESSIONS = """
WITH ins AS (
    INSERT INTO therapy_sessions (
        id, file_path, file_hash, file_size_bytes, patient_id, therapist_id, session_id,
        session_date, session_type, protocol_day, original_sampling_rate,
        original_duration_seconds, original_sample_count, channel_names, channel_count,
        processing_version, processing_status, processing_time_ms, created_at, processed_at,
        error_message, game_metadata)
    SELECT id, file_path, file_hash, file_size_bytes, new_patient, new_therapist, session_id,
           date_new, st_new, NULL,
           coalesce(sampling_rate, 0), coalesce(duration_seconds, 0), coalesce(frame_count, 0),
           coalesce(channel_names, '[]'::jsonb), coalesce(channel_count, 0),
           ts_version, ts_status, ar_time_ms, created_at, processed_at, ts_error, game_metadata
    FROM _lm_src
    ON CONFLICT DO NOTHING
    RETURNING id)
DELETE FROM _lm_src s WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = s.id)
"""

# legacy values with no column in the new schema (every legacy row keeps them)
_NO_HOME = (
    "session_duration",
    "session_notes",
    "resolved_patient_id",
    "resolved_therapist_id",
    "resolved_session_date",
    "size_category",
    "content_type",
    "upload_date",
    "bucket_name",
    "object_metadata",
    "updated_at",
)

_PRIMARY_LV = (
    "jsonb_build_object("
    + ", ".join(f"'{c}', s.{c}" for c in _NO_HOME)
    + """)
  || CASE WHEN s.new_patient IS DISTINCT FROM s.patient_id THEN jsonb_build_object('patient_id', s.patient_id) ELSE '{}' END
  || CASE WHEN s.new_therapist::text IS DISTINCT FROM s.therapist_id THEN jsonb_build_object('therapist_id', s.therapist_id) ELSE '{}' END
  || CASE WHEN s.sampling_rate IS NULL THEN '{"sampling_rate": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.duration_seconds IS NULL THEN '{"duration_seconds": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.frame_count IS NULL THEN '{"frame_count": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.channel_names IS NULL THEN '{"channel_names": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.channel_count IS NULL THEN '{"channel_count": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.st_new IS DISTINCT FROM s.session_type THEN jsonb_build_object('session_type', s.session_type) ELSE '{}' END
  || CASE WHEN s.session_date IS NULL THEN '{"session_date": null}'::jsonb ELSE '{}' END
  || CASE WHEN s.ts_version IS DISTINCT FROM s.processing_version THEN jsonb_build_object('processing_version', s.processing_version) ELSE '{}' END
  || CASE WHEN s.ts_status IS DISTINCT FROM s.processing_status THEN jsonb_build_object('processing_status', s.processing_status) ELSE '{}' END
  || CASE WHEN s.ts_error IS DISTINCT FROM s.error_message THEN jsonb_build_object('error_message', s.error_message) ELSE '{}' END
  || CASE WHEN s.ar_id IS NOT NULL THEN jsonb_build_object('analysis_created_at', s.ar_created_at) ELSE '{}' END"""
)

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
    'session_type', CASE WHEN s.session_type IS NOT NULL AND s.st_new IS NULL
                         THEN 'session type ' || quote_literal(s.session_type) || ' is not baseline/training/assessment: stored NULL'
                         WHEN s.st_new IS DISTINCT FROM s.session_type
                         THEN 'session type ' || quote_literal(s.session_type) || ' mapped to ' || quote_literal(s.st_new) END,
    'session_date', CASE WHEN s.session_date IS NULL AND s.date_new IS NOT NULL
                         THEN 'legacy session_date NULL: taken from the file name' END,
    'game_level', s.level_note,
    'game_score', CASE WHEN s.ok AND s.points IS NULL
                       THEN 'game score ' || coalesce(quote_literal(s.game_metadata->>'score'), 'NULL') || ' is not a number: game_points_achieved 0' END,
    'analysis_expired', CASE WHEN s.ar_expired THEN true END,
    'second_paths', (SELECT nullif(count(*), 0) FROM __C3D__ d WHERE d.file_hash = s.file_hash AND d.id <> s.id)))"""

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
CROSS JOIN LATERAL (SELECT d0.* FROM __C3D__ d0 WHERE d0.file_hash = s.file_hash OFFSET 0) d
"""

_USER_METHODS = "(" + ", ".join(f"'{m}'" for m in M.USER_MVC_METHODS) + ")"


def _arr(keys) -> str:
    return "ARRAY[" + ", ".join(f"'{k}'" for k in keys) + "]::text[]"


# JSON kind of a value, as mapping.json_kind: i(nteger literal), f(loat), b, n(ull), s, o
def _kind(expr: str) -> str:
    return (
        f"(CASE jsonb_typeof({expr}) WHEN 'null' THEN 'n' WHEN 'boolean' THEN 'b' "
        f"WHEN 'number' THEN CASE WHEN ({expr})::text ~ '^-?[0-9]+$' THEN 'i' ELSE 'f' END "
        f"WHEN 'string' THEN 's' ELSE 'o' END)"
    )


# Time-ordered ids (UUID version 7 layout: 48-bit Unix ms, version, random, variant, random, then
# a per-statement counter) for emg_statistics / emg_contractions. gen_random_uuid() scattered
# ~2M insertions over the whole primary-key and (statistics_id, contraction_index) indexes
# (random pages read, dirtied, evicted and read again); ordered ids append at the right edge.
# {p}: 24 hex digits made per batch and table by _id_prefix(); {n}: the row counter.
_ID = "({p} || lpad(to_hex({n}), 8, '0'))::uuid"


def _id_prefix() -> str:
    ms = time.time_ns() // 1_000_000
    r = int.from_bytes(os.urandom(6), "big")  # 42 random bits: 12 + 2 + 28
    return f"{ms & (2**48 - 1):012x}7{(r >> 36) & 0xFFF:03x}{0x8 | ((r >> 28) & 0x3):x}{r & 0xFFFFFFF:07x}"


def _cnt(*keys: str) -> str:
    return (
        "coalesce("
        + ", ".join(
            f"(CASE WHEN jsonb_typeof(c.value->'{k}') = 'number' THEN floor((c.value->>'{k}')::numeric + 0.5)::int END)"
            for k in keys
        )
        + ")"
    )


def _num(*keys: str) -> str:
    return (
        "coalesce("
        + ", ".join(
            f"(CASE WHEN jsonb_typeof(c.value->'{k}') = 'number' THEN (c.value->>'{k}')::float8 END)" for k in keys
        )
        + ")"
    )


_CARRIED_COUNTS = _arr(M.COUNT_KEYS)
_CARRIED_SIGNALS = _arr(M.SIGNAL_KEYS)
_CONTRACTION_KEYS = _arr(M.CONTRACTION_KEYS)


def _carried_expr() -> str:
    """jsonb {legacy key: kind} of the keys a column gives back (mapping.map_channel 'carried'):
    counts written as integer literals, signal values written as floats or null, the list."""
    parts = []
    for k in M.COUNT_KEYS:
        kd = _kind("c.value->'" + k + "'")
        parts.append(f"'{k}', CASE WHEN {kd} = 'i' THEN 'i' END")
    for k in M.SIGNAL_KEYS:
        kd = _kind("c.value->'" + k + "'")
        parts.append(f"'{k}', CASE WHEN c.value ? '{k}' AND {kd} IN ('f', 'n') THEN {kd} END")
    parts.append("'contractions', CASE WHEN jsonb_typeof(c.value->'contractions') = 'array' THEN 'a' END")
    return "jsonb_strip_nulls(jsonb_build_object(" + ", ".join(parts) + "))"


def _contraction_kinds_expr() -> str:
    first = "(c.value->'contractions'->0)"
    parts = []
    for k in M.CONTRACTION_KEYS:
        kd = _kind(first + "->'" + k + "'")
        parts.append(f"'{k}', CASE WHEN {first} ? '{k}' THEN {kd} END")
    return "jsonb_strip_nulls(jsonb_build_object(" + ", ".join(parts) + "))"


_CARRIED = _carried_expr()
_CONTRACTION_KINDS = _contraction_kinds_expr()

# One row per channel of the chosen analyses: every value is extracted once from the in-memory
# jsonb_each value (one detoast of analytics_data per analysis), both generations of key names
# (mapping.FIELD_MAP), plus the derived rates (NULL when an input is absent), kept in memory
# (MATERIALIZED CTE) for the four INSERTs of _INSERT_CHANNELS. `carried`: the legacy keys a
# column gives back (with their JSON kind, for the views); they are removed from `legacy`.
_CHAN = f"""
SELECT c.*,
       (coalesce(c.comp, 0) + coalesce(c.inten, 0) + coalesce(c.dur, 0))
         / nullif((c.comp IS NOT NULL)::int + (c.inten IS NOT NULL)::int + (c.dur IS NOT NULL)::int, 0) AS mcs,
       CASE WHEN c.method IN {_USER_METHODS} THEN 'user_defined' ELSE 'backend_95percentile' END AS mvc_method,
       coalesce(c.mvc_v, c.est, c.thr / coalesce(c.pct, {M.DEFAULT_MVC_THRESHOLD_PERCENTAGE})) AS mvc_peak,
       c.value - ARRAY(SELECT jsonb_object_keys(c.carried)) AS legacy
FROM (
    SELECT c.*,
           -- least() ignores NULLs: an absent input must stay NULL, hence the CASEs
           CASE WHEN c.n_total IS NOT NULL THEN
               least(c.n_total::float8 / coalesce(nullif(greatest(c.expected, 0), 0), {M.DEFAULT_TARGET_CONTRACTIONS}), 1.0) END AS comp,
           CASE WHEN c.n_total IS NULL OR c.n_mvc IS NULL THEN NULL WHEN c.n_total = 0 THEN 0
                ELSE least(c.n_mvc::float8 / c.n_total, 1.0) END AS inten,
           CASE WHEN c.n_total IS NULL OR c.n_dur IS NULL THEN NULL WHEN c.n_total = 0 THEN 0
                ELSE least(c.n_dur::float8 / c.n_total, 1.0) END AS dur,
           CASE WHEN c.pct_raw > 1 AND c.pct_raw <= 100 THEN c.pct_raw / 100.0
                WHEN c.pct_raw > 0 AND c.pct_raw <= 1 THEN c.pct_raw END AS pct
    FROM (
        SELECT {_ID.format(p="$1", n="row_number() OVER ()")} AS stat_id, s.id AS session_id, c.key AS ch, c.value,
               s.ar_id, s.ar_version, s.ar_time_ms, s.ar_created_at,
               CASE WHEN jsonb_typeof(c.mvc_values -> c.key) = 'number' THEN (c.mvc_values ->> c.key)::float8 END AS mvc_v,
               {_cnt(*M.FIELD_MAP["total_contractions"])} AS n_total,
               {_cnt(*M.FIELD_MAP["good_contractions_intensity"])} AS n_mvc,
               {_cnt(*M.FIELD_MAP["good_contractions_duration"])} AS n_dur,
               {_cnt(*M.FIELD_MAP["good_contractions_both"])} AS n_good,
               {_cnt("expected_contractions")} AS expected,
               {_num(*M.THRESHOLD_KEYS)} AS thr,
               {_num(*M.MVC_VALUE_KEYS)} AS est,
               {_num(*M.PERCENTAGE_KEYS)} AS pct_raw,
               {_num("duration_threshold_actual_value")} AS dthr,
               {_num("rms")} AS rms, {_num("mav")} AS mav, {_num("mpf")} AS mpf, {_num("mdf")} AS mdf,
               {_num("fatigue_index_fi_nsm5")} AS fi,
               c.value->>'mvc_estimation_method' AS method,
               (SELECT string_agg(x, '->' ORDER BY o)
                FROM jsonb_array_elements_text(CASE
                    WHEN jsonb_typeof(c.value->'signal_processing'->'processing_steps') = 'array' THEN c.value->'signal_processing'->'processing_steps'
                    WHEN jsonb_typeof(c.value->'signal_processing_steps') = 'array' THEN c.value->'signal_processing_steps'
                    ELSE '[]'::jsonb END) WITH ORDINALITY e(x, o)) AS steps,
               {_CARRIED} AS carried,
               CASE WHEN jsonb_typeof(c.value->'contractions') = 'array' THEN
                   CASE WHEN jsonb_typeof(c.value->'contractions'->0) = 'object' THEN {_CONTRACTION_KINDS}
                        ELSE '{{}}'::jsonb END END AS contraction_keys,
               CASE WHEN jsonb_typeof(c.value->'contractions') = 'array' THEN c.value->'contractions' ELSE '[]'::jsonb END AS contr,
               CASE WHEN lower(c.key) = 'ch1' OR lower(c.key) LIKE '%left%' THEN 'left'
                    WHEN lower(c.key) = 'ch2' OR lower(c.key) LIKE '%right%' THEN 'right' END AS side
        FROM _lm_src s
        CROSS JOIN LATERAL (SELECT r0.mvc_values, c0.key, c0.value
                            FROM __AR__ r0 CROSS JOIN LATERAL jsonb_each(r0.analytics_data) c0
                            WHERE r0.id = s.ar_id AND jsonb_typeof(c0.value) = 'object' OFFSET 0) c
        WHERE s.ok
    ) c
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
       n_total, n_mvc, n_dur, n_good,
       comp, inten, dur, mcs,
       0, NULL, NULL, 0,
       coalesce(nullif(steps, ''), '{M.DEFAULT_PIPELINE}'),
       ar_version, ar_time_ms,
       coalesce(pct, {M.DEFAULT_MVC_THRESHOLD_PERCENTAGE}), coalesce(dthr / 1000.0, {M.DEFAULT_DURATION_THRESHOLD_SECONDS}),
       ar_created_at, side, rms, mav, mpf, mdf, fi,
       jsonb_build_object(
           'legacy', legacy,
           'migrated_from_legacy', jsonb_strip_nulls(jsonb_build_object(
               'analysis_result_id', ar_id,
               'mvc_peak_value_source', CASE WHEN mvc_v IS NOT NULL THEN 'analysis_results.mvc_values'
                                             WHEN est IS NOT NULL THEN 'estimated_mvc_value'
                                             WHEN thr IS NOT NULL AND pct IS NOT NULL THEN 'mvc threshold / mvc_threshold_percentage_used'
                                             WHEN thr IS NOT NULL THEN 'mvc threshold / 0.75'
                                             ELSE 'none (NULL)' END,
               'carried', carried,
               'contraction_keys', contraction_keys,
               'defaulted', to_jsonb(array_remove(ARRAY[
                   'mvc_confidence_score', 'mvc_rms_value',
                   CASE WHEN pct IS NULL THEN 'mvc_threshold_percentage' END,
                   'processing_confidence', 'signal_quality_score',
                   CASE WHEN dthr IS NULL THEN 'duration_threshold_seconds' END], NULL)),
               'missing', to_jsonb(array_remove(ARRAY[
                   CASE WHEN comp IS NULL THEN 'completion_rate' END,
                   CASE WHEN dur IS NULL THEN 'duration_rate' END,
                   CASE WHEN n_dur IS NULL THEN 'good_contractions_duration' END,
                   CASE WHEN n_good IS NULL THEN 'good_contractions_both' END,
                   CASE WHEN n_mvc IS NULL THEN 'good_contractions_intensity' END,
                   CASE WHEN inten IS NULL THEN 'intensity_rate' END,
                   CASE WHEN mcs IS NULL THEN 'muscle_compliance_score' END,
                   CASE WHEN mvc_peak IS NULL THEN 'mvc_peak_value' END,
                   CASE WHEN n_total IS NULL THEN 'total_contractions' END], NULL)))))
FROM chan
RETURNING 1"""

_INS_CONTRACTIONS = f"""
INSERT INTO emg_contractions (id, statistics_id, session_id, channel_name, contraction_index,
    start_time_s, end_time_s, duration_s, peak_amplitude, mean_amplitude,
    meets_intensity, meets_duration, is_good)
SELECT {_ID.format(p="$2", n="row_number() OVER ()")},
       c.stat_id, c.session_id, c.ch, (e.o - 1)::int,
       coalesce(e.start_time_ms, e.start_ms) / 1000, coalesce(e.end_time_ms, e.end_ms) / 1000,
       coalesce(e.duration_ms, coalesce(e.end_time_ms, e.end_ms) - coalesce(e.start_time_ms, e.start_ms)) / 1000,
       coalesce(e.max_amplitude, 0), coalesce(e.mean_amplitude, 0),
       coalesce(e.meets_mvc, false), coalesce(e.meets_duration, false), coalesce(e.is_good, false)
FROM chan c
CROSS JOIN LATERAL ROWS FROM (jsonb_to_recordset(c.contr) AS (
    start_time_ms float8, end_time_ms float8, start_ms float8, end_ms float8, duration_ms float8,
    max_amplitude float8, mean_amplitude float8, meets_mvc boolean, meets_duration boolean, is_good boolean))
    WITH ORDINALITY e(start_time_ms, end_time_ms, start_ms, end_ms, duration_ms, max_amplitude,
                      mean_amplitude, meets_mvc, meets_duration, is_good, o)
RETURNING 1"""

_REQ = json.dumps(M.REQUESTED_WEIGHTS)

# Per session, from the channel rows (the values just written to emg_statistics: side,
# muscle_compliance_score, rates, mvc_peak_value, mvc_calculation_method).
_SESSION_AGG = """
SELECT s.id, s.ar_id, s.ar_created_at, s.session_duration, s.game_metadata, s.points, s.level_new, s.level_note,
       k.mcs_avg, k.has_l, k.has_r, k.l_mcs, k.r_mcs, k.l_c, k.l_i, k.l_d, k.r_c, k.r_i, k.r_d,
       k.user_mvc, k.l_mvc, k.r_mvc, k.dthr, k.l_dthr, k.r_dthr, k.target, k.pct
FROM _lm_src s
JOIN (SELECT session_id,
             avg(mcs) AS mcs_avg,
             bool_or(side = 'left') AS has_l, bool_or(side = 'right') AS has_r,
             min(mcs) FILTER (WHERE side = 'left') AS l_mcs,
             min(mcs) FILTER (WHERE side = 'right') AS r_mcs,
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
             nullif(max(expected), 0) AS target,
             min(pct) AS pct
      FROM chan GROUP BY session_id) k ON k.session_id = s.id
WHERE s.ok
"""

_W_BOTH = (
    M.REQUESTED_WEIGHTS["compliance"] / (M.REQUESTED_WEIGHTS["compliance"] + M.REQUESTED_WEIGHTS["symmetry"]),
    M.REQUESTED_WEIGHTS["symmetry"] / (M.REQUESTED_WEIGHTS["compliance"] + M.REQUESTED_WEIGHTS["symmetry"]),
)
_INS_SCORES = f"""
INSERT INTO performance_scores (
    session_id, overall_performance_score, compliance_score, symmetry_score, effort_score,
    game_score, performance_weights, bfr_pressure_aop, bfr_compliance_gate, rpe_post_session,
    game_points_achieved, game_points_maximum, session_duration_minutes,
    left_muscle_completion_rate, left_muscle_intensity_rate, left_muscle_duration_rate,
    right_muscle_completion_rate, right_muscle_intensity_rate, right_muscle_duration_rate,
    calculated_at)
SELECT q.id,
       least(greatest(CASE WHEN q.has_sym THEN q.w_c * q.comp + q.w_s * q.sym
                           WHEN q.has_comp THEN q.comp ELSE 0 END, 0), 100),
       coalesce(q.comp, 0), CASE WHEN q.has_sym THEN q.sym ELSE 0 END, 0, 0,
       CASE WHEN q.has_sym
            THEN jsonb_build_object('compliance', q.w_c, 'symmetry', q.w_s, 'effort', 0, 'game', 0)
            WHEN q.has_comp THEN jsonb_build_object('compliance', 1, 'symmetry', 0, 'effort', 0, 'game', 0)
            ELSE jsonb_build_object('compliance', 0, 'symmetry', 0, 'effort', 0, 'game', 0) END
       || jsonb_build_object(
            'requested', '{_REQ}'::jsonb,
            'excluded', jsonb_build_object('effort', 'no RPE in legacy data',
                                           'game', 'no maximum game score in legacy data')
                        || CASE WHEN q.has_sym THEN '{{}}'::jsonb
                                ELSE '{{"symmetry": "left/right pair not available"}}'::jsonb END
                        || CASE WHEN q.has_comp THEN '{{}}'::jsonb
                                ELSE '{{"compliance": "no compliance rates in legacy data"}}'::jsonb END,
            'migrated_from_legacy', jsonb_build_object(
                'analysis_result_id', q.ar_id,
                'derived', 'compliance = mean of the existing muscle_compliance_score x 100; symmetry = (1-|L-R|/(L+R)) x 100',
                'defaulted', '["game_points_maximum=1000 (column default; game excluded)", "bfr_compliance_gate=1.0 (not evaluated: no BFR data)"]'::jsonb
                             || CASE WHEN q.points IS NULL THEN '["game_points_achieved=0 (no numeric score)"]'::jsonb ELSE '[]'::jsonb END)),
       NULL, 1.0, NULL,
       coalesce(q.points, 0), 1000, q.session_duration / 60.0,
       q.l_c, q.l_i, q.l_d, q.r_c, q.r_i, q.r_d,
       q.ar_created_at
FROM (
    SELECT a.id, a.ar_id, a.ar_created_at, a.session_duration, a.points,
           {_W_BOTH[0]!r}::float8 AS w_c, {_W_BOTH[1]!r}::float8 AS w_s,
           a.mcs_avg * 100 AS comp,
           a.mcs_avg IS NOT NULL AS has_comp,
           a.l_mcs IS NOT NULL AND a.r_mcs IS NOT NULL AS has_sym,
           CASE WHEN a.l_mcs + a.r_mcs > 0
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
       coalesce(q.pct, {M.DEFAULT_MVC_THRESHOLD_PERCENTAGE}),
       CASE WHEN q.user_mvc THEN q.l_mvc END, CASE WHEN q.user_mvc THEN q.r_mvc END,
       '{_REQ}'::jsonb || jsonb_build_object('migrated_from_legacy', jsonb_build_object(
           'analysis_result_id', q.ar_id,
           'defaulted', '["performance_weights=requested defaults"]'::jsonb
               || CASE WHEN q.pct IS NULL THEN '["mvc_threshold_percentage=0.75"]'::jsonb ELSE '[]'::jsonb END
               || CASE WHEN q.dthr IS NULL THEN '["duration_threshold_seconds=2.0"]'::jsonb ELSE '[]'::jsonb END
               || CASE WHEN q.target IS NULL THEN '["target_contractions_per_muscle=12"]'::jsonb ELSE '[]'::jsonb END,
           'unknown_set_null', '["rest periods", "bfr_enabled", "bfr_target_pressure_aop", "feedback flags"]'::jsonb)
           || CASE WHEN q.level_note IS NOT NULL THEN jsonb_build_object('game_difficulty_level', q.level_note) ELSE '{{}}'::jsonb END),
       coalesce(q.dthr, {M.DEFAULT_DURATION_THRESHOLD_SECONDS}), q.l_dthr, q.r_dthr,
       coalesce(q.target, {M.DEFAULT_TARGET_CONTRACTIONS}),
       NULL, NULL, NULL, NULL,
       q.level_new,
       NULL, NULL, NULL,
       q.ar_created_at, q.ar_created_at
FROM agg q
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
_HAS_LZ4 = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"


# Legacy columns and their types (legacy-schema.md). All but REQUIRED may be missing on a real
# deployment (older DDL revisions): the migration reads a missing column as NULL.
C3D_TYPES = {
    "id": "uuid",
    "file_path": "text",
    "file_hash": "text",
    "file_size_bytes": "bigint",
    "patient_id": "text",
    "therapist_id": "text",
    "session_id": "text",
    "session_date": "timestamp",
    "session_type": "text",
    "session_duration": "float8",
    "session_notes": "text",
    "game_metadata": "jsonb",
    "channel_names": "jsonb",
    "channel_count": "int",
    "sampling_rate": "float8",
    "duration_seconds": "float8",
    "frame_count": "int",
    "resolved_patient_id": "text",
    "resolved_therapist_id": "text",
    "resolved_session_date": "timestamp",
    "size_category": "text",
    "content_type": "text",
    "upload_date": "timestamptz",
    "bucket_name": "text",
    "object_metadata": "jsonb",
    "processing_status": "text",
    "processing_version": "text",
    "error_message": "text",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "processed_at": "timestamptz",
}
AR_TYPES = {
    "id": "uuid",
    "c3d_metadata_id": "uuid",
    "file_hash": "text",
    "processing_version": "text",
    "analytics_data": "jsonb",
    "processing_time_ms": "int",
    "created_at": "timestamptz",
    "expires_at": "timestamptz",
    "mvc_values": "jsonb",
}
REQUIRED = {
    "c3d_metadata": ("id", "file_path", "file_hash", "file_size_bytes"),
    "analysis_results": ("id", "c3d_metadata_id", "file_hash", "processing_version", "analytics_data"),
}


class LegacyShapeError(RuntimeError):
    """A required legacy column is missing."""


@dataclass
class Shape:
    """How this database's legacy tables are read (missing optional columns -> NULL)."""

    c3d: str = "c3d_metadata"
    ar: str = "analysis_results"
    missing: list[str] = field(default_factory=list)
    has_updated_at: bool = True

    def render(self, sql: str) -> str:
        return sql.replace("__C3D__", self.c3d).replace("__AR__", self.ar)


async def _shape(conn: asyncpg.Connection) -> Shape:
    shape = Shape()
    for table, types, attr in (("c3d_metadata", C3D_TYPES, "c3d"), ("analysis_results", AR_TYPES, "ar")):
        have = {
            r[0]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                table,
            )
        }
        lost = [c for c in REQUIRED[table] if c not in have]
        if lost:
            raise LegacyShapeError(f"legacy table {table} lacks required column(s) {', '.join(lost)}")
        absent = [c for c in types if c not in have]
        if absent:
            shape.missing += [f"{table}.{c}" for c in absent]
            cols = ", ".join(c if c in have else f"NULL::{t} AS {c}" for c, t in types.items())
            setattr(shape, attr, f"(SELECT {cols} FROM {table})")
    shape.has_updated_at = "c3d_metadata.updated_at" not in shape.missing
    return shape


async def legacy_state(conn: asyncpg.Connection) -> str:
    """'present', 'archived' (008 applied) or 'absent'."""
    if await conn.fetchval("SELECT to_regclass('c3d_metadata') IS NOT NULL"):
        return "present"
    if await conn.fetchval("SELECT to_regclass('c3d_metadata_archived') IS NOT NULL"):
        return "archived"
    return "absent"


ARCHIVED_MESSAGE = (
    "legacy tables are archived (migration 008 applied: c3d_metadata_archived, "
    "analysis_results_archived): nothing to migrate or validate"
)


async def _migrate_batch(
    conn: asyncpg.Connection,
    lo,
    hi,
    now,
    settings: tuple[str, ...] = _TX_SETTINGS,
    *,
    shape: Shape | None = None,
    hashes: list[str] | None = None,
) -> dict:
    """One batch: the hashes whose primary row has an id in (lo, hi], or the given hashes."""
    shape = shape or Shape()
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
    if hashes is None:
        await step("stage", shape.render(_STAGE.replace("__FILTER__", _RANGE_FILTER)), now, lo, hi)
        rows = await conn.fetchval(shape.render("SELECT count(*) FROM __C3D__ m WHERE id > $1 AND id <= $2"), lo, hi)
    else:
        await step("stage", shape.render(_STAGE.replace("__FILTER__", _HASH_FILTER)), now, hashes)
        rows = await conn.fetchval(
            shape.render("SELECT count(*) FROM __C3D__ m WHERE file_hash = ANY($1::text[])"), hashes
        )
    await conn.execute("ANALYZE _lm_src")
    await step("sessions", _INSERT_SESSIONS)
    out = await conn.fetchrow("""
        SELECT count(*) AS sessions, count(*) FILTER (WHERE NOT ok) AS failed,
               count(*) FILTER (WHERE patient_id IS NOT NULL AND new_patient IS NULL) AS bad_patient,
               count(*) FILTER (WHERE therapist_id IS NOT NULL AND new_therapist IS NULL) AS bad_therapist
        FROM _lm_src""")
    res = dict(out)
    res["second_paths"] = await step("sources", shape.render(_INSERT_SOURCES)) - res["sessions"]
    counts = await conn.fetchrow(shape.render(_INSERT_CHANNELS), _id_prefix(), _id_prefix())
    timings["channels"] = int((time.perf_counter() - t) * 1000)
    res.update(dict(counts))
    # a quarantined row of these hashes that migrates now leaves the quarantine
    await conn.execute("DELETE FROM legacy_migration_errors e USING _lm_src s WHERE e.file_hash = s.file_hash")
    res["step_ms"] = timings
    res["rows"] = rows
    return res


async def _batch_bounds(conn: asyncpg.Connection, batch_size: int) -> list[uuid.UUID]:
    """Upper keys of the keyset batches over c3d_metadata.id (the last one is the max id)."""
    rows = await conn.fetch(
        """
        SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn, count(*) OVER () AS n
                        FROM c3d_metadata) x
        WHERE rn % $1 = 0 OR rn = n ORDER BY id""",
        batch_size,
    )
    return [r["id"] for r in rows]


# Delta (issue 17): migrated hashes whose legacy rows changed since they were migrated: a legacy
# row edited (its updated_at is not the one recorded in legacy_values; the old application's
# trigger maintains it), re-analysed (the analysis chosen now is another row, or the same row
# re-written: its created_at differs from the recorded one), or a path added/removed. Their
# sessions are deleted (CASCADE: statistics, contractions, scores, settings, provenance) and
# migrated again, hash by hash, in one transaction each chunk; the session id is kept.
_DELTA = f"""
SELECT ts.file_hash
FROM therapy_sessions ts
JOIN legacy_c3d_sources p ON p.session_id = ts.id AND p.is_primary
CROSS JOIN LATERAL (SELECT ts.file_hash) m
LEFT JOIN LATERAL ({_CHOOSE}) a ON true
WHERE p.analysis_result_id IS DISTINCT FROM a.id
   OR (a.id IS NOT NULL AND (p.legacy_values->>'analysis_created_at')::timestamptz IS DISTINCT FROM a.created_at)
   OR (SELECT count(*) FROM __C3D__ d WHERE d.file_hash = ts.file_hash)
      <> (SELECT count(*) FROM legacy_c3d_sources s WHERE s.session_id = ts.id)
   OR EXISTS (SELECT 1 FROM __C3D__ d JOIN legacy_c3d_sources s ON s.c3d_metadata_id = d.id
              WHERE d.file_hash = ts.file_hash AND __EDITED__)
"""
_EDITED = "d.updated_at IS DISTINCT FROM (s.legacy_values->>'updated_at')::timestamptz"


async def stale_hashes(conn: asyncpg.Connection, shape: Shape, now) -> list[str]:
    sql = shape.render(_DELTA).replace("__EDITED__", _EDITED if shape.has_updated_at else "false")
    return [r[0] for r in await conn.fetch(sql, now)]


async def _quarantine(conn: asyncpg.Connection, shape: Shape, ids: list, reason: str) -> None:
    await conn.execute(
        shape.render("""
        INSERT INTO legacy_migration_errors (c3d_metadata_id, file_hash, file_path, reason)
        SELECT m.id, m.file_hash, m.file_path, $2 FROM __C3D__ m WHERE m.id = ANY($1::uuid[])
        ON CONFLICT (c3d_metadata_id) DO UPDATE
        SET reason = EXCLUDED.reason, attempts = legacy_migration_errors.attempts + 1, last_failed_at = now()"""),
        ids,
        reason,
    )


# Bulk load (PostgreSQL's "Populating a Database": remove foreign keys, add them back after).
# A run that migrates at least BULK_MIN_ROWS legacy rows drops the two foreign keys of
# emg_contractions (~50 rows per session, most of the migration's time went into their two
# index probes and row locks per contraction) and re-adds them NOT VALID + VALIDATE: one pass
# with a join. Contractions a concurrent delete orphaned meanwhile are removed first, as their
# ON DELETE CASCADE would have done. A run that dies in between is healed by the next run and
# by --validate-only, before anything else.
BULK_MIN_ROWS = 10_000
CONTRACTION_FKS = {
    "emg_contractions_statistics_id_fkey": "FOREIGN KEY (statistics_id) REFERENCES emg_statistics(id) ON DELETE CASCADE",
    "emg_contractions_session_id_fkey": "FOREIGN KEY (session_id) REFERENCES therapy_sessions(id) ON DELETE CASCADE",
}


async def restore_contraction_fks(conn: asyncpg.Connection) -> list[str]:
    """Re-add the foreign keys of emg_contractions a bulk run dropped; returns their names."""
    present = {
        r[0]
        for r in await conn.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'emg_contractions'::regclass AND contype = 'f'"
        )
    }
    missing = [name for name in CONTRACTION_FKS if name not in present]
    if not missing:
        return []
    async with conn.transaction():
        # NOT VALID: enforced (and cascading) from now on for every write; the rows already
        # there are checked by VALIDATE, a scan that lets writers go on.
        for name in missing:
            await conn.execute(f"ALTER TABLE emg_contractions ADD CONSTRAINT {name} {CONTRACTION_FKS[name]} NOT VALID")
    for name in missing:
        try:
            await conn.execute(f"ALTER TABLE emg_contractions VALIDATE CONSTRAINT {name}")
        except asyncpg.ForeignKeyViolationError:
            # Contractions of a session or statistics row deleted while the key was off: gone,
            # as ON DELETE CASCADE would have done. No new orphan can appear meanwhile (the key
            # is enforced since it was added).
            await conn.execute(
                "DELETE FROM emg_contractions c WHERE NOT EXISTS "
                "(SELECT 1 FROM emg_statistics s WHERE s.id = c.statistics_id) "
                "OR NOT EXISTS (SELECT 1 FROM therapy_sessions t WHERE t.id = c.session_id)"
            )
            await conn.execute(f"ALTER TABLE emg_contractions VALIDATE CONSTRAINT {name}")
    return missing


async def drop_contraction_fks(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        for name in CONTRACTION_FKS:
            await conn.execute(f"ALTER TABLE emg_contractions DROP CONSTRAINT IF EXISTS {name}")


async def run(
    dsn: str,
    *,
    batch_size: int = 5000,
    dry_run: bool = False,
    progress: bool = True,
    fail_after_batches: int | None = None,
    validate_after: bool = True,
    workers: int = 2,
) -> tuple[MigrationStats, ValidationReport | None]:
    """Migrate every legacy row not yet migrated and re-migrate the changed ones (delta); then
    validate (unless dry-run). A batch that fails is split until the failing legacy row is
    found: that row is quarantined (legacy_migration_errors) and the rest commits."""
    from tqdm import tqdm

    stats = MigrationStats(dry_run=dry_run)
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn, server_settings=_SESSION)
    try:
        state = await legacy_state(conn)
        if state != "present":
            stats.archived = state == "archived"
            stats.seconds = time.perf_counter() - started
            if state == "absent":
                raise RuntimeError("no legacy c3d_metadata table in this database: nothing to migrate")
            log.info(ARCHIVED_MESSAGE)
            return stats, None
        if await conn.fetchval(
            "SELECT to_regclass('legacy_c3d_sources') IS NULL OR to_regclass('legacy_migration_errors') IS NULL"
        ):
            raise RuntimeError(
                "legacy_c3d_sources / legacy_migration_errors do not exist: apply the migrations "
                "first (`ghostly migrate`: 001-007, 009-023)"
            )
        healed = await restore_contraction_fks(conn)
        if healed:
            log.warning(
                "foreign keys of emg_contractions restored (an earlier bulk run ended early)",
                extra={"fields": {"constraints": healed}},
            )
        shape = await _shape(conn)
        stats.missing_columns = shape.missing
        now = await conn.fetchval("SELECT now()")
        stats.legacy_rows = await conn.fetchval("SELECT count(*) FROM c3d_metadata")
        stale = await stale_hashes(conn, shape, now)
        already = await conn.fetchval(
            "SELECT count(*) FROM c3d_metadata m WHERE EXISTS (SELECT 1 FROM therapy_sessions s WHERE s.file_hash = m.file_hash)"
        )
        stats.skipped_already_migrated = already
        log.info(
            "legacy migration starting",
            extra={
                "fields": {
                    "legacy_rows": stats.legacy_rows,
                    "already_migrated_rows": already,
                    "changed_since_migrated": len(stale),
                    "missing_optional_columns": shape.missing,
                    "batch_size": batch_size,
                    "dry_run": dry_run,
                }
            },
        )
        bar = tqdm(
            total=stats.legacy_rows,
            unit="row",
            file=sys.stderr,
            disable=not progress,
            desc="migrate-legacy" + (" (dry run)" if dry_run else ""),
        )
        settings = _TX_SETTINGS + ((_LZ4,) if await conn.fetchval(_HAS_LZ4) else ())
        bounds = await _batch_bounds(conn, batch_size)
        # delta chunks first (they delete + re-insert their sessions), then the keyset ranges
        work: list[tuple] = [
            ("hashes", stale[i : i + max(1, batch_size // 4)]) for i in range(0, len(stale), max(1, batch_size // 4))
        ]
        work += [("range", lo, hi) for lo, hi in zip([_ZERO, *bounds[:-1]], bounds)]
        queue = iter(work)
        counters = {"committed": 0}

        def account(res: dict) -> None:
            stats.sessions += res["sessions"]
            stats.failed_sessions += res["failed"]
            stats.second_paths += res["second_paths"]
            stats.statistics += res["statistics"]
            stats.contractions += res["contractions"]
            stats.performance_scores += res["performance_scores"]
            stats.session_settings += res["session_settings"]
            stats.unknown_patient_codes += res["bad_patient"]
            stats.unmapped_therapist_ids += res["bad_therapist"]

        async def attempt(wconn: asyncpg.Connection, item: tuple) -> dict:
            """One transaction: the item migrated (and committed unless dry run), or raises."""
            tx = wconn.transaction()
            await tx.start()
            try:
                if item[0] == "hashes":
                    await wconn.execute("DELETE FROM therapy_sessions WHERE file_hash = ANY($1::text[])", item[1])
                    res = await _migrate_batch(wconn, None, None, now, settings, shape=shape, hashes=item[1])
                    res["remigrated"] = res["sessions"]
                else:
                    res = await _migrate_batch(wconn, item[1], item[2], now, settings, shape=shape)
            except BaseException:
                await tx.rollback()
                raise
            if dry_run:
                await tx.rollback()
            else:
                await tx.commit()
            return res

        async def split(wconn: asyncpg.Connection, item: tuple, exc: Exception) -> list[dict]:
            """The item failed: retry its halves; a single legacy row that fails is quarantined."""
            if item[0] == "hashes":
                keys = item[1]
                if len(keys) == 1:
                    ids = [
                        r[0]
                        for r in await wconn.fetch(
                            shape.render(
                                "SELECT id FROM __C3D__ m WHERE file_hash = $1 ORDER BY created_at NULLS LAST, id LIMIT 1"
                            ),
                            keys[0],
                        )
                    ]
                    return await quarantine(wconn, ids, exc)
                halves: list[tuple[Any, ...]] = [("hashes", keys[: len(keys) // 2]), ("hashes", keys[len(keys) // 2 :])]
            else:
                ids = [
                    r[0]
                    for r in await wconn.fetch(
                        "SELECT id FROM c3d_metadata WHERE id > $1 AND id <= $2 ORDER BY id", item[1], item[2]
                    )
                ]
                if len(ids) <= 1:
                    return await quarantine(wconn, ids, exc)
                mid = ids[len(ids) // 2 - 1]
                halves = [("range", item[1], mid), ("range", mid, item[2])]
            out = []
            for h in halves:
                try:
                    out.append(await attempt(wconn, h))
                except (asyncpg.PostgresError, ValueError) as e:
                    out += await split(wconn, h, e)
            return out

        async def quarantine(wconn: asyncpg.Connection, ids: list, exc: Exception) -> list[dict]:
            reason = f"{exc.__class__.__name__}: {exc}"
            if not dry_run and ids:
                await _quarantine(wconn, shape, ids, reason)
            stats.quarantined += len(ids)
            log.error(
                "legacy row quarantined", extra={"fields": {"c3d_metadata_id": [str(i) for i in ids], "reason": reason}}
            )
            return []

        async def worker(wconn: asyncpg.Connection) -> None:
            for item in queue:
                if fail_after_batches is not None and counters["committed"] >= fail_after_batches:
                    return
                t0 = time.perf_counter()
                try:
                    results = [await attempt(wconn, item)]
                except (asyncpg.PostgresError, ValueError) as exc:
                    log.error(
                        "batch failed and was rolled back; looking for the failing row(s)",
                        extra={"fields": {"item": item[0], "error": str(exc)}},
                    )
                    results = await split(wconn, item, exc)
                n_rows = 0
                for res in results:
                    n_rows += res.pop("rows")
                    stats.remigrated += res.pop("remigrated", 0)
                    account(res)
                counters["committed"] += 1
                stats.batches += 1
                log.info(
                    "batch committed" if not dry_run else "batch rolled back (dry run)",
                    extra={
                        "fields": {
                            "batch": stats.batches,
                            "kind": item[0],
                            "rows": n_rows,
                            "ms": int((time.perf_counter() - t0) * 1000),
                        }
                    },
                )
                if item[0] == "range":
                    bar.update(n_rows)
                if fail_after_batches is not None and counters["committed"] >= fail_after_batches:
                    raise InjectedFailure(f"injected failure after {counters['committed']} batch(es)")

        stats.bulk = not dry_run and stats.legacy_rows - already >= BULK_MIN_ROWS
        if stats.bulk:
            await drop_contraction_fks(conn)
        conns = [conn] + [await asyncpg.connect(dsn, server_settings=_SESSION) for _ in range(max(1, workers) - 1)]
        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            bar.close()
            for c in conns[1:]:
                await c.close()
            if stats.bulk:
                t0 = time.perf_counter()
                await restore_contraction_fks(conn)
                log.info(
                    "foreign keys of emg_contractions re-added and validated",
                    extra={"fields": {"ms": int((time.perf_counter() - t0) * 1000)}},
                )
    finally:
        await conn.close()
    stats.seconds = time.perf_counter() - started
    log.info("legacy migration finished", extra={"fields": asdict(stats)})
    report = None
    if validate_after and not dry_run:
        report = await validate(dsn)
    return stats, report


# ----------------------------------------------------------------------------- validation

# Validation tolerance (documented in migrations/README.md): values that went through a float
# column or a unit change compare to 1e-9 relative (+1e-12 absolute, for volts); scores on the
# 0-100 scale to 1e-6 absolute; counts exactly. Legacy compliance_rate (Sep 2025) against the
# migrated muscle compliance: 1e-6.
REL_TOL = 1e-9
SCORE_TOL = 1e-6


def _differs(a: str, b: str, tol: str = f"{REL_TOL} * greatest(abs({{a}}), abs({{b}})) + 1e-12") -> str:
    t = tol.format(a=a, b=b)
    return f"((({a}) IS NULL) <> (({b}) IS NULL) OR abs(({a}) - ({b})) > {t})"


_VALIDATE_EXPECTED = f"""
CREATE TEMP TABLE _lv_exp AS
SELECT g.file_hash, g.n_rows, a.id AS ar_id, coalesce(a.usable, false) AS ok,
       coalesce(j.n_channels, 0) AS n_channels, coalesce(j.n_contr, 0) AS n_contr,
       coalesce(j.sum_cc, 0) AS sum_cc, coalesce(j.sum_rms, 0) AS sum_rms,
       p.id AS primary_id, p.file_path AS primary_path, p.file_size_bytes
FROM (SELECT file_hash, count(*) AS n_rows FROM __C3D__ x GROUP BY file_hash) g
CROSS JOIN LATERAL (SELECT g.file_hash) m
LEFT JOIN LATERAL ({_CHOOSE}) a ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS n_channels,
           sum(CASE WHEN jsonb_typeof(c.value->'contractions') = 'array' THEN jsonb_array_length(c.value->'contractions') ELSE 0 END) AS n_contr,
           sum(CASE WHEN jsonb_typeof(c.value->'contraction_count') = 'number' THEN floor((c.value->>'contraction_count')::numeric + 0.5) ELSE 0 END) AS sum_cc,
           sum(CASE WHEN jsonb_typeof(c.value->'rms') = 'number' THEN (c.value->>'rms')::float8 ELSE 0 END) AS sum_rms
    FROM __AR__ r CROSS JOIN LATERAL jsonb_each(r.analytics_data) c
    WHERE r.id = a.id AND a.usable AND jsonb_typeof(c.value) = 'object'
) j ON true
CROSS JOIN LATERAL (
    SELECT d.id, d.file_path, d.file_size_bytes FROM __C3D__ d WHERE d.id = {_PRIMARY}) p
"""


def _vcount(col: str) -> str:
    keys = M.FIELD_MAP[col]
    return (
        "coalesce("
        + ", ".join(
            f"CASE WHEN jsonb_typeof(v->'{k}') = 'number' THEN floor((v->>'{k}')::numeric + 0.5)::int END" for k in keys
        )
        + ")"
    )


def _vnum(*keys: str) -> str:
    return (
        "coalesce("
        + ", ".join(f"CASE WHEN jsonb_typeof(v->'{k}') = 'number' THEN (v->>'{k}')::float8 END" for k in keys)
        + ")"
    )


# Per channel, the clinical numbers recomputed from the legacy JSON (the legacy values, by the
# field map), next to the migrated ones.
_VALIDATE_CHANNELS = f"""
CREATE TEMP TABLE _lv_ch AS
SELECT x.*, (coalesce(x.x_comp, 0) + coalesce(x.x_int, 0) + coalesce(x.x_dur, 0))
            / nullif((x.x_comp IS NOT NULL)::int + (x.x_int IS NOT NULL)::int + (x.x_dur IS NOT NULL)::int, 0) AS x_mcs
FROM (
    SELECT y.*,
           CASE WHEN y.x_total IS NOT NULL THEN
               least(y.x_total::float8 / coalesce(nullif(greatest(y.x_expected, 0), 0), {M.DEFAULT_TARGET_CONTRACTIONS}), 1.0) END AS x_comp,
           CASE WHEN y.x_mvc IS NULL OR y.x_total IS NULL THEN NULL WHEN y.x_total = 0 THEN 0.0
                ELSE least(y.x_mvc::float8 / y.x_total, 1.0) END AS x_int,
           CASE WHEN y.x_dn IS NULL OR y.x_total IS NULL THEN NULL WHEN y.x_total = 0 THEN 0.0
                ELSE least(y.x_dn::float8 / y.x_total, 1.0) END AS x_dur
    FROM (
        SELECT e.file_hash, ts.id AS session_id, c.key AS ch, es.id AS stat_id, side_of.side,
               es.total_contractions, es.good_contractions_intensity, es.good_contractions_duration,
               es.good_contractions_both, es.completion_rate, es.intensity_rate, es.duration_rate,
               es.muscle_compliance_score, es.mvc_peak_value, es.mvc_threshold_percentage,
               {_vcount("total_contractions")} AS x_total,
               {_vcount("good_contractions_intensity")} AS x_mvc,
               {_vcount("good_contractions_duration")} AS x_dn,
               {_vcount("good_contractions_both")} AS x_both,
               CASE WHEN jsonb_typeof(v->'expected_contractions') = 'number' THEN floor((v->>'expected_contractions')::numeric + 0.5)::int END AS x_expected,
               {_vnum(*M.THRESHOLD_KEYS)} AS x_thr,
               {_vnum("compliance_rate")} AS x_compliance_rate,
               coalesce(CASE WHEN jsonb_typeof(r.mvc_values->c.key) = 'number' THEN (r.mvc_values->>c.key)::float8 END,
                        {_vnum(*M.MVC_VALUE_KEYS)}) AS x_mvc_value
        FROM _lv_exp e
        JOIN __AR__ r ON r.id = e.ar_id
        CROSS JOIN LATERAL jsonb_each(r.analytics_data) c
        CROSS JOIN LATERAL (SELECT c.value AS v) vv
        CROSS JOIN LATERAL (SELECT CASE WHEN lower(c.key) = 'ch1' OR lower(c.key) LIKE '%left%' THEN 'left'
                                        WHEN lower(c.key) = 'ch2' OR lower(c.key) LIKE '%right%' THEN 'right' END AS side) side_of
        JOIN therapy_sessions ts ON ts.file_hash = e.file_hash
        LEFT JOIN emg_statistics es ON es.session_id = ts.id AND es.channel_name = c.key
        WHERE e.ok AND jsonb_typeof(c.value) = 'object'
    ) y
) x
"""

# Per session, the scores recomputed from the legacy channel values, next to the migrated ones.
_VALIDATE_SESSIONS = """
CREATE TEMP TABLE _lv_ses AS
SELECT k.*, ps.overall_performance_score, ps.compliance_score, ps.symmetry_score,
       CASE WHEN k.x_l IS NOT NULL AND k.x_r IS NOT NULL
            THEN CASE WHEN k.x_l + k.x_r > 0 THEN (1 - abs(k.x_l - k.x_r) / (k.x_l + k.x_r)) * 100 ELSE 0 END END AS x_sym
FROM (SELECT file_hash, session_id, avg(x_mcs) * 100 AS x_compliance,
             min(x_mcs) FILTER (WHERE side = 'left') AS x_l, min(x_mcs) FILTER (WHERE side = 'right') AS x_r,
             bool_or(side = 'left') AND bool_or(side = 'right') AS pair
      FROM _lv_ch GROUP BY file_hash, session_id) k
LEFT JOIN performance_scores ps ON ps.session_id = k.session_id
"""

_W = (M.REQUESTED_WEIGHTS["compliance"], M.REQUESTED_WEIGHTS["symmetry"])
_CLINICAL_CHECKS = [
    (
        "channel counts differ from the legacy values (total / intensity / duration / both)",
        "SELECT file_hash || ' ' || ch FROM _lv_ch WHERE stat_id IS NOT NULL AND "
        "(total_contractions, good_contractions_intensity, good_contractions_duration, good_contractions_both) "
        "IS DISTINCT FROM (x_total, x_mvc, x_dn, x_both)",
    ),
    (
        "channel rates differ from the rates of the legacy counts (completion / intensity / duration / compliance)",
        "SELECT file_hash || ' ' || ch FROM _lv_ch WHERE stat_id IS NOT NULL AND ("
        + " OR ".join(
            _differs(a, b)
            for a, b in (
                ("completion_rate", "x_comp"),
                ("intensity_rate", "x_int"),
                ("duration_rate", "x_dur"),
                ("muscle_compliance_score", "x_mcs"),
            )
        )
        + ")",
    ),
    (
        "MVC differs from the legacy MVC value (mvc_values / estimated_mvc_value)",
        "SELECT file_hash || ' ' || ch FROM _lv_ch WHERE stat_id IS NOT NULL AND x_mvc_value IS NOT NULL AND "
        + _differs("mvc_peak_value", "x_mvc_value"),
    ),
    (
        "MVC threshold (mvc_peak_value x percentage) differs from the legacy threshold",
        "SELECT file_hash || ' ' || ch FROM _lv_ch WHERE stat_id IS NOT NULL AND x_thr IS NOT NULL AND "
        + _differs("mvc_peak_value * mvc_threshold_percentage", "x_thr"),
    ),
    (
        "legacy compliance_rate differs from the migrated muscle compliance",
        "SELECT file_hash || ' ' || ch FROM _lv_ch WHERE stat_id IS NOT NULL AND x_compliance_rate IS NOT NULL AND "
        + _differs("muscle_compliance_score", "x_compliance_rate", str(SCORE_TOL)),
    ),
    (
        "session scores differ from the scores of the legacy values (compliance / symmetry / overall)",
        "SELECT file_hash FROM _lv_ses WHERE overall_performance_score IS NULL OR "
        + _differs("compliance_score", "coalesce(x_compliance, 0)", str(SCORE_TOL))
        + " OR "
        + _differs("symmetry_score", "coalesce(x_sym, 0)", str(SCORE_TOL))
        + " OR "
        + _differs(
            "overall_performance_score",
            f"least(greatest(CASE WHEN x_sym IS NOT NULL THEN ({_W[0]!r} * x_compliance + {_W[1]!r} * x_sym) / {_W[0] + _W[1]!r} "
            "ELSE coalesce(x_compliance, 0) END, 0), 100)",
            str(SCORE_TOL),
        ),
    ),
]
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
    (
        "legacy file_hash with no migrated session (and not quarantined)",
        "SELECT e.file_hash FROM _lv_exp e LEFT JOIN _lv_act a USING (file_hash) WHERE a.id IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM legacy_migration_errors q WHERE q.file_hash = e.file_hash)",
    ),
    (
        "legacy c3d_metadata row with no legacy_c3d_sources row (path lost)",
        "SELECT m.file_path FROM c3d_metadata m WHERE NOT EXISTS (SELECT 1 FROM legacy_c3d_sources s WHERE s.c3d_metadata_id = m.id) "
        "AND NOT EXISTS (SELECT 1 FROM legacy_migration_errors q WHERE q.file_hash = m.file_hash)",
    ),
    (
        "legacy rows changed since they were migrated (re-run to migrate the changes)",
        "SELECT s.file_hash FROM _lv_stale s WHERE NOT EXISTS (SELECT 1 FROM legacy_migration_errors q WHERE q.file_hash = s.file_hash)",
    ),
    (
        "legacy rows of a hash != recorded paths",
        "SELECT e.file_hash || ' expected ' || e.n_rows || ' got ' || a.n_rows FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.n_rows <> e.n_rows",
    ),
    (
        "session key values differ from the primary legacy row (id, path, size)",
        "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE (a.id, a.file_path, a.file_size_bytes) IS DISTINCT FROM (e.primary_id, e.primary_path, e.file_size_bytes)",
    ),
    (
        "chosen analysis differs",
        "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.ar_id IS DISTINCT FROM e.ar_id",
    ),
    (
        "emg_statistics rows != channels in analytics_data",
        "SELECT e.file_hash || ' expected ' || e.n_channels || ' got ' || a.n_channels FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.n_channels <> e.n_channels",
    ),
    (
        "emg_contractions rows != contractions lists",
        "SELECT e.file_hash || ' expected ' || e.n_contr || ' got ' || a.n_contr FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.n_contr <> e.n_contr",
    ),
    (
        "sum of contraction_count differs",
        "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE a.sum_cc <> e.sum_cc",
    ),
    (
        "sum of rms differs",
        "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE abs(a.sum_rms - e.sum_rms) > 1e-9 * greatest(abs(e.sum_rms), 1)",
    ),
    (
        "performance_scores / session_settings missing for a session with statistics",
        "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE e.ok AND NOT (a.has_scores AND a.has_settings)",
    ),
    (
        "status: usable analysis but not completed, or no usable analysis but completed",
        "SELECT e.file_hash FROM _lv_exp e JOIN _lv_act a USING (file_hash) WHERE e.ok <> (a.processing_status = 'completed')",
    ),
]


_VALUE_NOTES = (
    ("session_type mapped or stored NULL", "session_type"),
    ("session_date taken from the file name", "session_date"),
    ("game level outside 1-10 / not whole: NULL", "game_level"),
    ("game score not numeric: 0 points", "game_score"),
)


async def validate(dsn: str, *, sample: int = 5) -> ValidationReport:
    """Compare the legacy tables with the new ones: rows, paths, contractions, and the clinical
    numbers (per channel counts, rates, MVC and thresholds; per session scores) against the
    legacy values; problems list every kind of loss found. Quarantined rows are listed apart
    (explained, not a loss). After 008 (legacy tables archived): nothing to validate."""
    t0 = time.perf_counter()
    report = ValidationReport()
    conn = await asyncpg.connect(dsn, server_settings=_SESSION)
    try:
        state = await legacy_state(conn)
        if state != "present":
            report.archived = state == "archived"
            if state == "absent":
                report.problems.append("no legacy c3d_metadata table in this database")
            return report
        if await restore_contraction_fks(conn):
            report.notes.append("foreign keys of emg_contractions restored (an earlier bulk run ended early)")
        shape = await _shape(conn)
        async with conn.transaction():
            now = await conn.fetchval("SELECT now()")
            ts_lit = "'" + now.isoformat() + "'::timestamptz"
            await conn.execute(shape.render(_VALIDATE_EXPECTED).replace("$1", ts_lit))
            # a quarantined hash is explained (listed apart), not compared: its session, if any,
            # is the one of its last successful migration
            await conn.execute("DELETE FROM _lv_exp e USING legacy_migration_errors q WHERE q.file_hash = e.file_hash")
            await conn.execute(_VALIDATE_ACTUAL)
            await conn.execute("DELETE FROM _lv_act a USING legacy_migration_errors q WHERE q.file_hash = a.file_hash")
            await conn.execute(
                "CREATE INDEX ON _lv_exp (file_hash); CREATE INDEX ON _lv_act (file_hash); "
                "ANALYZE _lv_exp; ANALYZE _lv_act"
            )
            await conn.execute(shape.render(_VALIDATE_CHANNELS))
            await conn.execute(_VALIDATE_SESSIONS)
            stale = await stale_hashes(conn, shape, now)
            await conn.execute("CREATE TEMP TABLE _lv_stale AS SELECT unnest($1::text[]) AS file_hash", stale)
            c = report.counts
            c["legacy c3d_metadata rows"] = await conn.fetchval("SELECT count(*) FROM c3d_metadata")
            c["legacy distinct file_hash (quarantined excluded)"] = await conn.fetchval("SELECT count(*) FROM _lv_exp")
            c["legacy second paths (same hash)"] = await conn.fetchval(
                "SELECT coalesce(sum(n_rows - 1), 0) FROM _lv_exp"
            )
            c["legacy analysis_results rows"] = await conn.fetchval("SELECT count(*) FROM analysis_results")
            c["  chosen (migrated)"] = await conn.fetchval("SELECT count(ar_id) FROM _lv_exp")
            c["  not chosen (older/expired/empty dup.)"] = c["legacy analysis_results rows"] - c["  chosen (migrated)"]
            c["  chosen but expired"] = await conn.fetchval(
                "SELECT count(*) FROM legacy_c3d_sources WHERE is_primary AND notes ? 'analysis_expired'"
            )
            c["hashes without usable analysis (failed)"] = await conn.fetchval(
                "SELECT count(*) FROM _lv_exp WHERE NOT ok"
            )
            c["migrated sessions"] = await conn.fetchval("SELECT count(*) FROM _lv_act")
            c["legacy_c3d_sources rows"] = await conn.fetchval("SELECT count(*) FROM legacy_c3d_sources")
            c["expected / actual emg_statistics"] = (
                await conn.fetchval("SELECT coalesce(sum(n_channels),0) FROM _lv_exp"),
                await conn.fetchval("SELECT coalesce(sum(n_channels),0) FROM _lv_act"),
            )
            c["expected / actual emg_contractions"] = (
                await conn.fetchval("SELECT coalesce(sum(n_contr),0) FROM _lv_exp"),
                await conn.fetchval("SELECT coalesce(sum(n_contr),0) FROM _lv_act"),
            )
            c["channels compared (clinical numbers)"] = await conn.fetchval(
                "SELECT count(*) FROM _lv_ch WHERE stat_id IS NOT NULL"
            )
            c["channels with a value absent in legacy (NULL)"] = await conn.fetchval(
                "SELECT count(*) FROM emg_statistics WHERE jsonb_array_length(coalesce(analysis_details->'migrated_from_legacy'->'missing', '[]')) > 0"
            )
            c["unknown patient codes (NULL, recorded)"] = await conn.fetchval(
                "SELECT count(*) FROM legacy_c3d_sources WHERE is_primary AND notes ? 'patient_id'"
            )
            c["unmapped therapist ids (NULL, recorded)"] = await conn.fetchval(
                "SELECT count(*) FROM legacy_c3d_sources WHERE is_primary AND notes ? 'therapist_id'"
            )
            if shape.missing:
                c["optional legacy columns missing (NULL)"] = ", ".join(shape.missing)
            for title, key in _VALUE_NOTES:
                rows = await conn.fetch(
                    "SELECT notes->>$1 AS n, count(*) AS k FROM legacy_c3d_sources WHERE is_primary AND notes ? $1 "
                    "GROUP BY 1 ORDER BY 2 DESC, 1",
                    key,
                )
                for r in rows:
                    report.values.append(f"{title}: {r['k']} x {r['n']}")
            report.quarantined = [
                f"{r['file_path']}: {r['reason']}"
                for r in await conn.fetch("SELECT file_path, reason FROM legacy_migration_errors ORDER BY file_path")
            ]
            c["quarantined legacy rows (legacy_migration_errors)"] = len(report.quarantined)
            for title, sql in _CHECKS + _CLINICAL_CHECKS:
                rows = await conn.fetch(f"SELECT * FROM ({sql}) x LIMIT {sample}")
                if rows:
                    total = await conn.fetchval(f"SELECT count(*) FROM ({sql}) x")
                    report.problems.append(f"{title}: {total} (e.g. {', '.join(str(r[0]) for r in rows)})")
            await conn.execute(
                "DROP TABLE _lv_exp; DROP TABLE _lv_act; DROP TABLE _lv_ch; DROP TABLE _lv_ses; DROP TABLE _lv_stale"
            )
    finally:
        await conn.close()
    report.seconds = time.perf_counter() - t0
    (log.info if report.ok else log.error)(
        "legacy migration validation",
        extra={
            "fields": {
                "ok": report.ok,
                "problems": report.problems,
                "quarantined": len(report.quarantined),
                "seconds": round(report.seconds, 3),
            }
        },
    )
    return report
