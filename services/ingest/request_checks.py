"""Every field of an ingest request checked before anything is stored.

A value the database would refuse (a CHECK, an int4 overflow, a timestamp outside years
1-9999) must be refused here with INVALID_ARGUMENT naming the field: found after the file was
stored or the session claimed, it would leave a failed session for a valid file (and a
corrected re-upload of the same bytes refused) or an orphan file. The analysis thresholds are
checked again by AnalysisSettings (settings_from_request); the bounds here are the storage
ones and the documented ranges of ingest.proto.
"""

from __future__ import annotations

import math

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2
from libs.convert import SESSION_TYPE
from libs.errors import InvalidArgument

INT4_MAX = (1 << 31) - 1
# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_TS_MIN, _TS_MAX = -62135596800, 253402300799
MAX_TARGET_CONTRACTIONS = 1000  # as patient_calibrations (migration 016)
MAX_MVC_V = 0.1  # 100 mV: no surface EMG envelope reaches it (016)
MAX_DURATION_THRESHOLD_S = 60.0  # as patient_calibrations (016)
MAX_PROTOCOL_DAY = 365  # the trial protocol has 14 days; follow-ups may come later
MAX_TEXT = 200  # free-text BFR fields (device, cuff, serial number)
SESSION_TYPES = {common_pb2.SESSION_TYPE_UNSPECIFIED, *SESSION_TYPE.values()}


def _has(msg, name: str) -> bool:
    return msg.HasField(name)


def _int_range(value: int, field: str, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise InvalidArgument(f"{field} must be an integer from {lo} to {hi}, got {value}")


def _number(
    value: float, field: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number, got {value}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise InvalidArgument(f"{field} must be {'>' if lo_open else '>='} {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise InvalidArgument(f"{field} must be <= {hi:g}, got {value:g}")


def check_timestamp(ts, field: str) -> None:
    if not (_TS_MIN <= ts.seconds <= _TS_MAX and 0 <= ts.nanos <= 999_999_999):
        raise InvalidArgument(
            f"{field} must be a time in the years 1-9999 (seconds {ts.seconds}, nanos {ts.nanos} given)"
        )


def check_options(o: ingest_pb2.AnalysisOptions, prefix: str) -> None:
    if _has(o, "game_difficulty_level"):
        _int_range(o.game_difficulty_level, f"{prefix}.game_difficulty_level", 1, 10)
    if _has(o, "target_contractions"):
        _int_range(o.target_contractions, f"{prefix}.target_contractions", 1, MAX_TARGET_CONTRACTIONS)
    if _has(o, "mvc_threshold_percentage"):
        _number(o.mvc_threshold_percentage, f"{prefix}.mvc_threshold_percentage", 0.0, 1.0, lo_open=True)
    for name in ("mvc_user_left", "mvc_user_right"):
        if _has(o, name):
            _number(getattr(o, name), f"{prefix}.{name}", 0.0, MAX_MVC_V, lo_open=True)
    for name in ("duration_threshold_s", "duration_threshold_left_s", "duration_threshold_right_s"):
        if _has(o, name):
            _number(getattr(o, name), f"{prefix}.{name}", 0.0, MAX_DURATION_THRESHOLD_S, lo_open=True)
    if _has(o, "performance_weights"):
        w = o.performance_weights
        for name in ("compliance", "symmetry", "effort", "game"):
            _number(getattr(w, name), f"{prefix}.performance_weights.{name}", 0.0, 1.0)


def check_bfr(b: ingest_pb2.BfrInput, prefix: str) -> None:
    for name in ("target_pressure_aop", "actual_pressure_aop", "max_pressure_deviation_aop"):
        if name == "actual_pressure_aop" or _has(b, name):
            _number(getattr(b, name), f"{prefix}.{name}", 0.0, 100.0)
    for name in (
        "pressure_stability_coefficient",
        "safety_violations_duration_s",
        "patient_aop_baseline_mmhg",
        "patient_limb_circumference_cm",
        "bfr_session_duration_minutes",
    ):
        if _has(b, name):
            _number(getattr(b, name), f"{prefix}.{name}", 0.0)
    if _has(b, "monitoring_frequency_hz"):
        _number(b.monitoring_frequency_hz, f"{prefix}.monitoring_frequency_hz", 0.0, lo_open=True)
    if _has(b, "safety_violations_count"):
        _int_range(b.safety_violations_count, f"{prefix}.safety_violations_count", 0, INT4_MAX)
    for name in ("cuff_size", "cuff_position", "monitoring_device", "device_serial_number", "device_calibration_date"):
        value = getattr(b, name)
        if len(value) > MAX_TEXT:
            raise InvalidArgument(f"{prefix}.{name} must be at most {MAX_TEXT} characters, got {len(value)}")
        if "\x00" in value:
            raise InvalidArgument(f"{prefix}.{name} must not contain NUL characters")


def check_session(meta: ingest_pb2.SessionMetadata, prefix: str = "session") -> None:
    """Raise InvalidArgument for the first field outside what can be stored."""
    for name in ("patient_code", "therapist_id"):
        value = getattr(meta, name)
        if len(value) > MAX_TEXT or "\x00" in value:
            raise InvalidArgument(f"{prefix}.{name} must be at most {MAX_TEXT} characters without NUL")
    if _has(meta, "session_date"):
        check_timestamp(meta.session_date, f"{prefix}.session_date")
    if meta.session_type not in SESSION_TYPES:
        raise InvalidArgument(f"{prefix}.session_type {meta.session_type} is not a known session type")
    if _has(meta, "protocol_day"):
        _int_range(meta.protocol_day, f"{prefix}.protocol_day", 1, MAX_PROTOCOL_DAY)
    if _has(meta, "rpe_post_session"):
        _int_range(meta.rpe_post_session, f"{prefix}.rpe_post_session", 0, 10)
    if _has(meta, "game_points"):
        _int_range(meta.game_points, f"{prefix}.game_points", 0, INT4_MAX)
    if _has(meta, "game_points_max"):
        _int_range(meta.game_points_max, f"{prefix}.game_points_max", 1, INT4_MAX)
    if _has(meta, "bfr"):
        check_bfr(meta.bfr, f"{prefix}.bfr")
    if _has(meta, "options"):
        check_options(meta.options, f"{prefix}.options")
