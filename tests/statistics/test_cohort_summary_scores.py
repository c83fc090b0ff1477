"""cohort_summary_scores (migration 021): GetCohortSummary in O(days), equal to the per-(patient,
day) aggregation it replaces, through every kind of write, concurrent writers and RLS.

Runs on its own migrated database (the whole-cohort summary must be exactly that database's).
The reference is the summary as it was computed before 021: two-level aggregation of the
completed, scored sessions (one group per (patient, protocol day)). Counts must be identical;
means and standard deviations equal up to floating-point rounding (the reference's own result
depends on the order PostgreSQL happens to add the rows in; 021's sums are exact NUMERIC).
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid

import asyncpg
import grpc
import pytest

from ghostly.statistics.v1 import statistics_pb2 as pb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.db.dsn import with_user
from libs.db.migrate import migrate
from libs.grpc_server import start_service
from services.statistics import repository as q
from services.statistics.server import SPEC
from tests import helpers
from tests.helpers import ROOT, bearer, make_config

sys.path.insert(0, str(ROOT / "bench"))
from gen_cohort import generate  # type: ignore[import-not-found]  # bench/, put on sys.path above

# The summary before 021, from the sessions: first level per (protocol day, patient), then per
# day and the total (frozen copy of the pre-021 query; $1 = therapist when `therapist`).
_PER = """
    SELECT COALESCE(s.protocol_day, 0) AS protocol_day, s.patient_id, count(*) AS n,
        sum(p.overall_performance_score) AS so,
        sum(p.overall_performance_score * p.overall_performance_score) AS sq,
        sum(p.compliance_score) AS sc, sum(p.symmetry_score) AS ss
    FROM therapy_sessions s
    JOIN performance_scores p ON p.session_id = s.id
    WHERE s.processing_status = 'completed'{cond}
    GROUP BY 1, 2"""
_REFERENCE = """
WITH per AS MATERIALIZED ({per}
)
SELECT false AS is_total, protocol_day, sum(n)::bigint AS session_count, count(*) AS patient_count,
    sum(so) / sum(n) AS mean_overall,
    CASE WHEN sum(n) > 1
         THEN sqrt(greatest(sum(sq) - sum(so) * sum(so) / sum(n), 0) / (sum(n) - 1)) END AS stddev_overall,
    sum(sc) / sum(n) AS mean_compliance, sum(ss) / sum(n) AS mean_symmetry
