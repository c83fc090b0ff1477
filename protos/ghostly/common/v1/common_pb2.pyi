import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProcessingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROCESSING_STATUS_UNSPECIFIED: _ClassVar[ProcessingStatus]
    PROCESSING_STATUS_PENDING: _ClassVar[ProcessingStatus]
    PROCESSING_STATUS_PROCESSING: _ClassVar[ProcessingStatus]
    PROCESSING_STATUS_COMPLETED: _ClassVar[ProcessingStatus]
    PROCESSING_STATUS_FAILED: _ClassVar[ProcessingStatus]

class SessionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_TYPE_UNSPECIFIED: _ClassVar[SessionType]
    SESSION_TYPE_BASELINE: _ClassVar[SessionType]
    SESSION_TYPE_TRAINING: _ClassVar[SessionType]
    SESSION_TYPE_ASSESSMENT: _ClassVar[SessionType]

class CalibrationSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALIBRATION_SOURCE_UNSPECIFIED: _ClassVar[CalibrationSource]
    CALIBRATION_SOURCE_THERAPIST_ENTERED: _ClassVar[CalibrationSource]
    CALIBRATION_SOURCE_ASSESSMENT_SESSION: _ClassVar[CalibrationSource]
PROCESSING_STATUS_UNSPECIFIED: ProcessingStatus
PROCESSING_STATUS_PENDING: ProcessingStatus
PROCESSING_STATUS_PROCESSING: ProcessingStatus
PROCESSING_STATUS_COMPLETED: ProcessingStatus
PROCESSING_STATUS_FAILED: ProcessingStatus
SESSION_TYPE_UNSPECIFIED: SessionType
SESSION_TYPE_BASELINE: SessionType
SESSION_TYPE_TRAINING: SessionType
SESSION_TYPE_ASSESSMENT: SessionType
CALIBRATION_SOURCE_UNSPECIFIED: CalibrationSource
CALIBRATION_SOURCE_THERAPIST_ENTERED: CalibrationSource
CALIBRATION_SOURCE_ASSESSMENT_SESSION: CalibrationSource

class Contraction(_message.Message):
    __slots__ = ("index", "start_s", "end_s", "duration_s", "peak_amplitude", "mean_amplitude", "meets_intensity", "meets_duration", "good", "partially_masked", "masked_s")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    PEAK_AMPLITUDE_FIELD_NUMBER: _ClassVar[int]
    MEAN_AMPLITUDE_FIELD_NUMBER: _ClassVar[int]
    MEETS_INTENSITY_FIELD_NUMBER: _ClassVar[int]
    MEETS_DURATION_FIELD_NUMBER: _ClassVar[int]
    GOOD_FIELD_NUMBER: _ClassVar[int]
    PARTIALLY_MASKED_FIELD_NUMBER: _ClassVar[int]
    MASKED_S_FIELD_NUMBER: _ClassVar[int]
    index: int
    start_s: float
    end_s: float
    duration_s: float
    peak_amplitude: float
    mean_amplitude: float
    meets_intensity: bool
    meets_duration: bool
    good: bool
    partially_masked: bool
    masked_s: float
    def __init__(self, index: _Optional[int] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., duration_s: _Optional[float] = ..., peak_amplitude: _Optional[float] = ..., mean_amplitude: _Optional[float] = ..., meets_intensity: _Optional[bool] = ..., meets_duration: _Optional[bool] = ..., good: _Optional[bool] = ..., partially_masked: _Optional[bool] = ..., masked_s: _Optional[float] = ...) -> None: ...

class PerformanceWeights(_message.Message):
    __slots__ = ("compliance", "symmetry", "effort", "game")
    COMPLIANCE_FIELD_NUMBER: _ClassVar[int]
    SYMMETRY_FIELD_NUMBER: _ClassVar[int]
    EFFORT_FIELD_NUMBER: _ClassVar[int]
    GAME_FIELD_NUMBER: _ClassVar[int]
    compliance: float
    symmetry: float
    effort: float
    game: float
    def __init__(self, compliance: _Optional[float] = ..., symmetry: _Optional[float] = ..., effort: _Optional[float] = ..., game: _Optional[float] = ...) -> None: ...

class ComplianceWeights(_message.Message):
    __slots__ = ("completion", "intensity", "duration")
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    INTENSITY_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    completion: float
    intensity: float
    duration: float
    def __init__(self, completion: _Optional[float] = ..., intensity: _Optional[float] = ..., duration: _Optional[float] = ...) -> None: ...

