"""Fill a migrated database with a realistic clinical-trial cohort, fast (COPY).

Default: 1,000 patients x 70 sessions = 70,000 sessions, 140,000 channel rows, plus
performance scores, session settings and BFR rows (contractions with --contractions).

Realism:
* 14-day protocol, 5 therapy days a week (days 1-5 and 8-12); most patients do all 10 days,
  some skip a few; the 70 game sessions of a patient are spread over their therapy days;
* P_overall components improve over the protocol with per-patient ability and noise;
  P_overall = sum of effective weights x components (README rule);
* ~15 % of sessions miss the RPE (effort excluded, weights renormalised), ~2 % failed
  (no statistics), ~0.5 % still pending, ~40 % carry BFR data.

Run: .venv/bin/python bench/gen_cohort.py [--patients N] [--sessions N] [--contractions]
     (DATABASE_URL = target database, migrated first; --sessions is per patient)

Scale (2 CPUs, embedded PostgreSQL): 70k sessions load in ~15 s, 700k (--patients 10000) in
~2 min, mostly COPY with its per-row foreign-key checks and the statement-level triggers of the
cohort aggregates (migrations 014, 021: one refresh per COPY, not per row).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import numpy as np

from libs.emg.settings import BFR_SAFE_RANGE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REQUESTED = {"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15}
NO_EFFORT = {
    "compliance": 0.5,
    "symmetry": 0.3125,
    "effort": 0,
    "game": 0.1875,
    "requested": REQUESTED,
    "excluded": {"effort": "rpe missing"},
}
THERAPY_DAYS = np.array([1, 2, 3, 4, 5, 8, 9, 10, 11, 12])
EPOCH = dt.datetime(2023, 1, 2, tzinfo=dt.UTC)


def _uuids(n: int) -> list[uuid.UUID]:
    raw = np.random.bytes(16 * n)
    return [uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * n, 16)]


async def generate(
    dsn: str,
    *,
    patients: int = 1000,
    sessions_per_patient: int = 70,
    therapists: int = 50,
    contractions: bool = False,
    seed: int = 7,
    prefix: str = "B",
    quiet: bool = False,
) -> dict:
    """Insert the cohort; returns counts and timings. Patient codes are f"{prefix}{n:05d}"."""
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    started = time.perf_counter()
    n_p, per = patients, sessions_per_patient
    n = n_p * per

    therapist_ids = _uuids(therapists)
    codes = [f"{prefix}{i + 1:05d}" for i in range(n_p)]
    owner = rng.integers(0, therapists, n_p)

    # --- sessions: therapy days per patient, game sessions spread over them -----------------
    skip = rng.choice([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], n_p)  # therapy days skipped
    p_idx = np.repeat(np.arange(n_p), per)
    k = np.tile(np.arange(per), n_p)  # session # within patient
    days_done = 10 - skip[p_idx]
    slot = (k * days_done) // per  # 0..days_done-1
    # Which therapy days a patient skipped: the last `skip` of a random rotation, kept sorted.
    rot = rng.integers(0, 10, n_p)
    chosen = np.sort((np.arange(10)[None, :] + rot[:, None]) % 10, axis=1)
    day_idx = np.empty(n, dtype=np.int64)
    for s in range(5):  # vectorised per skip count
        m = skip[p_idx] == s
        if m.any():
            kept = np.sort(chosen[:, : 10 - s], axis=1)
            day_idx[m] = kept[p_idx[m], slot[m]]
    protocol_day = THERAPY_DAYS[day_idx]
    within = k - (slot * per + days_done - 1) // days_done  # game # within the day
    within = np.maximum(within, 0)
    start_day = rng.integers(0, 700, n_p)
    seconds = (
        (start_day[p_idx] + protocol_day - 1) * 86400 + 9 * 3600 + within * 900 + rng.integers(0, 600, n)
    ).astype(np.int64)
    dates = [EPOCH + dt.timedelta(seconds=int(x)) for x in seconds]

    status = np.where(rng.random(n) < 0.02, "failed", "completed").astype(object)
    status[rng.random(n) < 0.005] = "pending"
    first = k == 0
    last = k == per - 1
    stype = np.where(first, "baseline", np.where(last, "assessment", "training"))
    session_ids = _uuids(n)
    t_of_session = [therapist_ids[i] for i in owner[p_idx]]
    codes_of_session = [codes[i] for i in p_idx]
    hashes = [u.hex + u.hex for u in _uuids(n)]
    size = rng.integers(1_000_000, 3_000_000, n)
    samples = rng.integers(100_000, 250_000, n)
    completed = status == "completed"
    failed = status == "failed"
    channel_names = json.dumps(["CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated"])
    session_rows = list(
        zip(
            session_ids,
            [
                f"{c}/Ghostly_Emg_{d:%Y%m%d_%H-%M-%S}-{i % 10000:04d}.c3d"
                for i, (c, d) in enumerate(zip(codes_of_session, dates))
            ],
            hashes,
            size.tolist(),
            codes_of_session,
            t_of_session,
            [f"Ghostly_Emg_{d:%Y%m%d_%H-%M-%S}-{i % 10000:04d}" for i, d in enumerate(dates)],
            dates,
            stype.tolist(),
            protocol_day.tolist(),
            [990.0] * n,
            (samples / 990.0).tolist(),
            samples.tolist(),
            [channel_names] * n,
            [4] * n,
            ["1.0.0"] * n,
            status.tolist(),
            rng.integers(20, 80, n).tolist(),
            dates,
            [("C3D analog data truncated" if f else None) for f in failed],
        )
    )

    # --- scores ---------------------------------------------------------------------------
    ability = rng.normal(55, 10, n_p)[p_idx]
    gain = rng.normal(1.6, 0.6, n_p)[p_idx]
    level = ability + gain * (protocol_day - 1)
    compliance = np.clip(level + 8 + rng.normal(0, 6, n), 0, 100)
    symmetry = np.clip(rng.normal(84, 8, n) + 0.3 * (protocol_day - 1), 0, 100)
    rpe = rng.integers(2, 9, n)
    rpe_missing = rng.random(n) < 0.15
    effort = np.select([(rpe >= 4) & (rpe <= 6), (rpe == 3) | (rpe == 7)], [100.0, 60.0], 20.0)
    gmax = np.full(n, 1000)
    gpts = np.clip((level / 100 + rng.normal(0, 0.08, n)) * gmax, 0, gmax).astype(np.int64)
    game = gpts / gmax * 100
    has_bfr = rng.random(n) < 0.4
    pressure = np.round(rng.normal(50, 3.5, n), 1)
    low, high = BFR_SAFE_RANGE
    gate = np.where(has_bfr & ((pressure < low) | (pressure > high)), 0.0, 1.0)
    compliance = compliance * gate
    overall = np.where(
        rpe_missing,
        0.5 * compliance + 0.3125 * symmetry + 0.1875 * game,
        0.4 * compliance + 0.25 * symmetry + 0.2 * effort + 0.15 * game,
    )
    overall = np.clip(overall, 0, 100)
    effort = np.where(rpe_missing, 0.0, effort)
    req, excl = json.dumps(REQUESTED), json.dumps(NO_EFFORT)
    c_idx = np.flatnonzero(completed)
    lcr = np.clip(rng.normal(0.92, 0.08, n), 0, 1)
    rcr = np.clip(rng.normal(0.9, 0.08, n), 0, 1)
    score_rows = list(
        zip(
            [session_ids[i] for i in c_idx],
            overall[c_idx].tolist(),
            compliance[c_idx].tolist(),
            symmetry[c_idx].tolist(),
            effort[c_idx].tolist(),
            game[c_idx].tolist(),
            [excl if m else req for m in rpe_missing[c_idx]],
            [float(p) if b else None for p, b in zip(pressure[c_idx], has_bfr[c_idx])],
            gate[c_idx].tolist(),
            [None if m else int(r) for m, r in zip(rpe_missing[c_idx], rpe[c_idx])],
            gpts[c_idx].tolist(),
            gmax[c_idx].tolist(),
            (samples[c_idx] / 990 / 60).tolist(),
            lcr[c_idx].tolist(),
            rcr[c_idx].tolist(),
        )
    )

    settings_rows = [(session_ids[i], "backend_calculated", req) for i in c_idx]
    b_idx = c_idx[has_bfr[c_idx]]
    bfr_rows = list(
        zip(
            [session_ids[i] for i in b_idx],
            [50.0] * len(b_idx),
            pressure[b_idx].tolist(),
            (gate[b_idx] == 1.0).tolist(),
            rng.integers(0, 3, len(b_idx)).tolist(),
            ["M"] * len(b_idx),
            ["thigh"] * len(b_idx),
            ["Delfi PTS ii"] * len(b_idx),
        )
    )

    # --- per-channel statistics (2 muscles) ------------------------------------------------
    m = len(c_idx)
    stat_rows = []
    contraction_rows = []
    stat_ids = _uuids(2 * m) if contractions else None
    for ch, side in ((0, "left"), (1, "right")):
        total = rng.integers(8, 16, m)
        good_i = np.minimum(total, rng.binomial(total, np.clip(level[c_idx] / 100 + 0.15, 0, 1)))
        good_d = np.minimum(total, rng.binomial(total, 0.8))
        good_b = np.minimum(good_i, good_d)
        comp = np.minimum(total / 12, 1.0)
        ir, dr = good_i / total, good_d / total
        msc = (comp + ir + dr) / 3
        mvc = rng.lognormal(-7, 0.3, m)
        ids = stat_ids[ch * m : (ch + 1) * m] if stat_ids is not None else [None] * m
        stat_rows += list(
            zip(
                ids,
                [session_ids[i] for i in c_idx],
                [f"CH{ch + 1}"] * m,
                [side] * m,
                mvc.tolist(),
                (mvc * 0.7).tolist(),
                [0.9] * m,
                ["backend_95percentile"] * m,
                total.tolist(),
                good_i.tolist(),
                good_d.tolist(),
                good_b.tolist(),
                comp.tolist(),
                ir.tolist(),
                dr.tolist(),
                msc.tolist(),
                rng.uniform(0.7, 1.0, m).tolist(),
                [0.9] * m,
                ["1.0.0"] * m,
            )
        )
        if contractions:
            for j in range(m):
                sid, stid = session_ids[c_idx[j]], ids[j]
                for c in range(int(total[j])):
                    ok_i, ok_d = c < good_i[j], c % 5 != 4
                    contraction_rows.append(
                        (
                            stid,
                            sid,
                            f"CH{ch + 1}",
                            c,
                            5.0 * c,
                            5.0 * c + 2.4,
                            2.4,
                            float(mvc[j]),
                            float(mvc[j]) * 0.6,
                            bool(ok_i),
                            bool(ok_d),
                            bool(ok_i and ok_d),
                        )
                    )
    prepared = time.perf_counter()

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "therapists",
                records=[(t, uuid.uuid4(), "Ther", f"Apist {i}") for i, t in enumerate(therapist_ids)],
                columns=["id", "user_id", "first_name", "last_name"],
            )
            await conn.copy_records_to_table(
                "patients",
                records=[
                    (therapist_ids[owner[i]], codes[i], "Pat", f"Ient {i}", dt.date(1950, 1, 1)) for i in range(n_p)
                ],
                columns=["therapist_id", "patient_code", "first_name", "last_name", "date_of_birth"],
            )
            await conn.copy_records_to_table(
                "therapy_sessions",
                records=session_rows,
                columns=[
                    "id",
                    "file_path",
                    "file_hash",
                    "file_size_bytes",
                    "patient_id",
                    "therapist_id",
                    "session_id",
                    "session_date",
                    "session_type",
                    "protocol_day",
                    "original_sampling_rate",
                    "original_duration_seconds",
                    "original_sample_count",
                    "channel_names",
                    "channel_count",
                    "processing_version",
                    "processing_status",
                    "processing_time_ms",
                    "processed_at",
                    "error_message",
                ],
            )
            stat_cols = [
                "session_id",
                "channel_name",
                "side",
                "mvc_peak_value",
                "mvc_rms_value",
                "mvc_confidence_score",
                "mvc_calculation_method",
                "total_contractions",
                "good_contractions_intensity",
                "good_contractions_duration",
                "good_contractions_both",
                "completion_rate",
                "intensity_rate",
                "duration_rate",
                "muscle_compliance_score",
                "signal_quality_score",
                "processing_confidence",
                "processing_version",
            ]
            if contractions:
                await conn.copy_records_to_table("emg_statistics", records=stat_rows, columns=["id", *stat_cols])
            else:
                await conn.copy_records_to_table(
                    "emg_statistics", records=[r[1:] for r in stat_rows], columns=stat_cols
                )
            await conn.copy_records_to_table(
                "performance_scores",
                records=score_rows,
                columns=[
                    "session_id",
                    "overall_performance_score",
                    "compliance_score",
                    "symmetry_score",
                    "effort_score",
                    "game_score",
                    "performance_weights",
                    "bfr_pressure_aop",
                    "bfr_compliance_gate",
                    "rpe_post_session",
                    "game_points_achieved",
                    "game_points_maximum",
                    "session_duration_minutes",
                    "left_muscle_completion_rate",
                    "right_muscle_completion_rate",
                ],
            )
            await conn.copy_records_to_table(
                "session_settings",
                records=settings_rows,
                columns=["session_id", "mvc_calculation_method", "performance_weights"],
            )
            await conn.copy_records_to_table(
                "bfr_monitoring",
                records=bfr_rows,
                columns=[
                    "session_id",
                    "target_pressure_aop",
                    "actual_pressure_aop",
                    "safety_gate_status",
                    "safety_violations_count",
                    "cuff_size",
                    "cuff_position",
                    "monitoring_device",
                ],
            )
            if contraction_rows:
                await conn.copy_records_to_table(
                    "emg_contractions",
                    records=contraction_rows,
                    columns=[
                        "statistics_id",
                        "session_id",
                        "channel_name",
                        "contraction_index",
                        "start_time_s",
                        "end_time_s",
                        "duration_s",
                        "peak_amplitude",
                        "mean_amplitude",
                        "meets_intensity",
                        "meets_duration",
                        "is_good",
                    ],
                )
        copied = time.perf_counter()
        # Fresh statistics and visibility map (index-only scans), as autovacuum leaves a
        # long-lived database.
        tables = [
            "therapists",
            "patients",
            "therapy_sessions",
            "emg_statistics",
            "performance_scores",
            "session_settings",
            "bfr_monitoring",
            "emg_contractions",
        ]
        for _attempt in range(4):
            for table in tables:
                await conn.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
            # Right after the load a VACUUM sometimes leaves pages not all-visible; retry those.
            tables = [
                r["relname"]
                for r in await conn.fetch(
                    "SELECT relname FROM pg_class WHERE relname = ANY($1::text[]) AND relpages > 0 "
                    "AND relallvisible < relpages",
                    tables,
                )
            ]
            if not tables:
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    done = time.perf_counter()
    result = {
        "therapists": therapists,
        "patients": n_p,
        "sessions": n,
        "completed": int(completed.sum()),
        "channel_rows": len(stat_rows),
        "score_rows": len(score_rows),
        "bfr_rows": len(bfr_rows),
        "contraction_rows": len(contraction_rows),
        "prepare_s": prepared - started,
        "copy_s": copied - prepared,
        "vacuum_s": done - copied,
        "total_s": done - started,
        "session_ids": session_ids,
        "completed_ids": [session_ids[i] for i in c_idx],
        "patient_codes": codes,
        "therapist_ids": therapist_ids,
    }
    if not quiet:
        print(summary(result))
    return result


def summary(r: dict) -> str:
    return (
        f"cohort: {r['patients']} patients, {r['sessions']} sessions ({r['completed']} completed), "
        f"{r['channel_rows']} channel rows, {r['score_rows']} scores, {r['bfr_rows']} BFR rows, "
        f"{r['contraction_rows']} contractions | generate {r['prepare_s']:.2f}s + COPY {r['copy_s']:.2f}s "
        f"+ VACUUM ANALYZE {r['vacuum_s']:.2f}s = {r['total_s']:.2f}s"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=70, help="sessions per patient")
    ap.add_argument("--therapists", type=int, default=50)
    ap.add_argument("--contractions", action="store_true", help="also fill emg_contractions")
    ap.add_argument("--prefix", default="B", help="patient code prefix (codes are PREFIX00001...)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    args = ap.parse_args()
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        print("set DATABASE_URL to the target database", file=sys.stderr)
        return 2
    if args.migrate:
        from libs.db.migrate import migrate

        asyncio.run(migrate(dsn))
    asyncio.run(
        generate(
            dsn,
            patients=args.patients,
            sessions_per_patient=args.sessions,
            therapists=args.therapists,
            contractions=args.contractions,
            seed=args.seed,
            prefix=args.prefix,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
