"""Data migration, compatibility views (007) and decommission (008) on generated legacy data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from libs.db.migrate import migrate
from libs.legacy import fixtures
from libs.legacy import mapping as M
from libs.legacy import migrate as lm

ROOT = Path(__file__).resolve().parents[2]
N = 400  # legacy sessions per test database (every quirk appears several times)
SEED = 8
NEW_TABLES = (
    "therapy_sessions",
    "emg_statistics",
    "emg_contractions",
    "performance_scores",
    "session_settings",
    "bfr_monitoring",
    "legacy_c3d_sources",
)

# Legacy values the views cannot give back, and why (everything else must be equal).
C3D_NOT_REPRODUCED: dict[str, str] = {}  # every c3d_metadata column comes back exactly
ANALYSIS_NOT_REPRODUCED = {
    "cache_hits": "legacy cache bookkeeping; statistics are not a cache (view: 0)",
    "last_accessed_at": "legacy cache bookkeeping (view: the analysis time)",
    "expires_at": "statistics never expire (view: 'infinity', so the old cache check treats them as valid)",
    "mvc_values": "{channel: MVC} kept as emg_statistics.mvc_peak_value; the view returns NULL, as legacy rows do in practice",
}
ANALYSIS_ROWS_NOT_REPRODUCED = (
    "only the migrated (chosen) analysis of each file is in the view; older versions, "
    "expired and empty duplicates stay in analysis_results(_archived)"
)
FLOAT_KEYS_APPROX = ("start_time_ms", "end_time_ms", "duration_ms")  # stored in seconds: ms -> s -> ms, 1e-9 relative


async def _legacy_db(db_factory, n=N, seed=SEED) -> str:
    dsn = await db_factory.create("legacy")
    conn = await asyncpg.connect(dsn)
    try:
        await fixtures.create_legacy_schema(conn)  # the old system's own DDL; 001-005 are baselined
        await migrate(dsn)
        await fixtures.write(conn, n, seed=seed)
    finally:
        await conn.close()
    return dsn


async def _counts(dsn) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in NEW_TABLES}
    finally:
        await conn.close()


def _same(a, b, path=""):
    """JSON / value equality, floats to 1e-9 relative; returns a list of differences."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: key only in {'legacy' if k in a else 'view'}")
            else:
                out += _same(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same(x, y, f"{path}[{i}]")]
    if isinstance(a, bool) or isinstance(b, bool):
        return [] if a == b else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return [] if M.legacy_float_equal(a, b) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.fixture(scope="module")
async def migrated(db_factory):
    dsn = await _legacy_db(db_factory)
    stats, report = await lm.run(dsn, batch_size=64, progress=False)
    assert report.ok, report.text()
    return dsn, stats


async def test_fixture_has_every_quirk(migrated):
    dsn, stats = migrated
    conn = await asyncpg.connect(dsn)
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM (SELECT file_hash FROM c3d_metadata GROUP BY 1 HAVING count(*) > 1) x"
            )
            > 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM (SELECT file_hash FROM analysis_results GROUP BY 1 HAVING count(*) > 1) x"
            )
            > 0
        )
        assert await conn.fetchval("SELECT count(*) FROM analysis_results WHERE expires_at < now()") > 0
        assert await conn.fetchval("SELECT count(*) FROM analysis_results WHERE analytics_data = '{}'") > 0
        assert await conn.fetchval("SELECT count(*) FROM c3d_metadata WHERE therapist_id IN ('---', '')") > 0
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM c3d_metadata m WHERE NOT EXISTS (SELECT 1 FROM patients p WHERE p.patient_code = m.patient_id)"
            )
            > 0
        )
    finally:
        await conn.close()
    assert stats.second_paths > 0 and stats.failed_sessions > 0 and stats.unknown_patient_codes > 0


