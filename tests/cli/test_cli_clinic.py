"""The operator's clinical workflow through the `ghostly` client commands, against real Ingest
(IngestService + PatientService) and Statistics servers: each command's happy path and an
error path (one line `error: <STATUS>: <message>`, exit 2; ingest: 1 for partial failures)."""

from __future__ import annotations

import re
import uuid

import pytest

from ghostly.statistics.v1 import statistics_pb2 as spb
from tests.helpers import UUID_RE, new_code, register_patient, session_ids, session_of, synthetic_c3d, token
from tests.helpers import ghostly_add_patient as add_patient
from tests.helpers import ghostly_add_therapist as add_therapist

# --------------------------------------------------------------------------- therapists


async def test_therapists_add(ghostly):
    user = str(uuid.uuid4())
    r = await ghostly("therapists", "add", "--user-id", user, "--first", "Tess", "--last", "Therapist")
    assert r.code == 0, r
    assert re.search(rf"^therapist\s+{UUID_RE}\s+Tess Therapist\s+user {user}$", r.out, re.M), r
    again = await ghostly("therapists", "add", "--user-id", user, "--first", "Tess", "--last", "Therapist")
    assert again.code == 2 and again.error_line().startswith("error: ALREADY_EXISTS: "), again


# --------------------------------------------------------------------------- patients add / list / show / deactivate


async def test_patients_add_list_show_deactivate(ghostly, stats, closed_address):
    therapist = await add_therapist(ghostly)
    code = new_code("A")
    r = await ghostly(
        "patients", "add", code, "--first", "Pat", "--last", "Ient", "--dob", "1940-01-01", "--therapist", therapist
    )
    assert r.code == 0, r
    assert re.search(rf"^patient\s+{code}\s+Pat Ient\s+born 1940-01-01\s+active$", r.out, re.M), r
    assert f"therapist   {therapist}" in r.out
    p = await stats.GetPatient(spb.GetPatientRequest(patient_code=code))
    assert (p.therapist_id, p.date_of_birth, p.active) == (therapist, "1940-01-01", True)

    dup = await ghostly(
        "patients", "add", code, "--first", "Pat", "--last", "Ient", "--dob", "1940-01-01", "--therapist", therapist
    )
    assert dup.code == 2 and dup.error_line().startswith("error: ALREADY_EXISTS: "), dup
    bad = await ghostly(
        "patients",
        "add",
        new_code(),
        "--first",
        "Pat",
        "--last",
        "Ient",
        "--dob",
        "1940-01-01",
        "--therapist",
        str(uuid.uuid4()),
    )
    assert bad.code == 2 and bad.error_line().startswith("error: FAILED_PRECONDITION: "), bad

    listed = await ghostly("patients", "list", "--therapist", therapist)
    assert listed.code == 0, listed
    assert listed.out.splitlines()[0].split()[:3] == ["CODE", "NAME", "BORN"]
    row = next(line for line in listed.out.splitlines() if line.startswith(code))
    assert "Pat Ient" in row and "1940-01-01" in row and " yes " in row and therapist in row
    assert code in (await ghostly("patients", "list")).out

    shown = await ghostly("patients", "show", code)
    assert shown.code == 0, shown
    assert "current calibration\n  none" in shown.out and "calibration history (0" in shown.out
    assert "recent sessions" in shown.out and "(no sessions)" in shown.out
    unknown = await ghostly("patients", "show", new_code("Z"))
    assert unknown.code == 2 and unknown.error_line().startswith("error: NOT_FOUND: "), unknown

    gone = await ghostly("patients", "deactivate", code)
    assert gone.code == 0, gone
    assert re.search(rf"^patient\s+{code}\s+.*deactivated \d{{4}}-\d\d-\d\d", gone.out, re.M), gone
    assert code not in (await ghostly("patients", "list", "--therapist", therapist)).out
    everyone = await ghostly("patients", "list", "--therapist", therapist, "--all")
    row = next(line for line in everyone.out.splitlines() if line.startswith(code))
    assert " no " in row
    missing = await ghostly("patients", "deactivate", new_code("Z"))
    assert missing.code == 2 and missing.error_line().startswith("error: NOT_FOUND: "), missing

    down = await ghostly("patients", "list", GHOSTLY_STATISTICS_ADDRESS=closed_address)
    assert down.code == 2 and down.error_line().startswith("error: UNAVAILABLE: "), down


