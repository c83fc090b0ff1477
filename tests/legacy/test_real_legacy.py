"""Issue 17: the legacy migration on a real legacy database (the old system's own DDL, both
generations of analytics_data key names, real game metadata, rows edited after a first run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from libs.db.migrate import MigrationError, baselined_versions, migrate, status
from libs.legacy import fixtures

ROOT = Path(__file__).resolve().parents[2]


async def _legacy_ddl_db(db_factory, *, drop_optional=False) -> str:
    dsn = await db_factory.create("real")
    conn = await asyncpg.connect(dsn)
    try:
        await fixtures.create_legacy_schema(conn, drop_optional=drop_optional)
    finally:
        await conn.close()
    return dsn


def _ghostly(dsn, *args, timeout=120):
    env = dict(os.environ, DATABASE_URL=dsn)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


# ----------------------------------------------------------------------------- 1. adoption


async def test_migrate_adopts_existing_legacy_objects(db_factory):
    dsn = await _legacy_ddl_db(db_factory)
    applied = await migrate(dsn)
    versions = [m.version for m in applied]
    assert versions[0] == 6 and 8 not in versions  # 001-005 baselined, not run
    assert await baselined_versions(dsn) == {1, 2, 3, 4, 5}
    st = {m.version: a for m, a in await status(dsn)}
    assert all(st[v] for v in (1, 2, 3, 4, 5, 6, 7, 9))
    assert await migrate(dsn) == []  # a re-run has nothing to do


async def test_cli_migrate_says_baselined_and_status_shows_it(db_factory):
    dsn = await _legacy_ddl_db(db_factory, drop_optional=True)
    proc = _ghostly(dsn, "migrate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "baselined 5 migration(s)" in proc.stdout
    assert "size_category" in proc.stdout  # a missing optional column is a note
    proc = _ghostly(dsn, "migrate", "--status")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln.strip()}
    assert "baselined" in lines["002_create_therapists_and_researchers.sql"]
    assert "baselined" not in lines["006_create_statistics_schema.sql"]


async def test_incompatible_legacy_shape_is_refused_before_anything_is_applied(db_factory):
    dsn = await _legacy_ddl_db(db_factory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DROP VIEW analysis_summary; ALTER TABLE c3d_metadata ALTER COLUMN channel_count TYPE text; "
            "ALTER TABLE therapists DROP COLUMN user_id"
        )
        with pytest.raises(MigrationError) as exc:
            await migrate(dsn)
        text = str(exc.value)
        assert "c3d_metadata.channel_count is text, expected integer" in text
        assert "therapists.user_id" in text and "analysis_summary is missing" in text
        assert await conn.fetchval("SELECT to_regclass('therapy_sessions')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- data migration
import json  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from libs.legacy import mapping as M  # noqa: E402
from libs.legacy import migrate as lm  # noqa: E402

T0 = datetime(2025, 9, 10, 10, 0, tzinfo=UTC)


def _contractions(n, style="aug", good=(16, 12)):
    out = []
    for i in range(n):
        s, e = 1000.0 + i * 5000, 3000.0 + i * 5000 + (500 if i < good[1] else -1500)
        c = {
            "start_time_ms": s,
            "end_time_ms": e,
            "duration_ms": e - s,
            "mean_amplitude": 0.0004,
            "max_amplitude": 0.0009 if i < good[0] else 0.0005,
            "is_good": i < min(good),
            "meets_mvc": i < good[0],
            "meets_duration": i < good[1],
        }
        if style == "sep":
            c = {
                ("start_ms" if k == "start_time_ms" else "end_ms" if k == "end_time_ms" else k): v
                for k, v in c.items()
                if k != "duration_ms"
            }
        out.append(c)
    return out


def aug_channel(total=20, mvc=16, dur=12):
    return {
        "contraction_count": total,
        "good_contraction_count": min(mvc, dur),
        "mvc_contraction_count": mvc,
        "duration_contraction_count": dur,
        "expected_contractions": 12,
        "avg_duration_ms": 2000.0,
        "max_amplitude": 0.0009,
        "rms": 0.0001,
        "mav": 0.00008,
        "mpf": 90.5,
        "mdf": 80.25,
        "fatigue_index_fi_nsm5": None,
        "mvc_threshold_actual_value": 0.00075,
        "duration_threshold_actual_value": 2000.0,
        "mvc_estimation_method": "backend_95percentile",
        "signal_processing": {
            "source": "c3d_analog",
            "processing_steps": ["20Hz highpass", "rectify"],
            "parameters_used": {"rms_window_ms": 50},
            "quality_metrics": {"snr_db": 20.5},
        },
        "contractions": _contractions(total, "aug", (mvc, dur)),
    }


def sep_channel(total=20, mvc=16, dur=12, **extra):
    rates = [min(total / 12, 1), mvc / total, dur / total]
    ch = {
        "contraction_count": total,
        "good_contraction_count": min(mvc, dur),
        "mvc_compliant_count": mvc,
        "duration_compliant_count": dur,
        "expected_contractions": 12,
        "rms": 0.0001,
        "mav": 0.00008,
        "mpf": 90.5,
        "mdf": 80.25,
        "fatigue_index_fi_nsm5": None,
        "mvc75_threshold": 0.00075,
        "estimated_mvc_value": 0.001,
        "mvc_threshold_percentage_used": 75.0,
        "compliance_rate": sum(rates) / 3,
        "duration_threshold_actual_value": 2000.0,
        "mvc_estimation_method": "backend_95percentile",
        "signal_processing_steps": ["20Hz highpass", "rectify"],
        "signal_processing_parameters": {"rms_window_ms": 50},
        "timing_signal": {"sampling_rate": 990.0, "n_samples": 99000},
        "processed_signal_stats": {"mean": 0.0001},
        "raw_signal_stats": {"std": 0.0002},
        "contractions": _contractions(total, "sep", (mvc, dur)),
    }
    ch.update(extra)
    return ch


async def _db(db_factory, *, n=40, drop_optional=False) -> str:
    dsn = await _legacy_ddl_db(db_factory, drop_optional=drop_optional)
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        if n:
            await fixtures.write(conn, n, seed=17)
    finally:
        await conn.close()
    return dsn


async def _add(
    conn,
    label,
    analytics,
    *,
    patient="P001",
    session_type="training",
    game=None,
    session_date="auto",
    when=T0,
    extra_analysis=None,
    folder=None,
) -> uuid.UUID:
    """One legacy file written the way the old code wrote it."""
    mid = uuid.uuid4()
    path = f"{folder or patient}/{label}.c3d"
    fhash = uuid.uuid4().hex * 2
    if session_date == "auto":
        session_date = when.replace(tzinfo=None)
    cols = {
        r[0]
        for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'c3d_metadata'::regclass AND attnum > 0 AND NOT attisdropped"
        )
    }
    row = {
        "id": mid,
        "file_path": path,
        "file_hash": fhash,
        "file_size_bytes": 123456,
        "patient_id": patient,
        "therapist_id": "---",
        "session_id": label,
        "session_date": session_date,
        "session_type": session_type,
        "session_duration": 600.0,
        "game_metadata": json.dumps(game or {"game_name": "Ghostly", "level": "3", "score": "240"}),
        "channel_names": json.dumps(list(analytics)),
        "channel_count": len(analytics),
        "sampling_rate": 990.0,
        "duration_seconds": 600.0,
        "frame_count": 594000,
        "processing_status": "completed",
        "processing_version": "1.2.0",
        "created_at": when,
        "updated_at": when,
        "processed_at": when,
    }
    row = {k: v for k, v in row.items() if k in cols}
    await conn.execute(
        f"INSERT INTO c3d_metadata ({', '.join(row)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(row)))})",
        *row.values(),
    )
    await conn.execute(
        "INSERT INTO analysis_results (id, c3d_metadata_id, file_hash, processing_version, analytics_data, created_at, expires_at) "
        "VALUES ($1, $2, $3, '1.2.0', $4, $5::timestamptz, $5::timestamptz + interval '3650 days')",
        uuid.uuid4(),
        mid,
        fhash,
        json.dumps(analytics),
        when,
    )
    return mid


async def _stats(conn, mid):
    return {
        r["channel_name"]: dict(r) for r in await conn.fetch("SELECT * FROM emg_statistics WHERE session_id = $1", mid)
    }


async def test_september_keys_give_the_same_clinical_numbers_as_august(db_factory):
    dsn = await _db(db_factory, n=0)
    conn = await asyncpg.connect(dsn)
    try:
        aug = await _add(
            conn, "Ghostly_Emg_20250810_10-00-00-0001", {"CH1": aug_channel(), "CH2": aug_channel(18, 12, 9)}
        )
        sep = await _add(
            conn, "Ghostly_Emg_20250910_10-00-00-0002", {"CH1": sep_channel(), "CH2": sep_channel(18, 12, 9)}
        )
        _, report = await lm.run(dsn, progress=False)
        assert report.ok, report.text()
        a, b = await _stats(conn, aug), await _stats(conn, sep)
        for ch in ("CH1", "CH2"):
            for k in (
                "total_contractions",
                "good_contractions_intensity",
                "good_contractions_duration",
                "good_contractions_both",
                "completion_rate",
                "intensity_rate",
                "duration_rate",
                "muscle_compliance_score",
                "processing_pipeline",
            ):
                assert a[ch][k] == b[ch][k], (ch, k)
            assert abs(a[ch]["mvc_peak_value"] - 0.001) < 1e-15 and abs(b[ch]["mvc_peak_value"] - 0.001) < 1e-15
        assert b["CH1"]["intensity_rate"] == 0.8 and b["CH1"]["good_contractions_intensity"] == 16
        pa = await conn.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1", aug)
        pb = await conn.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1", sep)
        assert pb["compliance_score"] == pa["compliance_score"] > 60
        assert pb["overall_performance_score"] == pa["overall_performance_score"] > 60
        # contractions: start_ms/end_ms, duration from end - start
        k = await conn.fetch(
            "SELECT * FROM emg_contractions WHERE session_id = $1 AND channel_name = 'CH1' ORDER BY contraction_index",
            sep,
        )
        assert len(k) == 20 and k[0]["start_time_s"] == 1.0 and k[0]["duration_s"] == 2.5
    finally:
        await conn.close()


async def test_an_absent_value_is_null_and_flagged_never_zero(db_factory):
    dsn = await _db(db_factory, n=0)
    conn = await asyncpg.connect(dsn)
    try:
        ch = sep_channel()
        del ch["mvc_compliant_count"], ch["estimated_mvc_value"], ch["mvc75_threshold"], ch["compliance_rate"]
        mid = await _add(conn, "Ghostly_Emg_20250911_10-00-00-0003", {"CH1": ch, "CH2": sep_channel()})
        _, report = await lm.run(dsn, progress=False)
        assert report.ok, report.text()
        s = (await _stats(conn, mid))["CH1"]
        assert s["good_contractions_intensity"] is None and s["intensity_rate"] is None and s["mvc_peak_value"] is None
        missing = json.loads(s["analysis_details"])["migrated_from_legacy"]["missing"]
        assert {"good_contractions_intensity", "intensity_rate", "mvc_peak_value"} <= set(missing)
        # compliance from the two rates that exist, not from a 0
        assert abs(s["muscle_compliance_score"] - (1.0 + 0.6) / 2) < 1e-12
        view = json.loads(
            await conn.fetchval("SELECT analytics_data FROM analysis_results_view WHERE c3d_metadata_id = $1", mid)
        )
        assert "mvc_compliant_count" not in view["CH1"] and "mvc_contraction_count" not in view["CH1"]
        assert "mvc_threshold_actual_value" not in view["CH1"]
    finally:
        await conn.close()


async def test_values_outside_the_constraints_are_mapped_or_nulled_and_reported(db_factory):
    dsn = await _db(db_factory, n=0, drop_optional=True)
    conn = await asyncpg.connect(dsn)
    try:
        chans = {"CH1": aug_channel(), "CH2": aug_channel()}
        therapy = await _add(
            conn,
            "Ghostly_Emg_20250912_10-00-00-0004",
            chans,
            session_type="therapy",
            game={"level": "12", "score": "24.0"},
        )
        rehab = await _add(
            conn,
            "Ghostly_Emg_20250912_11-00-00-0005",
            chans,
            session_type="rehab",
            game={"level": "3.0", "score": 24.0},
        )
        nodate = await _add(conn, "Ghostly_Emg_20230321_17-50-17-0881", chans, session_date=None)
        stats, report = await lm.run(dsn, progress=False)
        assert report.ok, report.text()
        assert set(stats.missing_columns) >= {"c3d_metadata.size_category", "analysis_results.mvc_values"}
        ts = {r["id"]: r for r in await conn.fetch("SELECT * FROM therapy_sessions")}
        assert ts[therapy]["session_type"] == "training" and ts[rehab]["session_type"] is None
        assert ts[nodate]["session_date"] == datetime(2023, 3, 21, 17, 50, 17, tzinfo=UTC)
        pts = {r["session_id"]: r["game_points_achieved"] for r in await conn.fetch("SELECT * FROM performance_scores")}
        assert pts[therapy] == 24 and pts[rehab] == 24
        lv = {r["session_id"]: r["game_difficulty_level"] for r in await conn.fetch("SELECT * FROM session_settings")}
        assert lv[therapy] is None and lv[rehab] == 3
        src = {
            r["c3d_metadata_id"]: (json.loads(r["legacy_values"]), json.loads(r["notes"]))
            for r in await conn.fetch("SELECT * FROM legacy_c3d_sources")
        }
        assert src[rehab][0]["session_type"] == "rehab" and "stored NULL" in src[rehab][1]["session_type"]
        assert "outside 1-10" in src[therapy][1]["game_level"]
        assert "file name" in src[nodate][1]["session_date"]
        text = report.text()
        assert (
            "VALUE: session_type" in text and "VALUE: game level" in text and "optional legacy columns missing" in text
        )
        # the views give the legacy values back
        v = {r["id"]: r for r in await conn.fetch("SELECT * FROM c3d_metadata_view")}
        assert v[therapy]["session_type"] == "therapy" and v[rehab]["session_type"] == "rehab"
        assert v[nodate]["session_date"] is None
    finally:
        await conn.close()


def _cli(dsn, *args):
    env = dict(os.environ, DATABASE_URL=dsn)
    code = (
        "import sys, argparse; from app import legacy as cli; p = argparse.ArgumentParser(); "
        "s = p.add_subparsers(); cli.register(s); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "migrate-legacy", "--no-progress", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


async def test_a_row_that_cannot_be_migrated_is_quarantined_and_the_run_continues(db_factory):
    dsn = await _db(db_factory, n=60)
    conn = await asyncpg.connect(dsn)
    try:
        bad_ch = sep_channel()
        bad_ch["contractions"][3]["start_ms"] = "n/a"
        bad = await _add(conn, "Ghostly_Emg_20250913_10-00-00-0006", {"CH1": bad_ch, "CH2": sep_channel()})
        proc = _cli(dsn, "--batch-size", "16")
        assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "quarantined" in proc.stdout and "QUARANTINED:" in proc.stdout
        q = await conn.fetch("SELECT * FROM legacy_migration_errors")
        assert [r["c3d_metadata_id"] for r in q] == [bad] and "n/a" in q[0]["reason"]
        legacy = await conn.fetchval("SELECT count(DISTINCT file_hash) FROM c3d_metadata")
        assert await conn.fetchval("SELECT count(*) FROM therapy_sessions") == legacy - 1
        # re-run: still quarantined, same exit code; fixed in the legacy table: migrated
        assert _cli(dsn).returncode == 3
        bad_ch["contractions"][3]["start_ms"] = 16000.0
        await conn.execute(
            "UPDATE analysis_results SET analytics_data = $2 WHERE c3d_metadata_id = $1",
            bad,
            json.dumps({"CH1": bad_ch, "CH2": sep_channel()}),
        )
        proc = _cli(dsn)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert await conn.fetchval("SELECT count(*) FROM legacy_migration_errors") == 0
        assert await conn.fetchval("SELECT count(*) FROM therapy_sessions WHERE id = $1", bad) == 1
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "damage, problem",
    [
        (
            "UPDATE emg_statistics SET good_contractions_intensity = good_contractions_intensity - 1, "
            "intensity_rate = 0.1 WHERE id = (SELECT id FROM emg_statistics WHERE good_contractions_intensity > 0 LIMIT 1)",
            "channel counts differ",
        ),
        (
            "UPDATE emg_statistics SET duration_rate = duration_rate / 2 WHERE id = (SELECT id FROM emg_statistics WHERE duration_rate > 0 LIMIT 1)",
            "channel rates differ",
        ),
        (
            "UPDATE emg_statistics SET mvc_peak_value = mvc_peak_value * 1.01 WHERE id = (SELECT id FROM emg_statistics LIMIT 1)",
            "MVC",
        ),
        (
            "UPDATE performance_scores SET compliance_score = compliance_score / 2 WHERE id = (SELECT id FROM performance_scores LIMIT 1)",
            "session scores differ",
        ),
    ],
)
async def test_validation_compares_the_clinical_numbers(db_factory, damage, problem):
    dsn = await _db(db_factory, n=40)
    _, report = await lm.run(dsn, progress=False)
    assert report.ok, report.text()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(damage)
    finally:
        await conn.close()
    report = await lm.validate(dsn)
    assert not report.ok and any(problem in p for p in report.problems), report.text()


async def test_delta_run_picks_up_edited_and_reanalysed_legacy_rows(db_factory):
    dsn = await _db(db_factory, n=40)
    _, report = await lm.run(dsn, progress=False)
    assert report.ok, report.text()
    conn = await asyncpg.connect(dsn)
    try:
        edited, reanalysed = [
            r[0]
            for r in await conn.fetch(
                "SELECT ts.id FROM therapy_sessions ts WHERE processing_status = 'completed' ORDER BY id LIMIT 2"
            )
        ]
        # the old application keeps running: an edit (its trigger bumps updated_at) and a re-analysis
        await conn.execute(
            "UPDATE c3d_metadata SET session_type = 'baseline', session_notes = 'edited' WHERE id = $1", edited
        )
        fhash = await conn.fetchval("SELECT file_hash FROM c3d_metadata WHERE id = $1", reanalysed)
        await conn.execute(
            "INSERT INTO analysis_results (id, c3d_metadata_id, file_hash, processing_version, analytics_data, created_at, expires_at) "
            "VALUES ($1, $2, $3, '2.0.0-legacy', $4, now(), now() + interval '30 days')",
            uuid.uuid4(),
            reanalysed,
            fhash,
            json.dumps({"CH1": sep_channel(30, 27, 21), "CH2": sep_channel(30, 24, 20)}),
        )
        report = await lm.validate(dsn)
        assert not report.ok and any("changed since they were migrated" in p for p in report.problems)
        stats, report = await lm.run(dsn, progress=False)
        assert report.ok, report.text()
        assert stats.remigrated == 2
        assert await conn.fetchval("SELECT session_type FROM therapy_sessions WHERE id = $1", edited) == "baseline"
        assert await conn.fetchval("SELECT session_notes FROM c3d_metadata_view WHERE id = $1", edited) == "edited"
        s = await _stats(conn, reanalysed)
        assert s["CH1"]["total_contractions"] == 30 and s["CH1"]["good_contractions_intensity"] == 27
        view = json.loads(
            await conn.fetchval(
                "SELECT analytics_data FROM analysis_results_view WHERE c3d_metadata_id = $1", reanalysed
            )
        )
        assert view["CH1"]["mvc_compliant_count"] == 27
        stats, report = await lm.run(dsn, progress=False)  # nothing changed since: nothing to do
        assert stats.remigrated == 0 and stats.sessions == 0 and report.ok
    finally:
        await conn.close()


async def test_after_008_a_rerun_and_validate_only_say_archived(db_factory):
    dsn = await _db(db_factory, n=20)
    _, report = await lm.run(dsn, progress=False)
    assert report.ok
    await migrate(dsn, to=8)
    for args in ((), ("--validate-only",)):
        proc = _cli(dsn, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "archived" in proc.stdout and "Traceback" not in proc.stderr
    assert await migrate(dsn) == []  # and `ghostly migrate` has nothing to do


def _typed(a, b, path=""):
    """Exact JSON equality including number types (int vs float); floats to 1e-9 relative."""
    if type(a) is not type(b):
        return [f"{path}: {a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"]
    if isinstance(a, dict):
        return [f"{path}.{k}: key only in {'legacy' if k in a else 'view'}" for k in set(a) ^ set(b)] + [
            d for k in set(a) & set(b) for d in _typed(a[k], b[k], f"{path}.{k}")
        ]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _typed(x, y, f"{path}[{i}]")]
    if isinstance(a, float):
        return [] if M.legacy_float_equal(a, b) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


async def test_compatibility_view_invents_nothing_and_keeps_number_types(db_factory):
    dsn = await _db(db_factory, n=120)
    conn = await asyncpg.connect(dsn)
    try:
        sep = sep_channel()
        sep["contraction_count"] = 20.0  # a count written as a float
        mid = await _add(conn, "Ghostly_Emg_20250914_10-00-00-0007", {"CH1": sep, "CH2": sep_channel()})
        _, report = await lm.run(dsn, progress=False)
        assert report.ok, report.text()
        rows = await conn.fetch("""
            SELECT r.id, r.analytics_data AS legacy, v.analytics_data AS view
            FROM analysis_results r JOIN analysis_results_view v ON v.id = r.id""")
        assert len(rows) > 50
        diffs = [f"{r['id']}{d}" for r in rows for d in _typed(json.loads(r["legacy"]), json.loads(r["view"]))]
        assert not diffs, diffs[:20]
        view = json.loads(
            await conn.fetchval("SELECT analytics_data FROM analysis_results_view WHERE c3d_metadata_id = $1", mid)
        )
        assert isinstance(view["CH1"]["contraction_count"], float) and "mvc_contraction_count" not in view["CH1"]
        assert "start_ms" in view["CH1"]["contractions"][0] and "start_time_ms" not in view["CH1"]["contractions"][0]
        assert "avg_duration_ms" not in view["CH1"]
    finally:
        await conn.close()


async def test_a_reanalysis_that_cannot_be_migrated_is_quarantined_not_a_loss(db_factory):
    dsn = await _db(db_factory, n=30)
    _, report = await lm.run(dsn, progress=False)
    assert report.ok, report.text()
    conn = await asyncpg.connect(dsn)
    try:
        sid = await conn.fetchval(
            "SELECT id FROM therapy_sessions WHERE processing_status = 'completed' ORDER BY id LIMIT 1"
        )
        before = await conn.fetchval("SELECT count(*) FROM emg_statistics WHERE session_id = $1", sid)
        fhash = await conn.fetchval("SELECT file_hash FROM c3d_metadata WHERE id = $1", sid)
        bad = sep_channel()
        bad["contractions"][0]["end_ms"] = {"oops": 1}
        await conn.execute(
            "INSERT INTO analysis_results (id, c3d_metadata_id, file_hash, processing_version, analytics_data, created_at, expires_at) "
            "VALUES ($1, $2, $3, '2.0.0-legacy', $4, now(), now() + interval '30 days')",
            uuid.uuid4(),
            sid,
            fhash,
            json.dumps({"CH1": bad}),
        )
        stats, report = await lm.run(dsn, progress=False)
        assert report.ok and report.quarantined, report.text()
        assert stats.quarantined == 1
        # the failed re-migration was rolled back: the session keeps its previous statistics
        assert await conn.fetchval("SELECT count(*) FROM emg_statistics WHERE session_id = $1", sid) == before
    finally:
        await conn.close()


async def _contraction_fks(conn) -> dict[str, bool]:
    rows = await conn.fetch(
        "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'emg_contractions'::regclass AND contype = 'f'"
    )
    return {r["conname"]: r["convalidated"] for r in rows}


async def test_bulk_run_drops_and_restores_the_contraction_foreign_keys(db_factory, monkeypatch):
    """A large run loads emg_contractions without its two foreign keys and adds them back
    validated; same rows as a run with them (the bench's speed comes from this)."""
    dsn = await _db(db_factory, n=30)
    monkeypatch.setattr(lm, "BULK_MIN_ROWS", 1)
    stats, report = await lm.run(dsn, progress=False)
    assert stats.bulk and report.ok, report.text()
    conn = await asyncpg.connect(dsn)
    try:
        assert await _contraction_fks(conn) == {name: True for name in lm.CONTRACTION_FKS}
        assert await conn.fetchval("SELECT count(*) FROM emg_contractions") == stats.contractions > 0
    finally:
        await conn.close()


async def test_foreign_keys_a_dead_bulk_run_left_dropped_are_restored_and_orphans_removed(db_factory):
    """The run died between dropping and re-adding the keys, and a session was deleted
    meanwhile (its contractions not cascaded): validation restores the keys first, removing
    the orphans as ON DELETE CASCADE would have; nothing else is lost."""
    dsn = await _db(db_factory, n=12)
    stats, _ = await lm.run(dsn, progress=False, validate_after=False)
    conn = await asyncpg.connect(dsn)
    try:
        await lm.drop_contraction_fks(conn)
        gone = await conn.fetchval("SELECT session_id FROM emg_contractions LIMIT 1")
        n_gone = await conn.fetchval("SELECT count(*) FROM emg_contractions WHERE session_id = $1", gone)
        await conn.execute("DELETE FROM therapy_sessions WHERE id = $1", gone)  # no cascade now
        report = await lm.validate(dsn)
        assert any("restored" in n for n in report.notes), report.text()
        assert await _contraction_fks(conn) == {name: True for name in lm.CONTRACTION_FKS}
        assert await conn.fetchval("SELECT count(*) FROM emg_contractions") == stats.contractions - n_gone
    finally:
        await conn.close()
