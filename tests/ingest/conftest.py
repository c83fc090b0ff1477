"""Ingest fixtures: a real IngestService on loopback over the session's migrated database,
with its own content store, and a registered therapist + patient per test."""
from __future__ import annotations

import dataclasses
import uuid

import asyncpg
import grpc
import pytest

from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from libs.db.pool import init_connection
from libs.grpc_server import start_service
from services.ingest.server import SPEC
from tests.helpers import make_config


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
async def db(database_url):
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)   # JSON columns as Python objects, as the services see them
    yield conn
    await conn.close()


@pytest.fixture
async def patient(db) -> str:
    """A freshly registered patient code (and its therapist)."""
    therapist = await db.fetchval(
        "INSERT INTO therapists (user_id, first_name, last_name) VALUES ($1, 'Tess', 'Therapist') RETURNING id",
        uuid.uuid4())
    code = f"T{uuid.uuid4().hex[:7].upper()}"
    await db.execute("INSERT INTO patients (therapist_id, patient_code, first_name, last_name, date_of_birth) "
                     "VALUES ($1, $2, 'Pat', 'Ient', '1940-01-01')", therapist, code)
    return code


def upload_messages(data: bytes, file_name: str, patient: str, chunk: int = 1 << 20, **session):
    meta = ingest_pb2.UploadMetadata(file_name=file_name,
                                     session=ingest_pb2.SessionMetadata(patient_code=patient, **session))
    yield ingest_pb2.UploadRequest(metadata=meta)
    for i in range(0, len(data), chunk):
        yield ingest_pb2.UploadRequest(chunk=data[i:i + chunk])
