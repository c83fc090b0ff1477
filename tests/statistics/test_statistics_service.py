"""StatisticsService against real PostgreSQL through a real gRPC server on loopback.

Rows are inserted with SQL (the ingest service is built in parallel). The session database is
shared by the whole run, so every test uses its own therapists / patient codes.
"""

from __future__ import annotations

import datetime as dt
import statistics as pystats
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ghostly.common.v1 import common_pb2
from ghostly.statistics.v1 import statistics_pb2 as pb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.db.pool import init_connection
from libs.emg import AnalysisSettings
from libs.emg.scoring import bfr_gate
from libs.grpc_server import start_service
from services.statistics import db as stats_db
from services.statistics.messages import encode_page_token
from services.statistics.server import SPEC
from tests import helpers
from tests.helpers import make_config

UTC = dt.UTC
T0 = dt.datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- data helpers


def _tag() -> str:
    return uuid.uuid4().hex[:8].upper()


def ts(value: dt.datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


async def add_therapist(c: asyncpg.Connection) -> uuid.UUID:
    therapist, _ = await helpers.add_therapist(c, first="Ther", last="Apist")
    return therapist


async def add_patient(c: asyncpg.Connection, therapist: uuid.UUID, code: str | None = None) -> str:
    return await helpers.add_patient(
        c, therapist, code or f"S{_tag()}", first="Pat", last="Ient", date_of_birth=dt.date(1950, 1, 1)
    )


async def add_session(
    c: asyncpg.Connection,
    patient: str,
    *,
    date: dt.datetime | None,
    therapist: uuid.UUID | None = None,
    day: int | None = None,
    stype: str | None = "training",
    status: str = "completed",
    score: float | None = None,
    effort_excluded: bool = False,
    bfr_pressure: float | None = None,
    channels: int = 2,
    contractions: int = 0,
    settings: bool = True,
    bfr_row: bool = False,
) -> uuid.UUID:
    tag = uuid.uuid4().hex
    sid = await c.fetchval(
        """INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, patient_id, therapist_id,
               session_id, session_date, session_type, protocol_day, original_sampling_rate,
               original_duration_seconds, original_sample_count, channel_names, channel_count,
               processing_version, processing_status, processing_time_ms, processed_at, error_message)
           VALUES ($1, $2, 123456, $3, $4, $5, $6, $7, $8, 990, 175.5, 173745, $9, 2, '1.0.0', $10,
                   42, now(), $11) RETURNING id""",
        f"{patient}/{tag}.c3d",
        tag,
        patient,
        therapist,
        f"Ghostly_Emg_{tag[:8]}",
        date,
        stype,
        day,
        ["CH1 Raw", "CH2 Raw"],
        status,
        "bad C3D" if status == "failed" else None,
    )
    if status != "completed":
        return sid
    for i, side in enumerate(("left", "right")[:channels]):
        stat_id = await c.fetchval(
            """INSERT INTO emg_statistics (session_id, channel_name, side, mvc_peak_value, mvc_rms_value,
                   mvc_confidence_score, mvc_calculation_method, total_contractions,
                   good_contractions_intensity, good_contractions_duration, good_contractions_both,
                   completion_rate, intensity_rate, duration_rate, muscle_compliance_score,
                   signal_quality_score, noise_level_db, processing_confidence, processing_version)
               VALUES ($1, $2, $3, $4::float8, $4::float8 * 0.7, 0.9, 'backend_95percentile', 12, 10, 9, 8,
                       1.0, $5, 0.75, 0.8, 0.95, NULL, 0.9, '1.0.0') RETURNING id""",
            sid,
            f"CH{i + 1}",
            side,
            0.001 * (i + 1),
            10 / 12,
        )
        for k in range(contractions):
            await c.execute(
                """INSERT INTO emg_contractions (statistics_id, session_id, channel_name, contraction_index,
                       start_time_s, end_time_s, duration_s, peak_amplitude, mean_amplitude,
                       meets_intensity, meets_duration, is_good)
                   VALUES ($1, $2, $3, $4, $5::float8, $5::float8 + 2.5, 2.5, 0.0009, 0.0005, true, $6, $6)""",
                stat_id,
                sid,
                f"CH{i + 1}",
                k,
                10.0 * k,
                k % 2 == 0,
            )
    if score is not None:
        weights: dict[str, Any] = {"compliance": 0.4, "symmetry": 0.25, "effort": 0.2, "game": 0.15}
        if effort_excluded:
            weights = {
                "compliance": 0.5,
                "symmetry": 0.3125,
                "effort": 0,
                "game": 0.1875,
                "requested": weights,
                "excluded": {"effort": "rpe missing"},
            }
        await c.execute(
            """INSERT INTO performance_scores (session_id, overall_performance_score, compliance_score,
                   symmetry_score, effort_score, game_score, performance_weights, bfr_pressure_aop,
                   bfr_compliance_gate, rpe_post_session, game_points_achieved, game_points_maximum,
                   session_duration_minutes, left_muscle_completion_rate, right_muscle_completion_rate)
               VALUES ($1, $2, $3, $4, $5, 70, $6, $7, $8, $9, 700, 1000, 3.0, 1.0, 0.9)""",
            sid,
            score,
            min(100.0, score + 5),
            90.0,
            0.0 if effort_excluded else 80.0,
            weights,
            bfr_pressure,
            1.0 if bfr_pressure is None else bfr_gate(bfr_pressure, *AnalysisSettings().bfr_gate_range),
            None if effort_excluded else 5,
        )
    if settings:
        await c.execute(
            "INSERT INTO session_settings (session_id, mvc_calculation_method, mvc_user_left_quad) "
            "VALUES ($1, 'backend_calculated', 0.0012)",
            sid,
        )
    if bfr_row:
        await c.execute(
            """INSERT INTO bfr_monitoring (session_id, target_pressure_aop, actual_pressure_aop,
                   safety_gate_status, safety_violations_count, cuff_size, device_calibration_date)
               VALUES ($1, 50, 48.5, true, 0, 'M', '2024-01-15')""",
            sid,
        )
    return sid


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    running = await start_service(SPEC, make_config(database_url, tmp_path_factory.mktemp("stats")), port=0)
    yield running
    await running.stop(0)


@pytest.fixture(scope="module")
async def stub(server):
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield statistics_pb2_grpc.StatisticsServiceStub(ch)


@pytest.fixture(scope="module")
async def admin(database_url):
    c = await asyncpg.connect(database_url)
    await init_connection(c)  # JSON columns as Python objects, as the services see them
    yield c
    await c.close()


@pytest.fixture(scope="module")
async def world(admin):
    """One patient with a known series (for progress), a failed and an undated pending session."""
    t = await add_therapist(admin)
    p = await add_patient(admin, t)
    days = [(0, 1, 50.0), (1, 2, 60.0), (3, 4, 65.0), (7, 8, 80.0)]
    ids = []
    for offset, day, score in days:
        ids.append(
            await add_session(
                admin,
                p,
                date=T0 + dt.timedelta(days=offset),
                therapist=t,
                day=day,
                score=score,
                effort_excluded=(day == 2),
                bfr_pressure=50.0 if day == 4 else None,
                bfr_row=(day == 4),
                contractions=3 if day == 1 else 0,
            )
        )
    # Second game session on protocol day 8, two hours later: a session, not a new therapy day.
    ids.append(await add_session(admin, p, date=T0 + dt.timedelta(days=7, hours=2), therapist=t, day=8, score=70.0))
    failed = await add_session(
        admin, p, date=T0 + dt.timedelta(days=5), therapist=t, day=6, status="failed", settings=False
    )
    pending = await add_session(admin, p, date=None, therapist=t, status="pending", stype=None, settings=False)
    return {
        "therapist": t,
        "patient": p,
        "ids": ids,
        "failed": failed,
        "pending": pending,
        "dates": [T0 + dt.timedelta(days=o) for o, _, _ in days] + [T0 + dt.timedelta(days=7, hours=2)],
        "scores": [s for _, _, s in days] + [70.0],
    }


async def _code(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code(), info.value.details()


# --------------------------------------------------------------------------- single-session RPCs


async def test_get_session(stub, world):
    s = await stub.GetSession(pb.GetSessionRequest(session_id=str(world["ids"][0])))
    assert s.id == str(world["ids"][0]) and s.patient_id == world["patient"]
    assert s.therapist_id == str(world["therapist"]) and s.protocol_day == 1
    assert s.session_date.ToDatetime(tzinfo=UTC) == T0
    assert s.session_type == common_pb2.SESSION_TYPE_TRAINING
    assert s.processing_status == common_pb2.PROCESSING_STATUS_COMPLETED
    assert list(s.channel_names) == ["CH1 Raw", "CH2 Raw"] and s.channel_count == 2
    assert s.original_sampling_rate == 990 and s.original_sample_count == 173745
    assert s.file_size_bytes == 123456 and s.session_label.startswith("Ghostly_Emg_")
    assert s.HasField("created_at") and s.HasField("processed_at") and s.error_message == ""

    failed = await stub.GetSession(pb.GetSessionRequest(session_id=str(world["failed"])))
    assert failed.processing_status == common_pb2.PROCESSING_STATUS_FAILED
    assert failed.error_message == "bad C3D"
    pending = await stub.GetSession(pb.GetSessionRequest(session_id=str(world["pending"])))
    assert not pending.HasField("session_date") and pending.protocol_day == 0
    assert pending.session_type == common_pb2.SESSION_TYPE_UNSPECIFIED


@pytest.mark.parametrize(
    "rpc", ["GetSession", "GetPerformanceScore", "GetBfrMonitoring", "GetSessionSettings", "GetEmgStatistics"]
)
async def test_session_rpcs_validate_the_id(stub, rpc):
    req = (
        pb.GetSessionRequest
        if rpc == "GetSession"
        else pb.GetEmgStatisticsRequest
        if rpc == "GetEmgStatistics"
        else pb.SessionKey
    )
    code, msg = await _code(getattr(stub, rpc)(req(session_id="not-a-uuid")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "session_id" in msg and "not-a-uuid" in msg
    code, msg = await _code(getattr(stub, rpc)(req(session_id="")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "session_id" in msg
    unknown = str(uuid.uuid4())
    code, msg = await _code(getattr(stub, rpc)(req(session_id=unknown)))
    assert code == grpc.StatusCode.NOT_FOUND and unknown in msg


async def test_emg_statistics_and_contractions(stub, world):
    sid = str(world["ids"][0])
    res = await stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=sid))
    assert [c.channel_name for c in res.channels] == ["CH1", "CH2"]
    ch1 = res.channels[0]
    assert ch1.side == "left" and ch1.session_id == sid and ch1.total_contractions == 12
    assert ch1.good_contractions_both == 8 and ch1.intensity_rate == pytest.approx(10 / 12)
    assert ch1.mvc_peak_value == pytest.approx(0.001) and not ch1.HasField("noise_level_db")
    assert ch1.processing_pipeline == "20Hz->Rectify->10Hz->RMS" and ch1.mvc_threshold_percentage == 0.75
    assert len(ch1.contractions) == 0  # not requested

    res = await stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=sid, include_contractions=True))
    for ch in res.channels:
        assert [c.index for c in ch.contractions] == [0, 1, 2]
        assert [c.good for c in ch.contractions] == [True, False, True]
        c1 = ch.contractions[1]
        assert (c1.start_s, c1.end_s, c1.duration_s) == (10.0, 12.5, 2.5)
        assert c1.meets_intensity and not c1.meets_duration

    only = await stub.GetEmgStatistics(
        pb.GetEmgStatisticsRequest(session_id=sid, channels=["CH2"], include_contractions=True)
    )
    assert [c.channel_name for c in only.channels] == ["CH2"] and len(only.channels[0].contractions) == 3

    code, msg = await _code(stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=sid, channels=["CH9"])))
    assert code == grpc.StatusCode.NOT_FOUND and "CH9" in msg
    failed = await stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=str(world["failed"])))
    assert list(failed.channels) == []


