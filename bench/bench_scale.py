"""Scale-out figures (issue 19): the S3 content store against the local one, event-driven ingest,
and Reprocess with 1 and 2 ingest replicas. Everything runs on this machine on loopback: the
services as their own processes (as in production), an S3-protocol server (moto's standalone
server, libs/storage/s3_server.py: in-memory, so S3 figures here are protocol + client costs,
not a remote network's), nats-server -js (libs/events), an embedded PostgreSQL.

    .venv/bin/python bench/bench_scale.py [--runs 10] [--events 100] [--reprocess 40] [--skip-store]

1. store latency, local vs S3, the 2.8 MB sample (distinct variants, so every run is cold):
   store commit + cold read back (in-process, the store alone: a reader whose read cache does not
   have the file); Upload RPC (store + analysis); JIT
   cold read (a never-seen session's 1000-point envelope plot: fetch + verify + filters); full
   export (SIGNALS_RESEARCH_FULL MATLAB of one never-exported session, through export -> JIT).
2. event-to-completed latency: N objects put in the bucket, one S3 notification each published
   to JetStream, ingest consuming; latency = session processed_at - notification published;
   as a burst (all at once: queueing included) and paced (one every 1.5 x the burst's mean
   service time: no queueing).
3. Reprocess(all) throughput with 1 and 2 ingest replicas sharing store and database.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.*, tests.*

from app.client.ingest import requests
from bench.bench_ingest import variants
from bench.common import LARGEST, add_researcher, database, median, pct, register_patient, services
from ghostly.export.v1 import export_pb2 as epb
from ghostly.export.v1 import export_pb2_grpc
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc

OPTS = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]


async def add_patient(dsn: str, code: str) -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    await register_patient(conn, code)
    researcher = await add_researcher(conn)
    await conn.close()
    return researcher


# -- 1. store latency ---------------------------------------------------------------------------
async def store_only(url: str, files: list[Path]) -> dict:
    from libs.storage import open_store

    hooks: list = []
    store = open_store(url, on_stop=hooks)
    reader = open_store(url, on_stop=hooks)  # another process's view: nothing in its read cache
    commit, read = [], []
    async with store.staging() as staging:  # warm-up: the client's connections
        await staging.write(b"warm-up")
        await staging.commit("PS/warm-up.c3d")
    for p in files:
        data = p.read_bytes()
        t = time.perf_counter()
        async with store.staging() as staging:
            for i in range(0, len(data), 1 << 20):
                await staging.write(data[i : i + (1 << 20)])
            await staging.commit(f"PS/{p.name}")
        commit.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        async with reader.local_path(f"PS/{p.name}") as local:
            with open(local, "rb") as f:
                hashlib.sha256(f.read()).hexdigest()
        read.append((time.perf_counter() - t) * 1000)
    for hook in hooks:
        await hook()
    return {"commit": commit, "read": read}


async def via_services(dsn: str, addr: dict[str, str], files: list[Path], code: str, researcher) -> dict:
    upload, jit, export = [], [], []
    sids = []
    async with grpc.aio.insecure_channel(addr["ingest"], options=OPTS) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        await stub.Upload(requests(files[0], code))  # warm-up
        for p in files[1:]:
            t = time.perf_counter()
            reply = await stub.Upload(requests(p, code))
            upload.append((time.perf_counter() - t) * 1000)
            sids.append(reply.session_id)
    half = len(sids) // 2
    async with grpc.aio.insecure_channel(addr["jit_signal"], options=OPTS) as ch:
        stub = jit_signal_pb2_grpc.JitSignalServiceStub(ch)
        for sid in sids[:half]:
            t = time.perf_counter()
            async for _ in stub.StreamSignals(jpb.StreamSignalsRequest(session_id=sid, kind=jpb.SIGNAL_KIND_ENVELOPE)):
                pass
            jit.append((time.perf_counter() - t) * 1000)
    async with grpc.aio.insecure_channel(addr["export"], options=OPTS) as ch:
        stub = export_pb2_grpc.ExportServiceStub(ch)
        for sid in sids[half:]:
            t = time.perf_counter()
            async for msg in stub.CreateExport(
                epb.CreateExportRequest(
                    type=epb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL,
                    format=epb.EXPORT_FORMAT_MATLAB,
                    session_ids=[sid],
                    exported_by=str(researcher),
                ),
                timeout=120,
            ):
                if msg.WhichOneof("body") == "completed":
                    assert msg.completed.status == epb.EXPORT_STATUS_SUCCESS, msg.completed
            export.append((time.perf_counter() - t) * 1000)
    return {"upload": upload, "jit_cold": jit, "export_full": export}


def bench_store(args, s3_env: dict, bucket: str, tmp: Path) -> dict:
    files = variants(LARGEST, 4 * args.runs + 2, tmp)
    results = {}
    for backend in ("local", "s3"):
        data = tmp / f"data-{backend}"
        url = f"file://{data / 'c3d-store'}" if backend == "local" else f"s3://{bucket}/{backend}-c3d"
        os.environ.update(s3_env)
        store = asyncio.run(store_only(url if backend == "s3" else f"file://{tmp / 'store-only'}", files[: args.runs]))
        with database() as dsn:
            code = "P900"
            researcher = asyncio.run(add_patient(dsn, code))
            env = dict(s3_env, GHOSTLY_DATA_DIR=str(data), GHOSTLY_STORE_URL=url)
            names = ["ingest", "statistics", "jit_signal", "export"]
            with services(names, dsn, quiet=not args.verbose, **env) as running:
                rpc = asyncio.run(via_services(dsn, running.addresses, files[args.runs :], code, researcher))
        results[backend] = {**store, **rpc}
    return results


# -- 2. event-driven ingest ------------------------------------------------------------------------
async def publish_and_wait(
    dsn: str, nats_url: str, subject: str, bucket: str, prefix: str, keys: list[str], paced_s: float | None
) -> list[float]:
    from libs.events import bucket_event, connect, publish_bucket_event

    nc = await connect(nats_url)
    js = nc.jetstream()
    published: dict[str, float] = {}
    for key in keys:
        published[key.removeprefix(prefix)] = time.time()
        await publish_bucket_event(js, subject, bucket_event(bucket, key))
        if paced_s:
            await asyncio.sleep(paced_s)
    conn = await asyncpg.connect(dsn)
    deadline = time.monotonic() + 600
    while True:
        rows = await conn.fetch(
            "SELECT file_path, processing_status, extract(epoch from processed_at) AS done "
            "FROM therapy_sessions WHERE file_path = ANY($1::text[])",
            list(published),
        )
        finished = [r for r in rows if r["processing_status"] in ("completed", "failed")]
        if len(finished) == len(published) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    await conn.close()
    await nc.close()
    failed = [r["file_path"] for r in finished if r["processing_status"] != "completed"]
    assert not failed and len(finished) == len(published), (len(finished), failed[:3])
    return [(float(r["done"]) - published[r["file_path"]]) * 1000 for r in finished]


def bench_events(args, s3, s3_env: dict, bucket: str, tmp: Path) -> dict:
    from libs.events import EmbeddedNats

    n = args.events
    files = variants(LARGEST, 2 * n + 2 * args.reprocess, tmp / "ev")
    client = s3.client()
    prefix = "ev-c3d/"
    code = "P800"
    keys = []
    for i, p in enumerate(files):
        key = f"{prefix}{code if i < 2 * n else 'P801'}/{p.name}"  # P801: the Reprocess set
        client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())  # as a tablet would, no metadata
        keys.append(key)
    out: dict[str, Any] = {}
    with database() as dsn, EmbeddedNats(ephemeral=True) as nats:
        asyncio.run(add_patient(dsn, code))
        asyncio.run(add_patient(dsn, "P801"))
        env = dict(
            s3_env,
            GHOSTLY_DATA_DIR=str(tmp / "data-ev"),
            GHOSTLY_STORE_URL=f"s3://{bucket}/ev-c3d",
            GHOSTLY_EVENTS_URL=nats.url,
        )
        subject = "ghostly.bucket.events"
        with services(["ingest"], dsn, quiet=True, **env):
            t = time.perf_counter()
            burst = asyncio.run(publish_and_wait(dsn, nats.url, subject, bucket, prefix, keys[:n], None))
            wall = time.perf_counter() - t
            out["burst"], out["burst_wall_s"] = burst, wall
            gap = 1.5 * wall / n
            out["paced"] = asyncio.run(publish_and_wait(dsn, nats.url, subject, bucket, prefix, keys[n : 2 * n], gap))
            out["paced_gap_ms"] = gap * 1000
        if args.reprocess:
            out["reprocess"] = bench_reprocess(
                args, dsn, env, subject, nats.url, bucket, prefix, keys[2 * n : 2 * n + args.reprocess]
            )
    return out


# -- 3. reprocess with 1 and 2 replicas ------------------------------------------------------------
async def reprocess_all(address: str, patient: str) -> tuple[float, int]:
    async with grpc.aio.insecure_channel(address, options=OPTS) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        t = time.perf_counter()
        last = None
        async for msg in stub.Reprocess(ingest_pb2.ReprocessRequest(patient_code=patient), timeout=900):
            last = msg
        assert last is not None
        return time.perf_counter() - t, last.done_count


def bench_reprocess(args, dsn, env, subject, nats_url, bucket, prefix, keys) -> dict:
    """Sessions of one patient (ingested through events), re-analysed by Reprocess(patient)."""
    code = "P801"
    with services(["ingest"], dsn, quiet=True, **env):
        asyncio.run(publish_and_wait(dsn, nats_url, subject, bucket, prefix, keys, None))
    out = {}
    for replicas in (1, 2):
        names = ["ingest"] * replicas
        from libs.db.embedded import free_port

        procs = []
        import subprocess

        base = dict(os.environ, GHOSTLY_AUTH_MODE="dev", GHOSTLY_LOG_LEVEL="WARNING", DATABASE_URL=dsn, **env)
        base.pop("GHOSTLY_EVENTS_URL", None)
        ports = [free_port() for _ in names]
        for port in ports:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.ingest"],
                    cwd=Path(__file__).parent.parent,
                    env=dict(
                        base, GHOSTLY_INGEST_PORT=str(port), GHOSTLY_INGEST_WORKERS="1", GHOSTLY_INGEST_METRICS_PORT="0"
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        try:
            from bench.common import wait_serving

            for port in ports:
                asyncio.run(wait_serving(f"127.0.0.1:{port}"))
            secs, done = asyncio.run(reprocess_all(f"127.0.0.1:{ports[0]}", code))
        finally:
            import signal

            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
        out[replicas] = (secs, done)
    return out


def row(name: str, values: list[float]) -> str:
    return f"  {name:<44}{median(values):10.1f}{pct(values, 90):10.1f}{len(values):6d}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--reprocess", type=int, default=40, help="sessions re-analysed (0 = skip)")
    ap.add_argument("--skip-store", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="the services' logs on the terminal")
    args = ap.parse_args()
    if not LARGEST.exists():
        sys.exit(f"sample not found: {LARGEST}")
    from libs.storage.s3_server import EmbeddedS3

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} cores; sample {LARGEST.name} ({LARGEST.stat().st_size / 1e6:.1f} MB); "
        "S3 = moto server on loopback, NATS = nats-server -js on loopback; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    with EmbeddedS3() as s3, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "ev").mkdir()
        s3_env = s3.env()
        bucket = "ghostly-bench"
        s3.create_bucket(bucket)
        if not args.skip_store:
            res = bench_store(args, s3_env, bucket, tmp)
            print(f"\n1. content store latency, ms ({args.runs} runs each, every run a new file)")
            print(f"  {'':<44}{'median':>10}{'p90':>10}{'n':>6}")
            for what, label in (
                ("commit", "store commit 2.8 MB (in-process)"),
                ("read", "store read back + sha256"),
                ("upload", "Upload RPC (store + analysis)"),
                ("jit_cold", "JIT cold plot (envelope)"),
                ("export_full", "full export MATLAB, 1 session"),
            ):
                for backend in ("local", "s3"):
                    print(row(f"{label} [{backend}]", res[backend][what]))
        if args.events:
            ev = bench_events(args, s3, s3_env, bucket, tmp)
            print(
                f"\n2. event-to-completed latency, {args.events} S3 notifications via JetStream -> ingest "
                f"(GHOSTLY_INGEST_WORKERS default = {os.cpu_count()}), ms"
            )
            for mode in ("burst", "paced"):
                v = ev[mode]
                extra = (
                    f"  wall {ev['burst_wall_s']:.1f} s = {len(v) / ev['burst_wall_s']:.1f} files/s"
                    if mode == "burst"
                    else f"  one every {ev['paced_gap_ms']:.0f} ms"
                )
                print(f"  {mode:<8} p50 {pct(v, 50):8.1f}   p99 {pct(v, 99):8.1f}   max {max(v):8.1f}{extra}")
            if "reprocess" in ev:
                print("\n3. Reprocess(patient) throughput, ingest replicas with GHOSTLY_INGEST_WORKERS=1 each")
                for replicas, (secs, done) in ev["reprocess"].items():
                    print(f"  {replicas} replica(s): {done} sessions in {secs:.1f} s = {done / secs:.2f} sessions/s")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other work on the machine skews every figure)")


if __name__ == "__main__":
    main()
