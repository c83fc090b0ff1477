"""Export fixtures: real Ingest, Statistics, JitSignal and Export services on loopback, in process,
over the session's migrated database and one shared data dir (content store + signal cache).

The export service is configured with the other services' actual (ephemeral) ports:
dataclasses.replace(cfg, ports={...}); it reaches them through Config.target().
"""
from __future__ import annotations

import dataclasses
import uuid

import asyncpg
import grpc
import pytest

from ghostly.export.v1 import export_pb2, export_pb2_grpc
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.db.pool import init_connection
from libs.grpc_server import start_service
from tests.helpers import make_config, register_patient, upload_messages  # noqa: F401 (re-exported)


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
async def db(database_url):
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture(scope="package")
async def researcher(db) -> str:
    rid = uuid.uuid4()
    await db.execute("INSERT INTO researcher_profiles (id, full_name, institution) VALUES ($1, 'Rita Search', 'UZ')",
                     rid)
    return str(rid)


async def upload(ingest_stub, data: bytes, name: str, patient: str, **session) -> ingest_pb2.IngestReply:
    return await ingest_stub.Upload(upload_messages(data, name, patient, **session), timeout=120)


async def run_export(stub, *, metadata=None, timeout=120, **fields):
    """CreateExport -> (started, payload bytes, completed, number of data messages)."""
    started = completed = None
    parts: list[bytes] = []
    n = 0
    async for msg in stub.CreateExport(export_pb2.CreateExportRequest(**fields), timeout=timeout,
                                       metadata=metadata):
        which = msg.WhichOneof("body")
        if which == "started":
            assert started is None and not parts and completed is None
            started = msg.started
        elif which == "data":
            assert started is not None and completed is None
            assert 0 < len(msg.data) <= 1 << 20
            parts.append(msg.data)
            n += 1
        else:
            assert completed is None
            completed = msg.completed
    assert started is not None and completed is not None
    return started, b"".join(parts), completed, n


def variant(src, folder, tag: int):
    """A copy of `src` with its last analog sample nudged (a distinct content hash), so that
    ingest's content idempotency never hands back a session another test module created."""
    import struct
    data = bytearray(src.read_bytes())
    (last,) = struct.unpack_from("<I", data, len(data) - 4)
    struct.pack_into("<I", data, len(data) - 4, (last + 1000 + tag) & 0xFFFFFFFF)
    out = folder / src.name
    out.write_bytes(bytes(data))
    return out


async def new_patient(db) -> str:
    return await register_patient(db, "X")
