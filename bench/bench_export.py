"""Export latency through gRPC on loopback, end to end as a client sees it (request -> `completed`).

Runs IngestService, StatisticsService, JitSignalService and ExportService as their own
processes (as in production) over a fresh database and one data directory, ingests the 2.8 MB
sample, loads a 1,050-session cohort with COPY (bench/gen_cohort.py), then measures:
  statistics_only CSV of one session                          target <= 20 ms
  signals_research_full .mat of the 2.8 MB sample (raw, 2 ch)  target <= 300 ms
      (first run = cold JIT cache, reported apart; median over the warm runs)
  clinical_summary JSON of 1,000 sessions (session_ids; 3 statistics RPCs per session,
      16 in flight)                                            target <= 2 s
Every run writes an export_history row and re-hashes the file (as in production).

    .venv/bin/python bench/bench_export.py [--runs 30] [--summary-runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.*, tests.*

from app.client.ingest import requests
from bench.common import LARGEST, add_researcher, database, median, pct, register_patient, services
from bench.gen_cohort import generate
from ghostly.export.v1 import export_pb2 as pb
from ghostly.export.v1 import export_pb2_grpc
from ghostly.ingest.v1 import ingest_pb2_grpc

SERVICES = ("ingest", "statistics", "jit_signal", "export")


async def export_once(stub, **fields) -> tuple[float, pb.ExportCompleted, int]:
    t = time.perf_counter()
    digest, size, completed = hashlib.sha256(), 0, None
    async for msg in stub.CreateExport(pb.CreateExportRequest(**fields), timeout=120):
        body = msg.WhichOneof("body")
        if body == "data":
            digest.update(msg.data)
            size += len(msg.data)
        elif body == "completed":
            completed = msg.completed
    ms = (time.perf_counter() - t) * 1000
    assert completed is not None and completed.sha256 == digest.hexdigest() and completed.size_bytes == size
    assert completed.status == pb.EXPORT_STATUS_SUCCESS, completed
    return ms, completed, size


async def run(dsn: str, ports: dict[str, int], runs: int, summary_runs: int) -> dict:
    conn = await asyncpg.connect(dsn)
    await register_patient(conn, "P900")
    researcher = await add_researcher(conn)
    await conn.close()
    cohort = await generate(dsn, patients=15, sessions_per_patient=70, prefix="B", quiet=True)
    summary_ids = [str(s) for s in cohort["completed_ids"][:1000]]
    # One patient with ~1,000 completed sessions: the ListSessions path (2 RPCs per session).
    single = await generate(dsn, patients=1, sessions_per_patient=1026, therapists=1, prefix="C", seed=11, quiet=True)
    out_patient = (single["patient_codes"][0], single["completed"])
    assert len(summary_ids) == 1000
    out: dict = {"cohort_sessions": cohort["sessions"]}
    opts = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['ingest']}", options=opts) as ch:
        reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(requests(LARGEST, "P900"), timeout=120)
    sid = reply.session_id
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['export']}", options=opts) as ch:
        stub = export_pb2_grpc.ExportServiceStub(ch)
        common = dict(exported_by=str(researcher))

        stats = dict(type=pb.EXPORT_TYPE_STATISTICS_ONLY, format=pb.EXPORT_FORMAT_CSV, session_ids=[sid], **common)
        await export_once(stub, **stats)  # warm-up: channels, prepared statements
        out["stats_csv"] = [(await export_once(stub, **stats))[0] for _ in range(runs)]

        mat = dict(
            type=pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL, format=pb.EXPORT_FORMAT_MATLAB, session_ids=[sid], **common
        )
        cold, _, size = await export_once(stub, **mat)  # JIT processes the C3D (cold cache)
        out["mat_cold"], out["mat_size"] = cold, size
        out["mat"] = [(await export_once(stub, **mat))[0] for _ in range(max(5, runs // 2))]

        summary = dict(
            type=pb.EXPORT_TYPE_CLINICAL_SUMMARY, format=pb.EXPORT_FORMAT_JSON, session_ids=summary_ids, **common
        )
        first, completed, size = await export_once(stub, **summary)
        out["summary_first"], out["summary_size"] = first, size
        out["summary"] = [(await export_once(stub, **summary))[0] for _ in range(summary_runs)]
        out["summary_server_ms"] = completed.processing_time_ms

        by_patient = dict(
            type=pb.EXPORT_TYPE_CLINICAL_SUMMARY, format=pb.EXPORT_FORMAT_JSON, patient_id=out_patient[0], **common
        )
        await export_once(stub, **by_patient)
        out["patient"] = [(await export_once(stub, **by_patient))[0] for _ in range(summary_runs)]
        out["patient_sessions"] = out_patient[1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--summary-runs", type=int, default=7)
    args = ap.parse_args()
    if not LARGEST.exists():
        sys.exit(f"sample not found: {LARGEST}")
    with (
        database() as dsn,
        tempfile.TemporaryDirectory() as tmp,
        services(SERVICES, dsn, GHOSTLY_DATA_DIR=str(Path(tmp))) as running,
    ):
        ports = {n: int(a.rsplit(":", 1)[1]) for n, a in running.addresses.items()}
        r = asyncio.run(run(dsn, ports, args.runs, args.summary_runs))
    print(
        f"export latency through gRPC (client: request -> completed, file hashed), {os.cpu_count()} cores, "
        f"4 service processes"
    )
    s = r["stats_csv"]
    print(
        f"  statistics_only CSV, 1 session        median {median(s):7.1f} ms  p90 {pct(s, 90):7.1f} ms  "
        f"(n={len(s)}; target <= 20 ms)"
    )
    m = r["mat"]
    print(
        f"  signals_research_full .mat, 2.8 MB C3D median {median(m):7.1f} ms  p90 {pct(m, 90):7.1f} ms  "
        f"(n={len(m)}, {r['mat_size'] / 1e6:.1f} MB file; target <= 300 ms); cold JIT cache {r['mat_cold']:.0f} ms"
    )
    c = r["summary"]
    print(
        f"  clinical_summary JSON, 1,000 sessions median {median(c):7.1f} ms  p90 {pct(c, 90):7.1f} ms  "
        f"(n={len(c)}, {r['summary_size'] / 1e6:.1f} MB; target <= 2000 ms); first run {r['summary_first']:.0f} ms; "
        f"cohort {r['cohort_sessions']} sessions"
    )
    p = r["patient"]
    print(
        f"  clinical_summary JSON, 1 patient ({r['patient_sessions']} sessions, ListSessions path) "
        f"median {median(p):7.1f} ms  p90 {pct(p, 90):7.1f} ms  (n={len(p)})"
    )


if __name__ == "__main__":
    main()
