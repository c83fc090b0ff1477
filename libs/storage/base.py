"""The content-store interface and its path rules (shared by every implementation)."""

from __future__ import annotations

import abc
import contextlib
import errno as errno_mod
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from libs.errors import InvalidArgument, StoreError, StoreFull

MAX_PATH_LENGTH = 512
_SEGMENT = re.compile(r"^[A-Za-z0-9._\- ()+]+$")


def validate_relative_path(path: str) -> str:
    """Normalise a store-relative path or raise InvalidArgument.

    Refused: empty, absolute, '..' or '.' segments, backslashes, control characters, hidden
    segments (leading '.'), characters outside a conservative set, over-long paths."""
    if not path or not path.strip():
        raise InvalidArgument("file_path is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidArgument(f"file_path is longer than {MAX_PATH_LENGTH} characters")
    if "\\" in path or any(ord(c) < 32 for c in path):
        raise InvalidArgument("file_path contains backslashes or control characters")
    p = PurePosixPath(path)
    if p.is_absolute():
        raise InvalidArgument(f"file_path must be relative to the store root, got absolute path {path!r}")
    parts = [s for s in path.split("/") if s != ""]
    for seg in parts:
        if seg in (".", ".."):
            raise InvalidArgument(f"file_path must not contain '.' or '..' segments: {path!r}")
        if seg.startswith("."):
            raise InvalidArgument(f"file_path must not contain hidden segments: {path!r}")
        if not _SEGMENT.match(seg):
            raise InvalidArgument(f"file_path segment {seg!r} has characters outside [A-Za-z0-9._-() +]")
    return "/".join(parts)


_FULL = frozenset({errno_mod.ENOSPC, errno_mod.EDQUOT})


def store_error(exc: OSError, action: str, path: str | None = None) -> StoreError:
    """The StoreError for an OSError of a store operation: "content store: cannot <action>
    '<path>': <reason> (<ERRNO>)". Only the store-relative path is named (the absolute one
    stays in the chained cause, for the logs)."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    if exc.errno is not None and exc.errno in errno_mod.errorcode:
        reason += f" ({errno_mod.errorcode[exc.errno]})"
    where = f" {path!r}" if path else ""
    cls = StoreFull if exc.errno in _FULL else StoreError
    return cls(f"content store: cannot {action}{where}: {reason}")


@contextlib.contextmanager
def store_errors(action: str, path: str | None = None) -> Iterator[None]:
    """Turn the OSErrors of the block into StoreError (store_error); StoreErrors pass."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise store_error(exc, action, path) from exc


@dataclass(frozen=True)
class StoredObject:
    path: str  # store-relative
    size_bytes: int
    sha256: str  # lowercase hex


class ContentStore(abc.ABC):
    """Immutable objects addressed by store-relative paths.

    Errors: NotFound (no such object), InvalidArgument (a path that is not allowed),
    StoreConflict from commit (the path holds other bytes), and StoreError (StoreFull when the
    disk is full) for every I/O failure of the store itself: never a bare OSError."""

    @abc.abstractmethod
    async def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    async def stat(self, path: str) -> StoredObject:
        """Size and SHA-256 of a stored object. NotFound if absent."""

    @abc.abstractmethod
    def local_path(self, path: str) -> LocalPathContext:
        """A local file with the object's bytes for readers that need a path (ezc3d), as
        ``async with store.local_path(p) as local`` (services: a remote store downloads
        without blocking the event loop) or ``with ...`` (scripts). A remote store downloads to
        a temporary file, checksum verified (DataLoss on a mismatch), for the context."""

    @abc.abstractmethod
    def staging(self) -> contextlib.AbstractAsyncContextManager[Staging]:
        """A temporary object being written (upload); committed with Staging.commit."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None: ...

    async def check(self) -> str | None:
        """Health probe: None when the store can be read and written, else what is wrong (for
        the health log). An implementation without a probe is taken as healthy."""
        return None

    def identity(self) -> str:
        """Where the objects live (e.g. file:///srv/c3d, s3://bucket/prefix): processes whose
        stores have the same identity see the same objects (ingest replicas share work)."""
        return type(self).__name__

    async def sweep_staging(self, older_than_s: float) -> int:
        """Remove staging files older than `older_than_s` seconds (uploads of a process that
        died mid-stream); returns how many. A store without local staging has none."""
        return 0


class Staging(abc.ABC):
    """An upload in progress: bytes are hashed while written; nothing is visible until commit."""

    size_bytes: int
    local: Path

    @property
    def sha256(self) -> str:
        """Lowercase hex digest of the bytes written so far."""
        raise NotImplementedError

    @abc.abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    async def commit(self, path: str) -> StoredObject:
        """Publish under `path` (atomic). If `path` already holds the same bytes, keep it; if it
        holds different bytes, raise StoreConflict (a FileExistsError)."""


class FileStaging(Staging):
    """A Staging written to a local file of the store (its staging folder), hashed on the way:
    what every store's staging has in common; each store publishes it in its own commit."""

    def __init__(self, store: Any, local: Path, handle: BinaryIO):
        self.store, self.local, self._handle = store, local, handle
        self._hash = hashlib.sha256()
        self.size_bytes = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def write(self, chunk: bytes) -> None:
        # Chunks are small (<= the gRPC message limit): a blocking write is cheaper than a thread hop.
        try:
            self._handle.write(chunk)
        except OSError as exc:
            raise store_error(exc, "write the upload to the staging folder") from exc
        self._hash.update(chunk)
        self.size_bytes += len(chunk)

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class LocalPathContext:
    """A synchronous context manager usable with ``async with`` too (a local file needs no
    I/O to be handed over): what LocalContentStore.local_path returns."""

    def __init__(self, cm: contextlib.AbstractContextManager[Path]):
        self._cm = cm

    def __enter__(self) -> Path:
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)

    async def __aenter__(self) -> Path:
        return self._cm.__enter__()

    async def __aexit__(self, *exc):
        return self._cm.__exit__(*exc)
