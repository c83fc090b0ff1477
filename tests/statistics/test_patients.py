"""StatisticsService reads of the clinical workflow (migration 016) through real gRPC on loopback
against real PostgreSQL: GetPatient, ListPatients, ListPatientCalibrations, GetScoringConfig, and
the new fields of PerformanceScore (scoring_config_version, outcome) and SessionSettings
(calibration_id, calibration_source, value_sources).

Rows are inserted with SQL as the owner (the ingest side is built in parallel). The caseload
tests run against two servers: the service as deployed (role ghostly_statistics, RLS on) and
the same service connected as the table owner (RLS off), so the queries' own therapist filter
is tested on its own; patients/therapists/scoring_config have no RLS at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import asyncpg
import grpc
import pytest

from ghostly.common.v1 import common_pb2
from ghostly.statistics.v1 import statistics_pb2 as pb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.db.migrate import migrate
from libs.db.pool import init_connection
from libs.grpc_server import start_service
from libs.paging import encode
from services.statistics.server import SPEC
from tests import helpers
from tests.helpers import bearer, make_config
from tests.statistics.test_statistics_service import T0, add_session

UTC = dt.UTC
ROLES = ("role", "owner")  # the deployed read-only role (RLS) / the table owner (no RLS)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def servers(database_url, tmp_path_factory):
    cfg = make_config(database_url, tmp_path_factory.mktemp("stats-patients"))
    running = {
        "role": await start_service(SPEC, cfg, port=0),
        "owner": await start_service(dataclasses.replace(SPEC, dsn=lambda c: c.database_url), cfg, port=0),
    }
    channels = {k: grpc.aio.insecure_channel(s.address) for k, s in running.items()}
    yield {k: statistics_pb2_grpc.StatisticsServiceStub(ch) for k, ch in channels.items()}
    for ch in channels.values():
        await ch.close()
    for s in running.values():
        await s.stop(0)


@pytest.fixture(scope="module")
def stub(servers):
    return servers["role"]


@pytest.fixture(scope="module")
async def admin(database_url):
    c = await asyncpg.connect(database_url)
    await init_connection(c)
    yield c
    await c.close()


async def add_therapist(c, user: uuid.UUID | None = None) -> tuple[uuid.UUID, str]:
    tid, user = await helpers.add_therapist(c, user=user, first="Thera", last="Pist")
    return tid, str(user)


async def add_patient(c, therapist: uuid.UUID, code: str, *, active: bool = True) -> str:
    await helpers.add_patient(c, therapist, code, first="Pat", last=f"Last{code}", date_of_birth=dt.date(1944, 2, 29))
    if not active:
        await deactivate(c, code)
    return code


async def deactivate(c, code: str) -> None:
    await c.execute("UPDATE patients SET active = false, deactivated_at = now() WHERE patient_code = $1", code)


async def add_calibration(
    c,
    code: str,
    created_at: dt.datetime,
    *,
    cal_id: uuid.UUID | None = None,
    source: str = "therapist_entered",
    session: uuid.UUID | None = None,
    **values,
) -> uuid.UUID:
    cols = {
        "mvc_left_v": None,
        "mvc_right_v": None,
        "duration_threshold_left_s": None,
        "duration_threshold_right_s": None,
        "target_contractions": None,
        "bfr_target_pressure_aop": None,
        **values,
    }
    rule = (
        "median peak of the 3 strongest uncorrupted contractions per muscle" if source == "assessment_session" else None
    )
    return await c.fetchval(
        f"""INSERT INTO patient_calibrations (id, patient_code, {", ".join(cols)}, source, source_session_id,
                rule, created_by, created_by_role, created_at, notes)
            VALUES (COALESCE($1, gen_random_uuid()), $2, {", ".join(f"${i + 3}" for i in range(len(cols)))},
                    ${len(cols) + 3}, ${len(cols) + 4}, ${len(cols) + 5}, 'user-42', 'therapist',
                    ${len(cols) + 6}, ${len(cols) + 7}) RETURNING id""",
        cal_id,
        code,
        *cols.values(),
        source,
        session,
        rule,
        created_at,
        f"note {code}",
    )


@pytest.fixture(scope="module")
async def clinic(admin):
    """Therapist A: a1 (two calibrations, sessions), a2 (deactivated, one calibration), a3 (nothing).
    Therapist B: b1 (one calibration, a scored session with an outcome). Codes share a unique
    prefix so they sort a1 < a2 < a3 < b1."""
    pre = f"Q{uuid.uuid4().hex[:6].upper()}"
    ta, ua = await add_therapist(admin)
    tb, ub = await add_therapist(admin)
    a1 = await add_patient(admin, ta, f"{pre}A1")
    a2 = await add_patient(admin, ta, f"{pre}A2")
    a3 = await add_patient(admin, ta, f"{pre}A3")
    b1 = await add_patient(admin, tb, f"{pre}B1")
    s_a1 = [
        await add_session(admin, a1, date=T0, therapist=ta, day=1, score=60.0),
        await add_session(admin, a1, date=T0 + dt.timedelta(days=1), therapist=ta, day=2, score=65.0),
        await add_session(admin, a1, date=None, therapist=ta, status="pending", settings=False),
        await add_session(admin, a1, date=T0 + dt.timedelta(days=2), therapist=ta, status="failed", settings=False),
    ]
    old = await add_calibration(
        admin, a1, T0 - dt.timedelta(days=10), mvc_left_v=0.0004, mvc_right_v=0.0005, target_contractions=10
    )
    current = await add_calibration(
        admin,
        a1,
        T0 - dt.timedelta(days=1),
        source="assessment_session",
        session=s_a1[0],
        mvc_left_v=0.0006,
        mvc_right_v=0.0007,
        duration_threshold_left_s=2.5,
        duration_threshold_right_s=3.0,
        target_contractions=12,
        bfr_target_pressure_aop=50.0,
    )
    a2_cal = await add_calibration(admin, a2, T0 - dt.timedelta(days=3), mvc_left_v=0.001)
    await deactivate(admin, a2)
    b1_cal = await add_calibration(admin, b1, T0 - dt.timedelta(days=2), mvc_right_v=0.002)
    s_b1 = await add_session(admin, b1, date=T0, therapist=tb, day=1, score=70.0)
    await admin.execute(
        "INSERT INTO session_outcomes (session_id, rpe_post_session, game_points, game_points_max, "
        "bfr_actual_pressure_aop, recorded_by, recorded_at) "
        "VALUES ($1, 6, 640, 800, 51.5, 'user-b', $2)",
        s_b1,
        T0 + dt.timedelta(hours=1),
    )
    # a1's first session was analysed with the current calibration.
    await admin.execute(
        "UPDATE session_settings SET calibration_id = $2, value_sources = $3 WHERE session_id = $1",
        s_a1[0],
        current,
        {
            "mvc_left": "patient_calibration",
            "mvc_right": "session_request",
            "duration_left": "patient_calibration",
            "target_contractions": "default",
        },
    )
    # a1's second session has a partial outcome (RPE only).
    await admin.execute(
        "INSERT INTO session_outcomes (session_id, rpe_post_session, recorded_by) VALUES ($1, 3, 'user-a')", s_a1[1]
    )
    return {
        "pre": pre,
        "a": {"therapist": ta, "user": ua, "patients": [a1, a2, a3], "sessions": s_a1},
        "b": {"therapist": tb, "user": ub, "patients": [b1], "sessions": [s_b1]},
        "cal": {"old": old, "current": current, "a2": a2_cal, "b1": b1_cal},
    }


async def _code(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code(), info.value.details()


def therapist(clinic, who: str):
    return bearer("therapist", clinic[who]["user"])


async def walk(stub, req: pb.ListPatientsRequest, metadata=()) -> list[common_pb2.Patient]:
    out, token = [], ""
    while True:
        req.page_token = token
        page = await stub.ListPatients(req, metadata=metadata)
        assert len(page.patients) <= (req.page_size or 100)
        out += page.patients
        token = page.next_page_token
        if not token:
            return out


# --------------------------------------------------------------------------- GetPatient


async def test_get_patient_with_current_calibration_and_session_count(stub, clinic):
    a1 = clinic["a"]["patients"][0]
    p = await stub.GetPatient(pb.GetPatientRequest(patient_code=a1))
    assert p.patient_code == a1 and p.therapist_id == str(clinic["a"]["therapist"]) and uuid.UUID(p.id)
    assert (p.first_name, p.last_name, p.date_of_birth) == ("Pat", f"Last{a1}", "1944-02-29")
    assert p.active and p.HasField("created_at") and not p.HasField("deactivated_at")
    assert p.session_count == 4  # every processing state (pending, failed included)
    cal = p.current_calibration  # the newest of the two
    assert cal.id == str(clinic["cal"]["current"]) and cal.patient_code == a1
    assert cal.source == common_pb2.CALIBRATION_SOURCE_ASSESSMENT_SESSION
    assert cal.source_session_id == str(clinic["a"]["sessions"][0]) and cal.rule.startswith("median peak")
    assert (cal.mvc_left_v, cal.mvc_right_v) == (0.0006, 0.0007)
    assert (cal.duration_threshold_left_s, cal.duration_threshold_right_s) == (2.5, 3.0)
    assert cal.target_contractions == 12 and cal.bfr_target_pressure_aop == 50.0
    assert (cal.created_by, cal.created_by_role, cal.notes) == ("user-42", "therapist", f"note {a1}")
    assert cal.created_at.ToDatetime(tzinfo=UTC) == T0 - dt.timedelta(days=1)

    never = await stub.GetPatient(pb.GetPatientRequest(patient_code=clinic["a"]["patients"][2]))
    assert not never.HasField("current_calibration") and never.session_count == 0

    # A deactivated patient is still readable, with its history.
    gone = await stub.GetPatient(pb.GetPatientRequest(patient_code=clinic["a"]["patients"][1]))
    assert not gone.active and gone.HasField("deactivated_at")
    assert gone.current_calibration.id == str(clinic["cal"]["a2"])
    # Unset calibration values stay unset (no invented 0).
    assert gone.current_calibration.HasField("mvc_left_v") and not gone.current_calibration.HasField("mvc_right_v")
    assert not gone.current_calibration.HasField("target_contractions")
    assert gone.current_calibration.source == common_pb2.CALIBRATION_SOURCE_THERAPIST_ENTERED
    assert gone.current_calibration.source_session_id == "" and gone.current_calibration.rule == ""


async def test_current_calibration_ties_on_created_at_are_broken_by_id(stub, admin):
    t, _ = await add_therapist(admin)
    code = await add_patient(admin, t, f"QT{uuid.uuid4().hex[:8].upper()}")
    ids = sorted([uuid.uuid4(), uuid.uuid4()])
    for i in ids:
        await add_calibration(admin, code, T0, cal_id=i, mvc_left_v=0.001)
    p = await stub.GetPatient(pb.GetPatientRequest(patient_code=code))
    assert p.current_calibration.id == str(ids[-1])  # created_at DESC, id DESC
    listed = await stub.ListPatientCalibrations(pb.ListPatientCalibrationsRequest(patient_code=code))
    assert [c.id for c in listed.calibrations] == [str(i) for i in reversed(ids)]


@pytest.mark.parametrize("server", ROLES)
async def test_get_patient_not_found_and_invalid(servers, clinic, server):
    stub = servers[server]
    code, msg = await _code(stub.GetPatient(pb.GetPatientRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "patient_code" in msg
    unknown = f"{clinic['pre']}ZZ"
    code, msg = await _code(stub.GetPatient(pb.GetPatientRequest(patient_code=unknown)))
    assert code == grpc.StatusCode.NOT_FOUND and msg == f"patient {unknown!r} does not exist"
    # Another therapist's patient: exactly the answer an unknown code gets.
    b1 = clinic["b"]["patients"][0]
    code, msg = await _code(stub.GetPatient(pb.GetPatientRequest(patient_code=b1), metadata=therapist(clinic, "a")))
    assert code == grpc.StatusCode.NOT_FOUND and msg == f"patient {b1!r} does not exist"
    code, msg = await _code(
        stub.GetPatient(pb.GetPatientRequest(patient_code=unknown), metadata=therapist(clinic, "a"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and msg == f"patient {unknown!r} does not exist"
    # A therapist token whose subject is not a UUID has no caseload.
    code, _ = await _code(
        stub.GetPatient(pb.GetPatientRequest(patient_code=b1), metadata=bearer("therapist", "not-a-uuid"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("server", ROLES)
async def test_get_patient_caseload(servers, clinic, server):
    stub = servers[server]
    a1, b1 = clinic["a"]["patients"][0], clinic["b"]["patients"][0]
    own = await stub.GetPatient(pb.GetPatientRequest(patient_code=a1), metadata=therapist(clinic, "a"))
    assert own.patient_code == a1 and own.session_count == 4
    assert own.current_calibration.id == str(clinic["cal"]["current"])
    other = await stub.GetPatient(pb.GetPatientRequest(patient_code=b1), metadata=therapist(clinic, "b"))
    assert other.current_calibration.id == str(clinic["cal"]["b1"]) and other.session_count == 1
    for role in ("researcher", "admin", "service"):
        p = await stub.GetPatient(pb.GetPatientRequest(patient_code=b1), metadata=bearer(role))
        assert p.patient_code == b1 and p.current_calibration.id == str(clinic["cal"]["b1"])


# --------------------------------------------------------------------------- ListPatients


@pytest.mark.parametrize("server", ROLES)
async def test_list_patients_caseload_and_inactive(servers, clinic, server):
    stub = servers[server]
    a1, a2, a3 = clinic["a"]["patients"]
    me = therapist(clinic, "a")
    mine = await walk(stub, pb.ListPatientsRequest(page_size=1), me)
    assert [p.patient_code for p in mine] == [a1, a3]  # own caseload, active only, by code
    assert mine[0].current_calibration.id == str(clinic["cal"]["current"]) and mine[0].session_count == 4
    assert not mine[1].HasField("current_calibration")
    every = await walk(stub, pb.ListPatientsRequest(page_size=2, include_inactive=True), me)
    assert [p.patient_code for p in every] == [a1, a2, a3]
    assert not every[1].active and every[1].current_calibration.id == str(clinic["cal"]["a2"])
    # A therapist filtering on another therapist: nothing (the filters intersect).
    other = await stub.ListPatients(pb.ListPatientsRequest(therapist_id=str(clinic["b"]["therapist"])), metadata=me)
    assert list(other.patients) == [] and other.next_page_token == ""
    own = await stub.ListPatients(pb.ListPatientsRequest(therapist_id=str(clinic["a"]["therapist"])), metadata=me)
    assert [p.patient_code for p in own.patients] == [a1, a3]
    nobody = await stub.ListPatients(pb.ListPatientsRequest(), metadata=bearer("therapist", "not-a-uuid"))
    assert list(nobody.patients) == []
    unregistered = await stub.ListPatients(pb.ListPatientsRequest(), metadata=bearer("therapist", str(uuid.uuid4())))
    assert list(unregistered.patients) == []

    # Researchers (and admins) see every therapist's patients; therapist_id filters.
    for role in ("researcher", "admin"):
        seen = {p.patient_code for p in await walk(stub, pb.ListPatientsRequest(page_size=500), bearer(role))}
        assert {a1, a3, clinic["b"]["patients"][0]} <= seen and a2 not in seen
    by_a = await stub.ListPatients(
        pb.ListPatientsRequest(therapist_id=str(clinic["a"]["therapist"]), include_inactive=True),
        metadata=bearer("researcher"),
    )
    assert [p.patient_code for p in by_a.patients] == [a1, a2, a3]
    by_b = await stub.ListPatients(pb.ListPatientsRequest(therapist_id=str(clinic["b"]["therapist"])))
    assert [p.patient_code for p in by_b.patients] == clinic["b"]["patients"]
    unknown = await stub.ListPatients(pb.ListPatientsRequest(therapist_id=str(uuid.uuid4())))
    assert list(unknown.patients) == []


async def test_list_patients_default_page_size_and_cursor(stub, admin):
    t, user = await add_therapist(admin)
    pre = f"QP{uuid.uuid4().hex[:6].upper()}"
    await admin.execute(
        "INSERT INTO patients (therapist_id, patient_code, first_name, last_name, date_of_birth) "
        "SELECT $1, $2 || lpad(g::text, 3, '0'), 'P', 'Q', '1950-01-01' "
        "FROM generate_series(1, 101) g",
        t,
        pre,
    )
    req = pb.ListPatientsRequest(therapist_id=str(t))
    first = await stub.ListPatients(req)
    assert len(first.patients) == 100 and first.next_page_token  # 0 = 100
    assert [p.patient_code for p in first.patients] == [f"{pre}{i:03d}" for i in range(1, 101)]
    # Rows inserted between pages: before the cursor -> not repeated; after it -> listed.
    await add_patient(admin, t, f"{pre}000")
    await add_patient(admin, t, f"{pre}500")
    second = await stub.ListPatients(pb.ListPatientsRequest(therapist_id=str(t), page_token=first.next_page_token))
    assert [p.patient_code for p in second.patients] == [f"{pre}101", f"{pre}500"] and not second.next_page_token
    # The page size may change between pages; the filters may not.
    small = await stub.ListPatients(
        pb.ListPatientsRequest(therapist_id=str(t), page_size=1, page_token=first.next_page_token)
    )
    assert [p.patient_code for p in small.patients] == [f"{pre}101"] and small.next_page_token
    me = bearer("therapist", user)
    mine = await walk(stub, pb.ListPatientsRequest(page_size=500), me)
    assert len(mine) == 103
    # A deactivated patient disappears from the default listing only.
    await deactivate(admin, f"{pre}050")
    assert f"{pre}050" not in {p.patient_code for p in await walk(stub, pb.ListPatientsRequest(page_size=500), me)}
    assert f"{pre}050" in {
        p.patient_code for p in await walk(stub, pb.ListPatientsRequest(page_size=500, include_inactive=True), me)
    }


async def test_list_patients_invalid_arguments(stub, clinic):
    code, msg = await _code(stub.ListPatients(pb.ListPatientsRequest(page_size=501)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in msg and "501" in msg
    code, msg = await _code(stub.ListPatients(pb.ListPatientsRequest(therapist_id="nope")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "therapist_id" in msg
    for bad in ("garbage", "!!!", encode({"c": ""}, "x"), encode({"c": 5}, "x"), encode({"d": None, "i": "x"}, "x")):
        code, msg = await _code(stub.ListPatients(pb.ListPatientsRequest(page_token=bad)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in msg, bad
    # A token is bound to its filters (therapist, include_inactive).
    a = str(clinic["a"]["therapist"])
    page = await stub.ListPatients(pb.ListPatientsRequest(therapist_id=a, page_size=1))
    assert page.next_page_token
    for other in (
        pb.ListPatientsRequest(therapist_id=a, include_inactive=True),
        pb.ListPatientsRequest(therapist_id=str(clinic["b"]["therapist"])),
        pb.ListPatientsRequest(),
    ):
        other.page_token = page.next_page_token
        code, msg = await _code(stub.ListPatients(other))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "different filters" in msg
    # A ListSessions token is not a ListPatients token.
    sessions = await stub.ListSessions(pb.ListSessionsRequest(page_size=1))
    assert sessions.next_page_token
    code, _ = await _code(stub.ListPatients(pb.ListPatientsRequest(page_token=sessions.next_page_token)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- ListPatientCalibrations


@pytest.mark.parametrize("server", ROLES)
async def test_list_patient_calibrations(servers, clinic, server):
    stub = servers[server]
    a1, a2, a3 = clinic["a"]["patients"]
    b1 = clinic["b"]["patients"][0]
    res = await stub.ListPatientCalibrations(pb.ListPatientCalibrationsRequest(patient_code=a1))
    assert [c.id for c in res.calibrations] == [str(clinic["cal"]["current"]), str(clinic["cal"]["old"])]
    current = (await stub.GetPatient(pb.GetPatientRequest(patient_code=a1))).current_calibration
    assert res.calibrations[0] == current  # the first one is the current one
    old = res.calibrations[1]
    assert old.source == common_pb2.CALIBRATION_SOURCE_THERAPIST_ENTERED and old.target_contractions == 10
    assert (old.mvc_left_v, old.mvc_right_v) == (0.0004, 0.0005) and not old.HasField("duration_threshold_left_s")
    empty = await stub.ListPatientCalibrations(pb.ListPatientCalibrationsRequest(patient_code=a3))
    assert list(empty.calibrations) == []
    # Deactivated: the history is still there.
    hist = await stub.ListPatientCalibrations(pb.ListPatientCalibrationsRequest(patient_code=a2))
    assert [c.id for c in hist.calibrations] == [str(clinic["cal"]["a2"])]

    me = therapist(clinic, "a")
    own = await stub.ListPatientCalibrations(pb.ListPatientCalibrationsRequest(patient_code=a1), metadata=me)
    assert own == res
    code, msg = await _code(
        stub.ListPatientCalibrations(pb.ListPatientCalibrationsRequest(patient_code=b1), metadata=me)
    )
    assert code == grpc.StatusCode.NOT_FOUND and msg == f"patient {b1!r} does not exist"
    theirs = await stub.ListPatientCalibrations(
        pb.ListPatientCalibrationsRequest(patient_code=b1), metadata=therapist(clinic, "b")
    )
    assert [c.id for c in theirs.calibrations] == [str(clinic["cal"]["b1"])]
    unknown = f"{clinic['pre']}ZZ"
    code, msg = await _code(stub.ListPatientCalibrations(pb.ListPatientCalibrationsRequest(patient_code=unknown)))
    assert code == grpc.StatusCode.NOT_FOUND and msg == f"patient {unknown!r} does not exist"
    code, msg = await _code(stub.ListPatientCalibrations(pb.ListPatientCalibrationsRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "patient_code" in msg


# --------------------------------------------------------------------------- scores and settings


@pytest.mark.parametrize("server", ROLES)
async def test_performance_score_outcome_and_config_version(servers, clinic, server):
    stub = servers[server]
    s_a1 = clinic["a"]["sessions"]
    s_b1 = clinic["b"]["sessions"][0]
    plain = await stub.GetPerformanceScore(pb.SessionKey(session_id=str(s_a1[0])))
    assert plain.scoring_config_version == 1 and not plain.HasField("outcome")
    partial = await stub.GetPerformanceScore(pb.SessionKey(session_id=str(s_a1[1])))
    o = partial.outcome
    assert partial.HasField("outcome") and o.rpe_post_session == 3 and o.recorded_by == "user-a"
    assert not o.HasField("game_points") and not o.HasField("game_points_max")
    assert not o.HasField("bfr_actual_pressure_aop") and o.HasField("recorded_at")

    me_b = therapist(clinic, "b")
    full = await stub.GetPerformanceScore(pb.SessionKey(session_id=str(s_b1)), metadata=me_b)
    o = full.outcome
    assert (o.rpe_post_session, o.game_points, o.game_points_max, o.bfr_actual_pressure_aop) == (6, 640, 800, 51.5)
    assert o.recorded_by == "user-b" and o.recorded_at.ToDatetime(tzinfo=UTC) == T0 + dt.timedelta(hours=1)
    code, _ = await _code(
        stub.GetPerformanceScore(pb.SessionKey(session_id=str(s_b1)), metadata=therapist(clinic, "a"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    # The batch read carries the same message.
    batch = await stub.BatchGetSessionStatistics(
        pb.BatchGetSessionStatisticsRequest(session_ids=[str(s_b1), str(s_a1[0]), str(s_a1[1])]),
        metadata=bearer("researcher"),
    )
    assert [s.performance for s in batch.sessions] == [full, plain, partial]
    mine = await stub.BatchGetSessionStatistics(
        pb.BatchGetSessionStatisticsRequest(session_ids=[str(s_b1), str(s_a1[1])]), metadata=therapist(clinic, "a")
    )
    assert [s.performance for s in mine.sessions] == [partial] and list(mine.not_found) == [str(s_b1)]


@pytest.mark.parametrize("server", ROLES)
async def test_session_settings_calibration_fields(servers, clinic, server):
    stub = servers[server]
    s_a1 = clinic["a"]["sessions"]
    st = await stub.GetSessionSettings(pb.SessionKey(session_id=str(s_a1[0])), metadata=therapist(clinic, "a"))
    assert st.calibration_id == str(clinic["cal"]["current"]) and st.calibration_source == "assessment_session"
    assert dict(st.value_sources) == {
        "mvc_left": "patient_calibration",
        "mvc_right": "session_request",
        "duration_left": "patient_calibration",
        "target_contractions": "default",
    }
    none = await stub.GetSessionSettings(pb.SessionKey(session_id=str(s_a1[1])))
    assert none.calibration_id == "" and none.calibration_source == "" and dict(none.value_sources) == {}
    code, _ = await _code(
        stub.GetSessionSettings(pb.SessionKey(session_id=str(s_a1[0])), metadata=therapist(clinic, "b"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


# --------------------------------------------------------------------------- GetScoringConfig


@pytest.fixture
async def fresh(empty_database_url, tmp_path):
    """A database of its own: a new scoring configuration version becomes the current one for
    every reader, which the shared database's other tests must not see."""
    await migrate(empty_database_url)
    running = await start_service(SPEC, make_config(empty_database_url, tmp_path), port=0)
    c = await asyncpg.connect(empty_database_url)
    await init_connection(c)
    async with grpc.aio.insecure_channel(running.address) as ch:
        yield statistics_pb2_grpc.StatisticsServiceStub(ch), c
    await c.close()
    await running.stop(0)


