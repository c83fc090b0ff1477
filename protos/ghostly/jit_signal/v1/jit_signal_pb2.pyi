from ghostly.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignalKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_KIND_UNSPECIFIED: _ClassVar[SignalKind]
    SIGNAL_KIND_RAW: _ClassVar[SignalKind]
    SIGNAL_KIND_FILTERED: _ClassVar[SignalKind]
    SIGNAL_KIND_ENVELOPE: _ClassVar[SignalKind]
SIGNAL_KIND_UNSPECIFIED: SignalKind
SIGNAL_KIND_RAW: SignalKind
SIGNAL_KIND_FILTERED: SignalKind
SIGNAL_KIND_ENVELOPE: SignalKind

class StreamSignalsRequest(_message.Message):
    __slots__ = ("session_id", "channels", "kind", "t_start_s", "t_end_s", "max_points", "full_resolution", "include_contractions", "chunk_samples")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    T_START_S_FIELD_NUMBER: _ClassVar[int]
    T_END_S_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    FULL_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    channels: _containers.RepeatedScalarFieldContainer[str]
    kind: SignalKind
    t_start_s: float
    t_end_s: float
    max_points: int
    full_resolution: bool
    include_contractions: bool
    chunk_samples: int
    def __init__(self, session_id: _Optional[str] = ..., channels: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[SignalKind, str]] = ..., t_start_s: _Optional[float] = ..., t_end_s: _Optional[float] = ..., max_points: _Optional[int] = ..., full_resolution: _Optional[bool] = ..., include_contractions: _Optional[bool] = ..., chunk_samples: _Optional[int] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("processing_version", "cache_hit", "downsampling", "points_per_channel", "window_sample_count", "t_start_s", "t_end_s")
    class PointsPerChannelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PROCESSING_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLING_FIELD_NUMBER: _ClassVar[int]
    POINTS_PER_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    T_START_S_FIELD_NUMBER: _ClassVar[int]
    T_END_S_FIELD_NUMBER: _ClassVar[int]
    processing_version: str
    cache_hit: bool
    downsampling: str
    points_per_channel: _containers.ScalarMap[str, int]
    window_sample_count: int
    t_start_s: float
    t_end_s: float
    def __init__(self, processing_version: _Optional[str] = ..., cache_hit: _Optional[bool] = ..., downsampling: _Optional[str] = ..., points_per_channel: _Optional[_Mapping[str, int]] = ..., window_sample_count: _Optional[int] = ..., t_start_s: _Optional[float] = ..., t_end_s: _Optional[float] = ...) -> None: ...

class SignalChunk(_message.Message):
    __slots__ = ("chunk_index", "channel", "kind", "unit", "sample_rate_hz", "t0_s", "dtype", "samples", "sample_indices", "sample_count", "last_for_channel", "contractions", "info")
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    T0_S_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDICES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_FOR_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTRACTIONS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    chunk_index: int
    channel: str
    kind: SignalKind
    unit: str
    sample_rate_hz: float
    t0_s: float
    dtype: str
    samples: bytes
    sample_indices: bytes
    sample_count: int
    last_for_channel: bool
    contractions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Contraction]
    info: StreamInfo
    def __init__(self, chunk_index: _Optional[int] = ..., channel: _Optional[str] = ..., kind: _Optional[_Union[SignalKind, str]] = ..., unit: _Optional[str] = ..., sample_rate_hz: _Optional[float] = ..., t0_s: _Optional[float] = ..., dtype: _Optional[str] = ..., samples: _Optional[bytes] = ..., sample_indices: _Optional[bytes] = ..., sample_count: _Optional[int] = ..., last_for_channel: _Optional[bool] = ..., contractions: _Optional[_Iterable[_Union[_common_pb2.Contraction, _Mapping]]] = ..., info: _Optional[_Union[StreamInfo, _Mapping]] = ...) -> None: ...

class ListChannelsRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ChannelInfo(_message.Message):
    __slots__ = ("name", "raw_label", "side", "sample_rate_hz", "sample_count", "duration_s", "unit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAW_LABEL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    raw_label: str
    side: str
    sample_rate_hz: float
    sample_count: int
    duration_s: float
    unit: str
    def __init__(self, name: _Optional[str] = ..., raw_label: _Optional[str] = ..., side: _Optional[str] = ..., sample_rate_hz: _Optional[float] = ..., sample_count: _Optional[int] = ..., duration_s: _Optional[float] = ..., unit: _Optional[str] = ...) -> None: ...

class ListChannelsResponse(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedCompositeFieldContainer[ChannelInfo]
    def __init__(self, channels: _Optional[_Iterable[_Union[ChannelInfo, _Mapping]]] = ...) -> None: ...
