"""The clinical workflow end to end through gRPC on real PostgreSQL: register -> ingest ->
calibrate from an assessment session -> later sessions use it -> outcome recorded -> the
score changes exactly as the formula says; plus the caseload rules and the longitudinal
property a calibration exists for."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from libs.emg.synthetic import ChannelSpec, ContractionSpec, SyntheticSpec, ghostly_file_name, write_synthetic_c3d
from tests.helpers import bearer, upload_messages


@pytest.fixture
async def patients(ingest_server):
    async with grpc.aio.insecure_channel(ingest_server.address) as channel:
        yield ingest_pb2_grpc.PatientServiceStub(channel)


def _file(tmp_path, seed: int, amplitude_v: float = 300e-6, n: int = 8, duration_s: float = 1.2) -> tuple[bytes, str]:
    cons = [ContractionSpec(2.0 + 5.0 * i, duration_s, amplitude_v * (1 + 0.05 * (i % 3))) for i in range(n)]
    spec = SyntheticSpec(
        duration_s=5.0 * n + 4,
        seed=seed,
        time=(2024, 5, 6, 10, seed % 60),
        channels=[ChannelSpec(contractions=cons), ChannelSpec(contractions=cons)],
    )
    name = ghostly_file_name(spec, seconds=seed % 60, frac=f"{seed % 10000:04d}")
    write_synthetic_c3d(tmp_path / name, spec)
    return (tmp_path / name).read_bytes(), name


async def _register(patients, prefix: str = "W") -> tuple[str, str, str]:
    """(therapist id, therapist user id, patient code) registered through the API."""
    user = str(uuid.uuid4())
    t = await patients.CreateTherapist(
        ingest_pb2.CreateTherapistRequest(user_id=user, first_name="Ann", last_name="Physio")
    )
    code = f"{prefix}{uuid.uuid4().hex[:6].upper()}"
    p = await patients.CreatePatient(
        ingest_pb2.CreatePatientRequest(
            patient_code=code, therapist_id=t.id, first_name="Bob", last_name="Elder", date_of_birth="1941-03-02"
        )
    )
    assert p.patient_code == code and p.active and p.therapist_id == t.id and not p.HasField("current_calibration")
    return t.id, user, code


async def test_register_calibrate_ingest_outcome_rescore(stub, patients, db, tmp_path):
    _, _user, code = await _register(patients)
    # 1. An assessment session, analysed with the backend's own MVC estimate.
    data, name = _file(tmp_path, seed=5101)
    assess = await stub.Upload(upload_messages(data, name, code, session_type=common_pb2.SESSION_TYPE_ASSESSMENT))
    assert assess.status == common_pb2.PROCESSING_STATUS_COMPLETED
    src = await db.fetchrow(
        "SELECT calibration_id, value_sources FROM session_settings WHERE session_id = $1::uuid", assess.session_id
    )
    assert src["calibration_id"] is None and src["value_sources"]["mvc_left"] == "default"

    # 2. Calibrate from it: median peak of the 3 strongest uncorrupted contractions per muscle.
    cal = await patients.CalibrateFromSession(ingest_pb2.CalibrateFromSessionRequest(session_id=assess.session_id))
    peaks = await db.fetch(
        "SELECT channel_name, peak_amplitude FROM emg_contractions WHERE session_id = $1::uuid "
        "AND NOT partially_masked ORDER BY channel_name, peak_amplitude DESC",
        assess.session_id,
    )
    left = [r["peak_amplitude"] for r in peaks if r["channel_name"] == "CH1"][:3]
    assert cal.mvc_left_v == pytest.approx(float(np.median(left)))
    assert cal.source == common_pb2.CALIBRATION_SOURCE_ASSESSMENT_SESSION and cal.source_session_id == assess.session_id
    assert "3 strongest" in cal.rule and cal.created_by and cal.created_by_role == "admin"

    # 3. A later training session uses it automatically (and says so).
    data, name = _file(tmp_path, seed=5102)
    later = await stub.Upload(upload_messages(data, name, code, session_type=common_pb2.SESSION_TYPE_TRAINING))
    row = await db.fetchrow(
        "SELECT calibration_id, value_sources, mvc_user_left_quad FROM session_settings WHERE session_id = $1::uuid",
        later.session_id,
    )
    assert str(row["calibration_id"]) == cal.id
    assert row["value_sources"]["mvc_left"] == row["value_sources"]["mvc_right"] == "patient_calibration"
    assert row["mvc_user_left_quad"] == pytest.approx(cal.mvc_left_v)
    ch1 = await db.fetchrow(
        "SELECT mvc_rms_value, analysis_details->>'mvc_source' AS src FROM emg_statistics "
        "WHERE session_id = $1::uuid AND channel_name = 'CH1'",
        later.session_id,
    )
    assert ch1["mvc_rms_value"] == pytest.approx(cal.mvc_left_v) and ch1["src"] == "patient_calibration"
    # A value sent with the session wins over the calibration.
    data, name = _file(tmp_path, seed=5103)
    own = await stub.Upload(upload_messages(data, name, code, options=ingest_pb2.AnalysisOptions(mvc_user_left=5e-4)))
    row = await db.fetchrow(
        "SELECT value_sources, mvc_user_left_quad, mvc_user_right_quad FROM session_settings "
        "WHERE session_id = $1::uuid",
        own.session_id,
    )
    assert row["value_sources"]["mvc_left"] == "session_request" and row["mvc_user_left_quad"] == 5e-4
    assert row["value_sources"]["mvc_right"] == "patient_calibration"

    # 4. Post-session outcome: re-scored from the stored statistics, exactly as the formula says.
    before = await db.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1::uuid", later.session_id)
    assert before["effort_score"] == 0.0 and "effort" in before["performance_weights"]["excluded"]
    reply = await stub.RecordSessionOutcome(
        ingest_pb2.RecordSessionOutcomeRequest(session_id=later.session_id, rpe_post_session=5, game_points=700)
    )
    assert reply.changed and reply.rpe_post_session == 5 and reply.game_points == 700 and reply.game_points_max == 1000
    after = await db.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1::uuid", later.session_id)
    # P = 0.40 C + 0.25 S + 0.20 E + 0.15 G with E = 100 (RPE 5), G = 70 and C, S unchanged.
    expected = 0.40 * before["compliance_score"] + 0.25 * before["symmetry_score"] + 0.20 * 100 + 0.15 * 70
    assert after["overall_performance_score"] == pytest.approx(expected)
    assert reply.overall_performance_score == pytest.approx(expected)
    assert after["effort_score"] == 100 and after["game_score"] == 70 and after["scoring_config_version"] == 1
    assert not reply.components_excluded.keys() - {"effort", "game"} and "effort" not in reply.components_excluded
    outcome = await db.fetchrow("SELECT * FROM session_outcomes WHERE session_id = $1::uuid", later.session_id)
    assert outcome["recorded_by"] and outcome["rpe_post_session"] == 5
    # The same call again changes nothing; a partial update keeps the rest.
    again = await stub.RecordSessionOutcome(
        ingest_pb2.RecordSessionOutcomeRequest(session_id=later.session_id, rpe_post_session=5, game_points=700)
    )
    assert not again.changed and again.recorded_at == reply.recorded_at
    partial = await stub.RecordSessionOutcome(
        ingest_pb2.RecordSessionOutcomeRequest(session_id=later.session_id, rpe_post_session=8)
    )
    assert partial.changed and partial.game_points == 700
    assert partial.overall_performance_score == pytest.approx(expected - 0.20 * (100 - 60))

    # 5. A new calibration never rewrites past sessions; Reprocess applies it on request.
    new = await patients.SetPatientCalibration(
        ingest_pb2.SetPatientCalibrationRequest(patient_code=code, mvc_left_v=2 * cal.mvc_left_v, notes="re-test")
    )
    assert new.mvc_right_v == pytest.approx(cal.mvc_right_v)  # carried over
    assert new.source == common_pb2.CALIBRATION_SOURCE_THERAPIST_ENTERED
    unchanged = await db.fetchval(
        "SELECT mvc_user_left_quad FROM session_settings WHERE session_id = $1::uuid", later.session_id
    )
    assert unchanged == pytest.approx(cal.mvc_left_v)
    progress = [
        m
        async for m in stub.Reprocess(
            ingest_pb2.ReprocessRequest(session_id=later.session_id, apply_current_calibration=True)
        )
    ]
    assert progress[-1].failed_count == 0
    row = await db.fetchrow(
        "SELECT calibration_id, mvc_user_left_quad FROM session_settings WHERE session_id = $1::uuid", later.session_id
    )
    assert str(row["calibration_id"]) == new.id and row["mvc_user_left_quad"] == pytest.approx(2 * cal.mvc_left_v)
    # The recorded outcome survives the re-analysis.
    score = await db.fetchrow(
        "SELECT rpe_post_session, game_points_achieved FROM performance_scores WHERE session_id = $1::uuid",
        later.session_id,
    )
    assert (score["rpe_post_session"], score["game_points_achieved"]) == (8, 700)
    # The session with its own MVC keeps it.
    _ = [
        m
        async for m in stub.Reprocess(
            ingest_pb2.ReprocessRequest(session_id=own.session_id, apply_current_calibration=True)
        )
    ]
    row = await db.fetchrow(
        "SELECT mvc_user_left_quad, mvc_user_right_quad FROM session_settings WHERE session_id = $1::uuid",
        own.session_id,
    )
    assert row["mvc_user_left_quad"] == 5e-4 and row["mvc_user_right_quad"] == pytest.approx(cal.mvc_right_v)


async def test_outcome_errors(stub, patients, tmp_path):
    _, _, code = await _register(patients)
    bad = [
        (
            ingest_pb2.RecordSessionOutcomeRequest(session_id="nope", rpe_post_session=3),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            ingest_pb2.RecordSessionOutcomeRequest(session_id=str(uuid.uuid4()), rpe_post_session=3),
            grpc.StatusCode.NOT_FOUND,
        ),
    ]
    data, name = _file(tmp_path, seed=5111)
    s = await stub.Upload(upload_messages(data, name, code))
    bad += [
        (
            ingest_pb2.RecordSessionOutcomeRequest(session_id=s.session_id, rpe_post_session=11),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            ingest_pb2.RecordSessionOutcomeRequest(session_id=s.session_id, game_points=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (ingest_pb2.RecordSessionOutcomeRequest(session_id=s.session_id), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for req, code_ in bad:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RecordSessionOutcome(req)
        assert info.value.code() == code_, (req, info.value.details())


async def test_caseload_rules(stub, patients, db):
    """A therapist registers into and edits their own caseload only; a foreign patient answers
    NOT_FOUND like an unknown one; researchers cannot write."""
    tid, user, code = await _register(patients)
    _, _other_user, other_code = await _register(patients)
    me = bearer("therapist", user)
    mine = await patients.CreatePatient(
        ingest_pb2.CreatePatientRequest(first_name="Cy", last_name="Own", date_of_birth="1950-01-01"), metadata=me
    )
    assert mine.therapist_id == tid and mine.patient_code.startswith("P")
    upd = await patients.UpdatePatient(
        ingest_pb2.UpdatePatientRequest(patient_code=code, last_name="Renamed"), metadata=me
    )
    assert upd.last_name == "Renamed"
    msgs = []
    for c in (other_code, "NOSUCH1"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await patients.UpdatePatient(ingest_pb2.UpdatePatientRequest(patient_code=c, last_name="X"), metadata=me)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        msgs.append(info.value.details().replace(c, "<code>"))
    assert msgs[0] == msgs[1]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await patients.SetPatientCalibration(
            ingest_pb2.SetPatientCalibrationRequest(patient_code=other_code, mvc_left_v=3e-4), metadata=me
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await patients.UpdatePatient(ingest_pb2.UpdatePatientRequest(patient_code=code, therapist_id=tid), metadata=me)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await patients.CreatePatient(
            ingest_pb2.CreatePatientRequest(first_name="R", last_name="S", date_of_birth="1950-01-01"),
            metadata=bearer("researcher"),
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for req in (
        ingest_pb2.CreatePatientRequest(
            patient_code=code, therapist_id=tid, first_name="A", last_name="B", date_of_birth="1950-01-01"
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await patients.CreatePatient(req)
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    for dob in ("1950-13-01", "2999-01-01", "1800-01-01"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await patients.CreatePatient(
                ingest_pb2.CreatePatientRequest(therapist_id=tid, first_name="A", last_name="B", date_of_birth=dob)
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "date_of_birth" in info.value.details()
    deact = await patients.DeactivatePatient(ingest_pb2.DeactivatePatientRequest(patient_code=code), metadata=me)
    assert not deact.active and deact.HasField("deactivated_at")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await patients.SetPatientCalibration(
            ingest_pb2.SetPatientCalibrationRequest(patient_code=code, mvc_left_v=3e-4)
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_scoring_config_versions_and_game_points_from_the_file(stub, ingest_server, db, patients, tmp_path):
    """SetScoringConfig (admin) creates a version; new sessions record it; the C3D's game score
    counts when the configuration knows the maximum of its level."""
    stub_cfg = ingest_pb2.SetScoringConfigRequest(
        config=common_pb2.ScoringConfig(
            performance_weights=common_pb2.PerformanceWeights(compliance=0.5, symmetry=0.2, effort=0.2, game=0.1),
            compliance_weights=common_pb2.ComplianceWeights(completion=0.5, intensity=0.25, duration=0.25),
            rpe_effort=[common_pb2.RpeEffort(rpe=r, effort_score=100.0 if 3 <= r <= 7 else 40.0) for r in range(11)],
            bfr_gate_low_aop=40,
            bfr_gate_high_aop=60,
            game_points_max=[common_pb2.GameLevelMax(level=1, max_points=40)],
            notes="trial v2",
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SetScoringConfig(stub_cfg, metadata=bearer("service"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    bad = ingest_pb2.SetScoringConfigRequest()
    bad.CopyFrom(stub_cfg)
    bad.config.performance_weights.game = 0.3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SetScoringConfig(bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sum to 1" in info.value.details()
    try:
        cfg = await stub.SetScoringConfig(stub_cfg)
        assert cfg.version >= 2 and cfg.notes == "trial v2" and len(cfg.rpe_effort) == 11
        _, _, code = await _register(patients)
        data, name = _file(tmp_path, seed=5121)  # synthetic files: game level 1, score 12
        s = await stub.Upload(upload_messages(data, name, code, rpe_post_session=8))
        score = await db.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1::uuid", s.session_id)
        assert score["scoring_config_version"] == cfg.version
        assert score["game_points_achieved"] == 12 and score["game_points_maximum"] == 40
        assert score["game_score"] == pytest.approx(30.0) and score["effort_score"] == 40.0
        assert any("Game points taken from the file" in w for w in s.warnings)
    finally:
        # Later tests score with the defaults again: a new version equal to version 1.
        v1 = await db.fetchval("SELECT config FROM scoring_config WHERE version = 1")
        await db.execute(
            "INSERT INTO scoring_config (version, config, created_by) "
            "SELECT max(version) + 1, $1, 'test' FROM scoring_config",
            v1,
        )


async def test_longitudinal_intensity_rises_against_a_fixed_calibration(stub, patients, db, tmp_path):
    """A patient whose contraction amplitude rises 30 % over 10 sessions: with a fixed
    calibrated MVC the intensity rate rises; with the session's own MVC it stays flat."""
    _, _, fixed = await _register(patients, "L")
    _, _, relative = await _register(patients, "R")
    base = 250e-6
    # An MVC assessment (maximal efforts at 1.53 x the first session's level): training
    # contractions reach 75 % of it once they pass ~1.15 x the first session's level.
    data, name = _file(tmp_path, seed=5199, amplitude_v=1.53 * base, n=6)
    mvc = await stub.Upload(upload_messages(data, name, fixed, session_type=common_pb2.SESSION_TYPE_ASSESSMENT))
    await patients.CalibrateFromSession(ingest_pb2.CalibrateFromSessionRequest(session_id=mvc.session_id))
    rates: dict[str, list[float]] = {fixed: [], relative: []}
    for i in range(10):
        amp = base * (1 + 0.3 * i / 9)
        for code, seed in ((fixed, 5200 + i), (relative, 5300 + i)):
            data, name = _file(tmp_path, seed=seed, amplitude_v=amp, n=9)
            s = await stub.Upload(upload_messages(data, name, code, protocol_day=i + 1))
            rates[code].append(
                await db.fetchval(
                    "SELECT intensity_rate FROM emg_statistics WHERE session_id = $1::uuid AND channel_name = 'CH1'",
                    s.session_id,
                )
            )
    f, r = np.array(rates[fixed]), np.array(rates[relative])
    print(f"intensity rate, fixed calibration: {np.round(f, 2)}; session-relative MVC: {np.round(r, 2)}")
    assert f[-3:].mean() - f[:3].mean() >= 0.5, f  # from few to most contractions intense
    assert np.polyfit(np.arange(10), f, 1)[0] > 0.05
    assert np.ptp(r) <= 0.35 and abs(np.polyfit(np.arange(10), r, 1)[0]) < 0.02, r


