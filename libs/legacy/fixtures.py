"""Deterministic legacy data generator: therapists, patients, c3d_metadata, analysis_results.

Every legacy quirk the migration must survive is present (rates are per session):
  * the same file_hash under two paths (~3 %: a copy uploaded into another folder);
  * several analysis_results rows per hash (~25 %): older versions, expired rows, an empty
    failed attempt next to a good one; ~5 % of files have only expired analyses;
  * patient_id codes that are not in `patients` (~4 %) or NULL (~1 %);
  * therapist_id as free text: an existing therapist's UUID, '---', '', a UUID of nobody, NULL;
  * failed processing: analytics_data = {} and status 'failed' (~5 %); never analysed
    ('pending', no analysis row, technical columns NULL) (~1 %);
  * mpf / mdf / fatigue index null (~10 % of channels), one-channel sessions (~3 %);
issue 17 (the shape of a real deployment):
  * both generations of analytics_data key names (~45 % Sep 2025: mvc_compliant_count,
    duration_compliant_count, mvc75_threshold, estimated_mvc_value,
    mvc_threshold_percentage_used, compliance_rate, signal_processing_steps/_parameters,
    timing_signal, processed_signal_stats, raw_signal_stats; half of their channels with
    contractions keyed start_ms/end_ms), counts written as floats (12.0) now and then;
  * realistic payloads: 15-40 contractions per channel (realistic=False: the old 0-15), windowed
    statistics per metric;
  * session_type 'therapy' (~5 %), 'Training', 'rehab' (outside the new CHECK);
  * game score '24.0', 24.0 (a JSON number), '', 'n/a'; game level '12' (> 10), '3.0';
  * session_date NULL (~2 %: the date is in the file name).
Written with COPY (asyncpg copy_records_to_table). Same seed -> same rows.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

C3D_COLUMNS = (
    "id",
    "file_path",
    "file_hash",
    "file_size_bytes",
    "patient_id",
    "therapist_id",
    "session_id",
    "session_date",
    "session_type",
    "session_duration",
    "session_notes",
    "game_metadata",
    "channel_names",
    "channel_count",
    "sampling_rate",
    "duration_seconds",
    "frame_count",
    "resolved_patient_id",
    "resolved_therapist_id",
    "resolved_session_date",
    "size_category",
    "content_type",
    "upload_date",
    "bucket_name",
    "object_metadata",
    "processing_status",
    "processing_version",
    "error_message",
    "created_at",
    "updated_at",
    "processed_at",
)
AR_COLUMNS = (
    "id",
    "c3d_metadata_id",
    "file_hash",
    "processing_version",
    "processing_params",
    "analytics_data",
    "emg_signals",
    "contractions_data",
    "processing_time_ms",
    "good_contractions_count",
    "total_contractions_count",
    "cache_hits",
    "last_accessed_at",
    "created_at",
    "expires_at",
    "mvc_values",
    "compliance_scores",
    "temporal_stats",
)

BASE = datetime(2024, 1, 8, 9, 0, 0, tzinfo=UTC)


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
    return {
        "mean_value": mean,
        "std_value": std,
        "min_value": mean - 2 * std,
        "max_value": mean + 2 * std,
        "valid_windows": rng.randint(5, 60),
        "coefficient_of_variation": std / mean,
    }


def channel_json(rng: random.Random, duration_s: float, *, generation: str = "2025-08", realistic: bool = True) -> dict:
    rate = 990.0
    n = (
        rng.choice([0] + [rng.randint(15, 40) for _ in range(30)])
        if realistic
        else rng.choice([0, 3, 6, 8, 10, 11, 12, 12, 12, 13, 14, 15])
    )
    mvc = rng.uniform(0.0002, 0.002)
    thr = 0.75 * mvc
    dthr = rng.choice([2000.0, 2000.0, 1500.0, 3000.0])
    contractions = []
    t = rng.uniform(0.5, 3.0)
    for _ in range(n):
        dur = rng.randint(400, 4500) / rate * 1000.0  # sample-aligned ms
        start = round(t * rate) / rate * 1000.0
        end = start + dur
        peak = rng.uniform(0.4, 1.3) * mvc
        meets_mvc = peak >= thr
        meets_dur = dur >= dthr
        contractions.append(
            {
                "start_time_ms": start,
                "end_time_ms": end,
                "duration_ms": dur,
                "mean_amplitude": peak * rng.uniform(0.4, 0.8),
                "max_amplitude": peak,
                "is_good": meets_mvc and meets_dur,
                "meets_mvc": meets_mvc,
                "meets_duration": meets_dur,
            }
        )
        t = end / 1000.0 + rng.uniform(2.0, 6.0)
    durs = [c["duration_ms"] for c in contractions]
    nulls = rng.random() < 0.1
    rms = rng.uniform(0.00005, 0.0005)
    ch: dict[str, Any] = {
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
        "rms": rms,
        "mav": rms * 0.8,
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
        "signal_processing": {
            "source": "c3d_analog",
            "processing_steps": ["20Hz highpass", "rectify", "10Hz lowpass", "RMS 50ms"],
            "parameters_used": {"sampling_rate": rate, "rms_window_ms": 50},
            "quality_metrics": {"snr_db": rng.uniform(10, 30)},
        },
    }
    if rng.random() < 0.05:
        ch["errors"] = ["mpf: signal too short for Welch window"]
    if generation == "2025-09":
        ch = _september(rng, ch, mvc, rate)
    return ch


def _september(rng: random.Random, ch: dict, mvc: float, rate: float) -> dict:
    """The Sep 2025 key names of the old system (same clinical values)."""
    n = ch["contraction_count"]
    out = {
        k: v
        for k, v in ch.items()
        if k
        not in (
            "mvc_contraction_count",
            "duration_contraction_count",
            "mvc_threshold_actual_value",
            "signal_processing",
        )
    }
    out["mvc_compliant_count"] = ch["mvc_contraction_count"]
    out["duration_compliant_count"] = ch["duration_contraction_count"]
    out["mvc75_threshold"] = ch["mvc_threshold_actual_value"]
    out["estimated_mvc_value"] = mvc
    out["mvc_threshold_percentage_used"] = 75.0
    rates = [min(n / 12, 1.0)] + (
        [ch["mvc_contraction_count"] / n, ch["duration_contraction_count"] / n] if n else [0.0, 0.0]
    )
    out["compliance_rate"] = sum(rates) / 3
    out["signal_processing_steps"] = ch["signal_processing"]["processing_steps"]
    out["signal_processing_parameters"] = ch["signal_processing"]["parameters_used"]
    out["timing_signal"] = {
        "sampling_rate": rate,
        "n_samples": int(ch["total_time_under_tension_ms"] * rate / 1000) + 1000,
        "start_s": 0.0,
        "windows_s": [round(i * 0.5, 1) for i in range(40)],
    }
    out["processed_signal_stats"] = {
        "mean": ch["rms"] * 0.9,
        "std": ch["rms"] * 0.3,
        "max": mvc,
        "percentiles": {str(p): ch["rms"] * p / 50 for p in (5, 25, 50, 75, 95)},
    }
    out["raw_signal_stats"] = {
        "mean": 0.0,
        "std": ch["rms"] * 1.4,
        "min": -mvc * 2,
        "max": mvc * 2,
        "clipped_samples": rng.randint(0, 3),
    }
    if rng.random() < 0.5:  # the other contraction key style
        out["contractions"] = [
            {("start_ms" if k == "start_time_ms" else "end_ms" if k == "end_time_ms" else k): v for k, v in c.items()}
            for c in ch["contractions"]
        ]
    if rng.random() < 0.06:  # counts written as floats
        out["contraction_count"] = float(n)
    return out


def generate_rows(
    n_sessions: int, seed: int = 8, *, n_therapists: int = 5, n_patients: int = 40, realistic: bool = True
):
    """(therapists, patients, c3d rows, analysis rows) as lists of tuples in column order."""
    rng = random.Random(seed)
    therapists = [(_uuid(rng), _uuid(rng), f"Thera{i}", f"Pist{i}") for i in range(n_therapists)]
    patients = [
        (
            _uuid(rng),
            therapists[i % n_therapists][0],
            f"P{i + 1:03d}",
            f"First{i}",
            f"Last{i}",
            (BASE - timedelta(days=365 * 60 + 13 * i)).date(),
        )
        for i in range(n_patients)
    ]
    c3d, ar = [], []
    for i in range(n_sessions):
        sid = _uuid(rng)
        created = BASE + timedelta(minutes=7 * i, seconds=rng.randint(0, 59), microseconds=rng.randint(0, 999999))
        label = (
            "Ghostly_Emg_" + (created + timedelta(hours=1)).strftime("%Y%m%d_%H-%M-%S-") + f"{rng.randint(0, 9999):04d}"
        )
        r = rng.random()
        if r < 0.04:
            patient = rng.choice(["P999", "P0X1", "p005", "UNKNOWN"])
        elif r < 0.05:
            patient = None
        else:
            patient = rng.choice(patients)[2]
        t = rng.random()
        therapist = (
            str(rng.choice(therapists)[0])
            if t < 0.5
            else "---"
            if t < 0.7
            else ""
            if t < 0.8
            else str(_uuid(rng))
            if t < 0.9
            else None
        )
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
        q = rng.random()
        score = (
            str(rng.randint(0, 3000))
            if q < 0.7
            else f"{rng.randint(0, 3000)}.0"
            if q < 0.8
            else float(rng.randint(0, 3000))
            if q < 0.86
            else ""
            if q < 0.95
            else "n/a"
        )
        q = rng.random()
        level = (
            str(rng.randint(1, 10)) if q < 0.9 else str(rng.randint(11, 15)) if q < 0.95 else f"{rng.randint(1, 10)}.0"
        )
        game = {
            "game_name": "Ghostly",
            "level": level,
            "duration": f"{duration:.0f}",
            "therapist_id": "---",
            "group_id": str(rng.randint(1, 4)),
            "time": created.strftime("%H:%M:%S"),
            "player_name": folder,
            "score": score,
        }
        generation = "2025-09" if rng.random() < 0.45 else "2025-08"
        q = rng.random()
        stype = (
            rng.choice(["training", "training", "baseline", "assessment", None])
            if q < 0.93
            else "therapy"
            if q < 0.98
            else "Training"
            if q < 0.99
            else "rehab"
        )
        processed = None if pending else created + timedelta(seconds=rng.randint(2, 60))
        status = "pending" if pending else "failed" if failed else "completed"
        version = None if pending else rng.choice(["1.0.0", "1.1.0", "1.2.0"])
        session_date: datetime | None = created.replace(tzinfo=None) + timedelta(hours=1)
        resolved_date = session_date
        if rng.random() < 0.02:
            session_date = None  # the old code did not always fill it: the file name has it
        row = [
            sid,
            path,
            fhash,
            size,
            patient,
            therapist,
            label,
            session_date,
            stype,
            duration if not pending else None,
            rng.choice([None, None, "good session", "patient tired"]),
            json.dumps(game),
            json.dumps(channels) if tech else None,
            len(channels) if tech else None,
            990.0 if tech else None,
            duration if tech else None,
            int(duration * 990) if tech else None,
            patient,
            therapist,
            resolved_date,
            "small" if size < 800_000 else "medium" if size < 2_000_000 else "large",
            "application/octet-stream",
            created,
            "c3d-files",
            json.dumps({"size": size, "mimetype": "application/octet-stream"}),
            status,
            version,
            "C3D parse error: truncated analog block" if failed else None,
            created,
            processed or created,
            processed,
        ]
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
        good = {ch: channel_json(rng, duration, generation=generation, realistic=realistic) for ch in channels}
        created_ar = processed
        assert created_ar is not None  # set for every session that is not pending
        all_expired = rng.random() < 0.05
        expires = created_ar + timedelta(days=30) if all_expired else BASE + timedelta(days=3650)
        mvc_values = (
            {ch: (good[ch].get("mvc_threshold_actual_value") or good[ch]["mvc75_threshold"]) / 0.75 for ch in channels}
            if rng.random() < 0.05
            else None
        )
        main = [
            _uuid(rng),
            sid,
            fhash,
            version,
            "{}",
            "{}" if failed else json.dumps(good),
            None,
            None,
            rng.randint(300, 4000),
            None,
            None,
            rng.randint(0, 20),
            created_ar,
            created_ar,
            expires,
            json.dumps(mvc_values) if mvc_values else None,
            None,
            None,
        ]
        ar.append(tuple(main))
        extra = rng.random()
        if extra < 0.25:
            older: list[Any] = list(main)
            older[0] = _uuid(rng)
            older[3] = "0.9.0"
            older[5] = json.dumps({ch: channel_json(rng, duration, realistic=False) for ch in channels})
            older[13] = created_ar - timedelta(hours=rng.randint(1, 48))
            older[12] = older[13]
            older[14] = older[13] + timedelta(days=30)  # expired
            older[15] = None
            ar.append(tuple(older))
        if extra < 0.08:  # an empty failed attempt, newest
            empty = list(main)
            empty[0] = _uuid(rng)
            empty[3] = "1.3.0-rc1"
            empty[5] = "{}"
            empty[13] = created_ar + timedelta(hours=1)
            empty[12] = empty[13]
            empty[15] = None
            ar.append(tuple(empty))
    return therapists, patients, c3d, ar


async def _copy(conn: asyncpg.Connection, table: str, records: list[tuple], columns: tuple[str, ...]) -> None:
    """COPY the columns the table has (a legacy DDL may lack optional ones)."""
    have = {
        r[0]
        for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped", table
        )
    }
    keep = [i for i, c in enumerate(columns) if c in have]
    if len(keep) < len(columns):
        records = [tuple(r[i] for i in keep) for r in records]
    await conn.copy_records_to_table(table, records=records, columns=[columns[i] for i in keep])


async def write(conn: asyncpg.Connection, n_sessions: int, seed: int = 8, **kw) -> Generated:
    therapists, patients, c3d, ar = generate_rows(n_sessions, seed, **kw)
    await conn.copy_records_to_table(
        "therapists", records=therapists, columns=["id", "user_id", "first_name", "last_name"]
    )
    await conn.copy_records_to_table(
        "patients",
        records=patients,
        columns=["id", "therapist_id", "patient_code", "first_name", "last_name", "date_of_birth"],
    )
    await conn.execute("SELECT setval('patients_patient_code_seq', $1)", len(patients))
    await _copy(conn, "c3d_metadata", c3d, C3D_COLUMNS)
    await _copy(conn, "analysis_results", ar, AR_COLUMNS)
    return Generated(len(therapists), len(patients), len(c3d), len(ar), len({r[2] for r in c3d}))


# ----------------------------------------------------------------------------- real legacy DDL
# The old system's own DDL (shared/design/legacy-schema.md), NOT migrations 001-005: its own
# constraint names, no CHECK on session_type (the old code's later default was 'therapy'),
# patient codes from a plain sequence default, the analysis_summary view. Used to test the
# adoption of an existing deployment (`ghostly migrate` baselines 001-005) and the data
# migration on the shape a real legacy database has.
LEGACY_DDL = """
CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at = now(); RETURN NEW; END; $$;

