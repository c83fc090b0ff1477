"""Ingest fixtures: a real IngestService on loopback over the session's migrated database,
with its own content store, and a registered therapist + patient per test."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from ghostly.ingest.v1 import ingest_pb2_grpc
from libs.grpc_server import start_service
from services.ingest.server import SPEC
from tests.helpers import make_config, register_patient, upload_messages  # noqa: F401 (re-exported)


@pytest.fixture(scope="session")
async def ingest_server(database_url, shared_data_dir):
    cfg = make_config(database_url, shared_data_dir)
    cfg = dataclasses.replace(cfg, max_upload_bytes=8 * 1024 * 1024, event_secret="s3cret")
    server = await start_service(SPEC, cfg, port=0)
    yield server
    await server.stop(0)


@pytest.fixture
async def stub(ingest_server):
    async with grpc.aio.insecure_channel(ingest_server.address) as channel:
        yield ingest_pb2_grpc.IngestServiceStub(channel)


@pytest.fixture
async def patient(db) -> str:
    """A freshly registered patient code (and its therapist)."""
    return await register_patient(db, "T")
