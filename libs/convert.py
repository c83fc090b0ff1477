"""Conversions between request/row values and protobuf values shared by the servicers: UUIDs,
timestamps and date windows, and the enum <-> database string maps of the common messages."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from ghostly.common.v1 import common_pb2
from libs.errors import InvalidArgument

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)

# The Timestamp range of the protobuf spec (0001-01-01 .. 9999-12-31), which datetime covers.
TIMESTAMP_MIN_S, TIMESTAMP_MAX_S = -62_135_596_800, 253_402_300_799
TIMESTAMP_MIN_US, TIMESTAMP_MAX_US = TIMESTAMP_MIN_S * 1_000_000, TIMESTAMP_MAX_S * 1_000_000 + 999_999

# therapy_sessions.session_type / processing_status <-> the common enums (the one map of each).
SESSION_TYPE: dict[str, common_pb2.SessionType] = {
    "baseline": common_pb2.SESSION_TYPE_BASELINE,
    "training": common_pb2.SESSION_TYPE_TRAINING,
    "assessment": common_pb2.SESSION_TYPE_ASSESSMENT,
}
SESSION_TYPE_NAME: dict[common_pb2.SessionType, str] = {v: k for k, v in SESSION_TYPE.items()}
PROCESSING_STATUS: dict[str, common_pb2.ProcessingStatus] = {
    "pending": common_pb2.PROCESSING_STATUS_PENDING,
    "processing": common_pb2.PROCESSING_STATUS_PROCESSING,
    "completed": common_pb2.PROCESSING_STATUS_COMPLETED,
    "failed": common_pb2.PROCESSING_STATUS_FAILED,
}
PROCESSING_STATUS_NAME: dict[common_pb2.ProcessingStatus, str] = {v: k for k, v in PROCESSING_STATUS.items()}


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
    us = datetime_micros(value)
    return Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def timestamp_micros(ts: Timestamp) -> int:
    """Microseconds since the epoch of a protobuf Timestamp (nanoseconds truncated)."""
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def datetime_micros(value: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (value - EPOCH) // MICROSECOND


def from_micros(us: int) -> dt.datetime:
    """The aware UTC datetime `us` microseconds after the epoch."""
    return EPOCH + dt.timedelta(microseconds=us)


def to_datetime(ts: Timestamp, field: str = "timestamp") -> dt.datetime:
    """A protobuf Timestamp as an aware UTC datetime; INVALID_ARGUMENT naming `field` when it is
    outside the range of the spec (0001-01-01 .. 9999-12-31, nanos 0..999999999)."""
    if not (TIMESTAMP_MIN_S <= ts.seconds <= TIMESTAMP_MAX_S and 0 <= ts.nanos <= 999_999_999):
        raise InvalidArgument(
            f"{field} is not a valid timestamp (0001-01-01 .. 9999-12-31, "
            f"nanos 0..999999999): seconds={ts.seconds}, nanos={ts.nanos}"
        )
    return from_micros(timestamp_micros(ts))


class _HasFields(Protocol):
    def HasField(self, field_name: str) -> bool: ...


def request_instant(request: _HasFields, field: str) -> dt.datetime | None:
    """The Timestamp field `field` of `request` as a datetime; None when unset."""
    if not request.HasField(field):
        return None
    ts: Timestamp = getattr(request, field)
    return to_datetime(ts, field)


def request_window(
    request: _HasFields, field_from: str = "date_from", field_to: str = "date_to"
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The half-open window [field_from, field_to) of a request; either end may be unset.
    INVALID_ARGUMENT when both are set and the start is not before the end."""
    lo = request_instant(request, field_from)
    hi = request_instant(request, field_to)
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidArgument(f"{field_from} must be before {field_to} ({lo.isoformat()} >= {hi.isoformat()})")
    return lo, hi


def no_nul(value: Any) -> Any:
    """PostgreSQL text/jsonb cannot hold NUL: strings from C3D files or requests may. Replaced
    by U+FFFD, recursively through dicts, lists and tuples."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {no_nul(k): no_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(no_nul(v) for v in value)
    return value
