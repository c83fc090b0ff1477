"""Cache building blocks: payload files on disk (size-limited, LRU), in-memory LRUs, single
flight, and the SQL of the signal_processing_cache index."""
from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable

import asyncpg


SUFFIX = ".gjs"
TTL = "7 days"


class DiskCache:
    """Payload files ``<key>.gjs`` in one directory, total size <= max_bytes, least recently
    used evicted first. The order lives in memory (rebuilt from mtimes at start; a hit bumps
    the file's mtime so a restart keeps the order). Writes are atomic (temp file + rename).
    Several replicas may share the directory: a file another one evicted is simply a miss."""

    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = Path(root), int(max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()
        self.total = 0
        self.evictions = 0
        entries = []
        for e in os.scandir(self.root):
            if e.name.endswith(SUFFIX) and e.is_file():
                st = e.stat()
                entries.append((st.st_mtime_ns, e.name[:-len(SUFFIX)], st.st_size))
            elif e.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
        for _, key, size in sorted(entries):
            self._index[key] = size
            self.total += size
        self._evict()

    def path(self, key: str) -> Path:
        return self.root / (key + SUFFIX)

    def get(self, key: str) -> bytes | None:
        p = self.path(key)
        try:
            with open(p, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            with self._lock:
                self.total -= self._index.pop(key, 0)
            return None
        with contextlib.suppress(OSError):
            os.utime(p)
        with self._lock:
            if key not in self._index:
                self._index[key] = len(data)
                self.total += len(data)
            self._index.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> bool:
        """Store (blocking: call from a thread). False when one payload alone exceeds the limit."""
        if len(data) > self.max_bytes:
            return False
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with self._lock:
            self.total += len(data) - self._index.pop(key, 0)
            self._index[key] = len(data)
            self._evict()
        return True

    def discard(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))
        with self._lock:
            self.total -= self._index.pop(key, 0)

    def _evict(self) -> None:
        while self.total > self.max_bytes and self._index:
            key, size = self._index.popitem(last=False)
            self.total -= size
            self.evictions += 1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(key))

    def clear(self) -> None:
        with self._lock:
            keys = list(self._index)
        for key in keys:
            self.discard(key)


class MemoryLRU:
    """Byte-bounded LRU of immutable objects (``obj.nbytes``) shared by concurrent requests."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self.total = 0

    def get(self, key: Hashable) -> Any | None:
        obj = self._items.get(key)
        if obj is not None:
            self._items.move_to_end(key)
        return obj

    def put(self, key: Hashable, obj: Any) -> None:
        size = obj.nbytes
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.total -= old.nbytes
        self._items[key] = obj
        self.total += size
        while self.total > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.total -= dropped.nbytes

    def pop(self, key: Hashable) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.total -= old.nbytes

    def clear(self) -> None:
        self._items.clear()
        self.total = 0


class SingleFlight:
    """Concurrent calls with the same key share one computation (in this process). The
    computation runs as its own task so a caller that goes away does not kill it for the
    others; when the LAST waiter goes away it is cancelled."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, tuple[asyncio.Task, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def _forget(self, key: Hashable, task: asyncio.Task) -> None:
        entry = self._calls.get(key)
        if entry is not None and entry[0] is task:
            del self._calls[key]

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._calls.get(key)
        if entry is None:
            task = asyncio.get_running_loop().create_task(fn())
            entry = (task, [0])
            self._calls[key] = entry
            task.add_done_callback(lambda t, k=key: self._forget(k, t))
        task, waiters = entry
        waiters[0] += 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done() and waiters[0] == 1:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            raise
        finally:
            waiters[0] -= 1


# --------------------------------------------------------------------------- SQL

# The hot path: ONE indexed statement. The cache key is sha256(file_hash || suffix), computed
# here from the session's file_hash so the session and its cache row come back together.
HOT_SQL = """
SELECT s.file_path, s.file_hash, s.file_size_bytes, s.processing_status, s.error_message,
       s.patient_id, s.processed_at, s.original_sampling_rate, s.original_sample_count, s.channel_names,
       c.id AS cache_id, c.cache_valid, c.processing_version AS cache_version,
       (c.expires_at IS NOT NULL AND c.expires_at <= now()) AS cache_expired
FROM therapy_sessions s
LEFT JOIN signal_processing_cache c
       ON c.session_id = s.id
      AND c.processing_request_hash = encode(sha256(convert_to(s.file_hash || $2, 'UTF8')), 'hex')
WHERE s.id = $1
"""