async def test_get_scoring_config(fresh):
    stub, c = fresh
    v1 = await stub.GetScoringConfig(pb.GetScoringConfigRequest())
    assert v1.version == 1 and v1.created_by == "migration 016" and v1.notes and v1.HasField("created_at")
    assert v1.performance_weights == common_pb2.PerformanceWeights(
        compliance=0.40, symmetry=0.25, effort=0.20, game=0.15
    )
    w = v1.compliance_weights
    assert w.completion + w.intensity + w.duration == pytest.approx(1.0) and w.completion == pytest.approx(1 / 3)
    assert [(e.rpe, e.effort_score) for e in v1.rpe_effort] == [
        (0, 20),
        (1, 20),
        (2, 60),
        (3, 80),
        (4, 100),
        (5, 100),
        (6, 100),
        (7, 80),
        (8, 60),
        (9, 20),
        (10, 20),
    ]
    assert (v1.bfr_gate_low_aop, v1.bfr_gate_high_aop) == (45.0, 55.0) and list(v1.game_points_max) == []
    assert await stub.GetScoringConfig(pb.GetScoringConfigRequest(version=1)) == v1

    config = {
        "performance_weights": {"compliance": 0.5, "symmetry": 0.2, "effort": 0.2, "game": 0.1},
        "compliance_weights": {"completion": 0.5, "intensity": 0.25, "duration": 0.25},
        "rpe_effort": {str(k): 10 * k for k in (10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)},
        "bfr_gate": [40.0, 60.0],
        "game_points_max_by_level": {"10": 5000, "2": 800, "1": 500},
    }
    await c.execute(
        "INSERT INTO scoring_config (version, config, created_by, notes) "
        "VALUES (2, $1, 'admin-7', 'trial amendment 2')",
        config,
    )
    for req in (pb.GetScoringConfigRequest(), pb.GetScoringConfigRequest(version=2)):
        v2 = await stub.GetScoringConfig(req, metadata=bearer("therapist", str(uuid.uuid4())))  # every role
        assert v2.version == 2 and (v2.created_by, v2.notes) == ("admin-7", "trial amendment 2")
        assert v2.performance_weights == common_pb2.PerformanceWeights(
            compliance=0.5, symmetry=0.2, effort=0.2, game=0.1
        )
        assert v2.compliance_weights == common_pb2.ComplianceWeights(completion=0.5, intensity=0.25, duration=0.25)
        assert [(e.rpe, e.effort_score) for e in v2.rpe_effort] == [(k, 10.0 * k) for k in range(11)]
        assert (v2.bfr_gate_low_aop, v2.bfr_gate_high_aop) == (40.0, 60.0)
        assert [(g.level, g.max_points) for g in v2.game_points_max] == [(1, 500), (2, 800), (10, 5000)]
    assert (await stub.GetScoringConfig(pb.GetScoringConfigRequest(version=1))) == v1

    for version in (3, 2**31 - 1, 2**31, 2**32 - 1):
        code, msg = await _code(stub.GetScoringConfig(pb.GetScoringConfigRequest(version=version)))
        assert code == grpc.StatusCode.NOT_FOUND and str(version) in msg

    # Scores record the version they were computed with.
    t, _ = await add_therapist(c)
    p = await add_patient(c, t, "QV001")
    sid = await add_session(c, p, date=T0, score=50.0)
    assert (await stub.GetPerformanceScore(pb.SessionKey(session_id=str(sid)))).scoring_config_version == 1
    await c.execute("UPDATE performance_scores SET scoring_config_version = 2 WHERE session_id = $1", sid)
    assert (await stub.GetPerformanceScore(pb.SessionKey(session_id=str(sid)))).scoring_config_version == 2