FROM per GROUP BY protocol_day
UNION ALL
SELECT true, 0, COALESCE(sum(n), 0)::bigint, count(DISTINCT patient_id), sum(so) / sum(n), NULL, NULL, NULL
FROM per
ORDER BY is_total DESC, protocol_day"""


def reference_sql(therapist: bool) -> str:
    cond = " AND s.patient_id IN (SELECT patient_code FROM patients WHERE therapist_id = $1)" if therapist else ""
    return _REFERENCE.format(per=_PER.format(cond=cond))


def assert_same_summary(actual, expected) -> None:
    key = [(r["is_total"], r["protocol_day"], r["session_count"], r["patient_count"]) for r in actual]
    assert key == [(r["is_total"], r["protocol_day"], r["session_count"], r["patient_count"]) for r in expected]
    for a, e in zip(actual, expected):
        for col in ("mean_overall", "mean_compliance", "mean_symmetry"):
            assert (a[col] is None) == (e[col] is None), col
            if e[col] is not None:
                assert a[col] == pytest.approx(e[col], rel=1e-12, abs=1e-12), (col, a["protocol_day"])
        # The reference computes the variance from float sums (cancellation): a few ulps of
        # the sum of squares, i.e. ~1e-6 absolute on a stddev of identical scores.
        assert (a["stddev_overall"] is None) == (e["stddev_overall"] is None)
        if e["stddev_overall"] is not None:
            assert a["stddev_overall"] == pytest.approx(e["stddev_overall"], rel=1e-9, abs=1e-5)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def dsn(db_factory):
    url = await db_factory.create("cohort")
    await migrate(url)
    # 120 patients x 30 sessions, 6 therapists (failed, pending, effort-excluded, BFR rows...).
    data = await generate(url, patients=120, sessions_per_patient=30, therapists=6, quiet=True, prefix="C")
    return {
        "dsn": url,
        "therapists": data["therapist_ids"],
        "patients": data["patient_codes"],
        "sessions": data["completed_ids"],
    }


@pytest.fixture(scope="module")
async def owner(dsn):
    c = await asyncpg.connect(dsn["dsn"])
    yield c
    await c.close()


async def as_statistics(dsn: str, role: str | None, user_id: str | None = None) -> asyncpg.Connection:
    c = await asyncpg.connect(with_user(dsn, "ghostly_statistics"))
    if role is not None:
        await c.execute(
            "SELECT set_config('ghostly.role', $1, false), set_config('ghostly.user_id', $2, false)",
            role,
            user_id or "",
        )
    return c


async def _check(owner, therapists) -> None:
    """Whole cohort and every therapist: the new query equals the per-(patient, day) reference,
    and the maintained rows equal a rebuild from scratch, exactly (NUMERIC sums: no drift)."""
    tx = owner.transaction()
    await tx.start()
    try:
        assert_same_summary(
            await owner.fetch(q.cohort_summary(False, False, False)), await owner.fetch(reference_sql(False))
        )
        for t in therapists:
            assert_same_summary(
                await owner.fetch(q.cohort_summary(True, False, False), t), await owner.fetch(reference_sql(True), t)
            )
        snapshot = "SELECT * FROM cohort_summary_scores ORDER BY therapist_id NULLS FIRST, protocol_day NULLS FIRST"
        maintained = [tuple(r) for r in await owner.fetch(snapshot)]
        await owner.execute("SELECT cohort_summary_rebuild()")
        assert maintained == [tuple(r) for r in await owner.fetch(snapshot)], "maintained rows drifted from a rebuild"
    finally:
        await tx.rollback()  # the rebuild is only a yardstick


async def _session(
    conn, patient: str | None, day: int | None, score: float | None = 50.0, status: str = "completed"
) -> uuid.UUID:
    sid = await conn.fetchval(
        "INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, patient_id, protocol_day, "
        "original_sampling_rate, original_duration_seconds, original_sample_count, channel_names, channel_count, "
        "processing_version, processing_status) VALUES ($1, $2, 1, $3, $4, 990, 1, 990, '[]', 0, 'v', $5) "
        "RETURNING id",
        f"summary/{uuid.uuid4().hex}.c3d",
        uuid.uuid4().hex,
        patient,
        day,
        status,
    )
    if score is not None:
        await _score(conn, sid, score)
    return sid


async def _score(conn, sid, score: float) -> None:
    """Ingest's replace: delete any score of the session, insert the new one."""
    await conn.execute("DELETE FROM performance_scores WHERE session_id = $1", sid)
    await conn.execute(
        "INSERT INTO performance_scores (session_id, overall_performance_score, compliance_score, symmetry_score, "
        "effort_score, game_score) VALUES ($1, $2, $3, $4, 0, 0)",
        sid,
        score,
        score / 2,
        100 - score / 3,
    )


# --------------------------------------------------------------------------- equality


async def test_generated_cohort_equals_the_per_patient_day_aggregation(dsn, owner):
    rows = await owner.fetch(q.cohort_summary(False, False, False))
    assert rows[0]["is_total"] and rows[0]["session_count"] == len(dsn["sessions"]) and rows[0]["patient_count"] == 120
    assert len(rows) == 11  # total + the 10 therapy days: O(days), not O(patients x days)
    await _check(owner, dsn["therapists"])


