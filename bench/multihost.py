"""Multi-host run (issue 19, item 4): every component in its own network namespace on one
bridge (tests/ops/netns.py), sharing nothing but the network -- PostgreSQL, the S3 server
(moto) and the broker (nats-server with JetStream) in events mode, two ingest replicas,
statistics, jit_signal and export. The run ingests the files (through the bucket and its
events, each event published twice; or by upload, alternately to both replicas), optionally
kills one ingest replica while it holds a claim and starts it again (--kill-during-ingest),
reprocesses everything across both replicas while one is killed with SIGKILL mid-item, and
exports (statistics CSV of every session, the signals of one: export -> statistics and
jit_signal on their hosts). Then the check: one session per file, each completed exactly once.
Prints the timings of each phase and the check; exit code 1 when something is wrong.

Root and `ip netns` needed.

    .venv/bin/python bench/multihost.py [--mode events|upload] [--files 40] [--duration 180]
                                        [--kill-during-ingest] [--samples [DIR]] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.*, tests.*

from bench.common import SAMPLES
from tests.ops import netns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--mode",
        choices=("events", "upload"),
        default="events",
        help="ingest through the S3 bucket + events (default) or by upload (shared directory store)",
    )
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of each synthetic recording")
    ap.add_argument("--lease", type=float, default=2.0, help="GHOSTLY_INGEST_CLAIM_LEASE_S of the replicas")
    ap.add_argument("--workers", type=int, default=1, help="GHOSTLY_INGEST_WORKERS of each replica")
    ap.add_argument(
        "--kill-during-ingest",
        action="store_true",
        help="also kill ingest-b while it holds a claim during ingest, then start it again",
    )
    ap.add_argument(
        "--samples",
        nargs="?",
        const=str(SAMPLES),
        default=None,
        metavar="DIR",
        help=f"also ingest the real C3D files of DIR (default {SAMPLES}; skipped when absent)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the run's directory (logs) at the end")
    args = ap.parse_args(argv)
    reason = netns.available()
    if reason:
        print(f"multihost: cannot run: {reason}", file=sys.stderr)
        return 2
    events = args.mode == "events"
    tmp = Path(tempfile.mkdtemp(prefix="ghostly-multihost-"))
    report: dict = {}
    wrong: list[str] = []
    t0 = time.monotonic()
    files = netns.synthetic_files(tmp / "files", args.files, duration_s=args.duration)
    if args.samples:
        real = sorted(Path(args.samples).glob("*.c3d")) if Path(args.samples).is_dir() else []
        print(f"real samples: {len(real)} from {args.samples}" + ("" if real else " (none: skipped)"))
        files += [(p.name, p.read_bytes()) for p in real]
    n = len(files)
    report["files_s"] = time.monotonic() - t0
    cluster = netns.Cluster(tmp / "cluster", events=events, lease_s=args.lease, workers=args.workers)
    try:
        cluster.start()
        assert cluster.network is not None  # start() built it
        print(
            f"hosts on {cluster.network.subnet}: "
            + ", ".join(f"{h.name} {h.ip}" for h in cluster.network.hosts.values())
        )

        async def run() -> None:
            patient, researcher = await netns.seed_people(cluster)
            t = time.monotonic()
            if events:
                ingest = asyncio.ensure_future(
                    netns.ingest_by_bucket_events(cluster, files, patient, duplicates=True, timeout=600)
                )
            else:
                ingest = asyncio.ensure_future(netns.ingest_by_upload(cluster, files, patient))
            if args.kill_during_ingest:
                if not events:
                    raise SystemExit("--kill-during-ingest needs --mode events (an upload in flight would fail)")
                report["ingest_kill"] = await netns.kill_mid_claim(cluster, "ingest-b")
                report["ingest_kill"]["at_s"] = time.monotonic() - t
                cluster.start_service("ingest-b")  # as an orchestrator would
            sids = await ingest
            report["ingest_s"] = time.monotonic() - t
            if events:
                report["events_drained"] = await netns.events_drained(cluster, timeout=120)
                report["events_drained_s"] = time.monotonic() - t
                report["event_outcomes"] = netns.bucket_event_outcomes(cluster)
                report["dead_letters"] = await netns.dead_letters(cluster)
            if args.kill_during_ingest:
                await asyncio.to_thread(cluster.wait_serving, "ingest-b")
            rep = await netns.reprocess_killing(
                cluster, via="ingest-a", victim="ingest-b", victim_done_first=max(1, n // 6)
            )
            exp = await netns.export_all(cluster, sorted(sids.values()), researcher)
            counts = await netns.consistency(cluster)
            wrong.extend(netns.problems(sids, rep, exp, counts, n))
            if events:
                total = {
                    k: sum(o.get(k, 0) for o in report["event_outcomes"].values())
                    for k in ("completed", "duplicate", "failed", "dead_lettered")
                }
                if report["dead_letters"] or total["failed"] or total["dead_lettered"]:
                    wrong.append(
                        f"bucket events failed or dead-lettered: {total}, {report['dead_letters']} dead letters"
                    )
                if not args.kill_during_ingest and (total["completed"] != n or total["duplicate"] != n):
                    wrong.append(f"bucket events: {total}, expected {n} completed and {n} duplicates")
            by_host: dict[str, int] = {}
            for i in rep["items"]:
                by_host[i["claimed_by"].split(":")[0]] = by_host.get(i["claimed_by"].split(":")[0], 0) + 1
            report.update(
                reprocess_s=rep["reprocess_s"],
                reprocess_kill_at_s=rep["kill_at_s"],
                reprocess_items_by_replica=by_host,
                export_s=exp["export_s"],
                counts=counts,
                export_bytes={k: len(exp[k]["bytes"]) for k in ("statistics_csv", "signals_json")},
            )

        asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - reported with the logs
        wrong.append(f"{type(exc).__name__}: {exc}")
        print(cluster.logs(), file=sys.stderr)
    finally:
        cluster.close()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - t0
    print(
        f"multi-host run ({args.mode}): {n} files ({args.files} synthetic of {args.duration:g} s), "
        f"{os.cpu_count()} cores, "
        f"lease {args.lease:g} s, {wall:.1f} s in all"
    )
    print("cluster start: " + ", ".join(f"{k} {v:.2f}" for k, v in cluster.timings.items()))
    for k, v in report.items():
        print(f"  {k}: {v:.2f}" if isinstance(v, float) else f"  {k}: {v}")
    print("check: " + ("every file one session, completed exactly once, exported" if not wrong else "FAILED"))
    for line in wrong:
        print(f"  - {line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
