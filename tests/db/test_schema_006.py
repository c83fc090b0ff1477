"""Schema tests for migrations 001-006 (legacy schema + statistics-first schema).

Fixtures: ``conn`` (overridden below) is a connection to a database migrated
exactly up to 006, inside a transaction rolled back after the test, so these
tests check what 006 creates; later migrations have their own tests.

Each negative case runs in its own savepoint (``async with conn.transaction()``)
so one expected error does not abort the test's outer transaction.

The expected column tables below are written out by hand from
shared/design/statistics-first-plan.md section 3 (and legacy-schema.md): they are
the "exactly the planned columns" check - do not regenerate them from a database.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import in_one_transaction

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


@pytest.fixture(scope="session")
async def database_006_url(db_factory) -> str:
    from libs.db.migrate import migrate

    dsn = await db_factory.create("m006")
    await migrate(dsn, to=6)
    return dsn


@pytest.fixture
async def conn(database_006_url):
    from tests.conftest import rolled_back

    async with rolled_back(database_006_url) as connection:
        yield connection


UUID_DEFAULT = "gen_random_uuid()"
NOW = "now()"
WEIGHTS_DEFAULT = '\'{"game": 0.15, "effort": 0.20, "symmetry": 0.25, "compliance": 0.40}\'::jsonb'
TS = "timestamp with time zone"
F = "double precision"

# (column, data_type, nullable, default) in table order.
EXPECTED_006: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "therapy_sessions": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("file_path", "text", False, None),
        ("file_hash", "text", False, None),
        ("file_size_bytes", "bigint", False, None),
        ("patient_id", "text", True, None),
        # Plan says TEXT; UUID because it is a FK to therapists.id (UUID). See README.
        ("therapist_id", "uuid", True, None),
        ("session_id", "text", True, None),
        ("session_date", TS, True, None),
        ("session_type", "text", True, None),
        ("protocol_day", "integer", True, None),
        ("original_sampling_rate", F, False, None),
        ("original_duration_seconds", F, False, None),
        ("original_sample_count", "integer", False, None),
        ("channel_names", "jsonb", False, None),
        ("channel_count", "integer", False, None),
        ("processing_version", "text", False, None),
        ("processing_status", "text", True, "'pending'::text"),
        ("processing_time_ms", "integer", True, None),
        ("created_at", TS, True, NOW),
        ("processed_at", TS, True, None),
    ],
    "emg_statistics": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("session_id", "uuid", True, None),
        ("channel_name", "text", False, None),
        ("mvc_peak_value", F, False, None),
        ("mvc_rms_value", F, False, None),
        ("mvc_confidence_score", F, False, None),
        ("mvc_calculation_method", "text", False, None),
        ("total_contractions", "integer", False, None),
        ("good_contractions_intensity", "integer", False, None),
        ("good_contractions_duration", "integer", False, None),
        ("good_contractions_both", "integer", False, None),
        ("completion_rate", F, False, None),
        ("intensity_rate", F, False, None),
        ("duration_rate", F, False, None),
        ("muscle_compliance_score", F, False, None),
        ("signal_quality_score", F, False, None),
        ("noise_level_db", F, True, None),
        ("artifacts_detected", "integer", True, "0"),
        ("processing_confidence", F, False, None),
        ("processing_pipeline", "text", False, "'20Hz->Rectify->10Hz->RMS'::text"),
        ("processing_version", "text", False, None),
        ("processing_time_ms", "integer", True, None),
        ("mvc_threshold_percentage", F, False, "0.75"),
        ("duration_threshold_seconds", F, False, "2.0"),
        ("processed_at", TS, True, NOW),
    ],
    "performance_scores": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("session_id", "uuid", True, None),
        ("overall_performance_score", F, False, None),
        ("compliance_score", F, False, None),
        ("symmetry_score", F, False, None),
        ("effort_score", F, False, None),
        ("game_score", F, False, None),
        ("performance_weights", "jsonb", False, WEIGHTS_DEFAULT),
        ("bfr_pressure_aop", F, True, None),
        ("bfr_compliance_gate", F, False, "1.0"),
        ("rpe_post_session", "integer", True, None),
        ("game_points_achieved", "integer", False, "0"),
        ("game_points_maximum", "integer", False, "1000"),
        ("session_duration_minutes", F, True, None),
        ("left_muscle_completion_rate", F, True, None),
        ("left_muscle_intensity_rate", F, True, None),
        ("left_muscle_duration_rate", F, True, None),
        ("right_muscle_completion_rate", F, True, None),
        ("right_muscle_intensity_rate", F, True, None),
        ("right_muscle_duration_rate", F, True, None),
        ("calculated_at", TS, True, NOW),
    ],
    "bfr_monitoring": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("session_id", "uuid", True, None),
        ("target_pressure_aop", F, False, None),
        ("actual_pressure_aop", F, False, None),
        ("pressure_stability_coefficient", F, True, None),
        ("safety_gate_status", "boolean", False, None),
        ("safety_violations_count", "integer", True, "0"),
        ("safety_violations_duration_seconds", F, True, None),
        ("max_pressure_deviation_aop", F, True, None),
        ("patient_aop_baseline_mmhg", F, True, None),
        ("patient_limb_circumference_cm", F, True, None),
        ("cuff_size", "text", True, None),
        ("cuff_position", "text", True, None),
        ("monitoring_device", "text", True, None),
        ("device_calibration_date", "date", True, None),
        ("device_serial_number", "text", True, None),
        ("bfr_session_duration_minutes", F, True, None),
        ("monitoring_frequency_hz", F, True, "1.0"),
        ("created_at", TS, True, NOW),
    ],
    "session_settings": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("session_id", "uuid", True, None),
        ("mvc_calculation_method", "text", False, None),
        ("mvc_threshold_percentage", F, False, "0.75"),
        ("mvc_user_left_quad", F, True, None),
        ("mvc_user_right_quad", F, True, None),
        ("performance_weights", "jsonb", False, WEIGHTS_DEFAULT),
        ("duration_threshold_seconds", F, False, "2.0"),
        ("duration_threshold_left_quad", F, True, None),
        ("duration_threshold_right_quad", F, True, None),
        ("target_contractions_per_muscle", "integer", False, "12"),
        ("rest_period_between_contractions_seconds", "integer", True, "5"),
        ("rest_period_between_sets_seconds", "integer", True, "120"),
        ("bfr_enabled", "boolean", True, "true"),
        ("bfr_target_pressure_aop", F, True, "50.0"),
        ("game_difficulty_level", "integer", True, "1"),
        ("visual_feedback_enabled", "boolean", True, "true"),
        ("audio_feedback_enabled", "boolean", True, "true"),
        ("real_time_mvc_display", "boolean", True, "true"),
        ("created_at", TS, True, NOW),
        ("updated_at", TS, True, NOW),
    ],
    "export_history": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("session_id", "uuid", True, None),
        ("export_type", "text", False, None),
        ("channels_exported", "jsonb", True, None),
        ("data_format", "text", False, None),
        ("export_options", "jsonb", True, None),
        ("processing_method", "text", False, None),
        ("processing_time_ms", "integer", True, None),
        ("data_source", "text", True, None),
        ("exported_by", "uuid", True, None),
        ("export_timestamp", TS, True, NOW),
        ("file_size_bytes", "bigint", True, None),
        ("export_hash", "text", True, None),
        ("export_status", "text", True, "'success'::text"),
        ("validation_checks", "jsonb", True, None),
        ("error_message", "text", True, None),
        ("created_at", TS, True, NOW),
    ],
    "signal_processing_cache": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("session_id", "uuid", True, None),
        ("processing_request_hash", "text", False, None),
        ("processing_version", "text", False, None),
        ("cache_type", "text", False, None),
        ("hit_count", "integer", True, "0"),
        ("last_accessed_at", TS, True, NOW),
        ("expires_at", TS, True, "(now() + '7 days'::interval)"),
        ("cache_valid", "boolean", True, "true"),
        ("invalidated_reason", "text", True, None),
        ("invalidated_at", TS, True, None),
        ("created_at", TS, True, NOW),
    ],
}

EXPECTED_LEGACY: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "therapists": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("user_id", "uuid", False, None),
        ("first_name", "text", False, None),
        ("last_name", "text", False, None),
        ("created_at", TS, True, NOW),
    ],
    "researcher_profiles": [
        ("id", "uuid", False, None),
        ("full_name", "text", False, None),
        ("institution", "text", False, None),
        ("department", "text", True, None),
        ("role", "text", True, "'researcher'::text"),
        ("access_level", "text", True, "'basic'::text"),
        ("created_at", TS, False, NOW),
        ("updated_at", TS, False, NOW),
        ("last_login", TS, True, None),
    ],
    "patients": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("therapist_id", "uuid", False, None),
        ("patient_code", "text", True, "generate_patient_code()"),
        ("first_name", "text", False, None),
        ("last_name", "text", False, None),
        ("date_of_birth", "date", False, None),
        ("created_at", TS, True, NOW),
    ],
    "c3d_metadata": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("file_path", "text", False, None),
        ("file_hash", "text", False, None),
        ("file_size_bytes", "bigint", False, None),
        ("patient_id", "text", True, None),
        ("therapist_id", "text", True, None),
        ("session_id", "text", True, None),
        ("session_date", "timestamp without time zone", True, None),
        ("session_type", "text", True, None),
        ("session_duration", F, True, None),
        ("session_notes", "text", True, None),
        ("game_metadata", "jsonb", True, None),
        ("channel_names", "jsonb", True, None),
        ("channel_count", "integer", True, None),
        ("sampling_rate", F, True, None),
        ("duration_seconds", F, True, None),
        ("frame_count", "integer", True, None),
        ("resolved_patient_id", "text", True, None),
        ("resolved_therapist_id", "text", True, None),
        ("resolved_session_date", "timestamp without time zone", True, None),
        ("size_category", "text", True, None),
        ("content_type", "text", True, None),
        ("upload_date", TS, True, None),
        ("bucket_name", "text", True, "'c3d-files'::text"),
        ("object_metadata", "jsonb", True, None),
        ("processing_status", "text", True, "'pending'::text"),
        ("processing_version", "text", True, None),
        ("error_message", "text", True, None),
        ("created_at", TS, True, NOW),
        ("updated_at", TS, True, NOW),
        ("processed_at", TS, True, None),
    ],
    "analysis_results": [
        ("id", "uuid", False, UUID_DEFAULT),
        ("c3d_metadata_id", "uuid", False, None),
        ("file_hash", "text", False, None),
        ("processing_version", "text", False, None),
        ("processing_params", "jsonb", True, "'{}'::jsonb"),
        ("analytics_data", "jsonb", False, None),
        ("emg_signals", "jsonb", True, None),
        ("contractions_data", "jsonb", True, None),
        ("processing_time_ms", "integer", True, None),
        ("good_contractions_count", "integer", True, None),
        ("total_contractions_count", "integer", True, None),
        ("cache_hits", "integer", True, "0"),
        ("last_accessed_at", TS, True, NOW),
        ("created_at", TS, True, NOW),
        ("expires_at", TS, True, "(now() + '30 days'::interval)"),
        ("mvc_values", "jsonb", True, None),
        ("compliance_scores", "jsonb", True, None),
        ("temporal_stats", "jsonb", True, None),
    ],
}

DEFAULT_WEIGHTS = {"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15}


# --------------------------------------------------------------------------- helpers


def _json(value):
    """jsonb comes back as str with asyncpg's default codec (or already decoded)."""
    return json.loads(value) if isinstance(value, str) else value


