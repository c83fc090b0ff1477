"""Content store for the immutable C3D source files.

Callers (ingest, JIT signal, legacy re-processing) use the ContentStore interface only, so an
S3-compatible object store can be added as another implementation without touching them.
"""
from libs.storage.base import ContentStore, StoredObject, validate_relative_path
from libs.storage.local import LocalContentStore


def open_store(root) -> ContentStore:
    """The configured store (a local directory today)."""
    return LocalContentStore(root)


__all__ = ["ContentStore", "LocalContentStore", "StoredObject", "open_store", "validate_relative_path"]
