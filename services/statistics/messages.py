"""StatisticsService: database rows -> messages, and the page tokens of the list RPCs."""

from __future__ import annotations

import uuid

import asyncpg

from ghostly.common.v1 import common_pb2
from ghostly.statistics.v1 import statistics_pb2 as pb
from libs import paging
from libs.convert import (
    PROCESSING_STATUS,
    SESSION_TYPE,
    TIMESTAMP_MAX_US,
    TIMESTAMP_MIN_US,
    to_timestamp,
)
from libs.registry_pb import calibration_pb, patient_pb

COMPONENTS = ("compliance", "symmetry", "effort", "game")


def session_type(name: str | None) -> common_pb2.SessionType:
    return SESSION_TYPE.get(name or "", common_pb2.SESSION_TYPE_UNSPECIFIED)


def weights(w: dict | None) -> common_pb2.PerformanceWeights:
    w = w or {}
    return common_pb2.PerformanceWeights(**{k: float(w.get(k) or 0.0) for k in COMPONENTS})


def excluded_components(w: dict | None) -> dict[str, str]:
    """Components that were not available (README: weight 0 AND listed under "excluded")."""
    excluded = (w or {}).get("excluded") or {}
    return {k: str(v) for k, v in excluded.items() if not (w or {}).get(k)}


def session(r: asyncpg.Record) -> pb.Session:
    return pb.Session(
        id=str(r["id"]),
        file_path=r["file_path"],
        file_hash=r["file_hash"],
        file_size_bytes=r["file_size_bytes"],
        patient_id=r["patient_id"] or "",
        therapist_id=str(r["therapist_id"]) if r["therapist_id"] else "",
        session_label=r["session_id"] or "",
        session_date=to_timestamp(r["session_date"]),
        session_type=session_type(r["session_type"]),
        protocol_day=r["protocol_day"] or 0,
        original_sampling_rate=r["original_sampling_rate"],
        original_duration_seconds=r["original_duration_seconds"],
        original_sample_count=r["original_sample_count"],
        channel_names=r["channel_names"] or (),
        channel_count=r["channel_count"],
        processing_version=r["processing_version"],
        processing_status=PROCESSING_STATUS.get(r["processing_status"], common_pb2.PROCESSING_STATUS_UNSPECIFIED),
        processing_time_ms=r["processing_time_ms"] or 0,
        created_at=to_timestamp(r["created_at"]),
        processed_at=to_timestamp(r["processed_at"]),
        error_message=r["error_message"] or "",
    )


# emg_statistics columns that are NULL only for a channel migrated from the legacy system whose
# analytics lacked the value (migration 023): reported in missing_fields, never as a measured 0.
NULLABLE_FIGURES = (
    "total_contractions",
    "good_contractions_intensity",
    "good_contractions_duration",
    "good_contractions_both",
    "completion_rate",
    "intensity_rate",
    "duration_rate",
    "muscle_compliance_score",
    "mvc_peak_value",
)


def channel(r: asyncpg.Record) -> pb.ChannelStatistics:
    return pb.ChannelStatistics(
        missing_fields=[f for f in NULLABLE_FIGURES if r[f] is None],
        id=str(r["id"]),
        session_id=str(r["session_id"]),
        channel_name=r["channel_name"],
        mvc_peak_value=r["mvc_peak_value"],
        mvc_rms_value=r["mvc_rms_value"],
        mvc_confidence_score=r["mvc_confidence_score"],
        mvc_calculation_method=r["mvc_calculation_method"],
        total_contractions=r["total_contractions"],
        good_contractions_intensity=r["good_contractions_intensity"],
        good_contractions_duration=r["good_contractions_duration"],
        good_contractions_both=r["good_contractions_both"],
        completion_rate=r["completion_rate"],
        intensity_rate=r["intensity_rate"],
        duration_rate=r["duration_rate"],
        muscle_compliance_score=r["muscle_compliance_score"],
        signal_quality_score=r["signal_quality_score"],
        noise_level_db=r["noise_level_db"],
        artifacts_detected=r["artifacts_detected"] or 0,
        processing_confidence=r["processing_confidence"],
        processing_pipeline=r["processing_pipeline"],
        processing_version=r["processing_version"],
        processing_time_ms=r["processing_time_ms"] or 0,
        mvc_threshold_percentage=r["mvc_threshold_percentage"],
        duration_threshold_seconds=r["duration_threshold_seconds"],
        processed_at=to_timestamp(r["processed_at"]),
        side=r["side"] or "",
        signal_flags=r["signal_flags"] or (),
        usable=r["usable"],
    )


