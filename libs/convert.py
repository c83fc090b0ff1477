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