async def test_signal_flags_usable_and_masked_contractions(stub, admin):
    """Migration 015 columns, served by GetEmgStatistics (with and without contractions) and
    BatchGetSessionStatistics; rows that never set them read as the defaults."""
    t = await add_therapist(admin)
    p = await add_patient(admin, t)
    sid = await add_session(admin, p, date=T0, therapist=t, score=55.0, contractions=3)
    plain = await add_session(admin, p, date=T0 + dt.timedelta(hours=1), therapist=t, score=60.0, contractions=1)
    await admin.execute(
        "UPDATE emg_statistics SET signal_flags = '{mains_interference,dropout,no_usable_emg}', "
        "usable = false WHERE session_id = $1 AND channel_name = 'CH1'",
        sid,
    )
    await admin.execute(
        "UPDATE emg_contractions SET partially_masked = true, masked_s = 0.625 "
        "WHERE session_id = $1 AND channel_name = 'CH2' AND contraction_index = 1",
        sid,
    )

    res = await stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=str(sid), include_contractions=True))
    ch1, ch2 = res.channels
    assert list(ch1.signal_flags) == ["mains_interference", "dropout", "no_usable_emg"] and ch1.usable is False
    assert list(ch2.signal_flags) == [] and ch2.usable is True
    assert [(c.partially_masked, c.masked_s) for c in ch2.contractions] == [(False, 0.0), (True, 0.625), (False, 0.0)]
    assert all(not c.partially_masked and c.masked_s == 0.0 for c in ch1.contractions)
    only = await stub.GetEmgStatistics(
        pb.GetEmgStatisticsRequest(session_id=str(sid), channels=["CH2"], include_contractions=True)
    )
    assert only.channels[0].contractions[1].partially_masked and only.channels[0].contractions[1].masked_s == 0.625

    batch = await stub.BatchGetSessionStatistics(
        pb.BatchGetSessionStatisticsRequest(session_ids=[str(sid), str(plain)])
    )
    flagged, unflagged = batch.sessions
    assert [list(c.signal_flags) for c in flagged.channels] == [["mains_interference", "dropout", "no_usable_emg"], []]
    assert [c.usable for c in flagged.channels] == [False, True]
    assert [list(c.signal_flags) for c in unflagged.channels] == [[], []]
    assert all(c.usable for c in unflagged.channels)
    defaults = await stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=str(plain), include_contractions=True))
    assert all(not k.partially_masked and k.masked_s == 0.0 for c in defaults.channels for k in c.contractions)


