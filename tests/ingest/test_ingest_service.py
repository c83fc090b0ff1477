"""IngestService end to end: real gRPC on loopback, real PostgreSQL, real and synthetic C3D."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from pathlib import Path

import grpc
import pytest

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2
from libs.emg import PROCESSING_VERSION, AnalysisSettings, analyze_file
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from services.ingest.events import MAX_SKEW_S, sign, signed
from tests.helpers import register_patient, sample_files, upload_messages

SAMPLES = sample_files()
needs_samples = pytest.mark.skipif(not SAMPLES, reason="real GHOSTLY samples not found")


def synthetic_bytes(tmp_path: Path, seed: int = 1, n_left: int = 12, dur_left: float = 2.5) -> tuple[bytes, str]:
    spec = SyntheticSpec(
        duration_s=80.0,
        seed=seed,
        channels=[
            ChannelSpec(contractions=regular_contractions(n_left, dur_left, 5.5)),
            ChannelSpec(contractions=regular_contractions(6, 1.0, 8.0, amplitude_v=200e-6)),
        ],
    )
    name = ghostly_file_name(spec, seconds=seed % 60)
    path = tmp_path / name
    write_synthetic_c3d(path, spec)
    return path.read_bytes(), name


async def _upload(stub, data: bytes, name: str, patient: str, **session) -> ingest_pb2.IngestReply:
    return await stub.Upload(upload_messages(data, name, patient, **session))


async def _counts(db, sid) -> dict[str, int]:
    return {
        t: await db.fetchval(f"SELECT count(*) FROM {t} WHERE session_id = $1", sid)
        for t in ("emg_statistics", "emg_contractions", "performance_scores", "session_settings", "bfr_monitoring")
    }


@needs_samples
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
async def test_upload_sample_populates_every_table(stub, db, patient, sample):
    data = sample.read_bytes()
    bfr = ingest_pb2.BfrInput(
        actual_pressure_aop=50.0, target_pressure_aop=50.0, cuff_size="11.5 cm", device_calibration_date="2025-01-15"
    )
    reply = await _upload(
        stub,
        data,
        sample.name,
        patient,
        rpe_post_session=5,
        game_points=600,
        protocol_day=3,
        session_type=common_pb2.SESSION_TYPE_TRAINING,
        bfr=bfr,
    )
    assert reply.created and reply.status == common_pb2.PROCESSING_STATUS_COMPLETED
    assert reply.file_hash == hashlib.sha256(data).hexdigest()
    assert reply.file_path == f"{patient}/{sample.name}"

    expected = analyze_file(sample, AnalysisSettings(rpe=5, game_points=600, bfr_pressure_aop=50.0))
    s = await db.fetchrow("SELECT * FROM therapy_sessions WHERE id = $1::uuid", reply.session_id)
    assert s["processing_status"] == "completed" and s["error_message"] is None
    assert s["original_sampling_rate"] == 990.0
    assert s["original_sample_count"] == expected.recording["n_samples"]
    assert s["original_duration_seconds"] == pytest.approx(expected.recording["duration_s"])
    assert s["channel_names"] == ["CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated"]
    assert s["channel_count"] == 4 and s["file_size_bytes"] == len(data)
    assert s["processing_version"] == PROCESSING_VERSION and s["processing_time_ms"] > 0
    assert s["patient_id"] == patient and s["therapist_id"] is not None
    assert s["session_type"] == "training" and s["protocol_day"] == 3
    assert s["session_id"] == sample.stem and s["session_date"] is not None
    assert s["session_date"].replace(tzinfo=None).replace(microsecond=0) == expected.metadata[
        "session_datetime"
    ].replace(microsecond=0)
    assert s["game_metadata"]["game_name"] == "Ghostly"

    counts = await _counts(db, s["id"])
    assert counts == {
        "emg_statistics": 2,
        "emg_contractions": sum(c.total_contractions for c in expected.channels),
        "performance_scores": 1,
        "session_settings": 1,
        "bfr_monitoring": 1,
    }
    for ch in expected.channels:
        row = await db.fetchrow(
            "SELECT * FROM emg_statistics WHERE session_id = $1 AND channel_name = $2", s["id"], ch.channel_name
        )
        for col in (
            "total_contractions",
            "good_contractions_intensity",
            "good_contractions_duration",
            "good_contractions_both",
            "artifacts_detected",
            "mvc_calculation_method",
            "side",
        ):
            assert row[col] == getattr(ch, col), col
        for col in (
            "mvc_peak_value",
            "mvc_rms_value",
            "completion_rate",
            "intensity_rate",
            "duration_rate",
            "muscle_compliance_score",
            "signal_quality_score",
            "processing_confidence",
            "mvc_confidence_score",
        ):
            assert row[col] == pytest.approx(getattr(ch, col)), col
        assert row["processing_pipeline"] == "20Hz->Rectify->10Hz->RMS"
        assert row["median_frequency_hz"] == pytest.approx(ch.descriptors.median_frequency_hz)
        starts = [
            r["start_time_s"]
            for r in await db.fetch(
                "SELECT start_time_s FROM emg_contractions WHERE statistics_id = $1 ORDER BY contraction_index",
                row["id"],
            )
        ]
        assert starts == pytest.approx([c.start_s for c in ch.contractions])
    p = await db.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1", s["id"])
    assert p["overall_performance_score"] == pytest.approx(expected.performance.overall_performance_score)
    assert p["effort_score"] == 100.0 and p["rpe_post_session"] == 5
    assert p["game_score"] == pytest.approx(60.0) and p["bfr_compliance_gate"] == 1.0
    assert p["performance_weights"]["excluded"] == {}
    b = await db.fetchrow("SELECT * FROM bfr_monitoring WHERE session_id = $1", s["id"])
    assert b["safety_gate_status"] is True and b["cuff_size"] == "11.5 cm"
    st = await db.fetchrow("SELECT * FROM session_settings WHERE session_id = $1", s["id"])
    assert st["mvc_threshold_percentage"] == 0.75 and st["duration_threshold_seconds"] == 2.0
    assert st["target_contractions_per_muscle"] == 12 and st["mvc_calculation_method"] == "backend_calculated"


async def test_synthetic_known_truth_and_missing_inputs(stub, db, patient, tmp_path):
    data, name = synthetic_bytes(tmp_path, seed=3)
    reply = await _upload(stub, data, name, patient)
    rows = {
        r["channel_name"]: r
        for r in await db.fetch("SELECT * FROM emg_statistics WHERE session_id = $1::uuid", reply.session_id)
    }
    assert rows["CH1"]["total_contractions"] == 12 and rows["CH1"]["good_contractions_duration"] == 12
    assert rows["CH1"]["completion_rate"] == 1.0 and rows["CH1"]["duration_rate"] == 1.0
    assert rows["CH2"]["total_contractions"] == 6 and rows["CH2"]["duration_rate"] == 0.0
    assert rows["CH2"]["completion_rate"] == pytest.approx(0.5)
    p = await db.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1::uuid", reply.session_id)
    # No RPE, no game points, no BFR: excluded and flagged, never scored as perfect.
    assert set(p["performance_weights"]["excluded"]) == {"effort", "game"}
    assert p["performance_weights"]["effort"] == 0 and p["performance_weights"]["game"] == 0
    assert p["rpe_post_session"] is None and p["bfr_pressure_aop"] is None
    assert await db.fetchval("SELECT count(*) FROM bfr_monitoring WHERE session_id = $1::uuid", reply.session_id) == 0


async def test_duplicate_content_gives_one_session(stub, db, patient, tmp_path):
    data, name = synthetic_bytes(tmp_path, seed=5)
    first = await _upload(stub, data, name, patient)
    again = await _upload(stub, data, name, patient)
    renamed = await _upload(stub, data, "Ghostly_Emg_20990101_00-00-00-0000.c3d", patient)
    assert first.created and not again.created and not renamed.created
    assert first.session_id == again.session_id == renamed.session_id
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE file_hash = $1", first.file_hash) == 1


async def test_concurrent_duplicates_give_one_session(stub, db, patient, tmp_path, ingest_server):
    data, name = synthetic_bytes(tmp_path, seed=7)
    replies = await asyncio.gather(*(_upload(stub, data, f"copy{i}_{name}", patient) for i in range(4)))
    assert len({r.session_id for r in replies}) == 1
    assert sum(r.created for r in replies) == 1
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE file_hash = $1", replies[0].file_hash) == 1
    store = ingest_server.context.config.store_dir / patient
    assert len([p for p in store.iterdir() if p.read_bytes() == data]) == 1, "losing copies removed from the store"


@pytest.mark.parametrize("kind", ["random", "truncated", "html"])
async def test_malformed_upload_is_recorded_failed_without_statistics(stub, db, patient, tmp_path, kind):
    good, name = synthetic_bytes(tmp_path, seed=11)
    data = {"random": os.urandom(5000), "truncated": good[: len(good) // 3], "html": b"<html>not a c3d</html>" * 50}[
        kind
    ]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _upload(stub, data, f"{kind}_{name}", patient)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "recorded as failed" in info.value.details()
    row = await db.fetchrow("SELECT * FROM therapy_sessions WHERE file_hash = $1", hashlib.sha256(data).hexdigest())
    assert row["processing_status"] == "failed" and row["error_message"]
    assert all(v == 0 for v in (await _counts(db, row["id"])).values())
    # The same bad file again: same clear refusal, still one row.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await _upload(stub, data, f"{kind}_{name}", patient)
    assert again.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "failed" in again.value.details()


async def test_empty_oversized_and_bad_metadata_leave_nothing(stub, db, patient, tmp_path, ingest_server):
    before = await db.fetchval("SELECT count(*) FROM therapy_sessions")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _upload(stub, b"", "Ghostly_Emg_empty.c3d", patient)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _upload(stub, os.urandom(9 * 1024 * 1024), "Ghostly_Emg_huge.c3d", patient)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Upload(iter([ingest_pb2.UploadRequest(chunk=b"abc")]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "first Upload message" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _upload(stub, b"x" * 10, "Ghostly_Emg_unknown.c3d", "NOBODY")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "not registered" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _upload(stub, b"x" * 10, "Ghostly_Emg_rpe.c3d", patient, rpe_post_session=14)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "rpe" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _upload(stub, b"x" * 10, "../../etc/passwd.c3d", patient)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions") == before
    staging = ingest_server.context.config.store_dir / ".staging"
    assert not any(staging.iterdir()), "no partial upload left in the store"


@pytest.mark.parametrize(
    "path", ["../outside.c3d", "/etc/passwd", "P001/../../x.c3d", "a\\b.c3d", ".staging/x.c3d", ""]
)
async def test_stored_file_path_traversal_refused(stub, path):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.IngestStoredFile(ingest_pb2.IngestStoredFileRequest(file_path=path))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stored_file_symlink_out_of_store_refused(stub, ingest_server, tmp_path, patient):
    store = ingest_server.context.config.store_dir
    (store / patient).mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "secret.c3d"
    outside.write_bytes(b"secret")
    (store / patient / "link.c3d").symlink_to(outside)
    path = f"{patient}/link.c3d"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.IngestStoredFile(signed("s3cret", ingest_pb2.IngestStoredFileRequest(file_path=path, event_id="e1")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "outside" in info.value.details()


async def test_storage_event_signed_idempotent(stub, db, ingest_server, tmp_path, patient):
    data, name = synthetic_bytes(tmp_path, seed=13)
    store = ingest_server.context.config.store_dir
    (store / patient).mkdir(parents=True, exist_ok=True)
    (store / patient / name).write_bytes(data)
    path = f"{patient}/{name}"
    for signature, detail in (("", "required"), ("00" * 32, "does not match")):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.IngestStoredFile(
                ingest_pb2.IngestStoredFileRequest(file_path=path, event_id="ev-1", signature=signature)
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and detail in info.value.details()
    event_id = f"ev-{uuid.uuid4().hex}"
    req = signed("s3cret", ingest_pb2.IngestStoredFileRequest(file_path=path, event_id=event_id))
    first = await stub.IngestStoredFile(req)
    replay = await stub.IngestStoredFile(req)
    assert first.created and not replay.created and first.session_id == replay.session_id
    assert await db.fetchval("SELECT patient_id FROM therapy_sessions WHERE id = $1::uuid", first.session_id) == patient
    missing = f"{patient}/nope.c3d"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.IngestStoredFile(
            signed("s3cret", ingest_pb2.IngestStoredFileRequest(file_path=missing, event_id=f"e-{uuid.uuid4().hex}"))
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_storage_event_signature_covers_the_whole_request(stub, db, ingest_server, tmp_path, patient):
    """A captured event cannot be replayed with another patient (or any other body change),
    nor later than the allowed clock skew, nor reuse its id for another request."""
    import time

    other = await register_patient(db, "X")
    data, name = synthetic_bytes(tmp_path, seed=251)
    store = ingest_server.context.config.store_dir
    (store / patient).mkdir(parents=True, exist_ok=True)
    (store / patient / name).write_bytes(data)
    path = f"{patient}/{name}"
    good = signed(
        "s3cret",
        ingest_pb2.IngestStoredFileRequest(
            file_path=path, event_id=f"ev-{uuid.uuid4().hex}", session=ingest_pb2.SessionMetadata(patient_code=patient)
        ),
    )
    tampered = ingest_pb2.IngestStoredFileRequest()
    tampered.CopyFrom(good)
    tampered.session.patient_code = other
    stale = signed(
        "s3cret",
        ingest_pb2.IngestStoredFileRequest(file_path=path, event_id="ev-old"),
        now=time.time() - MAX_SKEW_S - 60,
    )
    future = signed(
        "s3cret",
        ingest_pb2.IngestStoredFileRequest(file_path=path, event_id="ev-future"),
        now=time.time() + MAX_SKEW_S + 60,
    )
    for req, detail in (
        (tampered, "does not match"),
        (stale, "away from the server's clock"),
        (future, "away from the server's clock"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.IngestStoredFile(req)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and detail in info.value.details()
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE file_path = $1", path) == 0
    first = await stub.IngestStoredFile(good)
    assert first.created
    # The same event id, validly signed, for another request: refused.
    reused = signed(
        "s3cret",
        ingest_pb2.IngestStoredFileRequest(
            file_path=path,
            event_id=good.event_id,
            session=ingest_pb2.SessionMetadata(patient_code=patient, protocol_day=3),
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.IngestStoredFile(reused)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "already used" in info.value.details()
    assert sign("s3cret", good) == good.signature


async def test_processing_status(stub, patient, tmp_path):
    data, name = synthetic_bytes(tmp_path, seed=17)
    reply = await _upload(stub, data, name, patient)
    for key in ({"session_id": reply.session_id}, {"file_hash": reply.file_hash}, {"file_path": reply.file_path}):
        st = await stub.GetProcessingStatus(ingest_pb2.GetProcessingStatusRequest(**key))
        assert st.session_id == reply.session_id and st.status == common_pb2.PROCESSING_STATUS_COMPLETED
        assert st.processed_at.seconds > 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetProcessingStatus(ingest_pb2.GetProcessingStatusRequest(file_hash="0" * 64))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetProcessingStatus(ingest_pb2.GetProcessingStatusRequest(session_id="nope"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_reprocess_after_settings_change(stub, db, patient, tmp_path):
    data, name = synthetic_bytes(tmp_path, seed=19, n_left=12, dur_left=2.5)
    reply = await _upload(stub, data, name, patient, rpe_post_session=5)
    sid = reply.session_id
    before = await db.fetchrow(
        "SELECT id, good_contractions_duration FROM emg_statistics "
        "WHERE session_id = $1::uuid AND channel_name = 'CH1'",
        sid,
    )
    assert before["good_contractions_duration"] == 12
    await db.execute(
        "INSERT INTO signal_processing_cache (session_id, processing_request_hash, processing_version, "
        "cache_type) VALUES ($1::uuid, 'abc', $2, 'visualization_1k')",
        sid,
        PROCESSING_VERSION,
    )
    # 3 s duration threshold: the 2.5 s contractions no longer count as good.
    req = ingest_pb2.ReprocessRequest(session_id=sid, options=ingest_pb2.AnalysisOptions(duration_threshold_s=3.0))
    progress = [m async for m in stub.Reprocess(req)]
    assert progress[-1].done and progress[-1].done_count == 1 and progress[-1].failed_count == 0
    after = await db.fetchrow(
        "SELECT id, good_contractions_duration, duration_threshold_seconds FROM emg_statistics "
        "WHERE session_id = $1::uuid AND channel_name = 'CH1'",
        sid,
    )
    assert after["good_contractions_duration"] == 0 and after["duration_threshold_seconds"] == 3.0
    assert after["id"] != before["id"], "statistics rows replaced"
    assert (
        await db.fetchval("SELECT duration_threshold_seconds FROM session_settings WHERE session_id = $1::uuid", sid)
        == 3.0
    )
    assert await db.fetchval("SELECT rpe_post_session FROM performance_scores WHERE session_id = $1::uuid", sid) == 5
    cache = await db.fetchrow(
        "SELECT cache_valid, invalidated_reason FROM signal_processing_cache WHERE session_id = $1::uuid", sid
    )
    assert cache["cache_valid"] is False and cache["invalidated_reason"] == "session_reprocessed"
    # Without changes, a reprocess reproduces the same figures (inputs rebuilt from the tables).
    _ = [m async for m in stub.Reprocess(ingest_pb2.ReprocessRequest(session_id=sid))]
    again = await db.fetchval(
        "SELECT good_contractions_duration FROM emg_statistics WHERE session_id = $1::uuid AND channel_name = 'CH1'",
        sid,
    )
    assert again == 0


async def test_reprocess_patient_streams_progress(stub, patient, tmp_path):
    for seed in (23, 29, 31):
        data, name = synthetic_bytes(tmp_path, seed=seed)
        await _upload(stub, data, name, patient)
    progress = [m async for m in stub.Reprocess(ingest_pb2.ReprocessRequest(patient_code=patient))]
    assert [m.done_count for m in progress] == [1, 2, 3, 3]
    assert progress[-1].done and progress[-1].total_count == 3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [m async for m in stub.Reprocess(ingest_pb2.ReprocessRequest())]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [
            m
            async for m in stub.Reprocess(
                ingest_pb2.ReprocessRequest(session_id="00000000-0000-0000-0000-000000000000")
            )
        ]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reprocess_reports_changed_source_file(stub, db, patient, tmp_path, ingest_server):
    data, name = synthetic_bytes(tmp_path, seed=37)
    reply = await _upload(stub, data, name, patient)
    stored = ingest_server.context.config.store_dir / reply.file_path
    shutil.copy(stored, tmp_path / "backup")
    stored.unlink()
    stored.write_bytes(data[:-4] + b"\0\0\0\1")
    progress = [m async for m in stub.Reprocess(ingest_pb2.ReprocessRequest(session_id=reply.session_id))]
    assert progress[0].status == common_pb2.PROCESSING_STATUS_FAILED and "data loss" in progress[0].error_message
    # The recorded statistics are untouched.
    assert await db.fetchval("SELECT count(*) FROM emg_statistics WHERE session_id = $1::uuid", reply.session_id) == 2


async def test_cli_ingest_folder_summary(ingest_server, patient, tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT, subprocess_env

    folder = tmp_path / patient
    folder.mkdir()
    for seed in (41, 43):
        data, name = synthetic_bytes(tmp_path, seed=seed)
        (folder / name).write_bytes(data)
    (folder / "Ghostly_Emg_broken.c3d").write_bytes(b"broken" * 100)
    cmd = [sys.executable, "-m", "app.cli", "ingest", str(folder), "--address", ingest_server.address]
    first = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert first.returncode == 1, first.stderr
    assert "2 new, 0 duplicate, 1 failed" in first.stdout
    assert "Ghostly_Emg_broken.c3d: INVALID_ARGUMENT" in first.stdout
    again = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert "0 new, 2 duplicate, 1 failed" in again.stdout


async def test_reprocess_only_outdated_brings_old_sessions_up_to_date(stub, db, patient, tmp_path):
    """Sessions analysed by an older algorithm (processing_version) are the only ones redone,
    and come back with the current version's statistics (signal flags included)."""
    replies = []
    for seed in (241, 243):  # seeds no other test uploads (same bytes = same session)
        data, name = synthetic_bytes(tmp_path, seed=seed)
        replies.append(await _upload(stub, data, name, patient))
    old, current = replies
    # As a 1.0.0 analysis left it: older version, no flags recorded.
    await db.execute("UPDATE therapy_sessions SET processing_version = '1.0.0' WHERE id = $1::uuid", old.session_id)
    await db.execute(
        "UPDATE emg_statistics SET processing_version = '1.0.0', signal_flags = '{}' WHERE session_id = $1::uuid",
        old.session_id,
    )
    before = await db.fetchval("SELECT processed_at FROM therapy_sessions WHERE id = $1::uuid", current.session_id)
    progress = [m async for m in stub.Reprocess(ingest_pb2.ReprocessRequest(patient_code=patient, only_outdated=True))]
    assert [m.session_id for m in progress[:-1]] == [old.session_id], progress
    assert progress[-1].done and progress[-1].total_count == 1 and progress[-1].failed_count == 0
    rows = await db.fetch(
        "SELECT id::text, processing_version, processed_at FROM therapy_sessions WHERE patient_id = $1", patient
    )
    assert {r["processing_version"] for r in rows} == {PROCESSING_VERSION}
    assert {r["id"]: r["processed_at"] for r in rows}[current.session_id] == before  # untouched
    versions = await db.fetch(
        "SELECT DISTINCT processing_version FROM emg_statistics WHERE session_id = $1::uuid", old.session_id
    )
    assert [r["processing_version"] for r in versions] == [PROCESSING_VERSION]
    again = [m async for m in stub.Reprocess(ingest_pb2.ReprocessRequest(patient_code=patient, only_outdated=True))]
    assert again[-1].done and again[-1].total_count == 0


