"""Local-directory content store (the default). Objects are regular files under the root.

Every OSError of the store's own operations comes out as libs.errors.StoreError (StoreFull for
a full disk, StoreConflict when an immutable path holds other bytes), so the gRPC layer can
tell a failing store from a failing database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

from libs.errors import InvalidArgument, NotFound, StoreConflict
from libs.storage.base import (
    ContentStore,
    FileStaging,
    LocalPathContext,
    StoredObject,
    store_error,
    store_errors,
    validate_relative_path,
)

log = logging.getLogger("ghostly.storage")

_STAGING_DIR = ".staging"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class LocalContentStore(ContentStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # Not fatal: the service starts, its health probe (check) reports the store, and
            # every operation fails with StoreError until the directory is usable.
            log.warning("content store root %s cannot be created: %s", self.root, exc)
        self._real_root = self.root.resolve()

    def resolve(self, path: str) -> Path:
        """Absolute path of a store-relative path; refuses anything that leaves the root
        (including through symlinks)."""
        rel = validate_relative_path(path)
        full = self.root / rel
        with store_errors("resolve", rel):
            real = full.resolve()
        if real != self._real_root and self._real_root not in real.parents:
            raise InvalidArgument(f"file_path {path!r} resolves outside the content store")
        return real

    def _is_file(self, full: Path, path: str) -> bool:
        with store_errors("read", path):
            return full.is_file()

    async def exists(self, path: str) -> bool:
        return self._is_file(self.resolve(path), path)

    async def stat(self, path: str) -> StoredObject:
        full = self.resolve(path)
        if not self._is_file(full, path):
            raise NotFound(f"no file {path!r} in the content store")
        with store_errors("read", path):
            digest = await asyncio.to_thread(_sha256_file, full)
            size = full.stat().st_size
        return StoredObject(validate_relative_path(path), size, digest)

    def local_path(self, path: str) -> LocalPathContext:
        return LocalPathContext(self._local_path(path))

    @contextlib.contextmanager
    def _local_path(self, path: str):
        full = self.resolve(path)
        if not self._is_file(full, path):
            raise NotFound(f"no file {path!r} in the content store")
        yield full

    @contextlib.asynccontextmanager
    async def staging(self):
        d = self.root / _STAGING_DIR
        with store_errors("start an upload in the staging folder"):
            d.mkdir(exist_ok=True)
            fd, name = tempfile.mkstemp(dir=d, suffix=".part")
        staging = _LocalStaging(self, Path(name), os.fdopen(fd, "wb"))
        try:
            yield staging
        finally:
            # What matters was reported by write/commit; a failure to tidy up here is only
            # logged (it must not hide the call's own outcome).
            try:
                staging.close()
            except OSError as exc:
                log.warning("content store: closing staging file %s failed: %s", name, exc)
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("content store: staging file %s not removed: %s", name, exc)

    async def delete(self, path: str) -> None:
        full = self.resolve(path)
        with store_errors("delete", path), contextlib.suppress(FileNotFoundError):
            full.unlink()

    async def check(self) -> str | None:
        return await asyncio.to_thread(self._probe)

    def identity(self) -> str:
        return f"file://{self._real_root}"

    async def sweep_staging(self, older_than_s: float) -> int:
        return await asyncio.to_thread(self._sweep_staging, older_than_s)

    def _sweep_staging(self, older_than_s: float) -> int:
        d = self.root / _STAGING_DIR
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise store_error(exc, "sweep the staging folder") from exc
        for entry in entries:
            try:
                if entry.name.endswith(".part") and entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass  # finished meanwhile
            except OSError as exc:
                log.warning("content store: stale staging file %s not removed: %s", entry.path, exc)
        if removed:
            log.info("content store: removed %d staging files older than %.0f s", removed, older_than_s)
        return removed

    def _probe(self) -> str | None:
        """Readable (the root is a directory that lists) and writable (a file can be created,
        written and removed in the staging folder, as an upload does)."""
        try:
            if not self.root.is_dir():
                return f"content store root {self.root} is not a directory"
            with os.scandir(self.root) as entries:
                next(entries, None)
        except OSError as exc:
            return f"content store root {self.root} cannot be read: {exc}"
        try:
            d = self.root / _STAGING_DIR
            d.mkdir(exist_ok=True)
            fd, name = tempfile.mkstemp(dir=d, prefix="health-", suffix=".probe")
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as exc:
            return f"content store {self.root} cannot be written: {exc}"
        return None


class _LocalStaging(FileStaging):
    store: LocalContentStore

    async def commit(self, path: str) -> StoredObject:
        with store_errors("write the upload to the staging folder"):
            self.close()  # flushes: a full disk may only show here
        target = self.store.resolve(path)
        rel = validate_relative_path(path)
        with store_errors("create the folder of", rel):
            target.parent.mkdir(parents=True, exist_ok=True)
        digest = self.sha256
        try:
            # link() fails if the target exists: no silent overwrite of an immutable source file.
            os.link(self.local, target)
        except FileExistsError:
            with store_errors("read", rel):
                same = await asyncio.to_thread(_sha256_file, target) == digest
            if not same:
                raise StoreConflict(
                    f"content store: {rel!r} already holds different bytes (stored files are immutable)"
                ) from None
        except OSError as exc:
            raise store_error(exc, "publish", rel) from exc
        return StoredObject(rel, self.size_bytes, digest)
