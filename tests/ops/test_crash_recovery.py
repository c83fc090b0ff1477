"""kill -9 of ingest during an analysis (issue 16, item 4): the analysis processes die with it,
the session it had claimed is taken over by the next ingest process (lease expired) and
completed, and the staging file of an upload cut mid-stream is swept."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from app.healthcheck import check
from ghostly.ingest.v1 import ingest_pb2_grpc
from libs.grpc_server import start_service
from services.ingest.server import SPEC as INGEST
from tests.helpers import (
    ROOT,
    connect,
    free_port,
    make_config,
    subprocess_env,
    synthetic_file,
    upload_messages,
    wait_for,
)
from tests.helpers import register_patient_at as register_patient


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.update(map(int, (task / "children").read_text().split()))
        except OSError:
            continue
    return out


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for c in map(int, children):
                if c not in out:
                    out.add(c)
                    todo.append(c)
    return out


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _now(fn):
    """A synchronous condition as wait_for's awaitable predicate."""

    async def predicate():
        return fn()

    return predicate


def _forkserver_tree(pid: int) -> set[int]:
    """The analysis fork server under `pid` and its workers (not the resource tracker)."""
    for child in _children(pid):  # its workers are forks of it: same command line
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmd:
            return {child} | _descendants(child)
    return set()


def _spawn_ingest(dsn: str, data_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = subprocess_env(
        DATABASE_URL=dsn,
        GHOSTLY_DATA_DIR=str(data_dir),
        GHOSTLY_HEALTH_INTERVAL_S="0.2",
        GHOSTLY_INGEST_WORKERS="2",
        GHOSTLY_INGEST_PORT=str(port),
        GHOSTLY_INGEST_METRICS_PORT="0",
        GHOSTLY_INGEST_CLAIM_LEASE_S="1",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "services.ingest"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "w"),
    )


async def test_kill_9_mid_analysis_workers_die_and_the_claim_is_recovered(own_pg, tmp_path):
    patient = await register_patient(own_pg.dsn)
    name, data = synthetic_file(tmp_path, 4242, duration_s=40.0)
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = _spawn_ingest(own_pg.dsn, tmp_path, port, tmp_path / "ingest-a.log")
    db = await connect(own_pg.dsn)
    try:
        await wait_for(lambda: check(address, timeout=1), timeout=30, interval=0.1)
        tree = await wait_for(_now(lambda: (t := _forkserver_tree(proc.pid)) and len(t) >= 3 and t), timeout=20)
        helpers = _descendants(proc.pid)
        # Freeze the analysis workers: the analysis of the upload cannot finish, so the process
        # is killed with its session claimed ('processing'), deterministically. The fork server
        # itself keeps running, as it would in production: it must then go with ingest (its
        # parent-death signal, or its pipe from ingest closing), and the frozen workers with it
        # (their own parent-death signal, towards the fork server).
        server = next(p for p in tree if _parent(p) == proc.pid)  # the workers' parent is the fork server
        for pid in tree - {server}:
            os.kill(pid, signal.SIGSTOP)

        never = asyncio.Event()

        async def cut_upload():  # an upload that stops mid-stream (its .part stays in staging)
            msgs = list(upload_messages(data, "cut_" + name, patient, chunk=1 << 14))
            for m in msgs[:3]:
                yield m
            await never.wait()

        async with grpc.aio.insecure_channel(address) as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)
            upload = asyncio.ensure_future(stub.Upload(upload_messages(data, name, patient), timeout=60))
            cut = asyncio.ensure_future(stub.Upload(cut_upload(), timeout=60))
            row = await wait_for(
                lambda: db.fetchrow(
                    "SELECT id, processing_status, claimed_by FROM therapy_sessions WHERE patient_id = $1", patient
                ),
                timeout=20,
            )
            staging = tmp_path / "c3d-store" / ".staging"
            await wait_for(_now(lambda: list(staging.glob("*.part"))), timeout=20)
            assert row["processing_status"] == "processing" and row["claimed_by"].split(":")[1] == str(proc.pid)

            proc.kill()  # SIGKILL: no cleanup code of ingest runs
            await asyncio.to_thread(proc.wait, 10)
            for call in (upload, cut):
                try:
                    await call
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            never.set()

        # The fork server and every worker die with the parent (parent-death signal), even stopped.
        try:
            await wait_for(_now(lambda: not any(_alive(p) for p in helpers)), timeout=10)
        except TimeoutError:
            survivors = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in helpers if _alive(p)}
            raise AssertionError(f"processes outlived the killed ingest: {survivors}") from None

        parts = list(staging.glob("*.part"))
        assert parts, "the cut upload's staging file is there before the sweep"
        old = time.time() - 7200
        for p in parts:
            os.utime(p, (old, old))

        # The next ingest process (here in-process, same database and store) takes over the
        # stale claim at start-up and completes the session; the old staging file is swept.
        cfg = make_config(own_pg.dsn, tmp_path, ingest_workers=1, ingest_claim_lease_s=1.0, ingest_sweep_grace_s=3600.0)
        server = await start_service(INGEST, cfg, port=0, metrics_port=0)
        try:
            status = await wait_for(
                lambda: db.fetchval(
                    "SELECT processing_status FROM therapy_sessions WHERE id = $1 AND processing_status <> 'processing'",
                    row["id"],
                ),
                timeout=30,
            )
            assert status == "completed"
            s = await db.fetchrow("SELECT claimed_by, claim_request FROM therapy_sessions WHERE id = $1", row["id"])
            assert s["claimed_by"] is None and s["claim_request"] is None
            assert await db.fetchval("SELECT count(*) FROM emg_statistics WHERE session_id = $1", row["id"]) == 2
            assert await db.fetchval("SELECT count(*) FROM performance_scores WHERE session_id = $1", row["id"]) == 1
            await wait_for(_now(lambda: not list(staging.glob("*.part"))), timeout=10)
            # A re-upload of the same bytes now answers the completed session.
            async with grpc.aio.insecure_channel(server.address) as ch:
                again = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(upload_messages(data, name, patient))
            assert again.session_id == str(row["id"]) and not again.created
        finally:
            await server.stop(0)
    finally:
        if proc.poll() is None:
            proc.kill()
        await db.close()


