"""Deadlines and message size limits.

* A client deadline shorter than the work ends the call with DEADLINE_EXCEEDED promptly
  (< deadline + 200 ms), for a unary and a streaming RPC, and the server stops the work: the
  database query is cancelled (pg_stat_activity), the handler is gone (in-flight gauge back
  to 0, JIT in-flight counter 0) and the pool connection is back.
  The "work" is made long deterministically by holding a lock on therapy_sessions.
* An Upload chunk over GHOSTLY_MAX_MESSAGE_BYTES is refused by gRPC itself with
  RESOURCE_EXHAUSTED, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2 as spb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.grpc_server import metrics, start_service
from services.ingest.server import SPEC as INGEST
from services.jit_signal.server import SPEC as JIT
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import connect, make_config, synthetic_file, upload_messages, wait_for
from tests.helpers import register_patient_at as register_patient

DEADLINE_S = 0.4
SLACK_S = 0.2


def _gauge(service: str, method: str) -> float:
    return metrics.RPC_IN_FLIGHT.labels(service, method)._value.get()


def _handled(service: str, method: str, code: str) -> float:
    return metrics.RPC_HANDLED.labels(service, method, code)._value.get()


@pytest.fixture(scope="module")
async def servers(own_pg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deadlines")
    cfg = make_config(own_pg.dsn, tmp, ingest_workers=1, max_message_bytes=64 << 10)
    patient = await register_patient(own_pg.dsn)
    started = {spec.name: await start_service(spec, cfg, port=0, metrics_port=0) for spec in (INGEST, STATISTICS, JIT)}
    name, data = synthetic_file(tmp, 31337)
    async with grpc.aio.insecure_channel(started["ingest"].address) as ch:
        reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(
            upload_messages(data, name, patient, chunk=32 << 10), timeout=30
        )
    yield started, reply.session_id
    for s in started.values():
        await s.stop(0)


async def _lock_sessions(dsn: str):
    """A connection holding ACCESS EXCLUSIVE on therapy_sessions (every read of it waits)."""
    conn = await connect(dsn)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE therapy_sessions IN ACCESS EXCLUSIVE MODE")
    return conn, tx


async def _waiting_queries(conn, app: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
        "AND state = 'active' AND wait_event_type = 'Lock'",
        app,
    )


async def test_unary_deadline_exceeded_quickly_and_work_stops(own_pg, servers):
    started, _session_id = servers
    stats = started["statistics"]
    before = _handled("statistics", "ListSessions", "DEADLINE_EXCEEDED")
    locker, tx = await _lock_sessions(own_pg.dsn)
    try:
        async with grpc.aio.insecure_channel(stats.address) as ch:
            stub = statistics_pb2_grpc.StatisticsServiceStub(ch)
            t0 = time.monotonic()
            call = stub.ListSessions(spb.ListSessionsRequest(page_size=5), timeout=DEADLINE_S)
            await asyncio.sleep(DEADLINE_S / 2)
            assert await _waiting_queries(locker, "ghostly-statistics") == 1  # the work is running
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            elapsed = time.monotonic() - t0
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed < DEADLINE_S + SLACK_S, elapsed
        # The server stopped the work: the blocked query is cancelled, the handler has finished.
        await wait_for(lambda: _zero(locker, "ghostly-statistics"), timeout=2)
        await wait_for(lambda: _true(_gauge("statistics", "ListSessions") == 0), timeout=2)
        assert _handled("statistics", "ListSessions", "DEADLINE_EXCEEDED") == before + 1
    finally:
        await tx.rollback()
        await locker.close()
    pool = stats.context.pool
    await wait_for(lambda: _true(pool.get_idle_size() == pool.get_size()), timeout=2)
    async with grpc.aio.insecure_channel(stats.address) as ch:  # and the service is fine
        await statistics_pb2_grpc.StatisticsServiceStub(ch).ListSessions(
            spb.ListSessionsRequest(page_size=5), timeout=2
        )


async def test_streaming_deadline_exceeded_quickly_and_work_stops(own_pg, servers):
    started, session_id = servers
    jit = started["jit_signal"]
    servicer = jit.context.jit_signal
    locker, tx = await _lock_sessions(own_pg.dsn)
    try:
        async with grpc.aio.insecure_channel(jit.address) as ch:
            stub = jit_signal_pb2_grpc.JitSignalServiceStub(ch)
            t0 = time.monotonic()
            call = stub.StreamSignals(
                jpb.StreamSignalsRequest(session_id=session_id, full_resolution=True), timeout=DEADLINE_S
            )

            async def drain():
                async for _ in call:
                    pass

            reader = asyncio.ensure_future(drain())
            await asyncio.sleep(DEADLINE_S / 2)
            assert await _waiting_queries(locker, "ghostly-jit_signal") == 1  # the work is running
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reader
            elapsed = time.monotonic() - t0
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed < DEADLINE_S + SLACK_S, elapsed
        await wait_for(lambda: _zero(locker, "ghostly-jit_signal"), timeout=2)
        await wait_for(lambda: _true(servicer.inflight == 0), timeout=2)
        await wait_for(lambda: _true(_gauge("jit_signal", "StreamSignals") == 0), timeout=2)
        assert not servicer.background, "work left running after the deadline"
    finally:
        await tx.rollback()
        await locker.close()
    async with grpc.aio.insecure_channel(jit.address) as ch:  # and the service answers at once
        chunks = [
            m
            async for m in jit_signal_pb2_grpc.JitSignalServiceStub(ch).StreamSignals(
                jpb.StreamSignalsRequest(session_id=session_id, max_points=100), timeout=10
            )
        ]
        assert chunks


async def test_upload_chunk_over_max_message_size_is_resource_exhausted(servers):
    started, _ = servers
    ingest = started["ingest"]
    limit = ingest.context.config.max_message_bytes
    assert limit == 64 << 10
    async with grpc.aio.insecure_channel(ingest.address, options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        meta = ingest_pb2.UploadMetadata(file_name="big.c3d", session=ingest_pb2.SessionMetadata(patient_code="X"))
        msgs = [ingest_pb2.UploadRequest(metadata=meta), ingest_pb2.UploadRequest(chunk=b"\0" * (limit + 1))]
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Upload(iter(msgs), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
        assert time.monotonic() - t0 < 2
        # The same bytes in chunks under the limit reach the service (which judges the content).
        small = [msgs[0], *(ingest_pb2.UploadRequest(chunk=b"\0" * (limit // 2)) for _ in range(3))]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Upload(iter(small), timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # patient X is not registered
    assert ingest.serving


async def _zero(conn, app: str) -> bool:
    return await _waiting_queries(conn, app) == 0


async def _true(value: bool) -> bool:
    return value
