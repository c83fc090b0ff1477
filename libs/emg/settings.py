"""Analysis settings with documented defaults, validated on construction.

Per-muscle dictionaries (``mvc_user``, ``duration_threshold``) accept either the muscle name
(e.g. 'CH1') or the side ('left'/'right'); the muscle name wins when both are present. The
session_settings table stores per-side values (mvc_user_left_quad, ...), the C3D has muscle
names, so both keys are needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from .errors import SettingsError

# The BFR safe range (% of arterial occlusion pressure, inclusive): the one default. The trial's
# scoring configuration (scoring_configs, migration 016) may set another.
BFR_SAFE_RANGE: tuple[float, float] = (45.0, 55.0)

_WEIGHT_TOLERANCE = 1e-6

_V = TypeVar("_V")


def _check_weights(name: str, weights: dict[str, float], keys: tuple[str, ...]) -> None:
    if set(weights) != set(keys):
        raise SettingsError(f"{name} must have exactly the keys {', '.join(keys)}; got {', '.join(sorted(weights))}.")
    for k, w in weights.items():
        if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise SettingsError(f"{name}[{k!r}] must be a finite number >= 0, got {w!r}.")
    total = sum(weights.values())
    if abs(total - 1.0) > _WEIGHT_TOLERANCE:
        raise SettingsError(f"{name} must sum to 1 (tolerance 1e-6); they sum to {total:.6g}.")


def _positive(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name} must be a positive number, got {value!r}.")


@dataclass(frozen=True)
class ProcessingParams:
    """Signal-processing parameters (ISEK: every value is reported with the result).

    Frozen and hashable so filter designs can be cached per (rate, params).
    """

    # Filter chain (ISEK: every value is reported with the result).
    highpass_hz: float = 20.0  # removes motion artefact and DC (ISEK: 10-20 Hz for surface EMG)
    lowpass_hz: float = 10.0  # linear-envelope cutoff after rectification
    filter_order: int = 4  # Butterworth order of each filter, applied forward and backward
    rms_window_ms: float = 50.0  # centred moving-RMS window on the low-passed envelope
    # Mains interference (libs/emg/mains.py): found in the spectrum of the rest periods.
    mains_window_ms: float = 1000.0  # periodogram window (rounded to a power of two samples)
    mains_rest_fraction: float = 0.25  # quietest share of the windows taken as rest
    mains_line_ratio: float = 10.0  # a line stands this much (power ratio) above its neighbours
    mains_min_share: float = 0.05  # ... and the lines carry this share of the rest power
    notch_bandwidth_hz: float = 2.0  # -3 dB width of each zero-phase notch
    # Detection (libs/emg/contractions.py): double threshold with hysteresis.
    baseline_percentile: float = 10.0  # envelope percentile taken as the noise floor (resting level)
    threshold_baseline_factor: float = 5.0  # onset threshold >= factor x noise floor ...
    activity_fraction: float = 0.3  # ... and >= this x the channel's level of strong activity ...
    mvc_onset_fraction: float = 0.2  # ... and >= this x the calibrated MVC, when one is given ...
    min_threshold_v: float = 10e-6  # ... and never below this absolute floor (V envelope)
    offset_fraction: float = 0.5  # offset threshold = this x onset threshold ...
    offset_baseline_factor: float = 2.5  # ... but at least this x noise floor
    edge_baseline_factor: float = 2.5  # reported onset/offset: where the envelope falls below this x noise floor ...
    edge_peak_fraction: float = 0.1  # ... or below this x the contraction's own peak, whichever is higher
    strong_top_fraction: float = 0.1  # strong level: median peak of the strongest 10 % of bursts (>= 3)
    min_contraction_ms: float = 100.0  # shorter bursts (between offset crossings) are not contractions
    merge_gap_ms: float = 200.0  # contractions separated by a shorter gap are one contraction
    max_masked_gap_ms: float = 600.0  # ... a merge bridges at most this much artefact (a dropout + margins)
    mvc_percentile: float = 95.0  # backend MVC: this percentile of envelope inside contractions
    # Artefacts (libs/emg/quality.py).
    artifact_min_run_ms: float = 10.0  # constant raw runs at least this long are dropouts/flatlines
    artifact_margin_ms: float = 100.0  # masked around artefacts (constant fills are bridged first)
    clip_tolerance: float = 0.005  # samples within this fraction of a rail count as at the rail
    clip_min_samples: int = 5  # near-rail samples (with a run of >= 2) before a channel counts as saturated
    clip_merge_ms: float = 50.0  # saturated samples closer than this form one artefact span
    # Channel usability: flagged channels are excluded from symmetry and the overall score.
    weak_signal_v: float = 15e-6  # strong-activity level below this (V envelope): weak_signal
    min_activity_ratio: float = 8.0  # strong level / noise floor below this: no activity ...
    disconnected_noise_v: float = 10e-6  # ... with rest noise RMS above this (V) or hum-only: no_usable_emg
    flat_rms_v: float = 0.5e-6  # filtered RMS below this (V): flat channel, no_usable_emg
    max_masked_fraction: float = 0.5  # more of the recording masked than this: no_usable_emg
    welch_window_ms: float = 250.0  # Welch segment length for MNF/MDF (rounded to a power of 2)

    def validate(self) -> None:
        for name in (
            "highpass_hz",
            "lowpass_hz",
            "rms_window_ms",
            "threshold_baseline_factor",
            "min_contraction_ms",
            "welch_window_ms",
            "artifact_min_run_ms",
            "mvc_percentile",
            "mains_window_ms",
            "mains_line_ratio",
            "notch_bandwidth_hz",
            "offset_baseline_factor",
            "edge_baseline_factor",
            "min_activity_ratio",
        ):
            _positive(name, getattr(self, name))
        for name in (
            "mains_rest_fraction",
            "mains_min_share",
            "activity_fraction",
            "mvc_onset_fraction",
            "edge_peak_fraction",
            "offset_fraction",
            "strong_top_fraction",
            "max_masked_fraction",
            "clip_tolerance",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                raise SettingsError(f"{name} must be a fraction in [0, 1], got {v!r}.")
        if self.strong_top_fraction <= 0 or self.mains_rest_fraction <= 0:
            raise SettingsError("strong_top_fraction and mains_rest_fraction must be > 0.")
        if self.edge_baseline_factor > self.offset_baseline_factor:
            raise SettingsError(
                "edge_baseline_factor must be <= offset_baseline_factor: edges lie outside the offset crossings."
            )
        if self.offset_fraction > 1:
            raise SettingsError("offset_fraction must be <= 1: the offset threshold is below the onset threshold.")
        if self.offset_baseline_factor > self.threshold_baseline_factor:
            raise SettingsError(
                "offset_baseline_factor must be <= threshold_baseline_factor: the offset threshold "
                "lies below the onset threshold."
            )
        for name in (
            "min_threshold_v",
            "merge_gap_ms",
            "artifact_margin_ms",
            "clip_merge_ms",
            "weak_signal_v",
            "flat_rms_v",
            "max_masked_gap_ms",
            "disconnected_noise_v",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise SettingsError(f"{name} must be a number >= 0, got {v!r}.")
        if not isinstance(self.filter_order, int) or not 1 <= self.filter_order <= 8:
            raise SettingsError(f"filter_order must be an integer in 1..8, got {self.filter_order!r}.")
        if not 0 < self.baseline_percentile < 50:
            raise SettingsError("baseline_percentile must be in (0, 50): the resting level is a low percentile.")
        if not 50 <= self.mvc_percentile <= 100:
            raise SettingsError("mvc_percentile must be in [50, 100].")
        if self.clip_min_samples < 2:
            raise SettingsError("clip_min_samples must be >= 2 (one sample at the maximum is not clipping).")


def default_rpe_effort() -> dict[int, float]:
    """Borg CR10 post-session RPE -> S_effort: 4-6 -> 100, 3/7 -> 80, 2/8 -> 60, 0-1/9-10 -> 20."""
    return {0: 20.0, 1: 20.0, 2: 60.0, 3: 80.0, 4: 100.0, 5: 100.0, 6: 100.0, 7: 80.0, 8: 60.0, 9: 20.0, 10: 20.0}


# The processing parameters as stored with a session's statistics
# (emg_statistics.analysis_details[PARAMS_KEY]) and read back by whoever re-runs the chain for
# that session (jit_signal): ONE codec, so no service parses another's JSON layout.
PARAMS_KEY = "processing_params"
PARAMS_LAYOUT = 1


def encode_params(params: ProcessingParams) -> dict[str, Any]:
    """``params`` as a JSON object (with the layout version)."""
    return {"layout": PARAMS_LAYOUT, **asdict(params)}


def decode_params(obj: object) -> ProcessingParams:
    """The ProcessingParams of a stored object (encode_params, or the settings.processing
    object of rows written before the codec); defaults for absent or unknown fields, so a row
    written by an older version still decodes. SettingsError for values out of range."""
    import json
    from dataclasses import fields

    if isinstance(obj, str):
        obj = json.loads(obj)
    if not isinstance(obj, dict):
        return ProcessingParams()
    known = {f.name for f in fields(ProcessingParams)}
    params = ProcessingParams(**{k: v for k, v in obj.items() if k in known})
    params.validate()
    return params


def _default_performance_weights() -> dict[str, float]:
    return {"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15}


def _default_compliance_weights() -> dict[str, float]:
    return {"completion": 1 / 3, "intensity": 1 / 3, "duration": 1 / 3}


@dataclass
class AnalysisSettings:
    """Everything a session's analysis depends on besides the C3D file itself."""

    mvc_threshold_percentage: float = 0.75  # good intensity: peak >= this x MVC
    mvc_user: dict[str, float] = field(default_factory=dict)  # per muscle/side, highest priority
    mvc_session: float | None = None  # one MVC for every muscle (session calibration)
    duration_threshold_s: float = 2.0  # good duration: contraction >= this
    duration_threshold: dict[str, float] = field(default_factory=dict)  # per muscle/side override
    target_contractions: int = 12  # per muscle, for the completion rate
    compliance_weights: dict[str, float] = field(default_factory=_default_compliance_weights)
    performance_weights: dict[str, float] = field(default_factory=_default_performance_weights)
    rpe: int | None = None  # post-session Borg CR10 RPE, 0..10
    bfr_pressure_aop: float | None = None  # measured BFR pressure, % of arterial occlusion pressure
    bfr_gate_range: tuple[float, float] = BFR_SAFE_RANGE  # inclusive safe range (% AOP)
    game_points: int | None = None  # points achieved in the game
    game_points_max: int = 1000  # max points at the played difficulty
    # Trial scoring configuration (versioned in the database; these are version 1's values).
    rpe_effort: dict[int, float] = field(default_factory=default_rpe_effort)  # Borg CR10 RPE -> S_effort
    game_points_max_by_level: dict[int, int] = field(default_factory=dict)  # C3D game level -> max points
    mvc_sources: dict[str, str] = field(default_factory=dict)  # per muscle/side: label of a given MVC's origin
    channel_map: dict[str, str] | None = None  # {muscle: 'left'|'right'}; None = CH1 left, CH2 right
    processing: ProcessingParams = field(default_factory=ProcessingParams)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        p = self.mvc_threshold_percentage
        if not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise SettingsError(f"mvc_threshold_percentage must be in (0, 1], got {p!r}.")
        for key, v in self.mvc_user.items():
            _positive(f"mvc_user[{key!r}]", v)
        _positive("mvc_session", self.mvc_session, allow_none=True)
        _positive("duration_threshold_s", self.duration_threshold_s)
        for key, v in self.duration_threshold.items():
            _positive(f"duration_threshold[{key!r}]", v)
        if (
            not isinstance(self.target_contractions, int)
            or isinstance(self.target_contractions, bool)
            or self.target_contractions <= 0
        ):
            raise SettingsError(f"target_contractions must be a positive integer, got {self.target_contractions!r}.")
        _check_weights("compliance_weights", self.compliance_weights, ("completion", "intensity", "duration"))
        _check_weights("performance_weights", self.performance_weights, ("compliance", "symmetry", "effort", "game"))
        if self.rpe is not None and (
            not isinstance(self.rpe, int) or isinstance(self.rpe, bool) or not 0 <= self.rpe <= 10
        ):
            raise SettingsError(f"rpe must be an integer 0..10 (Borg CR10), got {self.rpe!r}.")
        if self.bfr_pressure_aop is not None and (
            not isinstance(self.bfr_pressure_aop, (int, float)) or not 0 <= self.bfr_pressure_aop <= 100
        ):
            raise SettingsError(f"bfr_pressure_aop must be a percentage 0..100, got {self.bfr_pressure_aop!r}.")
        lo, hi = self.bfr_gate_range
        if not 0 <= lo <= hi <= 100:
            raise SettingsError(f"bfr_gate_range must satisfy 0 <= low <= high <= 100, got {self.bfr_gate_range!r}.")
        if self.game_points is not None and (not isinstance(self.game_points, int) or self.game_points < 0):
            raise SettingsError(f"game_points must be an integer >= 0, got {self.game_points!r}.")
        if not isinstance(self.game_points_max, int) or self.game_points_max <= 0:
            raise SettingsError(f"game_points_max must be a positive integer, got {self.game_points_max!r}.")
        if set(self.rpe_effort) != set(range(11)):
            raise SettingsError(
                f"rpe_effort must give S_effort for every RPE 0..10 exactly once, got keys {sorted(self.rpe_effort)}."
            )
        for rpe, score in self.rpe_effort.items():
            if not isinstance(score, (int, float)) or not math.isfinite(score) or not 0 <= score <= 100:
                raise SettingsError(f"rpe_effort[{rpe}] must be a score 0..100, got {score!r}.")
        for level, pts in self.game_points_max_by_level.items():
            if not isinstance(level, int) or not 1 <= level <= 10:
                raise SettingsError(f"game_points_max_by_level: level must be 1..10, got {level!r}.")
            if not isinstance(pts, int) or isinstance(pts, bool) or pts <= 0:
                raise SettingsError(f"game_points_max_by_level[{level}] must be a positive integer, got {pts!r}.")
        if self.channel_map is not None:
            for k, side in self.channel_map.items():
                if side not in ("left", "right"):
                    raise SettingsError(f"channel_map[{k!r}] must be 'left' or 'right', got {side!r}.")
        self.processing.validate()

    def per_muscle(self, table: dict[str, _V], muscle: str, side: str | None) -> _V | None:
        """Value for a muscle from a per-muscle dict: muscle name first, then side."""
        if muscle in table:
            return table[muscle]
        if side is not None and side in table:
            return table[side]
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bfr_gate_range"] = list(self.bfr_gate_range)
        return d