async def _insert(conn: asyncpg.Connection, table: str, row: dict, returning: str = "*"):
    cols = list(row)
    params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({params}) RETURNING {returning}"
    return await conn.fetchrow(sql, *row.values())


async def _columns(conn: asyncpg.Connection, table: str):
    rows = await conn.fetch(
        """
        SELECT column_name, data_type, is_nullable = 'YES' AS nullable, column_default
        FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = $1
        ORDER BY ordinal_position
        """,
        table,
    )
    return [(r["column_name"], r["data_type"], r["nullable"], r["column_default"]) for r in rows]


def _session_row(**over) -> dict:
    tag = uuid.uuid4().hex
    row = {
        "file_path": f"P001/Ghostly_Emg_20230321_17-50-17-{tag}.c3d",
        "file_hash": tag * 2,
        "file_size_bytes": 123456,
        "session_id": "Ghostly_Emg_20230321_17-50-17-0881",
        "original_sampling_rate": 990.0,
        "original_duration_seconds": 175.5,
        "original_sample_count": 173745,
        "channel_names": json.dumps(["CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated"]),
        "channel_count": 4,
        "processing_version": "test-1",
    }
    row.update(over)
    return row


def _child_row(table: str, session_id) -> dict:
    """A minimal valid row of a session child table."""
    base = {"session_id": session_id}
    if table == "emg_statistics":
        base.update(
            channel_name="CH1",
            mvc_peak_value=0.0012,
            mvc_rms_value=0.0004,
            mvc_confidence_score=0.8,
            mvc_calculation_method="backend_95percentile",
            total_contractions=12,
            good_contractions_intensity=10,
            good_contractions_duration=3,
            good_contractions_both=3,
            completion_rate=1.0,
            intensity_rate=10 / 12,
            duration_rate=0.25,
            muscle_compliance_score=0.7,
            signal_quality_score=0.9,
            processing_confidence=0.9,
            processing_version="test-1",
        )
    elif table == "performance_scores":
        base.update(
            overall_performance_score=70.0,
            compliance_score=70.0,
            symmetry_score=90.0,
            effort_score=100.0,
            game_score=50.0,
        )
    elif table == "bfr_monitoring":
        base.update(target_pressure_aop=50.0, actual_pressure_aop=48.0, safety_gate_status=True)
    elif table == "session_settings":
        base.update(mvc_calculation_method="backend_calculated")
    elif table == "export_history":
        base.update(export_type="statistics_only", data_format="json", processing_method="database_query")
    elif table == "signal_processing_cache":
        base.update(
            processing_request_hash=uuid.uuid4().hex,
            processing_version="test-1",
            cache_type="visualization_1k",
        )
    else:  # pragma: no cover
        raise AssertionError(table)
    return base