async def test_views_give_back_the_legacy_rows(migrated):
    dsn, _ = migrated
    conn = await asyncpg.connect(dsn)
    try:
        legacy = {r["id"]: dict(r) for r in await conn.fetch("SELECT * FROM c3d_metadata")}
        view = {r["id"]: dict(r) for r in await conn.fetch("SELECT * FROM c3d_metadata_view")}
        assert set(view) == set(legacy)
        cols = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
                "c3d_metadata",
            )
        ]
        vcols = [
            (r["column_name"], r["data_type"])
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
                "c3d_metadata_view",
            )
        ]
        lcols = [
            (r["column_name"], r["data_type"])
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
                "c3d_metadata",
            )
        ]
        assert vcols == lcols  # same columns, order and types
        diffs = []
        for i, row in legacy.items():
            for c in cols:
                if c in C3D_NOT_REPRODUCED:
                    continue
                a, b = row[c], view[i][c]
                if c in ("game_metadata", "channel_names", "object_metadata") and a is not None:
                    a, b = json.loads(a), json.loads(b) if b is not None else None
                diffs += [f"{row['file_path']}.{c}{d}" for d in _same(a, b)]
        assert not diffs, diffs[:20]

        # analysis_results: the chosen row of every file, column by column, JSON key by key
        chosen = await conn.fetch(
            "SELECT analysis_result_id FROM legacy_c3d_sources WHERE analysis_result_id IS NOT NULL"
        )
        ids = [r[0] for r in chosen]
        legacy_ar = {
            r["id"]: dict(r) for r in await conn.fetch("SELECT * FROM analysis_results WHERE id = ANY($1)", ids)
        }
        view_ar = {r["id"]: dict(r) for r in await conn.fetch("SELECT * FROM analysis_results_view")}
        assert set(view_ar) == set(legacy_ar)
        assert await conn.fetchval("SELECT count(*) FROM analysis_results") > len(
            legacy_ar
        )  # ANALYSIS_ROWS_NOT_REPRODUCED
        acols = [
            (r["column_name"], r["data_type"])
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
                "analysis_results",
            )
        ]
        assert acols == [
            (r["column_name"], r["data_type"])
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
                "analysis_results_view",
            )
        ]
        diffs = []
        for i, row in legacy_ar.items():
            for c, _ in acols:
                if c in ANALYSIS_NOT_REPRODUCED:
                    continue
                a, b = row[c], view_ar[i][c]
                if (
                    c
                    in (
                        "processing_params",
                        "analytics_data",
                        "emg_signals",
                        "contractions_data",
                        "compliance_scores",
                        "temporal_stats",
                    )
                    and a is not None
                ):
                    a, b = json.loads(a), json.loads(b) if b is not None else None
                diffs += [f"{i}.{c}{d}" for d in _same(a, b)]
        assert not diffs, diffs[:20]
    finally:
        await conn.close()


