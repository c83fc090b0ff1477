"""Content store for the immutable C3D source files.

Callers (ingest, JIT signal, legacy re-processing) use the ContentStore interface only, so an
S3-compatible object store can be added as another implementation without touching them.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

from libs.storage.base import ContentStore, StoredObject, validate_relative_path
from libs.storage.local import LocalContentStore

# The stores opened (open_store) while a service registers, in that task: the server's health
# probe checks them next to the database (libs/grpc_server/server.py).
_opened: contextvars.ContextVar[list[ContentStore] | None] = contextvars.ContextVar("ghostly_stores_opened",
                                                                                    default=None)


@contextlib.contextmanager
def collect_opened() -> Iterator[list[ContentStore]]:
    """The list of the stores open_store returns inside the block (this task only)."""
    found: list[ContentStore] = []
    token = _opened.set(found)
    try:
        yield found
    finally:
        _opened.reset(token)


def open_store(root) -> ContentStore:
    """The configured store (a local directory today)."""
    store = LocalContentStore(root)
    found = _opened.get()
    if found is not None:
        found.append(store)
    from libs.tracing import traced_store   # spans for its operations when tracing is on
    return traced_store(store)


__all__ = ["ContentStore", "LocalContentStore", "StoredObject", "collect_opened", "open_store",
           "validate_relative_path"]