async def test_every_kind_of_write_keeps_the_summary_equal(dsn, owner):
    therapists, patients, sessions = dsn["therapists"], dsn["patients"], dsn["sessions"]
    rnd = random.Random(3)
    a, b = patients[0], patients[1]
    # Reprocess: scores replaced (ingest's DELETE + INSERT, as its role) and rescored in place.
    await owner.execute("SET ROLE ghostly_ingest")
    try:
        assert not await owner.fetchval("SELECT has_table_privilege('cohort_summary_scores', 'SELECT')")
        for sid in rnd.sample(sessions, 20):
            await _score(owner, sid, rnd.uniform(0, 100))
        await owner.execute(
            "UPDATE performance_scores SET overall_performance_score = 33.3 WHERE session_id = $1", sessions[5]
        )
    finally:
        await owner.execute("RESET ROLE")
    await _check(owner, therapists)
    # Excluded: failed, back to pending, score deleted.
    await owner.execute(
        "UPDATE therapy_sessions SET processing_status = 'failed' WHERE id = ANY($1::uuid[])", rnd.sample(sessions, 15)
    )
    await owner.execute("UPDATE therapy_sessions SET processing_status = 'pending' WHERE id = $1", sessions[7])
    await owner.execute("DELETE FROM performance_scores WHERE session_id = ANY($1::uuid[])", rnd.sample(sessions, 10))
    await _check(owner, therapists)
    # Deleted sessions (scores go by cascade), one whole patient-day among them.
    day_of_a = await owner.fetchval("SELECT min(protocol_day) FROM therapy_sessions WHERE patient_id = $1", a)
    await owner.execute("DELETE FROM therapy_sessions WHERE patient_id = $1 AND protocol_day = $2", a, day_of_a)
    await owner.execute("DELETE FROM therapy_sessions WHERE id = ANY($1::uuid[])", rnd.sample(sessions, 10))
    await _check(owner, therapists)
    # Days corrected, one to unknown (day 0); a session moves to another patient (of another
    # therapist); sessions without a patient.
    await owner.execute(
        "UPDATE therapy_sessions SET protocol_day = 13 WHERE id = ANY($1::uuid[])", rnd.sample(sessions, 5)
    )
    await owner.execute("UPDATE therapy_sessions SET protocol_day = NULL WHERE id = $1", sessions[11])
    other = await owner.fetchval(
        "SELECT patient_code FROM patients WHERE patient_code = ANY($1::text[]) AND therapist_id <> "
        "(SELECT therapist_id FROM patients WHERE patient_code = $2) ORDER BY patient_code LIMIT 1",
        patients,
        b,
    )
    await owner.execute(
        "UPDATE therapy_sessions SET patient_id = $2 WHERE id IN "
        "(SELECT id FROM therapy_sessions WHERE patient_id = $1 LIMIT 3)",
        b,
        other,
    )
    loose = [await _session(owner, None, d, score=10.0 * (d or 7)) for d in (1, 1, 2, None)]
    await owner.execute("UPDATE therapy_sessions SET patient_id = NULL WHERE id = $1", sessions[20])
    await _check(owner, therapists)
    # A patient moves to another therapist (groups follow), then a whole caseload at once.
    await owner.execute("UPDATE patients SET therapist_id = $2 WHERE patient_code = $1", a, therapists[-1])
    await _check(owner, therapists)
    await owner.execute("UPDATE patients SET therapist_id = $2 WHERE therapist_id = $1", therapists[1], therapists[2])
    await _check(owner, therapists)
    assert (
        await owner.fetchval("SELECT count(*) FROM cohort_summary_scores WHERE therapist_id = $1", therapists[1]) == 0
    )
    # Other patient updates take no lock and change nothing.
    await owner.execute("UPDATE patients SET first_name = 'Renamed' WHERE patient_code = $1", b)
    # A multi-row statement; the loose sessions leave again.
    await owner.execute("UPDATE therapy_sessions SET protocol_day = protocol_day + 1 WHERE patient_id = $1", b)
    await owner.execute("DELETE FROM therapy_sessions WHERE id = ANY($1::uuid[])", loose)
    await _check(owner, therapists)