async def test_sql_matches_the_reference_mapping(migrated):
    dsn, _ = migrated
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("""
            SELECT es.*, r.analytics_data -> es.channel_name AS ch, r.mvc_values -> es.channel_name AS mvc
            FROM emg_statistics es
            JOIN legacy_c3d_sources s ON s.session_id = es.session_id AND s.is_primary
            JOIN analysis_results r ON r.id = s.analysis_result_id""")
        assert rows
        for r in rows:
            mvc = json.loads(r["mvc"]) if r["mvc"] is not None else None
            ref, contr = M.map_channel(
                r["channel_name"], json.loads(r["ch"]), processing_version=r["processing_version"], mvc_value=mvc
            )
            details = json.loads(r["analysis_details"])
            for k, v in ref.items():
                if k == "legacy":
                    assert _same(v, details["legacy"]) == [], k
                elif k == "defaulted":
                    assert sorted(details["migrated_from_legacy"]["defaulted"]) == v
                elif k == "mvc_peak_source":
                    assert details["migrated_from_legacy"]["mvc_peak_value_source"] == v
                elif k in ("missing", "carried", "contraction_keys"):
                    got = details["migrated_from_legacy"].get(k)
                    assert (sorted(got) if k == "missing" else got) == v, (k, v, got)
                else:
                    assert _same(v, r[k]) == [], (k, v, r[k])
            got = await conn.fetch(
                "SELECT * FROM emg_contractions WHERE statistics_id = $1 ORDER BY contraction_index", r["id"]
            )
            assert len(got) == len(contr)
            for g, c in zip(got, contr):
                assert all(_same(v, g[k]) == [] for k, v in c.items())
        # performance: the reference on the migrated statistics
        for p in await conn.fetch(
            "SELECT ps.*, ts.game_metadata, s.legacy_values FROM performance_scores ps "
            "JOIN therapy_sessions ts ON ts.id = ps.session_id "
            "JOIN legacy_c3d_sources s ON s.session_id = ts.id AND s.is_primary"
        ):
            stats = [
                dict(x)
                for x in await conn.fetch(
                    "SELECT side, muscle_compliance_score FROM emg_statistics WHERE session_id = $1", p["session_id"]
                )
            ]
            ref = M.performance(
                stats, json.loads(p["game_metadata"]), json.loads(p["legacy_values"])["session_duration"]
            )
            for k in (
                "overall_performance_score",
                "compliance_score",
                "symmetry_score",
                "game_points_achieved",
                "session_duration_minutes",
            ):
                assert _same(ref[k], p[k]) == [], k
            w = json.loads(p["performance_weights"])
            assert _same({k: w[k] for k in M.REQUESTED_WEIGHTS}, ref["effective_weights"]) == []
            assert set(w["excluded"]) == set(ref["excluded"])
        # sessions: status and nulled ids follow the rules
        bad = await conn.fetchval("""
            SELECT count(*) FROM therapy_sessions ts JOIN c3d_metadata m ON m.id = ts.id
            WHERE ts.patient_id IS DISTINCT FROM (SELECT patient_code FROM patients WHERE patient_code = m.patient_id)
               OR ts.session_date <> (m.session_date AT TIME ZONE 'UTC')""")
        assert bad == 0
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM therapy_sessions ts WHERE processing_status = 'failed' "
                "AND EXISTS (SELECT 1 FROM emg_statistics e WHERE e.session_id = ts.id)"
            )
            == 0
        )
        assert await conn.fetchval("SELECT count(*) FROM bfr_monitoring") == 0  # legacy has no BFR data
    finally:
        await conn.close()


async def test_rerun_creates_nothing(migrated):
    dsn, _ = migrated
    before = await _counts(dsn)
    stats, report = await lm.run(dsn, batch_size=64, progress=False)
    assert stats.sessions == 0 and report.ok
    assert await _counts(dsn) == before


async def test_crash_midway_then_rerun_completes_exactly(db_factory, migrated):
    reference = await _counts(migrated[0])
    dsn = await _legacy_db(db_factory)
    with pytest.raises(lm.InjectedFailure):
        await lm.run(dsn, batch_size=64, progress=False, fail_after_batches=2)
    partial = await _counts(dsn)
    assert 0 < partial["therapy_sessions"] < reference["therapy_sessions"]
    report = await lm.validate(dsn)
    assert not report.ok  # the gap is reported
    _, report = await lm.run(dsn, batch_size=64, progress=False)
    assert report.ok, report.text()
    assert await _counts(dsn) == reference


async def test_dry_run_writes_nothing(db_factory, migrated):
    dsn = await _legacy_db(db_factory)
    stats, report = await lm.run(dsn, batch_size=64, progress=False, dry_run=True)
    assert report is None and stats.dry_run
    assert stats.sessions == migrated[1].sessions and stats.contractions == migrated[1].contractions
    assert all(v == 0 for v in (await _counts(dsn)).values())


