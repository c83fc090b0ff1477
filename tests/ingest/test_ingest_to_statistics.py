"""Sessions created through IngestService, read back through StatisticsService: the dashboard
figures equal the EMG core's result for the same file and settings."""
from __future__ import annotations

import grpc
import pytest

from ghostly.ingest.v1 import ingest_pb2
from ghostly.statistics.v1 import statistics_pb2 as spb, statistics_pb2_grpc
from libs.emg import AnalysisSettings, analyze_file
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
        channels = {c.channel_name: c for c in (await stats.GetEmgStatistics(spb.GetEmgStatisticsRequest(
            session_id=reply.session_id, include_contractions=True))).channels}
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
        [e.performance.overall_performance_score for e in expected])
    assert progress.sessions_done == 3 and progress.best_score == pytest.approx(
        max(e.performance.overall_performance_score for e in expected))

    # The cohort summary (pre-computed by migration 014's triggers) follows the write path,
    # also when a Reprocess rewrites the scores.
    therapist = await db.fetchval("SELECT therapist_id FROM patients WHERE patient_code = $1", patient)

    async def cohort_days():
        res = await stats.GetCohortSummary(spb.GetCohortSummaryRequest(therapist_id=str(therapist)))
        assert res.patient_count == 1 and res.session_count == 3
        return {d.protocol_day: d.mean_overall_score for d in res.days}

    assert await cohort_days() == pytest.approx(
        {day: e.performance.overall_performance_score for day, e in enumerate(expected, start=1)})
    req = ingest_pb2.ReprocessRequest(session_id=replies[0].session_id,
                                      options=ingest_pb2.AnalysisOptions(duration_threshold_s=30.0))
    assert [m async for m in stub.Reprocess(req)][-1].done_count == 1
    rescored = await stats.GetPerformanceScore(spb.SessionKey(session_id=replies[0].session_id))
    assert rescored.overall_performance_score != pytest.approx(expected[0].performance.overall_performance_score)
    assert (await cohort_days())[1] == pytest.approx(rescored.overall_performance_score)
