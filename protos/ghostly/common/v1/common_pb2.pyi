from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

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
PROCESSING_STATUS_UNSPECIFIED: ProcessingStatus
PROCESSING_STATUS_PENDING: ProcessingStatus
PROCESSING_STATUS_PROCESSING: ProcessingStatus
PROCESSING_STATUS_COMPLETED: ProcessingStatus
PROCESSING_STATUS_FAILED: ProcessingStatus
SESSION_TYPE_UNSPECIFIED: SessionType
SESSION_TYPE_BASELINE: SessionType
SESSION_TYPE_TRAINING: SessionType
SESSION_TYPE_ASSESSMENT: SessionType

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
