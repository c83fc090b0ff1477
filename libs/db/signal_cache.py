"""Invalidation of the JIT signal cache rows (signal_processing_cache), shared by the services
that make them stale: ingest when it reprocesses a session, jit_signal's own maintenance."""

from __future__ import annotations

import uuid

import asyncpg


async def invalidate(conn: asyncpg.Connection, session_id: uuid.UUID | None = None, reason: str = "manual") -> int:
    """Mark the valid cache rows of one session (or of all, session_id None) invalid; they are
    never served again and the next request recomputes. Returns how many rows."""
    result = await conn.execute(
        "UPDATE signal_processing_cache SET cache_valid = false, invalidated_reason = $2, invalidated_at = now() "
        "WHERE cache_valid AND ($1::uuid IS NULL OR session_id = $1)",
        session_id,
        reason,
    )
    return int(result.split()[-1])
