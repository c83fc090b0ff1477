"""Export fixtures: real Ingest, Statistics, JitSignal and Export services on loopback, in process,
over the session's migrated database and one shared data dir (content store + signal cache).

The export service is configured with the other services' actual (ephemeral) ports:
dataclasses.replace(cfg, ports={...}); it reaches them through Config.target().
"""

from __future__ import annotations

import dataclasses
import uuid

import grpc
import pytest

from ghostly.export.v1 import export_pb2_grpc
from ghostly.ingest.v1 import ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.grpc_server import start_service
from tests.helpers import make_config, new_patient, run_export, upload, variant  # noqa: F401 (re-exported)


class Stack:
    def __init__(self, cfg, servers: dict):
        self.cfg, self.servers = cfg, servers

    def address(self, name: str) -> str:
        return self.servers[name].address


@pytest.fixture(scope="package")
async def stack(database_url, shared_data_dir):
    from services.export.server import SPEC as EXPORT
    from services.ingest.server import SPEC as INGEST
    from services.jit_signal.server import SPEC as JIT
    from services.statistics.server import SPEC as STATS

    cfg = make_config(database_url, shared_data_dir)
    cfg = dataclasses.replace(cfg, max_upload_bytes=64 << 20, ingest_workers=2)
    servers = {}
    servers["ingest"] = await start_service(INGEST, cfg, port=0)
    servers["statistics"] = await start_service(STATS, cfg, port=0)
    servers["jit_signal"] = await start_service(JIT, cfg, port=0)
    ports = dict(cfg.ports, **{n: s.port for n, s in servers.items()})
    cfg = dataclasses.replace(cfg, ports=ports)
    servers["export"] = await start_service(EXPORT, cfg, port=0)
    yield Stack(cfg, servers)
    for s in reversed(list(servers.values())):
        await s.stop(0)


@pytest.fixture(scope="package")
async def channels(stack):
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    chans = {n: grpc.aio.insecure_channel(stack.address(n), options=opts) for n in stack.servers}
    yield chans
    for c in chans.values():
        await c.close()


@pytest.fixture(scope="package")
def export_stub(channels):
    return export_pb2_grpc.ExportServiceStub(channels["export"])


@pytest.fixture(scope="package")
def stats_stub(channels):
    return statistics_pb2_grpc.StatisticsServiceStub(channels["statistics"])


@pytest.fixture(scope="package")
def jit_stub(channels):
    return jit_signal_pb2_grpc.JitSignalServiceStub(channels["jit_signal"])


@pytest.fixture(scope="package")
def ingest_stub(channels):
    return ingest_pb2_grpc.IngestServiceStub(channels["ingest"])


@pytest.fixture(scope="package")
async def researcher(db) -> str:
    rid = uuid.uuid4()
    await db.execute(
        "INSERT INTO researcher_profiles (id, full_name, institution) VALUES ($1, 'Rita Search', 'UZ')", rid
    )
    return str(rid)
