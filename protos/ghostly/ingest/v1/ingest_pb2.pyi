import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ghostly.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateTherapistRequest(_message.Message):
    __slots__ = ("user_id", "first_name", "last_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    first_name: str
    last_name: str
    def __init__(self, user_id: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ...) -> None: ...

class CreatePatientRequest(_message.Message):
    __slots__ = ("patient_code", "therapist_id", "first_name", "last_name", "date_of_birth")
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    THERAPIST_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    DATE_OF_BIRTH_FIELD_NUMBER: _ClassVar[int]
    patient_code: str
    therapist_id: str
    first_name: str
    last_name: str
    date_of_birth: str
    def __init__(self, patient_code: _Optional[str] = ..., therapist_id: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., date_of_birth: _Optional[str] = ...) -> None: ...

class UpdatePatientRequest(_message.Message):
    __slots__ = ("patient_code", "first_name", "last_name", "date_of_birth", "therapist_id")
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    DATE_OF_BIRTH_FIELD_NUMBER: _ClassVar[int]
    THERAPIST_ID_FIELD_NUMBER: _ClassVar[int]
    patient_code: str
    first_name: str
    last_name: str
    date_of_birth: str
    therapist_id: str
    def __init__(self, patient_code: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., date_of_birth: _Optional[str] = ..., therapist_id: _Optional[str] = ...) -> None: ...

class DeactivatePatientRequest(_message.Message):
    __slots__ = ("patient_code",)
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    patient_code: str
    def __init__(self, patient_code: _Optional[str] = ...) -> None: ...

class SetPatientCalibrationRequest(_message.Message):
    __slots__ = ("patient_code", "mvc_left_v", "mvc_right_v", "duration_threshold_left_s", "duration_threshold_right_s", "target_contractions", "bfr_target_pressure_aop", "notes")
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MVC_LEFT_V_FIELD_NUMBER: _ClassVar[int]
    MVC_RIGHT_V_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_LEFT_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_RIGHT_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    BFR_TARGET_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    patient_code: str
    mvc_left_v: float
    mvc_right_v: float
    duration_threshold_left_s: float
    duration_threshold_right_s: float
    target_contractions: int
    bfr_target_pressure_aop: float
    notes: str
    def __init__(self, patient_code: _Optional[str] = ..., mvc_left_v: _Optional[float] = ..., mvc_right_v: _Optional[float] = ..., duration_threshold_left_s: _Optional[float] = ..., duration_threshold_right_s: _Optional[float] = ..., target_contractions: _Optional[int] = ..., bfr_target_pressure_aop: _Optional[float] = ..., notes: _Optional[str] = ...) -> None: ...

class CalibrateFromSessionRequest(_message.Message):
    __slots__ = ("session_id", "top_n", "allow_any_session_type", "notes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ANY_SESSION_TYPE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    top_n: int
    allow_any_session_type: bool
    notes: str
    def __init__(self, session_id: _Optional[str] = ..., top_n: _Optional[int] = ..., allow_any_session_type: _Optional[bool] = ..., notes: _Optional[str] = ...) -> None: ...

class RecordSessionOutcomeRequest(_message.Message):
    __slots__ = ("session_id", "rpe_post_session", "game_points", "game_points_max", "bfr")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RPE_POST_SESSION_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_MAX_FIELD_NUMBER: _ClassVar[int]
    BFR_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    rpe_post_session: int
    game_points: int
    game_points_max: int
    bfr: BfrInput
    def __init__(self, session_id: _Optional[str] = ..., rpe_post_session: _Optional[int] = ..., game_points: _Optional[int] = ..., game_points_max: _Optional[int] = ..., bfr: _Optional[_Union[BfrInput, _Mapping]] = ...) -> None: ...

class SessionOutcomeReply(_message.Message):
    __slots__ = ("session_id", "changed", "rpe_post_session", "game_points", "game_points_max", "bfr_actual_pressure_aop", "overall_performance_score", "components_excluded", "scoring_config_version", "recorded_by", "recorded_at")
    class ComponentsExcludedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    RPE_POST_SESSION_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_MAX_FIELD_NUMBER: _ClassVar[int]
    BFR_ACTUAL_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    OVERALL_PERFORMANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    SCORING_CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_BY_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    changed: bool
    rpe_post_session: int
    game_points: int
    game_points_max: int
    bfr_actual_pressure_aop: float
    overall_performance_score: float
    components_excluded: _containers.ScalarMap[str, str]
    scoring_config_version: int
    recorded_by: str
    recorded_at: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., changed: _Optional[bool] = ..., rpe_post_session: _Optional[int] = ..., game_points: _Optional[int] = ..., game_points_max: _Optional[int] = ..., bfr_actual_pressure_aop: _Optional[float] = ..., overall_performance_score: _Optional[float] = ..., components_excluded: _Optional[_Mapping[str, str]] = ..., scoring_config_version: _Optional[int] = ..., recorded_by: _Optional[str] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetScoringConfigRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: _common_pb2.ScoringConfig
    def __init__(self, config: _Optional[_Union[_common_pb2.ScoringConfig, _Mapping]] = ...) -> None: ...

class AnalysisOptions(_message.Message):
    __slots__ = ("mvc_threshold_percentage", "mvc_user_left", "mvc_user_right", "duration_threshold_s", "duration_threshold_left_s", "duration_threshold_right_s", "target_contractions", "performance_weights", "game_difficulty_level")
    MVC_THRESHOLD_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    MVC_USER_LEFT_FIELD_NUMBER: _ClassVar[int]
    MVC_USER_RIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_LEFT_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_RIGHT_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    GAME_DIFFICULTY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    mvc_threshold_percentage: float
    mvc_user_left: float
    mvc_user_right: float
    duration_threshold_s: float
    duration_threshold_left_s: float
    duration_threshold_right_s: float
    target_contractions: int
    performance_weights: _common_pb2.PerformanceWeights
    game_difficulty_level: int
    def __init__(self, mvc_threshold_percentage: _Optional[float] = ..., mvc_user_left: _Optional[float] = ..., mvc_user_right: _Optional[float] = ..., duration_threshold_s: _Optional[float] = ..., duration_threshold_left_s: _Optional[float] = ..., duration_threshold_right_s: _Optional[float] = ..., target_contractions: _Optional[int] = ..., performance_weights: _Optional[_Union[_common_pb2.PerformanceWeights, _Mapping]] = ..., game_difficulty_level: _Optional[int] = ...) -> None: ...

class BfrInput(_message.Message):
    __slots__ = ("target_pressure_aop", "actual_pressure_aop", "pressure_stability_coefficient", "safety_violations_count", "safety_violations_duration_s", "max_pressure_deviation_aop", "patient_aop_baseline_mmhg", "patient_limb_circumference_cm", "cuff_size", "cuff_position", "monitoring_device", "device_calibration_date", "device_serial_number", "bfr_session_duration_minutes", "monitoring_frequency_hz")
    TARGET_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    PRESSURE_STABILITY_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    SAFETY_VIOLATIONS_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAFETY_VIOLATIONS_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    MAX_PRESSURE_DEVIATION_AOP_FIELD_NUMBER: _ClassVar[int]
    PATIENT_AOP_BASELINE_MMHG_FIELD_NUMBER: _ClassVar[int]
    PATIENT_LIMB_CIRCUMFERENCE_CM_FIELD_NUMBER: _ClassVar[int]
    CUFF_SIZE_FIELD_NUMBER: _ClassVar[int]
    CUFF_POSITION_FIELD_NUMBER: _ClassVar[int]
    MONITORING_DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CALIBRATION_DATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    BFR_SESSION_DURATION_MINUTES_FIELD_NUMBER: _ClassVar[int]
    MONITORING_FREQUENCY_HZ_FIELD_NUMBER: _ClassVar[int]
    target_pressure_aop: float
    actual_pressure_aop: float
    pressure_stability_coefficient: float
    safety_violations_count: int
    safety_violations_duration_s: float
    max_pressure_deviation_aop: float
    patient_aop_baseline_mmhg: float
    patient_limb_circumference_cm: float
    cuff_size: str
    cuff_position: str
    monitoring_device: str
    device_calibration_date: str
    device_serial_number: str
    bfr_session_duration_minutes: float
    monitoring_frequency_hz: float
    def __init__(self, target_pressure_aop: _Optional[float] = ..., actual_pressure_aop: _Optional[float] = ..., pressure_stability_coefficient: _Optional[float] = ..., safety_violations_count: _Optional[int] = ..., safety_violations_duration_s: _Optional[float] = ..., max_pressure_deviation_aop: _Optional[float] = ..., patient_aop_baseline_mmhg: _Optional[float] = ..., patient_limb_circumference_cm: _Optional[float] = ..., cuff_size: _Optional[str] = ..., cuff_position: _Optional[str] = ..., monitoring_device: _Optional[str] = ..., device_calibration_date: _Optional[str] = ..., device_serial_number: _Optional[str] = ..., bfr_session_duration_minutes: _Optional[float] = ..., monitoring_frequency_hz: _Optional[float] = ...) -> None: ...

class SessionMetadata(_message.Message):
    __slots__ = ("patient_code", "therapist_id", "session_date", "session_type", "protocol_day", "rpe_post_session", "game_points", "game_points_max", "bfr", "options")
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    THERAPIST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_DATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_DAY_FIELD_NUMBER: _ClassVar[int]
    RPE_POST_SESSION_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_MAX_FIELD_NUMBER: _ClassVar[int]
    BFR_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    patient_code: str
    therapist_id: str
    session_date: _timestamp_pb2.Timestamp
    session_type: _common_pb2.SessionType
    protocol_day: int
    rpe_post_session: int
    game_points: int
    game_points_max: int
    bfr: BfrInput
    options: AnalysisOptions
    def __init__(self, patient_code: _Optional[str] = ..., therapist_id: _Optional[str] = ..., session_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_type: _Optional[_Union[_common_pb2.SessionType, str]] = ..., protocol_day: _Optional[int] = ..., rpe_post_session: _Optional[int] = ..., game_points: _Optional[int] = ..., game_points_max: _Optional[int] = ..., bfr: _Optional[_Union[BfrInput, _Mapping]] = ..., options: _Optional[_Union[AnalysisOptions, _Mapping]] = ...) -> None: ...

class UploadMetadata(_message.Message):
    __slots__ = ("file_name", "session", "expected_size_bytes", "expected_sha256")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHA256_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    session: SessionMetadata
    expected_size_bytes: int
    expected_sha256: str
    def __init__(self, file_name: _Optional[str] = ..., session: _Optional[_Union[SessionMetadata, _Mapping]] = ..., expected_size_bytes: _Optional[int] = ..., expected_sha256: _Optional[str] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: UploadMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[UploadMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class IngestStoredFileRequest(_message.Message):
    __slots__ = ("file_path", "session", "event_id", "signature", "signed_at")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    session: SessionMetadata
    event_id: str
    signature: str
    signed_at: _timestamp_pb2.Timestamp
    def __init__(self, file_path: _Optional[str] = ..., session: _Optional[_Union[SessionMetadata, _Mapping]] = ..., event_id: _Optional[str] = ..., signature: _Optional[str] = ..., signed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IngestReply(_message.Message):
    __slots__ = ("session_id", "created", "status", "file_hash", "file_path", "file_size_bytes", "processing_version", "processing_time_ms", "overall_performance_score", "warnings")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    OVERALL_PERFORMANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    created: bool
    status: _common_pb2.ProcessingStatus
    file_hash: str
    file_path: str
    file_size_bytes: int
    processing_version: str
    processing_time_ms: int
    overall_performance_score: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., created: _Optional[bool] = ..., status: _Optional[_Union[_common_pb2.ProcessingStatus, str]] = ..., file_hash: _Optional[str] = ..., file_path: _Optional[str] = ..., file_size_bytes: _Optional[int] = ..., processing_version: _Optional[str] = ..., processing_time_ms: _Optional[int] = ..., overall_performance_score: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ReprocessRequest(_message.Message):
    __slots__ = ("session_id", "patient_code", "all", "options", "only_outdated", "apply_current_calibration", "apply_current_scoring_config")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ONLY_OUTDATED_FIELD_NUMBER: _ClassVar[int]
    APPLY_CURRENT_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    APPLY_CURRENT_SCORING_CONFIG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    patient_code: str
    all: bool
    options: AnalysisOptions
    only_outdated: bool
    apply_current_calibration: bool
    apply_current_scoring_config: bool
    def __init__(self, session_id: _Optional[str] = ..., patient_code: _Optional[str] = ..., all: _Optional[bool] = ..., options: _Optional[_Union[AnalysisOptions, _Mapping]] = ..., only_outdated: _Optional[bool] = ..., apply_current_calibration: _Optional[bool] = ..., apply_current_scoring_config: _Optional[bool] = ...) -> None: ...

class ReprocessProgress(_message.Message):
    __slots__ = ("session_id", "status", "error_message", "done_count", "total_count", "failed_count", "done", "processing_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    status: _common_pb2.ProcessingStatus
    error_message: str
    done_count: int
    total_count: int
    failed_count: int
    done: bool
    processing_version: str
    def __init__(self, session_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.ProcessingStatus, str]] = ..., error_message: _Optional[str] = ..., done_count: _Optional[int] = ..., total_count: _Optional[int] = ..., failed_count: _Optional[int] = ..., done: _Optional[bool] = ..., processing_version: _Optional[str] = ...) -> None: ...

class GetProcessingStatusRequest(_message.Message):
    __slots__ = ("session_id", "file_hash", "file_path")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    file_hash: str
    file_path: str
    def __init__(self, session_id: _Optional[str] = ..., file_hash: _Optional[str] = ..., file_path: _Optional[str] = ...) -> None: ...

class ProcessingStatusReply(_message.Message):
    __slots__ = ("session_id", "status", "error_message", "processing_version", "processing_time_ms", "created_at", "processed_at", "file_path", "file_hash")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_AT_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    status: _common_pb2.ProcessingStatus
    error_message: str
    processing_version: str
    processing_time_ms: int
    created_at: _timestamp_pb2.Timestamp
    processed_at: _timestamp_pb2.Timestamp
    file_path: str
    file_hash: str
    def __init__(self, session_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.ProcessingStatus, str]] = ..., error_message: _Optional[str] = ..., processing_version: _Optional[str] = ..., processing_time_ms: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., processed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., file_path: _Optional[str] = ..., file_hash: _Optional[str] = ...) -> None: ...
