"""Session analysis: C3D recording + settings -> emg_statistics rows + performance_scores row.

Steps per muscle channel: artefact spans on the raw signal -> filter chain -> contraction
detection (baseline threshold, artefacts masked) -> MVC (user per muscle > session > backend estimate) -> intensity/duration classification ->
rates and compliance -> quality -> descriptors. Then the session performance score.

Channels are independent, so each one (chain + statistics) is a task. EMG_ANALYSIS_THREADS=2
runs the tasks in a small thread pool (scipy's sosfilt kernel and ndimage release the GIL:
1.7x on an isolated sosfilt). Off by default: on the 2-vCPU target the full analysis was not
faster threaded (each task's CPU time doubled) and was slower under CPU contention, which is
the normal state when the ingest pool runs one worker process per core. The raw rows,
filtered signals and envelopes live in reusable workspace buffers: they never leave ``analyze``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import contractions as cx
from . import descriptors as dx
from . import flags as fl
from . import quality as qx
from . import scoring
from .c3d_reader import MuscleChannel, Recording, Source, muscle_channels, read_c3d
from .contractions import Contraction
from .descriptors import Descriptors
from .errors import C3DContentError
from .pipeline import (
    LOW_MEMORY_SAMPLES,
    Conditioning,
    chain_into,
    chain_lowmem,
    pipeline_description,
    raw_slot,
    work_size,
    workspace,
)
from .quality import QualityDetail
from .scoring import PerformanceResult
from .settings import AnalysisSettings, ProcessingParams
from .version import PROCESSING_VERSION

_UNIT_SCALE = {"V": 1.0, "MV": 1e3, "UV": 1e6, "\u00b5V".upper(): 1e6}


@dataclass
class ChannelAnalysis:
    """One muscle; attribute names match the emg_statistics columns."""

    channel_name: str
    side: str | None
    raw_label: str
    unit: str
    mvc_peak_value: float  # largest contraction peak observed (envelope, V); 0.0 without contractions
    mvc_rms_value: float  # the MVC reference (envelope V RMS) used for the intensity criterion
    mvc_confidence_score: float
    mvc_calculation_method: str  # 'backend_95percentile' | 'user_defined'
    mvc_source: (
        str  # 'user_muscle' | 'patient_calibration' | 'session' | 'backend' | 'backend_fallback_no_contractions'
    )
    total_contractions: int
    good_contractions_intensity: int
    good_contractions_duration: int
    good_contractions_both: int
    completion_rate: float
    intensity_rate: float
    duration_rate: float
    muscle_compliance_score: float
    signal_quality_score: float
    noise_level_db: float | None
    artifacts_detected: int
    processing_confidence: float
    processing_pipeline: str
    processing_version: str
    processing_time_ms: int
    mvc_threshold_percentage: float
    duration_threshold_seconds: float
    detection_threshold_v: float
    contractions: list[Contraction]
    descriptors: Descriptors
    quality: QualityDetail
    detection: dict[str, Any]
    signal_flags: list[str] = field(default_factory=list)  # libs.emg.flags vocabulary, in its order
    usable: bool = True  # False when a flag in flags.EXCLUDING_FLAGS is set: not scored
    warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage, this channel

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("contractions", "descriptors", "quality")}
        d["contractions"] = [c.to_dict() for c in self.contractions]
        d["descriptors"] = self.descriptors.to_dict()
        d["quality"] = self.quality.to_dict()
        return d


@dataclass
class SessionAnalysis:
    channels: list[ChannelAnalysis]
    performance: PerformanceResult
    recording: dict[str, Any]
    metadata: dict[str, Any]
    parameters: dict[str, Any]
    processing_version: str
    processing_time_ms: float
    timings_ms: dict[str, Any]  # per stage (ms), "read" may be None, "channel_stages" is a dict
    warnings: list[str]

    def channel(self, name: str) -> ChannelAnalysis:
        for c in self.channels:
            if c.channel_name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _jsonable(
            {
                "processing_version": self.processing_version,
                "processing_time_ms": self.processing_time_ms,
                "timings_ms": self.timings_ms,
                "recording": self.recording,
                "metadata": self.metadata,
                "parameters": self.parameters,
                "channels": [c.to_dict() for c in self.channels],
                "performance": self.performance.to_dict(),
                "warnings": self.warnings,
            }
        )
        return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def _mvc(
    settings: AnalysisSettings,
    mc: MuscleChannel,
    env: NDArray[np.float64],
    det: cx.Detection,
    q: QualityDetail,
    warnings: list[str],
    mask: NDArray[np.bool_],
) -> tuple[float, str, str, float]:
    """(mvc value, column method, source, confidence) following the priority rule."""
    user = settings.per_muscle(settings.mvc_user, mc.name, mc.side)
    chosen = (user, "user_muscle") if user is not None else (settings.mvc_session, "session")
    peaks = [c.peak_v for c in det.contractions]
    if chosen[0] is not None:
        mvc = float(chosen[0])
        # A therapist-entered MVC is authoritative (confidence 1) unless the recording
        # contradicts it: peaks far above it, or all far below it (wrong unit/electrode?).
        conf = 1.0
        if peaks and (max(peaks) > 1.5 * mvc or max(peaks) < 0.2 * mvc):
            conf = 0.5
            warnings.append(
                f"{mc.name}: user MVC {mvc:.3g} is inconsistent with observed peaks "
                f"(max {max(peaks):.3g}); confidence lowered to 0.5."
            )
        elif det.threshold_rule == "mvc" and det.strong_level_v is not None and det.strong_level_v < det.threshold_v:
            # The MVC term kept activity out: right if it is background twitching, wrong if the
            # MVC is (e.g. 10x) too high. Say which activity was set aside.
            conf = 0.5
            warnings.append(
                f"{mc.name}: the channel's strongest activity ({det.strong_level_v:.3g}) stays below "
                f"{settings.processing.mvc_onset_fraction:.0%} of the calibrated MVC {mvc:.3g}, so it "
                "was not counted; check the calibration if the patient did contract."
            )
        source = chosen[1]
        if user is not None:
            source = settings.per_muscle(settings.mvc_sources, mc.name, mc.side) or source
        return mvc, "user_defined", source, conf
    est = cx.backend_mvc(env, det.contractions, settings.processing.mvc_percentile, mask)
    if est is not None:
        conf = cx.mvc_confidence(len(det.contractions), q.snr_factor, q.artifact_factor)
        return est, "backend_95percentile", "backend", conf
    # No contraction: the column is NOT NULL, so report the percentile of the artefact-free
    # envelope with confidence 0 and say so; intensity is 0/0 -> 0 anyway.
    warnings.append(
        f"{mc.name}: no contraction detected; MVC is the {settings.processing.mvc_percentile:g}th "
        "percentile of the whole envelope, confidence 0."
    )
    valid = env[env > 0]
    fallback = float(np.percentile(valid, settings.processing.mvc_percentile)) if valid.size else 0.0
    return fallback, "backend_95percentile", "backend_fallback_no_contractions", 0.0


def _device_agreement(on: NDArray[np.bool_] | None, contractions: list[Contraction]) -> dict[str, Any]:
    """How the device's undocumented 'activated' channel (``on`` = activated > 0) relates to
    our detections (info only)."""
    if on is None:
        return {"device_activated_channel": False}
    z = np.concatenate(([False], on, [False]))
    n_runs = int(np.count_nonzero(z[1:] & ~z[:-1]))
    overlap = sum(1 for c in contractions if on[c.start_index : c.end_index].any())
    return {
        "device_activated_channel": True,
        "device_active_fraction": float(on.mean()),
        "device_activation_runs": n_runs,
        "contractions_confirmed_by_device": overlap,
    }


def _calibrated_mvc(settings: AnalysisSettings, mc: MuscleChannel) -> float | None:
    user = settings.per_muscle(settings.mvc_user, mc.name, mc.side)
    return float(user) if user is not None else settings.mvc_session


def _electrode(mc: MuscleChannel) -> str:
    return f"{mc.name} ({mc.side})" if mc.side else mc.name


def _usability(
    p: ProcessingParams,
    mc: MuscleChannel,
    det: cx.Detection,
    q: QualityDetail,
    cond: Conditioning,
    rms_v: float | None,
    unit_scale: float,
) -> tuple[set[str], str | None]:
    """(excluding flags, reason) for a channel that cannot measure the muscle, else (set(), None).

    Order: flat (nothing but quantisation), mostly artefacts, no activity distinguishable from
    the noise floor (disconnected, or hum-only once the hum is removed), very weak activity.
    """
    if rms_v is None or rms_v < p.flat_rms_v * unit_scale:
        return {fl.NO_USABLE_EMG}, f"flat signal (filtered RMS {(rms_v or 0.0) * 1e6 / unit_scale:.2g} uV)"
    if q.masked_fraction > p.max_masked_fraction:
        return {fl.NO_USABLE_EMG}, f"{q.masked_fraction:.0%} of the recording is artefacts"
    strong = det.strong_level_v
    if strong is None or det.baseline_v <= 0 or strong / det.baseline_v < p.min_activity_ratio:
        # No activity: an electrode fault only on positive evidence (hum or high noise at rest);
        # a quiet, connected electrode on a resting muscle is scored (the patient did nothing).
        if cond.mains.present and cond.mains.rest_share >= 0.5:
            return {fl.NO_USABLE_EMG}, "hum-only: mains interference and no muscle activity; disconnected electrode?"
        if q.noise_rms_v >= p.disconnected_noise_v * unit_scale:
            return {fl.NO_USABLE_EMG}, (
                f"noise only ({q.noise_rms_v * 1e6 / unit_scale:.3g} uV RMS at rest, no muscle "
                "activity); disconnected electrode or poor skin contact?"
            )
        return set(), None
    return set(), None


def _analyze_channel(
    rec: Recording,
    mc: MuscleChannel,
    filtered: NDArray[Any],  # float64, or float32 on the low-memory path
    env: NDArray[np.float64],
    cond: Conditioning,
    settings: AnalysisSettings,
    shared_ms: float,
    scratch: NDArray[np.float64] | None = None,
) -> ChannelAnalysis:
    t0 = time.perf_counter()
    p = settings.processing
    rate = rec.rate
    warnings: list[str] = []
    unit = rec.units[mc.raw_index]
    unit_scale = _UNIT_SCALE.get(unit.upper())
    if unit_scale is None:
        warnings.append(f"{mc.name}: unknown unit {unit!r}; absolute thresholds assume volts.")
        unit_scale = 1.0
    spans, flag = cond.artifacts, cond.flag
    mask = qx.artifact_mask(flag, rate, p)
    t_art = time.perf_counter()
    det = cx.detect(env, mask, rate, p, unit_scale, scratch, calibrated_mvc=_calibrated_mvc(settings, mc))
    # Rest noise: below the noise-relative onset level (the task-relative one would count
    # low-level activity as noise).
    rest_level = max(det.threshold_terms["noise"], det.threshold_terms["floor"])
    q = qx.assess(filtered, env, mask, spans, rest_level, det.baseline_v, det.high_level_v, scratch)
    mvc, method, source, conf = _mvc(settings, mc, env, det, q, warnings, mask)
    dur_thr = settings.per_muscle(settings.duration_threshold, mc.name, mc.side) or settings.duration_threshold_s
    cx.classify(det.contractions, mvc, settings.mvc_threshold_percentage, dur_thr)
    total = len(det.contractions)
    g_int = sum(c.meets_intensity for c in det.contractions)
    g_dur = sum(c.meets_duration for c in det.contractions)
    g_both = sum(c.good for c in det.contractions)
    completion, intensity, duration = scoring.rates(total, g_int, g_dur, settings.target_contractions)
    compliance = scoring.muscle_compliance(completion, intensity, duration, settings.compliance_weights)
    quality_score = q.artifact_factor * q.snr_factor
    if total:
        ratio = float(np.median([c.peak_v for c in det.contractions])) / det.threshold_v
        separation = float(np.clip(np.log(max(ratio, 1.0)) / np.log(4.0), 0.0, 1.0))
    else:
        separation = 0.5  # nothing crossed the threshold: no margin to judge
    processing_conf = float(np.clip((1.0 - q.masked_fraction) * separation, 0.0, 1.0))
    t_det = time.perf_counter()
    desc = dx.compute(filtered, mask, det.contractions, rate, p, scratch)
    t_desc = time.perf_counter()

    flags: set[str] = set()
    if cond.mains.present:
        flags.add(fl.MAINS_INTERFERENCE)
        warnings.append(
            f"{mc.name}: mains interference at {cond.mains.frequency_hz:.2f} Hz "
            f"({cond.mains.rest_share:.0%} of the rest power; harmonics "
            f"{', '.join(str(h) for h in cond.mains.harmonics)}) removed by a zero-phase notch."
        )
    if any(a.kind in ("dropout", "flatline") for a in spans):
        flags.add(fl.DROPOUT)
    if any(a.kind == "clipping" for a in spans):
        flags.add(fl.SATURATION)
        n_sat = sum(a.n_samples for a in spans if a.kind == "clipping")
        warnings.append(f"{mc.name}: saturation: {n_sat} sample(s) at the ADC rail, treated as artefacts.")
    if det.rejected_artifact or det.partially_masked:
        flags.add(fl.PARTIALLY_MASKED)
    if det.rejected_artifact:
        warnings.append(
            f"{mc.name}: {det.rejected_artifact} contraction(s) ({det.lost_artifact_s:.2f} s) lost to "
            "artefacts: no valid uncorrupted part."
        )
    if det.partially_masked:
        warnings.append(
            f"{mc.name}: {det.partially_masked} contraction(s) overlapped artefacts; kept their "
            f"uncorrupted part ({det.masked_s:.2f} s cut)."
        )
    excluding, reason = _usability(p, mc, det, q, cond, desc.rms_v, unit_scale)
    flags |= excluding
    usable = not excluding
    if usable and total == 0:
        warnings.append(
            f"{mc.name}: no muscle activity detected on the {_electrode(mc)} channel; scored as no "
            "contractions. If the patient exercised this leg, check the electrode."
        )
    if reason:
        warnings.append(
            f"{mc.name}: {reason}: check the {_electrode(mc)} electrode. "
            "This channel is excluded from symmetry and the overall score."
        )
    activated = rec.channel_positive(mc.activated_index) if mc.activated_index is not None else None
    detection = {
        "method": "double threshold with hysteresis on the RMS envelope",
        "threshold_v": det.threshold_v,
        "offset_threshold_v": det.offset_threshold_v,
        "baseline_v": det.baseline_v,
        "strong_level_v": det.strong_level_v,
        "threshold_terms": det.threshold_terms,
        "threshold_rule": det.threshold_rule,
        "rejected_artifact": det.rejected_artifact,
        "lost_artifact_s": det.lost_artifact_s,
        "partially_masked": det.partially_masked,
        "masked_s": det.masked_s,
        "rejected_short": det.rejected_short,
        "merged_gaps": det.merged_gaps,
        "duration_threshold_s": dur_thr,
        "separation_factor": separation,
        "mains": cond.mains.to_dict(),
        "usability": reason,
        **_device_agreement(activated, det.contractions),
    }
    t_end = time.perf_counter()
    stage_ms = {
        "artifacts": (t_art - t0) * 1e3,
        "detection": (t_det - t_art) * 1e3,
        "descriptors": (t_desc - t_det) * 1e3,
        "other": (t_end - t_desc) * 1e3,
    }
    own_ms = (t_end - t0) * 1e3
    return ChannelAnalysis(
        channel_name=mc.name,
        side=mc.side,
        raw_label=mc.raw_label,
        unit=unit,
        mvc_peak_value=max((c.peak_v for c in det.contractions), default=0.0),
        mvc_rms_value=mvc,
        mvc_confidence_score=conf,
        mvc_calculation_method=method,
        mvc_source=source,
        total_contractions=total,
        good_contractions_intensity=int(g_int),
        good_contractions_duration=int(g_dur),
        good_contractions_both=int(g_both),
        completion_rate=completion,
        intensity_rate=intensity,
        duration_rate=duration,
        muscle_compliance_score=compliance,
        signal_quality_score=float(np.clip(quality_score, 0.0, 1.0)),
        noise_level_db=q.noise_level_db,
        # Spans found in the raw signal; the notch's edge transients are masked but not counted.
        artifacts_detected=sum(1 for a in spans if a.kind != "filter_edge"),
        processing_confidence=processing_conf,
        processing_pipeline=pipeline_description(p),
        processing_version=PROCESSING_VERSION,
        processing_time_ms=round(shared_ms + own_ms),
        mvc_threshold_percentage=settings.mvc_threshold_percentage,
        duration_threshold_seconds=dur_thr,
        detection_threshold_v=det.threshold_v,
        contractions=det.contractions,
        descriptors=desc,
        quality=q,
        detection=detection,
        warnings=warnings,
        timings_ms=stage_ms,
        signal_flags=fl.ordered(flags),
        usable=usable,
    )


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor | None:
    """The channel thread pool (EMG_ANALYSIS_THREADS >= 2; created on first use, re-created
    after a fork), or None to run the channels inline (the default)."""
    global _POOL
    env = os.environ.get("EMG_ANALYSIS_THREADS", "").strip()
    n = min(int(env), 8) if env.isdigit() else 1
    if n <= 1:
        return None
    pid = os.getpid()
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != pid or _POOL[1]._max_workers != n:
            if _POOL is not None and _POOL[0] == pid:
                _POOL[1].shutdown(wait=False)
            _POOL = (pid, ThreadPoolExecutor(max_workers=n, thread_name_prefix="emg-channel"))
        return _POOL[1]


def _all_done(
    futures: list[Future[tuple[ChannelAnalysis, float]]],
) -> list[Future[tuple[ChannelAnalysis, float]]]:
    """Wait for every task (they share the workspace) before any result or error is used."""
    for f in futures:
        f.exception()
    return futures


def analyze(
    recording: Recording, settings: AnalysisSettings | None = None, _read_ms: float | None = None
) -> SessionAnalysis:
    """Analyse every muscle channel of ``recording`` and score the session."""
    t0 = time.perf_counter()
    settings = settings or AnalysisSettings()
    settings.validate()
    muscles = muscle_channels(recording, settings.channel_map)
    if not muscles:
        raise C3DContentError("No EMG channel found among the analog labels: " + ", ".join(recording.labels))
    t1 = time.perf_counter()
    n = recording.n_samples
    with workspace() as ws:

        def task(i: int, m: MuscleChannel) -> tuple[ChannelAnalysis, float]:
            tc = time.perf_counter()
            if n > LOW_MEMORY_SAMPLES:
                # Long recording: the raw row is converted into the work buffer and the chain
                # runs in place, in float64: the work buffer and the envelope (detection and
                # MVC: identical to the standard path), and the filtered signal kept in
                # float32 (6e-8 relative, far below a 16-bit ADC step) for the descriptors
                # and noise statistics, accumulated in float64. 20 bytes per sample, no other
                # copy. Channels run one after the other share the buffers (the workspace
                # keeps what fits in its budget: a buffer kept for one channel must not sit
                # idle during the next).
                k = i if pool is not None else 0
                filtered = ws.buffer((k, "filtered32"), n, np.float32)
                env = ws.buffer((k, "envelope"), n)
                a = ws.buffer((k, "a"), work_size(n))
                raw = recording.row(m.raw_index, raw_slot(a, n))
                cond = chain_lowmem(raw, recording.rate, settings.processing, a, env, filtered)
                del raw
            else:
                filtered, env = ws.buffer((i, "filtered"), n), ws.buffer((i, "envelope"), n)
                a = ws.buffer((i, "a"), work_size(n))
                raw = recording.row(m.raw_index, ws.buffer((i, "raw"), n))
                cond = chain_into(
                    raw, recording.rate, settings.processing, filtered, env, a, ws.buffer((i, "b"), work_size(n))
                )
            chain_ms = (time.perf_counter() - tc) * 1e3
            # ``a`` is free again: it is the scratch buffer of the statistics.
            return _analyze_channel(recording, m, filtered, env, cond, settings, shared_ms + chain_ms, a), chain_ms

        shared_ms = (t1 - t0) * 1e3 / len(muscles)
        pool = _pool() if len(muscles) > 1 else None
        if pool is None:
            done = [task(i, m) for i, m in enumerate(muscles)]
        else:
            futures = [pool.submit(task, i, m) for i, m in enumerate(muscles)]
            done = [f.result() for f in _all_done(futures)]
    channels = [c for c, _ in done]
    t3 = time.perf_counter()

    warnings = list(recording.warnings)
    for c in channels:
        warnings += c.warnings
    by_side: dict[str, ChannelAnalysis] = {}
    unusable: dict[str, str] = {}  # side -> why it is not scored
    for c in channels:
        if c.side is not None and not c.usable:
            unusable.setdefault(
                c.side,
                f"{c.channel_name} ({c.side}) has no usable EMG: "
                + ", ".join(f for f in c.signal_flags if f in fl.EXCLUDING_FLAGS),
            )
            continue
        if c.side is not None:
            if c.side in by_side:
                warnings.append(
                    f"Several muscles map to the {c.side} side; {by_side[c.side].channel_name} is used for scoring."
                )
            else:
                by_side[c.side] = c

    def side_rates(c: ChannelAnalysis | None) -> dict[str, float] | None:
        if c is None:
            return None
        return {
            k: getattr(c, k) for k in ("completion_rate", "intensity_rate", "duration_rate", "muscle_compliance_score")
        }

    game_points, game_points_max = settings.game_points, settings.game_points_max
    md = recording.metadata
    if game_points is None and md.game_score is not None:
        level_max = settings.game_points_max_by_level.get(md.game_level) if md.game_level is not None else None
        if level_max is not None and md.game_score >= 0:
            # The trial configuration knows the scale of this level: the file's score counts.
            game_points, game_points_max = round(md.game_score), level_max
            warnings.append(
                f"Game points taken from the file: SUBJECTS:GAME_SCORE {md.game_score:g} of "
                f"{level_max} at level {md.game_level} (scoring configuration)."
            )
        else:
            warnings.append(
                f"Game points not provided; the file's SUBJECTS:GAME_SCORE ({md.game_score:g}) "
                f"is not used because the scoring configuration defines no maximum for game level "
                f"{md.game_level if md.game_level is not None else 'unknown'}."
            )
    perf = scoring.performance(
        side_rates(by_side.get("left")),
        side_rates(by_side.get("right")),
        rpe=settings.rpe,
        bfr_pressure_aop=settings.bfr_pressure_aop,
        game_points=game_points,
        game_points_max=game_points_max,
        weights=settings.performance_weights,
        bfr_range=settings.bfr_gate_range,
        session_duration_minutes=recording.duration_s / 60.0,
        unusable_sides={k: v for k, v in unusable.items() if k not in by_side},
        rpe_effort=settings.rpe_effort,
    )
    if perf.overall_performance_score is None:
        warnings.append("Session not scored: " + "; ".join(f"{k} ({v})" for k, v in perf.components_excluded.items()))
    t4 = time.perf_counter()
    total_ms = (t4 - t0) * 1e3 + (_read_ms or 0.0)
    # filter_chain and channel_stages are summed over channels (CPU time of the tasks, which
    # may overlap); "channels" is the wall time of all channel tasks.
    timings = {
        "read": _read_ms,
        "setup": (t1 - t0) * 1e3,
        "filter_chain": sum(ms for _, ms in done),
        "channels": (t3 - t1) * 1e3,
        "scoring": (t4 - t3) * 1e3,
        "total": total_ms,
        "threads": 1 if pool is None else pool._max_workers,
        "channel_stages": {k: sum(c.timings_ms[k] for c in channels) for k in channels[0].timings_ms},
    }
    return SessionAnalysis(
        channels=channels,
        performance=perf,
        recording={
            "rate_hz": recording.rate,
            "duration_s": recording.duration_s,
            "n_samples": recording.n_samples,
            "labels": recording.labels,
            "units": recording.units,
            "channel_names": [m.name for m in muscles],
            "reader": recording.reader,
            "file_name": recording.file_name,
        },
        metadata=asdict(recording.metadata),
        parameters={
            "settings": settings.to_dict(),
            "pipeline": pipeline_description(settings.processing),
            "filters": {
                "type": "butterworth",
                "implementation": "scipy.signal.sosfiltfilt (zero-phase)",
                "effective_order": 2 * settings.processing.filter_order,
                "rate_hz": recording.rate,
            },
            "noise_level_reference": "dB re 1 uV RMS of the filtered signal at rest",
        },
        processing_version=PROCESSING_VERSION,
        processing_time_ms=total_ms,
        timings_ms=timings,
        warnings=warnings,
    )


def analyze_file(
    source: Source | Path, settings: AnalysisSettings | None = None, *, file_name: str | None = None
) -> SessionAnalysis:
    """Read a C3D (path or bytes) and analyse it."""
    t0 = time.perf_counter()
    rec = read_c3d(source, file_name=file_name)
    return analyze(rec, settings, _read_ms=(time.perf_counter() - t0) * 1e3)
