import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ghostly.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetPatientRequest(_message.Message):
    __slots__ = ("patient_code",)
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    patient_code: str
    def __init__(self, patient_code: _Optional[str] = ...) -> None: ...

class ListPatientsRequest(_message.Message):
    __slots__ = ("therapist_id", "include_inactive", "page_size", "page_token")
    THERAPIST_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    therapist_id: str
    include_inactive: bool
    page_size: int
    page_token: str
    def __init__(self, therapist_id: _Optional[str] = ..., include_inactive: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPatientsResponse(_message.Message):
    __slots__ = ("patients", "next_page_token")
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    patients: _containers.RepeatedCompositeFieldContainer[_common_pb2.Patient]
    next_page_token: str
    def __init__(self, patients: _Optional[_Iterable[_Union[_common_pb2.Patient, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListPatientCalibrationsRequest(_message.Message):
    __slots__ = ("patient_code",)
    PATIENT_CODE_FIELD_NUMBER: _ClassVar[int]
    patient_code: str
    def __init__(self, patient_code: _Optional[str] = ...) -> None: ...

class ListPatientCalibrationsResponse(_message.Message):
    __slots__ = ("calibrations",)
    CALIBRATIONS_FIELD_NUMBER: _ClassVar[int]
    calibrations: _containers.RepeatedCompositeFieldContainer[_common_pb2.PatientCalibration]
    def __init__(self, calibrations: _Optional[_Iterable[_Union[_common_pb2.PatientCalibration, _Mapping]]] = ...) -> None: ...

class GetScoringConfigRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class BatchGetSessionStatisticsRequest(_message.Message):
    __slots__ = ("session_ids", "channels")
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    channels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ..., channels: _Optional[_Iterable[str]] = ...) -> None: ...

class SessionStatistics(_message.Message):
    __slots__ = ("session", "channels", "performance")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_FIELD_NUMBER: _ClassVar[int]
    session: Session
    channels: _containers.RepeatedCompositeFieldContainer[ChannelStatistics]
    performance: PerformanceScore
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., channels: _Optional[_Iterable[_Union[ChannelStatistics, _Mapping]]] = ..., performance: _Optional[_Union[PerformanceScore, _Mapping]] = ...) -> None: ...

class BatchGetSessionStatisticsResponse(_message.Message):
    __slots__ = ("sessions", "not_found")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionStatistics]
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionStatistics, _Mapping]]] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class SessionKey(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("id", "file_path", "file_hash", "file_size_bytes", "patient_id", "therapist_id", "session_label", "session_date", "session_type", "protocol_day", "original_sampling_rate", "original_duration_seconds", "original_sample_count", "channel_names", "channel_count", "processing_version", "processing_status", "processing_time_ms", "created_at", "processed_at", "error_message")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    THERAPIST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    SESSION_DATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_DAY_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SAMPLING_RATE_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_STATUS_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    file_path: str
    file_hash: str
    file_size_bytes: int
    patient_id: str
    therapist_id: str
    session_label: str
    session_date: _timestamp_pb2.Timestamp
    session_type: _common_pb2.SessionType
    protocol_day: int
    original_sampling_rate: float
    original_duration_seconds: float
    original_sample_count: int
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    channel_count: int
    processing_version: str
    processing_status: _common_pb2.ProcessingStatus
    processing_time_ms: int
    created_at: _timestamp_pb2.Timestamp
    processed_at: _timestamp_pb2.Timestamp
    error_message: str
    def __init__(self, id: _Optional[str] = ..., file_path: _Optional[str] = ..., file_hash: _Optional[str] = ..., file_size_bytes: _Optional[int] = ..., patient_id: _Optional[str] = ..., therapist_id: _Optional[str] = ..., session_label: _Optional[str] = ..., session_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_type: _Optional[_Union[_common_pb2.SessionType, str]] = ..., protocol_day: _Optional[int] = ..., original_sampling_rate: _Optional[float] = ..., original_duration_seconds: _Optional[float] = ..., original_sample_count: _Optional[int] = ..., channel_names: _Optional[_Iterable[str]] = ..., channel_count: _Optional[int] = ..., processing_version: _Optional[str] = ..., processing_status: _Optional[_Union[_common_pb2.ProcessingStatus, str]] = ..., processing_time_ms: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., processed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_message: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("patient_id", "therapist_id", "date_from", "date_to", "session_type", "processing_status", "page_size", "page_token")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    THERAPIST_ID_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    SESSION_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    therapist_id: str
    date_from: _timestamp_pb2.Timestamp
    date_to: _timestamp_pb2.Timestamp
    session_type: _common_pb2.SessionType
    processing_status: _common_pb2.ProcessingStatus
    page_size: int
    page_token: str
    def __init__(self, patient_id: _Optional[str] = ..., therapist_id: _Optional[str] = ..., date_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., date_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_type: _Optional[_Union[_common_pb2.SessionType, str]] = ..., processing_status: _Optional[_Union[_common_pb2.ProcessingStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetEmgStatisticsRequest(_message.Message):
    __slots__ = ("session_id", "channels", "include_contractions")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    channels: _containers.RepeatedScalarFieldContainer[str]
    include_contractions: bool
    def __init__(self, session_id: _Optional[str] = ..., channels: _Optional[_Iterable[str]] = ..., include_contractions: _Optional[bool] = ...) -> None: ...

class ChannelStatistics(_message.Message):
    __slots__ = ("id", "session_id", "channel_name", "mvc_peak_value", "mvc_rms_value", "mvc_confidence_score", "mvc_calculation_method", "total_contractions", "good_contractions_intensity", "good_contractions_duration", "good_contractions_both", "completion_rate", "intensity_rate", "duration_rate", "muscle_compliance_score", "signal_quality_score", "noise_level_db", "artifacts_detected", "processing_confidence", "processing_pipeline", "processing_version", "processing_time_ms", "mvc_threshold_percentage", "duration_threshold_seconds", "processed_at", "contractions", "side", "signal_flags", "usable", "missing_fields")
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MVC_PEAK_VALUE_FIELD_NUMBER: _ClassVar[int]
    MVC_RMS_VALUE_FIELD_NUMBER: _ClassVar[int]
    MVC_CONFIDENCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    MVC_CALCULATION_METHOD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    GOOD_CONTRACTIONS_INTENSITY_FIELD_NUMBER: _ClassVar[int]
    GOOD_CONTRACTIONS_DURATION_FIELD_NUMBER: _ClassVar[int]
    GOOD_CONTRACTIONS_BOTH_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_RATE_FIELD_NUMBER: _ClassVar[int]
    INTENSITY_RATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_RATE_FIELD_NUMBER: _ClassVar[int]
    MUSCLE_COMPLIANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_QUALITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    NOISE_LEVEL_DB_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_DETECTED_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MVC_THRESHOLD_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FLAGS_FIELD_NUMBER: _ClassVar[int]
    USABLE_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    session_id: str
    channel_name: str
    mvc_peak_value: float
    mvc_rms_value: float
    mvc_confidence_score: float
    mvc_calculation_method: str
    total_contractions: int
    good_contractions_intensity: int
    good_contractions_duration: int
    good_contractions_both: int
    completion_rate: float
    intensity_rate: float
    duration_rate: float
    muscle_compliance_score: float
    signal_quality_score: float
    noise_level_db: float
    artifacts_detected: int
    processing_confidence: float
    processing_pipeline: str
    processing_version: str
    processing_time_ms: int
    mvc_threshold_percentage: float
    duration_threshold_seconds: float
    processed_at: _timestamp_pb2.Timestamp
    contractions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Contraction]
    side: str
    signal_flags: _containers.RepeatedScalarFieldContainer[str]
    usable: bool
    missing_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., session_id: _Optional[str] = ..., channel_name: _Optional[str] = ..., mvc_peak_value: _Optional[float] = ..., mvc_rms_value: _Optional[float] = ..., mvc_confidence_score: _Optional[float] = ..., mvc_calculation_method: _Optional[str] = ..., total_contractions: _Optional[int] = ..., good_contractions_intensity: _Optional[int] = ..., good_contractions_duration: _Optional[int] = ..., good_contractions_both: _Optional[int] = ..., completion_rate: _Optional[float] = ..., intensity_rate: _Optional[float] = ..., duration_rate: _Optional[float] = ..., muscle_compliance_score: _Optional[float] = ..., signal_quality_score: _Optional[float] = ..., noise_level_db: _Optional[float] = ..., artifacts_detected: _Optional[int] = ..., processing_confidence: _Optional[float] = ..., processing_pipeline: _Optional[str] = ..., processing_version: _Optional[str] = ..., processing_time_ms: _Optional[int] = ..., mvc_threshold_percentage: _Optional[float] = ..., duration_threshold_seconds: _Optional[float] = ..., processed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., contractions: _Optional[_Iterable[_Union[_common_pb2.Contraction, _Mapping]]] = ..., side: _Optional[str] = ..., signal_flags: _Optional[_Iterable[str]] = ..., usable: _Optional[bool] = ..., missing_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class GetEmgStatisticsResponse(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedCompositeFieldContainer[ChannelStatistics]
    def __init__(self, channels: _Optional[_Iterable[_Union[ChannelStatistics, _Mapping]]] = ...) -> None: ...

class PerformanceScore(_message.Message):
    __slots__ = ("id", "session_id", "overall_performance_score", "compliance_score", "symmetry_score", "effort_score", "game_score", "effective_weights", "requested_weights", "excluded_components", "bfr_pressure_aop", "bfr_compliance_gate", "rpe_post_session", "game_points_achieved", "game_points_maximum", "session_duration_minutes", "left_muscle_completion_rate", "left_muscle_intensity_rate", "left_muscle_duration_rate", "right_muscle_completion_rate", "right_muscle_intensity_rate", "right_muscle_duration_rate", "calculated_at", "scoring_config_version", "outcome")
    class ExcludedComponentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OVERALL_PERFORMANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    COMPLIANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    SYMMETRY_SCORE_FIELD_NUMBER: _ClassVar[int]
    EFFORT_SCORE_FIELD_NUMBER: _ClassVar[int]
    GAME_SCORE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    BFR_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    BFR_COMPLIANCE_GATE_FIELD_NUMBER: _ClassVar[int]
    RPE_POST_SESSION_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_ACHIEVED_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    SESSION_DURATION_MINUTES_FIELD_NUMBER: _ClassVar[int]
    LEFT_MUSCLE_COMPLETION_RATE_FIELD_NUMBER: _ClassVar[int]
    LEFT_MUSCLE_INTENSITY_RATE_FIELD_NUMBER: _ClassVar[int]
    LEFT_MUSCLE_DURATION_RATE_FIELD_NUMBER: _ClassVar[int]
    RIGHT_MUSCLE_COMPLETION_RATE_FIELD_NUMBER: _ClassVar[int]
    RIGHT_MUSCLE_INTENSITY_RATE_FIELD_NUMBER: _ClassVar[int]
    RIGHT_MUSCLE_DURATION_RATE_FIELD_NUMBER: _ClassVar[int]
    CALCULATED_AT_FIELD_NUMBER: _ClassVar[int]
    SCORING_CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    id: str
    session_id: str
    overall_performance_score: float
    compliance_score: float
    symmetry_score: float
    effort_score: float
    game_score: float
    effective_weights: _common_pb2.PerformanceWeights
    requested_weights: _common_pb2.PerformanceWeights
    excluded_components: _containers.ScalarMap[str, str]
    bfr_pressure_aop: float
    bfr_compliance_gate: float
    rpe_post_session: int
    game_points_achieved: int
    game_points_maximum: int
    session_duration_minutes: float
    left_muscle_completion_rate: float
    left_muscle_intensity_rate: float
    left_muscle_duration_rate: float
    right_muscle_completion_rate: float
    right_muscle_intensity_rate: float
    right_muscle_duration_rate: float
    calculated_at: _timestamp_pb2.Timestamp
    scoring_config_version: int
    outcome: SessionOutcome
    def __init__(self, id: _Optional[str] = ..., session_id: _Optional[str] = ..., overall_performance_score: _Optional[float] = ..., compliance_score: _Optional[float] = ..., symmetry_score: _Optional[float] = ..., effort_score: _Optional[float] = ..., game_score: _Optional[float] = ..., effective_weights: _Optional[_Union[_common_pb2.PerformanceWeights, _Mapping]] = ..., requested_weights: _Optional[_Union[_common_pb2.PerformanceWeights, _Mapping]] = ..., excluded_components: _Optional[_Mapping[str, str]] = ..., bfr_pressure_aop: _Optional[float] = ..., bfr_compliance_gate: _Optional[float] = ..., rpe_post_session: _Optional[int] = ..., game_points_achieved: _Optional[int] = ..., game_points_maximum: _Optional[int] = ..., session_duration_minutes: _Optional[float] = ..., left_muscle_completion_rate: _Optional[float] = ..., left_muscle_intensity_rate: _Optional[float] = ..., left_muscle_duration_rate: _Optional[float] = ..., right_muscle_completion_rate: _Optional[float] = ..., right_muscle_intensity_rate: _Optional[float] = ..., right_muscle_duration_rate: _Optional[float] = ..., calculated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scoring_config_version: _Optional[int] = ..., outcome: _Optional[_Union[SessionOutcome, _Mapping]] = ...) -> None: ...

class SessionOutcome(_message.Message):
    __slots__ = ("rpe_post_session", "game_points", "game_points_max", "bfr_actual_pressure_aop", "recorded_by", "recorded_at")
    RPE_POST_SESSION_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_FIELD_NUMBER: _ClassVar[int]
    GAME_POINTS_MAX_FIELD_NUMBER: _ClassVar[int]
    BFR_ACTUAL_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    RECORDED_BY_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    rpe_post_session: int
    game_points: int
    game_points_max: int
    bfr_actual_pressure_aop: float
    recorded_by: str
    recorded_at: _timestamp_pb2.Timestamp
    def __init__(self, rpe_post_session: _Optional[int] = ..., game_points: _Optional[int] = ..., game_points_max: _Optional[int] = ..., bfr_actual_pressure_aop: _Optional[float] = ..., recorded_by: _Optional[str] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BfrMonitoring(_message.Message):
    __slots__ = ("id", "session_id", "target_pressure_aop", "actual_pressure_aop", "pressure_stability_coefficient", "safety_gate_status", "safety_violations_count", "safety_violations_duration_seconds", "max_pressure_deviation_aop", "patient_aop_baseline_mmhg", "patient_limb_circumference_cm", "cuff_size", "cuff_position", "monitoring_device", "device_calibration_date", "device_serial_number", "bfr_session_duration_minutes", "monitoring_frequency_hz", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    PRESSURE_STABILITY_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    SAFETY_GATE_STATUS_FIELD_NUMBER: _ClassVar[int]
    SAFETY_VIOLATIONS_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAFETY_VIOLATIONS_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
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
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    session_id: str
    target_pressure_aop: float
    actual_pressure_aop: float
    pressure_stability_coefficient: float
    safety_gate_status: bool
    safety_violations_count: int
    safety_violations_duration_seconds: float
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
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., session_id: _Optional[str] = ..., target_pressure_aop: _Optional[float] = ..., actual_pressure_aop: _Optional[float] = ..., pressure_stability_coefficient: _Optional[float] = ..., safety_gate_status: _Optional[bool] = ..., safety_violations_count: _Optional[int] = ..., safety_violations_duration_seconds: _Optional[float] = ..., max_pressure_deviation_aop: _Optional[float] = ..., patient_aop_baseline_mmhg: _Optional[float] = ..., patient_limb_circumference_cm: _Optional[float] = ..., cuff_size: _Optional[str] = ..., cuff_position: _Optional[str] = ..., monitoring_device: _Optional[str] = ..., device_calibration_date: _Optional[str] = ..., device_serial_number: _Optional[str] = ..., bfr_session_duration_minutes: _Optional[float] = ..., monitoring_frequency_hz: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SessionSettings(_message.Message):
    __slots__ = ("id", "session_id", "mvc_calculation_method", "mvc_threshold_percentage", "mvc_user_left_quad", "mvc_user_right_quad", "performance_weights", "duration_threshold_seconds", "duration_threshold_left_quad", "duration_threshold_right_quad", "target_contractions_per_muscle", "rest_period_between_contractions_seconds", "rest_period_between_sets_seconds", "bfr_enabled", "bfr_target_pressure_aop", "game_difficulty_level", "visual_feedback_enabled", "audio_feedback_enabled", "real_time_mvc_display", "created_at", "updated_at", "calibration_id", "calibration_source", "value_sources")
    class ValueSourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MVC_CALCULATION_METHOD_FIELD_NUMBER: _ClassVar[int]
    MVC_THRESHOLD_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    MVC_USER_LEFT_QUAD_FIELD_NUMBER: _ClassVar[int]
    MVC_USER_RIGHT_QUAD_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_LEFT_QUAD_FIELD_NUMBER: _ClassVar[int]
    DURATION_THRESHOLD_RIGHT_QUAD_FIELD_NUMBER: _ClassVar[int]
    TARGET_CONTRACTIONS_PER_MUSCLE_FIELD_NUMBER: _ClassVar[int]
    REST_PERIOD_BETWEEN_CONTRACTIONS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REST_PERIOD_BETWEEN_SETS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BFR_ENABLED_FIELD_NUMBER: _ClassVar[int]
    BFR_TARGET_PRESSURE_AOP_FIELD_NUMBER: _ClassVar[int]
    GAME_DIFFICULTY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    VISUAL_FEEDBACK_ENABLED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FEEDBACK_ENABLED_FIELD_NUMBER: _ClassVar[int]
    REAL_TIME_MVC_DISPLAY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    VALUE_SOURCES_FIELD_NUMBER: _ClassVar[int]
    id: str
    session_id: str
    mvc_calculation_method: str
    mvc_threshold_percentage: float
    mvc_user_left_quad: float
    mvc_user_right_quad: float
    performance_weights: _common_pb2.PerformanceWeights
    duration_threshold_seconds: float
    duration_threshold_left_quad: float
    duration_threshold_right_quad: float
    target_contractions_per_muscle: int
    rest_period_between_contractions_seconds: int
    rest_period_between_sets_seconds: int
    bfr_enabled: bool
    bfr_target_pressure_aop: float
    game_difficulty_level: int
    visual_feedback_enabled: bool
    audio_feedback_enabled: bool
    real_time_mvc_display: bool
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    calibration_id: str
    calibration_source: str
    value_sources: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., session_id: _Optional[str] = ..., mvc_calculation_method: _Optional[str] = ..., mvc_threshold_percentage: _Optional[float] = ..., mvc_user_left_quad: _Optional[float] = ..., mvc_user_right_quad: _Optional[float] = ..., performance_weights: _Optional[_Union[_common_pb2.PerformanceWeights, _Mapping]] = ..., duration_threshold_seconds: _Optional[float] = ..., duration_threshold_left_quad: _Optional[float] = ..., duration_threshold_right_quad: _Optional[float] = ..., target_contractions_per_muscle: _Optional[int] = ..., rest_period_between_contractions_seconds: _Optional[int] = ..., rest_period_between_sets_seconds: _Optional[int] = ..., bfr_enabled: _Optional[bool] = ..., bfr_target_pressure_aop: _Optional[float] = ..., game_difficulty_level: _Optional[int] = ..., visual_feedback_enabled: _Optional[bool] = ..., audio_feedback_enabled: _Optional[bool] = ..., real_time_mvc_display: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., calibration_id: _Optional[str] = ..., calibration_source: _Optional[str] = ..., value_sources: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetPatientProgressRequest(_message.Message):
    __slots__ = ("patient_id", "date_from", "date_to")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    date_from: _timestamp_pb2.Timestamp
    date_to: _timestamp_pb2.Timestamp
    def __init__(self, patient_id: _Optional[str] = ..., date_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., date_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProgressPoint(_message.Message):
    __slots__ = ("session_id", "session_date", "protocol_day", "session_type", "overall_performance_score", "compliance_score", "symmetry_score", "effort_score", "game_score", "muscles")
    class MusclesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MuscleProgress
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MuscleProgress, _Mapping]] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_DATE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_DAY_FIELD_NUMBER: _ClassVar[int]
    SESSION_TYPE_FIELD_NUMBER: _ClassVar[int]
    OVERALL_PERFORMANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    COMPLIANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    SYMMETRY_SCORE_FIELD_NUMBER: _ClassVar[int]
    EFFORT_SCORE_FIELD_NUMBER: _ClassVar[int]
    GAME_SCORE_FIELD_NUMBER: _ClassVar[int]
    MUSCLES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    session_date: _timestamp_pb2.Timestamp
    protocol_day: int
    session_type: _common_pb2.SessionType
    overall_performance_score: float
    compliance_score: float
    symmetry_score: float
    effort_score: float
    game_score: float
    muscles: _containers.MessageMap[str, MuscleProgress]
    def __init__(self, session_id: _Optional[str] = ..., session_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., protocol_day: _Optional[int] = ..., session_type: _Optional[_Union[_common_pb2.SessionType, str]] = ..., overall_performance_score: _Optional[float] = ..., compliance_score: _Optional[float] = ..., symmetry_score: _Optional[float] = ..., effort_score: _Optional[float] = ..., game_score: _Optional[float] = ..., muscles: _Optional[_Mapping[str, MuscleProgress]] = ...) -> None: ...

class MuscleProgress(_message.Message):
    __slots__ = ("channel_name", "completion_rate", "intensity_rate", "duration_rate", "muscle_compliance_score", "mvc_peak_value", "total_contractions", "good_contractions_both", "missing_fields")
    CHANNEL_NAME_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_RATE_FIELD_NUMBER: _ClassVar[int]
    INTENSITY_RATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_RATE_FIELD_NUMBER: _ClassVar[int]
    MUSCLE_COMPLIANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    MVC_PEAK_VALUE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    GOOD_CONTRACTIONS_BOTH_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELDS_FIELD_NUMBER: _ClassVar[int]
    channel_name: str
    completion_rate: float
    intensity_rate: float
    duration_rate: float
    muscle_compliance_score: float
    mvc_peak_value: float
    total_contractions: int
    good_contractions_both: int
    missing_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, channel_name: _Optional[str] = ..., completion_rate: _Optional[float] = ..., intensity_rate: _Optional[float] = ..., duration_rate: _Optional[float] = ..., muscle_compliance_score: _Optional[float] = ..., mvc_peak_value: _Optional[float] = ..., total_contractions: _Optional[int] = ..., good_contractions_both: _Optional[int] = ..., missing_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class PatientProgress(_message.Message):
    __slots__ = ("patient_id", "points", "trend_slope_per_day", "first_score", "last_score", "best_score", "best_session_id", "sessions_done", "sessions_expected", "adherence_rate")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    TREND_SLOPE_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    FIRST_SCORE_FIELD_NUMBER: _ClassVar[int]
    LAST_SCORE_FIELD_NUMBER: _ClassVar[int]
    BEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    BEST_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_DONE_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ADHERENCE_RATE_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    points: _containers.RepeatedCompositeFieldContainer[ProgressPoint]
    trend_slope_per_day: float
    first_score: float
    last_score: float
    best_score: float
    best_session_id: str
    sessions_done: int
    sessions_expected: int
    adherence_rate: float
    def __init__(self, patient_id: _Optional[str] = ..., points: _Optional[_Iterable[_Union[ProgressPoint, _Mapping]]] = ..., trend_slope_per_day: _Optional[float] = ..., first_score: _Optional[float] = ..., last_score: _Optional[float] = ..., best_score: _Optional[float] = ..., best_session_id: _Optional[str] = ..., sessions_done: _Optional[int] = ..., sessions_expected: _Optional[int] = ..., adherence_rate: _Optional[float] = ...) -> None: ...

class GetCohortSummaryRequest(_message.Message):
    __slots__ = ("therapist_id", "date_from", "date_to")
    THERAPIST_ID_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    therapist_id: str
    date_from: _timestamp_pb2.Timestamp
    date_to: _timestamp_pb2.Timestamp
    def __init__(self, therapist_id: _Optional[str] = ..., date_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., date_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CohortDay(_message.Message):
    __slots__ = ("protocol_day", "session_count", "patient_count", "mean_overall_score", "stddev_overall_score", "mean_compliance_score", "mean_symmetry_score")
    PROTOCOL_DAY_FIELD_NUMBER: _ClassVar[int]
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    PATIENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_OVERALL_SCORE_FIELD_NUMBER: _ClassVar[int]
    STDDEV_OVERALL_SCORE_FIELD_NUMBER: _ClassVar[int]
    MEAN_COMPLIANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    MEAN_SYMMETRY_SCORE_FIELD_NUMBER: _ClassVar[int]
    protocol_day: int
    session_count: int
    patient_count: int
    mean_overall_score: float
    stddev_overall_score: float
    mean_compliance_score: float
    mean_symmetry_score: float
    def __init__(self, protocol_day: _Optional[int] = ..., session_count: _Optional[int] = ..., patient_count: _Optional[int] = ..., mean_overall_score: _Optional[float] = ..., stddev_overall_score: _Optional[float] = ..., mean_compliance_score: _Optional[float] = ..., mean_symmetry_score: _Optional[float] = ...) -> None: ...

class CohortSummary(_message.Message):
    __slots__ = ("days", "patient_count", "session_count", "mean_overall_score")
    DAYS_FIELD_NUMBER: _ClassVar[int]
    PATIENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_OVERALL_SCORE_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[CohortDay]
    patient_count: int
    session_count: int
    mean_overall_score: float
    def __init__(self, days: _Optional[_Iterable[_Union[CohortDay, _Mapping]]] = ..., patient_count: _Optional[int] = ..., session_count: _Optional[int] = ..., mean_overall_score: _Optional[float] = ...) -> None: ...