# --------------------------------------------------------------------------- calibrate


async def test_patients_calibrate_with_values(ghostly, stats):
    code = await add_patient(ghostly, await add_therapist(ghostly))
    r = await ghostly(
        "patients",
        "calibrate",
        code,
        "--mvc-left",
        "400",
        "--mvc-right",
        "380.5",
        "--duration-left",
        "2",
        "--target",
        "12",
        "--bfr-target",
        "50",
        "--notes",
        "MVC test",
    )
    assert r.code == 0, r
    assert "therapist_entered" in r.out and "MVC L 400.0 uV  R 380.5 uV" in r.out, r
    assert "target 12" in r.out and "BFR target 50 % AOP" in r.out and "notes: MVC test" in r.out
    # On the command line in uV; in the API in volts.
    c = (await stats.GetPatient(spb.GetPatientRequest(patient_code=code))).current_calibration
    assert c.mvc_left_v == pytest.approx(400e-6) and c.mvc_right_v == pytest.approx(380.5e-6)
    assert c.duration_threshold_left_s == 2.0 and not c.HasField("duration_threshold_right_s")

    # Values left out are carried over.
    r = await ghostly("patients", "calibrate", code, "--duration-right", "3")
    assert r.code == 0, r
    assert "MVC L 400.0 uV  R 380.5 uV" in r.out and "duration L 2 s  R 3 s" in r.out, r
    shown = await ghostly("patients", "show", code)
    assert shown.code == 0, shown
    assert "calibration history (2, newest first)" in shown.out
    assert "400.0" in shown.out.split("calibration history")[1]

    volts = await ghostly("patients", "calibrate", code, "--mvc-left", "0.0004")
    assert volts.code == 2 and "uV" in volts.error_line(), volts
    nothing = await ghostly("patients", "calibrate", code)
    assert nothing.code == 2 and nothing.error_line().startswith("error: nothing to calibrate"), nothing
    unknown = await ghostly("patients", "calibrate", new_code("Z"), "--target", "10")
    assert unknown.code == 2 and unknown.error_line().startswith("error: NOT_FOUND: "), unknown
    wrong = await ghostly("patients", "calibrate", code, "--duration-left", "0")
    assert wrong.code == 2 and wrong.error_line().startswith("error: INVALID_ARGUMENT: "), wrong


async def test_patients_calibrate_from_an_assessment_session(ghostly, stats, tmp_path):
    therapist = await add_therapist(ghostly)
    code = await add_patient(ghostly, therapist)
    other = await add_patient(ghostly, therapist)
    assessment = synthetic_c3d(tmp_path / "a", minute=10)
    training = synthetic_c3d(tmp_path / "t", minute=20)
    r = await ghostly("ingest", assessment, "--patient", code, "--type", "assessment")
    assert r.code == 0, r
    (assessment_id,) = session_ids(r.out)
    r = await ghostly("ingest", training, "--patient", code, "--type", "training")
    assert r.code == 0, r
    (training_id,) = session_ids(r.out)

    cal = await ghostly("patients", "calibrate", code, "--from-session", assessment_id)
    assert cal.code == 0, cal
    assert f"assessment_session from session {assessment_id}" in cal.out and "rule: " in cal.out, cal
    c = (await stats.GetPatient(spb.GetPatientRequest(patient_code=code))).current_calibration
    assert c.source_session_id == assessment_id
    # The synthetic contractions peak near 400 uV (left) and 300 uV (right) on the envelope.
    assert 100e-6 < c.mvc_left_v < 1000e-6 and 100e-6 < c.mvc_right_v < 1000e-6
    assert f"MVC L {c.mvc_left_v * 1e6:.1f} uV  R {c.mvc_right_v * 1e6:.1f} uV" in cal.out

    # A session ingested from now on is analysed with it (`sessions show` names the calibration).
    r = await ghostly("ingest", synthetic_c3d(tmp_path / "n", minute=30), "--patient", code)
    (later,) = session_ids(r.out)
    shown = await ghostly("sessions", "show", later)
    assert shown.code == 0, shown
    assert f"calibration {c.id} (assessment_session)" in shown.out, shown

    not_assessment = await ghostly("patients", "calibrate", code, "--from-session", training_id)
    assert not_assessment.code == 2, not_assessment
    assert not_assessment.error_line().startswith("error: FAILED_PRECONDITION: ")
    anyway = await ghostly("patients", "calibrate", code, "--from-session", training_id, "--any-session-type")
    assert anyway.code == 0, anyway
    elsewhere = await ghostly("patients", "calibrate", other, "--from-session", assessment_id)
    assert elsewhere.code == 2 and f"belongs to patient {code}" in elsewhere.error_line(), elsewhere
    both = await ghostly("patients", "calibrate", code, "--from-session", assessment_id, "--mvc-left", "400")
    assert both.code == 2 and "not both" in both.error_line(), both