CREATE TABLE therapists (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE,
    first_name text NOT NULL,
    last_name text NOT NULL,
    created_at timestamptz DEFAULT now()
);
CREATE TABLE researcher_profiles (
    id uuid PRIMARY KEY,
    full_name text NOT NULL,
    institution text NOT NULL,
    department text,
    role text DEFAULT 'researcher' CHECK (role IN ('admin', 'clinical_specialist', 'researcher')),
    access_level text DEFAULT 'basic' CHECK (access_level IN ('full', 'advanced', 'basic')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_login timestamptz
);
CREATE TRIGGER researcher_profiles_updated_at BEFORE UPDATE ON researcher_profiles
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE SEQUENCE patients_patient_code_seq;
CREATE OR REPLACE FUNCTION generate_patient_code() RETURNS text LANGUAGE sql AS $$
    SELECT 'P' || lpad(nextval('patients_patient_code_seq')::text, 3, '0') $$;
CREATE TABLE patients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    therapist_id uuid NOT NULL REFERENCES therapists(id),
    patient_code text UNIQUE DEFAULT generate_patient_code(),
    first_name text NOT NULL,
    last_name text NOT NULL,
    date_of_birth date NOT NULL,
    created_at timestamptz DEFAULT now()
);
CREATE TABLE c3d_metadata (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    file_path text NOT NULL UNIQUE,
    file_hash text NOT NULL,
    file_size_bytes bigint NOT NULL,
    patient_id text,
    therapist_id text,
    session_id text,
    session_date timestamp,
    session_type text,
    session_duration float,
    session_notes text,
    game_metadata jsonb,
    channel_names jsonb,
    channel_count int,
    sampling_rate float,
    duration_seconds float,
    frame_count int,
    resolved_patient_id text,
    resolved_therapist_id text,
    resolved_session_date timestamp,
    size_category text CHECK (size_category IN ('small', 'medium', 'large')),
    content_type text,
    upload_date timestamptz,
    bucket_name text DEFAULT 'c3d-files',
    object_metadata jsonb,
    processing_status text DEFAULT 'pending' CHECK (processing_status IN ('pending', 'processing', 'completed', 'failed')),
    processing_version text,
    error_message text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX c3d_metadata_file_hash_idx ON c3d_metadata (file_hash);
CREATE INDEX c3d_metadata_patient_idx ON c3d_metadata (patient_id);
CREATE INDEX c3d_metadata_created_idx ON c3d_metadata (created_at DESC);
CREATE TRIGGER update_c3d_metadata_updated_at BEFORE UPDATE ON c3d_metadata
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TABLE analysis_results (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    c3d_metadata_id uuid NOT NULL REFERENCES c3d_metadata(id) ON DELETE CASCADE,
    file_hash text NOT NULL,
    processing_version text NOT NULL,
    processing_params jsonb DEFAULT '{}',
    analytics_data jsonb NOT NULL,
    emg_signals jsonb,
    contractions_data jsonb,
    processing_time_ms int,
    good_contractions_count int,
    total_contractions_count int,
    cache_hits int DEFAULT 0,
    last_accessed_at timestamptz DEFAULT now(),
    created_at timestamptz DEFAULT now(),
    expires_at timestamptz DEFAULT (now() + interval '30 days'),
    mvc_values jsonb,
    compliance_scores jsonb,
    temporal_stats jsonb,
    UNIQUE (file_hash, processing_version, processing_params)
);
CREATE VIEW analysis_summary AS
SELECT m.id AS c3d_metadata_id, m.file_path, m.file_hash, m.patient_id, m.therapist_id, m.session_id,
       m.session_date, m.session_type, m.channel_count, m.duration_seconds, m.processing_status,
       r.id AS analysis_result_id, r.processing_version, r.processing_time_ms,
       r.good_contractions_count, r.total_contractions_count, r.cache_hits,
       r.created_at AS analyzed_at, r.expires_at
FROM c3d_metadata m JOIN analysis_results r ON r.c3d_metadata_id = m.id;
"""
# Optional legacy columns a real deployment may lack (older DDL revisions): the adoption
# accepts their absence and the data migration reads them as NULL.
OPTIONAL_DROPPABLE = {
    "c3d_metadata": ("resolved_therapist_id", "size_category", "object_metadata", "bucket_name"),
    "analysis_results": ("mvc_values",),
}


async def create_legacy_schema(conn: asyncpg.Connection, *, drop_optional: bool = False) -> None:
    """The legacy tables with the old system's own DDL (not 001-005)."""
    await conn.execute(LEGACY_DDL)
    if drop_optional:
        for table, cols in OPTIONAL_DROPPABLE.items():
            await conn.execute(f"ALTER TABLE {table} " + ", ".join(f"DROP COLUMN {c}" for c in cols))
