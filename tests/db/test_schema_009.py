"""Migration 009: what the ingest write path adds to the plan's tables."""

from __future__ import annotations

import uuid

import asyncpg
import pytest


async def _session(conn, file_hash: str | None = None) -> uuid.UUID:
    return await conn.fetchval(
        "INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, original_sampling_rate, "
        "original_duration_seconds, original_sample_count, channel_names, channel_count, processing_version, "
        "error_message, game_metadata) VALUES ($1, $2, 1, 990, 1, 990, '[]', 0, 'v', 'why', '{\"game_name\": \"Ghostly\"}') "
        "RETURNING id",
        f"P/{uuid.uuid4()}.c3d",
        file_hash or uuid.uuid4().hex,
    )


async def _stats(conn, sid, side="left") -> uuid.UUID:
    return await conn.fetchval(
        "INSERT INTO emg_statistics (session_id, channel_name, mvc_peak_value, mvc_rms_value, mvc_confidence_score, "
        "mvc_calculation_method, total_contractions, good_contractions_intensity, good_contractions_duration, "
        "good_contractions_both, completion_rate, intensity_rate, duration_rate, muscle_compliance_score, "
        "signal_quality_score, processing_confidence, processing_version, side, rms_value, median_frequency_hz, "
        "analysis_details) VALUES ($1, 'CH1', 1, 1, 1, 'user_defined', 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 'v', $2, "
        '0.0001, 80.5, \'{"mvc_source": "user_muscle"}\') RETURNING id',
        sid,
        side,
    )


async def test_file_hash_is_unique(conn):
    await _session(conn, "abc")
    with pytest.raises(asyncpg.UniqueViolationError) as info:
        async with conn.transaction():
            await _session(conn, "abc")
    assert info.value.constraint_name == "therapy_sessions_file_hash_key"


async def test_side_check(conn):
    sid = await _session(conn)
    with pytest.raises(asyncpg.CheckViolationError):
        async with conn.transaction():
            await _stats(conn, sid, side="middle")


async def test_contractions_constraints_and_cascade(conn):
    sid = await _session(conn)
    stat = await _stats(conn, sid)
    insert = (
        "INSERT INTO emg_contractions (statistics_id, session_id, channel_name, contraction_index, start_time_s, "
        "end_time_s, duration_s, peak_amplitude, mean_amplitude, meets_intensity, meets_duration, is_good) "
        "VALUES ($1, $2, 'CH1', $3, $4, $5, $6, 1e-4, 5e-5, true, false, false)"
    )
    await conn.execute(insert, stat, sid, 0, 1.0, 2.5, 1.5)
    with pytest.raises(asyncpg.UniqueViolationError):
        async with conn.transaction():
            await conn.execute(insert, stat, sid, 0, 3.0, 4.0, 1.0)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        async with conn.transaction():
            await conn.execute(insert, stat, sid, 1, 5.0, 4.0, 1.0)
    assert info.value.constraint_name == "emg_contractions_order"
    await conn.execute("DELETE FROM emg_statistics WHERE id = $1", stat)
    assert await conn.fetchval("SELECT count(*) FROM emg_contractions WHERE session_id = $1", sid) == 0
    stat = await _stats(conn, sid)
    await conn.execute(insert, stat, sid, 0, 1.0, 2.5, 1.5)
    await conn.execute("DELETE FROM therapy_sessions WHERE id = $1", sid)
    assert await conn.fetchval("SELECT count(*) FROM emg_contractions WHERE statistics_id = $1", stat) == 0
