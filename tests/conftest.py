"""Shared fixtures: a real PostgreSQL for the whole run, fresh databases, real gRPC servers.

Without DATABASE_URL a throwaway cluster is started (libs.db.embedded) and removed at the
end; with DATABASE_URL its server is used and the test databases are created on it.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from libs.db.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("GHOSTLY_SAMPLES") or ROOT.parent / "shared" / "samples")


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.c3d")) if SAMPLES.is_dir() else []


def _with_db(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_admin_dsn():
    """DSN of a maintenance database on the test server (creating/dropping test databases)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield _with_db(url, "postgres")
        return
    from libs.db.embedded import EmbeddedPostgres
    pg = EmbeddedPostgres(ephemeral=True)
    pg.start()
    try:
        yield pg.admin_dsn()
    finally:
        pg.stop()


class DatabaseFactory:
    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn
        self.created: list[str] = []

    async def create(self, prefix: str = "t") -> str:
        name = f"ghostly_{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return _with_db(self.admin_dsn, name)

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        self.created.clear()


@pytest.fixture(scope="session")
async def db_factory(pg_admin_dsn):
    factory = DatabaseFactory(pg_admin_dsn)
    yield factory
    await factory.drop_all()


@pytest.fixture(scope="session")
async def database_url(db_factory) -> str:
    """A database with every (non-manual) migration applied, shared by the session."""
    dsn = await db_factory.create("main")
    await migrate(dsn)
    return dsn


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """GHOSTLY_DATA_DIR shared by every service started against `database_url`: one content
    store for the whole run, as in a deployment (sessions are deduplicated by content across
    the shared database, so their files must be in the same store)."""
    return tmp_path_factory.mktemp("ghostly-data")


@pytest.fixture
async def empty_database_url(db_factory) -> str:
    """A brand-new empty database for this test."""
    return await db_factory.create("empty")


@contextlib.asynccontextmanager
async def rolled_back(dsn: str):
    """A connection inside a transaction that is rolled back at the end."""
    connection = await asyncpg.connect(dsn)
    tx = connection.transaction()
    await tx.start()
    try:
        yield connection
    finally:
        await tx.rollback()
        await connection.close()


@pytest.fixture
async def conn(database_url):
    """A connection inside a transaction that is rolled back after the test."""
    async with rolled_back(database_url) as connection:
        yield connection
