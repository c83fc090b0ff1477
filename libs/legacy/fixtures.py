"""Deterministic legacy data generator: therapists, patients, c3d_metadata, analysis_results.

Every legacy quirk the migration must survive is present (rates are per session):
  * the same file_hash under two paths (~3 %: a copy uploaded into another folder);
  * several analysis_results rows per hash (~25 %): older versions, expired rows, an empty
    failed attempt next to a good one; ~5 % of files have only expired analyses;
  * patient_id codes that are not in `patients` (~4 %) or NULL (~1 %);
  * therapist_id as free text: an existing therapist's UUID, '---', '', a UUID of nobody, NULL;
  * failed processing: analytics_data = {} and status 'failed' (~5 %); never analysed
    ('pending', no analysis row, technical columns NULL) (~1 %);
  * mpf / mdf / fatigue index null (~10 % of channels), one-channel sessions (~3 %).
Written with COPY (asyncpg copy_records_to_table). Same seed -> same rows.
"""
from __future__ import annotations

import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg

C3D_COLUMNS = (
    "id", "file_path", "file_hash", "file_size_bytes", "patient_id", "therapist_id", "session_id",
    "session_date", "session_type", "session_duration", "session_notes", "game_metadata",
    "channel_names", "channel_count", "sampling_rate", "duration_seconds", "frame_count",
    "resolved_patient_id", "resolved_therapist_id", "resolved_session_date", "size_category",
    "content_type", "upload_date", "bucket_name", "object_metadata", "processing_status",
    "processing_version", "error_message", "created_at", "updated_at", "processed_at")
AR_COLUMNS = (
    "id", "c3d_metadata_id", "file_hash", "processing_version", "processing_params",
    "analytics_data", "emg_signals", "contractions_data", "processing_time_ms",
    "good_contractions_count", "total_contractions_count", "cache_hits", "last_accessed_at",
    "created_at", "expires_at", "mvc_values", "compliance_scores", "temporal_stats")

BASE = datetime(2024, 1, 8, 9, 0, 0, tzinfo=timezone.utc)


@dataclass
class Generated:
    therapists: int
    patients: int
    c3d_rows: int
    analysis_rows: int
    hashes: int


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _temporal(rng: random.Random, mean: float) -> dict:
    std = mean * rng.uniform(0.05, 0.3)
    return {"mean_value": mean, "std_value": std, "min_value": mean - 2 * std, "max_value": mean + 2 * std,
            "valid_windows": rng.randint(5, 60), "coefficient_of_variation": std / mean}


