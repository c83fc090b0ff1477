"""export_history: the audit trail. The only table the export service writes.

A row is inserted when an export starts (status 'failed', error_message 'in progress', so an
export interrupted by a crash stays on record as failed) and completed when it ends (status,
size, hash, checks, time). Besides export_history the service reads only
  * researcher_profiles: to validate exported_by (FK target), and
  * therapy_sessions.id: the FK of export_history.session_id (set only when the session exists).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from libs import paging
from libs.convert import datetime_micros, from_micros, no_nul
from libs.db import access
from libs.grpc_server.interceptor import is_connection_error

log = logging.getLogger("ghostly.export")

IN_PROGRESS = "export in progress (not completed)"
STALE_AFTER_S = 3600.0  # an export still in progress after this long has lost its process
FINISH_RETRY_S = 3600.0  # how long the closing of a row is retried (then the startup sweep closes it)

SWEEP = """
UPDATE export_history SET error_message = $3
 WHERE export_status = 'failed' AND error_message = $1
   AND export_timestamp < now() - make_interval(secs => $2)
"""

INSERT = """
INSERT INTO export_history (id, session_id, export_type, channels_exported, data_format, export_options,
                            processing_method, data_source, exported_by, export_status, error_message)
VALUES ($1, (SELECT id FROM therapy_sessions WHERE id = $2), $3, $4, $5, $6, $7, $8,
        (SELECT id FROM researcher_profiles WHERE id = $9), 'failed', $10)
RETURNING exported_by, export_timestamp
"""

FINISH = """
UPDATE export_history
   SET export_status = $2, processing_time_ms = $3, file_size_bytes = $4, export_hash = $5,
       validation_checks = $6, error_message = $7, export_options = $8
 WHERE id = $1
