"""JIT signal fixtures: a real IngestService and a real JitSignalService on loopback sharing ONE
data directory (content store + signal cache), over the session's migrated database."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from libs.grpc_server import start_service
from services.ingest.server import SPEC as INGEST
from services.jit_signal.server import SPEC as JIT
from tests.helpers import by_channel, collect, make_config, register_patient, upload_messages  # noqa: F401 (re-exported)


@pytest.fixture(scope="session")
async def data_dir(shared_data_dir) -> Path:
    return shared_data_dir


@pytest.fixture(scope="session")
async def ingest_server(database_url, data_dir):
    cfg = dataclasses.replace(make_config(database_url, data_dir), max_upload_bytes=8 << 20)
    server = await start_service(INGEST, cfg, port=0)
    yield server
    await server.stop(0)


@pytest.fixture(scope="session")
async def jit_server(database_url, data_dir, ingest_server):
    cfg = make_config(database_url, data_dir)
    assert cfg.store_dir == ingest_server.context.config.store_dir
    server = await start_service(JIT, cfg, port=0)
    yield server
    await server.stop(0)


@pytest.fixture
def servicer(jit_server):
    return jit_server.context.jit_signal


@pytest.fixture(scope="session")
async def ingest_stub(ingest_server):
    async with grpc.aio.insecure_channel(
        ingest_server.address, options=[("grpc.max_send_message_length", 8 << 20)]
    ) as ch:
        yield ingest_pb2_grpc.IngestServiceStub(ch)


@pytest.fixture(scope="session")
async def jit_channel(jit_server):
    async with grpc.aio.insecure_channel(jit_server.address) as ch:
        yield ch


@pytest.fixture
def stub(jit_channel):
    return jit_signal_pb2_grpc.JitSignalServiceStub(jit_channel)


@pytest.fixture(scope="session")
async def patient(db) -> str:
    return await register_patient(db, "J")


class Sessions:
    """Creates sessions through the real IngestService."""

    def __init__(self, stub, patient, tmp: Path):
        self.stub, self.patient, self.tmp = stub, patient, tmp
        self.counter = 0

    async def upload(self, data: bytes, name: str) -> ingest_pb2.IngestReply:
        reply = await self.stub.Upload(upload_messages(data, name, self.patient))
        assert reply.session_id
        return reply

    async def synthetic(self, seed: int | None = None, duration_s: float = 40.0) -> tuple[ingest_pb2.IngestReply, Path]:
        self.counter += 1
        seed = seed if seed is not None else 1000 + self.counter
        spec = SyntheticSpec(
            duration_s=duration_s,
            seed=seed,
            channels=[
                ChannelSpec(contractions=regular_contractions(5, 2.5, 5.5)),
                ChannelSpec(contractions=regular_contractions(3, 1.0, 8.0, amplitude_v=200e-6)),
            ],
        )
        name = ghostly_file_name(spec, seconds=seed % 60, frac=f"{seed % 10000:04d}")
        path = self.tmp / name
        write_synthetic_c3d(path, spec)
        return await self.upload(path.read_bytes(), name), path


@pytest.fixture(scope="session")
async def sessions(ingest_stub, patient, tmp_path_factory) -> Sessions:
    return Sessions(ingest_stub, patient, tmp_path_factory.mktemp("synthetic"))