async def test_outcome_bfr_measurement_merges_and_gates(stub, patients, db, tmp_path):
    """A BFR pressure recorded after the session replaces the measured value only (cuff and
    device details stay) and the safety gate re-scores compliance."""
    _, _, code = await _register(patients)
    data, name = _file(tmp_path, seed=5131)
    bfr = ingest_pb2.BfrInput(
        actual_pressure_aop=50.0, target_pressure_aop=50.0, cuff_size="11.5 cm", monitoring_device="Delfi PTSii"
    )
    s = await stub.Upload(upload_messages(data, name, code, bfr=bfr))
    before = await db.fetchrow(
        "SELECT compliance_score, bfr_compliance_gate FROM performance_scores WHERE session_id = $1::uuid", s.session_id
    )
    assert before["bfr_compliance_gate"] == 1.0 and before["compliance_score"] > 0
    reply = await stub.RecordSessionOutcome(
        ingest_pb2.RecordSessionOutcomeRequest(
            session_id=s.session_id, bfr=ingest_pb2.BfrInput(actual_pressure_aop=62.0)
        )
    )
    assert reply.changed and reply.bfr_actual_pressure_aop == 62.0
    row = await db.fetchrow("SELECT * FROM bfr_monitoring WHERE session_id = $1::uuid", s.session_id)
    assert row["actual_pressure_aop"] == 62.0 and not row["safety_gate_status"]
    assert row["cuff_size"] == "11.5 cm" and row["monitoring_device"] == "Delfi PTSii"
    assert row["target_pressure_aop"] == 50.0
    after = await db.fetchrow(
        "SELECT compliance_score, bfr_compliance_gate FROM performance_scores WHERE session_id = $1::uuid", s.session_id
    )
    assert after["bfr_compliance_gate"] == 0.0 and after["compliance_score"] == 0.0