async def test_orphan_upload_files_swept_after_the_grace_period(own_pg, tmp_path):
    """A file an upload stored but never registered (its process died between the two) is
    removed once its pending note is older than the grace period; a file that holds other
    bytes under that name, and the files of sessions, stay."""
    patient = await register_patient(own_pg.dsn)
    cfg = make_config(own_pg.dsn, tmp_path, ingest_workers=1, ingest_sweep_grace_s=60.0)
    server = await start_service(INGEST, cfg, port=0, metrics_port=0)
    db = await connect(own_pg.dsn)
    try:
        name, data = synthetic_file(tmp_path, 77)
        async with grpc.aio.insecure_channel(server.address) as ch:
            reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(upload_messages(data, name, patient))
        store = tmp_path / "c3d-store"
        orphan = store / patient / "orphan.c3d"
        orphan.write_bytes(b"orphan bytes")
        import hashlib

        h = hashlib.sha256(b"orphan bytes").hexdigest()
        other = store / patient / "renamed.c3d"
        other.write_bytes(b"someone else's bytes")
        await db.execute(
            "INSERT INTO ingest_pending_files (file_hash, file_paths, created_at) "
            "VALUES ($1, $2, now() - interval '2 minutes')",
            h,
            [f"{patient}/orphan.c3d", f"{patient}/renamed.c3d", reply.file_path],
        )
        fresh = store / patient / "fresh.c3d"
        fresh.write_bytes(b"fresh")
        await db.execute(
            "INSERT INTO ingest_pending_files (file_hash, file_paths) VALUES ($1, $2)",
            hashlib.sha256(b"fresh").hexdigest(),
            [f"{patient}/fresh.c3d"],
        )

        counts = await server.context.ingest.maintain_once()
        assert counts["orphans_removed"] == 1
        assert not orphan.exists() and other.exists() and fresh.exists()
        assert (store / reply.file_path).exists()
        assert await db.fetchval("SELECT count(*) FROM ingest_pending_files WHERE file_hash = $1", h) == 0
        # An upload that completes leaves no note behind.
        assert await db.fetchval("SELECT count(*) FROM ingest_pending_files WHERE file_hash = $1", reply.file_hash) == 0
    finally:
        await server.stop(0)
        await db.close()
