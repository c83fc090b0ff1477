"""CLI fixtures: real Ingest (with PatientService) and Statistics services on loopback, in
process, over the session's migrated database; the `ghostly` commands run as subprocesses
(awaited asynchronously: the servers run on this test's event loop) that find the servers
through GHOSTLY_INGEST_ADDRESS / GHOSTLY_STATISTICS_ADDRESS, as a deployment configures them."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import sys
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest

from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.db.embedded import free_port
from libs.db.pool import init_connection
from libs.grpc_server import start_service
from tests.helpers import ROOT, TEST_JWT_SECRET, make_config

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:      # shown by `assert ..., r`
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"

    def error_line(self) -> str:
        """The one-line error report (`error: <STATUS>: <message>`)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, self
        return lines[0]


class Ghostly:
    """Runs `python -m libs.cli ...` against the test servers."""

    def __init__(self, addresses: dict[str, str]):
        self.addresses = addresses

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "GHOSTLY_TOKEN"}
        env.update({f"GHOSTLY_{name.upper()}_ADDRESS": addr for name, addr in self.addresses.items()})
        env.update(GHOSTLY_JWT_SECRET=TEST_JWT_SECRET)
        env.update(extra)
        return env

    async def __call__(self, *args: str, timeout: float = 120, **env: str) -> Result:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "libs.cli", *map(str, args), cwd=ROOT, env=self.env(**env),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="package")
async def servers(database_url, shared_data_dir):
    from services.ingest.server import SPEC as INGEST
    from services.statistics.server import SPEC as STATISTICS
    cfg = make_config(database_url, shared_data_dir)
    cfg = dataclasses.replace(cfg, max_upload_bytes=64 << 20, ingest_workers=2)
    running = {"ingest": await start_service(INGEST, cfg, port=0),
               "statistics": await start_service(STATISTICS, cfg, port=0)}
    yield running
    for server in running.values():
        await server.stop(0)


@pytest.fixture(scope="package")
def ghostly(servers) -> Ghostly:
    return Ghostly({name: s.address for name, s in servers.items()})


@pytest.fixture(scope="package")
async def stats(servers):
    async with grpc.aio.insecure_channel(servers["statistics"].address) as channel:
        yield statistics_pb2_grpc.StatisticsServiceStub(channel)


@pytest.fixture
async def db(database_url):
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
def closed_address() -> str:
    """An address where nothing listens."""
    return f"127.0.0.1:{free_port()}"


def new_code(prefix: str = "C") -> str:
    return f"{prefix}{uuid.uuid4().hex[:7].upper()}"


async def add_therapist(ghostly: Ghostly) -> str:
    """A therapist registered through `ghostly therapists add`; returns therapists.id."""
    r = await ghostly("therapists", "add", "--user-id", str(uuid.uuid4()), "--first", "Tess", "--last", "Therapist")
    assert r.code == 0, r
    return re.search(rf"^therapist\s+({UUID_RE})", r.out, re.M).group(1)


async def add_patient(ghostly: Ghostly, therapist: str, code: str | None = None) -> str:
    code = code or new_code()
    r = await ghostly("patients", "add", code, "--first", "Pat", "--last", "Ient", "--dob", "1940-01-01",
                      "--therapist", therapist)
    assert r.code == 0, r
    return code


def synthetic_c3d(folder: Path, minute: int = 30, dropouts: bool = False) -> Path:
    """A GHOSTLY-like recording with unique content (random seed): left 8 contractions of
    2.5 s, right 6 of 1.5 s (optionally with dropouts between them)."""
    from libs.emg.synthetic import (ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions,
                                    write_synthetic_c3d)
    seed = uuid.uuid4().int % (1 << 31)
    spec = SyntheticSpec(duration_s=50.0, seed=seed, time=(2024, 5, 6, 14, minute), channels=[
        ChannelSpec(contractions=regular_contractions(8, 2.5, 5.5, amplitude_v=400e-6)),
        ChannelSpec(contractions=regular_contractions(6, 1.5, 7.0, amplitude_v=300e-6),
                    dropouts=[(4.5, 270)] if dropouts else []),
    ])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ghostly_file_name(spec, seconds=seed % 60)
    write_synthetic_c3d(path, spec)
    return path


def session_ids(text: str) -> list[str]:
    return re.findall(rf"session ({UUID_RE})", text)


def session_of(text: str, path: Path) -> str:
    """The session id `ghostly ingest` printed for `path` (lines come in completion order)."""
    line = next(x for x in text.splitlines() if f" {path}  session " in x)
    return re.search(rf"session ({UUID_RE})", line).group(1)