class Therapist(_message.Message):
    __slots__ = ("id", "user_id", "first_name", "last_name", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    first_name: str
    last_name: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PatientCalibration(_message.Message):
    __slots__ = ("id", "patient_code", "mvc_left_v", "mvc_right_v", "duration_threshold_left_s", "duration_threshold_right_s", "target_contractions", "bfr_target_pressure_aop", "source", "source_session_id", "rule", "created_by", "created_by_role", "created_at", "notes")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MVC_LEFT_V_FIELD_NUMBER: _ClassVar[int]
    MVC_RIGHT_V_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_LEFT_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_RIGHT_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    BFR_TARGET_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    patient_code: str
    mvc_left_v: float
    mvc_right_v: float
    duration_threshold_left_s: float
    duration_threshold_right_s: float
    target_contractions: int
    bfr_target_pressure_aop: float
    source: CalibrationSource
    source_session_id: str
    rule: str
    created_by: str
    created_by_role: str
    created_at: _timestamp_pb2.Timestamp
    notes: str
    def __init__(self, id: _Optional[str] = ..., patient_code: _Optional[str] = ..., mvc_left_v: _Optional[float] = ..., mvc_right_v: _Optional[float] = ..., duration_threshold_left_s: _Optional[float] = ..., duration_threshold_right_s: _Optional[float] = ..., target_contractions: _Optional[int] = ..., bfr_target_pressure_aop: _Optional[float] = ..., source: _Optional[_Union[CalibrationSource, str]] = ..., source_session_id: _Optional[str] = ..., rule: _Optional[str] = ..., created_by: _Optional[str] = ..., created_by_role: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., notes: _Optional[str] = ...) -> None: ...

class Patient(_message.Message):
    __slots__ = ("patient_code", "id", "therapist_id", "first_name", "last_name", "date_of_birth", "active", "created_at", "deactivated_at", "current_calibration", "session_count")
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    THERAPIST_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    DATE_OF_BIRTH_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    patient_code: str
    id: str
    therapist_id: str
    first_name: str
    last_name: str
    date_of_birth: str
    active: bool
    created_at: _timestamp_pb2.Timestamp
    deactivated_at: _timestamp_pb2.Timestamp
    current_calibration: PatientCalibration
    session_count: int
    def __init__(self, patient_code: _Optional[str] = ..., id: _Optional[str] = ..., therapist_id: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., date_of_birth: _Optional[str] = ..., active: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deactivated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_calibration: _Optional[_Union[PatientCalibration, _Mapping]] = ..., session_count: _Optional[int] = ...) -> None: ...

class RpeEffort(_message.Message):
    __slots__ = ("rpe", "effort_score")
    RPE_FIELD_NUMBER: _ClassVar[int]
    EFFORT_SCORE_FIELD_NUMBER: _ClassVar[int]
    rpe: int
    effort_score: float
    def __init__(self, rpe: _Optional[int] = ..., effort_score: _Optional[float] = ...) -> None: ...

class GameLevelMax(_message.Message):
    __slots__ = ("level", "max_points")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    level: int
    max_points: int
    def __init__(self, level: _Optional[int] = ..., max_points: _Optional[int] = ...) -> None: ...

class ScoringConfig(_message.Message):
    __slots__ = ("version", "performance_weights", "compliance_weights", "rpe_effort", "bfr_gate_low_aop", "bfr_gate_high_aop", "game_points_max", "created_by", "created_at", "notes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    COMPLIANCE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    RPE_EFFORT_FIELD_NUMBER: _ClassVar[int]
    BFR_GATE_LOW_AOP_FIELD_NUMBER: _ClassVar[int]
    BFR_GATE_HIGH_AOP_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_MAX_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    performance_weights: PerformanceWeights
    compliance_weights: ComplianceWeights
    rpe_effort: _containers.RepeatedCompositeFieldContainer[RpeEffort]
    bfr_gate_low_aop: float
    bfr_gate_high_aop: float
    game_points_max: _containers.RepeatedCompositeFieldContainer[GameLevelMax]
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    notes: str
    def __init__(self, version: _Optional[int] = ..., performance_weights: _Optional[_Union[PerformanceWeights, _Mapping]] = ..., compliance_weights: _Optional[_Union[ComplianceWeights, _Mapping]] = ..., rpe_effort: _Optional[_Iterable[_Union[RpeEffort, _Mapping]]] = ..., bfr_gate_low_aop: _Optional[float] = ..., bfr_gate_high_aop: _Optional[float] = ..., game_points_max: _Optional[_Iterable[_Union[GameLevelMax, _Mapping]]] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., notes: _Optional[str] = ...) -> None: ...
