"""Operational fault tests: each module gets its OWN throwaway PostgreSQL cluster (they stop and
restart it; the suite's shared cluster is never touched), real servers on loopback."""

from __future__ import annotations

import pytest

from libs.db.embedded import EmbeddedPostgres
from libs.db.migrate import migrate


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
