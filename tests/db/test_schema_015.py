"""Migration 015: signal flags per channel, masked contractions.

``conn`` is the session's fully migrated database inside a rolled-back transaction; each
expected error runs in its own savepoint.
"""

from __future__ import annotations

import json
import re
import uuid

import asyncpg
import pytest

from libs.emg.flags import SIGNAL_FLAGS

INSERT_CONTRACTION = (
    "INSERT INTO emg_contractions (statistics_id, session_id, channel_name, contraction_index, start_time_s, "
    "end_time_s, duration_s, peak_amplitude, mean_amplitude, meets_intensity, meets_duration, is_good{extra}) "
    "VALUES ($1, $2, 'CH1', $3, 1.0, 2.5, 1.5, 1e-4, 5e-5, true, false, false{values})"
)


async def _session(conn) -> uuid.UUID:
    return await conn.fetchval(
        "INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, original_sampling_rate, "
        "original_duration_seconds, original_sample_count, channel_names, channel_count, processing_version, "
        "processing_status) VALUES ($1, $2, 1, 990, 1, 990, '[]', 0, 'v', 'completed') RETURNING id",
        f"P/{uuid.uuid4()}.c3d",
        uuid.uuid4().hex,
    )


async def _stats(conn, sid) -> uuid.UUID:
    """An emg_statistics row written the pre-015 way (no flag columns named)."""
    return await conn.fetchval(
        "INSERT INTO emg_statistics (session_id, channel_name, mvc_peak_value, mvc_rms_value, mvc_confidence_score, "
        "mvc_calculation_method, total_contractions, good_contractions_intensity, good_contractions_duration, "
        "good_contractions_both, completion_rate, intensity_rate, duration_rate, muscle_compliance_score, "
        "signal_quality_score, processing_confidence, processing_version, side) VALUES ($1, 'CH1', 1, 1, 1, "
        "'user_defined', 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 'v', 'left') RETURNING id",
        sid,
    )


async def _columns(conn, table: str, names: list[str]) -> list[tuple]:
    rows = await conn.fetch(
        "SELECT column_name, data_type, udt_name, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1 AND column_name = ANY($2::text[]) "
        "ORDER BY ordinal_position",
        table,
        names,
    )
    return [(r["column_name"], r["data_type"], r["udt_name"], r["is_nullable"], r["column_default"]) for r in rows]


async def test_new_columns_types_and_defaults(conn):
    assert await _columns(conn, "emg_statistics", ["signal_flags", "usable"]) == [
        ("signal_flags", "ARRAY", "_text", "NO", "'{}'::text[]"),
        ("usable", "boolean", "bool", "NO", "true"),
    ]
    assert await _columns(conn, "emg_contractions", ["partially_masked", "masked_s"]) == [
        ("partially_masked", "boolean", "bool", "NO", "false"),
        ("masked_s", "double precision", "float8", "NO", "0"),
    ]


async def test_check_vocabulary_is_the_emg_cores(conn):
    """The CHECK lists exactly libs/emg/flags.py SIGNAL_FLAGS (a new flag needs a migration)."""
    definition = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'emg_statistics_signal_flags_known'"
    )
    assert "<@" in definition
    assert re.findall(r"'([a-z_]+)'::text", definition) == list(SIGNAL_FLAGS)


async def test_rows_without_the_new_columns_get_the_defaults(conn):
    """What an older writer (or the legacy data migration) leaves: no flags, usable, not masked."""
    sid = await _session(conn)
    stat = await _stats(conn, sid)
    row = await conn.fetchrow("SELECT signal_flags, usable FROM emg_statistics WHERE id = $1", stat)
    assert row["signal_flags"] == [] and row["usable"] is True
    await conn.execute(INSERT_CONTRACTION.format(extra="", values=""), stat, sid, 0)
    row = await conn.fetchrow("SELECT partially_masked, masked_s FROM emg_contractions WHERE statistics_id = $1", stat)
    assert row["partially_masked"] is False and row["masked_s"] == 0.0


async def test_every_known_flag_is_accepted(conn):
    sid = await _session(conn)
    stat = await _stats(conn, sid)
    await conn.execute(
        "UPDATE emg_statistics SET signal_flags = $2, usable = false WHERE id = $1", stat, list(SIGNAL_FLAGS)
    )
    assert await conn.fetchval("SELECT signal_flags FROM emg_statistics WHERE id = $1", stat) == list(SIGNAL_FLAGS)


@pytest.mark.parametrize("flags", [["unknown_flag"], ["dropout", "Dropout"], ["dropout", ""], ["dropout", None]])
async def test_unknown_flag_is_refused(conn, flags):
    sid = await _session(conn)
    stat = await _stats(conn, sid)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        async with conn.transaction():
            await conn.execute("UPDATE emg_statistics SET signal_flags = $2 WHERE id = $1", stat, flags)
    assert info.value.constraint_name == "emg_statistics_signal_flags_known"
    assert await conn.fetchval("SELECT signal_flags FROM emg_statistics WHERE id = $1", stat) == []


