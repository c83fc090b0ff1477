"""CLI fixtures: real Ingest (with PatientService) and Statistics services on loopback, in
process, over the session's migrated database; the `ghostly` commands run as subprocesses
(awaited asynchronously: the servers run on this test's event loop) that find the servers
through GHOSTLY_INGEST_ADDRESS / GHOSTLY_STATISTICS_ADDRESS, as a deployment configures them."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.db.embedded import free_port
from libs.grpc_server import start_service
from tests.helpers import (  # noqa: F401 (re-exported)
    UUID_RE,
    Ghostly,
    Result,
    make_config,
    new_code,
    session_ids,
    session_of,
    synthetic_c3d,
)
from tests.helpers import ghostly_add_patient as add_patient  # noqa: F401 (re-exported)
from tests.helpers import ghostly_add_therapist as add_therapist  # noqa: F401 (re-exported)


@pytest.fixture(scope="package")
async def servers(database_url, shared_data_dir):
    from services.ingest.server import SPEC as INGEST
    from services.statistics.server import SPEC as STATISTICS

    cfg = make_config(database_url, shared_data_dir)
    cfg = dataclasses.replace(cfg, max_upload_bytes=64 << 20, ingest_workers=2)
    running = {
        "ingest": await start_service(INGEST, cfg, port=0),
        "statistics": await start_service(STATISTICS, cfg, port=0),
    }
    yield running
    for server in running.values():
        await server.stop(0)


@pytest.fixture(scope="package")
def ghostly(servers) -> Ghostly:
    return Ghostly({name: s.address for name, s in servers.items()})


@pytest.fixture(scope="package")
async def stats(servers):
    async with grpc.aio.insecure_channel(servers["statistics"].address) as channel:
        yield statistics_pb2_grpc.StatisticsServiceStub(channel)


@pytest.fixture
def closed_address() -> str:
    """An address where nothing listens."""
    return f"127.0.0.1:{free_port()}"