async def test_an_empty_scope_reads_as_the_empty_total(dsn, owner):
    t, _ = await helpers.add_therapist(owner, first="No", last="Patients")
    rows = await owner.fetch(q.cohort_summary(True, False, False), t)
    assert [tuple(r) for r in rows] == [(True, 0, 0, 0, None, None, None, None, True)]  # (known therapist)
    unknown = await owner.fetch(q.cohort_summary(True, False, False), uuid.uuid4())
    assert [tuple(r) for r in unknown] == [(True, 0, 0, 0, None, None, None, None, False)]
    assert_same_summary(rows, await owner.fetch(reference_sql(True), t))


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_writers_lose_no_count(dsn, owner):
    """Six connections add sessions to the same therapist's patients and days at once, while a
    seventh moves one of those patients back and forth between two therapists."""
    therapists = dsn["therapists"]
    t1, t2 = therapists[3], therapists[4]
    patients = [
        r["patient_code"]
        for r in await owner.fetch(
            "SELECT patient_code FROM patients WHERE therapist_id = $1 ORDER BY patient_code LIMIT 3", t1
        )
    ]
    before = await owner.fetchrow(
        "SELECT session_count FROM cohort_summary_scores WHERE therapist_id IS NULL AND protocol_day IS NULL"
    )

    async def writer(seed: int) -> int:
        rnd = random.Random(seed)
        c = await asyncpg.connect(dsn["dsn"])
        try:
            for _ in range(8):
                async with c.transaction():
                    for _ in range(2):
                        await _session(c, rnd.choice(patients), rnd.choice((2, 3)), score=rnd.uniform(0, 100))
                await asyncio.sleep(0)
            return 16
        finally:
            await c.close()

    async def mover() -> None:
        c = await asyncpg.connect(dsn["dsn"])
        try:
            for i in range(6):
                await c.execute(
                    "UPDATE patients SET therapist_id = $2 WHERE patient_code = $1",
                    patients[0],
                    t2 if i % 2 == 0 else t1,
                )
                await asyncio.sleep(0.01)
        finally:
            await c.close()

    added = await asyncio.gather(*(writer(i) for i in range(6)), mover())
    after = await owner.fetchrow(
        "SELECT session_count FROM cohort_summary_scores WHERE therapist_id IS NULL AND protocol_day IS NULL"
    )
    assert after["session_count"] - before["session_count"] == sum(x for x in added if x)
    await _check(owner, therapists)


async def test_a_reassignment_waits_for_a_writer_of_the_patient(dsn, owner):
    """T1 writes a score of patient P (holds the summary lock); T2 moves P to another therapist
    meanwhile: T2 waits for T1's commit and then moves the group T1 wrote too."""
    therapists = dsn["therapists"]
    patient = dsn["patients"][50]
    old = await owner.fetchval("SELECT therapist_id FROM patients WHERE patient_code = $1", patient)
    new = next(t for t in therapists if t != old)
    c1, c2 = await asyncpg.connect(dsn["dsn"]), await asyncpg.connect(dsn["dsn"])
    try:
        tx1 = c1.transaction()
        await tx1.start()
        await _session(c1, patient, 14, score=77.0)  # a day of its own: a new group
        moving = asyncio.create_task(
            c2.execute("UPDATE patients SET therapist_id = $2 WHERE patient_code = $1", patient, new)
        )
        await helpers.wait_until(lambda: moving.done() or helpers.waiting_for_lock(owner, c2))
        assert not moving.done(), "the reassignment must wait for the writer's commit"
        await tx1.commit()
        await asyncio.wait_for(moving, 10)
    finally:
        await c1.close()
        await c2.close()
    row = await owner.fetchrow("SELECT * FROM cohort_summary_scores WHERE therapist_id = $1 AND protocol_day = 14", new)
    assert row is not None and row["session_count"] >= 1
    await _check(owner, therapists)


# --------------------------------------------------------------------------- RLS, grants, gRPC


