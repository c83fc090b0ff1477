"""gRPC bootstrap shared by every service: reflection and health seen by a real grpcurl,
NOT_SERVING without a database, error mapping, request ids, graceful SIGTERM, `ghostly up`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ghostly.statistics.v1 import statistics_pb2, statistics_pb2_grpc
from libs import errors
from libs.grpc_server import ServiceSpec, start_service
from services.export.server import SPEC as EXPORT
from services.ingest.server import SPEC as INGEST
from services.jit_signal.server import SPEC as JIT
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import ROOT, free_port, grpcurl, make_config, subprocess_env, wait_for, wait_until

ALL = [INGEST, STATISTICS, JIT, EXPORT]


@pytest.fixture
async def running_all(database_url, tmp_path):
    cfg = make_config(database_url, tmp_path)
    servers = [await start_service(spec, cfg, port=0) for spec in ALL]
    yield {s.spec.name: s for s in servers}
    for s in servers:
        await s.stop(0)


async def _check(address: str, service: str = "") -> str:
    async with grpc.aio.insecure_channel(address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def test_grpcurl_lists_describes_and_checks_health(running_all):
    for server in running_all.values():
        listed = await asyncio.to_thread(grpcurl, "-plaintext", server.address, "list")
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert set(server.spec.full_names) <= services
        assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services

    stats = running_all["statistics"]
    described = await asyncio.to_thread(
        grpcurl, "-plaintext", stats.address, "describe", "ghostly.statistics.v1.StatisticsService"
    )
    assert described.returncode == 0, described.stderr
    assert "rpc GetPatientProgress ( .ghostly.statistics.v1.GetPatientProgressRequest )" in described.stdout
    message = await asyncio.to_thread(
        grpcurl, "-plaintext", stats.address, "describe", "ghostly.statistics.v1.PerformanceScore"
    )
    assert "overall_performance_score" in message.stdout

    for server in running_all.values():
        for svc in ("", server.spec.full_names[0]):
            checked = await asyncio.to_thread(
                grpcurl, "-plaintext", "-d", json.dumps({"service": svc}), server.address, "grpc.health.v1.Health/Check"
            )
            assert checked.returncode == 0, checked.stderr
            assert json.loads(checked.stdout) == {"status": "SERVING"}


async def test_not_serving_when_database_unreachable(tmp_path):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    cfg = make_config(dead, tmp_path)
    server = await start_service(STATISTICS, cfg, port=0)
    try:
        assert await _check(server.address) == "NOT_SERVING"
        assert await _check(server.address, STATISTICS.full_names[0]) == "NOT_SERVING"
    finally:
        await server.stop(0)


class _Failing(statistics_pb2_grpc.StatisticsServiceServicer):
    """GetSession raises whatever the session id names, to exercise the error mapping."""

    async def GetSession(self, request, context):
        kind = request.session_id
        if kind == "missing":
            raise errors.NotFound("session 'missing' does not exist")
        if kind == "bad":
            raise errors.InvalidArgument("session_id must be a UUID")
        if kind == "crash":
            raise RuntimeError("secret internal detail")
        return statistics_pb2.Session(id=kind)


async def test_interceptor_maps_errors_and_echoes_request_id(database_url, tmp_path):
    async def register(server, ctx):
        statistics_pb2_grpc.add_StatisticsServiceServicer_to_server(_Failing(), server)

    spec = ServiceSpec(name="statistics", full_names=STATISTICS.full_names, register=register)
    server = await start_service(spec, make_config(database_url, tmp_path), port=0)
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = statistics_pb2_grpc.StatisticsServiceStub(ch)
            cases = {
                "missing": (grpc.StatusCode.NOT_FOUND, "session 'missing' does not exist"),
                "bad": (grpc.StatusCode.INVALID_ARGUMENT, "session_id must be a UUID"),
            }
            for sid, (code, msg) in cases.items():
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.GetSession(statistics_pb2.GetSessionRequest(session_id=sid))
                assert info.value.code() == code and info.value.details() == msg
            call = stub.GetSession(
                statistics_pb2.GetSessionRequest(session_id="crash"), metadata=(("x-request-id", "req-42"),)
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in info.value.details() and "req-42" in info.value.details()
            assert ("x-request-id", "req-42") in tuple(await call.trailing_metadata())
            ok = await stub.GetSession(statistics_pb2.GetSessionRequest(session_id="fine"))
            assert ok.id == "fine"
    finally:
        await server.stop(0)


async def test_every_rpc_gets_one_json_access_line(database_url, tmp_path, caplog):
    """One line per call with its request id and status, written shortly after the call (in
    batches, off the response path) and at the latest when the server stops."""
    import logging

    from libs.logs import JsonFormatter

    async def register(server, ctx):
        statistics_pb2_grpc.add_StatisticsServiceServicer_to_server(_Failing(), server)

    spec = ServiceSpec(name="statistics", full_names=STATISTICS.full_names, register=register)
    server = await start_service(spec, make_config(database_url, tmp_path), port=0)
    caplog.set_level(logging.INFO, logger="ghostly.rpc")
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = statistics_pb2_grpc.StatisticsServiceStub(ch)
            await stub.GetSession(
                statistics_pb2.GetSessionRequest(session_id="fine"), metadata=(("x-request-id", "line-1"),)
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetSession(
                    statistics_pb2.GetSessionRequest(session_id="missing"), metadata=(("x-request-id", "line-2"),)
                )
            await wait_until(lambda: len([r for r in caplog.records if r.name == "ghostly.rpc"]) >= 2, timeout=5)
            lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "ghostly.rpc"]
            assert [(x["request_id"], x["status"], x["method"].rsplit("/", 1)[-1]) for x in lines] == [
                ("line-1", "OK", "GetSession"),
                ("line-2", "NOT_FOUND", "GetSession"),
            ]
            assert all(x["msg"] == "rpc" and x["duration_ms"] >= 0 and x["role"] == "admin" for x in lines)
            caplog.clear()
            await stub.GetSession(
                statistics_pb2.GetSessionRequest(session_id="fine"), metadata=(("x-request-id", "line-3"),)
            )
    finally:
        await server.stop(0)
    assert [r.fields["request_id"] for r in caplog.records if r.name == "ghostly.rpc"] == ["line-3"]


async def test_unimplemented_rpc_reports_unimplemented(database_url, tmp_path):
    from ghostly.export.v1 import export_pb2, export_pb2_grpc

    async def register(server, ctx):  # the generated base servicer: nothing implemented
        export_pb2_grpc.add_ExportServiceServicer_to_server(export_pb2_grpc.ExportServiceServicer(), server)

    spec = ServiceSpec(name="export", full_names=EXPORT.full_names, register=register)
    server = await start_service(spec, make_config(database_url, tmp_path), port=0)
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await export_pb2_grpc.ExportServiceStub(ch).ListExportHistory(export_pb2.ListExportHistoryRequest())
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)


async def test_service_runs_alone_and_drains_on_sigterm(database_url, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.statistics"],
        cwd=ROOT,
        env=subprocess_env(
            DATABASE_URL=database_url,
            GHOSTLY_STATISTICS_PORT=str(port),
            GHOSTLY_DATA_DIR=str(tmp_path),
            GHOSTLY_SHUTDOWN_GRACE_S="2",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def serving():
            try:
                return await _check(f"127.0.0.1:{port}") == "SERVING"
            except grpc.aio.AioRpcError:
                return False

        await wait_for(serving, timeout=20)
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 15)
        assert rc == 0
        _, err = proc.communicate()
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert any(line["msg"] == "shutting down" for line in lines), err
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_ghostly_up_status_and_ctrl_c(database_url, tmp_path):
    ports = {f"GHOSTLY_{n.upper()}_PORT": str(free_port()) for n in ("ingest", "statistics", "jit_signal", "export")}
    env = subprocess_env(
        DATABASE_URL=database_url, GHOSTLY_DATA_DIR=str(tmp_path), GHOSTLY_SHUTDOWN_GRACE_S="2", **ports
    )
    ghostly = [sys.executable, "-m", "app.cli"]
    up = subprocess.Popen(
        [*ghostly, "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:

        async def all_serving():
            st = await asyncio.to_thread(
                subprocess.run, [*ghostly, "status"], cwd=ROOT, env=env, capture_output=True, text=True
            )
            return st if st.returncode == 0 else None

        status = await wait_for(all_serving, timeout=40, interval=0.5)
        assert status.stdout.count("SERVING") == 4, status.stdout
        up.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(up.wait, 30) == 0
        down = await asyncio.to_thread(
            subprocess.run, [*ghostly, "status"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert down.returncode == 1 and down.stdout.count("UNREACHABLE") == 4
    finally:
        if up.poll() is None:
            up.kill()


def test_every_setting_is_read_in_config_and_documented():
    """Settings come from libs/config.py (its table documents them), with their defaults."""
    import re
    from pathlib import Path

    from libs import config as config_mod

    root = Path(config_mod.PROJECT_ROOT)
    documented = set(re.findall(r"^\| ([A-Z][A-Z0-9_]+)", config_mod.__doc__, re.M))
    read_elsewhere = set()
    for path in [*root.glob("services/**/*.py"), *root.glob("libs/**/*.py")]:
        if path.name == "config.py":
            continue
        read_elsewhere |= set(re.findall(r"environ(?:\.get)?\(\s*[\"']([A-Z][A-Z0-9_]+)", path.read_text()))
    # Read where they are used: the embedded cluster's and broker's own settings, the analysis
    # library's thread count (in each worker process) and the client commands' token.
    assert read_elsewhere <= {
        "GHOSTLY_PG_BIN",
        "GHOSTLY_PGDATA",
        "GHOSTLY_PG_PORT",
        "GHOSTLY_NATS_BIN",
        "GHOSTLY_NATS_PORT",
        "GHOSTLY_DATA_DIR",
        "EMG_ANALYSIS_THREADS",
        "GHOSTLY_TOKEN",
    }, read_elsewhere
    assert read_elsewhere <= documented
    defaults = config_mod.load({})
    assert (
        defaults.jit_signal_memory_bytes,
        defaults.jit_payload_memory_bytes,
        defaults.export_session_concurrency,
        defaults.event_loop,
    ) == (256 << 20, 64 << 20, 16, "uvloop")
    custom = config_mod.load(
        {
            "GHOSTLY_JIT_SIGNAL_MEMORY_BYTES": "1000",
            "GHOSTLY_JIT_PAYLOAD_MEMORY_BYTES": "2000",
            "GHOSTLY_EXPORT_SESSION_CONCURRENCY": "3",
            "GHOSTLY_EVENT_LOOP": "asyncio",
        }
    )
    assert (
        custom.jit_signal_memory_bytes,
        custom.jit_payload_memory_bytes,
        custom.export_session_concurrency,
        custom.event_loop,
    ) == (1000, 2000, 3, "asyncio")
