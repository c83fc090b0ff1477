"""Contraction detection on the envelope, MVC estimation and per-contraction criteria.

Threshold rule and the MVC circularity: detection must not depend on the MVC, because the
backend MVC is itself estimated from the detected contractions. So contractions are found
with a baseline-relative threshold,
    threshold = max(threshold_baseline_factor x resting level, min_threshold_v),
where the resting level is a low percentile of the artefact-free envelope and the absolute
floor keeps a near-silent (or disconnected) channel from turning quantisation noise into
contractions. The MVC (user, session or backend estimate) is then only used to classify
intensity (peak >= mvc_threshold_percentage x MVC). Consequence, by design: entering a
user MVC never changes how many contractions are counted.

Order of operations: threshold -> merge gaps shorter than merge_gap_ms -> drop bursts
shorter than min_contraction_ms -> reject bursts touching an artefact (span + ringing
margin). A long contraction is never split: there is no maximum duration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .settings import ProcessingParams


@dataclass
class Contraction:
    start_s: float
    end_s: float
    duration_s: float
    peak_v: float  # envelope maximum (V RMS)
    mean_v: float  # envelope mean over the contraction (V RMS)
    start_index: int
    end_index: int  # exclusive
    meets_intensity: bool = False
    meets_duration: bool = False
    good: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Detection:
    threshold_v: float
    baseline_v: float
    contractions: list[Contraction]
    rejected_artifact: int  # bursts discarded because they touch an artefact span
    rejected_short: int  # bursts shorter than min_contraction_ms after merging
    merged_gaps: int  # gaps closed by the merge step
    high_level_v: float  # 99.5th percentile of the artefact-free envelope (for the SNR)


def _runs(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.concatenate(([False], flags, [False]))
    edges = np.flatnonzero(z[1:] != z[:-1])
    return edges[::2], edges[1::2]


def envelope_levels(env: np.ndarray, mask: np.ndarray, params: ProcessingParams,
                    scratch: np.ndarray | None = None) -> tuple[float, float]:
    """(resting level, 99.5th percentile) of the artefact-free envelope, one partition pass.

    ``scratch`` (>= env.size float64, clobbered) receives the samples to partition, instead of
    a fresh copy; the percentiles are the same either way.
    """
    if mask.any():
        keep = ~mask
        valid = env[keep] if scratch is None else np.compress(keep, env, out=scratch[:np.count_nonzero(keep)])
        private = True
    elif scratch is not None:
        valid = scratch[:env.size]
        np.copyto(valid, env)
        private = True
    else:
        valid, private = env, False
    if valid.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(valid, [params.baseline_percentile, 99.5], overwrite_input=private)
    return float(lo), float(hi)


def detect(env: np.ndarray, mask: np.ndarray, rate: float, params: ProcessingParams,
           unit_scale: float = 1.0, scratch: np.ndarray | None = None) -> Detection:
    """Contractions of one envelope. ``unit_scale`` converts volts to the channel unit;
    ``scratch`` is an optional work buffer (see ``envelope_levels``)."""
    baseline, high = envelope_levels(env, mask, params, scratch)
    threshold = max(params.threshold_baseline_factor * baseline, params.min_threshold_v * unit_scale)
    starts, ends = _runs(env > threshold)
    merged = 0
    if starts.size > 1:
        gap = int(round(params.merge_gap_ms * rate / 1000.0))
        keep = (starts[1:] - ends[:-1]) >= gap  # gaps to keep as separations
        merged = int((~keep).sum())
        starts = np.r_[starts[0], starts[1:][keep]]
        ends = np.r_[ends[:-1][keep], ends[-1]]
    min_len = int(round(params.min_contraction_ms * rate / 1000.0))
    long = (ends - starts) >= min_len
    rejected_short = int((~long).sum())
    starts, ends = starts[long], ends[long]
    out: list[Contraction] = []
    rejected_art = 0
    if mask.any():
        cmask = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
        touched = (cmask[ends] - cmask[starts]) > 0
        rejected_art = int(touched.sum())
        starts, ends = starts[~touched], ends[~touched]
    for s, e in zip(starts.tolist(), ends.tolist()):
        seg = env[s:e]
        out.append(Contraction(start_s=s / rate, end_s=e / rate, duration_s=(e - s) / rate,
                               peak_v=float(seg.max()), mean_v=float(seg.mean()), start_index=s, end_index=e))
    return Detection(threshold, baseline, out, rejected_art, rejected_short, merged, high)


def backend_mvc(env: np.ndarray, contractions: list[Contraction], percentile: float) -> float | None:
    """Percentile of the envelope over contraction samples only (rest excluded).

    Including rest (the previous implementation) puts the 95th percentile near the resting
    level whenever the muscle rests > 5 % of the time, making every contraction "intense".
    """
    if not contractions:
        return None
    samples = np.concatenate([env[c.start_index:c.end_index] for c in contractions])
    return float(np.percentile(samples, percentile))


def classify(contractions: list[Contraction], mvc: float, mvc_fraction: float, duration_s: float) -> None:
    """Set meets_intensity / meets_duration / good in place."""
    limit = mvc_fraction * mvc
    for c in contractions:
        c.meets_intensity = bool(c.peak_v >= limit)
        # Durations are whole samples: compare with a half-sample tolerance, not float noise.
        c.meets_duration = bool(c.duration_s >= duration_s - 1e-9)
        c.good = c.meets_intensity and c.meets_duration


def mvc_confidence(n_contractions: int, snr_factor: float, artifact_factor: float) -> float:
    """Trust in a backend MVC estimate, in [0, 1].

    count factor 1 - exp(-n/3) (1 contraction: 0.28, 3: 0.63, 6: 0.86, 12: 0.98) because a
    percentile over few contractions is dominated by one effort; times the envelope SNR
    factor (noise inflates a percentile) and the artefact factor (masked data may hide the
    true maximal efforts).
    """
    if n_contractions <= 0:
        return 0.0
    return float(np.clip((1.0 - np.exp(-n_contractions / 3.0)) * snr_factor * artifact_factor, 0.0, 1.0))
