"""Domain errors raised by service code; the gRPC interceptor maps them to status codes.

Service code raises these with a clear, user-facing message and never builds gRPC statuses
itself, so the mapping stays in one place (libs/grpc_server/interceptor.py).

Errors of libraries that know nothing of this vocabulary (the EMG core, libs.emg, stays free
of the services' code) are given a meaning here with `register` or `FOREIGN` and mapped like
the domain error they stand for (foreign_kind).
"""

from __future__ import annotations

import sys


class DomainError(Exception):
    """Base of errors whose message is safe and useful to show to the caller."""


class InvalidArgument(DomainError):
    """The request is malformed (bad id, bad range, malformed C3D, path traversal)."""


class NotFound(DomainError):
    """The referenced session/patient/channel does not exist."""


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    """The request is valid but the system is not in a state to serve it."""


class PermissionDenied(DomainError):
    pass


class Unauthenticated(DomainError):
    pass


class ResourceExhausted(DomainError):
    """A size limit was exceeded (upload too large, export over a format limit)."""


class DataLoss(DomainError):
    """Stored data no longer matches what was recorded (e.g. a C3D whose hash changed)."""


class Unavailable(DomainError):
    """A dependency (database, downstream service) is unreachable; retrying may succeed."""


class StoreError(DomainError):
    """The content store could not do what was asked (an I/O error, no permission, a file where
    a folder belongs...): the server's storage failed, not the request and not the database.
    INTERNAL, with this message (store-relative paths only). Raised by libs/storage for every
    OSError of its own operations."""


class StoreFull(StoreError):
    """The content store's file system is full (ENOSPC, EDQUOT): RESOURCE_EXHAUSTED."""


class StoreConflict(StoreError, FileExistsError):
    """The immutable path already holds other bytes: FAILED_PRECONDITION. Also a
    FileExistsError, which is what ContentStore.commit promises its callers for this case."""


# Foreign error classes, "module:ClassName" -> the domain error they mean. Named, not imported:
# the server bootstrap must not load the EMG core (numpy, scipy) to map its errors, and an
# instance of a class whose module was never imported cannot have been raised.
FOREIGN: dict[str, type[DomainError]] = {
    # A malformed C3D or bad analysis settings is the caller's input.
    "libs.emg.errors:EmgError": InvalidArgument,
    # The file is fine, the server's memory budget per analysis is not (not an EmgError).
    "libs.emg.errors:MemoryBudgetExceeded": ResourceExhausted,
}
_registered: list[tuple[type[BaseException], type[DomainError]]] = []


def register(cls: type[BaseException], kind: type[DomainError]) -> None:
    """Map the exceptions of class `cls` (and its subclasses) like `kind`, e.g. from the
    service that calls a library raising them."""
    _registered.append((cls, kind))


def foreign_kind(exc: BaseException) -> type[DomainError] | None:
    """The domain error a foreign exception stands for (register / FOREIGN), or None."""
    for cls, kind in _registered:
        if isinstance(exc, cls):
            return kind
    for name, kind in FOREIGN.items():
        module, _, qualname = name.partition(":")
        loaded = sys.modules.get(module)
        foreign = getattr(loaded, qualname, None) if loaded is not None else None
        if isinstance(foreign, type) and isinstance(exc, foreign):
            return kind
    return None