async def test_performance_score_full_and_excluded_components(stub, world):
    full = await stub.GetPerformanceScore(pb.SessionKey(session_id=str(world["ids"][0])))
    assert full.overall_performance_score == 50 and full.compliance_score == 55
    assert full.HasField("effort_score") and full.effort_score == 80
    assert full.HasField("game_score") and full.game_score == 70
    assert full.effective_weights == common_pb2.PerformanceWeights(compliance=0.4, symmetry=0.25, effort=0.2, game=0.15)
    assert full.requested_weights == full.effective_weights and dict(full.excluded_components) == {}
    assert full.rpe_post_session == 5 and full.game_points_achieved == 700
    assert full.left_muscle_completion_rate == 1.0 and not full.HasField("left_muscle_intensity_rate")
    # BFR pressure unknown: the gate was not evaluated -> unset (not "compliant").
    assert not full.HasField("bfr_pressure_aop") and not full.HasField("bfr_compliance_gate")

    excl = await stub.GetPerformanceScore(pb.SessionKey(session_id=str(world["ids"][1])))
    assert not excl.HasField("effort_score") and excl.game_score == 70
    assert dict(excl.excluded_components) == {"effort": "rpe missing"}
    assert excl.effective_weights == common_pb2.PerformanceWeights(
        compliance=0.5, symmetry=0.3125, effort=0, game=0.1875
    )
    assert excl.requested_weights == full.effective_weights
    assert not excl.HasField("rpe_post_session")

    bfr = await stub.GetPerformanceScore(pb.SessionKey(session_id=str(world["ids"][2])))
    assert bfr.bfr_pressure_aop == 50.0 and bfr.HasField("bfr_compliance_gate") and bfr.bfr_compliance_gate == 1.0

    code, msg = await _code(stub.GetPerformanceScore(pb.SessionKey(session_id=str(world["failed"]))))
    assert code == grpc.StatusCode.NOT_FOUND and str(world["failed"]) in msg and "failed" in msg


