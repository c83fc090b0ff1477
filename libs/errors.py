"""Domain errors raised by service code; the gRPC interceptor maps them to status codes.

Service code raises these with a clear, user-facing message and never builds gRPC statuses
itself, so the mapping stays in one place (libs/grpc_server/interceptor.py).
"""


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
