"""Local-directory content store (the default). Objects are regular files under the root."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from libs.errors import InvalidArgument, NotFound
from libs.storage.base import ContentStore, Staging, StoredObject, validate_relative_path

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
        self.root.mkdir(parents=True, exist_ok=True)
        self._real_root = self.root.resolve()

    def resolve(self, path: str) -> Path:
        """Absolute path of a store-relative path; refuses anything that leaves the root
        (including through symlinks)."""
        rel = validate_relative_path(path)
        full = (self.root / rel)
        real = full.resolve()
        if real != self._real_root and self._real_root not in real.parents:
            raise InvalidArgument(f"file_path {path!r} resolves outside the content store")
        return real

    async def exists(self, path: str) -> bool:
        return self.resolve(path).is_file()

    async def stat(self, path: str) -> StoredObject:
        full = self.resolve(path)
        if not full.is_file():
            raise NotFound(f"no file {path!r} in the content store")
        digest = await asyncio.to_thread(_sha256_file, full)
        return StoredObject(validate_relative_path(path), full.stat().st_size, digest)

    @contextlib.contextmanager
    def local_path(self, path: str):
        full = self.resolve(path)
        if not full.is_file():
            raise NotFound(f"no file {path!r} in the content store")
        yield full

    @contextlib.asynccontextmanager
    async def staging(self):
        d = self.root / _STAGING_DIR
        d.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=d, suffix=".part")
        staging = _LocalStaging(self, Path(name), os.fdopen(fd, "wb"))
        try:
            yield staging
        finally:
            staging.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    async def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.resolve(path).unlink()


class _LocalStaging(Staging):
    def __init__(self, store: LocalContentStore, local: Path, handle):
        self.store, self.local, self._handle = store, local, handle
        self._hash = hashlib.sha256()
        self.size_bytes = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def write(self, chunk: bytes) -> None:
        # Chunks are small (<= the gRPC message limit): a blocking write is cheaper than a thread hop.
        self._handle.write(chunk)
        self._hash.update(chunk)
        self.size_bytes += len(chunk)

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    async def commit(self, path: str) -> StoredObject:
        self.close()
        target = self.store.resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = self.sha256
        try:
            # link() fails if the target exists: no silent overwrite of an immutable source file.
            os.link(self.local, target)
        except FileExistsError:
            if await asyncio.to_thread(_sha256_file, target) != digest:
                raise
        return StoredObject(validate_relative_path(path), self.size_bytes, digest)
