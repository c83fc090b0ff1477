"""Benchmark scaffolding: a database (embedded unless DATABASE_URL), migrated, and timing helpers."""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLES = Path(os.environ.get("GHOSTLY_SAMPLES") or ROOT.parent / "shared" / "samples")
LARGEST = SAMPLES / "Ghostly_Emg_20230321_17-50-17-0881.c3d"


@contextlib.contextmanager
def database():
    """Yield a DSN of a freshly migrated database."""
    import asyncio
    import uuid

    import asyncpg

    from libs.db.migrate import migrate

    url = os.environ.get("DATABASE_URL")
    pg = None
    if url:
        admin = url.rsplit("/", 1)[0] + "/postgres"
    else:
        from libs.db.embedded import EmbeddedPostgres
        pg = EmbeddedPostgres(ephemeral=True)
        pg.start()
        admin = pg.admin_dsn()
    name = f"ghostly_bench_{uuid.uuid4().hex[:8]}"

    async def create():
        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    async def drop():
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(create())
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    asyncio.run(migrate(dsn))
    try:
        yield dsn
    finally:
        asyncio.run(drop())
        if pg:
            pg.stop()


async def wait_serving(address: str, timeout: float = 30.0) -> None:
    """Poll the standard health service (libs.healthcheck) until `address` reports SERVING."""
    import asyncio
    import time

    from libs.healthcheck import check
    deadline = time.monotonic() + timeout
    while not await check(address, timeout=1.0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} did not report SERVING within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)