def channel_json(rng: random.Random, duration_s: float) -> dict:
    rate = 990.0
    n = rng.choice([0, 3, 6, 8, 10, 11, 12, 12, 12, 13, 14, 15])
    mvc = rng.uniform(0.0002, 0.002)
    thr = 0.75 * mvc
    dthr = rng.choice([2000.0, 2000.0, 1500.0, 3000.0])
    contractions = []
    t = rng.uniform(0.5, 3.0)
    for _ in range(n):
        dur = rng.randint(400, 4500) / rate * 1000.0   # sample-aligned ms
        start = round(t * rate) / rate * 1000.0
        end = start + dur
        peak = rng.uniform(0.4, 1.3) * mvc
        meets_mvc = peak >= thr
        meets_dur = dur >= dthr
        contractions.append({"start_time_ms": start, "end_time_ms": end, "duration_ms": dur,
                             "mean_amplitude": peak * rng.uniform(0.4, 0.8), "max_amplitude": peak,
                             "is_good": meets_mvc and meets_dur, "meets_mvc": meets_mvc,
                             "meets_duration": meets_dur})
        t = end / 1000.0 + rng.uniform(2.0, 6.0)
    durs = [c["duration_ms"] for c in contractions]
    nulls = rng.random() < 0.1
    rms = rng.uniform(0.00005, 0.0005)
    ch = {
        "contraction_count": n,
        "good_contraction_count": sum(c["is_good"] for c in contractions),
        "mvc_contraction_count": sum(c["meets_mvc"] for c in contractions),
        "duration_contraction_count": sum(c["meets_duration"] for c in contractions),
        "expected_contractions": 12,
        "avg_duration_ms": sum(durs) / n if n else 0.0,
        "min_duration_ms": min(durs) if n else 0.0,
        "max_duration_ms": max(durs) if n else 0.0,
        "total_time_under_tension_ms": sum(durs),
        "avg_amplitude": sum(c["mean_amplitude"] for c in contractions) / n if n else 0.0,
        "max_amplitude": max((c["max_amplitude"] for c in contractions), default=0.0),
        "rms": rms, "mav": rms * 0.8,
        "mpf": None if nulls else rng.uniform(60, 140),
        "mdf": None if nulls else rng.uniform(50, 120),
        "fatigue_index_fi_nsm5": None if nulls else rng.uniform(-0.5, 0.5),
        "mvc_threshold_actual_value": thr,
        "duration_threshold_actual_value": dthr,
        "mvc_estimation_method": rng.choice(["backend_95percentile"] * 9 + ["user_defined"]),
        "contractions": contractions,
        "rms_temporal_stats": _temporal(rng, rms),
        "mav_temporal_stats": _temporal(rng, rms * 0.8),
        "mpf_temporal_stats": _temporal(rng, 100.0),
        "mdf_temporal_stats": _temporal(rng, 85.0),
        "fatigue_index_temporal_stats": _temporal(rng, 0.1),
        "signal_processing": {"source": "c3d_analog", "processing_steps": ["20Hz highpass", "rectify", "10Hz lowpass", "RMS 50ms"],
                              "parameters_used": {"sampling_rate": rate, "rms_window_ms": 50},
                              "quality_metrics": {"snr_db": rng.uniform(10, 30)}},
    }
    if rng.random() < 0.05:
        ch["errors"] = ["mpf: signal too short for Welch window"]
    return ch


