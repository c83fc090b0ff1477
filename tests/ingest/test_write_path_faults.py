"""The write path under concurrency and hostile fields (issue 16, items 1 and 3): concurrent
writers of one session take turns (nothing lost, no INTERNAL), and a field outside what can be
stored is INVALID_ARGUMENT before anything is stored (no session row, no store file), after
which the corrected request succeeds."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2
from services.ingest.events import signed
from tests.helpers import upload_messages
from tests.ingest.test_ingest_service import synthetic_bytes


async def _final(stub, request) -> ingest_pb2.ReprocessProgress:
    last = None
    async for msg in stub.Reprocess(request):
        last = msg
    assert last is not None, "Reprocess sent no message"
    return last


async def _session_state(db, sid) -> tuple:
    row = await db.fetchrow("SELECT processing_status, error_message FROM therapy_sessions WHERE id = $1::uuid", sid)
    stats = await db.fetchval("SELECT count(*) FROM emg_statistics WHERE session_id = $1::uuid", sid)
    scores = await db.fetchval("SELECT count(*) FROM performance_scores WHERE session_id = $1::uuid", sid)
    return row["processing_status"], row["error_message"], stats, scores


async def test_ten_concurrent_reprocess_calls_on_one_session_all_succeed(stub, db, patient, tmp_path):
    data, name = synthetic_bytes(tmp_path, seed=7131)
    reply = await stub.Upload(upload_messages(data, name, patient, rpe_post_session=5))
    contractions = await db.fetchval(
        "SELECT count(*) FROM emg_contractions WHERE session_id = $1::uuid", reply.session_id
    )
    finals = await asyncio.gather(
        *(_final(stub, ingest_pb2.ReprocessRequest(session_id=reply.session_id)) for _ in range(10))
    )
    for f in finals:
        assert f.done and f.done_count == 1 and f.failed_count == 0
    assert await _session_state(db, reply.session_id) == ("completed", None, 2, 1)
    assert (
        await db.fetchval("SELECT count(*) FROM emg_contractions WHERE session_id = $1::uuid", reply.session_id)
        == contractions
    )


async def test_reprocess_and_outcome_concurrently_keep_every_write(stub, db, patient, tmp_path):
    data, name = synthetic_bytes(tmp_path, seed=7132)
    reply = await stub.Upload(upload_messages(data, name, patient))
    calls = [_final(stub, ingest_pb2.ReprocessRequest(session_id=reply.session_id)) for _ in range(4)]
    calls += [
        stub.RecordSessionOutcome(
            ingest_pb2.RecordSessionOutcomeRequest(session_id=reply.session_id, rpe_post_session=rpe)
        )
        for rpe in (3, 4, 5, 6)
    ]
    results = await asyncio.gather(*calls)
    assert all(r.failed_count == 0 for r in results[:4])
    assert await _session_state(db, reply.session_id) == ("completed", None, 2, 1)
    # The recorded outcome is what the session is scored with, whoever wrote last.
    recorded = await db.fetchval(
        "SELECT rpe_post_session FROM session_outcomes WHERE session_id = $1::uuid", reply.session_id
    )
    assert (
        await db.fetchval(
            "SELECT rpe_post_session FROM performance_scores WHERE session_id = $1::uuid", reply.session_id
        )
        == recorded
    )


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


BAD_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "game_difficulty_level 0": (
        "session.options.game_difficulty_level",
        dict(options=ingest_pb2.AnalysisOptions(game_difficulty_level=0)),
    ),
    "game_difficulty_level 11": (
        "session.options.game_difficulty_level",
        dict(options=ingest_pb2.AnalysisOptions(game_difficulty_level=11)),
    ),
    "target_contractions 2^32-1": (
        "session.options.target_contractions",
        dict(options=ingest_pb2.AnalysisOptions(target_contractions=4294967295)),
    ),
    "safety_violations_count 2^32-1": (
        "session.bfr.safety_violations_count",
        dict(bfr=ingest_pb2.BfrInput(actual_pressure_aop=50.0, safety_violations_count=4294967295)),
    ),
    "session_date year 10000": ("session.session_date", dict(session_date=_ts(253402300800))),
    "session_date year 0": ("session.session_date", dict(session_date=_ts(-62135596801))),
    "protocol_day 0": ("session.protocol_day", dict(protocol_day=0)),
    "unknown session_type": ("session.session_type", dict(session_type=99)),
    "mvc_user_left NaN": (
        "session.options.mvc_user_left",
        dict(options=ingest_pb2.AnalysisOptions(mvc_user_left=float("nan"))),
    ),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS), ids=list(BAD_FIELDS))
async def test_out_of_range_field_refused_before_anything_is_stored(stub, db, patient, tmp_path, ingest_server, case):
    field, bad = BAD_FIELDS[case]
    data, name = synthetic_bytes(tmp_path, seed=7100 + list(BAD_FIELDS).index(case))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Upload(upload_messages(data, name, patient, **bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()
    digest = hashlib.sha256(data).hexdigest()
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE file_hash = $1", digest) == 0
    store = Path(ingest_server.context.config.store_dir)
    assert not (store / patient / name).exists()
    assert not list((store / ".staging").glob("*.part"))

    good = await stub.Upload(upload_messages(data, name, patient))  # the corrected retry
    assert good.created and good.status == common_pb2.PROCESSING_STATUS_COMPLETED


async def test_storage_event_with_bad_field_records_nothing(stub, db, patient, tmp_path, ingest_server):
    data, name = synthetic_bytes(tmp_path, seed=7160)
    store = Path(ingest_server.context.config.store_dir)
    (store / patient).mkdir(parents=True, exist_ok=True)
    (store / patient / name).write_bytes(data)
    path = f"{patient}/{name}"
    bad = signed(
        "s3cret",
        ingest_pb2.IngestStoredFileRequest(
            file_path=path, event_id=f"evt-{name}", session=ingest_pb2.SessionMetadata(protocol_day=-3)
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.IngestStoredFile(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "session.protocol_day" in err.value.details()
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE file_path = $1", path) == 0
    assert await db.fetchval("SELECT count(*) FROM storage_event_replays WHERE event_id = $1", bad.event_id) == 0
    good = await stub.IngestStoredFile(
        signed(
            "s3cret",
            ingest_pb2.IngestStoredFileRequest(
                file_path=path, event_id=bad.event_id, session=ingest_pb2.SessionMetadata(protocol_day=3)
            ),
        )
    )
    assert good.created and good.status == common_pb2.PROCESSING_STATUS_COMPLETED


async def test_reprocess_with_out_of_range_option_changes_nothing(stub, db, patient, tmp_path):
    data, name = synthetic_bytes(tmp_path, seed=7161)
    reply = await stub.Upload(upload_messages(data, name, patient))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _final(
            stub,
            ingest_pb2.ReprocessRequest(
                session_id=reply.session_id, options=ingest_pb2.AnalysisOptions(target_contractions=4294967295)
            ),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "options.target_contractions" in err.value.details()
    assert await _session_state(db, reply.session_id) == ("completed", None, 2, 1)
