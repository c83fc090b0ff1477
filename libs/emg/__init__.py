"""GHOSTLY+ EMG analysis core: C3D -> emg_statistics / performance_scores (no DB, no gRPC)."""

from .analysis import ChannelAnalysis, SessionAnalysis, analyze, analyze_file
from .c3d_reader import (
    C3DInfo,
    GameMetadata,
    MuscleChannel,
    Recording,
    check_analysis_budget,
    estimate_analysis_bytes,
    inspect_c3d,
    muscle_channels,
    read_c3d,
)
from .contractions import Contraction
from .descriptors import Descriptors
from .errors import C3DContentError, C3DFormatError, EmgError, MemoryBudgetExceeded, SettingsError
from .pipeline import PROCESSING_PIPELINE, chain_1d, design_filters, envelope, filter_chain, highpass
from .quality import ArtifactSpan, QualityDetail
from .scoring import PerformanceResult
from .settings import AnalysisSettings, ProcessingParams
from .version import PROCESSING_VERSION

__all__ = [
    "PROCESSING_PIPELINE",
    "PROCESSING_VERSION",
    "AnalysisSettings",
    "ArtifactSpan",
    "C3DContentError",
    "C3DFormatError",
    "C3DInfo",
    "ChannelAnalysis",
    "Contraction",
    "Descriptors",
    "EmgError",
    "GameMetadata",
    "MemoryBudgetExceeded",
    "MuscleChannel",
    "PerformanceResult",
    "ProcessingParams",
    "QualityDetail",
    "Recording",
    "SessionAnalysis",
    "SettingsError",
    "analyze",
    "analyze_file",
    "chain_1d",
    "check_analysis_budget",
    "design_filters",
    "envelope",
    "estimate_analysis_bytes",
    "filter_chain",
    "highpass",
    "inspect_c3d",
    "muscle_channels",
    "read_c3d",
]
