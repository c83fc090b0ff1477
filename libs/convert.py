"""Conversions between request/row values and protobuf values shared by the servicers."""
from __future__ import annotations

import datetime as dt
import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from libs.errors import InvalidArgument

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICROSECOND = dt.timedelta(microseconds=1)


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """`value` as a UUID, or INVALID_ARGUMENT naming `field` (and what was sent, shortened)."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a UUID, got {value[:80]!r}") from None


def to_timestamp(value: dt.datetime | None) -> Timestamp | None:
    """An aware datetime as a protobuf Timestamp (microsecond precision); None stays None."""
    if value is None:
        return None
    us = (value - EPOCH) // MICROSECOND
    return Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def no_nul(value):
    """PostgreSQL text/jsonb cannot hold NUL: strings from C3D files or requests may. Replaced
    by U+FFFD, recursively through dicts, lists and tuples."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {no_nul(k): no_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(no_nul(v) for v in value)
    return value
