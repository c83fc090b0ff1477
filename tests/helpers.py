"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from ghostly.export.v1 import export_pb2
from ghostly.jit_signal.v1 import jit_signal_pb2
from libs import config as config_mod
from libs.db.embedded import free_port  # noqa: F401 (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("GHOSTLY_SAMPLES") or ROOT.parent / "shared" / "samples")
GRPCURL = Path(sys.executable).parent / "grpcurl"


TEST_JWT_SECRET = "test-secret-for-hs256-tokens-only-in-tests"


def token(role: str, subject: str = "11111111-1111-1111-1111-111111111111", **kw) -> str:
    from libs.auth import issue_token

    return issue_token(secret=TEST_JWT_SECRET, subject=subject, role=role, **kw)


def bearer(role: str, subject: str = "11111111-1111-1111-1111-111111111111", **kw) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying a test token for `role`."""
    return (("authorization", f"Bearer {token(role, subject, **kw)}"),)


def make_config(database_url: str | None, tmp_path: Path | None = None, **overrides) -> config_mod.Config:
    env = {
        "DATABASE_URL": database_url or "",
        "GHOSTLY_HEALTH_INTERVAL_S": "0.2",
        "GHOSTLY_SHUTDOWN_GRACE_S": "2",
        # Dev mode: calls without a token act as admin; tokens that are sent are verified
        # (tests/auth uses them to act as each role).
        "GHOSTLY_AUTH_MODE": "dev",
        "GHOSTLY_JWT_SECRET": TEST_JWT_SECRET,
        # Servers of many tests share one database: none takes over another test's
        # 'processing' sessions (tests/ingest/test_crash_recovery.py sets short leases).
        "GHOSTLY_INGEST_CLAIM_LEASE_S": "3600",
    }
    # Many servers share the test process: no fixed /metrics ports (tests/ops scrapes its own).
    env.update({var: "0" for var, _ in config_mod.METRICS_PORTS.values()})
    if tmp_path is not None:
        env["GHOSTLY_DATA_DIR"] = str(tmp_path)
    cfg = config_mod.load(env)
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def grpcurl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([str(GRPCURL), *args], capture_output=True, text=True, timeout=timeout)


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll `predicate` (a function, sync or async) until it returns a truthy value, which is
    returned; TimeoutError after `timeout` seconds. The one way tests wait for a condition
    (instead of sleeping for a guessed time)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout:g} s")
        await asyncio.sleep(interval)


wait_for = wait_until  # the older name, still used by some tests


async def waiting_for_lock(observer, conn) -> bool:
    """Whether the backend of `conn` is blocked on a lock now (read on `observer`, another
    connection outside a transaction: pg_stat_activity is a snapshot within one)."""
    return bool(
        await observer.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
        )
    )


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GHOSTLY_AUTH_MODE", "dev")
    env.setdefault("GHOSTLY_JWT_SECRET", TEST_JWT_SECRET)
    env.update(extra)
    return env


async def add_therapist(
    conn, *, user: uuid.UUID | None = None, first: str = "T", last: str = "Therapist"
) -> tuple[uuid.UUID, uuid.UUID]:
    """A new therapists row on `conn` (asyncpg, the owner); returns (therapist id, user id)."""
    user = user or uuid.uuid4()
    therapist = await conn.fetchval(
        "INSERT INTO therapists (user_id, first_name, last_name) VALUES ($1, $2, $3) RETURNING id", user, first, last
    )
    return therapist, user


async def add_patient(
    conn,
    therapist: uuid.UUID,
    code: str,
    *,
    first: str = "P",
    last: str = "Ient",
    date_of_birth: dt.date = dt.date(1940, 1, 1),
) -> str:
    """A new patients row of `therapist` on `conn`; returns its code. The one copy of the
    register-patient SQL of the tests (bench/common.py has the benchmarks' one)."""
    await conn.execute(
        "INSERT INTO patients (therapist_id, patient_code, first_name, last_name, date_of_birth) "
        "VALUES ($1, $2, $3, $4, $5)",
        therapist,
        code,
        first,
        last,
        date_of_birth,
    )
    return code


async def register_patient(conn, prefix: str = "T") -> str:
    """Register a therapist and one patient on `conn` (asyncpg connection); return the code."""
    _, code = await _therapist_and_patient(conn, f"{prefix}{uuid.uuid4().hex[:7].upper()}", "Therapist", "Ient")
    return code


async def _therapist_and_patient(conn, code: str, therapist_last: str, patient_last: str):
    """A new therapist and their patient ``code``; returns (therapist user id, code)."""
    therapist, user = await add_therapist(conn, last=therapist_last)
    await add_patient(conn, therapist, code, last=patient_last)
    return user, code


async def caseload_with_session(conn, name: str, prefix: str = "R") -> tuple[str, str, str]:
    """A therapist (last name ``name``) with one patient and one completed session, inserted on
    ``conn`` (the owner); returns (therapist user id, patient code, session id)."""
    user, code = await _therapist_and_patient(conn, f"{prefix}{uuid.uuid4().hex[:6].upper()}", name, name)
    sid = await conn.fetchval(
        "INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, patient_id, original_sampling_rate, "
        "original_duration_seconds, original_sample_count, channel_names, channel_count, processing_version, "
        "processing_status) VALUES ($1, $2, 1, $3, 990, 1, 990, '[]', 0, 'v', 'completed') RETURNING id",
        f"{code}/x.c3d",
        uuid.uuid4().hex,
        code,
    )
    return str(user), code, sid


def upload_messages(data: bytes, file_name: str, patient: str, chunk: int = 1 << 20, **session):
    """An Upload request stream: metadata first, then the file in chunks."""
    from ghostly.ingest.v1 import ingest_pb2

    meta = ingest_pb2.UploadMetadata(
        file_name=file_name, session=ingest_pb2.SessionMetadata(patient_code=patient, **session)
    )
    yield ingest_pb2.UploadRequest(metadata=meta)
    for i in range(0, len(data), chunk):
        yield ingest_pb2.UploadRequest(chunk=data[i : i + chunk])


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.c3d")) if SAMPLES.is_dir() else []


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


async def upload(ingest_stub, data: bytes, name: str, patient: str, **session):
    """One Upload through IngestService (an IngestReply)."""
    return await ingest_stub.Upload(upload_messages(data, name, patient, **session), timeout=120)


async def run_export(
    stub: Any, *, metadata: Any = None, timeout: float = 120, **fields: Any
) -> tuple[Any, bytes, Any, int]:
    """CreateExport -> (started, payload bytes, completed, number of data messages)."""
    started = completed = None
    parts: list[bytes] = []
    n = 0
    async for msg in stub.CreateExport(export_pb2.CreateExportRequest(**fields), timeout=timeout, metadata=metadata):
        which = msg.WhichOneof("body")
        if which == "started":
            assert started is None and not parts and completed is None
            started = msg.started
        elif which == "data":
            assert started is not None and completed is None
            assert 0 < len(msg.data) <= 1 << 20
            parts.append(msg.data)
            n += 1
        else:
            assert completed is None
            completed = msg.completed
    assert started is not None and completed is not None
    return started, b"".join(parts), completed, n


def variant(src, folder, tag: int):
    """A copy of `src` with its last analog sample nudged (a distinct content hash), so that
    ingest's content idempotency never hands back a session another test module created."""
    import struct

    data = bytearray(src.read_bytes())
    (last,) = struct.unpack_from("<I", data, len(data) - 4)
    struct.pack_into("<I", data, len(data) - 4, (last + 1000 + tag) & 0xFFFFFFFF)
    out = folder / src.name
    out.write_bytes(bytes(data))
    return out


async def new_patient(db) -> str:
    return await register_patient(db, "X")


async def collect(stub, **kw) -> list[jit_signal_pb2.SignalChunk]:
    return [m async for m in stub.StreamSignals(jit_signal_pb2.StreamSignalsRequest(**kw))]


def by_channel(chunks) -> dict[str, dict]:
    """channel -> values (float32), indices (int64 original sample indices), chunks."""
    out: dict[str, dict] = {}
    for ch in chunks:
        d = out.setdefault(ch.channel, {"values": [], "indices": [], "chunks": []})
        vals = np.frombuffer(ch.samples, dtype="<f4")
        assert vals.size == ch.sample_count and ch.dtype == "float32le"
        if ch.sample_indices:
            idx = np.frombuffer(ch.sample_indices, dtype="<u4").astype(np.int64)
        else:
            first = round(ch.t0_s * ch.sample_rate_hz)
            idx = np.arange(first, first + vals.size)
        d["values"].append(vals)
        d["indices"].append(idx)
        d["chunks"].append(ch)
    for d in out.values():
        d["values"] = np.concatenate(d["values"])
        d["indices"] = np.concatenate(d["indices"])
    return out


async def register_patient_at(dsn: str, prefix: str = "O") -> str:
    """register_patient on a connection of its own to `dsn`."""
    conn = await asyncpg.connect(dsn)
    try:
        return await register_patient(conn, prefix)
    finally:
        await conn.close()


def synthetic_file(directory: Path, seed: int, duration_s: float = 30.0, rate: float = 990.0) -> tuple[str, bytes]:
    """A synthetic GHOSTLY recording (two channels with contractions) written in `directory`;
    returns (file name, bytes)."""
    from libs.emg.synthetic import (
        ChannelSpec,
        SyntheticSpec,
        ghostly_file_name,
        regular_contractions,
        write_synthetic_c3d,
    )

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


# --------------------------------------------------------------------------- the ghostly command (tests/cli)

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:  # shown by `assert ..., r`
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"

    def error_line(self) -> str:
        """The one-line error report (`error: <STATUS>: <message>`)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, self
        return lines[0]


class Ghostly:
    """Runs `python -m app.cli ...` against the test servers."""

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
            sys.executable,
            "-m",
            "app.cli",
            *map(str, args),
            cwd=ROOT,
            env=self.env(**env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None  # the process has exited
        return Result(proc.returncode, out.decode(), err.decode())


def _group(pattern: str, text: str, flags: int = 0) -> str:
    """The first group of `pattern` in `text` (an assertion error when it is not there)."""
    m = re.search(pattern, text, flags)
    assert m is not None, f"{pattern!r} not in {text!r}"
    return m.group(1)


def new_code(prefix: str = "C") -> str:
    return f"{prefix}{uuid.uuid4().hex[:7].upper()}"


async def ghostly_add_therapist(ghostly: Ghostly) -> str:
    """A therapist registered through `ghostly therapists add`; returns therapists.id."""
    r = await ghostly("therapists", "add", "--user-id", str(uuid.uuid4()), "--first", "Tess", "--last", "Therapist")
    assert r.code == 0, r
    return _group(rf"^therapist\s+({UUID_RE})", r.out, re.M)


async def ghostly_add_patient(ghostly: Ghostly, therapist: str, code: str | None = None) -> str:
    code = code or new_code()
    r = await ghostly(
        "patients", "add", code, "--first", "Pat", "--last", "Ient", "--dob", "1940-01-01", "--therapist", therapist
    )
    assert r.code == 0, r
    return code


def synthetic_c3d(folder: Path, minute: int = 30, dropouts: bool = False) -> Path:
    """A GHOSTLY-like recording with unique content (random seed): left 8 contractions of
    2.5 s, right 6 of 1.5 s (optionally with dropouts between them)."""
    from libs.emg.synthetic import (
        ChannelSpec,
        SyntheticSpec,
        ghostly_file_name,
        regular_contractions,
        write_synthetic_c3d,
    )

    seed = uuid.uuid4().int % (1 << 31)
    spec = SyntheticSpec(
        duration_s=50.0,
        seed=seed,
        time=(2024, 5, 6, 14, minute),
        channels=[
            ChannelSpec(contractions=regular_contractions(8, 2.5, 5.5, amplitude_v=400e-6)),
            ChannelSpec(
                contractions=regular_contractions(6, 1.5, 7.0, amplitude_v=300e-6),
                dropouts=[(4.5, 270)] if dropouts else [],
            ),
        ],
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ghostly_file_name(spec, seconds=seed % 60)
    write_synthetic_c3d(path, spec)
    return path


def session_ids(text: str) -> list[str]:
    return re.findall(rf"session ({UUID_RE})", text)


def session_of(text: str, path: Path) -> str:
    """The session id `ghostly ingest` printed for `path` (lines come in completion order)."""
    line = next(x for x in text.splitlines() if f" {path}  session " in x)
    return _group(rf"session ({UUID_RE})", line)


def pg_stop_fast(pg: Any) -> None:
    """Stop an EmbeddedPostgres as an operator would (pg_ctl stop -m fast); data kept, same port."""
    pg._run("pg_ctl", "-D", str(pg.data_dir), "-m", "fast", "-w", "stop")


async def connect(dsn: str) -> asyncpg.Connection:
    """A connection that decodes JSON columns as the services do."""
    from libs.db.pool import init_connection

    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    return conn


async def as_admin_of_role(conn: asyncpg.Connection, role: str, sql: str, *args: Any) -> None:
    """``sql`` in a transaction of its own, as the database role ``role`` acting for an admin
    caller (row-level security sees ghostly.role = admin): what a service's connection does."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {role}")
        await conn.execute("SELECT set_config('ghostly.role', 'admin', true)")
        await conn.execute(sql, *args)


async def in_one_transaction(conn: asyncpg.Connection, *statements: tuple[Any, ...]) -> None:
    """Each (sql, *args) of ``statements`` in one transaction (rolled back if one fails)."""
    async with conn.transaction():
        for sql, *args in statements:
            await conn.execute(sql, *args)
