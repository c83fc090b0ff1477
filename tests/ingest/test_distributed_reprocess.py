"""Reprocess across ingest replicas (issue 19, item 3): a call's sessions become work items
that every replica sharing the content store consumes (SKIP LOCKED); the caller's stream
reports them wherever they ran; a replica killed mid-run loses nothing (its items' leases run
out and another replica takes them); every session is reprocessed exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import grpc

from app.healthcheck import check
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from libs.grpc_server import start_service
from services.ingest.server import SPEC as INGEST
from tests.helpers import ROOT, free_port, make_config, subprocess_env, upload_messages, wait_for
from tests.ingest.test_ingest_service import synthetic_bytes
from tests.ops.test_crash_recovery import _forkserver_tree, _now

N_SESSIONS = 24


async def test_reprocess_spreads_over_replicas_and_survives_a_killed_one(database_url, db, patient, tmp_path):
    cfg = make_config(database_url, tmp_path, ingest_workers=1, ingest_claim_lease_s=1.0)
    a = await start_service(INGEST, cfg, port=0, metrics_port=0)
    port = free_port()
    b = subprocess.Popen(
        [sys.executable, "-m", "services.ingest"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "replica-b.log", "w"),  # noqa: SIM115 - the child's log, open while it runs
        env=subprocess_env(
            DATABASE_URL=database_url,
            GHOSTLY_DATA_DIR=str(tmp_path),
            GHOSTLY_INGEST_WORKERS="1",
            GHOSTLY_INGEST_PORT=str(port),
            GHOSTLY_INGEST_METRICS_PORT="0",
            GHOSTLY_INGEST_CLAIM_LEASE_S="1",
            GHOSTLY_HEALTH_INTERVAL_S="0.2",
        ),
    )
    try:
        await wait_for(lambda: check(f"127.0.0.1:{port}", timeout=1), timeout=30, interval=0.1)
        frozen = await wait_for(_now(lambda: _forkserver_tree(b.pid)), timeout=20)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        async with grpc.aio.insecure_channel(a.address) as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)
            sids = set()
            # Enough sessions that replica A cannot finish them all before B's consumer next
            # looks at the queue (it polls every 0.5 s; with 10, A sometimes took every item).
            for i in range(N_SESSIONS):
                data, name = synthetic_bytes(tmp_path, seed=8200 + i)
                sids.add((await stub.Upload(upload_messages(data, name, patient))).session_id)

            msgs: list[ingest_pb2.ReprocessProgress] = []

            async def stream():
                async for m in stub.Reprocess(ingest_pb2.ReprocessRequest(patient_code=patient), timeout=120):
                    msgs.append(m)

            call = asyncio.ensure_future(stream())
            # Once replica B runs an item, kill it (SIGKILL) mid-item. B's analysis workers are
            # frozen (SIGSTOP), so the item it takes is still running when it dies.
            b_owner = f"%:{b.pid}:%"
            await wait_for(
                lambda: db.fetchval(
                    "SELECT count(*) FILTER (WHERE i.status = 'running') > 0 "
                    "FROM reprocess_items i JOIN therapy_sessions s ON s.id = i.session_id "
                    "WHERE s.patient_id = $1 AND i.claimed_by LIKE $2",
                    patient,
                    b_owner,
                ),
                timeout=60,
                interval=0.01,
            )
            b.kill()
            await call

        final = msgs[-1]
        assert final.done and final.done_count == N_SESSIONS and final.total_count == N_SESSIONS
        assert final.failed_count == 0
        assert {m.session_id for m in msgs[:-1]} == sids and len(msgs) == N_SESSIONS + 1  # each reported once
        items = await db.fetch(
            "SELECT i.session_id, i.status, i.claimed_by, i.attempts FROM reprocess_items i "
            "JOIN therapy_sessions s ON s.id = i.session_id WHERE s.patient_id = $1",
            patient,
        )
        assert len(items) == N_SESSIONS and {str(r["session_id"]) for r in items} == sids
        assert all(r["status"] == "done" for r in items)
        # B's item at the kill was taken over by A (a second attempt); nothing ran twice otherwise.
        assert sorted(r["attempts"] for r in items)[-2:] == [1, 2]
        for sid in sids:
            assert (
                await db.fetchval("SELECT processing_status FROM therapy_sessions WHERE id = $1::uuid", sid)
                == "completed"
            )
            assert await db.fetchval("SELECT count(*) FROM emg_statistics WHERE session_id = $1::uuid", sid) == 2
    finally:
        if b.poll() is None:
            b.kill()
        await a.stop(0)


async def test_cancelled_reprocess_drops_its_queued_items(stub, db, patient, tmp_path):
    for i in range(6):
        data, name = synthetic_bytes(tmp_path, seed=8300 + i)
        await stub.Upload(upload_messages(data, name, patient))
    call = stub.Reprocess(ingest_pb2.ReprocessRequest(patient_code=patient))
    async for _ in call:
        call.cancel()
        break

    async def settled():
        return not await db.fetchval(
            "SELECT count(*) FROM reprocess_items i JOIN therapy_sessions s ON s.id = i.session_id "
            "WHERE s.patient_id = $1 AND i.status IN ('queued', 'running')",
            patient,
        )

    await wait_for(settled, timeout=20)
    done = await db.fetchval(
        "SELECT count(*) FROM reprocess_items i JOIN therapy_sessions s ON s.id = i.session_id WHERE s.patient_id = $1",
        patient,
    )
    assert 1 <= done < 6
