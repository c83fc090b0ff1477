"""Benchmark of the StatisticsService read path at clinical-trial scale, through real gRPC.

For each cohort size (total sessions; default 70,000; e.g. `--sessions 7000,70000,700000`):
starts a throwaway embedded PostgreSQL (or, with DATABASE_URL set, creates a scratch database on
that server and drops it afterwards), migrates, generates the cohort with COPY
(bench/gen_cohort.py: sessions / 70 patients x 70 sessions, 50 therapists), starts the statistics
service as its own process on loopback (connected as the read-only role ghostly_statistics,
default pool and log settings), and measures with real stubs:

    GetPerformanceScore, GetSession        p50 <= 1 ms, p99 <= 5 ms
    GetPatientProgress (70 sessions)       p99 <= 10 ms
    GetCohortSummary (all / a therapist)   p99 <= 10 ms (O(days): cohort_summary_scores, migration 022)
    throughput, 50 concurrent callers      req/s (reported)

checks the plan of every query of the service (EXPLAIN ANALYZE; printed with --plans), and
ends with one table of p50/p99 per size, so that reads which grow with the registry show.

Run: .venv/bin/python bench/bench_statistics.py [--sessions 7000,70000,700000] [--per-patient 70]
     [--therapists 50] [--quick] [--auth jwt] [--plans]
     (700k sessions: ~3 min to generate and load, ~3 GB of client memory)
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

from bench.common import database, services, wait_serving  # noqa: E402
from bench.gen_cohort import generate, summary  # noqa: E402
from ghostly.statistics.v1 import statistics_pb2 as pb  # noqa: E402
from ghostly.statistics.v1 import statistics_pb2_grpc  # noqa: E402
from libs.auth import issue_token  # noqa: E402
from libs.db.dsn import with_user  # noqa: E402
from services.statistics import repository as q  # noqa: E402

TARGETS = {  # name -> (statistic, limit ms)
    "GetPerformanceScore": [("p50", 1.0), ("p99", 5.0)],
    "GetSession": [("p50", 1.0), ("p99", 5.0)],
    "GetPatientProgress": [("p99", 10.0)],
    "GetCohortSummary (all)": [("p99", 10.0)],
    "GetCohortSummary (therapist)": [("p99", 10.0)],
}
# The calls of the closing table across sizes.
SCALING = [
    "GetPerformanceScore",
    "GetSession",
    "GetPatientProgress",
    "GetCohortSummary (all)",
    "GetCohortSummary (therapist)",
]


async def _timed(calls: int, make_call) -> np.ndarray:
    out = np.empty(calls)
    for i in range(calls):
        t = time.perf_counter()
        await make_call(i)
        out[i] = (time.perf_counter() - t) * 1000
    return out


def _fmt(samples: np.ndarray) -> dict:
    return {
        "n": len(samples),
        "p50": float(np.percentile(samples, 50)),
        "p90": float(np.percentile(samples, 90)),
        "p99": float(np.percentile(samples, 99)),
        "max": float(samples.max()),
    }


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
        warm += [
            stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=rnd.choice(patients))) for _ in range(50)
        ]
        warm += [stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=rnd.choice(completed))) for _ in range(50)]
        warm += [
            stub.ListSessions(pb.ListSessionsRequest(patient_id=rnd.choice(patients), page_size=20)) for _ in range(50)
        ]
        await asyncio.gather(*warm)
        for _ in range(3):
            await stub.GetCohortSummary(pb.GetCohortSummaryRequest())

        ids = [rnd.choice(completed) for _ in range(4000 // k)]
        results["GetPerformanceScore"] = _fmt(
            await _timed(len(ids), lambda i: stub.GetPerformanceScore(pb.SessionKey(session_id=ids[i])))
        )
        ids = [rnd.choice(sessions) for _ in range(4000 // k)]
        results["GetSession"] = _fmt(
            await _timed(len(ids), lambda i: stub.GetSession(pb.GetSessionRequest(session_id=ids[i])))
        )
        ids = [rnd.choice(completed) for _ in range(1000 // k)]
        results["GetEmgStatistics"] = _fmt(
            await _timed(len(ids), lambda i: stub.GetEmgStatistics(pb.GetEmgStatisticsRequest(session_id=ids[i])))
        )
        pts = [rnd.choice(patients) for _ in range(1000 // k)]
        sizes = []

        async def progress(i):
            res = await stub.GetPatientProgress(pb.GetPatientProgressRequest(patient_id=pts[i]))
            sizes.append(len(res.points))

        results["GetPatientProgress"] = _fmt(await _timed(len(pts), progress))
        results["GetPatientProgress"]["note"] = f"{np.mean(sizes):.1f} points/patient"
        results["ListSessions (patient, 20)"] = _fmt(
            await _timed(len(pts), lambda i: stub.ListSessions(pb.ListSessionsRequest(patient_id=pts[i], page_size=20)))
        )
        results["ListSessions (all, 50)"] = _fmt(
            await _timed(500 // k, lambda i: stub.ListSessions(pb.ListSessionsRequest(page_size=50)))
        )
        results["GetCohortSummary (all)"] = _fmt(
            await _timed(1000 // k, lambda i: stub.GetCohortSummary(pb.GetCohortSummaryRequest()))
        )
        ths = [rnd.choice(therapists) for _ in range(1000 // k)]
        results["GetCohortSummary (therapist)"] = _fmt(
            await _timed(len(ths), lambda i: stub.GetCohortSummary(pb.GetCohortSummaryRequest(therapist_id=ths[i])))
        )

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


SUMMARY = object()  # plan check of the cohort summary: cohort_summary_scores only


async def explain_all(dsn: str, data: dict) -> list[tuple[str, str, bool]]:
    # As the service's own role (its planner settings, migration 013; its RLS policies, 012).
    conn = await asyncpg.connect(with_user(dsn, "ghostly_statistics"))
    await conn.execute("SELECT set_config('ghostly.role', 'researcher', false)")
    sid = data["completed_ids"][len(data["completed_ids"]) // 2]
    patient = data["patient_codes"][len(data["patient_codes"]) // 2]
    therapist = data["therapist_ids"][0]
    cursor_row = await conn.fetchrow(
        "SELECT session_date, id FROM therapy_sessions WHERE patient_id = $1 "
        "ORDER BY session_date DESC, id DESC OFFSET 20 LIMIT 1",
        patient,
    )
    cases = [
        ("GetSession", q.GET_SESSION, [sid], True),
        ("GetPerformanceScore", q.PERFORMANCE_SCORE, [sid], True),
        ("GetBfrMonitoring", q.BFR_MONITORING, [sid], True),
        ("GetSessionSettings", q.SESSION_SETTINGS, [sid], True),
        ("GetEmgStatistics", q.EMG_STATISTICS, [sid], True),
        ("GetEmgStatistics contractions", q.CONTRACTIONS, [sid], bool(data["contraction_rows"])),
        ("GetPatientProgress", q.patient_progress(False, False), [patient], True),
        (
            "ListSessions patient page 2",
            q.list_sessions(["patient_id = $1"], 2, 3, False, 4),
            [patient, cursor_row["session_date"], cursor_row["id"], 21],
            True,
        ),
        ("ListSessions all page 1", q.list_sessions([], None, None, False, 1), [51], True),
        (
            "ListSessions therapist+status",
            q.list_sessions(["therapist_id = $1", "processing_status = $2"], None, None, False, 3),
            [therapist, "completed", 51],
            True,
        ),
        ("GetCohortSummary therapist", q.cohort_summary(True, False, False), [therapist], SUMMARY),
        ("GetCohortSummary all", q.cohort_summary(False, False, False), [], SUMMARY),
    ]
    out = []
    try:
        for name, sql, args, must in cases:
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args))
            if must is SUMMARY:
                # O(days): only the pre-aggregated rows, nothing that grows with the registry.
                ok = "cohort_summary_scores" in plan and not any(
                    f" on {t} " in plan or f" on {t}\n" in plan
                    for t in ("therapy_sessions", "performance_scores", "cohort_day_scores", "patients")
                )
            else:
                ok = not must or (
                    "Index" in plan
                    and not ("Seq Scan on therapy_sessions" in plan or "Seq Scan on performance_scores" in plan)
                )
            out.append((name, plan, ok))
    finally:
        await conn.close()
    return out


async def run(dsn: str, sessions: int, args) -> tuple[dict, bool]:
    """One cohort size: generate, serve, measure, check plans; returns the results and whether
    every target and plan check was met."""
    t0 = time.perf_counter()
    patients = max(1, sessions // args.per_patient)
    data = await generate(
        dsn,
        patients=patients,
        sessions_per_patient=args.per_patient,
        therapists=args.therapists,
        contractions=args.contractions,
        quiet=True,
    )
    print(summary(data), flush=True)
    token = None
    auth_env = {"GHOSTLY_AUTH_MODE": "dev"}
    if args.auth == "jwt":
        # Production: every call carries a researcher's token, verified by the service.
        secret = "bench-secret-" + uuid.uuid4().hex
        auth_env = {"GHOSTLY_AUTH_MODE": "jwt", "GHOSTLY_JWT_SECRET": secret}
        token = issue_token(secret=secret, subject=str(uuid.uuid4()), role="researcher")
    # The service's default log level (its access lines included), pool and metrics settings.
    with services(
        ["statistics"],
        dsn,
        wait=False,
        quiet=True,
        GHOSTLY_DATA_DIR=str(Path(args.workdir)),
        GHOSTLY_LOG_LEVEL=os.environ.get("GHOSTLY_LOG_LEVEL", "INFO"),
        GHOSTLY_SHUTDOWN_GRACE_S="1",
        **auth_env,
    ) as running:
        address = running.addresses["statistics"]
        # The client holds up to millions of ids: keep them out of the cyclic GC's full
        # collections (a client artefact that would otherwise show up in the measured p99).
        gc.collect()
        gc.freeze()
        await wait_serving(address)
        results, rps = await measure(address, data, args.quick, token)
    plans = await explain_all(dsn, data)

    if args.plans:
        print("\n== EXPLAIN (ANALYZE, BUFFERS) ==")
        for name, plan, ok in plans:
            print(f"\n-- {name}  [{'ok' if ok else 'BAD PLAN'}]\n{plan}")

    print(
        f"\n== StatisticsService through gRPC ({data['sessions']} sessions, {data['patients']} patients, "
        f"{data['therapists']} therapists, {os.cpu_count()} CPUs, auth {args.auth}) =="
    )
    print(f"{'call':<32}{'n':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}   target")
    all_ok = True
    for name, r in results.items():
        checks = []
        for stat, limit in TARGETS.get(name, []):
            ok = r[stat] <= limit
            all_ok &= ok
            checks.append(f"{stat}<={limit:g} {'OK' if ok else 'MISSED'}")
        note = f"  ({r['note']})" if "note" in r else ""
        print(
            f"{name:<32}{r['n']:>6}{r['p50']:>9.3f}{r['p90']:>9.3f}{r['p99']:>9.3f}{r['max']:>9.3f}   "
            f"{', '.join(checks) or '-'}{note}"
        )
    print(f"{'throughput, 50 callers':<32}{rps:>15.0f} req/s (GetPerformanceScore/GetSession mix)")
    bad = [name for name, _, ok in plans if not ok]
    print(
        "plans: "
        + (
            "point/list/progress queries use their indexes; the cohort summary reads cohort_summary_scores only"
            if not bad
            else f"BAD PLAN: {', '.join(bad)}"
        )
    )
    print(
        f"size done in {time.perf_counter() - t0:.1f}s (load {data['total_s']:.1f}s); "
        f"targets {'met' if all_ok else 'NOT met'}",
        flush=True,
    )
    results["_load_s"] = data["total_s"]
    return results, all_ok and not bad


def print_scaling(by_size: dict[int, dict]) -> None:
    sizes = sorted(by_size)
    print("\n== scaling: p50 / p99 ms by cohort size (total sessions) ==")
    print(f"{'call':<32}" + "".join(f"{n:>20,}" for n in sizes) + (f"{'p50 growth':>12}" if len(sizes) > 1 else ""))
    for name in SCALING:
        cells = "".join(f"{by_size[n][name]['p50']:>11.2f} /{by_size[n][name]['p99']:>7.2f}" for n in sizes)
        growth = f"{by_size[sizes[-1]][name]['p50'] / by_size[sizes[0]][name]['p50']:>11.1f}x" if len(sizes) > 1 else ""
        print(f"{name:<32}{cells}{growth}")
    print(f"{'load (generate+COPY+VACUUM) s':<32}" + "".join(f"{by_size[n]['_load_s']:>20.1f}" for n in sizes))


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sessions takes comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--sessions needs at least one positive size")
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser(description="StatisticsService benchmark")
    ap.add_argument(
        "--sessions",
        type=_sizes,
        default=[70000],
        help="total sessions of each cohort, comma-separated (default 70000; e.g. 7000,70000,700000)",
    )
    ap.add_argument("--per-patient", type=int, default=70, help="sessions per patient (default 70)")
    ap.add_argument("--therapists", type=int, default=50, help="therapists of each cohort (default 50)")
    ap.add_argument("--contractions", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    ap.add_argument("--plans", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of every query")
    ap.add_argument(
        "--auth",
        choices=("dev", "jwt"),
        default="dev",
        help="dev: calls without a token (default); jwt: a researcher's bearer token on every call",
    )
    args = ap.parse_args()
    import tempfile

    args.workdir = tempfile.mkdtemp(prefix="ghostly-bench-")
    by_size: dict[int, dict] = {}
    all_ok = True
    for sessions in args.sessions:
        print(f"\n######## cohort of {sessions:,} sessions ########", flush=True)
        with database() as dsn:  # migrated; embedded unless DATABASE_URL (then a scratch database)
            by_size[sessions], ok = asyncio.run(run(dsn, sessions, args))
        all_ok &= ok
    print_scaling(by_size)
    print(f"targets {'met' if all_ok else 'NOT met'} at every size")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
