"""Load test on loopback (bounded in time): 50 concurrent statistics callers + 10 JIT streams +
a continuous ingest, for 30 s, against the services running as their own processes with
authentication on (jwt mode, researcher/service tokens). Prints requests served, p50/p99 per
kind and the errors (target: 0 errors). Exit code 1 when any request failed.

    .venv/bin/python bench/load_test.py [--duration 30] [--callers 50] [--streams 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.*, tests.*

from app.client.ingest import requests
from bench.bench_ingest import variants
from bench.common import LARGEST, SAMPLES, database, median, pct, register_patient, services
from ghostly.ingest.v1 import ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2 as spb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.auth import issue_token

SECRET = "load-test-secret-" + uuid.uuid4().hex
SERVICES = ("ingest", "statistics", "jit_signal")


def _meta(role: str) -> tuple[tuple[str, str], ...]:
    return (
        ("authorization", f"Bearer {issue_token(secret=SECRET, subject=str(uuid.uuid4()), role=role, ttl_s=3600)}"),
    )


class Recorder:
    def __init__(self):
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter = Counter()
        self.examples: dict[str, str] = {}

    def ok(self, kind: str, seconds: float) -> None:
        self.latency[kind].append(seconds * 1000)

    def error(self, kind: str, exc: Exception) -> None:
        key = f"{kind}: {exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__}"
        self.errors[key] += 1
        self.examples.setdefault(key, exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc))


async def run_load(
    addresses: dict[str, str],
    sessions: list[str],
    patient: str,
    files: list[Path],
    duration: float,
    callers: int,
    streams: int,
) -> Recorder:
    rec = Recorder()
    researcher, service = _meta("researcher"), _meta("service")
    stop_at = time.monotonic() + duration
    chans = {
        n: grpc.aio.insecure_channel(a, options=[("grpc.max_send_message_length", 8 << 20)])
        for n, a in addresses.items()
    }
    stats = statistics_pb2_grpc.StatisticsServiceStub(chans["statistics"])
    jit = jit_signal_pb2_grpc.JitSignalServiceStub(chans["jit_signal"])
    ingest = ingest_pb2_grpc.IngestServiceStub(chans["ingest"])
    rng = random.Random(7)

    async def caller():
        while time.monotonic() < stop_at:
            sid = rng.choice(sessions)
            kind, call = rng.choice(
                [
                    (
                        "GetPerformanceScore",
                        lambda sid=sid: stats.GetPerformanceScore(
                            spb.SessionKey(session_id=sid), metadata=researcher, timeout=5
                        ),
                    ),
                    (
                        "GetSession",
                        lambda sid=sid: stats.GetSession(
                            spb.GetSessionRequest(session_id=sid), metadata=researcher, timeout=5
                        ),
                    ),
                    (
                        "GetEmgStatistics",
                        lambda sid=sid: stats.GetEmgStatistics(
                            spb.GetEmgStatisticsRequest(session_id=sid), metadata=researcher, timeout=5
                        ),
                    ),
                    (
                        "ListSessions",
                        lambda: stats.ListSessions(
                            spb.ListSessionsRequest(patient_id=patient, page_size=20), metadata=researcher, timeout=5
                        ),
                    ),
                    (
                        "GetPatientProgress",
                        lambda: stats.GetPatientProgress(
                            spb.GetPatientProgressRequest(patient_id=patient), metadata=researcher, timeout=5
                        ),
                    ),
                ]
            )
            t = time.perf_counter()
            try:
                await call()
                rec.ok(kind, time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - counted
                rec.error(kind, exc)

    async def streamer(i: int):
        while time.monotonic() < stop_at:
            sid = rng.choice(sessions)
            # Mostly the common 1000-point plot (cached after the first), sometimes another size
            # (a cache miss: C3D read + filters).
            points = 1000 if rng.random() < 0.8 else rng.choice((500, 2000, 4000))
            t = time.perf_counter()
            try:
                async for _ in jit.StreamSignals(
                    jpb.StreamSignalsRequest(session_id=sid, kind=jpb.SIGNAL_KIND_ENVELOPE, max_points=points),
                    metadata=researcher,
                    timeout=10,
                ):
                    pass
                rec.ok("StreamSignals", time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001
                rec.error("StreamSignals", exc)

    async def uploader():
        for path in files:
            if time.monotonic() >= stop_at:
                break
            t = time.perf_counter()
            try:
                await ingest.Upload(requests(path, patient), metadata=service, timeout=30)
                rec.ok("Upload", time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001
                rec.error("Upload", exc)

    try:
        await asyncio.gather(*(caller() for _ in range(callers)), *(streamer(i) for i in range(streams)), uploader())
    finally:
        for ch in chans.values():
            await ch.close()
    return rec


async def seed(dsn: str, ingest_addr: str, files: list[Path]) -> tuple[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    patient = "P777"
    await register_patient(conn, patient)
    await conn.close()
    ids = []
    async with grpc.aio.insecure_channel(ingest_addr, options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        for path in files:
            ids.append((await stub.Upload(requests(path, patient), metadata=_meta("service"))).session_id)
    return patient, ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--streams", type=int, default=10)
    args = ap.parse_args(argv)
    samples = sorted(SAMPLES.glob("*.c3d")) if SAMPLES.is_dir() else []
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        if samples:
            seeds = samples
            uploads = variants(LARGEST if LARGEST.exists() else samples[0], 400, Path(tmp))
        else:  # no real samples: synthetic GHOSTLY-like files
            from libs.emg.synthetic import SyntheticSpec, ghostly_file_name, write_synthetic_c3d

            seeds = []
            for i in range(3):
                spec = SyntheticSpec(duration_s=120.0, seed=i)
                p = Path(tmp) / ghostly_file_name(spec, seconds=i)
                write_synthetic_c3d(p, spec)
                seeds.append(p)
            uploads = variants(seeds[0], 400, Path(tmp))
        # Any: a **dict[str, str] could also fill services()' bool keywords, as far as mypy knows
        metrics_off: dict[str, Any] = {f"GHOSTLY_{n.upper()}_METRICS_PORT": "0" for n in SERVICES}
        with services(
            SERVICES,
            dsn,
            GHOSTLY_DATA_DIR=str(Path(tmp) / "data"),
            GHOSTLY_AUTH_MODE="jwt",
            GHOSTLY_JWT_SECRET=SECRET,
            GHOSTLY_DB_POOL_MAX="20",
            **metrics_off,
        ) as running:
            addresses = running.addresses
            patient, sessions = asyncio.run(seed(dsn, addresses["ingest"], seeds))
            t0 = time.perf_counter()
            rec = asyncio.run(
                run_load(addresses, sessions, patient, uploads, args.duration, args.callers, args.streams)
            )
            wall = time.perf_counter() - t0
    total = sum(len(v) for v in rec.latency.values())
    errors = sum(rec.errors.values())
    print(
        f"load test: {args.callers} statistics callers + {args.streams} JIT streams + 1 ingest uploader, "
        f"{wall:.1f} s, {os.cpu_count()} cores, auth on"
    )
    print(f"{'kind':<22}{'served':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for kind, lat in sorted(rec.latency.items()):
        print(f"{kind:<22}{len(lat):>8}{len(lat) / wall:>9.1f}{median(lat):>9.2f}{pct(lat, 99):>9.2f}")
    print(f"{'total':<22}{total:>8}{total / wall:>9.1f}")
    print(f"errors: {errors}" + "".join(f"\n  {k}: {n} (e.g. {rec.examples[k]})" for k, n in rec.errors.items()))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
