import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_TYPE_UNSPECIFIED: _ClassVar[ExportType]
    EXPORT_TYPE_STATISTICS_ONLY: _ClassVar[ExportType]
    EXPORT_TYPE_PERFORMANCE_REPORT: _ClassVar[ExportType]
    EXPORT_TYPE_SIGNALS_VISUALIZATION: _ClassVar[ExportType]
    EXPORT_TYPE_SIGNALS_RESEARCH_FULL: _ClassVar[ExportType]
    EXPORT_TYPE_CLINICAL_SUMMARY: _ClassVar[ExportType]
    EXPORT_TYPE_BFR_SAFETY_REPORT: _ClassVar[ExportType]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_JSON: _ClassVar[ExportFormat]
    EXPORT_FORMAT_CSV: _ClassVar[ExportFormat]
    EXPORT_FORMAT_EXCEL: _ClassVar[ExportFormat]
    EXPORT_FORMAT_MATLAB: _ClassVar[ExportFormat]

class ExportStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_STATUS_UNSPECIFIED: _ClassVar[ExportStatus]
    EXPORT_STATUS_SUCCESS: _ClassVar[ExportStatus]
    EXPORT_STATUS_PARTIAL: _ClassVar[ExportStatus]
    EXPORT_STATUS_FAILED: _ClassVar[ExportStatus]
EXPORT_TYPE_UNSPECIFIED: ExportType
EXPORT_TYPE_STATISTICS_ONLY: ExportType
EXPORT_TYPE_PERFORMANCE_REPORT: ExportType
EXPORT_TYPE_SIGNALS_VISUALIZATION: ExportType
EXPORT_TYPE_SIGNALS_RESEARCH_FULL: ExportType
EXPORT_TYPE_CLINICAL_SUMMARY: ExportType
EXPORT_TYPE_BFR_SAFETY_REPORT: ExportType
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_JSON: ExportFormat
EXPORT_FORMAT_CSV: ExportFormat
EXPORT_FORMAT_EXCEL: ExportFormat
EXPORT_FORMAT_MATLAB: ExportFormat
EXPORT_STATUS_UNSPECIFIED: ExportStatus
EXPORT_STATUS_SUCCESS: ExportStatus
EXPORT_STATUS_PARTIAL: ExportStatus
EXPORT_STATUS_FAILED: ExportStatus

class CreateExportRequest(_message.Message):
    __slots__ = ("type", "format", "session_ids", "patient_id", "date_from", "date_to", "channels", "max_points", "signal_kinds", "exported_by")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_KINDS_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    type: ExportType
    format: ExportFormat
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    patient_id: str
    date_from: _timestamp_pb2.Timestamp
    date_to: _timestamp_pb2.Timestamp
    channels: _containers.RepeatedScalarFieldContainer[str]
    max_points: int
    signal_kinds: _containers.RepeatedScalarFieldContainer[str]
    exported_by: str
    def __init__(self, type: _Optional[_Union[ExportType, str]] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., session_ids: _Optional[_Iterable[str]] = ..., patient_id: _Optional[str] = ..., date_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., date_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., channels: _Optional[_Iterable[str]] = ..., max_points: _Optional[int] = ..., signal_kinds: _Optional[_Iterable[str]] = ..., exported_by: _Optional[str] = ...) -> None: ...

class ExportStarted(_message.Message):
    __slots__ = ("export_id", "file_name", "content_type")
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    file_name: str
    content_type: str
    def __init__(self, export_id: _Optional[str] = ..., file_name: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class ValidationCheck(_message.Message):
    __slots__ = ("name", "passed", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class ExportCompleted(_message.Message):
    __slots__ = ("export_id", "size_bytes", "sha256", "status", "processing_time_ms", "validation_checks")
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CHECKS_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    size_bytes: int
    sha256: str
    status: ExportStatus
    processing_time_ms: int
    validation_checks: _containers.RepeatedCompositeFieldContainer[ValidationCheck]
    def __init__(self, export_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., status: _Optional[_Union[ExportStatus, str]] = ..., processing_time_ms: _Optional[int] = ..., validation_checks: _Optional[_Iterable[_Union[ValidationCheck, _Mapping]]] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("started", "data", "completed")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    started: ExportStarted
    data: bytes
    completed: ExportCompleted
    def __init__(self, started: _Optional[_Union[ExportStarted, _Mapping]] = ..., data: _Optional[bytes] = ..., completed: _Optional[_Union[ExportCompleted, _Mapping]] = ...) -> None: ...

class ListExportHistoryRequest(_message.Message):
    __slots__ = ("session_id", "exported_by", "type", "format", "status", "to", "page_size", "page_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    exported_by: str
    type: ExportType
    format: ExportFormat
    status: ExportStatus
    to: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, session_id: _Optional[str] = ..., exported_by: _Optional[str] = ..., type: _Optional[_Union[ExportType, str]] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., status: _Optional[_Union[ExportStatus, str]] = ..., to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., **kwargs) -> None: ...

class ExportRecord(_message.Message):
    __slots__ = ("id", "session_id", "type", "format", "channels_exported", "export_options_json", "processing_method", "processing_time_ms", "data_source", "exported_by", "export_timestamp", "file_size_bytes", "export_hash", "status", "validation_checks", "error_message")
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_EXPORTED_FIELD_NUMBER: _ClassVar[int]
    EXPORT_OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_METHOD_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    EXPORT_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPORT_HASH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CHECKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    session_id: str
    type: ExportType
    format: ExportFormat
    channels_exported: _containers.RepeatedScalarFieldContainer[str]
    export_options_json: str
    processing_method: str
    processing_time_ms: int
    data_source: str
    exported_by: str
    export_timestamp: _timestamp_pb2.Timestamp
    file_size_bytes: int
    export_hash: str
    status: ExportStatus
    validation_checks: _containers.RepeatedCompositeFieldContainer[ValidationCheck]
    error_message: str
    def __init__(self, id: _Optional[str] = ..., session_id: _Optional[str] = ..., type: _Optional[_Union[ExportType, str]] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., channels_exported: _Optional[_Iterable[str]] = ..., export_options_json: _Optional[str] = ..., processing_method: _Optional[str] = ..., processing_time_ms: _Optional[int] = ..., data_source: _Optional[str] = ..., exported_by: _Optional[str] = ..., export_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., file_size_bytes: _Optional[int] = ..., export_hash: _Optional[str] = ..., status: _Optional[_Union[ExportStatus, str]] = ..., validation_checks: _Optional[_Iterable[_Union[ValidationCheck, _Mapping]]] = ..., error_message: _Optional[str] = ...) -> None: ...

class ListExportHistoryResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[ExportRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[ExportRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
