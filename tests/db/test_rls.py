"""Row-level security (migration 012) tested directly in SQL, as the service roles."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.helpers import as_admin_of_role, caseload_with_session


@pytest.fixture
async def two_caseloads(conn):
    out = {}
    for name in ("a", "b"):
        user, _code, sid = await caseload_with_session(conn, name, "R")
        await conn.execute(
            "INSERT INTO performance_scores (session_id, overall_performance_score, compliance_score, symmetry_score, "
            "effort_score, game_score) VALUES ($1, 50, 50, 50, 50, 50)",
            sid,
        )
        out[name] = {"user": user, "session": sid}
    return out


async def _visible(conn, role: str, app_role: str | None, user: str | None) -> tuple[set, set]:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {role}")
        if app_role is not None:
            await conn.execute(
                "SELECT set_config('ghostly.role', $1, true), set_config('ghostly.user_id', $2, true)",
                app_role,
                user or "",
            )
        sessions = {r[0] for r in await conn.fetch("SELECT id FROM therapy_sessions")}
        # (the JIT role has no grant on scores at all: it reads sessions, statistics, cache)
        scores = (
            {r[0] for r in await conn.fetch("SELECT session_id FROM performance_scores")}
            if role != "ghostly_jit_signal"
            else None
        )
        raise _Rollback((sessions, scores))


class _Rollback(Exception):
    pass


async def visible(conn, *args):
    try:
        await _visible(conn, *args)
    except _Rollback as r:
        return r.args[0]


# ghostly_export reads no statistics tables (019: it reads them over gRPC from statistics).
@pytest.mark.parametrize("role", ["ghostly_statistics", "ghostly_jit_signal"])
async def test_therapist_sees_own_caseload_only(conn, two_caseloads, role):
    a, b = two_caseloads["a"], two_caseloads["b"]
    sessions, scores = await visible(conn, role, "therapist", a["user"])
    assert a["session"] in sessions and b["session"] not in sessions
    if scores is not None:
        assert a["session"] in scores and b["session"] not in scores
    sessions, _ = await visible(conn, role, "researcher", str(uuid.uuid4()))
    assert {a["session"], b["session"]} <= sessions


async def test_no_identity_reads_nothing(conn, two_caseloads):
    sessions, scores = await visible(conn, "ghostly_statistics", None, None)
    assert sessions == set() and scores == set()
    sessions, _ = await visible(conn, "ghostly_statistics", "therapist", "not-a-uuid")
    assert sessions == set()


async def test_statistics_role_cannot_write(conn, two_caseloads):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_admin_of_role(
            conn, "ghostly_statistics", "DELETE FROM therapy_sessions WHERE id = $1", two_caseloads["a"]["session"]
        )


async def test_ingest_role_writes_everything(conn, two_caseloads):
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE ghostly_ingest")
        n = await conn.fetchval(
            "SELECT count(*) FROM therapy_sessions WHERE id = ANY($1::uuid[])",
            [two_caseloads["a"]["session"], two_caseloads["b"]["session"]],
        )
        assert n == 2
        await conn.execute(
            "UPDATE performance_scores SET overall_performance_score = 51 WHERE session_id = $1",
            two_caseloads["b"]["session"],
        )
