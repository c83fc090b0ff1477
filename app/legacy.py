"""`ghostly migrate-legacy`: registered into the `ghostly` CLI by libs/cli.py (register())."""
from __future__ import annotations

import argparse
import asyncio
import sys


def cmd_migrate_legacy(args) -> int:
    from libs import config as config_mod
    from libs import logs
    from libs.db.embedded import ensure_database
    from . import migrate as lm

    cfg = config_mod.load()
    logs.setup(cfg.log_level)
    cfg, pg = ensure_database(cfg)
    try:
        if args.validate_only:
            report = asyncio.run(lm.validate(cfg.database_url))
        else:
            stats, report = asyncio.run(lm.run(
                cfg.database_url, batch_size=args.batch_size, dry_run=args.dry_run,
                progress=not args.no_progress, workers=args.workers,
                fail_after_batches=args.fail_after_batches))
            print(("DRY RUN (nothing written): " if stats.dry_run else "")
                  + f"{stats.sessions} session(s) from {stats.legacy_rows} legacy row(s) "
                  f"({stats.second_paths} second path(s), {stats.failed_sessions} failed), "
                  f"{stats.statistics} statistics, {stats.contractions} contractions, "
                  f"{stats.performance_scores} scores, {stats.session_settings} settings "
                  f"in {stats.seconds:.1f} s")
        if report is not None:
            print(report.text(), file=sys.stdout if report.ok else sys.stderr)
            return 0 if report.ok else 1
        return 0
    except lm.InjectedFailure as exc:
        print(f"ghostly migrate-legacy: {exc}", file=sys.stderr)
        return 3
    finally:
        if pg:
            pg.stop()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "migrate-legacy",
        help="migrate legacy c3d_metadata/analysis_results into the statistics-first tables",
        description="Idempotent, resumable, validated data migration (see migrations/README.md, "
                    "'Legacy rollout'). Exit 1 when the validation finds any loss.")
    p.add_argument("--dry-run", action="store_true", help="run every batch and roll it back; write nothing")
    p.add_argument("--batch-size", type=int, default=5000, help="legacy rows per transaction (default 5000)")
    p.add_argument("--workers", type=int, default=2, help="concurrent batch transactions (default 2)")
    p.add_argument("--validate-only", action="store_true", help="only compare legacy and new tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fail-after-batches", type=int, default=None, help=argparse.SUPPRESS)  # tests: crash
    p.set_defaults(func=cmd_migrate_legacy)
