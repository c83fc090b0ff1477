"""Small helpers shared by the integration tests."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from libs import config as config_mod
from libs.db.embedded import free_port  # noqa: F401 (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent
GRPCURL = Path(sys.executable).parent / "grpcurl"


TEST_JWT_SECRET = "test-secret-for-hs256-tokens-only-in-tests"


def token(role: str, subject: str = "11111111-1111-1111-1111-111111111111", **kw) -> str:
    from libs.auth import issue_token
    return issue_token(secret=TEST_JWT_SECRET, subject=subject, role=role, **kw)


def bearer(role: str, subject: str = "11111111-1111-1111-1111-111111111111", **kw) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying a test token for `role`."""
    return (("authorization", f"Bearer {token(role, subject, **kw)}"),)


def make_config(database_url: str | None, tmp_path: Path | None = None, **overrides) -> config_mod.Config:
    env = {"DATABASE_URL": database_url or "", "GHOSTLY_HEALTH_INTERVAL_S": "0.2",
           "GHOSTLY_SHUTDOWN_GRACE_S": "2",
           # Dev mode: calls without a token act as admin; tokens that are sent are verified
           # (tests/auth uses them to act as each role).
           "GHOSTLY_AUTH_MODE": "dev", "GHOSTLY_JWT_SECRET": TEST_JWT_SECRET,
           # Servers of many tests share one database: none takes over another test's
           # 'processing' sessions (tests/ingest/test_crash_recovery.py sets short leases).
           "GHOSTLY_INGEST_CLAIM_LEASE_S": "3600"}
    # Many servers share the test process: no fixed /metrics ports (tests/ops scrapes its own).
    env.update({var: "0" for var, _ in config_mod.METRICS_PORTS.values()})
    if tmp_path is not None:
        env["GHOSTLY_DATA_DIR"] = str(tmp_path)
    cfg = config_mod.load(env)
    return dataclasses.replace(cfg, **overrides) if overrides else cfg




def grpcurl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([str(GRPCURL), *args], capture_output=True, text=True, timeout=timeout)


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GHOSTLY_AUTH_MODE", "dev")
    env.setdefault("GHOSTLY_JWT_SECRET", TEST_JWT_SECRET)
    env.update(extra)
    return env


async def register_patient(conn, prefix: str = "T") -> str:
    """Register a therapist and one patient on `conn` (asyncpg connection); return the code."""
    import uuid
    _, code = await _therapist_and_patient(conn, f"{prefix}{uuid.uuid4().hex[:7].upper()}", "Therapist", "Ient")
    return code


async def _therapist_and_patient(conn, code: str, therapist_last: str, patient_last: str):
    """A new therapist and their patient ``code``; returns (therapist user id, code)."""
    import uuid
    user = uuid.uuid4()
    therapist = await conn.fetchval("INSERT INTO therapists (user_id, first_name, last_name) VALUES ($1, 'T', $2) "
                                    "RETURNING id", user, therapist_last)
    await conn.execute("INSERT INTO patients (therapist_id, patient_code, first_name, last_name, date_of_birth) "
                       "VALUES ($1, $2, 'P', $3, '1940-01-01')", therapist, code, patient_last)
    return user, code


async def caseload_with_session(conn, name: str, prefix: str = "R") -> tuple[str, str, str]:
    """A therapist (last name ``name``) with one patient and one completed session, inserted on
    ``conn`` (the owner); returns (therapist user id, patient code, session id)."""
    import uuid
    user, code = await _therapist_and_patient(conn, f"{prefix}{uuid.uuid4().hex[:6].upper()}", name, name)
    sid = await conn.fetchval(
        "INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, patient_id, original_sampling_rate, "
        "original_duration_seconds, original_sample_count, channel_names, channel_count, processing_version, "
        "processing_status) VALUES ($1, $2, 1, $3, 990, 1, 990, '[]', 0, 'v', 'completed') RETURNING id",
        f"{code}/x.c3d", uuid.uuid4().hex, code)
    return str(user), code, sid


def upload_messages(data: bytes, file_name: str, patient: str, chunk: int = 1 << 20, **session):
    """An Upload request stream: metadata first, then the file in chunks."""
    from ghostly.ingest.v1 import ingest_pb2
    meta = ingest_pb2.UploadMetadata(file_name=file_name,
                                     session=ingest_pb2.SessionMetadata(patient_code=patient, **session))
    yield ingest_pb2.UploadRequest(metadata=meta)
    for i in range(0, len(data), chunk):
        yield ingest_pb2.UploadRequest(chunk=data[i:i + chunk])