# --------------------------------------------------------------------------- ingest


async def test_ingest_prints_each_file_and_the_summary(ghostly, db, tmp_path, closed_address):
    code = await register_patient(db, "I")
    folder = tmp_path / code
    files = [synthetic_c3d(folder, minute=m, dropouts=(m == 12)) for m in (11, 12)]
    (folder / "Ghostly_Emg_broken.c3d").write_bytes(b"broken" * 100)

    r = await ghostly("ingest", folder)
    assert r.code == 1, r
    lines = r.out.splitlines()
    assert lines[-1] == "2 new, 0 duplicate, 1 failed"
    for f in files:
        line = next(x for x in lines if str(f) in x)
        assert re.fullmatch(rf"new\s+{re.escape(str(f))}  session {UUID_RE}  completed  score \d+\.\d", line), line
    assert any(x.startswith("failed") and "Ghostly_Emg_broken.c3d: INVALID_ARGUMENT: " in x for x in lines), r
    assert any(x.startswith("           warning: ") for x in lines), r  # e.g. no RPE: effort excluded
    first = sorted(session_ids(r.out))

    again = await ghostly("ingest", folder)
    assert again.code == 1 and again.out.splitlines()[-1] == "0 new, 2 duplicate, 1 failed", again
    assert sorted(session_ids(again.out)) == first
    assert all(x.startswith(("duplicate", "failed", "   ", "0 new")) for x in again.out.splitlines()), again

    down = await ghostly("ingest", files[0], "--address", closed_address)
    assert down.code == 1 and "UNAVAILABLE: " in down.out, down
    assert down.out.splitlines()[-1] == "0 new, 0 duplicate, 1 failed"
    nothing = await ghostly("ingest", tmp_path / "no-such-folder")
    assert nothing.code == 2 and nothing.error_line().startswith("error: no such file or folder"), nothing


# --------------------------------------------------------------------------- sessions list / show


