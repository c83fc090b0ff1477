"""OpenTelemetry tracing (libs/tracing.py): one trace across export -> statistics / jit_signal,
with database and content-store spans; nothing at all when tracing is off; the OTEL_* set-up.

The real statistics, jit_signal and export servers run in process on loopback over the
session's PostgreSQL (as tests/export/conftest.py does); spans go to an in-memory exporter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import threading
from concurrent import futures

import asyncpg
import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ghostly.export.v1 import export_pb2 as pb
from ghostly.export.v1 import export_pb2_grpc
from ghostly.ingest.v1 import ingest_pb2_grpc
from libs import tracing
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from libs.grpc_server import start_service
from tests.helpers import ROOT, make_config, register_patient, upload_messages

EXPORT = "ghostly.export.v1.ExportService/CreateExport"


@pytest.fixture(scope="module")
async def world(database_url, shared_data_dir, tmp_path_factory):
    """One ingested session (ingest runs untraced, only to load it), and the configuration."""
    from services.ingest.server import SPEC as INGEST

    assert not tracing.enabled()
    cfg = dataclasses.replace(make_config(database_url, shared_data_dir), ingest_workers=1)
    spec = SyntheticSpec(
        duration_s=20.0,
        seed=1919,
        time=(2024, 9, 19, 19, 19),
        channels=[ChannelSpec(contractions=regular_contractions(3, 2.0, 5.0)), ChannelSpec()],
    )
    path = tmp_path_factory.mktemp("tracing") / ghostly_file_name(spec, seconds=19)
    write_synthetic_c3d(path, spec)
    conn = await asyncpg.connect(database_url)
    try:
        patient = await register_patient(conn, "TR")
    finally:
        await conn.close()
    ingest = await start_service(INGEST, cfg, port=0)
    try:
        async with grpc.aio.insecure_channel(ingest.address) as ch:
            reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(
                upload_messages(path.read_bytes(), path.name, patient), timeout=120
            )
    finally:
        await ingest.stop(0)
    return cfg, reply.session_id


@contextlib.asynccontextmanager
async def services(cfg):
    """statistics, jit_signal and export, export pointed at the other two."""
    from services.export.server import SPEC as EXPORT_SPEC
    from services.jit_signal.server import SPEC as JIT
    from services.statistics.server import SPEC as STATS

    servers = {
        "statistics": await start_service(STATS, cfg, port=0),
        "jit_signal": await start_service(JIT, cfg, port=0),
    }
    try:
        ports = dict(cfg.ports, **{n: s.port for n, s in servers.items()})
        servers["export"] = await start_service(EXPORT_SPEC, dataclasses.replace(cfg, ports=ports), port=0)
        yield servers
    finally:
        for s in reversed(list(servers.values())):
            await s.stop(0)


async def run_exports(address: str, session_id: str, *, interceptors=None, metadata=None) -> None:
    """A signals export (export calls statistics and jit_signal) and a statistics export."""
    async with grpc.aio.insecure_channel(address, interceptors=interceptors) as ch:
        stub = export_pb2_grpc.ExportServiceStub(ch)
        for fields in (
            dict(type=pb.EXPORT_TYPE_SIGNALS_VISUALIZATION, max_points=200, signal_kinds=["raw"]),
            dict(type=pb.EXPORT_TYPE_STATISTICS_ONLY),
        ):
            done = False
            async for msg in stub.CreateExport(
                pb.CreateExportRequest(format=pb.EXPORT_FORMAT_CSV, session_ids=[session_id], **fields),
                timeout=120,
                metadata=metadata,
            ):
                done = done or msg.WhichOneof("body") == "completed"
            assert done


@pytest.fixture
def recorder():
    """Tracing on for the test, spans kept in memory."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield provider, exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


def service_of(span) -> str | None:
    return span.attributes.get("ghostly.service")