CHILD_TABLES = [
    "emg_statistics",
    "performance_scores",
    "bfr_monitoring",
    "session_settings",
    "export_history",
    "signal_processing_cache",
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def therapist_id(conn):
    return await conn.fetchval(
        "INSERT INTO therapists (user_id, first_name, last_name) VALUES ($1, 'Ada', 'Therapist') RETURNING id",
        uuid.uuid4(),
    )


@pytest.fixture
async def patient_code(conn, therapist_id):
    return await conn.fetchval(
        "INSERT INTO patients (therapist_id, first_name, last_name, date_of_birth)"
        " VALUES ($1, 'Pat', 'Ient', DATE '1950-01-02') RETURNING patient_code",
        therapist_id,
    )


@pytest.fixture
async def researcher_id(conn):
    rid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO researcher_profiles (id, full_name, institution) VALUES ($1, 'Res Earcher', 'VUB')",
        rid,
    )
    return rid


@pytest.fixture
async def session_uuid(conn, patient_code, therapist_id):
    row = await _insert(
        conn,
        "therapy_sessions",
        _session_row(patient_id=patient_code, therapist_id=therapist_id),
        "id",
    )
    return row["id"]


# --------------------------------------------------------------------------- migration files


def test_migration_files_are_well_formed():
    files = sorted(MIGRATIONS_DIR.glob("*.sql"))
    names = [f.name for f in files]
    for expected in (
        "001_create_extensions_and_helpers.sql",
        "002_create_therapists_and_researchers.sql",
        "003_create_patients.sql",
        "004_create_c3d_metadata.sql",
        "005_create_analysis_results.sql",
        "006_create_statistics_schema.sql",
    ):
        assert expected in names
    numbers = []
    for f in files:
        assert re.fullmatch(r"\d{3}_[a-z0-9_]+\.sql", f.name), f.name
        numbers.append(int(f.name[:3]))
        text = f.read_text()
        assert text.startswith("-- "), f"{f.name}: must start with a comment header"
        # The runner wraps each file in one transaction: no transaction control,
        # nothing that cannot run inside a transaction block. Dollar-quoted
        # function bodies (plpgsql BEGIN ... END;) and comments are ignored.
        code = re.sub(r"\$(\w*)\$.*?\$\1\$", "", text, flags=re.DOTALL)
        code = "\n".join(line.split("--", 1)[0] for line in code.splitlines())
        for bad in (
            r"^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|END)\s*;",
            r"\bCONCURRENTLY\b",
            r"^\s*VACUUM\b",
        ):
            assert not re.search(bad, code, re.IGNORECASE | re.MULTILINE), (f.name, bad)
    assert len(numbers) == len(set(numbers)), "duplicate migration number"
    assert numbers == list(range(1, len(numbers) + 1)), "migration numbers must be contiguous"


# --------------------------------------------------------------------------- columns


@pytest.mark.parametrize("table", sorted(EXPECTED_006))
async def test_statistics_table_has_exactly_the_planned_columns(conn, table):
    assert await _columns(conn, table) == EXPECTED_006[table]


