"""Operational fault tests: each module gets its OWN throwaway PostgreSQL cluster (they stop and
restart it; the suite's shared cluster is never touched), real servers on loopback."""
from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from libs.db.embedded import EmbeddedPostgres
from libs.db.migrate import migrate
from libs.db.pool import init_connection
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from ghostly.ingest.v1 import ingest_pb2


@pytest.fixture(scope="module")
async def own_pg():
    """An ephemeral cluster of this module, migrated; stopped and removed at the end."""
    pg = EmbeddedPostgres(ephemeral=True)
    pg.start()
    try:
        await migrate(pg.dsn)
        yield pg
    finally:
        pg.stop()


def pg_stop_fast(pg: EmbeddedPostgres) -> None:
    """Stop the cluster as an operator would (pg_ctl stop -m fast); data kept, same port."""
    pg._run("pg_ctl", "-D", str(pg.data_dir), "-m", "fast", "-w", "stop")


async def register_patient(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        therapist = await conn.fetchval(
            "INSERT INTO therapists (user_id, first_name, last_name) VALUES ($1, 'O', 'P') RETURNING id",
            uuid.uuid4())
        code = f"O{uuid.uuid4().hex[:7].upper()}"
        await conn.execute("INSERT INTO patients (therapist_id, patient_code, first_name, last_name, date_of_birth) "
                           "VALUES ($1, $2, 'O', 'P', '1940-01-01')", therapist, code)
        return code
    finally:
        await conn.close()


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    return conn


def synthetic_file(directory: Path, seed: int, duration_s: float = 30.0, rate: float = 990.0) -> tuple[str, bytes]:
    spec = SyntheticSpec(duration_s=duration_s, seed=seed, rate=rate, channels=[
        ChannelSpec(contractions=regular_contractions(4, 2.0, 6.0)),
        ChannelSpec(contractions=regular_contractions(3, 1.5, 8.0, amplitude_v=200e-6)),
    ])
    name = ghostly_file_name(spec, seconds=seed % 60, frac=f"{seed % 10000:04d}")
    path = directory / f"{seed}-{name}"
    write_synthetic_c3d(path, spec)
    return name, path.read_bytes()


def upload_messages(data: bytes, file_name: str, patient: str, chunk: int = 256 << 10):
    meta = ingest_pb2.UploadMetadata(file_name=file_name, session=ingest_pb2.SessionMetadata(patient_code=patient))
    yield ingest_pb2.UploadRequest(metadata=meta)
    for i in range(0, len(data), chunk):
        yield ingest_pb2.UploadRequest(chunk=data[i:i + chunk])
