"""Benchmark of the StatisticsService read path at clinical-trial scale, through real gRPC.

Starts a throwaway embedded PostgreSQL (or, with DATABASE_URL set, creates a scratch database
on that server and drops it afterwards), migrates, generates the cohort (bench/gen_cohort.py,
default 1,000 patients x 70 sessions), starts the statistics service as its own process on
loopback (connected as the read-only role ghostly_statistics, default pool and log settings),
and measures with real stubs:

    GetPerformanceScore, GetSession        p50 <= 1 ms, p99 <= 5 ms
    GetPatientProgress (70 sessions)       p99 <= 10 ms
    GetCohortSummary (all 70k sessions)    <= 100 ms
    throughput, 50 concurrent callers      req/s (reported)

and prints EXPLAIN (ANALYZE) of every query of the service.

Run: .venv/bin/python bench/bench_statistics.py [--patients 1000] [--sessions 70] [--quick] [--auth jwt]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import database, services, wait_serving  # noqa: E402
from gen_cohort import generate, summary  # noqa: E402
from ghostly.statistics.v1 import statistics_pb2 as pb  # noqa: E402
from ghostly.statistics.v1 import statistics_pb2_grpc  # noqa: E402
from libs.auth import issue_token  # noqa: E402
from services.statistics import queries as q  # noqa: E402
from libs.db.dsn import with_user  # noqa: E402

TARGETS = {  # name -> (statistic, limit ms)
    "GetPerformanceScore": [("p50", 1.0), ("p99", 5.0)],
    "GetSession": [("p50", 1.0), ("p99", 5.0)],
    "GetPatientProgress": [("p99", 10.0)],
    "GetCohortSummary (all)": [("p99", 100.0)],
}




async def _timed(calls: int, make_call) -> np.ndarray:
    out = np.empty(calls)
    for i in range(calls):
        t = time.perf_counter()
        await make_call(i)
        out[i] = (time.perf_counter() - t) * 1000
    return out


def _fmt(samples: np.ndarray) -> dict:
    return {"n": len(samples), "p50": float(np.percentile(samples, 50)),
            "p90": float(np.percentile(samples, 90)), "p99": float(np.percentile(samples, 99)),
            "max": float(samples.max())}


class _WithToken:
    """A stub whose calls all carry `authorization: Bearer <token>` (as the gateway's do)."""

    def __init__(self, stub, token: str):
        self._stub, self._md = stub, (("authorization", f"Bearer {token}"),)

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._md, **kw)