async def test_one_trace_across_export_statistics_and_jit_signal(world, recorder, caplog):
    cfg, session_id = world
    provider, exporter = recorder
    caplog.set_level(logging.INFO, logger="ghostly.rpc")
    async with services(cfg) as servers:
        # The caller (e.g. the web backend) has a trace of its own: both exports join it.
        with provider.get_tracer("test").start_as_current_span("researcher download") as root:
            await run_exports(servers["export"].address, session_id, interceptors=tracing.client_interceptors())
        # A failing export (unknown session: statistics answers NOT_FOUND), a trace of its own.
        async with grpc.aio.insecure_channel(
            servers["export"].address, interceptors=tracing.client_interceptors()
        ) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in export_pb2_grpc.ExportServiceStub(ch).CreateExport(
                    pb.CreateExportRequest(
                        type=pb.EXPORT_TYPE_SIGNALS_VISUALIZATION,
                        format=pb.EXPORT_FORMAT_CSV,
                        session_ids=["00000000-0000-4000-8000-000000000000"],
                    ),
                    timeout=60,
                ):
                    pass
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
    trace_id = root.get_span_context().trace_id
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    ours = [s for s in spans if s.context.trace_id == trace_id]
    failed = [s for s in spans if s.context.trace_id != trace_id]
    # Every span the services made is in one of the two traces (no stray roots: health probes,
    # the export start-up sweep and other background queries record nothing).
    [failed_root] = [s for s in failed if s.parent is None]
    assert failed_root.kind is SpanKind.CLIENT and failed_root.name == EXPORT
    assert {s.context.trace_id for s in failed} == {failed_root.context.trace_id}
    assert failed_root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert failed_root.status.status_code.name == "ERROR"  # a client span: any non-OK code
    failed_servers = {service_of(s): s for s in failed if s.kind is SpanKind.SERVER}
    assert failed_servers.keys() >= {"export", "statistics"}
    assert failed_servers["export"].attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert failed_servers["export"].status.status_code.name == "UNSET"  # the caller's error, not the server's

    server = [s for s in ours if s.kind is SpanKind.SERVER]
    assert {service_of(s) for s in server} == {"export", "statistics", "jit_signal"}
    names = {s.name for s in server}
    assert {
        EXPORT,
        "ghostly.statistics.v1.StatisticsService/GetSession",
        "ghostly.jit_signal.v1.JitSignalService/StreamSignals",
    } <= names, names
    assert all(s.attributes["rpc.grpc.status_code"] == 0 for s in server)
    assert all(s.attributes["ghostly.request_id"] for s in server)

    # export's server spans are children of the caller's span (its client span, which carried
    # the traceparent); statistics' and jit_signal's of export's client spans, children of an
    # export server span.
    exports = [s for s in server if s.name == EXPORT]
    assert len(exports) == 2
    for s in exports:
        client = by_id[s.parent.span_id]
        assert client.kind is SpanKind.CLIENT and client.name == EXPORT
        assert client.parent.span_id == root.get_span_context().span_id
    export_ids = {s.context.span_id for s in exports}
    downstream = [s for s in server if service_of(s) in ("statistics", "jit_signal")]
    for s in downstream:
        assert s.parent is not None and s.parent.is_remote, s.name
        client = by_id[s.parent.span_id]
        assert client.kind is SpanKind.CLIENT and client.name == s.name
        assert client.parent.span_id in export_ids
        assert client.attributes["rpc.grpc.status_code"] == 0
    assert {service_of(s) for s in downstream} == {"statistics", "jit_signal"}

    # Database spans, children of the RPC that ran them, in each of the three services.
    server_of = {s.context.span_id: s for s in server}
    db = [s for s in ours if s.attributes.get("db.system.name") == "postgresql"]
    assert db and all(s.kind is SpanKind.CLIENT and s.parent.span_id in server_of for s in db)
    assert {service_of(server_of[s.parent.span_id]) for s in db} == {"export", "statistics", "jit_signal"}
    assert all(s.attributes["db.query.text"] and s.end_time >= s.start_time for s in db)

    # The content store: jit_signal reads the session's C3D.
    reads = [s for s in ours if s.name == "store.read"]
    assert reads and all(service_of(server_of[s.parent.span_id]) == "jit_signal" for s in reads)
    assert all(s.attributes["ghostly.store.path"] for s in reads)

    # The access log lines name the trace (written when the servers stopped).
    lines = [r.fields for r in caplog.records if r.name == "ghostly.rpc" and hasattr(r, "fields")]
    assert {f["service"] for f in lines if f.get("trace_id") == format(trace_id, "032x")} == {
        "export",
        "statistics",
        "jit_signal",
    }