async def test_sessions_list_and_show(ghostly, stats, db, tmp_path):
    code = await register_patient(db, "S")
    files = [synthetic_c3d(tmp_path / code, minute=1), synthetic_c3d(tmp_path / code, minute=2, dropouts=True)]
    r = await ghostly("ingest", *files, "--patient", code)
    assert r.code == 0, r
    ids = [session_of(r.out, f) for f in files]

    listed = await ghostly("sessions", "list", "--patient", code)
    assert listed.code == 0, listed
    header, *rows = listed.out.splitlines()
    assert header.split() == ["SESSION", "DATE", "(UTC)", "PATIENT", "TYPE", "DAY", "STATUS", "SCORE"]
    assert [row.split()[0] for row in rows] == [ids[1], ids[0]]  # newest first
    for sid, row in zip([ids[1], ids[0]], rows):
        score = (await stats.GetPerformanceScore(spb.SessionKey(session_id=sid))).overall_performance_score
        assert row.split()[1:] == ["2024-05-06", row.split()[2], code, "-", "-", "completed", f"{score:.1f}"]
    one = await ghostly("sessions", "list", "--patient", code, "--limit", "1")
    assert [x.split()[0] for x in one.out.splitlines()[1:]] == [ids[1]]
    assert ids[0] in (await ghostly("sessions", "list", "--limit", "500")).out

    shown = await ghostly("sessions", "show", ids[1])
    assert shown.code == 0, shown
    assert f"session     {ids[1]}" in shown.out and f"patient     {code}" in shown.out
    score = await stats.GetPerformanceScore(spb.SessionKey(session_id=ids[1]))
    assert f"score       {score.overall_performance_score:.1f}" in shown.out
    assert "excluded    " in shown.out and "effort" in shown.out
    channels = (await stats.GetEmgStatistics(spb.GetEmgStatisticsRequest(session_id=ids[1]))).channels
    table = shown.out.split("CHANNEL", 1)[1].splitlines()[1:3]
    for ch, row in zip(channels, table):
        cells = row.split()
        assert cells[0] == ch.channel_name and cells[2] == f"{ch.mvc_rms_value * 1e6:.1f}", row  # uV
        assert cells[3] == f"{ch.mvc_peak_value * 1e6:.1f}" and cells[-1] == (",".join(ch.signal_flags) or "-")
    assert "dropout" in shown.out and "warning: CH2: dropouts" in shown.out, shown
    assert "warning: effort excluded from the score" in shown.out

    bad = await ghostly("sessions", "show", "not-a-uuid")
    assert bad.code == 2 and bad.error_line().startswith("error: INVALID_ARGUMENT: "), bad
    missing = await ghostly("sessions", "show", str(uuid.uuid4()))
    assert missing.code == 2 and missing.error_line().startswith("error: NOT_FOUND: "), missing
    zero = await ghostly("sessions", "list", "--limit", "0")
    assert zero.code == 2 and zero.error_line() == "error: --limit must be >= 1", zero


# --------------------------------------------------------------------------- outcome


async def test_outcome_rescores_the_session(ghostly, stats, db, tmp_path):
    code = await register_patient(db, "O")
    r = await ghostly("ingest", synthetic_c3d(tmp_path / code, minute=40), "--patient", code)
    (sid,) = session_ids(r.out)
    before = await stats.GetPerformanceScore(spb.SessionKey(session_id=sid))
    assert {"effort", "game"} <= set(before.excluded_components)

    out = await ghostly(
        "outcome", sid, "--rpe", "5", "--game-points", "600", "--game-points-max", "1000", "--bfr-aop", "50"
    )
    assert out.code == 0, out
    after = await stats.GetPerformanceScore(spb.SessionKey(session_id=sid))
    assert after.rpe_post_session == 5 and after.game_points_achieved == 600
    assert "changed     yes" in out.out
    assert f"score       {after.overall_performance_score:.1f}" in out.out, out
    assert re.search(r"^excluded    none$", out.out, re.M), out
    assert "RPE 5   game points 600/1000   BFR 50 % AOP" in out.out

    same = await ghostly("outcome", sid, "--rpe", "5")
    assert same.code == 0 and "changed     no" in same.out, same

    missing = await ghostly("outcome", str(uuid.uuid4()), "--rpe", "5")
    assert missing.code == 2 and missing.error_line().startswith("error: NOT_FOUND: "), missing
    bad = await ghostly("outcome", sid, "--rpe", "11")
    assert bad.code == 2 and bad.error_line().startswith("error: INVALID_ARGUMENT: "), bad
    nothing = await ghostly("outcome", sid)
    assert nothing.code == 2 and nothing.error_line().startswith("error: nothing to record"), nothing


# --------------------------------------------------------------------------- token


async def test_client_commands_send_ghostly_token(ghostly):
    """$GHOSTLY_TOKEN is sent (the servers run in dev mode: without a token a call is admin)."""
    garbage = await ghostly("sessions", "list", GHOSTLY_TOKEN="not-a-jwt")
    assert garbage.code == 2 and garbage.error_line().startswith("error: UNAUTHENTICATED: "), garbage
    researcher = await ghostly(
        "therapists",
        "add",
        "--user-id",
        str(uuid.uuid4()),
        "--first",
        "R",
        "--last",
        "S",
        GHOSTLY_TOKEN=token("researcher"),
    )
    assert researcher.code == 2 and researcher.error_line().startswith("error: PERMISSION_DENIED: "), researcher
    ok = await ghostly("sessions", "list", "--limit", "1", GHOSTLY_TOKEN=token("admin"))
    assert ok.code == 0, ok