async def measure(address: str, data: dict, quick: bool, token: str | None = None) -> tuple[dict, float]:
    rnd = random.Random(1)
    completed = [str(s) for s in data["completed_ids"]]
    sessions = [str(s) for s in data["session_ids"]]
    patients = data["patient_codes"]
    therapists = [str(t) for t in data["therapist_ids"]]
    k = 1 if not quick else 4
    results: dict[str, dict] = {}
    async with grpc.aio.insecure_channel(address) as ch:
        stub = statistics_pb2_grpc.StatisticsServiceStub(ch)
        if token:
            stub = _WithToken(stub, token)
        # Warm-up: every pooled connection prepares its statements; gRPC channel is up.
        warm = [stub.GetPerformanceScore(pb.SessionKey(session_id=rnd.choice(completed))) for _ in range(200)]
        warm += [stub.GetSession(pb.GetSessionRequest(session_id=rnd.choice(sessions))) for _ in range(200)]
        warm += [stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=rnd.choice(patients)))
                 for _ in range(50)]
        warm += [stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=rnd.choice(completed)))
                 for _ in range(50)]
        warm += [stub.ListSessions(pb.ListSessionsRequest(patient_id=rnd.choice(patients), page_size=20))
                 for _ in range(50)]
        await asyncio.gather(*warm)
        for _ in range(3):
            await stub.GetCohortSummary(pb.GetCohortSummaryRequest())

        ids = [rnd.choice(completed) for _ in range(4000 // k)]
        results["GetPerformanceScore"] = _fmt(await _timed(len(ids), lambda i: stub.GetPerformanceScore(
            pb.SessionKey(session_id=ids[i]))))
        ids = [rnd.choice(sessions) for _ in range(4000 // k)]
        results["GetSession"] = _fmt(await _timed(len(ids), lambda i: stub.GetSession(
            pb.GetSessionRequest(session_id=ids[i]))))
        ids = [rnd.choice(completed) for _ in range(1000 // k)]
        results["GetEmgStatistics"] = _fmt(await _timed(len(ids), lambda i: stub.GetEmgStatistics(
            pb.GetEmgStatisticsRequest(session_id=ids[i]))))
        pts = [rnd.choice(patients) for _ in range(1000 // k)]
        sizes = []

        async def progress(i):
            res = await stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=pts[i]))
            sizes.append(len(res.points))
        results["GetPatientProgress"] = _fmt(await _timed(len(pts), progress))
        results["GetPatientProgress"]["note"] = f"{np.mean(sizes):.1f} points/patient"
        results["ListSessions (patient, 20)"] = _fmt(await _timed(len(pts), lambda i: stub.ListSessions(
            pb.ListSessionsRequest(patient_id=pts[i], page_size=20))))
        results["ListSessions (all, 50)"] = _fmt(await _timed(500 // k, lambda i: stub.ListSessions(
            pb.ListSessionsRequest(page_size=50))))
        results["GetCohortSummary (all)"] = _fmt(await _timed(40 // k, lambda i: stub.GetCohortSummary(
            pb.GetCohortSummaryRequest())))
        ths = [rnd.choice(therapists) for _ in range(200 // k)]
        results["GetCohortSummary (therapist)"] = _fmt(await _timed(len(ths), lambda i: stub.GetCohortSummary(
            pb.GetCohortSummaryRequest(therapist_id=ths[i]))))

        # Throughput: 50 concurrent callers, dashboard mix (score + session), fixed duration.
        duration = 5.0 if not quick else 2.0
        done = 0
        stop_at = time.perf_counter() + duration

        async def caller(seed: int):
            nonlocal done
            r = random.Random(seed)
            while time.perf_counter() < stop_at:
                if r.random() < 0.5:
                    await stub.GetPerformanceScore(pb.SessionKey(session_id=r.choice(completed)))
                else:
                    await stub.GetSession(pb.GetSessionRequest(session_id=r.choice(sessions)))
                done += 1
        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(50)))
        rps = done / (time.perf_counter() - started)
    return results, rps


async def explain_all(dsn: str, data: dict) -> list[tuple[str, str, bool]]:
    # As the service's own role (its planner settings, migration 013; its RLS policies, 012).
    conn = await asyncpg.connect(with_user(dsn, "ghostly_statistics"))
    await conn.execute("SELECT set_config('ghostly.role', 'researcher', false)")
    sid = data["completed_ids"][len(data["completed_ids"]) // 2]
    patient = data["patient_codes"][len(data["patient_codes"]) // 2]
    therapist = data["therapist_ids"][0]
    cursor_row = await conn.fetchrow("SELECT session_date, id FROM therapy_sessions WHERE patient_id = $1 "
                                     "ORDER BY session_date DESC, id DESC OFFSET 20 LIMIT 1", patient)
    cases = [
        ("GetSession", q.GET_SESSION, [sid], True),
        ("GetPerformanceScore", q.PERFORMANCE_SCORE, [sid], True),
        ("GetBfrMonitoring", q.BFR_MONITORING, [sid], True),
        ("GetSessionSettings", q.SESSION_SETTINGS, [sid], True),
        ("GetEmgStatistics", q.EMG_STATISTICS, [sid], True),
        ("GetEmgStatistics contractions", q.CONTRACTIONS, [sid], bool(data["contraction_rows"])),
        ("GetPatientProgress", q.patient_progress(False, False), [patient], True),
        ("ListSessions patient page 2", q.list_sessions(["patient_id = $1"], 2, 3, False, 4),
         [patient, cursor_row["session_date"], cursor_row["id"], 21], True),
        ("ListSessions all page 1", q.list_sessions([], None, None, False, 1), [51], True),
        ("ListSessions therapist+status", q.list_sessions(["therapist_id = $1", "processing_status = $2"],
                                                          None, None, False, 3),
         [therapist, "completed", 51], True),
        ("GetCohortSummary therapist", q.cohort_summary(True, False, False), [therapist], True),
        ("GetCohortSummary all (full scan by design)", q.cohort_summary(False, False, False), [], False),
    ]
    out = []
    try:
        for name, sql, args, must_index in cases:
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args))
            uses_index = "Index" in plan and not ("Seq Scan on therapy_sessions" in plan
                                                  or "Seq Scan on performance_scores" in plan)
            out.append((name, plan, uses_index or not must_index))
    finally:
        await conn.close()
    return out


async def run(dsn: str, args) -> int:
    t0 = time.perf_counter()
    data = await generate(dsn, patients=args.patients, sessions_per_patient=args.sessions,
                          contractions=args.contractions, quiet=True)
    print(summary(data))
    token = None
    auth_env = {"GHOSTLY_AUTH_MODE": "dev"}
    if args.auth == "jwt":
        # Production: every call carries a researcher's token, verified by the service.
        secret = "bench-secret-" + uuid.uuid4().hex
        auth_env = {"GHOSTLY_AUTH_MODE": "jwt", "GHOSTLY_JWT_SECRET": secret}
        token = issue_token(secret=secret, subject=str(uuid.uuid4()), role="researcher")
    # The service's default log level (its access lines included), pool and metrics settings.
    with services(["statistics"], dsn, wait=False, quiet=True, GHOSTLY_DATA_DIR=str(Path(args.workdir)),
                  GHOSTLY_LOG_LEVEL=os.environ.get("GHOSTLY_LOG_LEVEL", "INFO"), GHOSTLY_SHUTDOWN_GRACE_S="1",
                  **auth_env) as running:
        address = running.addresses["statistics"]
        # The client holds ~200k ids: keep them out of the cyclic GC's full collections (a client
        # artefact that would otherwise show up in the measured p99).
        gc.collect()
        gc.freeze()
        await wait_serving(address)
        results, rps = await measure(address, data, args.quick, token)
    plans = await explain_all(dsn, data)

    print("\n== EXPLAIN (ANALYZE, BUFFERS) ==")
    for name, plan, ok in plans:
        print(f"\n-- {name}  [{'index' if ok else 'NO INDEX'}]\n{plan}")

    print(f"\n== StatisticsService through gRPC ({data['sessions']} sessions, {data['patients']} patients, "
          f"{os.cpu_count()} CPUs, auth {args.auth}) ==")
    print(f"{'call':<32}{'n':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}   target")
    all_ok = True
    for name, r in results.items():
        checks = []
        for stat, limit in TARGETS.get(name, []):
            ok = r[stat] <= limit
            all_ok &= ok
            checks.append(f"{stat}<={limit:g} {'OK' if ok else 'MISSED'}")
        note = f"  ({r['note']})" if "note" in r else ""
        print(f"{name:<32}{r['n']:>6}{r['p50']:>9.3f}{r['p90']:>9.3f}{r['p99']:>9.3f}{r['max']:>9.3f}   "
              f"{', '.join(checks) or '-'}{note}")
    print(f"{'throughput, 50 callers':<32}{rps:>15.0f} req/s (GetPerformanceScore/GetSession mix)")
    idx_ok = all(ok for _, _, ok in plans)
    print(f"plans: {'every point/list/progress query uses an index' if idx_ok else 'SOME QUERY DOES NOT USE AN INDEX'}")
    print(f"total benchmark time {time.perf_counter() - t0:.1f}s; targets {'met' if all_ok else 'NOT met'}")
    return 0 if all_ok and idx_ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description="StatisticsService benchmark")
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=70)
    ap.add_argument("--contractions", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    ap.add_argument("--auth", choices=("dev", "jwt"), default="dev",
                    help="dev: calls without a token (default); jwt: a researcher's bearer token on every call")
    args = ap.parse_args()
    import tempfile
    args.workdir = tempfile.mkdtemp(prefix="ghostly-bench-")
    with database() as dsn:      # migrated; embedded unless DATABASE_URL (then a scratch database)
        return asyncio.run(run(dsn, args))


if __name__ == "__main__":
    raise SystemExit(main())