async def test_a_session_without_status_is_not_reported_missing(stub, admin):
    p = await add_patient(admin, await add_therapist(admin))
    sid = await add_session(admin, p, date=None, settings=False)
    await admin.execute("UPDATE therapy_sessions SET processing_status = NULL WHERE id = $1", sid)
    code, msg = await _code(stub.GetPerformanceScore(pb.SessionKey(session_id=str(sid))))
    assert code == grpc.StatusCode.NOT_FOUND and "has no performance score" in msg and "unknown" in msg
    gone = uuid.uuid4()
    code, msg = await _code(stub.GetPerformanceScore(pb.SessionKey(session_id=str(gone))))
    assert code == grpc.StatusCode.NOT_FOUND and f"session {gone} does not exist" in msg


async def test_bfr_monitoring_and_settings(stub, world):
    bfr = await stub.GetBfrMonitoring(pb.SessionKey(session_id=str(world["ids"][2])))
    assert bfr.session_id == str(world["ids"][2]) and bfr.actual_pressure_aop == 48.5
    assert bfr.safety_gate_status and bfr.cuff_size == "M" and bfr.device_calibration_date == "2024-01-15"
    assert not bfr.HasField("pressure_stability_coefficient") and bfr.monitoring_frequency_hz == 1.0
    code, msg = await _code(stub.GetBfrMonitoring(pb.SessionKey(session_id=str(world["ids"][0]))))
    assert code == grpc.StatusCode.NOT_FOUND and "BFR" in msg

    st = await stub.GetSessionSettings(pb.SessionKey(session_id=str(world["ids"][0])))
    assert st.mvc_calculation_method == "backend_calculated" and st.mvc_threshold_percentage == 0.75
    assert st.mvc_user_left_quad == 0.0012 and not st.HasField("mvc_user_right_quad")
    assert st.performance_weights == common_pb2.PerformanceWeights(compliance=0.4, symmetry=0.25, effort=0.2, game=0.15)
    assert st.target_contractions_per_muscle == 12 and st.bfr_enabled and st.bfr_target_pressure_aop == 50
    assert st.rest_period_between_sets_seconds == 120 and st.game_difficulty_level == 1
    code, msg = await _code(stub.GetSessionSettings(pb.SessionKey(session_id=str(world["failed"]))))
    assert code == grpc.StatusCode.NOT_FOUND and str(world["failed"]) in msg


# --------------------------------------------------------------------------- progress


async def test_patient_progress_series_and_aggregates(stub, world):
    res = await stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=world["patient"]))
    assert res.patient_id == world["patient"]
    # Completed sessions only, oldest first (failed and pending are left out).
    assert [p.session_id for p in res.points] == [str(i) for i in world["ids"]]
    assert [p.overall_performance_score for p in res.points] == world["scores"]
    assert [p.protocol_day for p in res.points] == [1, 2, 4, 8, 8]
    p0, p1 = res.points[0], res.points[1]
    assert p0.session_date.ToDatetime(tzinfo=UTC) == T0 and p0.compliance_score == 55
    assert p0.effort_score == 80 and p0.game_score == 70
    assert not p1.HasField("effort_score") and p1.HasField("game_score")  # excluded, not 0
    assert set(p0.muscles) == {"left", "right"}
    left = p0.muscles["left"]
    assert left.channel_name == "CH1" and left.mvc_peak_value == pytest.approx(0.001)
    assert (left.total_contractions, left.good_contractions_both) == (12, 8)
    assert left.intensity_rate == pytest.approx(10 / 12) and left.muscle_compliance_score == 0.8

    # Least squares by hand: x = days since the first session, y = P_overall.
    xs = [(d - T0).total_seconds() / 86400 for d in world["dates"]]
    ys = world["scores"]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    assert res.trend_slope_per_day == pytest.approx(slope, rel=1e-9)
    assert slope == pytest.approx(pystats.linear_regression(xs, ys).slope)
    assert (res.first_score, res.last_score, res.best_score) == (50.0, 70.0, 80.0)
    assert res.best_session_id == str(world["ids"][3])
    # Therapy days done: protocol days 1, 2, 4, 8 (two games on day 8) -> 4 of 10.
    assert (res.sessions_done, res.sessions_expected) == (4, 10)
    assert res.adherence_rate == pytest.approx(0.4)

    window = await stub.GetPatientProgress(
        pb.GetPatientProgressRequest(
            patient_id=world["patient"], date_from=ts(T0 + dt.timedelta(days=1)), date_to=ts(T0 + dt.timedelta(days=7))
        )
    )
    assert [p.protocol_day for p in window.points] == [2, 4]
    assert window.trend_slope_per_day == pytest.approx((65 - 60) / 2)
    assert (window.first_score, window.last_score, window.best_score) == (60, 65, 65)
    only_from = await stub.GetPatientProgress(
        pb.GetPatientProgressRequest(patient_id=world["patient"], date_from=ts(T0 + dt.timedelta(days=7)))
    )
    assert [p.overall_performance_score for p in only_from.points] == [80, 70]
    only_to = await stub.GetPatientProgress(
        pb.GetPatientProgressRequest(patient_id=world["patient"], date_to=ts(T0 + dt.timedelta(days=1)))
    )
    assert len(only_to.points) == 1
    assert not only_to.HasField("trend_slope_per_day")  # < 2 sessions
    assert only_to.first_score == only_to.last_score == only_to.best_score == 50
    assert only_to.sessions_done == 1 and only_to.adherence_rate == pytest.approx(0.1)