@pytest.mark.parametrize("table", sorted(EXPECTED_LEGACY))
async def test_legacy_table_columns(conn, table):
    assert await _columns(conn, table) == EXPECTED_LEGACY[table]


async def test_legacy_analysis_summary_view_exists(conn, patient_code):
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM information_schema.views"
            " WHERE table_schema = current_schema() AND table_name = 'analysis_summary'"
        )
        == 1
    )
    mid = await conn.fetchval(
        "INSERT INTO c3d_metadata (file_path, file_hash, file_size_bytes, patient_id)"
        " VALUES ('P001/a.c3d', 'h1', 10, $1) RETURNING id",
        patient_code,
    )
    await conn.execute(
        "INSERT INTO analysis_results (c3d_metadata_id, file_hash, processing_version, analytics_data)"
        " VALUES ($1, 'h1', 'v1', '{}')",
        mid,
    )
    row = await conn.fetchrow("SELECT * FROM analysis_summary WHERE c3d_metadata_id = $1", mid)
    assert row["file_path"] == "P001/a.c3d" and row["processing_version"] == "v1"


# --------------------------------------------------------------------------- patient_code


async def test_patient_code_default_is_P_plus_three_digits(conn, therapist_id):
    seq = "patients_patient_code_seq"
    saved = await conn.fetchrow(f"SELECT last_value, is_called FROM {seq}")
    try:
        async with conn.transaction():
            # setval is not transactional: restored in finally.
            await conn.execute(f"SELECT setval('{seq}', 1, false)")
            codes = []
            for _ in range(2):
                codes.append(
                    await conn.fetchval(
                        "INSERT INTO patients (therapist_id, first_name, last_name, date_of_birth)"
                        " VALUES ($1, 'A', 'B', DATE '1960-01-01') RETURNING patient_code",
                        therapist_id,
                    )
                )
            assert codes == ["P001", "P002"]
            await conn.execute(f"SELECT setval('{seq}', 999, false)")
            assert await conn.fetchval("SELECT generate_patient_code()") == "P999"
            # Padding never truncates beyond 999.
            assert await conn.fetchval("SELECT generate_patient_code()") == "P1000"
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.execute(f"SELECT setval('{seq}', $1, $2)", saved["last_value"], saved["is_called"])


class _Rollback(Exception):
    pass


async def test_patient_code_is_unique(conn, therapist_id, patient_code):
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO patients (therapist_id, patient_code, first_name, last_name, date_of_birth)"
                " VALUES ($1, $2, 'A', 'B', DATE '1960-01-01')",
                therapist_id,
                patient_code,
            )


# --------------------------------------------------------------------------- CHECK constraints

# (table, column, violating value): one case per CHECK (both bounds of ranges).
CHECK_CASES = [
    ("therapy_sessions", "session_type", "warmup"),
    ("therapy_sessions", "processing_status", "done"),
    ("emg_statistics", "mvc_confidence_score", 1.01),
    ("emg_statistics", "mvc_confidence_score", -0.01),
    ("emg_statistics", "mvc_calculation_method", "backend_calculated"),
    ("emg_statistics", "completion_rate", 1.5),
    ("emg_statistics", "completion_rate", -0.1),
    ("emg_statistics", "intensity_rate", 1.5),
    ("emg_statistics", "intensity_rate", -0.1),
    ("emg_statistics", "duration_rate", 1.5),
    ("emg_statistics", "duration_rate", -0.1),
    ("emg_statistics", "muscle_compliance_score", 1.5),
    ("emg_statistics", "muscle_compliance_score", -0.1),
    ("emg_statistics", "signal_quality_score", 1.5),
    ("emg_statistics", "signal_quality_score", -0.1),
    ("emg_statistics", "processing_confidence", 1.5),
    ("emg_statistics", "processing_confidence", -0.1),
    ("performance_scores", "overall_performance_score", 100.5),
    ("performance_scores", "overall_performance_score", -1.0),
    ("performance_scores", "compliance_score", 101.0),
    ("performance_scores", "compliance_score", -1.0),
    ("performance_scores", "symmetry_score", 101.0),
    ("performance_scores", "symmetry_score", -1.0),
    ("performance_scores", "effort_score", 101.0),
    ("performance_scores", "effort_score", -1.0),
    ("performance_scores", "game_score", 101.0),
    ("performance_scores", "game_score", -1.0),
    ("performance_scores", "bfr_compliance_gate", 0.5),
    ("performance_scores", "rpe_post_session", 11),
    ("performance_scores", "rpe_post_session", -1),
    ("performance_scores", "left_muscle_completion_rate", 1.1),
    ("performance_scores", "left_muscle_intensity_rate", 1.1),
    ("performance_scores", "left_muscle_duration_rate", -0.1),
    ("performance_scores", "right_muscle_completion_rate", 1.1),
    ("performance_scores", "right_muscle_intensity_rate", 1.1),
    ("performance_scores", "right_muscle_duration_rate", -0.1),
    ("bfr_monitoring", "target_pressure_aop", 100.5),
    ("bfr_monitoring", "target_pressure_aop", -1.0),
    ("bfr_monitoring", "actual_pressure_aop", 120.0),
    ("bfr_monitoring", "actual_pressure_aop", -1.0),
    ("session_settings", "mvc_calculation_method", "backend_95percentile"),
    ("session_settings", "mvc_threshold_percentage", 0.0),
    ("session_settings", "mvc_threshold_percentage", 1.01),
    ("session_settings", "duration_threshold_seconds", 0.0),
    ("session_settings", "target_contractions_per_muscle", 0),
    ("session_settings", "bfr_target_pressure_aop", 100.1),
    ("session_settings", "bfr_target_pressure_aop", -0.1),
    ("session_settings", "game_difficulty_level", 0),
    ("session_settings", "game_difficulty_level", 11),
    ("export_history", "export_type", "raw_dump"),
    ("export_history", "data_format", "xml"),
    ("export_history", "processing_method", "magic"),
    ("export_history", "export_status", "ok"),
    ("signal_processing_cache", "cache_type", "visualization_10k"),
]