# --------------------------------------------------------------------------- scores


def performance(r: asyncpg.Record) -> pb.PerformanceScore:
    w = r["performance_weights"] or {}
    excluded = excluded_components(w)
    requested = w.get("requested") or {k: w.get(k) for k in COMPONENTS}
    pressure = r["bfr_pressure_aop"]
    return pb.PerformanceScore(
        id=str(r["id"]),
        session_id=str(r["sid"]),
        overall_performance_score=r["overall_performance_score"],
        compliance_score=None if "compliance" in excluded else r["compliance_score"],
        symmetry_score=None if "symmetry" in excluded else r["symmetry_score"],
        effort_score=None if "effort" in excluded else r["effort_score"],
        game_score=None if "game" in excluded else r["game_score"],
        effective_weights=weights(w),
        requested_weights=weights(requested),
        excluded_components=excluded,
        bfr_pressure_aop=pressure,
        bfr_compliance_gate=None if pressure is None else r["bfr_compliance_gate"],
        rpe_post_session=r["rpe_post_session"],
        game_points_achieved=r["game_points_achieved"],
        game_points_maximum=r["game_points_maximum"],
        session_duration_minutes=r["session_duration_minutes"],
        left_muscle_completion_rate=r["left_muscle_completion_rate"],
        left_muscle_intensity_rate=r["left_muscle_intensity_rate"],
        left_muscle_duration_rate=r["left_muscle_duration_rate"],
        right_muscle_completion_rate=r["right_muscle_completion_rate"],
        right_muscle_intensity_rate=r["right_muscle_intensity_rate"],
        right_muscle_duration_rate=r["right_muscle_duration_rate"],
        calculated_at=to_timestamp(r["calculated_at"]),
        scoring_config_version=r["scoring_config_version"] or 0,
        outcome=outcome(r),
    )


def outcome(r: asyncpg.Record) -> pb.SessionOutcome | None:
    """The session_outcomes row joined to a score (unset when none was recorded)."""
    if not r["has_outcome"]:
        return None
    return pb.SessionOutcome(
        rpe_post_session=r["o_rpe"],
        game_points=r["o_game_points"],
        game_points_max=r["o_game_points_max"],
        bfr_actual_pressure_aop=r["o_bfr_pressure"],
        recorded_by=r["o_recorded_by"] or "",
        recorded_at=to_timestamp(r["o_recorded_at"]),
    )


def calibration(r: asyncpg.Record) -> common_pb2.PatientCalibration:
    """A patient_calibrations row read with the `cal_` column prefix (queries.CALIBRATION_COLUMNS)."""
    return calibration_pb(r, "cal_")


def patient(r: asyncpg.Record) -> common_pb2.Patient:
    return patient_pb(r, r if r["cal_id"] is not None else None, "cal_")


# --------------------------------------------------------------------------- page tokens


def _patient_cursor(data: dict) -> str:
    code = data["c"]
    if not isinstance(code, str) or not code:
        raise ValueError("patient code")
    return code


def encode_patient_page_token(patient_code: str, filters: str) -> str:
    return paging.encode({"c": patient_code}, filters)


def encode_page_token(date_us: int | None, session_id: str, filters: str) -> str:
    return paging.encode({"d": date_us, "i": session_id}, filters)


def _cursor(data: dict) -> tuple[int | None, uuid.UUID]:
    date_us, sid = data["d"], uuid.UUID(data["i"])
    if date_us is not None and not (isinstance(date_us, int) and TIMESTAMP_MIN_US <= date_us <= TIMESTAMP_MAX_US):
        raise ValueError("date")
    return date_us, sid


def decode_page_token(token: str, filters: str) -> tuple[int | None, uuid.UUID]:
    return paging.decode(token, filters, _cursor)


def decode_patient_page_token(token: str, filters: str) -> str:
    return paging.decode(token, filters, _patient_cursor)