async def test_tracing_off_adds_nothing(world, monkeypatch, tmp_path):
    """Off (no OTEL_TRACES_EXPORTER): no spans, not even through the global OpenTelemetry API,
    no propagation work, and no hooks in the pool, the store or the channels."""
    from opentelemetry import propagate, trace

    from libs.storage import LocalContentStore, open_store

    cfg, session_id = world
    assert not tracing.enabled()
    # Anything that still used the OpenTelemetry API would record here or call these.
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    calls = []
    monkeypatch.setattr(propagate, "extract", lambda *a, **k: calls.append("extract"))
    monkeypatch.setattr(propagate, "inject", lambda *a, **k: calls.append("inject"))

    assert type(open_store(tmp_path / "store")) is LocalContentStore
    assert tracing.client_interceptors() == []
    async with services(cfg) as servers:
        assert all(s.context.pool._connection_class is asyncpg.Connection for s in servers.values())
        # A caller's traceparent is ignored.
        await run_exports(
            servers["export"].address,
            session_id,
            metadata=(("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),),
        )
    assert exporter.get_finished_spans() == ()
    assert calls == []


# -- set-up from the OTEL_* variables (a fresh interpreter: setup() sets the global provider) ---
def python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, env=environ
    )


SPAN = """
from libs import tracing
on = tracing.setup("statistics")
print("on" if on else "off")
if on:
    with tracing._store_span("store.stat", "x"):
        pass
    tracing.TRACER.start_span("hello").end()
    tracing.shutdown()
"""


def test_setup_is_off_by_default_and_for_none():
    assert python(SPAN).stdout.strip() == "off"
    assert python(SPAN, OTEL_TRACES_EXPORTER="none").stdout.strip() == "off"
    assert python(SPAN, OTEL_TRACES_EXPORTER="console", OTEL_SDK_DISABLED="true").stdout.strip() == "off"
    # Off: the SDK is not even imported.
    out = python(
        "import sys; from libs import tracing; from app import service_main; import libs.grpc_server, libs.db.pool;"
        "tracing.setup('x'); print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    assert out.stdout.strip() == "False", out.stderr


def test_console_exporter_and_default_service_name():
    out = python(SPAN, OTEL_TRACES_EXPORTER="console")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("on") and '"name": "hello"' in out.stdout
    assert '"service.name": "ghostly-statistics"' in out.stdout
    assert "store.stat" not in out.stdout  # store spans only inside a traced RPC
    out = python(SPAN, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="stats-eu1")
    assert '"service.name": "stats-eu1"' in out.stdout


def test_a_bad_exporter_stops_the_service_with_exit_2():
    out = python(SPAN, OTEL_TRACES_EXPORTER="zipkin")
    assert out.returncode != 0 and "OTEL_TRACES_EXPORTER='zipkin' is not allowed" in out.stderr
    run = subprocess.run(
        [sys.executable, "-m", "services.statistics"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "jaeger"},
    )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "statistics: OTEL_TRACES_EXPORTER='jaeger' is not allowed: a comma-separated list of none, otlp, console"
    )


def test_otlp_exporter_sends_to_the_collector_at_the_endpoint():
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list = []
    got = threading.Event()

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.append(request)
            got.set()
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = python(
            SPAN,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_INSECURE="true",
        )
        assert out.returncode == 0 and out.stdout.strip() == "on", out.stderr
        assert got.wait(10)
    finally:
        server.stop(0)
    spans = [s for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["hello"]
    attrs = {a.key: a.value.string_value for r in received for rs in r.resource_spans for a in rs.resource.attributes}
    assert attrs["service.name"] == "ghostly-statistics"