LEGACY_CHECK_CASES: list[tuple[str, str, object]] = [
    ("c3d_metadata", "session_type", "warmup"),
    ("c3d_metadata", "size_category", "huge"),
    ("c3d_metadata", "processing_status", "done"),
    ("researcher_profiles", "role", "superuser"),
    ("researcher_profiles", "access_level", "root"),
]


async def _valid_row(conn, table, session_uuid):
    if table == "therapy_sessions":
        return _session_row()
    if table == "c3d_metadata":
        return {"file_path": f"x/{uuid.uuid4().hex}.c3d", "file_hash": "h", "file_size_bytes": 1}
    if table == "researcher_profiles":
        return {"id": uuid.uuid4(), "full_name": "R", "institution": "I"}
    return _child_row(table, session_uuid)


@pytest.mark.parametrize(
    "table,column,value",
    CHECK_CASES + LEGACY_CHECK_CASES,
    ids=[f"{t}.{c}={v}" for t, c, v in CHECK_CASES + LEGACY_CHECK_CASES],
)
async def test_check_constraint_rejects_violation(conn, session_uuid, table, column, value):
    row = await _valid_row(conn, table, session_uuid)
    # The valid row itself is accepted, so the error below is due to `column`.
    assert await _insert(conn, table, row, "id") is not None
    if table == "emg_statistics":
        row["channel_name"] = "CH2"
    elif table in ("therapy_sessions", "c3d_metadata"):
        row["file_path"] = f"y/{uuid.uuid4().hex}.c3d"
    elif table == "researcher_profiles":
        row["id"] = uuid.uuid4()
    elif table == "signal_processing_cache":
        row["processing_request_hash"] = uuid.uuid4().hex
    elif table in ("performance_scores", "bfr_monitoring", "session_settings"):
        # one row per session: violate on a fresh session
        row["session_id"] = (await _insert(conn, "therapy_sessions", _session_row(), "id"))["id"]
    row[column] = value
    with pytest.raises(asyncpg.exceptions.CheckViolationError) as excinfo:
        async with conn.transaction():
            await _insert(conn, table, row, "id")
    assert excinfo.value.constraint_name == f"{table}_{column}_check"


async def test_every_check_constraint_has_a_case(conn):
    tables = [*EXPECTED_006, "c3d_metadata", "researcher_profiles"]
    rows = await conn.fetch(
        "SELECT conname FROM pg_constraint WHERE contype = 'c'"
        " AND conrelid = ANY(SELECT (current_schema() || '.' || t)::regclass FROM unnest($1::text[]) t)",
        tables,
    )
    declared = {r["conname"] for r in rows}
    covered = {f"{t}_{c}_check" for t, c, _ in CHECK_CASES + LEGACY_CHECK_CASES}
    assert declared == covered


async def test_check_boundaries_are_accepted(conn, session_uuid):
    await _insert(
        conn,
        "performance_scores",
        _child_row("performance_scores", session_uuid)
        | {
            "overall_performance_score": 0.0,
            "compliance_score": 100.0,
            "bfr_compliance_gate": 0.0,
            "rpe_post_session": 10,
            "left_muscle_completion_rate": 0.0,
            "right_muscle_duration_rate": 1.0,
        },
    )
    await _insert(
        conn,
        "session_settings",
        _child_row("session_settings", session_uuid)
        | {"mvc_threshold_percentage": 1.0, "game_difficulty_level": 10, "bfr_target_pressure_aop": 0.0},
    )


# --------------------------------------------------------------------------- UNIQUE constraints


async def test_unique_file_path(conn):
    row = _session_row()
    await _insert(conn, "therapy_sessions", row)
    # Same content under another path is allowed (file_hash is not unique)...
    await _insert(conn, "therapy_sessions", _session_row(file_hash=row["file_hash"]))
    # ...but the same path twice is not.
    with pytest.raises(asyncpg.exceptions.UniqueViolationError) as excinfo:
        async with conn.transaction():
            await _insert(conn, "therapy_sessions", _session_row(file_path=row["file_path"]))
    assert excinfo.value.constraint_name == "therapy_sessions_file_path_key"


async def test_unique_session_channel(conn, session_uuid):
    await _insert(conn, "emg_statistics", _child_row("emg_statistics", session_uuid))
    other = (await _insert(conn, "therapy_sessions", _session_row(), "id"))["id"]
    await _insert(conn, "emg_statistics", _child_row("emg_statistics", other))  # same channel, other session
    await _insert(conn, "emg_statistics", _child_row("emg_statistics", session_uuid) | {"channel_name": "CH2"})
    with pytest.raises(asyncpg.exceptions.UniqueViolationError) as excinfo:
        async with conn.transaction():
            await _insert(conn, "emg_statistics", _child_row("emg_statistics", session_uuid))
    assert excinfo.value.constraint_name == "emg_statistics_session_id_channel_name_key"


@pytest.mark.parametrize("table", ["performance_scores", "bfr_monitoring", "session_settings"])
async def test_one_row_per_session(conn, session_uuid, table):
    await _insert(conn, table, _child_row(table, session_uuid))
    with pytest.raises(asyncpg.exceptions.UniqueViolationError) as excinfo:
        async with conn.transaction():
            await _insert(conn, table, _child_row(table, session_uuid))
    assert excinfo.value.constraint_name == f"{table}_session_id_key"


