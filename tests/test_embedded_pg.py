"""The embedded default database: start, use, stop, remove (as root via runuser)."""
from __future__ import annotations

import os
import subprocess

import asyncpg

from libs.db.embedded import EmbeddedPostgres


async def test_start_query_stop_and_cleanup():
    pg = EmbeddedPostgres(ephemeral=True)
    dsn = pg.start()
    try:
        assert pg.running()
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == "ghostly"
            owner = await conn.fetchval("SELECT current_user")
            assert owner == "postgres"
        finally:
            await conn.close()
        if os.geteuid() == 0:
            # PostgreSQL refuses root: the server process must belong to the postgres user.
            pid = (pg.data_dir / "postmaster.pid").read_text().split()[0]
            user = subprocess.run(["ps", "-o", "user=", "-p", pid], capture_output=True, text=True).stdout.strip()
            assert user == "postgres"
        # Starting again on a running cluster reuses it.
        assert EmbeddedPostgres(pg.data_dir, port=pg.port).start() == dsn
    finally:
        pg.stop()
    assert not pg.data_dir.exists(), "ephemeral cluster directory removed"
    try:
        await asyncpg.connect(dsn, timeout=2)
        raise AssertionError("server still accepting connections after stop")
    except (OSError, asyncpg.PostgresError):
        pass
