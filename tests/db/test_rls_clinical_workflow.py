"""Row-level security of migration 016 in SQL, as the service roles with the settings
libs/db/access.py puts on their connections (ghostly.role / ghostly.user_id):
patient_calibrations and session_outcomes are limited to a therapist's own caseload;
patients, therapists and scoring_config have no RLS (the services filter their queries)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.helpers import as_admin_of_role, caseload_with_session

READERS = ("ghostly_statistics",)  # ghostly_export reads them over gRPC only (migration 019)


@pytest.fixture
async def two_caseloads(conn):
    out = {}
    for name in ("a", "b"):
        user, code, sid = await caseload_with_session(conn, name, "W")
        cal = await conn.fetchval(
            "INSERT INTO patient_calibrations (patient_code, mvc_left_v, source, created_by, created_by_role) "
            "VALUES ($1, 0.001, 'therapist_entered', $2, 'therapist') RETURNING id",
            code,
            str(user),
        )
        await conn.execute(
            "INSERT INTO session_outcomes (session_id, rpe_post_session, recorded_by) VALUES ($1, 5, $2)",
            sid,
            str(user),
        )
        out[name] = {"user": user, "patient": code, "session": sid, "calibration": cal}
    return out


class _Rollback(Exception):
    pass


async def visible(conn, role: str, app_role: str | None, user: str | None) -> dict[str, set]:
    """What `role` reads of the 016 tables (and patients) with the given identity settings."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {role}")
            if app_role is not None:
                await conn.execute(
                    "SELECT set_config('ghostly.role', $1, true), set_config('ghostly.user_id', $2, true)",
                    app_role,
                    user or "",
                )
            seen = {
                "calibrations": {r[0] for r in await conn.fetch("SELECT id FROM patient_calibrations")},
                "outcomes": {r[0] for r in await conn.fetch("SELECT session_id FROM session_outcomes")},
                "patients": {r[0] for r in await conn.fetch("SELECT patient_code FROM patients")},
                "configs": {r[0] for r in await conn.fetch("SELECT version FROM scoring_config")},
            }
            raise _Rollback(seen)
    except _Rollback as r:
        return r.args[0]


@pytest.mark.parametrize("role", READERS)
async def test_therapist_reads_own_calibrations_and_outcomes_only(conn, two_caseloads, role):
    a, b = two_caseloads["a"], two_caseloads["b"]
    seen = await visible(conn, role, "therapist", a["user"])
    assert a["calibration"] in seen["calibrations"] and b["calibration"] not in seen["calibrations"]
    assert a["session"] in seen["outcomes"] and b["session"] not in seen["outcomes"]
    seen = await visible(conn, role, "therapist", b["user"])
    assert b["calibration"] in seen["calibrations"] and a["calibration"] not in seen["calibrations"]
    assert b["session"] in seen["outcomes"] and a["session"] not in seen["outcomes"]
    # No RLS on the registry and the trial-wide configuration: the services must filter patients.
    assert {a["patient"], b["patient"]} <= seen["patients"] and 1 in seen["configs"]
    for other in ("researcher", "admin", "service"):
        seen = await visible(conn, role, other, str(uuid.uuid4()))
        assert {a["calibration"], b["calibration"]} <= seen["calibrations"]
        assert {a["session"], b["session"]} <= seen["outcomes"]


@pytest.mark.parametrize("role", READERS)
async def test_no_or_bad_identity_reads_no_calibration_or_outcome(conn, two_caseloads, role):
    for app_role, user in (
        (None, None),
        ("therapist", "not-a-uuid"),
        ("therapist", str(uuid.uuid4())),
        ("somebody", two_caseloads["a"]["user"]),
    ):
        seen = await visible(conn, role, app_role, user)
        assert seen["calibrations"] == set() and seen["outcomes"] == set(), (app_role, user)


async def test_ingest_reads_and_writes_all(conn, two_caseloads):
    a, b = two_caseloads["a"], two_caseloads["b"]
    seen = await visible(conn, "ghostly_ingest", None, None)
    assert {a["calibration"], b["calibration"]} <= seen["calibrations"]
    assert {a["session"], b["session"]} <= seen["outcomes"]
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE ghostly_ingest")
        await conn.execute("UPDATE session_outcomes SET game_points = 10 WHERE session_id = $1", b["session"])
        await conn.execute(
            "INSERT INTO patient_calibrations (patient_code, source, created_by, created_by_role) "
            "VALUES ($1, 'therapist_entered', 'x', 'admin')",
            b["patient"],
        )
        await conn.execute("RESET ROLE")


@pytest.mark.parametrize("role", READERS)
async def test_readers_cannot_write_calibrations_or_outcomes(conn, two_caseloads, role):
    for sql in (
        "UPDATE session_outcomes SET rpe_post_session = 1",
        "DELETE FROM patient_calibrations",
        "INSERT INTO scoring_config (version, config, created_by) VALUES (99, '{}', 'x')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_admin_of_role(conn, role, sql)