async def test_unique_cache_key(conn, session_uuid):
    row = _child_row("signal_processing_cache", session_uuid)
    await _insert(conn, "signal_processing_cache", row)
    other = (await _insert(conn, "therapy_sessions", _session_row(), "id"))["id"]
    await _insert(conn, "signal_processing_cache", row | {"session_id": other})
    with pytest.raises(asyncpg.exceptions.UniqueViolationError) as excinfo:
        async with conn.transaction():
            await _insert(conn, "signal_processing_cache", row | {"processing_version": "test-2"})
    assert excinfo.value.constraint_name == "signal_processing_cache_session_id_processing_request_hash_key"


# --------------------------------------------------------------------------- foreign keys


async def test_fk_unknown_patient_code_rejected(conn, therapist_id):
    with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError) as excinfo:
        async with conn.transaction():
            await _insert(conn, "therapy_sessions", _session_row(patient_id="P99999999"))
    assert excinfo.value.constraint_name == "fk_therapy_sessions_patient"


async def test_fk_unknown_therapist_rejected(conn):
    with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError) as excinfo:
        async with conn.transaction():
            await _insert(conn, "therapy_sessions", _session_row(therapist_id=uuid.uuid4()))
    assert excinfo.value.constraint_name == "fk_therapy_sessions_therapist"


async def test_fk_unknown_researcher_rejected(conn, session_uuid):
    with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError) as excinfo:
        async with conn.transaction():
            await _insert(
                conn,
                "export_history",
                _child_row("export_history", session_uuid) | {"exported_by": uuid.uuid4()},
            )
    assert excinfo.value.constraint_name == "export_history_exported_by_fkey"


@pytest.mark.parametrize("table", CHILD_TABLES)
async def test_fk_unknown_session_rejected(conn, table):
    with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError) as excinfo:
        async with conn.transaction():
            await _insert(conn, table, _child_row(table, uuid.uuid4()))
    assert excinfo.value.constraint_name == f"{table}_session_id_fkey"


async def test_session_delete_cascades_statistics_and_keeps_exports(conn, session_uuid, researcher_id):
    for table in CHILD_TABLES:
        row = _child_row(table, session_uuid)
        if table == "export_history":
            row["exported_by"] = researcher_id
        await _insert(conn, table, row)
    export_id = await conn.fetchval("SELECT id FROM export_history WHERE session_id = $1", session_uuid)

    await conn.execute("DELETE FROM therapy_sessions WHERE id = $1", session_uuid)

    for table in CHILD_TABLES:
        if table == "export_history":
            continue
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE session_id = $1", session_uuid) == 0, table
    kept = await conn.fetchrow("SELECT session_id, exported_by FROM export_history WHERE id = $1", export_id)
    assert kept is not None
    assert kept["session_id"] is None  # ON DELETE SET NULL: audit row kept
    assert kept["exported_by"] == researcher_id


async def test_referenced_patient_therapist_researcher_cannot_be_deleted(
    conn, session_uuid, patient_code, therapist_id, researcher_id
):
    await _insert(conn, "export_history", _child_row("export_history", session_uuid) | {"exported_by": researcher_id})
    for sql, arg in (
        ("DELETE FROM patients WHERE patient_code = $1", patient_code),
        ("DELETE FROM researcher_profiles WHERE id = $1", researcher_id),
    ):
        with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError):
            async with conn.transaction():
                await conn.execute(sql, arg)
    # the therapist is referenced by the patient and by the session
    with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError) as excinfo:
        await in_one_transaction(
            conn,
            ("DELETE FROM patients WHERE patient_code = $1", patient_code),
            ("DELETE FROM therapists WHERE id = $1", therapist_id),
        )
    assert excinfo.value.constraint_name == "fk_therapy_sessions_patient"
    with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError) as excinfo:
        await in_one_transaction(
            conn,
            ("UPDATE therapy_sessions SET patient_id = NULL WHERE id = $1", session_uuid),
            ("DELETE FROM patients WHERE patient_code = $1", patient_code),
            ("DELETE FROM therapists WHERE id = $1", therapist_id),
        )
    assert excinfo.value.constraint_name == "fk_therapy_sessions_therapist"


async def test_legacy_analysis_results_cascade_with_c3d_metadata(conn):
    mid = await conn.fetchval(
        "INSERT INTO c3d_metadata (file_path, file_hash, file_size_bytes) VALUES ('P002/b.c3d', 'h2', 1) RETURNING id"
    )
    await conn.execute(
        "INSERT INTO analysis_results (c3d_metadata_id, file_hash, processing_version, analytics_data)"
        " VALUES ($1, 'h2', 'v1', '{}')",
        mid,
    )
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO analysis_results (c3d_metadata_id, file_hash, processing_version, analytics_data)"
                " VALUES ($1, 'h2', 'v1', '{}')",
                mid,
            )
    await conn.execute("DELETE FROM c3d_metadata WHERE id = $1", mid)
    assert await conn.fetchval("SELECT count(*) FROM analysis_results WHERE c3d_metadata_id = $1", mid) == 0


async def test_patient_requires_existing_therapist(conn):
    with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO patients (therapist_id, first_name, last_name, date_of_birth)"
                " VALUES ($1, 'A', 'B', DATE '1960-01-01')",
                uuid.uuid4(),
            )


# --------------------------------------------------------------------------- defaults


