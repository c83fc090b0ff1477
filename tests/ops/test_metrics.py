"""Prometheus metrics recorded by the interceptor, scraped over HTTP from a real /metrics port."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2 as spb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs import config as config_mod
from libs.grpc_server import start_service
from libs.grpc_server.metrics import LATENCY_BUCKETS
from services.ingest.server import SPEC as INGEST
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import free_port, make_config


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one /metrics page."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_ports_from_config():
    cfg = config_mod.load({})
    assert [cfg.metrics_port(n) for n in ("ingest", "statistics", "jit_signal", "export")] == [9101, 9102, 9103, 9104]
    cfg = config_mod.load({"GHOSTLY_STATISTICS_METRICS_PORT": "0", "GHOSTLY_INGEST_METRICS_PORT": "19101"})
    assert cfg.metrics_port("statistics") == 0 and cfg.metrics_port("ingest") == 19101


async def test_rpc_metrics_scraped_over_http(database_url, tmp_path):
    cfg = make_config(database_url, tmp_path, ingest_workers=1)
    port = free_port()
    stats = await start_service(STATISTICS, cfg, port=0, metrics_port=port)
    # A second service of the same process on the same metrics port shares the endpoint.
    ingest = await start_service(INGEST, cfg, port=0, metrics_port=port)
    try:
        url = stats.metrics.url
        assert url == f"http://127.0.0.1:{port}/metrics"
        before = await asyncio.to_thread(scrape, url)
        async with grpc.aio.insecure_channel(stats.address) as sch, grpc.aio.insecure_channel(ingest.address) as ich:
            stub = statistics_pb2_grpc.StatisticsServiceStub(sch)
            for _ in range(3):
                await stub.ListSessions(spb.ListSessionsRequest(page_size=1))
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.GetSession(spb.GetSessionRequest(session_id=str(uuid.uuid4())))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetSession(spb.GetSessionRequest(session_id="not-a-uuid"))
            # a server-streaming RPC (counted at completion) and a client-streaming one
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in ingest_pb2_grpc.IngestServiceStub(ich).Reprocess(
                    ingest_pb2.ReprocessRequest(session_id=str(uuid.uuid4()))
                ):
                    pass
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError):
                await ingest_pb2_grpc.IngestServiceStub(ich).Upload(iter([ingest_pb2.UploadRequest(chunk=b"x")]))
        after = await asyncio.to_thread(scrape, url)

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        s = dict(service="statistics")
        assert delta("ghostly_rpc_handled_total", method="ListSessions", code="OK", **s) == 3
        assert delta("ghostly_rpc_handled_total", method="GetSession", code="NOT_FOUND", **s) == 2
        assert delta("ghostly_rpc_handled_total", method="GetSession", code="INVALID_ARGUMENT", **s) == 1
        assert delta("ghostly_rpc_errors_total", method="GetSession", code="NOT_FOUND", **s) == 2
        assert delta("ghostly_rpc_errors_total", method="ListSessions", code="OK", **s) == 0
        assert delta("ghostly_rpc_handled_total", service="ingest", method="Reprocess", code="NOT_FOUND") == 1
        assert delta("ghostly_rpc_handled_total", service="ingest", method="Upload", code="INVALID_ARGUMENT") == 1
        # latency histogram: buckets 0.5 ms .. 30 s, +Inf, count and sum
        h = dict(method="ListSessions", **s)
        les = sorted(
            float(dict(k[1])["le"])
            for k in after
            if k[0] == "ghostly_rpc_duration_seconds_bucket"
            and dict(k[1]).get("method") == "ListSessions"
            and dict(k[1]).get("service") == "statistics"
        )
        assert les[:-1] == list(LATENCY_BUCKETS) and les[-1] == float("inf")
        assert delta("ghostly_rpc_duration_seconds_count", **h) == 3
        assert delta("ghostly_rpc_duration_seconds_bucket", le="+Inf", **h) == 3
        assert delta("ghostly_rpc_duration_seconds_bucket", le="30.0", **h) == 3
        assert 0 < delta("ghostly_rpc_duration_seconds_sum", **h) < 3
        assert value(after, "ghostly_rpc_in_flight", method="ListSessions", **s) == 0
        assert value(after, "ghostly_service_serving", **s) == 1
        assert value(after, "ghostly_service_serving", service="ingest") == 1
        # health checks and reflection are not counted
        assert not any(dict(k[1]).get("method", "").startswith(("Check", "Watch", "ServerReflection")) for k in after)
    finally:
        await ingest.stop(0)
        assert stats.metrics is not None  # still served: the statistics server holds it
        await asyncio.to_thread(scrape, stats.metrics.url)
        await stats.stop(0)
    with pytest.raises(OSError):  # noqa: PT011 - released with its last user: any connection error
        await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")


async def test_metrics_port_zero_disables_and_busy_port_does_not_block_start(database_url, tmp_path):
    import socket

    cfg = make_config(database_url, tmp_path)
    off = await start_service(STATISTICS, cfg, port=0, metrics_port=0)
    try:
        assert off.metrics is None
    finally:
        await off.stop(0)
    with socket.socket() as busy:  # another process's port: the service still starts
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = await start_service(STATISTICS, cfg, port=0, metrics_port=busy.getsockname()[1])
        try:
            assert server.metrics is None and server.serving
        finally:
            await server.stop(0)
