"""cohort_day_scores (migration 014): the triggers keep it equal to the aggregation of the
session tables through every kind of write, including concurrent writers of one group."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.helpers import register_patient, rolled_back, wait_until, waiting_for_lock

# What the table must hold: the first level of the cohort summary, from the sessions.
EXPECTED = """
SELECT COALESCE(s.patient_id, '') AS patient_key, min(s.patient_id) AS patient_id,
       COALESCE(s.protocol_day, 0) AS protocol_day, count(*)::int AS session_count,
       sum(p.overall_performance_score) AS sum_overall,
       sum(p.overall_performance_score * p.overall_performance_score) AS sumsq_overall,
       sum(p.compliance_score) AS sum_compliance, sum(p.symmetry_score) AS sum_symmetry
FROM therapy_sessions s JOIN performance_scores p ON p.session_id = s.id
WHERE s.processing_status = 'completed' AND COALESCE(s.patient_id, '') = ANY($1::text[])
GROUP BY 1, 3 ORDER BY 1, 3"""
ACTUAL = """
SELECT patient_key, patient_id, protocol_day, session_count, sum_overall, sumsq_overall,
       sum_compliance, sum_symmetry
FROM cohort_day_scores WHERE patient_key = ANY($1::text[]) ORDER BY 1, 3"""


async def _patient(conn) -> str:
    return await register_patient(conn, "K")


async def _remove_patient(conn, patient: str) -> None:
    """Delete a committed patient, their sessions and their therapist (register_patient's)."""
    therapist = await conn.fetchval("SELECT therapist_id FROM patients WHERE patient_code = $1", patient)
    await conn.execute("DELETE FROM therapy_sessions WHERE patient_id = $1", patient)
    await conn.execute("DELETE FROM patients WHERE patient_code = $1", patient)
    await conn.execute("DELETE FROM therapists WHERE id = $1", therapist)


async def _session(
    conn, patient: str | None, day: int | None, status: str = "completed", score: float | None = 50.0
) -> uuid.UUID:
    sid = await conn.fetchval(
        "INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, patient_id, protocol_day, "
        "original_sampling_rate, original_duration_seconds, original_sample_count, channel_names, channel_count, "
        "processing_version, processing_status) VALUES ($1, $2, 1, $3, $4, 990, 1, 990, '[]', 0, 'v', $5) "
        "RETURNING id",
        f"cohort/{uuid.uuid4().hex}.c3d",
        uuid.uuid4().hex,
        patient,
        day,
        status,
    )
    if score is not None:
        await conn.execute(
            "INSERT INTO performance_scores (session_id, overall_performance_score, compliance_score, symmetry_score, "
            "effort_score, game_score) VALUES ($1, $2, $3, $4, 0, 0)",
            sid,
            score,
            score / 2,
            100 - score,
        )
    return sid


async def _assert_consistent(conn, keys: list[str]) -> list[asyncpg.Record]:
    expected = [dict(r) for r in await conn.fetch(EXPECTED, keys)]
    actual = [dict(r) for r in await conn.fetch(ACTUAL, keys)]
    _close(actual, expected)
    return actual


def _close(actual: list[dict], expected: list[dict]) -> None:
    assert [(a["patient_key"], a["protocol_day"], a["session_count"]) for a in actual] == [
        (e["patient_key"], e["protocol_day"], e["session_count"]) for e in expected
    ]
    for a, e in zip(actual, expected):
        assert a["patient_id"] == e["patient_id"]
        for k in ("sum_overall", "sumsq_overall", "sum_compliance", "sum_symmetry"):
            assert a[k] == pytest.approx(e[k]), k


async def test_every_kind_of_write_keeps_the_groups_exact(conn):
    a, b = await _patient(conn), await _patient(conn)
    keys = [a, b, ""]
    s1 = await _session(conn, a, 1, score=40)
    s2 = await _session(conn, a, 1, score=60)
    s3 = await _session(conn, a, 2, score=70)
    s4 = await _session(conn, b, None, score=80)  # unknown day -> 0
    await _session(conn, a, 1, status="processing", score=None)
    await _session(conn, None, 3, score=10)  # a session without patient
    rows = await _assert_consistent(conn, keys)
    assert {(r["patient_key"], r["protocol_day"]): r["session_count"] for r in rows} == {
        (a, 1): 2,
        (a, 2): 1,
        (b, 0): 1,
        ("", 3): 1,
    }

    # Reprocessing rewrites a score; a session fails; a day is corrected; a session moves to
    # another patient; a score is deleted; a session is deleted (its score goes by cascade).
    await conn.execute("UPDATE performance_scores SET overall_performance_score = 90 WHERE session_id = $1", s1)
    await _assert_consistent(conn, keys)
    await conn.execute("UPDATE therapy_sessions SET processing_status = 'failed' WHERE id = $1", s2)
    await _assert_consistent(conn, keys)
    await conn.execute("UPDATE therapy_sessions SET protocol_day = 5 WHERE id = $1", s3)
    await _assert_consistent(conn, keys)
    await conn.execute("UPDATE therapy_sessions SET patient_id = $2 WHERE id = $1", s4, a)
    await _assert_consistent(conn, keys)
    await conn.execute("DELETE FROM performance_scores WHERE session_id = $1", s3)
    await _assert_consistent(conn, keys)
    await conn.execute("UPDATE therapy_sessions SET processing_status = 'completed' WHERE id = $1", s2)
    await _assert_consistent(conn, keys)
    await conn.execute("DELETE FROM therapy_sessions WHERE id = $1", s1)
    rows = await _assert_consistent(conn, keys)
    assert {(r["patient_key"], r["protocol_day"]): r["session_count"] for r in rows} == {
        (a, 1): 1,
        (a, 0): 1,
        ("", 3): 1,
    }

    # A multi-row statement (as COPY and the legacy migration write) refreshes every group once.
    await conn.execute("UPDATE therapy_sessions SET protocol_day = 7 WHERE patient_id = $1", a)
    rows = await _assert_consistent(conn, keys)
    assert [(r["patient_key"], r["protocol_day"], r["session_count"]) for r in rows if r["patient_key"] == a] == [
        (a, 7, 2)
    ]


async def test_bulk_copy_is_counted(conn):
    patient = await _patient(conn)
    ids = [uuid.uuid4() for _ in range(30)]
    await conn.copy_records_to_table(
        "therapy_sessions",
        columns=[
            "id",
            "file_path",
            "file_hash",
            "file_size_bytes",
            "patient_id",
            "protocol_day",
            "original_sampling_rate",
            "original_duration_seconds",
            "original_sample_count",
            "channel_names",
            "channel_count",
            "processing_version",
            "processing_status",
        ],
        records=[
            (i, f"cohort/{i}.c3d", i.hex, 1, patient, n % 3, 990.0, 1.0, 990, "[]", 0, "v", "completed")
            for n, i in enumerate(ids)
        ],
    )
    await conn.copy_records_to_table(
        "performance_scores",
        columns=[
            "session_id",
            "overall_performance_score",
            "compliance_score",
            "symmetry_score",
            "effort_score",
            "game_score",
        ],
        records=[(i, float(n), 1.0, 2.0, 0.0, 0.0) for n, i in enumerate(ids)],
    )
    rows = await _assert_consistent(conn, [patient])
    assert [r["session_count"] for r in rows] == [10, 10, 10]


async def test_concurrent_writers_of_one_group_both_count(database_url):
    """Two transactions add a session to the same (patient, day): the second refresh waits for
    the first commit and then sees it, so neither session is lost."""
    setup = await asyncpg.connect(database_url)
    patient = await _patient(setup)
    try:
        async with rolled_back(database_url) as check:  # (read-only use; rolled back)
            c1, c2 = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
            try:
                t1, t2 = c1.transaction(), c2.transaction()
                await t1.start()
                await t2.start()
                await _session(c1, patient, 4, score=30)  # holds the summary lock now
                second = asyncio.create_task(_session(c2, patient, 4, score=70))
                await wait_until(lambda: second.done() or waiting_for_lock(setup, c2))
                assert not second.done(), "the second writer must wait for the first commit"
                await t1.commit()
                await asyncio.wait_for(second, 10)
                await t2.commit()
            finally:
                await c1.close()
                await c2.close()
            row = await check.fetchrow(ACTUAL, [patient])
            assert row["session_count"] == 2 and row["sum_overall"] == pytest.approx(100.0)
            await _assert_consistent(check, [patient])
    finally:
        await _remove_patient(setup, patient)
        assert await setup.fetchval("SELECT count(*) FROM cohort_day_scores WHERE patient_key = $1", patient) == 0
        await setup.close()


async def test_readers_are_not_blocked_by_a_writer(database_url, conn):
    patient = await _patient(conn)
    await _session(conn, patient, 1)  # conn's transaction holds the lock
    reader = await asyncpg.connect(database_url)
    try:
        await asyncio.wait_for(reader.fetchval("SELECT count(*) FROM cohort_day_scores"), 5)
    finally:
        await reader.close()


async def test_the_ingest_role_keeps_the_summary_without_privileges_on_it(conn):
    patient = await _patient(conn)
    sid = await _session(conn, patient, 2, score=None)
    await conn.execute("SET LOCAL ROLE ghostly_ingest")
    assert not await conn.fetchval("SELECT has_table_privilege('cohort_day_scores', 'INSERT')")
    await conn.execute(
        "INSERT INTO performance_scores (session_id, overall_performance_score, compliance_score, symmetry_score, "
        "effort_score, game_score) VALUES ($1, 64, 32, 36, 0, 0)",
        sid,
    )
    await conn.execute("RESET ROLE")
    rows = await _assert_consistent(conn, [patient])
    assert [(r["protocol_day"], r["session_count"], r["sum_overall"]) for r in rows] == [(2, 1, 64.0)]


async def _two_writers(database_url, first_sql: list, second_sql: list, commit_second_first: bool):
    """Run `first_sql` in T1 (left open), `second_sql` in T2 as a task, commit in the given
    order; statements are (sql, *args)."""
    c1, c2 = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        t1, t2 = c1.transaction(), c2.transaction()
        await t1.start()
        await t2.start()
        for sql, *args in first_sql:
            await c1.execute(sql, *args)

        async def second():
            for sql, *args in second_sql:
                await c2.execute(sql, *args)

        task = asyncio.create_task(second())
        observer = await asyncpg.connect(database_url)
        try:  # the second writer either completes or blocks on a lock
            await wait_until(lambda: task.done() or waiting_for_lock(observer, c2))
        finally:
            await observer.close()
        if commit_second_first:
            assert task.done(), "the second writer should not wait here"
            await task
            await t2.commit()
            await t1.commit()
        else:
            await t1.commit()
            await asyncio.wait_for(task, 10)
            await t2.commit()
    finally:
        await c1.close()
        await c2.close()


@pytest.fixture
async def committed_patient(database_url):
    setup = await asyncpg.connect(database_url)
    patient = await _patient(setup)
    yield setup, patient
    await _remove_patient(setup, patient)
    await setup.close()


async def test_a_score_written_while_its_session_completes_elsewhere_counts(database_url, committed_patient):
    """T1 marks the session completed (no score yet: its refresh counts nothing, holds the lock);
    T2 writes the score meanwhile: T2's refresh waits for T1 and then sees the session completed."""
    setup, patient = committed_patient
    sid = await _session(setup, patient, 1, status="processing", score=None)
    await _two_writers(
        database_url,
        [("UPDATE therapy_sessions SET processing_status = 'completed' WHERE id = $1", sid)],
        [
            (
                "INSERT INTO performance_scores (session_id, overall_performance_score, compliance_score, "
                "symmetry_score, effort_score, game_score) VALUES ($1, 70, 35, 30, 0, 0)",
                sid,
            )
        ],
        commit_second_first=False,
    )
    rows = await _assert_consistent(setup, [patient])
    assert [(r["protocol_day"], r["session_count"]) for r in rows] == [(1, 1)]


async def test_a_rescore_while_the_session_moves_day_lands_in_the_new_day(database_url, committed_patient):
    setup, patient = committed_patient
    sid = await _session(setup, patient, 3, score=50)
    await _two_writers(
        database_url,
        [("UPDATE therapy_sessions SET protocol_day = 4 WHERE id = $1", sid)],
        [("UPDATE performance_scores SET overall_performance_score = 90 WHERE session_id = $1", sid)],
        commit_second_first=False,
    )
    rows = await _assert_consistent(setup, [patient])
    assert [(r["protocol_day"], r["sum_overall"]) for r in rows] == [(4, 90.0)]


async def test_only_writers_may_run_the_refresh(conn):
    for role, allowed in (
        ("ghostly_statistics", False),
        ("ghostly_export", False),
        ("ghostly_jit_signal", False),
        ("ghostly_ingest", True),
    ):
        assert (
            await conn.fetchval(
                "SELECT has_function_privilege($1, 'cohort_day_scores_refresh(text[], integer[], uuid[])', 'EXECUTE')",
                role,
            )
            is allowed
        ), role
