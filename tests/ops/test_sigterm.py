"""SIGTERM while calls are in flight: the service (a real `python -m services.<name>` process)
stops taking new calls, lets the in-flight ones finish within GHOSTLY_SHUTDOWN_GRACE_S, and
exits 0. Covered: a long full-resolution JIT stream read slowly, and an Upload mid-stream."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.healthcheck import check
from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from libs.grpc_server import start_service
from services.ingest.server import SPEC as INGEST
from tests.helpers import (
    ROOT,
    connect,
    free_port,
    make_config,
    subprocess_env,
    synthetic_file,
    upload_messages,
    wait_for,
)
from tests.helpers import register_patient_at as register_patient

GRACE_S = 10


def _spawn(name: str, dsn: str, data_dir, port: int, log_path) -> subprocess.Popen:
    env = subprocess_env(
        DATABASE_URL=dsn,
        GHOSTLY_DATA_DIR=str(data_dir),
        GHOSTLY_SHUTDOWN_GRACE_S=str(GRACE_S),
        GHOSTLY_HEALTH_INTERVAL_S="0.2",
        GHOSTLY_INGEST_WORKERS="1",
        **{f"GHOSTLY_{name.upper()}_PORT": str(port), f"GHOSTLY_{name.upper()}_METRICS_PORT": "0"},
    )
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "w"),
    )


async def _refused(address: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as ch:
        try:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def _exit_code(proc: subprocess.Popen, timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


async def test_sigterm_drains_a_long_full_resolution_stream(own_pg, tmp_path):
    # A 10-minute recording at 2 kHz (1.2 M samples per channel), ingested in-process into the
    # data directory the JIT subprocess then serves from.
    cfg = make_config(own_pg.dsn, tmp_path, ingest_workers=1, max_upload_bytes=64 << 20)
    patient = await register_patient(own_pg.dsn)
    ingest = await start_service(INGEST, cfg, port=0, metrics_port=0)
    try:
        name, data = synthetic_file(tmp_path, 9001, duration_s=600.0, rate=2000.0)
        async with grpc.aio.insecure_channel(ingest.address) as ch:
            reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(upload_messages(data, name, patient), timeout=60)
    finally:
        await ingest.stop(0)

    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = _spawn("jit_signal", own_pg.dsn, tmp_path, port, tmp_path / "jit.log")
    try:
        await wait_for(lambda: check(address, timeout=1), timeout=30, interval=0.1)
        async with grpc.aio.insecure_channel(address) as ch:
            stub = jit_signal_pb2_grpc.JitSignalServiceStub(ch)
            call = stub.StreamSignals(
                jpb.StreamSignalsRequest(
                    session_id=reply.session_id, kind=jpb.SIGNAL_KIND_RAW, full_resolution=True, chunk_samples=16384
                ),
                timeout=60,
            )
            samples, chunks, t_term, channels = 0, 0, None, set()
            async for msg in call:
                chunks += 1
                channels.add(msg.channel)
                samples += msg.sample_count
                if t_term is None:
                    # In flight: stop the server now, then check new calls are refused while the
                    # stream keeps going (read slowly: ~150 chunks x 10 ms).
                    proc.send_signal(signal.SIGTERM)
                    t_term = time.monotonic()
                    await asyncio.sleep(0.3)
                    assert await _refused(address) in (grpc.StatusCode.UNAVAILABLE,), "new call accepted while draining"
                await asyncio.sleep(0.01)
            assert await call.code() == grpc.StatusCode.OK
            drained = time.monotonic() - t_term
        assert len(channels) == 2 and samples == 2 * 1_200_000, (channels, samples)
        assert drained < GRACE_S, drained
        assert await _exit_code(proc, GRACE_S + 10) == 0
        print(f"\nSIGTERM: stream of {chunks} chunks finished {drained:.2f}s after SIGTERM; exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_sigterm_drains_an_upload_in_progress(own_pg, tmp_path):
    patient = await register_patient(own_pg.dsn)
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = _spawn("ingest", own_pg.dsn, tmp_path, port, tmp_path / "ingest.log")
    try:
        await wait_for(lambda: check(address, timeout=1), timeout=30, interval=0.1)
        name, data = synthetic_file(tmp_path, 9002, duration_s=60.0)
        sent = asyncio.Event()

        async def slow_messages():
            for i, msg in enumerate(upload_messages(data, name, patient, chunk=16 << 10)):
                yield msg
                if i == 3:
                    sent.set()  # the upload is under way: SIGTERM now
                await asyncio.sleep(0.02)

        async with grpc.aio.insecure_channel(address) as ch:
            call = ingest_pb2_grpc.IngestServiceStub(ch).Upload(slow_messages(), timeout=60)
            await asyncio.wait_for(sent.wait(), 10)
            proc.send_signal(signal.SIGTERM)
            t_term = time.monotonic()
            await asyncio.sleep(0.3)
            assert await _refused(address) == grpc.StatusCode.UNAVAILABLE
            reply = await call
            drained = time.monotonic() - t_term
        assert reply.created and reply.status == common_pb2.PROCESSING_STATUS_COMPLETED
        assert drained < GRACE_S
        assert await _exit_code(proc, GRACE_S + 10) == 0
        conn = await connect(own_pg.dsn)
        try:
            status = await conn.fetchval(
                "SELECT processing_status FROM therapy_sessions WHERE id = $1::uuid", reply.session_id
            )
        finally:
            await conn.close()
        assert status == "completed"
        print(f"\nSIGTERM: upload of {len(data)} bytes completed {drained:.2f}s after SIGTERM; exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()