async def test_session_with_no_usable_emg_is_completed_but_not_scored(stub, db, patient, tmp_path):
    """Two disconnected electrodes are not the patient's 0: the statistics are stored with the
    flags, no performance score is written, and the reply says which electrodes to check."""
    spec = SyntheticSpec(
        duration_s=40.0, seed=47, channels=[ChannelSpec(noise_sd_v=13e-6), ChannelSpec(noise_sd_v=12e-6)]
    )
    name = ghostly_file_name(spec, seconds=47)
    write_synthetic_c3d(tmp_path / name, spec)
    reply = await _upload(stub, (tmp_path / name).read_bytes(), name, patient)
    assert reply.status == common_pb2.PROCESSING_STATUS_COMPLETED
    assert not reply.HasField("overall_performance_score")
    assert any("check the CH1 (left) electrode" in w for w in reply.warnings)
    assert any("check the CH2 (right) electrode" in w for w in reply.warnings)
    assert any(w.startswith("Session not scored") for w in reply.warnings)
    counts = await _counts(db, reply.session_id)
    assert counts["emg_statistics"] == 2 and counts["performance_scores"] == 0
    flags = await db.fetch(
        "SELECT signal_flags, usable FROM emg_statistics WHERE session_id = $1::uuid", reply.session_id
    )
    assert all(r["signal_flags"] == ["no_usable_emg"] and r["usable"] is False for r in flags)
