"""`ghostly migrate-legacy`: registered into the `ghostly` CLI by app/cli.py (register())."""

from __future__ import annotations

import argparse
import asyncio
import sys

# Exit codes (issue 17): done; validation found a loss; done with quarantined rows
# (legacy_migration_errors); interrupted (test hook --fail-after-batches).
EXIT_DONE, EXIT_LOSS, EXIT_QUARANTINED, EXIT_CRASHED = 0, 1, 3, 4


def cmd_migrate_legacy(args) -> int:
    from libs import config as config_mod
    from libs import logs
    from libs.db.embedded import ensure_database
    from libs.legacy import migrate as lm

    cfg = config_mod.load()
    logs.setup(cfg.log_level)
    cfg, pg = ensure_database(cfg)
    assert cfg.database_url is not None  # ensure_database names one
    report: lm.ValidationReport | None
    try:
        if args.validate_only:
            report = asyncio.run(lm.validate(cfg.database_url))
        else:
            stats, report = asyncio.run(
                lm.run(
                    cfg.database_url,
                    batch_size=args.batch_size,
                    dry_run=args.dry_run,
                    progress=not args.no_progress,
                    workers=args.workers,
                    fail_after_batches=args.fail_after_batches,
                )
            )
            if stats.archived:
                print(f"ghostly migrate-legacy: {lm.ARCHIVED_MESSAGE}")
                return EXIT_DONE
            print(
                ("DRY RUN (nothing written): " if stats.dry_run else "")
                + f"{stats.sessions} session(s) from {stats.legacy_rows} legacy row(s) "
                f"({stats.second_paths} second path(s), {stats.failed_sessions} failed, "
                f"{stats.remigrated} re-migrated because their legacy rows changed, "
                f"{stats.quarantined} quarantined), "
                f"{stats.statistics} statistics, {stats.contractions} contractions, "
                f"{stats.performance_scores} scores, {stats.session_settings} settings "
                f"in {stats.seconds:.1f} s"
            )
            if stats.missing_columns:
                print("optional legacy columns missing (read as NULL): " + ", ".join(stats.missing_columns))
        if report is not None:
            if report.archived:
                print(f"ghostly migrate-legacy: {lm.ARCHIVED_MESSAGE}")
                return EXIT_DONE
            print(report.text(), file=sys.stdout if report.ok else sys.stderr)
            if not report.ok:
                return EXIT_LOSS
            return EXIT_QUARANTINED if report.quarantined else EXIT_DONE
        return EXIT_DONE
    except lm.InjectedFailure as exc:
        print(f"ghostly migrate-legacy: {exc}", file=sys.stderr)
        return EXIT_CRASHED
    except lm.LegacyShapeError as exc:
        print(f"ghostly migrate-legacy: {exc}", file=sys.stderr)
        return 2
    finally:
        if pg:
            pg.stop()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "migrate-legacy",
        help="migrate legacy c3d_metadata/analysis_results into the statistics-first tables",
        description="Idempotent, resumable, validated data migration (see migrations/README.md, "
        "'Legacy rollout'). Exit 0 done, 1 when the validation finds any loss, 3 done with "
        "quarantined rows (legacy_migration_errors). After 008 (archived): says so, exit 0.",
    )
    p.add_argument("--dry-run", action="store_true", help="run every batch and roll it back; write nothing")
    p.add_argument("--batch-size", type=int, default=5000, help="legacy rows per transaction (default 5000)")
    p.add_argument("--workers", type=int, default=2, help="concurrent batch transactions (default 2)")
    p.add_argument("--validate-only", action="store_true", help="only compare legacy and new tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fail-after-batches", type=int, default=None, help=argparse.SUPPRESS)  # tests: crash
    p.set_defaults(func=cmd_migrate_legacy)
