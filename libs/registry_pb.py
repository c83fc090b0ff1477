"""Registry rows (patients, patient_calibrations) as API messages: one conversion for ingest
(PatientService replies) and statistics (GetPatient, ListPatients, ListPatientCalibrations)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ghostly.common.v1 import common_pb2
from libs.convert import to_timestamp

CALIBRATION_SOURCE = {
    "therapist_entered": common_pb2.CALIBRATION_SOURCE_THERAPIST_ENTERED,
    "assessment_session": common_pb2.CALIBRATION_SOURCE_ASSESSMENT_SESSION,
}
CALIBRATION_VALUES = (
    "mvc_left_v",
    "mvc_right_v",
    "duration_threshold_left_s",
    "duration_threshold_right_s",
    "target_contractions",
    "bfr_target_pressure_aop",
)


def calibration_pb(row: Mapping[str, Any], prefix: str = "") -> common_pb2.PatientCalibration:
    """A patient_calibrations row (its columns named ``prefix + column`` in a joined query)."""

    def col(name: str) -> Any:
        return row[prefix + name]

    source = col("source_session_id")
    msg = common_pb2.PatientCalibration(
        id=str(col("id")),
        patient_code=col("patient_code"),
        source=CALIBRATION_SOURCE.get(col("source"), common_pb2.CALIBRATION_SOURCE_UNSPECIFIED),
        source_session_id=str(source) if source else "",
        rule=col("rule") or "",
        created_by=col("created_by"),
        created_by_role=col("created_by_role"),
        created_at=to_timestamp(col("created_at")),
        notes=col("notes") or "",
    )
    for name in CALIBRATION_VALUES:
        if col(name) is not None:
            setattr(msg, name, col(name))
    return msg


def patient_pb(
    row: Mapping[str, Any], calibration: Mapping[str, Any] | None = None, calibration_prefix: str = ""
) -> common_pb2.Patient:
    """A patients row (with session_count) and, when given, its current calibration."""
    dob = row["date_of_birth"]
    msg = common_pb2.Patient(
        patient_code=row["patient_code"],
        id=str(row["id"]),
        therapist_id=str(row["therapist_id"]),
        first_name=row["first_name"],
        last_name=row["last_name"],
        date_of_birth=dob.isoformat() if dob else "",
        active=row["active"],
        created_at=to_timestamp(row["created_at"]),
        deactivated_at=to_timestamp(row["deactivated_at"]),
        session_count=row["session_count"],
    )
    if calibration is not None:
        msg.current_calibration.CopyFrom(calibration_pb(calibration, calibration_prefix))
    return msg
