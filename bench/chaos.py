"""Chaos run (bounded, 10 minutes at most): uploads, Reprocess, exports and JIT streams under
load while ingest and jit_signal are killed with SIGKILL and PostgreSQL is restarted
(immediate mode: a crash for the clients) at random intervals. Killed services are started
again at once, as an orchestrator would. At the end, with everything up again, a consistency
check:

- every completed session has its statistics (2 channels) and its score;
- no session stays 'processing' (claims of killed ingest processes are taken over: lease);
- no session failed (every file is a valid recording);
- no orphan store file (a file no session references) and no staging file left;
- every export_history row is closed (none 'in progress').

Target: 0 lost or stuck sessions, 0 INTERNAL. Prints the faults injected, the requests made
by kind and status code, and the check's counts; exit code 1 when a target is missed.

    .venv/bin/python bench/chaos.py [--duration 120] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.*, tests.*

from app.client.ingest import requests
from bench.common import ROOT, add_researcher, register_patient, wait_serving
from ghostly.export.v1 import export_pb2 as epb
from ghostly.export.v1 import export_pb2_grpc
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from libs.db.embedded import EmbeddedPostgres, free_port
from libs.db.migrate import migrate
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d

MAX_DURATION_S = 600.0
LEASE_S = 3.0
SERVICES = ("ingest", "statistics", "jit_signal", "export")
KILLABLE = ("ingest", "jit_signal")


class Cluster:
    """The four services as their own processes on fixed loopback ports (a restarted service
    comes back on the same address), sharing one data directory."""

    def __init__(self, dsn: str, data_dir: Path):
        self.ports = {n: free_port() for n in SERVICES}
        self.addresses = {n: f"127.0.0.1:{p}" for n, p in self.ports.items()}
        self.env = dict(
            os.environ,
            GHOSTLY_AUTH_MODE="dev",
            GHOSTLY_LOG_LEVEL=os.environ.get("CHAOS_LOG_LEVEL", "ERROR"),
            DATABASE_URL=dsn,
            GHOSTLY_DATA_DIR=str(data_dir),
            GHOSTLY_INGEST_CLAIM_LEASE_S=str(LEASE_S),
            GHOSTLY_INGEST_SWEEP_GRACE_S="5",
            GHOSTLY_INGEST_WORKERS="1",
            **{f"GHOSTLY_{n.upper()}_PORT": str(p) for n, p in self.ports.items()},
            **{f"GHOSTLY_{n.upper()}_ADDRESS": a for n, a in self.addresses.items()},
            **{f"GHOSTLY_{n.upper()}_METRICS_PORT": "0" for n in SERVICES},
        )
        self.env.pop("STATISTICS_DATABASE_URL", None)
        self.procs: dict[str, subprocess.Popen] = {}
        self.log = open(os.environ.get("CHAOS_LOG") or data_dir.parent / "services.log", "a")  # noqa: SIM115 - the services write to it until the bench exits

    def start(self, name: str) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=self.env, stdout=self.log, stderr=self.log
        )

    async def kill_and_restart(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        self.start(name)
        await wait_serving(self.addresses[name], timeout=60)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def make_files(directory: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        spec = SyntheticSpec(
            duration_s=60.0,
            seed=5000 + i,
            channels=[
                ChannelSpec(contractions=regular_contractions(8, 2.5, 6.0)),
                ChannelSpec(contractions=regular_contractions(6, 2.0, 8.0, amplitude_v=200e-6)),
            ],
        )
        path = directory / f"{i:04d}_{ghostly_file_name(spec, seconds=i % 60, frac=f'{i:04d}')}"
        write_synthetic_c3d(path, spec)
        files.append(path)
    return files


async def seed_people(dsn: str) -> tuple[str, uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        await register_patient(conn, "P900")
        researcher = await add_researcher(conn)
        return "P900", researcher
    finally:
        await conn.close()


async def session_ids(dsn: str) -> list[str]:
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except Exception:  # noqa: BLE001 - database restarting
        return []
    try:
        return [
            str(r["id"])
            for r in await conn.fetch("SELECT id FROM therapy_sessions WHERE processing_status = 'completed'")
        ]
    finally:
        await conn.close()


async def load(
    cluster: Cluster,
    dsn: str,
    files: list[Path],
    patient: str,
    researcher: uuid.UUID,
    stop_at: float,
    rng: random.Random,
    calls: Counter,
) -> None:
    def record(kind: str, exc: BaseException | None) -> None:
        code = (
            "OK" if exc is None else (exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__)
        )
        calls[(kind, code)] += 1

    known: list[str] = []

    async def refresh_known():
        while time.monotonic() < stop_at:
            known[:] = await session_ids(dsn) or known
            await asyncio.sleep(1.0)

    async def uploader():
        async with grpc.aio.insecure_channel(cluster.addresses["ingest"]) as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)
            for path in files:
                if time.monotonic() >= stop_at:
                    return
                for _ in range(20):  # retried until accepted (the tablet's behaviour)
                    try:
                        await stub.Upload(requests(path, patient), timeout=30, wait_for_ready=True)
                        record("Upload", None)
                        break
                    except grpc.aio.AioRpcError as exc:
                        record("Upload", exc)
                        await asyncio.sleep(0.5)

    async def repeatedly(service: str, kind: str, stub_class, call) -> None:
        """Call `call(stub, session_id)` (a server stream, read to its end) on random known
        sessions until the load ends; failures are recorded, then a short pause."""
        async with grpc.aio.insecure_channel(cluster.addresses[service]) as ch:
            stub = stub_class(ch)
            while time.monotonic() < stop_at:
                if not known:
                    await asyncio.sleep(0.5)
                    continue
                try:
                    async for _ in call(stub, rng.choice(known)):
                        pass
                    record(kind, None)
                except grpc.aio.AioRpcError as exc:
                    record(kind, exc)
                    await asyncio.sleep(0.2)

    def reprocess(stub, sid):
        return stub.Reprocess(ingest_pb2.ReprocessRequest(session_id=sid), timeout=30, wait_for_ready=True)

    def export(stub, sid):
        req = rng.choice(
            [
                dict(type=epb.EXPORT_TYPE_STATISTICS_ONLY, format=epb.EXPORT_FORMAT_CSV, session_ids=[sid]),
                dict(type=epb.EXPORT_TYPE_SIGNALS_VISUALIZATION, format=epb.EXPORT_FORMAT_JSON, session_ids=[sid]),
            ]
        )
        return stub.CreateExport(
            epb.CreateExportRequest(exported_by=str(researcher), **req), timeout=30, wait_for_ready=True
        )

    def stream(stub, sid):
        return stub.StreamSignals(
            jpb.StreamSignalsRequest(
                session_id=sid,
                kind=rng.choice([jpb.SIGNAL_KIND_RAW, jpb.SIGNAL_KIND_ENVELOPE]),
                max_points=rng.choice([500, 1000, 2000]),
            ),
            timeout=30,
            wait_for_ready=True,
        )

    reprocessor = lambda: repeatedly("ingest", "Reprocess", ingest_pb2_grpc.IngestServiceStub, reprocess)  # noqa: E731
    exporter = lambda: repeatedly("export", "CreateExport", export_pb2_grpc.ExportServiceStub, export)  # noqa: E731
    streamer = lambda: repeatedly("jit_signal", "StreamSignals", jit_signal_pb2_grpc.JitSignalServiceStub, stream)  # noqa: E731

    await asyncio.gather(refresh_known(), uploader(), reprocessor(), reprocessor(), exporter(), streamer(), streamer())


def restart_postgres(pg: EmbeddedPostgres, down_s: float) -> None:
    """A crash for the clients (immediate stop: no shutdown checkpoint, connections cut), some
    downtime, then the same cluster started again on the same port (with its server log, so
    pg_ctl's output pipe is not held by the new server)."""
    pg._run("pg_ctl", "-D", str(pg.data_dir), "-m", "immediate", "-w", "stop")
    time.sleep(down_s)
    pg._run(
        "pg_ctl",
        "-D",
        str(pg.data_dir),
        "-l",
        str(pg.data_dir / "server.log"),
        "-o",
        f"-p {pg.port}",
        "-w",
        "-t",
        "60",
        "start",
    )


async def faults(cluster: Cluster, pg: EmbeddedPostgres, stop_at: float, rng: random.Random, injected: Counter) -> None:
    kinds = ["kill ingest", "kill jit_signal", "restart postgresql"]
    i = 0
    while True:
        await asyncio.sleep(rng.uniform(4.0, 10.0))
        if time.monotonic() >= stop_at:
            return
        if i % len(kinds) == 0:
            rng.shuffle(kinds)  # every kind of fault in each round, in random order
        fault = kinds[i % len(kinds)]
        i += 1
        if fault == "restart postgresql":
            await asyncio.to_thread(restart_postgres, pg, rng.uniform(0.5, 3.0))
        else:
            await cluster.kill_and_restart(fault.split()[1])
        injected[fault] += 1


async def consistency(dsn: str, store: Path, deadline_s: float) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        # Stuck claims are taken over once their lease expires, export rows are closed once the
        # database is back: give the survivors time.
        t_end = time.monotonic() + deadline_s
        while time.monotonic() < t_end and await conn.fetchval(
            "SELECT (SELECT count(*) FROM therapy_sessions WHERE processing_status = 'processing') + "
            "(SELECT count(*) FROM export_history WHERE error_message LIKE 'export in progress%')"
        ):
            await asyncio.sleep(0.5)
        out = {
            k: await conn.fetchval(q)
            for k, q in {
                "sessions": "SELECT count(*) FROM therapy_sessions",
                "completed": "SELECT count(*) FROM therapy_sessions WHERE processing_status = 'completed'",
                "stuck_processing": "SELECT count(*) FROM therapy_sessions WHERE processing_status = 'processing'",
                "failed": "SELECT count(*) FROM therapy_sessions WHERE processing_status = 'failed'",
                "completed_without_statistics": "SELECT count(*) FROM therapy_sessions s WHERE processing_status = "
                "'completed' AND (SELECT count(*) FROM emg_statistics e WHERE e.session_id = s.id) <> 2",
                "completed_without_score": "SELECT count(*) FROM therapy_sessions s WHERE processing_status = 'completed' "
                "AND NOT EXISTS (SELECT 1 FROM performance_scores p WHERE p.session_id = s.id)",
                "exports": "SELECT count(*) FROM export_history",
                "exports_in_progress": "SELECT count(*) FROM export_history WHERE export_status = 'failed' "
                "AND error_message LIKE 'export in progress%'",
            }.items()
        }
        paths = {r["file_path"] for r in await conn.fetch("SELECT file_path FROM therapy_sessions")}
        for r in await conn.fetch(
            "SELECT id, export_type, export_timestamp FROM export_history "
            "WHERE error_message LIKE 'export in progress%'"
        ):
            print(f"export still in progress: {r['id']} {r['export_type']} started {r['export_timestamp']}")
    finally:
        await conn.close()
    files = {str(p.relative_to(store)) for p in store.rglob("*.c3d") if ".staging" not in p.parts}
    out["store_files"] = len(files)
    out["orphan_store_files"] = len(files - paths)
    out["missing_store_files"] = len(paths - files)
    out["staging_files"] = len(list((store / ".staging").glob("*.part"))) if (store / ".staging").is_dir() else 0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=120.0, help=f"seconds of load (at most {MAX_DURATION_S:.0f})")
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    duration = min(args.duration, MAX_DURATION_S)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.chmod(tmp, 0o755)
        pg = EmbeddedPostgres(ephemeral=True)
        pg.start()
        cluster = None
        try:
            dsn = pg.admin_dsn().rsplit("/", 1)[0] + "/ghostly_chaos"
            asyncio.run(_create_db(pg.admin_dsn()))
            asyncio.run(migrate(dsn))
            patient, researcher = asyncio.run(seed_people(dsn))
            (tmp_path / "files").mkdir()
            files = make_files(tmp_path / "files", args.files)
            data_dir = tmp_path / "data"
            cluster = Cluster(dsn, data_dir)
            for name in SERVICES:
                cluster.start(name)

            async def run() -> tuple[Counter, Counter, float]:
                for a in cluster.addresses.values():
                    await wait_serving(a, timeout=60)
                calls: Counter[tuple[str, str]] = Counter()
                injected: Counter[str] = Counter()
                t0 = time.monotonic()
                stop_at = t0 + duration
                await asyncio.gather(
                    load(cluster, dsn, files, patient, researcher, stop_at, rng, calls),
                    faults(cluster, pg, stop_at, rng, injected),
                )
                return calls, injected, time.monotonic() - t0

            calls, injected, wall = asyncio.run(run())
            checked = asyncio.run(consistency(dsn, data_dir / "c3d-store", deadline_s=LEASE_S * 10))
        finally:
            if cluster is not None:
                cluster.stop()
            pg.stop()
    print(f"chaos run: {wall:.0f} s of load, seed {args.seed}, {os.cpu_count()} cores, lease {LEASE_S:g} s")
    print(
        "faults injected: "
        + ", ".join(f"{k} x{n}" for k, n in sorted(injected.items()))
        + f" (total {sum(injected.values())})"
    )
    print(f"{'request':<16}{'status':<22}{'count':>7}")
    for (kind, code), n in sorted(calls.items()):
        print(f"{kind:<16}{code:<22}{n:>7}")
    print(f"requests: {sum(calls.values())}")
    print("consistency: " + ", ".join(f"{k}={v}" for k, v in checked.items()))
    internal = sum(n for (_, code), n in calls.items() if code in ("INTERNAL", "UNKNOWN", "DATA_LOSS"))
    bad = {
        k: checked[k]
        for k in (
            "stuck_processing",
            "failed",
            "completed_without_statistics",
            "completed_without_score",
            "exports_in_progress",
            "orphan_store_files",
            "missing_store_files",
            "staging_files",
        )
        if checked[k]
    }
    print(f"INTERNAL/UNKNOWN responses: {internal}; lost or stuck: {bad or 0}")
    return 1 if internal or bad else 0


async def _create_db(admin: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute('CREATE DATABASE "ghostly_chaos"')
        # The throwaway cluster runs without durability (fsync and synchronous_commit off): an
        # immediate stop would then lose commits that were acknowledged, which no production
        # database does, and the check would count them as our losses. Durable, as deployed.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {setting} = on")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
