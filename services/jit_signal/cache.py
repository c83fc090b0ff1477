"""Cache building blocks: payload files on disk (size-limited, LRU), in-memory LRUs, single
flight. The SQL of the signal_processing_cache index is in repository.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from pathlib import Path
from typing import Any

SUFFIX = ".gjs"


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
                entries.append((st.st_mtime_ns, e.name[: -len(SUFFIX)], st.st_size))
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
        self._calls: dict[Hashable, tuple[asyncio.Task[Any], list[int]]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def _forget(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        entry = self._calls.get(key)
        if entry is not None and entry[0] is task:
            del self._calls[key]

    async def do(self, key: Hashable, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        entry = self._calls.get(key)
        if entry is None:
            task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(fn())
            entry = (task, [0])
            self._calls[key] = entry
            task.add_done_callback(functools.partial(self._forget, key))
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