def _cli(dsn, *args):
    env = dict(os.environ, DATABASE_URL=dsn)
    code = (
        "import sys, argparse; from app import legacy as cli; p = argparse.ArgumentParser(); "
        "s = p.add_subparsers(); cli.register(s); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "migrate-legacy", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.parametrize(
    "delete",
    [
        "DELETE FROM emg_contractions WHERE id = (SELECT id FROM emg_contractions LIMIT 1)",
        "DELETE FROM emg_statistics WHERE id = (SELECT id FROM emg_statistics LIMIT 1)",
        "DELETE FROM therapy_sessions WHERE id = (SELECT session_id FROM legacy_c3d_sources WHERE NOT is_primary LIMIT 1)",
        "DELETE FROM performance_scores WHERE id = (SELECT id FROM performance_scores LIMIT 1)",
    ],
)
async def test_validation_fails_loudly_on_loss(db_factory, delete):
    dsn = await _legacy_db(db_factory, n=120)
    proc = _cli(dsn, "--no-progress", "--batch-size", "50")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "validation: OK" in proc.stdout
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(delete)
    finally:
        await conn.close()
    proc = _cli(dsn, "--validate-only")
    assert proc.returncode == 1
    assert "FAILED" in proc.stderr and "LOSS:" in proc.stderr


async def test_cli_dry_run(db_factory):
    dsn = await _legacy_db(db_factory, n=60)
    proc = _cli(dsn, "--dry-run", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DRY RUN" in proc.stdout
    assert all(v == 0 for v in (await _counts(dsn)).values())


async def test_008_archives_legacy_tables_intact(db_factory):
    dsn = await _legacy_db(db_factory, n=120)
    _, report = await lm.run(dsn, progress=False)
    assert report.ok
    conn = await asyncpg.connect(dsn)
    try:
        before = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in ("c3d_metadata", "analysis_results")}
        cons = await conn.fetch(
            "SELECT conrelid::regclass::text AS t, conname, pg_get_constraintdef(oid) AS d FROM pg_constraint "
            "WHERE conrelid IN ('c3d_metadata'::regclass, 'analysis_results'::regclass) ORDER BY 2"
        )
        applied = await migrate(dsn)  # routine run: 008 is manual, never applied
        assert [m.version for m in applied] == []
        applied = await migrate(dsn, to=8)
        assert [m.version for m in applied] == [8]
        for t, n in before.items():
            assert await conn.fetchval(f"SELECT count(*) FROM {t}_archived") == n
            assert await conn.fetchval("SELECT to_regclass($1)", t) is None
        for v in ("c3d_metadata_view", "analysis_results_view", "analysis_summary"):
            assert await conn.fetchval("SELECT to_regclass($1)", v) is None
        after = await conn.fetch(
            "SELECT conrelid::regclass::text AS t, conname, pg_get_constraintdef(oid) AS d FROM pg_constraint "
            "WHERE conrelid IN ('c3d_metadata_archived'::regclass, 'analysis_results_archived'::regclass) ORDER BY 2"
        )
        # same constraints, same names; the FK now names the renamed parent
        assert [(r["conname"], r["d"]) for r in after] == [
            (r["conname"], r["d"].replace("REFERENCES c3d_metadata(", "REFERENCES c3d_metadata_archived("))
            for r in cons
        ]
        assert await conn.fetchval("SELECT count(*) FROM analysis_summary_archived") == before["analysis_results"]
        assert await conn.fetchval("SELECT count(*) FROM legacy_c3d_sources") == before["c3d_metadata"]
    finally:
        await conn.close()


async def test_migrated_statistics_and_contraction_ids_are_time_ordered(migrated):
    """emg_statistics / emg_contractions ids are UUIDv7-layout (time-ordered, appended to the
    indexes); the session ids stay the legacy c3d_metadata ids."""
    dsn, _ = migrated
    conn = await asyncpg.connect(dsn)
    try:
        for table in ("emg_statistics", "emg_contractions"):
            ids = [r[0] for r in await conn.fetch(f"SELECT id FROM {table}")]
            assert ids and all(u.version == 7 and u.variant == "specified in RFC 4122" for u in ids), table
            assert len(set(ids)) == len(ids)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM therapy_sessions ts "
                "WHERE NOT EXISTS (SELECT 1 FROM c3d_metadata m WHERE m.id = ts.id)"
            )
            == 0
        )
    finally:
        await conn.close()