# Cold path: the ingest run's contractions and processing parameters, with processed_at read in
# the same snapshot (it is the generation the payload belongs to).
RUN_SQL = """
SELECT s.processed_at, st.channel_name, st.side,
       COALESCE(st.analysis_details -> 'processing_params',   -- libs.emg.settings.PARAMS_KEY (codec)
                st.analysis_details -> 'parameters' -> 'settings' -> 'processing') AS processing,
       CASE WHEN $2 THEN COALESCE((
           SELECT jsonb_agg(jsonb_build_array(c.contraction_index, c.start_time_s, c.end_time_s, c.duration_s,
                                              c.peak_amplitude, c.mean_amplitude, c.meets_intensity,
                                              c.meets_duration, c.is_good, c.partially_masked, c.masked_s)
                             ORDER BY c.contraction_index)
           FROM emg_contractions c WHERE c.statistics_id = st.id), '[]'::jsonb) END AS contractions
FROM therapy_sessions s
LEFT JOIN emg_statistics st ON st.session_id = s.id
WHERE s.id = $1
"""

# The row is (re)validated only if the session is still the ingest run the payload was built
# from: FOR SHARE waits for a concurrent reprocess (which updates therapy_sessions and then
# invalidates the cache in one transaction) and the processed_at check then fails.
UPSERT_SQL = f"""
WITH s AS (
    SELECT id FROM therapy_sessions
    WHERE id = $1 AND processing_status = 'completed' AND processed_at IS NOT DISTINCT FROM $3
    FOR SHARE
)
INSERT INTO signal_processing_cache AS c (session_id, processing_request_hash, processing_version, cache_type,
                                          hit_count, last_accessed_at, expires_at, cache_valid, created_at)
SELECT s.id, $2, $4, $5, 0, now(), now() + INTERVAL '{TTL}', true, now() FROM s
ON CONFLICT (session_id, processing_request_hash) DO UPDATE SET
    processing_version = EXCLUDED.processing_version, cache_type = EXCLUDED.cache_type,
    hit_count = 0, last_accessed_at = now(), expires_at = EXCLUDED.expires_at,
    cache_valid = true, created_at = now()
RETURNING c.id
"""

MARK_EXPIRED_SQL = """
UPDATE signal_processing_cache SET cache_valid = false, invalidated_reason = 'expired', invalidated_at = now()
WHERE id = $1 AND cache_valid
"""

HITS_SQL = """
UPDATE signal_processing_cache c SET hit_count = COALESCE(c.hit_count, 0) + v.n, last_accessed_at = now()
FROM unnest($1::uuid[], $2::int[]) AS v(id, n)
WHERE c.id = v.id
"""

LIST_SQL = """
SELECT s.processing_status, s.error_message, s.patient_id, s.original_sampling_rate, s.original_sample_count,
       s.original_duration_seconds, s.channel_names,
       (SELECT jsonb_object_agg(st.channel_name, jsonb_build_object(
                   'side', st.side, 'unit', st.analysis_details ->> 'unit'))
        FROM emg_statistics st WHERE st.session_id = s.id) AS stats
FROM therapy_sessions s WHERE s.id = $1
"""


# --------------------------------------------------------------------------- admin

# Manual invalidation: libs.db.signal_cache.invalidate (ingest uses it on reprocessing too).

async def sweep(conn: asyncpg.Connection, cache_dir: Path, *, delete_rows_older_than_days: int = 30) -> dict[str, int]:
    """Maintenance: mark expired rows 'expired'; delete payload files of rows that are not
    valid; delete invalid rows untouched for a month. Safe to run while services serve."""
    expired = await conn.execute(
        "UPDATE signal_processing_cache SET cache_valid = false, invalidated_reason = 'expired', "
        "invalidated_at = now() WHERE cache_valid AND expires_at <= now()")
    rows = await conn.fetch("SELECT processing_request_hash FROM signal_processing_cache WHERE NOT cache_valid")
    removed = 0
    for r in rows:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(cache_dir) / (r["processing_request_hash"] + SUFFIX))
            removed += 1
    deleted = await conn.execute(
        "DELETE FROM signal_processing_cache WHERE NOT cache_valid AND "
        f"COALESCE(invalidated_at, created_at) < now() - INTERVAL '{int(delete_rows_older_than_days)} days'")
    return {"expired": int(expired.split()[-1]), "files_removed": removed, "rows_deleted": int(deleted.split()[-1])}
