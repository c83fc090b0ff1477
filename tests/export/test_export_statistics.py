"""Statistics-based exports end to end: real services on loopback, real and synthetic C3D files.

Every type x format: the file opens with the standard reader and holds the numbers the
StatisticsService returns; the SHA-256 in export_history equals the file's.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ghostly.export.v1 import export_pb2 as pb
from ghostly.ingest.v1 import ingest_pb2
from ghostly.statistics.v1 import statistics_pb2 as spb
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from tests.export.readers import boolean, num, tables, text
from tests.helpers import new_patient, run_export, sample_files, upload, variant

SAMPLES = sample_files()
FORMATS = {
    "json": pb.EXPORT_FORMAT_JSON,
    "csv": pb.EXPORT_FORMAT_CSV,
    "excel": pb.EXPORT_FORMAT_EXCEL,
    "matlab": pb.EXPORT_FORMAT_MATLAB,
}
TYPES = {
    "statistics_only": pb.EXPORT_TYPE_STATISTICS_ONLY,
    "performance_report": pb.EXPORT_TYPE_PERFORMANCE_REPORT,
    "clinical_summary": pb.EXPORT_TYPE_CLINICAL_SUMMARY,
    "bfr_safety_report": pb.EXPORT_TYPE_BFR_SAFETY_REPORT,
}


def synthetic(tmp: Path, seed: int, minute: int = 30) -> tuple[bytes, str]:
    spec = SyntheticSpec(
        duration_s=70.0,
        seed=seed,
        time=(2024, 5, 6, 14, minute),
        channels=[
            ChannelSpec(contractions=regular_contractions(12, 2.5, 5.0)),
            ChannelSpec(contractions=regular_contractions(6, 1.0, 9.0, amplitude_v=200e-6)),
        ],
    )
    name = ghostly_file_name(spec, seconds=seed % 60)
    write_synthetic_c3d(tmp / name, spec)
    return (tmp / name).read_bytes(), name


@pytest.fixture(scope="module")
async def world(ingest_stub, db, tmp_path_factory):
    """A patient with the real samples (when present) + two synthetic sessions + a failed one."""
    tmp = tmp_path_factory.mktemp("export-stats")
    patient = await new_patient(db)
    ids: dict[str, str] = {}
    bfr = ingest_pb2.BfrInput(actual_pressure_aop=58.0, target_pressure_aop=50.0, cuff_size="11.5 cm")
    for i, src in enumerate(SAMPLES):
        path = src
        extra = dict(rpe_post_session=5, game_points=600, protocol_day=i + 1, bfr=bfr) if i == 0 else {}
        path = variant(path, tmp, 1)
        r = await upload(ingest_stub, path.read_bytes(), path.name, patient, **extra)
        ids[path.name] = r.session_id
    for seed in (3, 4):
        data, name = synthetic(tmp, seed, minute=10 + seed)
        extra = (
            dict(rpe_post_session=6, bfr=ingest_pb2.BfrInput(actual_pressure_aop=50.0, target_pressure_aop=50.0))
            if seed == 3
            else {}
        )
        r = await upload(ingest_stub, data, name, patient, **extra)
        ids[f"synthetic{seed}"] = r.session_id
    bad = os.urandom(4000)
    with pytest.raises(grpc.aio.AioRpcError):
        await upload(ingest_stub, bad, "Ghostly_Emg_20240506_15-00-00-0001.c3d", patient)
    failed = await db.fetchval("SELECT id FROM therapy_sessions WHERE file_hash = $1", hashlib.sha256(bad).hexdigest())
    return {
        "patient": patient,
        "ids": ids,
        "failed": str(failed),
        "bfr_session": ids[SAMPLES[0].name] if SAMPLES else ids["synthetic3"],
        "main": ids[SAMPLES[0].name] if SAMPLES else ids["synthetic3"],
    }


async def history_row(db, export_id: str):
    return await db.fetchrow("SELECT * FROM export_history WHERE id = $1::uuid", export_id)


async def assert_audited(
    db, started, payload, completed, *, status="success", export_type=None, fmt=None, researcher=None
):
    sha = hashlib.sha256(payload).hexdigest()
    assert completed.sha256 == sha and completed.size_bytes == len(payload)
    assert completed.export_id == started.export_id
    row = await history_row(db, started.export_id)
    assert row["export_hash"] == sha and row["file_size_bytes"] == len(payload)
    assert row["export_status"] == status, row["error_message"]
    assert row["processing_method"] == "database_query" and row["data_source"] == "cached_statistics"
    if export_type:
        assert row["export_type"] == export_type
    if fmt:
        assert row["data_format"] == fmt
    if researcher:
        assert str(row["exported_by"]) == researcher
    checks = {c["name"]: c for c in row["validation_checks"]}
    assert {c.name for c in completed.validation_checks} == set(checks)
    assert {"row_count", "hash_verified", "sessions_exported"} <= set(checks)
    assert checks["hash_verified"]["passed"]
    if status == "success":
        assert all(c["passed"] for c in checks.values()), checks
    assert row["processing_time_ms"] == completed.processing_time_ms
    return row


def eq(got, want, fmt) -> bool:
    """Exact, except Excel (xlsxwriter writes 16 significant digits)."""
    if want is None or got is None:
        return got is None and want is None
    return got == pytest.approx(want, rel=1e-15 if fmt == "excel" else 0, abs=0)


async def test_type_or_format_missing_is_invalid(export_stub, world):
    for fields in (dict(format=pb.EXPORT_FORMAT_CSV), dict(type=pb.EXPORT_TYPE_STATISTICS_ONLY)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await run_export(export_stub, session_ids=[world["main"]], **fields)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "required" in info.value.details()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_statistics_only(export_stub, stats_stub, db, world, researcher, fmt):
    sid = world["main"]
    started, payload, completed, _ = await run_export(
        export_stub, type=pb.EXPORT_TYPE_STATISTICS_ONLY, format=FORMATS[fmt], session_ids=[sid], exported_by=researcher
    )
    assert started.file_name.endswith({"json": ".json", "csv": ".csv", "excel": ".xlsx", "matlab": ".mat"}[fmt])
    assert sid in started.file_name
    await assert_audited(db, started, payload, completed, export_type="statistics_only", fmt=fmt, researcher=researcher)
    expected = {
        c.channel_name: c
        for c in (await stats_stub.GetEmgStatistics(spb.GetEmgStatisticsRequest(session_id=sid))).channels
    }
    session = await stats_stub.GetSession(spb.GetSessionRequest(session_id=sid))
    rows = tables(payload, fmt)["csv" if fmt == "csv" else "statistics"]
    assert len(rows) == len(expected) >= 2
    for r in rows:
        c = expected[text(r["channel_name"])]
        assert text(r["session_id"]) == sid and text(r["session_label"]) == session.session_label
        assert text(r["patient_id"]) == world["patient"]
        for f in ("mvc_peak_value", "mvc_rms_value"):
            # Exact (shortest repr round-trips) except Excel: xlsxwriter writes 16 significant digits.
            assert eq(num(r[f + "_v"]), getattr(c, f), fmt)
        for f in (
            "completion_rate",
            "intensity_rate",
            "duration_rate",
            "muscle_compliance_score",
            "signal_quality_score",
            "processing_confidence",
            "mvc_threshold_percentage",
            "duration_threshold_seconds",
            "total_contractions",
            "good_contractions_both",
            "good_contractions_intensity",
            "good_contractions_duration",
            "artifacts_detected",
        ):
            assert eq(num(r[f]), getattr(c, f), fmt), f
        assert text(r["processing_pipeline"]) == c.processing_pipeline == "20Hz->Rectify->10Hz->RMS"
        assert text(r["side"]) == (c.side or None)
        noise = c.noise_level_db if c.HasField("noise_level_db") else None
        assert eq(num(r["noise_level_db"]), noise, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_performance_report_excluded_components_are_empty_not_zero(export_stub, stats_stub, db, world, fmt):
    sid = world["ids"]["synthetic4"]  # no RPE, no game points: effort and game excluded
    started, payload, completed, _ = await run_export(
        export_stub, type=pb.EXPORT_TYPE_PERFORMANCE_REPORT, format=FORMATS[fmt], session_ids=[sid]
    )
    await assert_audited(db, started, payload, completed, export_type="performance_report")
    p = await stats_stub.GetPerformanceScore(spb.SessionKey(session_id=sid))
    [r] = tables(payload, fmt)["csv" if fmt == "csv" else "performance"]
    assert eq(num(r["overall_performance_score"]), p.overall_performance_score, fmt)
    assert eq(num(r["compliance_score"]), p.compliance_score, fmt)
    assert eq(num(r["symmetry_score"]), p.symmetry_score, fmt)
    assert num(r["effort_score"]) is None and num(r["game_score"]) is None
    assert eq(num(r["weight_effort"]), 0, fmt) and eq(num(r["weight_compliance"]), p.effective_weights.compliance, fmt)
    excluded = text(r["excluded_components"]) or ""
    assert "effort" in excluded and "game" in excluded
    assert text(r["bfr_status"]) == "unknown" and num(r["bfr_compliance_gate"]) is None


@pytest.mark.parametrize("fmt", FORMATS)
async def test_bfr_safety_report(export_stub, stats_stub, db, world, fmt):
    with_bfr, without = world["bfr_session"], world["ids"]["synthetic4"]
    started, payload, completed, _ = await run_export(
        export_stub, type=pb.EXPORT_TYPE_BFR_SAFETY_REPORT, format=FORMATS[fmt], session_ids=[with_bfr, without]
    )
    row = await assert_audited(db, started, payload, completed, export_type="bfr_safety_report")
    assert row["session_id"] is None and row["export_options"]["session_ids"] == [with_bfr, without]
    b = await stats_stub.GetBfrMonitoring(spb.SessionKey(session_id=with_bfr))
    rows = {text(r["session_id"]): r for r in tables(payload, fmt)["csv" if fmt == "csv" else "bfr"]}
    assert set(rows) == {with_bfr, without}
    r = rows[with_bfr]
    assert boolean(r["bfr_data_available"]) is True
    assert eq(num(r["actual_pressure_aop"]), b.actual_pressure_aop, fmt)
    assert eq(num(r["target_pressure_aop"]), b.target_pressure_aop, fmt)
    assert boolean(r["safety_gate_status"]) is b.safety_gate_status
    expected_status = "compliant" if b.safety_gate_status else "non-compliant"
    assert text(r["bfr_status"]) == expected_status
    r = rows[without]
    assert boolean(r["bfr_data_available"]) is False
    assert text(r["bfr_status"]) == "unknown" and num(r["actual_pressure_aop"]) is None


@pytest.mark.parametrize("fmt", FORMATS)
async def test_clinical_summary_for_a_patient(export_stub, stats_stub, db, world, researcher, fmt):
    started, payload, completed, _ = await run_export(
        export_stub,
        type=pb.EXPORT_TYPE_CLINICAL_SUMMARY,
        format=FORMATS[fmt],
        patient_id=world["patient"],
        exported_by=researcher,
    )
    await assert_audited(db, started, payload, completed, export_type="clinical_summary")
    completed_ids = [s for k, s in world["ids"].items()]
    assert world["patient"] in started.file_name
    got = tables(payload, fmt)
    expected_channels = {}
    for sid in completed_ids:
        for c in (await stats_stub.GetEmgStatistics(spb.GetEmgStatisticsRequest(session_id=sid))).channels:
            expected_channels[(sid, c.channel_name)] = c
    scores = {sid: await stats_stub.GetPerformanceScore(spb.SessionKey(session_id=sid)) for sid in completed_ids}
    if fmt == "csv":
        rows = got["csv"]
        assert len(rows) == len(expected_channels)
        for r in rows:
            c = expected_channels[(r["session_id"], r["channel_name"])]
            assert eq(num(r["muscle_compliance_score"]), c.muscle_compliance_score, fmt)
            assert eq(num(r["overall_performance_score"]), scores[r["session_id"]].overall_performance_score, fmt)
        return
    sessions, chans = got["sessions"], got["channels"]
    assert {text(r["session_id"]) for r in sessions} == set(completed_ids)  # the failed one is not "completed"
    dates = [str(text(r["session_date"])) for r in sessions]
    assert dates == sorted(dates), "oldest first"
    for r in sessions:
        p = scores[text(r["session_id"])]
        assert eq(num(r["overall_performance_score"]), p.overall_performance_score, fmt)
        assert eq(num(r["effort_score"]), (p.effort_score if p.HasField("effort_score") else None), fmt)
    assert len(chans) == len(expected_channels)
    for r in chans:
        c = expected_channels[(text(r["session_id"]), text(r["channel_name"]))]
        assert eq(num(r["completion_rate"]), c.completion_rate, fmt) and eq(
            num(r["total_contractions"]), c.total_contractions, fmt
        )


async def test_partial_when_some_sessions_fail(export_stub, db, world):
    ok = [world["ids"]["synthetic3"], world["ids"]["synthetic4"]]
    unknown = str(uuid.uuid4())
    started, payload, completed, _ = await run_export(
        export_stub,
        type=pb.EXPORT_TYPE_CLINICAL_SUMMARY,
        format=pb.EXPORT_FORMAT_JSON,
        session_ids=[*ok, world["failed"], unknown],
    )
    assert completed.status == pb.EXPORT_STATUS_PARTIAL
    row = await assert_audited(db, started, payload, completed, status="partial")
    checks = {c["name"]: c for c in row["validation_checks"]}
    assert not checks["sessions_exported"]["passed"] and "2 of 4" in checks["sessions_exported"]["detail"]
    assert world["failed"] in row["error_message"] and unknown in row["error_message"]
    data = json.loads(payload)
    assert {r["session_id"] for r in data["sessions"]} == set(ok)
    missing = {m["session_id"]: m["reason"] for m in data["metadata"]["missing_sessions"]}
    assert set(missing) == {world["failed"], unknown}
    assert "does not exist" in missing[unknown]


async def test_single_unknown_or_failed_session_is_an_error_with_a_failed_row(export_stub, db, world):
    unknown = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(
            export_stub, type=pb.EXPORT_TYPE_STATISTICS_ONLY, format=pb.EXPORT_FORMAT_CSV, session_ids=[unknown]
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "recorded as failed" in info.value.details()
    row = await db.fetchrow("SELECT * FROM export_history WHERE export_options->'session_ids' ? $1", unknown)
    assert row["export_status"] == "failed" and unknown in row["error_message"] and row["export_hash"] is None
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(
            export_stub, type=pb.EXPORT_TYPE_STATISTICS_ONLY, format=pb.EXPORT_FORMAT_CSV, session_ids=[world["failed"]]
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no EMG statistics" in info.value.details()


@pytest.mark.parametrize(
    "fields, needle",
    [
        (dict(session_ids=["not-a-uuid"]), "UUID"),
        (dict(), "select sessions"),
        (dict(session_ids=["00000000-0000-0000-0000-000000000001"], patient_id="P1"), "either"),
        (dict(patient_id="P1", signal_kinds=["raw"]), "signal_kinds"),
    ],
)
async def test_bad_selection_is_invalid_and_recorded(export_stub, db, fields, needle):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(export_stub, type=pb.EXPORT_TYPE_STATISTICS_ONLY, format=pb.EXPORT_FORMAT_JSON, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in info.value.details()
    export_id = info.value.details().split("(export ")[1].split(" ")[0]
    row = await history_row(db, export_id)
    assert row["export_status"] == "failed" and needle in row["error_message"]


async def test_exported_by_unknown_or_malformed(export_stub, db, world):
    ghost = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(
            export_stub,
            type=pb.EXPORT_TYPE_STATISTICS_ONLY,
            format=pb.EXPORT_FORMAT_CSV,
            session_ids=[world["main"]],
            exported_by=ghost,
        )
    assert (
        info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        and "not a registered researcher" in info.value.details()
    )
    row = await db.fetchrow("SELECT * FROM export_history WHERE export_options->>'requested_exported_by' = $1", ghost)
    assert row["export_status"] == "failed" and row["exported_by"] is None
    assert str(row["session_id"]) == world["main"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(
            export_stub,
            type=pb.EXPORT_TYPE_STATISTICS_ONLY,
            format=pb.EXPORT_FORMAT_CSV,
            session_ids=[world["main"]],
            exported_by="bob",
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_channel_filter(export_stub, db, world):
    started, payload, _completed, _ = await run_export(
        export_stub,
        type=pb.EXPORT_TYPE_STATISTICS_ONLY,
        format=pb.EXPORT_FORMAT_CSV,
        session_ids=[world["main"]],
        channels=["CH2"],
    )
    rows = tables(payload, "csv")["csv"]
    assert [r["channel_name"] for r in rows] == ["CH2"]
    row = await history_row(db, started.export_id)
    assert row["channels_exported"] == ["CH2"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(
            export_stub,
            type=pb.EXPORT_TYPE_STATISTICS_ONLY,
            format=pb.EXPORT_FORMAT_CSV,
            session_ids=[world["main"]],
            channels=["CH9"],
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "CH9" in info.value.details()


async def test_date_window_selection(export_stub, stats_stub, world):
    sessions = [await stats_stub.GetSession(spb.GetSessionRequest(session_id=s)) for s in world["ids"].values()]
    synth = [s for s in sessions if s.id in (world["ids"]["synthetic3"], world["ids"]["synthetic4"])]
    lo = min(s.session_date.seconds for s in synth)
    hi = max(s.session_date.seconds for s in synth) + 1
    _started, payload, _completed, _ = await run_export(
        export_stub,
        type=pb.EXPORT_TYPE_PERFORMANCE_REPORT,
        format=pb.EXPORT_FORMAT_JSON,
        patient_id=world["patient"],
        date_from=Timestamp(seconds=lo),
        date_to=Timestamp(seconds=hi),
    )
    got = {r["session_id"] for r in json.loads(payload)["performance"]}
    assert got == {s.id for s in synth}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(
            export_stub, type=pb.EXPORT_TYPE_PERFORMANCE_REPORT, format=pb.EXPORT_FORMAT_JSON, patient_id="NOBODY"
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_metadata_records_units_and_processing(export_stub, world):
    _, payload, _, _ = await run_export(
        export_stub, type=pb.EXPORT_TYPE_STATISTICS_ONLY, format=pb.EXPORT_FORMAT_JSON, session_ids=[world["main"]]
    )
    data = json.loads(payload)
    meta = data["metadata"]
    assert meta["units"]["amplitudes"].startswith("V") and meta["processing"]["pipelines"] == [
        "20Hz->Rectify->10Hz->RMS"
    ]
    units = {(c["table"], c["column"]): c["unit"] for c in data["columns"]}
    assert units[("statistics", "mvc_peak_value_v")] == "V"
    assert units[("statistics", "duration_threshold_seconds")] == "s"


# --------------------------------------------------------------------------- signal flags (migration 015)

# The channel columns before the signal flags were added: kept, in this order, with the new
# ones appended after them.
CHANNEL_COLUMNS_BEFORE_015 = [
    "channel_name",
    "side",
    "mvc_peak_value_v",
    "mvc_rms_value_v",
    "mvc_confidence_score",
    "mvc_calculation_method",
    "total_contractions",
    "good_contractions_intensity",
    "good_contractions_duration",
    "good_contractions_both",
    "completion_rate",
    "intensity_rate",
    "duration_rate",
    "muscle_compliance_score",
    "signal_quality_score",
    "noise_level_db",
    "artifacts_detected",
    "processing_confidence",
    "mvc_threshold_percentage",
    "duration_threshold_seconds",
    "processing_pipeline",
    "processing_version",
    "processed_at",
]
SESSION_COLUMNS = ["session_id", "session_label", "patient_id", "session_date", "session_type", "protocol_day"]


def flag_list(v, fmt) -> list[str]:
    """A signal_flags cell as a list: JSON holds a list, the other formats 'a;b' ('' = none)."""
    if fmt == "json":
        assert isinstance(v, list), v
        return v
    s = text(v)
    return s.split(";") if s else []


@pytest.fixture(scope="module")
async def dropout_session(ingest_stub, db, tmp_path_factory):
    """A session whose CH1 has a wireless dropout (constant fill) in a rest period; CH2 is clean."""
    tmp = tmp_path_factory.mktemp("export-flags")
    spec = SyntheticSpec(
        duration_s=70.0,
        seed=29,
        time=(2024, 5, 7, 9, 15),
        channels=[
            ChannelSpec(contractions=regular_contractions(10, 2.5, 5.5), dropouts=[(62.0, 800)]),
            ChannelSpec(contractions=regular_contractions(6, 1.0, 9.0, amplitude_v=200e-6)),
        ],
    )
    name = ghostly_file_name(spec, seconds=29)
    write_synthetic_c3d(tmp / name, spec)
    patient = await new_patient(db)
    r = await upload(ingest_stub, (tmp / name).read_bytes(), name, patient)
    return r.session_id


@pytest.mark.parametrize("fmt", FORMATS)
async def test_statistics_export_carries_signal_flags_and_usable(export_stub, stats_stub, db, dropout_session, fmt):
    sid = dropout_session
    started, payload, completed, _ = await run_export(
        export_stub, type=pb.EXPORT_TYPE_STATISTICS_ONLY, format=FORMATS[fmt], session_ids=[sid]
    )
    await assert_audited(db, started, payload, completed, export_type="statistics_only", fmt=fmt)
    served = {
        c.channel_name: c
        for c in (await stats_stub.GetEmgStatistics(spb.GetEmgStatisticsRequest(session_id=sid))).channels
    }
    assert list(served["CH1"].signal_flags) == ["dropout"] and list(served["CH2"].signal_flags) == []
    rows = {text(r["channel_name"]): r for r in tables(payload, fmt)["csv" if fmt == "csv" else "statistics"]}
    assert set(rows) == {"CH1", "CH2"}
    for ch, r in rows.items():
        assert flag_list(r["signal_flags"], fmt) == list(served[ch].signal_flags)
        assert boolean(r["usable"]) is served[ch].usable
    if fmt == "csv":
        assert payload.decode().split("\n", 1)[0].split(",") == SESSION_COLUMNS + CHANNEL_COLUMNS_BEFORE_015 + [
            "signal_flags",
            "usable",
        ]
        assert ",dropout," in payload.decode()
    if fmt == "json":
        data = json.loads(payload)
        assert list(data["statistics"][0]) == SESSION_COLUMNS + CHANNEL_COLUMNS_BEFORE_015 + ["signal_flags", "usable"]
        assert {(c["column"], c["kind"]) for c in data["columns"] if c["table"] == "statistics"} >= {
            ("signal_flags", "text_list"),
            ("usable", "bool"),
        }
        from libs.emg.flags import SIGNAL_FLAGS

        assert data["metadata"]["signal_flags"] == SIGNAL_FLAGS


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_clinical_summary_carries_signal_flags(export_stub, dropout_session, fmt):
    _, payload, completed, _ = await run_export(
        export_stub, type=pb.EXPORT_TYPE_CLINICAL_SUMMARY, format=FORMATS[fmt], session_ids=[dropout_session]
    )
    assert completed.status == pb.EXPORT_STATUS_SUCCESS
    rows = tables(payload, fmt)["csv" if fmt == "csv" else "channels"]
    got = {r["channel_name"]: (flag_list(r["signal_flags"], fmt), boolean(r["usable"])) for r in rows}
    assert got == {"CH1": (["dropout"], True), "CH2": ([], True)}
    header = list(rows[0])
    assert header[-2:] == ["signal_flags", "usable"] and header[-3] == "processed_at"


def _flagged_document():
    """A statistics document from hand-made replies: several flags, an unusable channel."""
    from services.export import layouts

    session = spb.Session(id=str(uuid.uuid4()), session_label="Ghostly_Emg_x", patient_id="P9", processing_version="v")
    channels = [
        spb.ChannelStatistics(
            channel_name="CH1",
            side="left",
            processing_version="v",
            usable=False,
            signal_flags=["saturation", "dropout", "no_usable_emg"],
        ),
        spb.ChannelStatistics(channel_name="CH2", side="right", processing_version="v", usable=True),
    ]
    bundle = layouts.SessionBundle(session.id, session=session, channels=channels)
    return layouts.statistics_document("statistics_only", [bundle], {})


@pytest.mark.parametrize("fmt", FORMATS)
def test_writers_join_several_flags_and_keep_usable(fmt):
    from services.export import writers

    payload = writers.render(_flagged_document(), fmt)
    rows = {text(r["channel_name"]): r for r in tables(payload, fmt)["csv" if fmt == "csv" else "statistics"]}
    assert flag_list(rows["CH1"]["signal_flags"], fmt) == ["saturation", "dropout", "no_usable_emg"]
    assert flag_list(rows["CH2"]["signal_flags"], fmt) == []
    assert boolean(rows["CH1"]["usable"]) is False and boolean(rows["CH2"]["usable"]) is True
    if fmt in ("csv", "excel", "matlab"):
        assert text(rows["CH1"]["signal_flags"]) == "saturation;dropout;no_usable_emg"
        assert text(rows["CH2"]["signal_flags"]) is None  # empty cell, not "[]"


def test_export_flag_vocabulary_is_the_emg_cores():
    from libs.emg.flags import SIGNAL_FLAGS
    from services.export import layouts

    assert layouts.SIGNAL_FLAGS == SIGNAL_FLAGS and list(layouts.SIGNAL_FLAGS) == list(SIGNAL_FLAGS)


@pytest.fixture(scope="module")
async def unscored_session(ingest_stub, db, tmp_path_factory):
    """Two disconnected electrodes (noise only): completed, statistics stored, not scored."""
    tmp = tmp_path_factory.mktemp("export-unscored")
    spec = SyntheticSpec(
        duration_s=30.0,
        seed=31,
        time=(2024, 5, 8, 9, 15),
        channels=[ChannelSpec(noise_sd_v=13e-6), ChannelSpec(noise_sd_v=14e-6)],
    )
    name = ghostly_file_name(spec, seconds=31)
    write_synthetic_c3d(tmp / name, spec)
    r = await upload(ingest_stub, (tmp / name).read_bytes(), name, await new_patient(db))
    assert not r.HasField("overall_performance_score")
    return r.session_id


@pytest.mark.parametrize("fmt", FORMATS)
async def test_unscored_session_is_exported_with_empty_scores_and_its_flags(export_stub, unscored_session, fmt):
    """Not a failed session and never a 0: the clinical summary carries the session with empty
    score cells and the channel rows whose flags say why."""
    _, payload, completed, _ = await run_export(
        export_stub, type=pb.EXPORT_TYPE_CLINICAL_SUMMARY, format=FORMATS[fmt], session_ids=[unscored_session]
    )
    assert completed.status == pb.EXPORT_STATUS_SUCCESS
    rows = tables(payload, fmt)["csv" if fmt == "csv" else "channels"]
    assert {r["channel_name"]: flag_list(r["signal_flags"], fmt) for r in rows} == {
        "CH1": ["no_usable_emg"],
        "CH2": ["no_usable_emg"],
    }
    if fmt != "csv":
        [session] = tables(payload, fmt)["sessions"]
        assert (
            session["overall_performance_score"] in (None, "")
            or session["overall_performance_score"] != session["overall_performance_score"]
        )  # empty / null / NaN
