"""Ingest throughput through gRPC: files ingested per second for the largest sample.

Runs the ingest service as its own process (as in production) against a fresh database, then
uploads N distinct variants of the 2.8 MB sample (one analog sample nudged by one ulp, so
every file has its own hash) with C concurrent clients. Target: >= 20 files/s on 2 cores.

    .venv/bin/python bench/bench_ingest.py [--files 60] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.*, tests.*

from app.client.ingest import requests
from bench.common import LARGEST, database, median, pct, register_patient, services
from ghostly.ingest.v1 import ingest_pb2_grpc


def variants(src: Path, n: int, folder: Path) -> list[Path]:
    data = bytearray(src.read_bytes())
    (last,) = struct.unpack_from("<I", data, len(data) - 4)
    out = []
    for i in range(n):
        struct.pack_into("<I", data, len(data) - 4, (last + i + 1) & 0xFFFFFFFF)
        p = folder / f"Ghostly_Emg_20230321_17-50-{i % 60:02d}-{i:04d}.c3d"
        p.write_bytes(data)
        out.append(p)
    return out


async def run(dsn: str, files: list[Path], concurrency: int, address: str) -> tuple[float, list[float]]:
    conn = await asyncpg.connect(dsn)
    await register_patient(conn, "P900")
    await conn.close()
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)

        async def one(path: Path):
            async with gate:
                t = time.perf_counter()
                reply = await stub.Upload(requests(path, "P900"))
                assert reply.created, reply
                latencies.append((time.perf_counter() - t) * 1000)

        await one(files[0])  # warm-up (worker processes, prepared statements)
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(f) for f in files[1:]))
        elapsed = time.perf_counter() - t0
    return (len(files) - 1) / elapsed, latencies


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds (user+sys) of the server process and of its children (analysis workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                procs[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
            except (OSError, IndexError):
                pass
    out = {"server": procs.get(root, (0, 0))[1], "workers": 0.0}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, cpu) in procs.items():
            if ppid == parent:
                todo.append(pid)
                out["workers"] += cpu
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=61)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    if not LARGEST.exists():
        sys.exit(f"sample not found: {LARGEST}")
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        files = variants(LARGEST, args.files, Path(tmp))
        with services(["ingest"], dsn, GHOSTLY_DATA_DIR=str(Path(tmp) / "data")) as running:
            server, address = running.procs["ingest"], running.addresses["ingest"]
            cpu0 = tree_cpu(server.pid)
            rate, lat = asyncio.run(run(dsn, files, args.concurrency, address))
            cpu = {k: (v - cpu0.get(k, 0)) / (len(files) - 1) * 1000 for k, v in tree_cpu(server.pid).items()}
    size_mb = LARGEST.stat().st_size / 1e6
    print(
        f"ingest of {len(files) - 1} distinct {size_mb:.1f} MB files through gRPC, "
        f"{args.concurrency} concurrent uploads, {os.cpu_count()} cores"
    )
    print(f"  throughput     {rate:6.1f} files/s   (target >= 20; reference implementation ~1.25 files/s)")
    print(f"  latency median {median(lat):6.1f} ms   p90 {pct(lat, 90):.1f} ms   p99 {pct(lat, 99):.1f} ms")
    print(f"  CPU per file   server process {cpu['server']:.1f} ms, analysis workers {cpu['workers']:.1f} ms")
    print(f"  ratio to target {rate / 20:.2f}x; to the reference ~0.8 s/file: {rate * 0.8:.0f}x")


if __name__ == "__main__":
    main()
