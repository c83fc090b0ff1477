"""Sessions created through IngestService, read back through StatisticsService: the dashboard
figures equal the EMG core's result for the same file and settings."""

from __future__ import annotations

import uuid

import grpc
import pytest

from ghostly.ingest.v1 import ingest_pb2
from ghostly.statistics.v1 import statistics_pb2 as spb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.emg import AnalysisSettings, analyze_file
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from libs.grpc_server import start_service
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import make_config
from tests.ingest.test_ingest_service import _upload, synthetic_bytes


@pytest.fixture(scope="module")
async def stats(database_url, shared_data_dir):
    server = await start_service(STATISTICS, make_config(database_url, shared_data_dir), port=0)
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield statistics_pb2_grpc.StatisticsServiceStub(ch)
    await server.stop(0)


async def test_ingested_sessions_read_back(stub, stats, db, patient, tmp_path):
    replies, expected = [], []
    for day, seed in enumerate((61, 67, 71), start=1):
        data, name = synthetic_bytes(tmp_path, seed=seed, n_left=6 + 2 * day)
        replies.append(await _upload(stub, data, name, patient, rpe_post_session=5, protocol_day=day))
        path = tmp_path / name
        path.write_bytes(data)
        expected.append(analyze_file(path, AnalysisSettings(rpe=5)))

    for reply, exp in zip(replies, expected):
        session = await stats.GetSession(spb.GetSessionRequest(session_id=reply.session_id))
        assert session.patient_id == patient and session.original_sampling_rate == 990.0
        assert session.original_sample_count == exp.recording["n_samples"]
        channels = {
            c.channel_name: c
            for c in (
                await stats.GetEmgStatistics(
                    spb.GetEmgStatisticsRequest(session_id=reply.session_id, include_contractions=True)
                )
            ).channels
        }
        for ch in exp.channels:
            got = channels[ch.channel_name]
            assert got.total_contractions == ch.total_contractions
            assert got.completion_rate == pytest.approx(ch.completion_rate)
            assert got.mvc_rms_value == pytest.approx(ch.mvc_rms_value)
            assert [c.start_s for c in got.contractions] == pytest.approx([c.start_s for c in ch.contractions])
        score = await stats.GetPerformanceScore(spb.SessionKey(session_id=reply.session_id))
        assert score.overall_performance_score == pytest.approx(exp.performance.overall_performance_score)
        assert score.effort_score == 100.0 and not score.HasField("game_score")
        assert dict(score.excluded_components).keys() == {"game"}

    progress = await stats.GetPatientProgress(spb.GetPatientProgressRequest(patient_id=patient))
    assert [p.protocol_day for p in progress.points] == [1, 2, 3]
    assert [p.overall_performance_score for p in progress.points] == pytest.approx(
        [e.performance.overall_performance_score for e in expected]
    )
    assert progress.sessions_done == 3 and progress.best_score == pytest.approx(
        max(e.performance.overall_performance_score for e in expected)
    )

    # The cohort summary (pre-computed by migration 014's triggers) follows the write path,
    # also when a Reprocess rewrites the scores.
    therapist = await db.fetchval("SELECT therapist_id FROM patients WHERE patient_code = $1", patient)

    async def cohort_days():
        res = await stats.GetCohortSummary(spb.GetCohortSummaryRequest(therapist_id=str(therapist)))
        assert res.patient_count == 1 and res.session_count == 3
        return {d.protocol_day: d.mean_overall_score for d in res.days}

    assert await cohort_days() == pytest.approx(
        {day: e.performance.overall_performance_score for day, e in enumerate(expected, start=1)}
    )
    req = ingest_pb2.ReprocessRequest(
        session_id=replies[0].session_id, options=ingest_pb2.AnalysisOptions(duration_threshold_s=30.0)
    )
    assert [m async for m in stub.Reprocess(req)][-1].done_count == 1
    rescored = await stats.GetPerformanceScore(spb.SessionKey(session_id=replies[0].session_id))
    assert rescored.overall_performance_score != pytest.approx(expected[0].performance.overall_performance_score)
    assert (await cohort_days())[1] == pytest.approx(rescored.overall_performance_score)


def _dropout_file(tmp_path, seed: int) -> tuple[bytes, str]:
    """CH1 with a wireless dropout (constant fill) in a rest period after the contractions, CH2 clean."""
    spec = SyntheticSpec(
        duration_s=80.0,
        seed=seed,
        channels=[
            ChannelSpec(contractions=regular_contractions(10, 2.5, 6.0), dropouts=[(71.0, 800)]),
            ChannelSpec(contractions=regular_contractions(6, 1.0, 8.0, amplitude_v=200e-6)),
        ],
    )
    name = ghostly_file_name(spec, seconds=seed % 60)
    write_synthetic_c3d(tmp_path / name, spec)
    return (tmp_path / name).read_bytes(), name


