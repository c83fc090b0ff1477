"""Database writes of the ingest service. Statistics are always written (or replaced) in ONE
transaction together with the session's status, so readers never see half a session."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from libs.convert import no_nul
from libs.db import signal_cache
from libs.emg import PROCESSING_PIPELINE, AnalysisSettings, SessionAnalysis
from libs.emg.scoring import PerformanceResult
from libs.emg.settings import PARAMS_KEY, ProcessingParams, encode_params


@dataclass(frozen=True)
class SessionHeader:
    """What is known about a session before its analysis (from the request and the file)."""

    file_path: str
    file_hash: str
    file_size_bytes: int
    patient_id: str | None
    therapist_id: uuid.UUID | None
    session_label: str | None
    session_date: datetime | None
    session_type: str | None
    protocol_day: int | None
    processing_version: str


@dataclass(frozen=True)
class ExistingSession:
    id: uuid.UUID
    status: str
    error_message: str | None
    file_path: str
    processing_version: str
    processing_time_ms: int | None


async def find_by_hash(conn: asyncpg.Connection, file_hash: str) -> ExistingSession | None:
    row = await conn.fetchrow(
        "SELECT id, processing_status, error_message, file_path, processing_version, processing_time_ms "
        "FROM therapy_sessions WHERE file_hash = $1",
        file_hash,
    )
    return ExistingSession(*row) if row else None


async def find_by_path(conn: asyncpg.Connection, file_path: str) -> tuple[uuid.UUID, str] | None:
    row = await conn.fetchrow("SELECT id, file_hash FROM therapy_sessions WHERE file_path = $1", file_path)
    return (row["id"], row["file_hash"]) if row else None


async def claim(conn: asyncpg.Connection, h: SessionHeader, *, owner: str, request: bytes) -> uuid.UUID | None:
    """Register the session as 'processing' under `owner`'s lease (heartbeat now), keeping the
    request's metadata for whoever completes it; the upload's pending-file note goes in the
    same transaction. Returns None when the same content is already registered (a concurrent
    duplicate lost the race): the UNIQUE file_hash decides."""
    # Technical columns are NOT NULL in the plan; they hold 0/[] until the analysis fills them
    # (and stay so for a file that is not a readable C3D — status 'failed' tells).
    async with conn.transaction():
        sid = await conn.fetchval(
            """
            INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, patient_id, therapist_id,
                session_id, session_date, session_type, protocol_day, original_sampling_rate,
                original_duration_seconds, original_sample_count, channel_names, channel_count,
                processing_version, processing_status, claimed_by, claim_heartbeat_at, claim_request)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, 0, '[]'::jsonb, 0, $10, 'processing', $11, now(), $12)
            ON CONFLICT (file_hash) DO NOTHING
            RETURNING id
            """,
            h.file_path,
            h.file_hash,
            h.file_size_bytes,
            h.patient_id,
            h.therapist_id,
            h.session_label,
            h.session_date,
            h.session_type,
            h.protocol_day,
            h.processing_version,
            owner,
            request,
        )
        await conn.execute("DELETE FROM ingest_pending_files WHERE file_hash = $1", h.file_hash)
    return sid


# -- leases of claimed sessions (crash recovery, migration 020) --------------------------------


async def renew_leases(conn: asyncpg.Connection, owner: str, session_ids: list[uuid.UUID]) -> None:
    await conn.execute(
        "UPDATE therapy_sessions SET claim_heartbeat_at = now() "
        "WHERE id = ANY($2::uuid[]) AND claimed_by = $1 AND processing_status = 'processing'",
        owner,
        session_ids,
    )


async def stale_claims(conn: asyncpg.Connection, lease_s: float, limit: int = 100) -> list[uuid.UUID]:
    """'processing' sessions whose lease was not renewed for `lease_s` (owner gone)."""
    rows = await conn.fetch(
        "SELECT id FROM therapy_sessions WHERE processing_status = 'processing' "
        "AND COALESCE(claim_heartbeat_at, created_at) < now() - make_interval(secs => $1) "
        "ORDER BY COALESCE(claim_heartbeat_at, created_at) LIMIT $2",
        lease_s,
        limit,
    )
    return [r["id"] for r in rows]


async def take_over(
    conn: asyncpg.Connection, session_id: uuid.UUID, owner: str, lease_s: float
) -> asyncpg.Record | None:
    """Take a stale lease (one UPDATE: of two processes trying, exactly one gets the row)."""
    return await conn.fetchrow(
        "UPDATE therapy_sessions SET claimed_by = $2, claim_heartbeat_at = now() "
        "WHERE id = $1 AND processing_status = 'processing' "
        "AND COALESCE(claim_heartbeat_at, created_at) < now() - make_interval(secs => $3) "
        "RETURNING file_path, file_hash, patient_id, claim_request",
        session_id,
        owner,
        lease_s,
    )


# -- files an upload stored before its claim (orphan sweep, migration 020) ----------------------


async def note_pending_file(conn: asyncpg.Connection, file_hash: str, paths: list[str]) -> None:
    await conn.execute(
        "INSERT INTO ingest_pending_files (file_hash, file_paths) VALUES ($1, $2) "
        "ON CONFLICT (file_hash) DO UPDATE SET file_paths = EXCLUDED.file_paths, created_at = now()",
        file_hash,
        paths,
    )


async def forget_pending_file(conn: asyncpg.Connection, file_hash: str) -> None:
    await conn.execute("DELETE FROM ingest_pending_files WHERE file_hash = $1", file_hash)


async def stale_pending_files(conn: asyncpg.Connection, grace_s: float, limit: int = 100) -> list[asyncpg.Record]:
    """Pending-file notes older than the grace period, with the candidate paths that no
    session references (those are orphans if they still hold the note's bytes)."""
    return await conn.fetch(
        """
        SELECT f.file_hash, ARRAY(SELECT p FROM unnest(f.file_paths) AS p
                                  WHERE NOT EXISTS (SELECT 1 FROM therapy_sessions s WHERE s.file_path = p)) AS orphans
        FROM ingest_pending_files f
        WHERE f.created_at < now() - make_interval(secs => $1)
        ORDER BY f.created_at LIMIT $2
        """,
        grace_s,
        limit,
    )


class InputsChanged(Exception):
    """The session's recorded outcome changed while it was being re-analysed: the results
    were computed from stale inputs and are not written (the caller re-reads and retries)."""


NOT_CHECKED = object()  # write_results(outcome_recorded_at=...) default: no outcome check


async def lock_session(conn: asyncpg.Connection, session_id: uuid.UUID) -> str | None:
    """Row lock on the session until the transaction ends: every writer of a session's derived
    rows takes it first, so concurrent writers of one session take turns (never interleave
    their deletes and inserts). Returns the status (None: no such session)."""
    return await conn.fetchval("SELECT processing_status FROM therapy_sessions WHERE id = $1 FOR UPDATE", session_id)


_no_nul = no_nul  # one copy: libs/convert.py


async def mark_failed(
    conn: asyncpg.Connection, session_id: uuid.UUID, message: str, processing_version: str, processing_time_ms: int
) -> None:
    """Failed = the reason and no statistics (removes any from an earlier run)."""
    message = _no_nul(message)
    async with conn.transaction():
        await lock_session(conn, session_id)
        await _delete_statistics(conn, session_id)
        await conn.execute(
            "UPDATE therapy_sessions SET processing_status = 'failed', error_message = $2, "
            "processing_version = $3, processing_time_ms = $4, processed_at = now(), "
            "claimed_by = NULL, claim_heartbeat_at = NULL, claim_request = NULL WHERE id = $1",
            session_id,
            message,
            processing_version,
            processing_time_ms,
        )
        await signal_cache.invalidate(conn, session_id, "session_reprocessed")


async def _delete_statistics(conn: asyncpg.Connection, session_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM emg_statistics WHERE session_id = $1", session_id)  # cascades contractions
    await conn.execute("DELETE FROM performance_scores WHERE session_id = $1", session_id)


def weights_json(perf: PerformanceResult, requested: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(perf.effective_weights.get(k, 0.0)) for k in requested}
    out["requested"] = dict(requested)
    out["excluded"] = dict(perf.components_excluded)
    return out


def _analysis_details(ch, analysis: SessionAnalysis, processing: ProcessingParams) -> dict[str, Any]:
    return {
        "mvc_source": ch.mvc_source,
        "detection_threshold_v": ch.detection_threshold_v,
        "detection": ch.detection,
        "quality": ch.quality.to_dict() if hasattr(ch.quality, "to_dict") else ch.quality,
        "descriptors": ch.descriptors.to_dict(),
        "warnings": ch.warnings,
        "raw_label": ch.raw_label,
        "unit": ch.unit,
        "parameters": analysis.parameters,
        PARAMS_KEY: encode_params(processing),  # what jit_signal re-runs the chain with (one codec)
    }


async def write_results(
    conn: asyncpg.Connection,
    session_id: uuid.UUID,
    analysis: SessionAnalysis,
    settings: AnalysisSettings,
    *,
    bfr: dict[str, Any] | None,
    game_difficulty_level: int | None,
    processing_time_ms: int,
    game_metadata: dict[str, Any],
    scoring_config_version: int = 1,
    calibration_id: uuid.UUID | None = None,
    value_sources: dict[str, str] | None = None,
    bfr_target: float | None = None,
    outcome_recorded_at: Any = NOT_CHECKED,
) -> None:
    """Replace every derived row of the session and mark it completed, atomically.
    `outcome_recorded_at`: the session_outcomes.recorded_at the analysis's inputs were read
    with (None: no outcome); if another is recorded by now, InputsChanged and nothing written."""
    rec = analysis.recording
    async with conn.transaction():
        # The session row first (as every writer): a concurrent writer of the same session waits
        # here, then replaces these rows in its own transaction.
        await lock_session(conn, session_id)
        if outcome_recorded_at is not NOT_CHECKED:
            now = await conn.fetchval("SELECT recorded_at FROM session_outcomes WHERE session_id = $1", session_id)
            if now != outcome_recorded_at:
                raise InputsChanged(f"session {session_id}: its outcome was recorded during re-analysis")
        await _delete_statistics(conn, session_id)
        await conn.execute(
            """
            UPDATE therapy_sessions SET original_sampling_rate = $2, original_duration_seconds = $3,
                original_sample_count = $4, channel_names = $5, channel_count = $6,
                processing_version = $7, processing_status = 'completed', processing_time_ms = $8,
                processed_at = now(), error_message = NULL, game_metadata = $9,
                session_date = COALESCE(session_date, $10),
                claimed_by = NULL, claim_heartbeat_at = NULL, claim_request = NULL
            WHERE id = $1
            """,
            session_id,
            float(rec["rate_hz"]),
            float(rec["duration_s"]),
            int(rec["n_samples"]),
            _no_nul(list(rec["labels"])),
            len(rec["labels"]),
            analysis.processing_version,
            processing_time_ms,
            _no_nul(game_metadata),
            analysis.metadata.get("session_datetime"),
        )

        stat_rows = []
        for ch in analysis.channels:
            d = ch.descriptors
            stat_rows.append(
                _no_nul(
                    (
                        uuid.uuid4(),
                        session_id,
                        ch.channel_name,
                        ch.mvc_peak_value,
                        ch.mvc_rms_value,
                        ch.mvc_confidence_score,
                        ch.mvc_calculation_method,
                        ch.total_contractions,
                        ch.good_contractions_intensity,
                        ch.good_contractions_duration,
                        ch.good_contractions_both,
                        ch.completion_rate,
                        ch.intensity_rate,
                        ch.duration_rate,
                        ch.muscle_compliance_score,
                        ch.signal_quality_score,
                        ch.noise_level_db,
                        ch.artifacts_detected,
                        ch.processing_confidence,
                        PROCESSING_PIPELINE,
                        ch.processing_version,
                        round(ch.timings_ms.get("total", 0) or 0),
                        ch.mvc_threshold_percentage,
                        ch.duration_threshold_seconds,
                        ch.side,
                        d.rms_v,
                        d.mav_v,
                        d.mean_frequency_hz,
                        d.median_frequency_hz,
                        d.fatigue_index_hz_per_min,
                        _analysis_details(ch, analysis, settings.processing),
                        list(ch.signal_flags),
                        bool(ch.usable),
                    )
                )
            )
        await conn.executemany(
            """
            INSERT INTO emg_statistics (id, session_id, channel_name, mvc_peak_value, mvc_rms_value,
                mvc_confidence_score, mvc_calculation_method, total_contractions,
                good_contractions_intensity, good_contractions_duration, good_contractions_both,
                completion_rate, intensity_rate, duration_rate, muscle_compliance_score,
                signal_quality_score, noise_level_db, artifacts_detected, processing_confidence,
                processing_pipeline, processing_version, processing_time_ms, mvc_threshold_percentage,
                duration_threshold_seconds, side, rms_value, mav_value, mean_frequency_hz,
                median_frequency_hz, fatigue_index, analysis_details, signal_flags, usable)
            VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,
                    $23,$24,$25,$26,$27,$28,$29,$30,$31,$32,$33)
            """,
            stat_rows,
        )

        contraction_rows = [
            (
                row[0],
                session_id,
                row[2],
                i,
                c.start_s,
                c.end_s,
                c.duration_s,
                c.peak_v,
                c.mean_v,
                c.meets_intensity,
                c.meets_duration,
                c.good,
                bool(c.partially_masked),
                float(c.masked_s),
            )
            for row, ch in zip(stat_rows, analysis.channels)
            for i, c in enumerate(ch.contractions)
        ]
        if contraction_rows:
            # One INSERT of unnested arrays (COPY is refused on a table with row-level security,
            # which the ingest role has; executemany would cost a round trip per row).
            cols = list(zip(*contraction_rows))
            await conn.execute(
                """
                INSERT INTO emg_contractions (statistics_id, session_id, channel_name, contraction_index,
                    start_time_s, end_time_s, duration_s, peak_amplitude, mean_amplitude, meets_intensity,
                    meets_duration, is_good, partially_masked, masked_s)
                SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::float8[], $6::float8[],
                                     $7::float8[], $8::float8[], $9::float8[], $10::bool[], $11::bool[], $12::bool[],
                                     $13::bool[], $14::float8[])
                """,
                *[list(c) for c in cols],
            )

        if analysis.performance.overall_performance_score is not None:
            await _insert_score(conn, session_id, analysis, settings, scoring_config_version)
        # else: nothing measurable (no usable EMG channel, no RPE or game): completed, not scored.

        await upsert_settings(
            conn,
            session_id,
            settings,
            game_difficulty_level=game_difficulty_level,
            bfr_target=bfr_target if bfr_target is not None else (bfr or {}).get("target_pressure_aop"),
            calibration_id=calibration_id,
            value_sources=value_sources,
        )
        if bfr is not None:
            await upsert_bfr(conn, session_id, bfr)
        await signal_cache.invalidate(conn, session_id, "session_reprocessed")


async def _insert_score(
    conn: asyncpg.Connection,
    session_id: uuid.UUID,
    analysis: SessionAnalysis,
    settings: AnalysisSettings,
    scoring_config_version: int,
) -> None:
    await insert_score(conn, session_id, analysis.performance, settings.performance_weights, scoring_config_version)


async def insert_score(
    conn: asyncpg.Connection,
    session_id: uuid.UUID,
    p: PerformanceResult,
    requested_weights: dict[str, float],
    scoring_config_version: int,
) -> None:
    """Write the session's performance_scores row (replacing any)."""
    await conn.execute("DELETE FROM performance_scores WHERE session_id = $1", session_id)
    await conn.execute(
        """
        INSERT INTO performance_scores (session_id, overall_performance_score, compliance_score,
            symmetry_score, effort_score, game_score, performance_weights, bfr_pressure_aop,
            bfr_compliance_gate, rpe_post_session, game_points_achieved, game_points_maximum,
            session_duration_minutes, left_muscle_completion_rate, left_muscle_intensity_rate,
            left_muscle_duration_rate, right_muscle_completion_rate, right_muscle_intensity_rate,
            right_muscle_duration_rate, scoring_config_version)
        VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)
        """,
        session_id,
        p.overall_performance_score,
        p.compliance_score or 0.0,
        p.symmetry_score or 0.0,
        p.effort_score or 0.0,
        p.game_score or 0.0,
        weights_json(p, requested_weights),
        p.bfr_pressure_aop,
        # Not evaluated (no BFR pressure) is stored as 1.0 with bfr_pressure_aop NULL.
        1.0 if p.bfr_compliance_gate is None else p.bfr_compliance_gate,
        p.rpe_post_session,
        p.game_points_achieved or 0,
        p.game_points_maximum,
        p.session_duration_minutes,
        p.left_muscle_completion_rate,
        p.left_muscle_intensity_rate,
        p.left_muscle_duration_rate,
        p.right_muscle_completion_rate,
        p.right_muscle_intensity_rate,
        p.right_muscle_duration_rate,
        scoring_config_version,
    )


async def upsert_settings(
    conn: asyncpg.Connection,
    session_id: uuid.UUID,
    s: AnalysisSettings,
    *,
    game_difficulty_level: int | None,
    bfr_target: float | None,
    calibration_id: uuid.UUID | None = None,
    value_sources: dict[str, str] | None = None,
) -> None:
    per = lambda table, side: table.get(side)  # noqa: E731 - sides are how the table stores muscles
    await conn.execute(
        """
        INSERT INTO session_settings (session_id, mvc_calculation_method, mvc_threshold_percentage,
            mvc_user_left_quad, mvc_user_right_quad, performance_weights, duration_threshold_seconds,
            duration_threshold_left_quad, duration_threshold_right_quad, target_contractions_per_muscle,
            bfr_enabled, bfr_target_pressure_aop, game_difficulty_level, calibration_id, value_sources)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, COALESCE($12, 50.0), COALESCE($13, 1), $14,
                COALESCE($15, '{}'::jsonb))
        ON CONFLICT (session_id) DO UPDATE SET
            mvc_calculation_method = EXCLUDED.mvc_calculation_method,
            mvc_threshold_percentage = EXCLUDED.mvc_threshold_percentage,
            mvc_user_left_quad = EXCLUDED.mvc_user_left_quad,
            mvc_user_right_quad = EXCLUDED.mvc_user_right_quad,
            performance_weights = EXCLUDED.performance_weights,
            duration_threshold_seconds = EXCLUDED.duration_threshold_seconds,
            duration_threshold_left_quad = EXCLUDED.duration_threshold_left_quad,
            duration_threshold_right_quad = EXCLUDED.duration_threshold_right_quad,
            target_contractions_per_muscle = EXCLUDED.target_contractions_per_muscle,
            bfr_enabled = EXCLUDED.bfr_enabled,
            bfr_target_pressure_aop = COALESCE($12, session_settings.bfr_target_pressure_aop),
            game_difficulty_level = COALESCE($13, session_settings.game_difficulty_level),
            calibration_id = EXCLUDED.calibration_id,
            value_sources = COALESCE($15, session_settings.value_sources),
            updated_at = now()
        """,
        session_id,
        "user_defined" if s.mvc_user or s.mvc_session else "backend_calculated",
        s.mvc_threshold_percentage,
        per(s.mvc_user, "left"),
        per(s.mvc_user, "right"),
        dict(s.performance_weights),
        s.duration_threshold_s,
        per(s.duration_threshold, "left"),
        per(s.duration_threshold, "right"),
        s.target_contractions,
        s.bfr_pressure_aop is not None,
        bfr_target,
        game_difficulty_level,
        calibration_id,
        value_sources,
    )


async def upsert_bfr(conn: asyncpg.Connection, session_id: uuid.UUID, b: dict[str, Any]) -> None:
    cols = [
        "target_pressure_aop",
        "actual_pressure_aop",
        "pressure_stability_coefficient",
        "safety_gate_status",
        "safety_violations_count",
        "safety_violations_duration_seconds",
        "max_pressure_deviation_aop",
        "patient_aop_baseline_mmhg",
        "patient_limb_circumference_cm",
        "cuff_size",
        "cuff_position",
        "monitoring_device",
        "device_calibration_date",
        "device_serial_number",
        "bfr_session_duration_minutes",
        "monitoring_frequency_hz",
    ]
    values = [b.get(c) for c in cols]
    placeholders = ", ".join(f"${i + 2}" for i in range(len(cols)))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    await conn.execute(
        f"INSERT INTO bfr_monitoring (session_id, {', '.join(cols)}) VALUES ($1, {placeholders}) "
        f"ON CONFLICT (session_id) DO UPDATE SET {updates}",
        session_id,
        *values,
    )


async def load_inputs(conn: asyncpg.Connection, session_id: uuid.UUID):
    """(session row, settings row, score row, bfr row) for re-processing."""
    session = await conn.fetchrow(
        "SELECT id, file_path, file_hash, processing_version, processing_status, patient_id FROM therapy_sessions WHERE id = $1",
        session_id,
    )
    settings = await conn.fetchrow("SELECT * FROM session_settings WHERE session_id = $1", session_id)
    score = await conn.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1", session_id)
    bfr = await conn.fetchrow("SELECT * FROM bfr_monitoring WHERE session_id = $1", session_id)
    return session, settings, score, bfr


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


# --------------------------------------------------------------------------- registry

PATIENT_COLUMNS = (
    "p.id, p.patient_code, p.therapist_id, p.first_name, p.last_name, p.date_of_birth, p.active, "
    "p.created_at, p.deactivated_at"
)


async def therapist_by_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM therapists WHERE user_id = $1", user_id)


async def therapist_exists(conn: asyncpg.Pool | asyncpg.Connection, therapist_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM therapists WHERE id = $1", therapist_id))


async def create_therapist(
    conn: asyncpg.Connection, user_id: uuid.UUID, first: str, last: str
) -> asyncpg.Record | None:
    """The new row, or None when the user id is already registered."""
    return await conn.fetchrow(
        "INSERT INTO therapists (user_id, first_name, last_name) VALUES ($1, $2, $3) "
        "ON CONFLICT (user_id) DO NOTHING RETURNING *",
        user_id,
        first,
        last,
    )


async def patient(conn: asyncpg.Connection, code: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE OF p" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {PATIENT_COLUMNS}, t.user_id AS therapist_user_id, "
        f"(SELECT count(*) FROM therapy_sessions s WHERE s.patient_id = p.patient_code) AS session_count "
        f"FROM patients p JOIN therapists t ON t.id = p.therapist_id WHERE p.patient_code = $1{lock}",
        code,
    )


async def patient_active(conn: asyncpg.Connection, code: str) -> bool | None:
    """Whether the patient is active (None: no such patient); a primary-key lookup for the
    upload path (patient() also counts the sessions)."""
    return await conn.fetchval("SELECT active FROM patients WHERE patient_code = $1", code)


async def create_patient(
    conn: asyncpg.Connection, code: str | None, therapist_id: uuid.UUID, first: str, last: str, dob
) -> asyncpg.Record | None:
    """The new patient's code, or None when the code is taken."""
    if code:
        return await conn.fetchval(
            "INSERT INTO patients (patient_code, therapist_id, first_name, last_name, date_of_birth) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (patient_code) DO NOTHING RETURNING patient_code",
            code,
            therapist_id,
            first,
            last,
            dob,
        )
    # Generated codes (P001, ...) may collide with codes chosen by hand: take the next free one.
    for _ in range(1000):
        got = await conn.fetchval(
            "INSERT INTO patients (therapist_id, first_name, last_name, date_of_birth) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (patient_code) DO NOTHING RETURNING patient_code",
            therapist_id,
            first,
            last,
            dob,
        )
        if got:
            return got
    raise RuntimeError("no free generated patient code")


async def update_patient(conn: asyncpg.Connection, code: str, changes: dict[str, Any]) -> None:
    sets = ", ".join(f"{col} = ${i + 2}" for i, col in enumerate(changes))
    await conn.execute(f"UPDATE patients SET {sets} WHERE patient_code = $1", code, *changes.values())


async def deactivate_patient(conn: asyncpg.Connection, code: str) -> None:
    await conn.execute(
        "UPDATE patients SET active = false, deactivated_at = now() WHERE patient_code = $1 AND active", code
    )


# --------------------------------------------------------------------------- calibration


async def current_calibration(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM patient_calibrations WHERE patient_code = $1 ORDER BY created_at DESC, id DESC LIMIT 1", code
    )


async def insert_calibration(
    conn: asyncpg.Connection,
    code: str,
    values: dict[str, Any],
    *,
    source: str,
    source_session_id: uuid.UUID | None,
    rule: str | None,
    created_by: str,
    created_by_role: str,
    notes: str | None,
) -> asyncpg.Record:
    cols = list(values)
    args = [values[c] for c in cols]
    fixed = ["patient_code", "source", "source_session_id", "rule", "created_by", "created_by_role", "notes"]
    names = cols + fixed
    ph = ", ".join(f"${i + 1}" for i in range(len(names)))
    return await conn.fetchrow(
        f"INSERT INTO patient_calibrations ({', '.join(names)}) VALUES ({ph}) RETURNING *",
        *args,
        code,
        source,
        source_session_id,
        rule,
        created_by,
        created_by_role,
        notes,
    )


async def strongest_peaks(conn: asyncpg.Connection, session_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    """Per channel of a session: side, usable, flags and the peaks of its contractions that no
    artefact touched, strongest first."""
    rows = await conn.fetch(
        """
        SELECT e.channel_name, e.side, e.usable, e.signal_flags,
               COALESCE(array_agg(c.peak_amplitude ORDER BY c.peak_amplitude DESC)
                        FILTER (WHERE c.id IS NOT NULL AND NOT c.partially_masked), '{}') AS peaks
        FROM emg_statistics e
        LEFT JOIN emg_contractions c ON c.statistics_id = e.id
        WHERE e.session_id = $1
        GROUP BY e.id, e.channel_name, e.side, e.usable, e.signal_flags
        """,
        session_id,
    )
    return {r["channel_name"]: dict(r) for r in rows}


# --------------------------------------------------------------------------- scoring configuration


async def scoring_config(conn: asyncpg.Connection, version: int | None = None) -> asyncpg.Record:
    """The given version, or the current (highest) one."""
    if version is None:
        return await conn.fetchrow("SELECT * FROM scoring_config ORDER BY version DESC LIMIT 1")
    return await conn.fetchrow("SELECT * FROM scoring_config WHERE version = $1", version)


async def insert_scoring_config(
    conn: asyncpg.Connection, config: dict[str, Any], created_by: str, notes: str | None
) -> asyncpg.Record:
    """The next version (writers serialised on the table, so versions never collide)."""
    async with conn.transaction():
        # Writers take turns (an advisory lock needs no table privilege beyond INSERT).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ghostly.scoring_config'))")
        return await conn.fetchrow(
            "INSERT INTO scoring_config (version, config, created_by, notes) "
            "SELECT COALESCE(max(version), 0) + 1, $1, $2, $3 FROM scoring_config RETURNING *",
            config,
            created_by,
            notes,
        )


# --------------------------------------------------------------------------- post-session outcomes

OUTCOME_INPUTS = """
SELECT s.id, s.patient_id, s.processing_status, s.game_metadata->>'game_level' AS game_level,
       (SELECT t.user_id::text FROM patients pa JOIN therapists t ON t.id = pa.therapist_id
        WHERE pa.patient_code = s.patient_id) AS owner_user_id,
       (SELECT coalesce(json_agg(json_build_object(
                'channel_name', e.channel_name, 'side', e.side, 'usable', e.usable, 'signal_flags', e.signal_flags,
                'completion_rate', e.completion_rate, 'intensity_rate', e.intensity_rate,
                'duration_rate', e.duration_rate, 'muscle_compliance_score', e.muscle_compliance_score)
                ORDER BY e.channel_name), '[]'::json)
        FROM emg_statistics e WHERE e.session_id = s.id) AS channels,
       p.id AS score_id, p.overall_performance_score, p.rpe_post_session, p.game_points_achieved, p.game_points_maximum, p.bfr_pressure_aop,
       p.performance_weights AS score_weights, p.scoring_config_version, p.session_duration_minutes,
       o.rpe_post_session AS o_rpe, o.game_points AS o_game_points, o.game_points_max AS o_game_points_max,
       o.bfr_actual_pressure_aop AS o_bfr, o.recorded_by AS o_recorded_by, o.recorded_at AS o_recorded_at,
       ss.performance_weights AS settings_weights, b.actual_pressure_aop AS bfr_actual
FROM therapy_sessions s
LEFT JOIN performance_scores p ON p.session_id = s.id
LEFT JOIN session_outcomes o ON o.session_id = s.id
LEFT JOIN session_settings ss ON ss.session_id = s.id
LEFT JOIN bfr_monitoring b ON b.session_id = s.id
WHERE s.id = $1
FOR UPDATE OF s
"""


async def outcome_inputs(conn: asyncpg.Connection, session_id: uuid.UUID) -> asyncpg.Record | None:
    """Everything RecordSessionOutcome reads, in one round trip, with the session row locked
    until the transaction ends (one writer per session at a time)."""
    return await conn.fetchrow(OUTCOME_INPUTS, session_id)


async def update_score(
    conn: asyncpg.Connection,
    session_id: uuid.UUID,
    p: PerformanceResult,
    requested_weights: dict[str, float],
    scoring_config_version: int,
) -> asyncpg.Record | None:
    """Re-score an existing performance_scores row in place (the per-side rates are unchanged);
    returns what the API reports, or None when the session had no score row."""
    return await conn.fetchrow(
        """
        UPDATE performance_scores SET overall_performance_score = $2, compliance_score = $3, symmetry_score = $4,
            effort_score = $5, game_score = $6, performance_weights = $7, bfr_pressure_aop = $8,
            bfr_compliance_gate = $9, rpe_post_session = $10, game_points_achieved = $11, game_points_maximum = $12,
            scoring_config_version = $13, calculated_at = now()
        WHERE session_id = $1
        RETURNING overall_performance_score, performance_weights, scoring_config_version
        """,
        session_id,
        p.overall_performance_score,
        p.compliance_score or 0.0,
        p.symmetry_score or 0.0,
        p.effort_score or 0.0,
        p.game_score or 0.0,
        weights_json(p, requested_weights),
        p.bfr_pressure_aop,
        1.0 if p.bfr_compliance_gate is None else p.bfr_compliance_gate,
        p.rpe_post_session,
        p.game_points_achieved or 0,
        p.game_points_maximum,
        scoring_config_version,
    )


async def upsert_outcome(
    conn: asyncpg.Connection, session_id: uuid.UUID, values: dict[str, Any], recorded_by: str
) -> asyncpg.Record:
    cols = ["rpe_post_session", "game_points", "game_points_max", "bfr_actual_pressure_aop"]
    return await conn.fetchrow(
        f"""
        INSERT INTO session_outcomes (session_id, {", ".join(cols)}, recorded_by, recorded_at)
        VALUES ($1, $2, $3, $4, $5, $6, now())
        ON CONFLICT (session_id) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in cols)},
            recorded_by = EXCLUDED.recorded_by, recorded_at = now()
        RETURNING *
        """,
        session_id,
        *[values.get(c) for c in cols],
        recorded_by,
    )


# --------------------------------------------------------------------------- storage events


async def record_event(conn: asyncpg.Connection, event_id: str, request_sha256: str, window_s: int) -> str | None:
    """Record a signed storage event; returns the digest it was first seen with (None: new).
    Rows older than twice the clock window are dropped on the way."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM storage_event_replays WHERE received_at < now() - make_interval(secs => $1)", 2 * window_s
        )
        seen = await conn.fetchval(
            "INSERT INTO storage_event_replays (event_id, request_sha256) VALUES ($1, $2) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING request_sha256",
            event_id,
            request_sha256,
        )
        if seen is not None:
            return None
        return await conn.fetchval("SELECT request_sha256 FROM storage_event_replays WHERE event_id = $1", event_id)


# -- Reprocess work items shared by the ingest replicas (migration 022) -------------------------


async def enqueue_reprocess(
    conn: asyncpg.Connection, batch_id: uuid.UUID, queue: str, session_ids: list[uuid.UUID], request: bytes
) -> None:
    await conn.execute(
        "INSERT INTO reprocess_items (batch_id, queue, session_id, request) "
        "SELECT $1, $2, s, $4 FROM unnest($3::uuid[]) WITH ORDINALITY AS t(s, n) ORDER BY n",
        batch_id,
        queue,
        session_ids,
        request,
    )


async def claim_reprocess_item(
    conn: asyncpg.Connection, queue: str, owner: str, lease_s: float, max_attempts: int
) -> asyncpg.Record | None:
    """The oldest queued item of `queue`, or one whose replica stopped renewing its lease;
    SKIP LOCKED: concurrent consumers never take the same item."""
    return await conn.fetchrow(
        """
        UPDATE reprocess_items SET status = 'running', claimed_by = $2, heartbeat_at = now(),
               attempts = attempts + 1
        WHERE id = (SELECT id FROM reprocess_items
                    WHERE queue = $1 AND (status = 'queued' OR (status = 'running'
                          AND heartbeat_at < now() - make_interval(secs => $3)))
                    ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
        RETURNING id, batch_id, session_id, request, attempts, attempts > $4 AS exhausted
        """,
        queue,
        owner,
        lease_s,
        max_attempts,
    )


async def finish_reprocess_item(conn: asyncpg.Connection, item_id: int, owner: str, error: str | None) -> None:
    await conn.execute(
        "UPDATE reprocess_items SET status = $3, error_message = $4, finished_at = now(), heartbeat_at = now() "
        "WHERE id = $1 AND claimed_by = $2 AND status = 'running'",
        item_id,
        owner,
        "failed" if error else "done",
        no_nul(error) if error else None,
    )


async def renew_reprocess_items(conn: asyncpg.Connection, owner: str, item_ids: list[int]) -> None:
    await conn.execute(
        "UPDATE reprocess_items SET heartbeat_at = now() "
        "WHERE id = ANY($2::bigint[]) AND claimed_by = $1 AND status = 'running'",
        owner,
        item_ids,
    )


async def finished_reprocess_items(
    conn: asyncpg.Connection, batch_id: uuid.UUID, reported: list[int]
) -> list[asyncpg.Record]:
    """Finished items of the batch not reported yet (items finish in any order, on any replica)."""
    return await conn.fetch(
        "SELECT id, session_id, status, error_message FROM reprocess_items "
        "WHERE batch_id = $1 AND finished_at IS NOT NULL AND id <> ALL($2::bigint[]) ORDER BY finished_at, id",
        batch_id,
        reported,
    )


async def cancel_queued_reprocess(conn: asyncpg.Connection, batch_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM reprocess_items WHERE batch_id = $1 AND status = 'queued'", batch_id)


async def purge_finished_reprocess(conn: asyncpg.Connection, older_than_s: float) -> None:
    await conn.execute(
        "DELETE FROM reprocess_items WHERE finished_at < now() - make_interval(secs => $1)", older_than_s
    )


# --------------------------------------------------------------------------- reads of the handlers

# Where GetProcessingStatus looks a session up (request field -> column).
STATUS_COLUMNS = ("id", "file_hash", "file_path")


async def processing_status(db: asyncpg.Pool | asyncpg.Connection, column: str, value: Any) -> asyncpg.Record | None:
    if column not in STATUS_COLUMNS:
        raise ValueError(f"not a lookup column: {column}")
    return await db.fetchrow(
        "SELECT id, processing_status, error_message, processing_version, processing_time_ms, created_at, "
        f"processed_at, file_path, file_hash FROM therapy_sessions WHERE {column} = $1",
        value,
    )


async def upload_patient(db: asyncpg.Pool | asyncpg.Connection, patient_code: str) -> asyncpg.Record | None:
    """The patient an upload names (its code and therapist): a primary-key lookup."""
    return await db.fetchrow("SELECT patient_code, therapist_id FROM patients WHERE patient_code = $1", patient_code)


async def session_ids(db: asyncpg.Pool | asyncpg.Connection, where: str, args: list[Any]) -> list[uuid.UUID]:
    """Sessions of a Reprocess scope (``where``: a condition over therapy_sessions built by the
    handler from fixed fragments, values in ``args``), in date order."""
    rows = await db.fetch(f"SELECT id FROM therapy_sessions WHERE {where} ORDER BY session_date NULLS LAST, id", *args)
    return [r["id"] for r in rows]


async def lock_status(conn: asyncpg.Connection, sid: uuid.UUID) -> str | None:
    """The session's processing_status, its row locked for the rest of the transaction."""
    status: str | None = await conn.fetchval(
        "SELECT processing_status FROM therapy_sessions WHERE id = $1 FOR UPDATE", sid
    )
    return status


async def outcome(conn: asyncpg.Connection, sid: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM session_outcomes WHERE session_id = $1", sid)


async def delete_score(conn: asyncpg.Connection, sid: uuid.UUID) -> None:
    await conn.execute("DELETE FROM performance_scores WHERE session_id = $1", sid)


async def bfr(conn: asyncpg.Connection, sid: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM bfr_monitoring WHERE session_id = $1", sid)


async def session_owner(conn: asyncpg.Connection, sid: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT patient_id, processing_status, session_type FROM therapy_sessions WHERE id = $1", sid
    )
