"""Shared fixtures: a real PostgreSQL for the whole run, fresh databases, real gRPC servers.

Without DATABASE_URL a throwaway cluster is started (libs.db.embedded) and removed at the
end; with DATABASE_URL its server is used and the test databases are created on it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from libs.db.migrate import migrate
from libs.db.pool import init_connection
from tests.helpers import ROOT, SAMPLES, rolled_back, sample_files  # noqa: F401 (re-exported)

# ------------------------------------------------------------------ the event loop
# GHOSTLY_TEST_LOOP=uvloop runs the tests on uvloop's event loop, the one the services use in
# production (app/service_main.py); default: asyncio's own. .ci/run runs the gRPC tests once
# more with it.
TEST_LOOP = os.environ.get("GHOSTLY_TEST_LOOP", "asyncio")


def pytest_configure(config):
    if TEST_LOOP not in ("asyncio", "uvloop"):
        raise pytest.UsageError(f"GHOSTLY_TEST_LOOP must be asyncio or uvloop, got {TEST_LOOP!r}")


if TEST_LOOP == "uvloop":  # (without the hook pytest-asyncio uses asyncio's default loop)

    def pytest_asyncio_loop_factories(config, item):
        """pytest-asyncio's hook: the event loop factory of every test and async fixture."""
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


# ------------------------------------------------------------------ unhandled loop exceptions
# What the event loop reports through its exception handler (a task whose exception was never
# retrieved, a failing callback, an error in a transport) is a bug even when the test's own
# assertions pass: every such report fails the test during which it arrived. A test that
# provokes one on purpose says so with @pytest.mark.allow_loop_exceptions.
_LOOP_REPORTS: list[dict[str, Any]] = []


def _collect_loop_report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    _LOOP_REPORTS.append(context)
    loop.default_exception_handler(context)  # still logged as usual


@pytest.fixture(scope="session", autouse=True)
async def _loop_exception_handler():
    """Installs the collecting handler on the session's event loop (every test's loop)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(_collect_loop_report)
    yield
    loop.set_exception_handler(previous)


def _describe(context: dict[str, Any]) -> str:
    exc = context.get("exception")
    what = f"{exc.__class__.__name__}: {exc}" if exc is not None else ""
    return " - ".join(filter(None, [str(context.get("message", "")), what]))


@pytest.fixture(autouse=True)
def _fail_on_unhandled_loop_exceptions(request, _loop_exception_handler):
    yield
    reports = _LOOP_REPORTS[:]
    del _LOOP_REPORTS[:]
    if reports and request.node.get_closest_marker("allow_loop_exceptions") is None:
        pytest.fail(
            f"the event loop reported {len(reports)} unhandled exception(s) during this test "
            f"(or since the previous one ended):\n" + "\n".join(f"  {_describe(c)}" for c in reports),
            pytrace=False,
        )


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


@pytest.fixture(scope="session")
async def db(database_url):
    """An owner connection to the shared database for the whole run (JSON columns as Python
    objects, as the services see them): the one `db` fixture of every area."""
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def conn(database_url):
    """A connection inside a transaction that is rolled back after the test."""
    async with rolled_back(database_url) as connection:
        yield connection