def generate_rows(n_sessions: int, seed: int = 8, *, n_therapists: int = 5, n_patients: int = 40):
    """(therapists, patients, c3d rows, analysis rows) as lists of tuples in column order."""
    rng = random.Random(seed)
    therapists = [(_uuid(rng), _uuid(rng), f"Thera{i}", f"Pist{i}") for i in range(n_therapists)]
    patients = [(_uuid(rng), therapists[i % n_therapists][0], f"P{i + 1:03d}", f"First{i}", f"Last{i}",
                 (BASE - timedelta(days=365 * 60 + 13 * i)).date()) for i in range(n_patients)]
    c3d, ar = [], []
    for i in range(n_sessions):
        sid = _uuid(rng)
        created = BASE + timedelta(minutes=7 * i, seconds=rng.randint(0, 59), microseconds=rng.randint(0, 999999))
        label = "Ghostly_Emg_" + (created + timedelta(hours=1)).strftime("%Y%m%d_%H-%M-%S-") + f"{rng.randint(0, 9999):04d}"
        r = rng.random()
        if r < 0.04:
            patient = rng.choice(["P999", "P0X1", "p005", "UNKNOWN"])
        elif r < 0.05:
            patient = None
        else:
            patient = rng.choice(patients)[2]
        t = rng.random()
        therapist = (str(rng.choice(therapists)[0]) if t < 0.5 else "---" if t < 0.7 else "" if t < 0.8
                     else str(_uuid(rng)) if t < 0.9 else None)
        folder = patient or "unassigned"
        path = f"{folder}/{label}.c3d"
        fhash = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
        size = rng.randint(200_000, 3_000_000)
        duration = rng.uniform(120.0, 900.0)
        fate = rng.random()
        pending = fate < 0.01
        failed = 0.01 <= fate < 0.06
        one_channel = rng.random() < 0.03
        channels = ["CH1"] if one_channel else ["CH1", "CH2"]
        tech = not pending and rng.random() > 0.2 * failed
        game = {"game_name": "Ghostly", "level": str(rng.randint(1, 10)), "duration": f"{duration:.0f}",
                "therapist_id": "---", "group_id": str(rng.randint(1, 4)), "time": created.strftime("%H:%M:%S"),
                "player_name": folder, "score": str(rng.randint(0, 3000)) if rng.random() > 0.1 else ""}
        processed = None if pending else created + timedelta(seconds=rng.randint(2, 60))
        status = "pending" if pending else "failed" if failed else "completed"
        version = None if pending else rng.choice(["1.0.0", "1.1.0", "1.2.0"])
        session_date = created.replace(tzinfo=None) + timedelta(hours=1)
        row = [sid, path, fhash, size, patient, therapist, label, session_date,
               rng.choice(["training", "training", "baseline", "assessment", None]),
               duration if not pending else None, rng.choice([None, None, "good session", "patient tired"]),
               json.dumps(game), json.dumps(channels) if tech else None, len(channels) if tech else None,
               990.0 if tech else None, duration if tech else None, int(duration * 990) if tech else None,
               patient, therapist, session_date, "small" if size < 800_000 else "medium" if size < 2_000_000 else "large",
               "application/octet-stream", created, "c3d-files",
               json.dumps({"size": size, "mimetype": "application/octet-stream"}), status, version,
               "C3D parse error: truncated analog block" if failed else None,
               created, processed or created, processed]
        c3d.append(tuple(row))
        if rng.random() < 0.03:  # same content uploaded under another path (another folder)
            dup = list(row)
            dup[0] = _uuid(rng)
            other = rng.choice([p[2] for p in patients if p[2] != folder])
            dup[1] = f"{other}/{label}.c3d"
            dup[28] = created + timedelta(days=rng.randint(1, 30))
            dup[29] = dup[28]
            dup[22] = dup[28]
            c3d.append(tuple(dup))
        if pending:
            continue
        # analysis rows: the newest is the one to migrate, plus older / expired / empty ones
        good = {ch: channel_json(rng, duration) for ch in channels}
        created_ar = processed
        all_expired = rng.random() < 0.05
        expires = created_ar + timedelta(days=30) if all_expired else BASE + timedelta(days=3650)
        mvc_values = ({ch: good[ch]["mvc_threshold_actual_value"] / 0.75 for ch in channels}
                      if rng.random() < 0.05 else None)
        main = [_uuid(rng), sid, fhash, version, "{}", "{}" if failed else json.dumps(good), None, None,
                rng.randint(300, 4000), None, None, rng.randint(0, 20), created_ar, created_ar, expires,
                json.dumps(mvc_values) if mvc_values else None, None, None]
        ar.append(tuple(main))
        extra = rng.random()
        if extra < 0.25:
            older = list(main)
            older[0] = _uuid(rng)
            older[3] = "0.9.0"
            older[5] = json.dumps({ch: channel_json(rng, duration) for ch in channels})
            older[13] = created_ar - timedelta(hours=rng.randint(1, 48))
            older[12] = older[13]
            older[14] = older[13] + timedelta(days=30)           # expired
            older[15] = None
            ar.append(tuple(older))
        if extra < 0.08:                                         # an empty failed attempt, newest
            empty = list(main)
            empty[0] = _uuid(rng)
            empty[3] = "1.3.0-rc1"
            empty[5] = "{}"
            empty[13] = created_ar + timedelta(hours=1)
            empty[12] = empty[13]
            empty[15] = None
            ar.append(tuple(empty))
    return therapists, patients, c3d, ar


async def write(conn: asyncpg.Connection, n_sessions: int, seed: int = 8, **kw) -> Generated:
    therapists, patients, c3d, ar = generate_rows(n_sessions, seed, **kw)
    await conn.copy_records_to_table("therapists", records=therapists,
                                     columns=["id", "user_id", "first_name", "last_name"])
    await conn.copy_records_to_table("patients", records=patients,
                                     columns=["id", "therapist_id", "patient_code", "first_name", "last_name", "date_of_birth"])
    await conn.execute("SELECT setval('patients_patient_code_seq', $1)", len(patients))
    await conn.copy_records_to_table("c3d_metadata", records=c3d, columns=list(C3D_COLUMNS))
    await conn.copy_records_to_table("analysis_results", records=ar, columns=list(AR_COLUMNS))
    return Generated(len(therapists), len(patients), len(c3d), len(ar), len({r[2] for r in c3d}))
