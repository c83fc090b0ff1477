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


async def test_a_killed_owner_leaves_no_cluster_behind(tmp_path):
    """A process killed before stop() leaves its throwaway cluster running; the next one's start
    (here: the sweep it calls) stops and removes it. Live owners' clusters are left alone."""
    import sys
    from pathlib import Path

    from libs.db.embedded import OWNER_FILE, sweep_orphan_clusters

    script = (
        "import os, sys; sys.path.insert(0, os.getcwd()); from libs.db.embedded import EmbeddedPostgres; "
        "pg = EmbeddedPostgres(ephemeral=True); print(pg.start(), pg.data_dir, flush=True); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    dsn, data_dir = out[0], Path(out[1])
    assert (data_dir.parent / OWNER_FILE).exists()
    conn = await asyncpg.connect(dsn)  # leaked: still running after its owner exited
    await conn.close()

    mine = EmbeddedPostgres(ephemeral=True)  # the next throwaway cluster sweeps first
    try:
        assert not data_dir.parent.exists()
        assert sweep_orphan_clusters() == [] and mine.data_dir.parent.exists()  # a live owner's: kept
        try:
            await asyncpg.connect(dsn, timeout=2)
            raise AssertionError("the orphaned server is still accepting connections")
        except (OSError, asyncpg.PostgresError):
            pass
    finally:
        mine.stop()


def test_the_sweep_removes_only_certainly_dead_owners(tmp_path):
    from libs.db.embedded import EPHEMERAL_PREFIX, OWNER_FILE, _process_identity, sweep_orphan_clusters

    records = {
        "dead": "999999999 12345",
        "empty": "",
        "pid-only": "1",
        "garbage": "x y z",
        "alive": _process_identity(os.getpid()),
    }
    for name, record in records.items():
        d = tmp_path / f"{EPHEMERAL_PREFIX}{name}"
        (d / "data").mkdir(parents=True)
        (d / OWNER_FILE).write_text(record)
    (tmp_path / f"{EPHEMERAL_PREFIX}no-record" / "data").mkdir(parents=True)
    assert [p.name for p in sweep_orphan_clusters(tmp_path)] == [f"{EPHEMERAL_PREFIX}dead"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{EPHEMERAL_PREFIX}{n}" for n in ("empty", "pid-only", "garbage", "alive", "no-record")
    )
