"""Content store for the immutable C3D source files.

Callers (ingest, JIT signal, legacy re-processing) use the ContentStore interface only: a local
directory (libs.storage.local, the default) or an S3-compatible bucket (libs.storage.s3),
chosen by GHOSTLY_STORE_URL (file://<dir> or s3://bucket/prefix) through open_store.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from urllib.parse import unquote

from libs.storage.base import ContentStore, StoredObject, validate_relative_path
from libs.storage.local import LocalContentStore

# The stores opened (open_store) while a service registers, in that task: the server's health
# probe checks them next to the database (libs/grpc_server/server.py).
_opened: contextvars.ContextVar[list[ContentStore] | None] = contextvars.ContextVar(
    "ghostly_stores_opened", default=None
)


@contextlib.contextmanager
def collect_opened() -> Iterator[list[ContentStore]]:
    """The list of the stores open_store returns inside the block (this task only)."""
    found: list[ContentStore] = []
    token = _opened.set(found)
    try:
        yield found
    finally:
        _opened.reset(token)


def open_store(location, *, on_stop: list | None = None) -> ContentStore:
    """The configured store: ``location`` is a directory (a path, or a file:// URL) or an
    s3://bucket/prefix URL (libs.storage.s3: endpoint, credentials and region from the
    standard AWS_* variables). A store with connections to close appends its closing
    coroutine function to ``on_stop`` (a service's ServiceContext.on_stop) when given."""
    store = _open(location)
    if on_stop is not None and hasattr(store, "aclose"):
        on_stop.append(store.aclose)
    found = _opened.get()
    if found is not None:
        found.append(store)
    from libs.tracing import traced_store  # spans for its operations when tracing is on

    return traced_store(store)


def _open(location) -> ContentStore:
    if isinstance(location, str):
        text = location.strip()
        if text.startswith("s3://"):
            from libs.storage.s3 import S3ContentStore

            return S3ContentStore(text)
        if text.startswith("file://"):
            return LocalContentStore(unquote(text[len("file://") :]))
        if "://" in text:
            raise ValueError(f"content store URL {location!r}: only file:// and s3:// are supported")
    return LocalContentStore(location)


__all__ = [
    "ContentStore",
    "LocalContentStore",
    "StoredObject",
    "collect_opened",
    "open_store",
    "validate_relative_path",
]