async def test_dropout_flag_is_stored_and_served(stub, stats, db, patient, tmp_path):
    """A dropout in the C3D comes back as 'dropout' in the row and in ChannelStatistics."""
    data, name = _dropout_file(tmp_path, seed=83)
    expected = {c.channel_name: c for c in analyze_file(tmp_path / name).channels}
    assert expected["CH1"].signal_flags == ["dropout"]  # the EMG core's verdict for this file
    reply = await _upload(stub, data, name, patient)
    rows = {
        r["channel_name"]: r
        for r in await db.fetch(
            "SELECT channel_name, signal_flags, usable FROM emg_statistics WHERE session_id = $1::uuid",
            reply.session_id,
        )
    }
    assert rows["CH1"]["signal_flags"] == ["dropout"] and rows["CH2"]["signal_flags"] == []
    for ch, exp in expected.items():
        assert rows[ch]["signal_flags"] == exp.signal_flags and rows[ch]["usable"] is exp.usable

    got = {
        c.channel_name: c
        for c in (await stats.GetEmgStatistics(spb.GetEmgStatisticsRequest(session_id=reply.session_id))).channels
    }
    assert list(got["CH1"].signal_flags) == ["dropout"] and list(got["CH2"].signal_flags) == []
    assert got["CH1"].usable is expected["CH1"].usable and got["CH2"].usable is expected["CH2"].usable
    batch = await stats.BatchGetSessionStatistics(spb.BatchGetSessionStatisticsRequest(session_ids=[reply.session_id]))
    [item] = batch.sessions
    assert {c.channel_name: list(c.signal_flags) for c in item.channels} == {"CH1": ["dropout"], "CH2": []}
    assert {c.channel_name: c.usable for c in item.channels} == {c: got[c].usable for c in got}


async def test_write_results_stores_flags_usable_and_masked_contractions(stub, stats, db, patient, tmp_path):
    """Every new field of the analysis reaches the database and the API unchanged (set by hand
    here, independently of which flags the EMG core raises for a given file)."""
    from services.ingest import repository

    data, name = synthetic_bytes(tmp_path, seed=89)
    reply = await _upload(stub, data, name, patient)
    path = tmp_path / name
    path.write_bytes(data)
    settings = AnalysisSettings()
    analysis = analyze_file(path, settings)
    ch1, ch2 = analysis.channel("CH1"), analysis.channel("CH2")
    ch1.signal_flags, ch1.usable = ["saturation", "weak_signal", "partially_masked"], False
    ch2.signal_flags, ch2.usable = [], True
    assert len(ch1.contractions) >= 3
    ch1.contractions[1].partially_masked, ch1.contractions[1].masked_s = True, 0.375
    ch1.contractions[2].partially_masked, ch1.contractions[2].masked_s = True, 1.25
    await repository.write_results(
        db,
        uuid.UUID(reply.session_id),
        analysis,
        settings,
        bfr=None,
        game_difficulty_level=None,
        processing_time_ms=1,
        game_metadata={},
    )

    res = await stats.GetEmgStatistics(
        spb.GetEmgStatisticsRequest(session_id=reply.session_id, include_contractions=True)
    )
    got = {c.channel_name: c for c in res.channels}
    assert list(got["CH1"].signal_flags) == ["saturation", "weak_signal", "partially_masked"]
    assert got["CH1"].usable is False
    assert list(got["CH2"].signal_flags) == [] and got["CH2"].usable is True
    masked = [(c.index, c.partially_masked, c.masked_s) for c in got["CH1"].contractions]
    assert masked[:3] == [(0, False, 0.0), (1, True, 0.375), (2, True, 1.25)]
    assert all(not m and s == 0.0 for _, m, s in masked[3:])
    assert all(not c.partially_masked and c.masked_s == 0.0 for c in got["CH2"].contractions)
    assert len(got["CH1"].contractions) == len(ch1.contractions)
    rows = await db.fetch(
        "SELECT contraction_index, partially_masked, masked_s FROM emg_contractions "
        "WHERE session_id = $1::uuid AND channel_name = 'CH1' ORDER BY contraction_index",
        reply.session_id,
    )
    assert [tuple(r) for r in rows[:3]] == [(0, False, 0.0), (1, True, 0.375), (2, True, 1.25)]
    batch = await stats.BatchGetSessionStatistics(
        spb.BatchGetSessionStatisticsRequest(session_ids=[reply.session_id], channels=["CH1"])
    )
    [c] = batch.sessions[0].channels
    assert list(c.signal_flags) == ["saturation", "weak_signal", "partially_masked"] and c.usable is False


async def test_an_unusable_side_shows_no_symmetry_rather_than_zero(stub, stats, db, patient, tmp_path):
    """A disconnected right electrode: symmetry is excluded and served unset (never a 0 the
    patient did not earn); compliance is the left side's."""
    spec = SyntheticSpec(
        duration_s=60.0,
        seed=97,
        channels=[ChannelSpec(contractions=regular_contractions(10, 2.5, 5.5)), ChannelSpec(noise_sd_v=13e-6)],
    )
    name = ghostly_file_name(spec, seconds=37)
    write_synthetic_c3d(tmp_path / name, spec)
    reply = await _upload(stub, (tmp_path / name).read_bytes(), name, patient)
    score = await stats.GetPerformanceScore(spb.SessionKey(session_id=reply.session_id))
    assert not score.HasField("symmetry_score") and "symmetry" in score.excluded_components
    assert "CH2 (right)" in score.excluded_components["symmetry"]
    assert score.HasField("compliance_score") and score.compliance_score > 0
    progress = await stats.GetPatientProgress(spb.GetPatientProgressRequest(patient_id=patient))
    [point] = [pt for pt in progress.points if pt.session_id == reply.session_id]
    assert not point.HasField("symmetry_score")