"""

# A close written in the background after an ambiguous start only replaces 'in progress': a
# row the export itself closed meanwhile keeps its outcome.
CLOSE_IF_OPEN = FINISH.rstrip() + f" AND export_status = 'failed' AND error_message = '{IN_PROGRESS}'\n"

COLUMNS = (
    "id, session_id, export_type, channels_exported, data_format, export_options, processing_method, "
    "processing_time_ms, data_source, exported_by, export_timestamp, file_size_bytes, export_hash, "
    "export_status, validation_checks, error_message"
)


@dataclass
class Started:
    exported_by: uuid.UUID | None
    export_timestamp: dt.datetime


class History:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self._unfinished: dict[uuid.UUID, tuple] = {}  # rows to close once the database is back
        self._tasks: set[asyncio.Task] = set()

    async def start(
        self,
        *,
        export_id: uuid.UUID,
        session_id: uuid.UUID | None,
        export_type: str,
        channels: list[str] | None,
        data_format: str,
        options: dict[str, Any],
        processing_method: str,
        data_source: str,
        exported_by: uuid.UUID | None,
    ) -> Started:
        channels, options = no_nul(channels), no_nul(options)  # NUL from a request: never a stuck row
        try:
            async with access.acquire(self.pool) as conn:  # the caller's identity: RLS on therapy_sessions
                row = await conn.fetchrow(
                    INSERT,
                    export_id,
                    session_id,
                    export_type,
                    channels,
                    data_format,
                    options,
                    processing_method,
                    data_source,
                    exported_by,
                    IN_PROGRESS,
                )
        except BaseException as exc:
            # Whatever interrupted the insert (connection lost, a timeout, the call cancelled),
            # it may have committed without its reply reaching us: close the row if it exists
            # (a no-op otherwise). A refused insert (constraint) did not commit: nothing to do.
            if not isinstance(exc, asyncpg.PostgresError) or is_connection_error(exc):
                self._close_later(
                    export_id,
                    (
                        export_id,
                        "failed",
                        0,
                        None,
                        None,
                        None,
                        f"interrupted as the export started ({exc.__class__.__name__})",
                        options,
                    ),
                    only_if_open=True,
                )
            raise
        return Started(row["exported_by"], row["export_timestamp"])

    async def finish(
        self,
        export_id: uuid.UUID,
        *,
        status: str,
        processing_time_ms: int,
        size: int | None,
        sha256: str | None,
        checks: list[dict] | None,
        error_message: str | None,
        options: dict[str, Any],
    ) -> None:
        """Close the row. If the database connection is lost, the newest closing values of the
        row are written in the background as soon as it is back (a row never stays 'in
        progress' because of an outage), and the error is raised to the caller."""
        values = (
            export_id,
            status,
            processing_time_ms,
            size,
            sha256,
            no_nul(checks) or None,
            no_nul(error_message),
            no_nul(options),
        )
        try:
            await self._write(values)
        except BaseException:
            # Connection lost, a timeout while the database restarts, the call cancelled in the
            # middle of the write: the row is closed in the background (retried until it is).
            self._close_later(export_id, values)
            raise

    async def _write(self, values: tuple, only_if_open: bool = False) -> None:
        async with access.acquire(self.pool) as conn:
            await conn.execute(CLOSE_IF_OPEN if only_if_open else FINISH, *values)

    def _close_later(self, export_id: uuid.UUID, values: tuple, only_if_open: bool = False) -> None:
        first = export_id not in self._unfinished
        if first or not only_if_open:
            # The newest outcome wins (e.g. failed after success); "interrupted as it started"
            # never replaces an outcome the export recorded itself.
            self._unfinished[export_id] = (values, only_if_open)
        if not first:
            return

        async def retry() -> None:
            delay, deadline, failures = 0.2, time.monotonic() + FINISH_RETRY_S, 0
            try:
                while True:
                    await asyncio.sleep(delay)
                    try:
                        await self._write(*self._unfinished[export_id])
                        log.info("export %s recorded after an interruption", export_id)
                        return
                    except Exception as exc:
                        # Retried while the database is unreachable or restarting (connection
                        # errors, timeouts, "starting up"); a few times for anything else.
                        failures += 0 if is_connection_error(exc) or isinstance(exc, TimeoutError) else 1
                        if failures >= 5 or time.monotonic() > deadline:
                            log.error(
                                "export %s left in progress (the startup sweep closes it)", export_id, exc_info=True
                            )
                            return
                        delay = min(delay * 2, 5.0)
            finally:
                self._unfinished.pop(export_id, None)

        task = asyncio.get_running_loop().create_task(retry(), name=f"export-close-{export_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sweep_stale(self, older_than_s: float = STALE_AFTER_S) -> int:
        """Close rows still 'in progress' whose export process died (no export runs this long):
        failed, with the reason. Returns how many were closed."""
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                SWEEP,
                IN_PROGRESS,
                older_than_s,
                f"the export process ended before completing (swept after {older_than_s:g} s)",
            )
        return int(done.split()[-1])

    async def list(
        self,
        *,
        session_id: uuid.UUID | None,
        exported_by: uuid.UUID | None,
        export_type: str | None,
        data_format: str | None,
        status: str | None,
        time_from: dt.datetime | None,
        time_to: dt.datetime | None,
        cursor: tuple[dt.datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[asyncpg.Record]:
        arg = paging.Params()
        conds: list[str] = []

        if session_id is not None:
            # Multi-session exports (session_id NULL) list their sessions in export_options.
            p = arg(session_id)
            conds.append(f"(session_id = {p} OR (session_id IS NULL AND export_options -> 'session_ids' ? {p}::text))")
        if exported_by is not None:
            conds.append(f"exported_by = {arg(exported_by)}")
        if export_type is not None:
            conds.append(f"export_type = {arg(export_type)}")
        if data_format is not None:
            conds.append(f"data_format = {arg(data_format)}")
        if status is not None:
            conds.append(f"export_status = {arg(status)}")
        if time_from is not None:
            conds.append(f"export_timestamp >= {arg(time_from)}")
        if time_to is not None:
            conds.append(f"export_timestamp < {arg(time_to)}")
        if cursor is not None:
            conds.append(f"(export_timestamp, id) < ({arg(cursor[0])}, {arg(cursor[1])})")
        sql = (
            f"SELECT {COLUMNS} FROM export_history {paging.where(conds)} "
            f"ORDER BY export_timestamp DESC, id DESC LIMIT {arg(limit)}"
        )
        async with access.acquire(self.pool) as conn:
            return await conn.fetch(sql, *arg)


# --------------------------------------------------------------------------- page tokens


def encode_token(ts: dt.datetime, export_id: uuid.UUID, filters: str) -> str:
    return paging.encode({"t": datetime_micros(ts), "i": str(export_id)}, filters)


def _cursor(data: dict) -> tuple[dt.datetime, uuid.UUID]:
    if not isinstance(data["t"], int):
        raise ValueError("t")
    return from_micros(data["t"]), uuid.UUID(data["i"])


def decode_token(token: str, filters: str) -> tuple[dt.datetime, uuid.UUID]:
    return paging.decode(token, filters, _cursor)