async def test_rls_a_therapist_reads_only_their_own_rows(dsn, owner):
    t = dsn["therapists"][0]
    user = str(await owner.fetchval("SELECT user_id FROM therapists WHERE id = $1", t))
    c = await as_statistics(dsn["dsn"], "therapist", user)
    try:
        scopes = {r["therapist_id"] for r in await c.fetch("SELECT therapist_id FROM cohort_summary_scores")}
        assert scopes == {t}
        # Their own summary is the same as the owner's; the whole cohort is not theirs.
        assert_same_summary(
            await c.fetch(q.cohort_summary(True, False, False), t), await owner.fetch(reference_sql(True), t)
        )
        other = dsn["therapists"][1]
        assert [tuple(r) for r in await c.fetch(q.cohort_summary(True, False, False), other)] == [
            (True, 0, 0, 0, None, None, None, None, True)
        ]
        assert [tuple(r) for r in await c.fetch(q.cohort_summary(False, False, False))] == [
            (True, 0, 0, 0, None, None, None, None)
        ]
    finally:
        await c.close()
    for role in ("researcher", "admin", "service"):
        c = await as_statistics(dsn["dsn"], role, str(uuid.uuid4()))
        try:
            assert await c.fetchval("SELECT count(*) FROM cohort_summary_scores") == await owner.fetchval(
                "SELECT count(*) FROM cohort_summary_scores"
            )
        finally:
            await c.close()
    c = await as_statistics(dsn["dsn"], None)
    try:
        assert await c.fetchval("SELECT count(*) FROM cohort_summary_scores") == 0  # no role: nothing
    finally:
        await c.close()


async def test_grants_and_functions(owner):
    def priv(role, table, what):
        return owner.fetchval("SELECT has_table_privilege($1, $2, $3)", role, table, what)

    for role in ("ghostly_ingest", "ghostly_statistics", "ghostly_jit_signal", "ghostly_export"):
        for what in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert not await priv(role, "cohort_summary_scores", what), (role, what)
        assert await priv(role, "cohort_summary_scores", "SELECT") is (role == "ghostly_statistics"), role
        assert not await priv(role, "cohort_day_scores", "SELECT"), role
        for fn in (
            "cohort_summary_rebuild()",
            "cohort_summary_add(uuid[], integer[], bigint[], bigint[], numeric[], numeric[], numeric[], numeric[])",
        ):
            assert not await owner.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", role, fn), (role, fn)


async def test_through_grpc_as_researcher_and_therapist(dsn, owner, tmp_path):
    running = await start_service(SPEC, make_config(dsn["dsn"], tmp_path), port=0)
    try:
        async with grpc.aio.insecure_channel(running.address) as ch:
            stub = statistics_pb2_grpc.StatisticsServiceStub(ch)
            res = await stub.GetCohortSummary(pb.GetCohortSummaryRequest(), metadata=bearer("researcher"))
            ref = await owner.fetch(reference_sql(False))
            assert (res.session_count, res.patient_count) == (ref[0]["session_count"], ref[0]["patient_count"])
            assert res.mean_overall_score == pytest.approx(ref[0]["mean_overall"], rel=1e-12)
            assert [(d.protocol_day, d.session_count, d.patient_count) for d in res.days] == [
                (r["protocol_day"], r["session_count"], r["patient_count"]) for r in ref[1:]
            ]
            t = dsn["therapists"][2]
            user = str(await owner.fetchval("SELECT user_id FROM therapists WHERE id = $1", t))
            mine = await stub.GetCohortSummary(pb.GetCohortSummaryRequest(), metadata=bearer("therapist", subject=user))
            ref = await owner.fetch(reference_sql(True), t)
            assert (mine.session_count, mine.patient_count) == (ref[0]["session_count"], ref[0]["patient_count"])
            assert [
                (d.protocol_day, d.session_count, d.patient_count, round(d.mean_overall_score, 9)) for d in mine.days
            ] == [
                (r["protocol_day"], r["session_count"], r["patient_count"], round(r["mean_overall"], 9))
                for r in ref[1:]
            ]
    finally:
        await running.stop(0)
