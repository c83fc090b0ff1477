"""Storage-event signatures: HMAC-SHA256 over "<event_id>\\n<file_path>" with a shared secret."""
from __future__ import annotations

import hashlib
import hmac

from libs.errors import Unauthenticated


def sign(secret: str, event_id: str, file_path: str) -> str:
    return hmac.new(secret.encode(), f"{event_id}\n{file_path}".encode(), hashlib.sha256).hexdigest()


def verify(secret: str | None, event_id: str, file_path: str, signature: str) -> None:
    """With a secret configured the signature is mandatory; comparison is constant-time."""
    if secret is None:
        return
    if not signature:
        raise Unauthenticated("storage event signature is required (the server has an event secret)")
    expected = sign(secret, event_id, file_path)
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise Unauthenticated("storage event signature does not match")