async def test_patient_progress_empty_unknown_and_invalid(stub, admin):
    t = await add_therapist(admin)
    p = await add_patient(admin, t)
    empty = await stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=p))
    assert list(empty.points) == [] and not empty.HasField("first_score")
    assert not empty.HasField("trend_slope_per_day") and empty.sessions_done == 0
    assert empty.sessions_expected == 10 and empty.adherence_rate == 0
    code, msg = await _code(stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id="NOPE-" + _tag())))
    assert code == grpc.StatusCode.NOT_FOUND and "NOPE-" in msg
    code, msg = await _code(stub.GetPatientProgress(pb.GetPatientProgressRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "patient_id" in msg
    code, msg = await _code(
        stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=p, date_from=ts(T0), date_to=ts(T0)))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "date_from" in msg


async def test_patient_progress_adherence_is_capped(stub, admin):
    t = await add_therapist(admin)
    p = await add_patient(admin, t)
    for day in range(1, 13):
        await add_session(admin, p, date=T0 + dt.timedelta(days=day - 1), day=day, score=60.0 + day)
    res = await stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=p))
    assert len(res.points) == 12 and res.sessions_done == 12 and res.adherence_rate == 1.0
    assert res.trend_slope_per_day == pytest.approx(1.0)


# --------------------------------------------------------------------------- list + pagination


def _order_key(s: pb.Session):
    has = s.HasField("session_date")
    return (has, s.session_date.seconds * 10**9 + s.session_date.nanos if has else 0, s.id)


async def _walk(stub, req: pb.ListSessionsRequest, between=None) -> list[pb.Session]:
    out, token, pages = [], "", 0
    while True:
        req.page_token = token
        page = await stub.ListSessions(req)
        out += page.sessions
        pages += 1
        assert len(page.sessions) <= (req.page_size or 50)
        token = page.next_page_token
        if not token:
            return out
        if between is not None:
            await between(pages)


