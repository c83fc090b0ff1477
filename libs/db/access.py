"""Row-level access for the caller of the current RPC (libs.auth.current()).

Two walls:
1. the services' own queries: `caseload()` / `ensure_*_visible()` below restrict a therapist
   to their own patients (researchers, admins and services are unrestricted);
2. PostgreSQL row-level security (migration 012) on the per-service roles, fed by the
   settings `ghostly.role` / `ghostly.user_id` that `apply_identity()` puts on the connection.
Rows a therapist may not see are reported as NOT_FOUND, exactly as RLS would hide them.
"""

from __future__ import annotations

import contextlib
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from libs import auth
from libs.errors import NotFound

# Connection -> identity its settings were last set for (cleared by the pool's reset).
_applied: weakref.WeakKeyDictionary[asyncpg.Connection, tuple[str, str]] = weakref.WeakKeyDictionary()

CASELOAD = "SELECT p.patient_code FROM patients p JOIN therapists t ON t.id = p.therapist_id WHERE t.user_id = $1"


# A connection: asyncpg.Connection or the pool's PoolConnectionProxy (asyncpg is untyped).
Conn = Any


def _raw(conn: Conn) -> asyncpg.Connection:
    return getattr(conn, "_con", conn)  # PoolConnectionProxy -> Connection


async def apply_identity(conn: Conn, identity: auth.Identity | None = None) -> None:
    """Put the caller's role and subject on the connection for the RLS policies (one round
    trip, skipped when this connection already carries the same identity)."""
    identity = identity or auth.current()
    key = (identity.role, identity.subject)
    raw = _raw(conn)
    if _applied.get(raw) == key:
        return
    await conn.execute("SELECT set_config('ghostly.role', $1, false), set_config('ghostly.user_id', $2, false)", *key)
    _applied[raw] = key


async def reset_connection(conn: asyncpg.Connection) -> None:
    """Pool reset hook: what asyncpg's default reset query does (the pool has already rolled
    back any transaction), RESET ALL included, so the settings go; forget them too."""
    _applied.pop(conn, None)
    try:
        await conn.execute("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;")
    except Exception:  # noqa: BLE001 - a broken connection (e.g. the server went away)
        # Drop it quietly: raising here would mask the caller's own (retryable) error, and the
        # pool reconnects a terminated connection on the next acquire.
        conn.terminate()


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A pooled connection carrying the current caller's identity."""
    async with pool.acquire() as conn:
        await apply_identity(conn)
        yield conn


def caseload_condition(column: str, subject_arg: str, identity: auth.Identity | None = None) -> str | None:
    """A WHERE condition limiting `column` (a patient code) to the caller's caseload, evaluated
    in the caller's own statement (`subject_arg`: the placeholder bound to the caller's subject
    UUID); None = unrestricted; "false" for a therapist whose subject is not a UUID."""
    identity = identity or auth.current()
    if not identity.is_therapist:
        return None
    if identity.subject_uuid() is None:
        return "false"
    return f"{column} IN ({CASELOAD.replace('$1', subject_arg)})"


async def caseload(conn: Conn, identity: auth.Identity | None = None) -> list[str] | None:
    """Patient codes the caller may see; None = unrestricted."""
    identity = identity or auth.current()
    if not identity.is_therapist:
        return None
    subject = identity.subject_uuid()
    if subject is None:
        return []
    return [r[0] for r in await conn.fetch(CASELOAD, subject)]


# One round trip each: is this patient / this session's patient in the therapist's caseload?
_PATIENT_IN_CASELOAD = (
    "SELECT EXISTS (SELECT 1 FROM patients p JOIN therapists t ON t.id = p.therapist_id "
    "WHERE t.user_id = $1 AND p.patient_code = $2)"
)
_SESSION_IN_CASELOAD = (
    "SELECT EXISTS (SELECT 1 FROM therapy_sessions s JOIN patients p ON p.patient_code = s.patient_id "
    "JOIN therapists t ON t.id = p.therapist_id WHERE t.user_id = $1 AND s.id = $2)"
)


async def ensure_patient_visible(
    conn: Conn, patient_code: str | None, what: str, identity: auth.Identity | None = None
) -> None:
    identity = identity or auth.current()
    if not identity.is_therapist:
        return
    subject = identity.subject_uuid()
    if subject is None or patient_code is None or not await conn.fetchval(_PATIENT_IN_CASELOAD, subject, patient_code):
        raise NotFound(f"{what} does not exist")


async def ensure_session_visible(conn: Conn, session_id: uuid.UUID, identity: auth.Identity | None = None) -> None:
    identity = identity or auth.current()
    if not identity.is_therapist:
        return
    subject = identity.subject_uuid()
    if subject is None or not await conn.fetchval(_SESSION_IN_CASELOAD, subject, session_id):
        raise NotFound(f"session {session_id} does not exist")