async def test_defaults(conn, session_uuid):
    now = await conn.fetchval("SELECT now()")

    s = await conn.fetchrow("SELECT * FROM therapy_sessions WHERE id = $1", session_uuid)
    assert s["processing_status"] == "pending"
    assert s["created_at"] == now

    rows = {}
    for table in CHILD_TABLES:
        rows[table] = await _insert(conn, table, _child_row(table, session_uuid))

    e = rows["emg_statistics"]
    assert e["processing_pipeline"] == "20Hz->Rectify->10Hz->RMS"
    assert e["mvc_threshold_percentage"] == 0.75
    assert e["duration_threshold_seconds"] == 2.0
    assert e["artifacts_detected"] == 0
    assert e["processed_at"] == now

    p = rows["performance_scores"]
    assert _json(p["performance_weights"]) == DEFAULT_WEIGHTS
    assert p["bfr_compliance_gate"] == 1.0 and p["bfr_pressure_aop"] is None
    assert p["game_points_achieved"] == 0 and p["game_points_maximum"] == 1000
    assert p["calculated_at"] == now

    b = rows["bfr_monitoring"]
    assert b["safety_violations_count"] == 0 and b["monitoring_frequency_hz"] == 1.0

    st = rows["session_settings"]
    assert _json(st["performance_weights"]) == DEFAULT_WEIGHTS
    assert st["mvc_threshold_percentage"] == 0.75
    assert st["duration_threshold_seconds"] == 2.0
    assert st["target_contractions_per_muscle"] == 12
    assert st["rest_period_between_contractions_seconds"] == 5
    assert st["rest_period_between_sets_seconds"] == 120
    assert st["bfr_enabled"] is True and st["bfr_target_pressure_aop"] == 50.0
    assert st["game_difficulty_level"] == 1
    assert st["visual_feedback_enabled"] and st["audio_feedback_enabled"] and st["real_time_mvc_display"]
    assert st["created_at"] == now and st["updated_at"] == now

    x = rows["export_history"]
    assert x["export_status"] == "success"
    assert x["export_timestamp"] == now and x["created_at"] == now

    c = rows["signal_processing_cache"]
    assert c["hit_count"] == 0 and c["cache_valid"] is True
    assert c["last_accessed_at"] == now
    assert c["expires_at"] - now == timedelta(days=7)


async def test_legacy_defaults(conn):
    now = await conn.fetchval("SELECT now()")
    m = await conn.fetchrow(
        "INSERT INTO c3d_metadata (file_path, file_hash, file_size_bytes) VALUES ('P003/c.c3d', 'h3', 1) RETURNING *"
    )
    assert m["bucket_name"] == "c3d-files" and m["processing_status"] == "pending"
    r = await conn.fetchrow(
        "INSERT INTO analysis_results (c3d_metadata_id, file_hash, processing_version, analytics_data)"
        " VALUES ($1, 'h3', 'v1', '{}') RETURNING *",
        m["id"],
    )
    assert _json(r["processing_params"]) == {}
    assert r["cache_hits"] == 0
    assert r["expires_at"] - now == timedelta(days=30)
    rp = await conn.fetchrow(
        "INSERT INTO researcher_profiles (id, full_name, institution) VALUES ($1, 'R', 'I') RETURNING *",
        uuid.uuid4(),
    )
    assert rp["role"] == "researcher" and rp["access_level"] == "basic"


@pytest.mark.parametrize(
    "table,insert_sql",
    [
        (
            "c3d_metadata",
            "INSERT INTO c3d_metadata (file_path, file_hash, file_size_bytes, updated_at)"
            " VALUES ('P004/d.c3d', 'h4', 1, '2000-01-01') RETURNING id",
        ),
        (
            "researcher_profiles",
            "INSERT INTO researcher_profiles (id, full_name, institution, updated_at)"
            " VALUES (gen_random_uuid(), 'R', 'I', '2000-01-01') RETURNING id",
        ),
        ("session_settings", None),
    ],
)
async def test_updated_at_trigger(conn, session_uuid, table, insert_sql):
    if insert_sql is None:
        rid = (
            await _insert(
                conn,
                table,
                _child_row(table, session_uuid)
                | {"updated_at": await conn.fetchval("SELECT timestamptz '2000-01-01'")},
                "id",
            )
        )["id"]
    else:
        rid = await conn.fetchval(insert_sql)
    await conn.execute(f"UPDATE {table} SET created_at = created_at WHERE id = $1", rid)
    assert await conn.fetchval(f"SELECT updated_at = now() FROM {table} WHERE id = $1", rid)


# --------------------------------------------------------------------------- indexes

EXPECTED_INDEXES = {
    # name: (table, column list as it appears in pg_indexes.indexdef)
    "idx_therapy_sessions_patient_date": ("therapy_sessions", "(patient_id, session_date DESC, id DESC)"),
    "idx_therapy_sessions_therapist_date": ("therapy_sessions", "(therapist_id, session_date DESC, id DESC)"),
    "idx_therapy_sessions_date": ("therapy_sessions", "(session_date DESC, id DESC)"),
    "idx_therapy_sessions_file_hash": ("therapy_sessions", "(file_hash)"),
    "therapy_sessions_file_path_key": ("therapy_sessions", "(file_path)"),
    "emg_statistics_session_id_channel_name_key": ("emg_statistics", "(session_id, channel_name)"),
    "performance_scores_session_id_key": ("performance_scores", "(session_id)"),
    "bfr_monitoring_session_id_key": ("bfr_monitoring", "(session_id)"),
    "session_settings_session_id_key": ("session_settings", "(session_id)"),
    "idx_export_history_session": ("export_history", "(session_id, export_timestamp DESC)"),
    "idx_export_history_exported_by": ("export_history", "(exported_by, export_timestamp DESC)"),
    "idx_export_history_timestamp": ("export_history", "(export_timestamp DESC)"),
    "signal_processing_cache_session_id_processing_request_hash_key": (
        "signal_processing_cache",
        "(session_id, processing_request_hash)",
    ),
    "idx_signal_processing_cache_expires_at": ("signal_processing_cache", "(expires_at)"),
    # legacy
    "idx_c3d_metadata_file_hash": ("c3d_metadata", "(file_hash)"),
    "idx_c3d_metadata_created_at": ("c3d_metadata", "(created_at DESC)"),
    "idx_c3d_metadata_upload_date": ("c3d_metadata", "(upload_date DESC)"),
    "idx_c3d_metadata_patient_id": ("c3d_metadata", "(patient_id)"),
    "idx_c3d_metadata_session_date": ("c3d_metadata", "(session_date)"),
    "idx_c3d_metadata_processing_status": ("c3d_metadata", "(processing_status)"),
    "idx_c3d_metadata_size_category": ("c3d_metadata", "(size_category)"),
}


