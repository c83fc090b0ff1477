"""JIT signal latency through gRPC on loopback: the 1000-point, 2-channel plot of the 2.8 MB sample.

Runs IngestService and JitSignalService as their own processes (as in production) over a
fresh database and one data directory, ingests the largest sample (and distinct variants of
it for truly cold runs), then measures time to first chunk and to the whole plot:
  cold      a session never seen by the JIT process: verify hash + read C3D + filters +
            MinMaxLTTB + stream (targets <= 50 ms)
  rebuilt   the same session with its cache rows invalidated and files deleted: processed
            signals still in the process memory, downsample + stream
  cached    valid cache row: one indexed query + (memory or file) + stream (target <= 5 ms)
plus the full-resolution stream throughput.

    .venv/bin/python bench/bench_jit.py [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.*, tests.*

from app.client.ingest import requests
from bench.bench_ingest import variants
from bench.common import LARGEST, database, median, pct, register_patient, services
from ghostly.ingest.v1 import ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2 as pb
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc

KINDS = {"envelope": pb.SIGNAL_KIND_ENVELOPE, "raw": pb.SIGNAL_KIND_RAW}


async def timed(stub, **kw) -> tuple[float, float, int, bool]:
    t = time.perf_counter()
    first = None
    n = 0
    hit = False
    async for msg in stub.StreamSignals(pb.StreamSignalsRequest(**kw)):
        if first is None:
            first = time.perf_counter() - t
            hit = msg.info.cache_hit
        n += len(msg.samples) + len(msg.sample_indices)
    assert first is not None, "the stream sent no message"
    return first * 1000, (time.perf_counter() - t) * 1000, n, hit


async def run(dsn: str, files: list[Path], runs: int, ingest_addr: str, jit_addr: str, cache_dir: Path) -> dict:
    conn = await asyncpg.connect(dsn)
    await register_patient(conn, "P901")
    async with grpc.aio.insecure_channel(ingest_addr, options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        sids = [(await stub.Upload(requests(p, "P901"))).session_id for p in files]
    out: dict = {}
    async with grpc.aio.insecure_channel(jit_addr) as ch:
        stub = jit_signal_pb2_grpc.JitSignalServiceStub(ch)
        main, rest = sids[0], sids[1:]
        await timed(stub, session_id=main, kind=pb.SIGNAL_KIND_RAW, t_end_s=1.0)  # warm-up (imports, pool)
        for name, kind in KINDS.items():
            cold = [await timed(stub, session_id=rest.pop(), kind=kind) for _ in range(runs)]
            assert not any(c[3] for c in cold)
            rebuilt = []
            for _ in range(runs):
                await asyncio.sleep(0.15)  # let the previous run's background cache write land
                await conn.execute(
                    "UPDATE signal_processing_cache SET cache_valid = false WHERE session_id = $1::uuid", main
                )
                for f in cache_dir.glob("*.gjs"):
                    f.unlink()
                rebuilt.append(await timed(stub, session_id=main, kind=kind))
                assert not rebuilt[-1][3]
            await asyncio.sleep(0.3)  # cache row written in the background
            cached = [await timed(stub, session_id=main, kind=kind) for _ in range(runs)]
            assert all(c[3] for c in cached)
            out[name] = {"cold": cold, "rebuilt": rebuilt, "cached": cached}
        # full-resolution throughput (raw, both channels), first computed then cached
        full = [
            await timed(stub, session_id=main, kind=pb.SIGNAL_KIND_RAW, full_resolution=True)
            for _ in range(max(5, runs // 3))
        ]
        out["full"] = full
    await conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if not LARGEST.exists():
        sys.exit(f"sample not found: {LARGEST}")
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        files = [LARGEST, *variants(LARGEST, 2 * args.runs + 1, Path(tmp))]
        data = Path(tmp) / "data"
        with services(["ingest", "jit_signal"], dsn, GHOSTLY_DATA_DIR=str(data)) as running:
            addr = running.addresses
            res = asyncio.run(run(dsn, files, args.runs, addr["ingest"], addr["jit_signal"], data / "signal-cache"))
    print(
        f"JIT signal, {LARGEST.name} ({LARGEST.stat().st_size / 1e6:.1f} MB, 2 muscle channels), gRPC loopback, "
        f"{args.runs} runs each, {os.cpu_count()} cores; ms"
    )
    print(f"  {'plot (1000 pts x 2 ch)':<24}{'first chunk med':>16}{'p90':>8}{'full plot med':>15}{'p90':>8}   target")
    for name in KINDS:
        for mode, target in (("cold", 50), ("rebuilt", 50), ("cached", 5)):
            r = res[name][mode]
            first, total = [x[0] for x in r], [x[1] for x in r]
            print(
                f"  {name + ' ' + mode:<24}{median(first):16.2f}{pct(first, 90):8.2f}{median(total):15.2f}"
                f"{pct(total, 90):8.2f}   <= {target}  {'OK' if median(total) <= target else 'MISSED'}"
            )
    full = res["full"]
    mb = full[0][2] / 1e6
    print(
        f"  full resolution raw, 2 ch ({mb:.2f} MB float32): first run {full[0][1]:.1f} ms "
        f"({mb / full[0][1] * 1000:.0f} MB/s), then median {median([x[1] for x in full[1:]]):.1f} ms "
        f"({mb / median([x[1] for x in full[1:]]) * 1000:.0f} MB/s); first chunk {median([x[0] for x in full]):.2f} ms"
    )
    print("  design expectation: ~500 ms per plot")


if __name__ == "__main__":
    main()
