"""An export_history row is never left 'in progress' by an interrupted write (issue 16, item
8): under a database restart the chaos run left 2-4 rows open per run, from closing writes
that were cancelled or timed out (not "connection errors") and from inserts that committed
while their reply was lost. Both are now closed in the background."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import pytest

from libs import auth
from libs.db.pool import init_connection
from services.export import history as history_mod
from services.export.history import IN_PROGRESS, History
from tests.helpers import wait_until

ADMIN = auth.Identity(subject="ops", role="admin")


@pytest.fixture
async def history(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=init_connection)
    yield History(pool)
    await pool.close()


async def _start(h: History, eid: uuid.UUID | None = None) -> uuid.UUID:
    """A statistics-only CSV export row started through History.start; returns its id."""
    eid = eid or uuid.uuid4()
    await h.start(
        export_id=eid,
        session_id=None,
        export_type="statistics_only",
        channels=None,
        data_format="csv",
        options={},
        processing_method="database_query",
        data_source="cached_statistics",
        exported_by=None,
    )
    return eid


async def _wait_closed(db, eid: uuid.UUID, timeout: float = 10.0) -> asyncpg.Record:
    async def closed() -> asyncpg.Record | None:
        row = await db.fetchrow("SELECT export_status, error_message FROM export_history WHERE id = $1", eid)
        return row if row is not None and row["error_message"] != IN_PROGRESS else None

    return await wait_until(closed, timeout)


@pytest.mark.parametrize("interruption", [asyncio.CancelledError, TimeoutError], ids=["cancelled", "timeout"])
async def test_a_close_interrupted_mid_write_is_completed_in_the_background(history, db, monkeypatch, interruption):
    auth.set_current(ADMIN)
    eid = await _start(history)
    real = History._write
    calls = []

    async def flaky(self, values, only_if_open=False):
        calls.append(values[1])
        if len(calls) == 1:
            raise interruption()
        await real(self, values, only_if_open)

    monkeypatch.setattr(History, "_write", flaky)
    with pytest.raises(interruption):
        await history.finish(
            eid,
            status="success",
            processing_time_ms=5,
            size=10,
            sha256="ab" * 32,
            checks=[],
            error_message=None,
            options={},
        )
    row = await _wait_closed(db, eid)
    assert row["export_status"] == "success" and calls == ["success", "success"]


async def test_an_insert_that_committed_without_its_reply_is_closed(history, db, monkeypatch):
    """The insert commits, then the reply is lost (a timeout): the row is closed as failed,
    "interrupted as the export started"; a row its export closed meanwhile keeps its outcome."""
    auth.set_current(ADMIN)
    real_acquire = history_mod.access.acquire

    @contextlib.asynccontextmanager
    async def committed_then_timeout(pool):
        async with real_acquire(pool) as conn:

            class Conn:
                async def fetchrow(self, *args):
                    await conn.fetchrow(*args)
                    raise TimeoutError()

            yield Conn()

    monkeypatch.setattr(history_mod.access, "acquire", committed_then_timeout)
    eid = uuid.uuid4()
    with pytest.raises(TimeoutError):
        await _start(history, eid)
    monkeypatch.setattr(history_mod.access, "acquire", real_acquire)
    row = await _wait_closed(db, eid)
    assert row["export_status"] == "failed" and row["error_message"].startswith("interrupted as the export started")

    # The same ambiguity, but the export went on and closed its row first: kept.
    other = await _start(history)
    history._close_later(
        other, (other, "failed", 0, None, None, None, "interrupted as the export started", {}), only_if_open=True
    )
    await history.finish(
        other,
        status="success",
        processing_time_ms=1,
        size=1,
        sha256="cd" * 32,
        checks=[],
        error_message=None,
        options={},
    )
    await wait_until(lambda: other not in history._unfinished)  # the background close has run
    assert await db.fetchval("SELECT export_status FROM export_history WHERE id = $1", other) == "success"