async def test_declared_indexes_exist(conn):
    rows = await conn.fetch("SELECT indexname, tablename, indexdef FROM pg_indexes WHERE schemaname = current_schema()")
    found = {r["indexname"]: (r["tablename"], r["indexdef"]) for r in rows}
    for name, (table, cols) in EXPECTED_INDEXES.items():
        assert name in found, name
        assert found[name][0] == table, name
        assert found[name][1].endswith(cols), (name, found[name][1])


def _plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


async def _explain(conn, sql: str) -> list[dict]:
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}")
    return list(_plan_nodes(_json(raw)[0]["Plan"]))


@pytest.fixture
async def populated(conn, therapist_id):
    """Two patients of one therapist with 40 sessions each, plus statistics and exports."""
    codes = []
    for _ in range(2):
        codes.append(
            await conn.fetchval(
                "INSERT INTO patients (therapist_id, first_name, last_name, date_of_birth)"
                " VALUES ($1, 'A', 'B', DATE '1960-01-01') RETURNING patient_code",
                therapist_id,
            )
        )
    await conn.execute(
        """
        INSERT INTO therapy_sessions (file_path, file_hash, file_size_bytes, patient_id, therapist_id,
            session_id, session_date, session_type, original_sampling_rate, original_duration_seconds,
            original_sample_count, channel_names, channel_count, processing_version, processing_status)
        SELECT 'idx/' || gen_random_uuid() || '.c3d', md5(g::text), 1000, p.code, $2,
               'Ghostly_Emg_' || g, now() - g * interval '1 day',
               (ARRAY['baseline','training','assessment'])[1 + g % 3],
               990, 100, 99000, '["CH1 Raw","CH2 Raw"]', 2, 'test-1',
               (ARRAY['completed','failed'])[1 + g % 2]
        FROM generate_series(1, 40) AS g, unnest($1::text[]) AS p(code)
        """,
        codes,
        therapist_id,
    )
    await conn.execute(
        """
        INSERT INTO emg_statistics (session_id, channel_name, mvc_peak_value, mvc_rms_value,
            mvc_confidence_score, mvc_calculation_method, total_contractions, good_contractions_intensity,
            good_contractions_duration, good_contractions_both, completion_rate, intensity_rate,
            duration_rate, muscle_compliance_score, signal_quality_score, processing_confidence,
            processing_version)
        SELECT s.id, ch, 0.001, 0.0005, 0.9, 'backend_95percentile', 12, 10, 5, 5, 1, 0.8, 0.4, 0.7,
               0.9, 0.9, 'test-1'
        FROM therapy_sessions s, unnest(ARRAY['CH1','CH2']) AS ch
        WHERE s.file_path LIKE 'idx/%'
        """
    )
    await conn.execute("ANALYZE therapy_sessions")
    await conn.execute("ANALYZE emg_statistics")
    # Tiny tables: make the planner show which index serves the query (and its
    # order) instead of preferring a seq/bitmap scan plus sort. Local to the
    # test's transaction.
    await conn.execute("SET LOCAL enable_seqscan = off")
    await conn.execute("SET LOCAL enable_bitmapscan = off")
    return codes


async def test_list_sessions_by_patient_uses_index(conn, populated):
    code = populated[0]
    nodes = await _explain(
        conn,
        f"""
        SELECT id, session_date FROM therapy_sessions
        WHERE patient_id = '{code}'
          AND (session_date, id) < (now(), 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
        ORDER BY session_date DESC, id DESC
        LIMIT 20
        """,
    )
    assert any(n.get("Index Name") == "idx_therapy_sessions_patient_date" for n in nodes), nodes
    assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), nodes


async def test_patient_progress_date_range_uses_index(conn, populated):
    code = populated[1]
    nodes = await _explain(
        conn,
        f"""
        SELECT session_date FROM therapy_sessions
        WHERE patient_id = '{code}' AND session_date >= now() - interval '14 days'
        ORDER BY session_date DESC, id DESC
        """,
    )
    assert any(n.get("Index Name") == "idx_therapy_sessions_patient_date" for n in nodes), nodes


async def test_list_sessions_by_therapist_uses_index(conn, populated, therapist_id):
    nodes = await _explain(
        conn,
        f"""
        SELECT id FROM therapy_sessions
        WHERE therapist_id = '{therapist_id}' AND session_type = 'training'
        ORDER BY session_date DESC, id DESC
        LIMIT 20
        """,
    )
    assert any(n.get("Index Name") == "idx_therapy_sessions_therapist_date" for n in nodes), nodes
    assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), nodes


async def test_list_all_sessions_uses_index(conn, populated):
    nodes = await _explain(
        conn,
        "SELECT id FROM therapy_sessions WHERE processing_status = 'completed'"
        " ORDER BY session_date DESC, id DESC LIMIT 20",
    )
    assert any(n.get("Index Name") == "idx_therapy_sessions_date" for n in nodes), nodes
    assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), nodes


async def test_statistics_by_session_uses_index(conn, populated):
    sid = await conn.fetchval("SELECT id FROM therapy_sessions WHERE file_path LIKE 'idx/%' LIMIT 1")
    nodes = await _explain(conn, f"SELECT * FROM emg_statistics WHERE session_id = '{sid}'")
    assert any(n.get("Index Name") == "emg_statistics_session_id_channel_name_key" for n in nodes), nodes