async def test_list_sessions_pagination_is_stable_with_inserts_between_pages(stub, admin):
    t = await add_therapist(admin)
    p = await add_patient(admin, t)
    expected = []
    for i in range(23):
        # Dates repeat (ties broken by id), two sessions without a date (listed last).
        date = None if i % 8 == 7 else T0 + dt.timedelta(days=i // 3)
        expected.append(await add_session(admin, p, date=date, score=50, channels=0, settings=False))
    inserted = {}

    async def insert(page_no):
        if page_no == 1:
            # Newer than anything already listed: not on later pages (it sorts before the cursor).
            inserted["newer"] = await add_session(admin, p, date=T0 + dt.timedelta(days=100), channels=0)
            # Older than the cursor: must show up on a later page.
            inserted["older"] = await add_session(admin, p, date=T0 - dt.timedelta(days=100), channels=0)
        if page_no == 3:
            inserted["undated"] = await add_session(admin, p, date=None, channels=0)

    got = await _walk(stub, pb.ListSessionsRequest(patient_id=p, page_size=4), between=insert)
    ids = [s.id for s in got]
    assert len(ids) == len(set(ids)), "duplicates across pages"
    want = set(map(str, expected)) | {str(inserted["older"]), str(inserted["undated"])}
    assert set(ids) == want, "missed or unexpected rows"
    keys = [_order_key(s) for s in got]
    assert keys == sorted(keys, reverse=True), "not ordered (session_date DESC NULLS LAST, id DESC)"
    assert [s.HasField("session_date") for s in got][-4:] == [True, False, False, False]

    # A fresh walk with another page size sees the same order.
    again = await _walk(stub, pb.ListSessionsRequest(patient_id=p, page_size=500))
    assert [s.id for s in again][:1] == [str(inserted["newer"])]
    assert [s.id for s in again][1:] == ids
    one = await _walk(stub, pb.ListSessionsRequest(patient_id=p, page_size=1))
    assert [s.id for s in one] == [s.id for s in again]


async def test_list_sessions_filters(stub, admin):
    t1, t2 = await add_therapist(admin), await add_therapist(admin)
    p = await add_patient(admin, t1)
    a = await add_session(admin, p, date=T0, therapist=t1, stype="baseline", score=40)
    b = await add_session(admin, p, date=T0 + dt.timedelta(days=1), therapist=t1, stype="training", score=50)
    c = await add_session(admin, p, date=T0 + dt.timedelta(days=2), therapist=t2, stype="assessment", status="failed")
    d = await add_session(admin, p, date=None, therapist=t2, stype="training", status="pending")

    async def ids(**kw):
        return [s.id for s in (await stub.ListSessions(pb.ListSessionsRequest(**kw))).sessions]

    assert await ids(patient_id=p) == [str(c), str(b), str(a), str(d)]
    assert await ids(therapist_id=str(t1)) == [str(b), str(a)]
    assert await ids(therapist_id=str(t2)) == [str(c), str(d)]
    assert await ids(patient_id=p, session_type=common_pb2.SESSION_TYPE_TRAINING) == [str(b), str(d)]
    assert await ids(patient_id=p, processing_status=common_pb2.PROCESSING_STATUS_FAILED) == [str(c)]
    assert await ids(patient_id=p, processing_status=common_pb2.PROCESSING_STATUS_PENDING) == [str(d)]
    # Date range: [from, to), undated sessions excluded.
    assert await ids(patient_id=p, date_from=ts(T0 + dt.timedelta(days=1))) == [str(c), str(b)]
    assert await ids(patient_id=p, date_to=ts(T0 + dt.timedelta(days=2))) == [str(b), str(a)]
    assert await ids(patient_id=p, date_from=ts(T0), date_to=ts(T0 + dt.timedelta(days=1))) == [str(a)]
    assert await ids(
        therapist_id=str(t1),
        session_type=common_pb2.SESSION_TYPE_BASELINE,
        processing_status=common_pb2.PROCESSING_STATUS_COMPLETED,
    ) == [str(a)]
    assert await ids(patient_id="NOBODY-" + _tag()) == []
    # Unfiltered list: newest first, across everything.
    everything = await _walk(stub, pb.ListSessionsRequest(page_size=500))
    keys = [_order_key(s) for s in everything]
    assert keys == sorted(keys, reverse=True) and len(set(s.id for s in everything)) == len(everything)
    assert {str(a), str(b), str(c), str(d)} <= {s.id for s in everything}


async def test_list_sessions_errors(stub, admin):
    t = await add_therapist(admin)
    p = await add_patient(admin, t)
    for i in range(3):
        await add_session(admin, p, date=T0 + dt.timedelta(days=i), channels=0, settings=False)
    page = await stub.ListSessions(pb.ListSessionsRequest(patient_id=p, page_size=1))
    assert page.next_page_token

    async def err(**kw):
        return await _code(stub.ListSessions(pb.ListSessionsRequest(**kw)))

    code, msg = await err(patient_id=p + "X", page_size=1, page_token=page.next_page_token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in msg and "filters" in msg
    code, msg = await err(
        patient_id=p, page_size=1, page_token=page.next_page_token, session_type=common_pb2.SESSION_TYPE_TRAINING
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "filters" in msg
    # Same filters but another page size is fine.
    ok = await stub.ListSessions(pb.ListSessionsRequest(patient_id=p, page_size=10, page_token=page.next_page_token))
    assert len(ok.sessions) == 2 and not ok.next_page_token
    for bad in ("garbage!!", "e30", encode_page_token(0, "not-a-uuid", "x")):
        code, msg = await err(patient_id=p, page_token=bad)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in msg
    code, msg = await err(page_size=501)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in msg
    code, msg = await err(therapist_id="nope")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "therapist_id" in msg
    code, msg = await err(date_from=ts(T0), date_to=ts(T0 - dt.timedelta(seconds=1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "date_from" in msg
    code, msg = await err(session_type=42)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "session_type" in msg
    code, msg = await err(processing_status=42)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "processing_status" in msg


# --------------------------------------------------------------------------- cohort


async def test_cohort_summary(stub, admin):
    t = await add_therapist(admin)
    other = await add_therapist(admin)
    p1, p2 = await add_patient(admin, t), await add_patient(admin, t)
    q = await add_patient(admin, other)
    # Therapist t's patients: day 1 -> 40, 60 (p1), 50 (p2); day 2 -> 70 (p2); failed day 2 ignored;
    # one session without a protocol day (reported as day 0).
    await add_session(admin, p1, date=T0, day=1, score=40)
    await add_session(admin, p1, date=T0 + dt.timedelta(hours=1), day=1, score=60)
    await add_session(admin, p2, date=T0, day=1, score=50)
    await add_session(admin, p2, date=T0 + dt.timedelta(days=1), day=2, score=70)
    await add_session(admin, p2, date=T0 + dt.timedelta(days=1, hours=1), day=2, status="failed")
    await add_session(admin, p1, date=T0 + dt.timedelta(days=3), day=None, score=90)
    await add_session(admin, q, date=T0, day=1, score=10)  # another therapist's patient

    res = await stub.GetCohortSummary(pb.GetCohortSummaryRequest(therapist_id=str(t)))
    days = {d.protocol_day: d for d in res.days}
    assert [d.protocol_day for d in res.days] == [0, 1, 2]
    d1 = days[1]
    assert (d1.session_count, d1.patient_count) == (3, 2)
    assert d1.mean_overall_score == pytest.approx(50)
    assert d1.stddev_overall_score == pytest.approx(pystats.stdev([40, 60, 50]))
    assert d1.mean_compliance_score == pytest.approx(55) and d1.mean_symmetry_score == 90
    assert (days[2].session_count, days[2].patient_count, days[2].mean_overall_score) == (1, 1, 70)
    assert days[2].stddev_overall_score == 0
    assert (days[0].session_count, days[0].mean_overall_score) == (1, 90)
    assert (res.patient_count, res.session_count) == (2, 5)
    assert res.mean_overall_score == pytest.approx((40 + 60 + 50 + 70 + 90) / 5)

    window = await stub.GetCohortSummary(
        pb.GetCohortSummaryRequest(
            therapist_id=str(t), date_from=ts(T0 + dt.timedelta(minutes=30)), date_to=ts(T0 + dt.timedelta(days=2))
        )
    )
    assert [(d.protocol_day, d.session_count) for d in window.days] == [(1, 1), (2, 1)]
    assert window.session_count == 2 and window.mean_overall_score == pytest.approx(65)
    # Without dates the first level is pre-computed (cohort_day_scores); with a window covering
    # everything the sessions are aggregated: both paths give the same summary.
    wide = await stub.GetCohortSummary(
        pb.GetCohortSummaryRequest(
            therapist_id=str(t), date_from=ts(T0 - dt.timedelta(days=1)), date_to=ts(T0 + dt.timedelta(days=30))
        )
    )
    assert [(d.protocol_day, d.session_count, d.patient_count) for d in wide.days] == [
        (d.protocol_day, d.session_count, d.patient_count) for d in res.days
    ]
    for a, b in zip(wide.days, res.days):
        assert (
            a.mean_overall_score,
            a.stddev_overall_score,
            a.mean_compliance_score,
            a.mean_symmetry_score,
        ) == pytest.approx(
            (b.mean_overall_score, b.stddev_overall_score, b.mean_compliance_score, b.mean_symmetry_score)
        )
    assert (wide.patient_count, wide.session_count) == (res.patient_count, res.session_count)

    everyone = await stub.GetCohortSummary(pb.GetCohortSummaryRequest())
    assert everyone.session_count >= 6 and everyone.patient_count >= 3
    assert sum(d.session_count for d in everyone.days) == everyone.session_count

    lonely = await add_therapist(admin)
    empty = await stub.GetCohortSummary(pb.GetCohortSummaryRequest(therapist_id=str(lonely)))
    assert list(empty.days) == [] and empty.session_count == 0 and empty.patient_count == 0
    unknown = str(uuid.uuid4())
    code, msg = await _code(stub.GetCohortSummary(pb.GetCohortSummaryRequest(therapist_id=unknown)))
    assert code == grpc.StatusCode.NOT_FOUND and unknown in msg
    code, msg = await _code(stub.GetCohortSummary(pb.GetCohortSummaryRequest(therapist_id="x")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "therapist_id" in msg


# --------------------------------------------------------------------------- roles


def test_statistics_dsn_swaps_the_user_unless_explicit():
    cfg = make_config("postgresql://admin:secret@db.example:5433/ghostly?sslmode=require&user=admin")
    assert stats_db.statistics_dsn(cfg) == "postgresql://ghostly_statistics@db.example:5433/ghostly?sslmode=require"
    cfg = make_config("postgresql://127.0.0.1/ghostly")
    assert stats_db.statistics_dsn(cfg) == "postgresql://ghostly_statistics@127.0.0.1/ghostly"
    replica = "postgresql://reader:pw@replica:5432/ghostly"
    cfg = make_config("postgresql://admin@primary/ghostly", statistics_database_url=replica)
    assert stats_db.statistics_dsn(cfg) == replica
    assert stats_db.statistics_dsn(make_config(None)) is None


async def test_service_connects_as_read_only_role(server, world):
    pool = server.context.pool
    async with pool.acquire() as c:
        assert await c.fetchval("SELECT current_user") == "ghostly_statistics"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await c.execute(
                "UPDATE performance_scores SET overall_performance_score = 0 WHERE session_id = $1", world["ids"][0]
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await c.execute("DELETE FROM therapy_sessions WHERE id = $1", world["ids"][0])
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await c.execute(
                "INSERT INTO emg_contractions (statistics_id, session_id, channel_name, "
                "contraction_index, start_time_s, end_time_s, duration_s, peak_amplitude, "
                "mean_amplitude, meets_intensity, meets_duration, is_good) "
                "SELECT id, session_id, channel_name, 99, 0, 1, 1, 0, 0, true, true, true "
                "FROM emg_statistics LIMIT 1"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await c.fetch("SELECT * FROM export_history LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await c.execute("CREATE TABLE sneaky (x int)")


async def test_explicit_statistics_url_is_used_as_is(database_url, tmp_path):
    explicit = database_url + "?application_name=replica-test"
    running = await start_service(SPEC, make_config(database_url, tmp_path, statistics_database_url=explicit), port=0)
    try:
        pool = running.context.pool
        assert pool is not None
        async with pool.acquire() as c:
            assert await c.fetchval("SELECT current_user") == "postgres"
    finally:
        await running.stop(0)


async def test_role_privileges(conn):
    def priv(role, table, what):
        return conn.fetchval("SELECT has_table_privilege($1, $2, $3)", role, table, what)

    tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    readable = {
        "therapy_sessions",
        "emg_statistics",
        "emg_contractions",
        "performance_scores",
        "bfr_monitoring",
        "session_settings",
        "patients",
        "therapists",
        "cohort_summary_scores",
        "patient_calibrations",
        "session_outcomes",
        "scoring_config",
    }
    for table in tables:
        for what in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert not await priv("ghostly_statistics", table, what), (table, what)
        assert await priv("ghostly_statistics", table, "SELECT") == (table in readable), table
    assert await priv("ghostly_ingest", "performance_scores", "INSERT")
    assert not await priv("ghostly_ingest", "emg_contractions", "DELETE")  # cascades from emg_statistics (019)
    assert await priv("ghostly_ingest", "emg_statistics", "DELETE")
    assert not await priv("ghostly_ingest", "export_history", "INSERT")
    assert await priv("ghostly_jit_signal", "signal_processing_cache", "INSERT")
    assert not await priv("ghostly_jit_signal", "performance_scores", "UPDATE")
    assert await priv("ghostly_export", "export_history", "INSERT")
    assert not await priv("ghostly_export", "export_history", "DELETE")
    assert not await priv("ghostly_export", "therapy_sessions", "UPDATE")
    # A table created later is not readable or writable by any service role until granted.
    await conn.execute("CREATE TABLE later_table (x int)")
    for role in ("ghostly_ingest", "ghostly_statistics", "ghostly_jit_signal", "ghostly_export"):
        for what in ("SELECT", "INSERT"):
            assert not await priv(role, "later_table", what)
    roles = await conn.fetch(
        "SELECT rolname, rolcanlogin, rolsuper, rolpassword IS NULL AS nopw "
        "FROM pg_authid WHERE rolname LIKE 'ghostly\\_%' ORDER BY rolname"
    )
    assert [r["rolname"] for r in roles] == [
        "ghostly_export",
        "ghostly_ingest",
        "ghostly_jit_signal",
        "ghostly_statistics",
    ]
    assert all(r["rolcanlogin"] and not r["rolsuper"] and r["nopw"] for r in roles)


async def test_roles_migration_is_repeatable_on_another_database(empty_database_url):
    """Roles already exist cluster-wide: a second database migrates cleanly and gets its grants."""
    from libs.db.migrate import migrate

    await migrate(empty_database_url)
    c = await asyncpg.connect(stats_db.with_user(empty_database_url, "ghostly_statistics"))
    try:
        assert await c.fetchval("SELECT count(*) FROM therapy_sessions") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await c.execute("DELETE FROM therapy_sessions")
    finally:
        await c.close()


async def test_batch_get_session_statistics(stub, world):
    """The export's batch read: same content as the per-session RPCs, unknown ids listed."""
    ids = [str(i) for i in world["ids"]] + [str(world["failed"])]
    missing = str(uuid.uuid4())
    reply = await stub.BatchGetSessionStatistics(
        pb.BatchGetSessionStatisticsRequest(session_ids=[*ids, missing, ids[0]])
    )
    assert [s.session.id for s in reply.sessions] == ids and list(reply.not_found) == [missing]
    for item in reply.sessions:
        single = await stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=item.session.id))
        assert list(item.channels) == list(single.channels)
        if item.HasField("performance"):
            assert item.performance == await stub.GetPerformanceScore(pb.SessionKey(session_id=item.session.id))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.BatchGetSessionStatistics(pb.BatchGetSessionStatisticsRequest(session_ids=["nope"]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.BatchGetSessionStatistics(pb.BatchGetSessionStatisticsRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_figures_a_migrated_legacy_channel_lacks_are_missing_not_zero(stub, admin):
    """A channel migrated from the legacy system may lack counts, rates or the MVC peak
    (migration 023: NULL there): the reads name them in missing_fields instead of serving a
    measured-looking 0, and the progress series does not fail on them."""
    t = await add_therapist(admin)
    p = await add_patient(admin, t)
    sid = await add_session(admin, p, date=T0, therapist=t, score=55.0, contractions=2)
    await admin.execute(
        "UPDATE emg_statistics SET intensity_rate = NULL, good_contractions_intensity = NULL, "
        "mvc_peak_value = NULL WHERE session_id = $1 AND channel_name = 'CH1'",
        sid,
    )
    res = await stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=str(sid)))
    by_name = {c.channel_name: c for c in res.channels}
    assert sorted(by_name["CH1"].missing_fields) == ["good_contractions_intensity", "intensity_rate", "mvc_peak_value"]
    assert list(by_name["CH2"].missing_fields) == [] and by_name["CH1"].total_contractions > 0
    progress = await stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=p))
    muscles = progress.points[0].muscles
    assert sorted(m for mp in muscles.values() for m in mp.missing_fields) == ["intensity_rate", "mvc_peak_value"]