async def test_null_flags_and_usable_are_refused(conn):
    sid = await _session(conn)
    stat = await _stats(conn, sid)
    for column in ("signal_flags", "usable"):
        with pytest.raises(asyncpg.NotNullViolationError):
            async with conn.transaction():
                await conn.execute(f"UPDATE emg_statistics SET {column} = NULL WHERE id = $1", stat)


async def test_masked_seconds_must_not_be_negative(conn):
    sid = await _session(conn)
    stat = await _stats(conn, sid)
    insert = INSERT_CONTRACTION.format(extra=", partially_masked, masked_s", values=", $4, $5")
    await conn.execute(insert, stat, sid, 0, True, 0.25)
    await conn.execute(insert, stat, sid, 1, False, 0.0)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        async with conn.transaction():
            await conn.execute(insert, stat, sid, 2, True, -0.01)
    assert info.value.constraint_name == "emg_contractions_masked_s_nonnegative"
    rows = await conn.fetch(
        "SELECT partially_masked, masked_s FROM emg_contractions WHERE statistics_id = $1 ORDER BY contraction_index",
        stat,
    )
    assert [tuple(r) for r in rows] == [(True, 0.25), (False, 0.0)]


@pytest.mark.parametrize("role", ["ghostly_statistics", "ghostly_jit_signal"])  # export: over gRPC (019)
async def test_read_roles_see_the_new_columns_under_rls(conn, role):
    sid = await _session(conn)
    stat = await _stats(conn, sid)
    await conn.execute("UPDATE emg_statistics SET signal_flags = '{dropout}', usable = false WHERE id = $1", stat)
    await conn.execute(
        INSERT_CONTRACTION.format(extra=", partially_masked, masked_s", values=", true, 0.5"), stat, sid, 0
    )
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {role}")
        await conn.execute("SELECT set_config('ghostly.role', 'admin', true)")
        row = await conn.fetchrow("SELECT signal_flags, usable FROM emg_statistics WHERE id = $1", stat)
        assert row["signal_flags"] == ["dropout"] and row["usable"] is False
        row = await conn.fetchrow(
            "SELECT partially_masked, masked_s FROM emg_contractions WHERE statistics_id = $1", stat
        )
        assert row["partially_masked"] is True and row["masked_s"] == 0.5
        await conn.execute("RESET ROLE")


async def test_ingest_role_writes_the_new_columns(conn):
    sid = await _session(conn)
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE ghostly_ingest")
        # As ingest writes them: the flags with the row (it never updates statistics in place, 019).
        stat = await conn.fetchval(
            "INSERT INTO emg_statistics (session_id, channel_name, mvc_peak_value, mvc_rms_value, mvc_confidence_score, "
            "mvc_calculation_method, total_contractions, good_contractions_intensity, good_contractions_duration, "
            "good_contractions_both, completion_rate, intensity_rate, duration_rate, muscle_compliance_score, "
            "signal_quality_score, processing_confidence, processing_version, side, signal_flags, usable) "
            "VALUES ($1, 'CH1', 1, 1, 1, 'user_defined', 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 'v', 'left', "
            "'{saturation,partially_masked}', true) RETURNING id",
            sid,
        )
        await conn.execute(
            INSERT_CONTRACTION.format(extra=", partially_masked, masked_s", values=", true, 0.1"), stat, sid, 0
        )
        await conn.execute("RESET ROLE")
    assert await conn.fetchval("SELECT signal_flags FROM emg_statistics WHERE id = $1", stat) == [
        "saturation",
        "partially_masked",
    ]


async def test_compatibility_views_keep_the_legacy_shape(conn):
    """007's analysis_results_view lists its keys explicitly: the new columns do not leak into
    the legacy analytics_data, and the per-contraction legacy objects keep their 8 keys."""
    sid = await _session(conn)
    stat = await _stats(conn, sid)
    await conn.execute("UPDATE emg_statistics SET signal_flags = '{dropout}', usable = false WHERE id = $1", stat)
    await conn.execute(
        INSERT_CONTRACTION.format(extra=", partially_masked, masked_s", values=", true, 0.5"), stat, sid, 0
    )
    data = await conn.fetchval("SELECT analytics_data FROM analysis_results_view WHERE c3d_metadata_id = $1", sid)
    channel = (json.loads(data) if isinstance(data, str) else data)["CH1"]
    assert not {"signal_flags", "usable", "partially_masked", "masked_s"} & set(channel)
    [contraction] = channel["contractions"]
    assert set(contraction) == {
        "start_time_ms",
        "end_time_ms",
        "duration_ms",
        "mean_amplitude",
        "max_amplitude",
        "is_good",
        "meets_mvc",
        "meets_duration",
    }
    assert contraction["start_time_ms"] == 1000.0
    assert await conn.fetchval("SELECT count(*) FROM c3d_metadata_view WHERE id = $1", sid) == 1
