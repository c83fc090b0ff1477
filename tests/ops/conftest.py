"""Operational fault tests: each module gets its OWN throwaway PostgreSQL cluster (they stop and
restart it; the suite's shared cluster is never touched), real servers on loopback."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from libs.db.embedded import EmbeddedPostgres
from libs.db.migrate import migrate
from libs.db.pool import init_connection
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from tests.helpers import register_patient as _register
from tests.helpers import upload_messages as upload_messages  # re-exported for the ops tests


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
        return await _register(conn, "O")
    finally:
        await conn.close()


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    return conn


def synthetic_file(directory: Path, seed: int, duration_s: float = 30.0, rate: float = 990.0) -> tuple[str, bytes]:
    spec = SyntheticSpec(
        duration_s=duration_s,
        seed=seed,
        rate=rate,
        channels=[
            ChannelSpec(contractions=regular_contractions(4, 2.0, 6.0)),
            ChannelSpec(contractions=regular_contractions(3, 1.5, 8.0, amplitude_v=200e-6)),
        ],
    )
    name = ghostly_file_name(spec, seconds=seed % 60, frac=f"{seed % 10000:04d}")
    path = directory / f"{seed}-{name}"
    write_synthetic_c3d(path, spec)
    return name, path.read_bytes()
