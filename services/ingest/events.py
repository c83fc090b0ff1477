"""Storage-event signatures: HMAC-SHA256 over the whole IngestStoredFileRequest.

The signed message (documented in ingest.proto for the storage side) is five lines:
"ghostly-storage-event-v1", signed_at (Unix seconds), event_id, file_path and the SHA-256 of
the session metadata serialised deterministically; so a captured event cannot be replayed
with another patient, therapist or settings in its body, nor later than MAX_SKEW_S.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from ghostly.ingest.v1 import ingest_pb2
from libs.errors import Unauthenticated

VERSION = "ghostly-storage-event-v1"
MAX_SKEW_S = 300  # signed_at may differ this much from the server's clock (either way)


def digest(request: ingest_pb2.IngestStoredFileRequest) -> str:
    """SHA-256 of the signed content (what the replay store compares)."""
    return hashlib.sha256(_message(request)).hexdigest()


def _message(r: ingest_pb2.IngestStoredFileRequest) -> bytes:
    session = hashlib.sha256(r.session.SerializeToString(deterministic=True)).hexdigest()
    return "\n".join((VERSION, str(r.signed_at.seconds), r.event_id, r.file_path, session)).encode()


def sign(secret: str, request: ingest_pb2.IngestStoredFileRequest) -> str:
    """The signature of ``request`` (its signature field is ignored)."""
    return hmac.new(secret.encode(), _message(request), hashlib.sha256).hexdigest()


def signed(
    secret: str, request: ingest_pb2.IngestStoredFileRequest, now: float | None = None
) -> ingest_pb2.IngestStoredFileRequest:
    """``request`` stamped with signed_at = now and signed (for Python storage bridges, tests)."""
    out = ingest_pb2.IngestStoredFileRequest()
    out.CopyFrom(request)
    out.signed_at.seconds = int(time.time() if now is None else now)
    out.signature = sign(secret, out)
    return out


def verify(secret: str | None, request: ingest_pb2.IngestStoredFileRequest, now: float | None = None) -> None:
    """With a secret configured the signature and a recent signed_at are mandatory;
    comparison is constant-time."""
    if secret is None:
        return
    if not request.signature:
        raise Unauthenticated("storage event signature is required (the server has an event secret)")
    if not hmac.compare_digest(sign(secret, request), request.signature.strip().lower()):
        raise Unauthenticated("storage event signature does not match the request")
    skew = abs((time.time() if now is None else now) - request.signed_at.seconds)
    if not request.HasField("signed_at") or skew > MAX_SKEW_S:
        raise Unauthenticated(
            f"storage event signed_at is {skew:.0f} s away from the server's clock (at most {MAX_SKEW_S} s allowed)"
        )
