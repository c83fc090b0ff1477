"""Benchmark scaffolding: a database (embedded unless DATABASE_URL), migrated, and timing helpers."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

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
    """Poll the standard health service (app.healthcheck) until `address` reports SERVING."""
    import asyncio
    import time

    from app.healthcheck import check

    deadline = time.monotonic() + timeout
    while not await check(address, timeout=1.0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} did not report SERVING within {timeout:.0f} s")
        await asyncio.sleep(0.1)


class Running:
    """Service processes started by `services()`: their addresses and processes, by name."""

    def __init__(self, addresses: dict[str, str], procs: dict):
        self.addresses, self.procs = addresses, procs


@contextlib.contextmanager
def services(names, dsn: str, *, wait: bool = True, quiet: bool = False, **env: str):
    """Start `python -m services.<name>` for each name on a free loopback port, against `dsn`
    (dev auth and WARNING logs unless `env` says otherwise); wait until each reports SERVING
    (`wait=False`: the caller awaits `wait_serving` itself, e.g. from a running loop); SIGTERM
    and wait on exit."""
    import asyncio
    import signal
    import subprocess

    from libs.db.embedded import free_port

    ports = {n: free_port() for n in names}
    full = dict(
        os.environ,
        GHOSTLY_AUTH_MODE="dev",
        GHOSTLY_LOG_LEVEL="WARNING",
        DATABASE_URL=dsn,
        **{f"GHOSTLY_{n.upper()}_PORT": str(p) for n, p in ports.items()},
    )
    full.pop("STATISTICS_DATABASE_URL", None)  # the scratch database, not a configured replica
    full.update(env)
    out = subprocess.DEVNULL if quiet else None
    procs = {
        n: subprocess.Popen([sys.executable, "-m", f"services.{n}"], cwd=ROOT, env=full, stdout=out, stderr=out)
        for n in names
    }
    try:
        running = Running({n: f"127.0.0.1:{p}" for n, p in ports.items()}, procs)
        if wait:
            for address in running.addresses.values():
                asyncio.run(wait_serving(address))
        yield running
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(30)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


async def register_patient(conn: Any, code: str) -> uuid.UUID:
    """A therapist and their patient ``code`` on ``conn`` (asyncpg, the owner); returns the
    therapist id. The one copy of the register-patient SQL of the benchmarks (tests have
    theirs in tests/helpers.py)."""
    therapist: uuid.UUID = await conn.fetchval(
        "INSERT INTO therapists (user_id, first_name, last_name) VALUES ($1, 'B', 'T') RETURNING id", uuid.uuid4()
    )
    await conn.execute(
        "INSERT INTO patients (therapist_id, patient_code, first_name, last_name, date_of_birth) "
        "VALUES ($1, $2, 'B', 'P', '1940-01-01')",
        therapist,
        code,
    )
    return therapist


async def add_researcher(conn: Any) -> uuid.UUID:
    """A researcher profile (the exported_by of research exports); returns its id."""
    researcher = uuid.uuid4()
    await conn.execute("INSERT INTO researcher_profiles (id, full_name, institution) VALUES ($1, 'R', 'I')", researcher)
    return researcher
