"""Contraction detection on the envelope, MVC estimation and per-contraction criteria.

Method: double threshold with hysteresis on the linear envelope (the classical two-level
onset detector, e.g. Bonato et al. 1998 / Hodges & Bui 1996 style, applied to the RMS
envelope). A burst is a run of the envelope above the OFFSET threshold that contains at
least one artefact-free sample above the ONSET threshold; its onset and offset are where the
envelope crosses the offset threshold. A noise crossing of the onset level therefore cannot
start a burst on its own, and two bursts are separate as soon as the envelope falls below the
offset level between them.

Onset threshold: the largest of
- ``threshold_baseline_factor`` x noise floor (noise floor: ``baseline_percentile`` of the
  artefact-free envelope),
- ``activity_fraction`` x the channel's level of strong activity (median peak of the
  strongest ``strong_top_fraction`` of the bursts found with the noise-relative thresholds,
  at least three of them),
  so background twitching well below the task level is not a contraction,
- ``mvc_onset_fraction`` x the calibrated MVC, when the therapist or a calibration gave one,
- ``min_threshold_v`` (absolute floor, so quantisation noise on a silent channel is never
  a contraction).
Offset threshold: max(``offset_fraction`` x onset, ``offset_baseline_factor`` x noise floor).

The backend MVC estimate is never part of the threshold (it is estimated from the detected
contractions: that would be circular).

Order of operations: hysteresis bursts -> artefacts (a burst that overlaps the artefact mask
keeps the span of its uncorrupted samples when they still make a valid contraction - at least
``min_contraction_ms`` of them, one above the onset threshold - flagged ``partially_masked``
with the masked seconds; its peak and mean come from uncorrupted samples only; otherwise it is
lost and counted) -> drop bursts shorter than ``min_contraction_ms`` -> merge contractions
separated by less than ``merge_gap_ms`` of uncorrupted signal -> edges: onset moved back and
offset forward to where the envelope falls below max(``edge_baseline_factor`` x noise floor,
``edge_peak_fraction`` x the contraction's peak) (never into an artefact or past the midpoint
to a neighbour), so the onset is where activity starts, not where it reached the
task-relative threshold, and a low-level tail is not taken in. A long contraction is never split:
there is no maximum duration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .arrays import BLOCK, select
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
    partially_masked: bool = False  # overlapped an artefact: only its uncorrupted part is kept
    masked_s: float = 0.0  # seconds of the burst lost to artefacts (0 when not partially masked)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Detection:
    threshold_v: float  # onset threshold (V envelope)
    offset_threshold_v: float  # offset threshold (V envelope)
    baseline_v: float  # noise floor: baseline_percentile of the artefact-free envelope
    strong_level_v: float | None  # level of strong activity (None: no burst above the noise thresholds)
    threshold_terms: dict[str, float]  # every candidate of the onset maximum, by name
    threshold_rule: str  # the term that set the onset threshold
    contractions: list[Contraction]
    rejected_artifact: int  # bursts lost to artefacts (no valid uncorrupted part)
    lost_artifact_s: float  # seconds of those bursts
    partially_masked: int  # contractions kept with only their uncorrupted part
    masked_s: float  # seconds cut from those contractions
    rejected_short: int  # bursts shorter than min_contraction_ms
    merged_gaps: int  # gaps closed by the merge step
    high_level_v: float  # 99.5th percentile of the artefact-free envelope (for the SNR)


def _runs(flags: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    z = np.concatenate(([False], flags, [False]))
    edges = np.flatnonzero(z[1:] != z[:-1])
    return edges[::2], edges[1::2]


_LEVEL_STRIDE = 8  # the envelope is low-passed at 10 Hz: every 8th sample (124 Hz at 990 Hz) is plenty


def envelope_levels(
    env: NDArray[np.float64],
    mask: NDArray[np.bool_],
    params: ProcessingParams,
    scratch: NDArray[np.float64] | None = None,
) -> tuple[float, float]:
    """(resting level, 99.5th percentile) of the artefact-free envelope, one partition pass.

    Percentiles of every ``_LEVEL_STRIDE``-th sample: the envelope is smooth (10 Hz low-pass,
    then a 50 ms RMS), so the subsample has the same distribution and partitions 8x faster.
    ``scratch`` (clobbered) receives the samples to partition instead of a fresh copy.
    """
    e = env[::_LEVEL_STRIDE]
    m = mask[::_LEVEL_STRIDE]
    if m.any():
        keep = ~m
        valid = select(keep, e, scratch)
    else:
        valid = e.copy() if scratch is None else scratch[: e.size]
        if scratch is not None:
            np.copyto(valid, e)
    if valid.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(valid, [params.baseline_percentile, 99.5], overwrite_input=True)
    return float(lo), float(hi)


def hysteresis(
    env: NDArray[np.float64], valid: NDArray[np.bool_] | None, on: float, off: float
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(starts, ends) of the runs of ``env > off`` holding a valid sample ``> on`` (ends exclusive)."""
    starts, ends = _runs(env > off)
    if starts.size == 0:
        return starts, ends
    trig = env > on
    if valid is not None:
        trig &= valid
    # Runs are disjoint and in order: reduceat over their starts covers each run plus the gap
    # after it, and a gap (env <= off <= on) holds no trigger, so the result is per run.
    keep = np.logical_or.reduceat(trig, starts)
    return starts[keep], ends[keep]


def _burst_peaks(
    env: NDArray[np.float64], valid: NDArray[np.bool_] | None, starts: NDArray[np.intp], ends: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Largest artefact-free envelope value of each burst (0 where none is free)."""
    out = np.zeros(starts.size)
    i = 0
    while i < starts.size:
        # Bursts starting within BLOCK samples of each other at a time: the copies below are
        # of that stretch, not of the whole signal (a long recording's largest temporary).
        lo = int(starts[i])
        j = max(i + 1, int(np.searchsorted(starts, lo + BLOCK, "left")))
        hi = int(ends[j - 1])
        x = np.where(valid[lo:hi], env[lo:hi], 0.0) if valid is not None else env[lo:hi]
        # reduceat over the interleaved (start, end) pairs: even slots are the bursts. A
        # sentinel keeps an end equal to the length a valid index.
        x = np.concatenate((x, [0.0]))
        out[i:j] = np.maximum.reduceat(x, np.column_stack((starts[i:j] - lo, ends[i:j] - lo)).ravel())[::2]
        i = j
    return out


STRONG_MIN_BURSTS, STRONG_MAX_BURSTS = 3, 10


def strong_level(peaks: NDArray[np.float64], top_fraction: float) -> float | None:
    """Median peak of the strongest ``top_fraction`` of the bursts, at least three of them (all
    when fewer: one outlier burst does not set the level) and at most ten (hundreds of
    background bursts do not pull it down to their own level)."""
    if peaks.size == 0:
        return None
    k = min(peaks.size, max(STRONG_MIN_BURSTS, min(STRONG_MAX_BURSTS, int(np.ceil(peaks.size * top_fraction)))))
    return float(np.median(np.sort(peaks)[-k:]))


def detect(
    env: NDArray[np.float64],
    mask: NDArray[np.bool_],
    rate: float,
    params: ProcessingParams,
    unit_scale: float = 1.0,
    scratch: NDArray[np.float64] | None = None,
    calibrated_mvc: float | None = None,
) -> Detection:
    """Contractions of one envelope. ``mask`` marks artefact samples (with margins);
    ``unit_scale`` converts volts to the channel unit; ``scratch`` is an optional work buffer
    (see ``envelope_levels``); ``calibrated_mvc`` is the therapist's/calibration MVC."""
    baseline, high = envelope_levels(env, mask, params, scratch)
    has_mask = bool(mask.any())
    valid = ~mask if has_mask else None
    floor = params.min_threshold_v * unit_scale
    min_len = max(1, round(params.min_contraction_ms * rate / 1000.0))
    noise_on = params.threshold_baseline_factor * baseline
    noise_off = params.offset_baseline_factor * baseline
    # Provisional bursts with the noise-relative thresholds only: the channel's activity level.
    on0 = max(noise_on, floor)
    ps, pe = hysteresis(env, valid, on0, max(noise_off, params.offset_fraction * on0))
    long = (pe - ps) >= min_len
    strong = strong_level(_burst_peaks(env, valid, ps[long], pe[long]), params.strong_top_fraction)
    terms = {
        "noise": noise_on,
        "activity": params.activity_fraction * strong if strong is not None else 0.0,
        "floor": floor,
    }
    if calibrated_mvc is not None:
        terms["mvc"] = params.mvc_onset_fraction * calibrated_mvc
    rule = max(terms, key=lambda k: terms[k])
    on = terms[rule]
    off = max(params.offset_fraction * on, noise_off)
    # Masked samples may trigger here: a contraction hidden by an artefact is then counted as
    # lost (and said so) instead of vanishing silently.
    starts, ends = hysteresis(env, None, on, off)

    # Artefacts cost only what they touch: a burst that overlaps the mask keeps the span of
    # its artefact-free samples when they still make a valid contraction.
    items: list[list[int]] = []  # [start, end, masked samples inside]
    lost = rejected_short = 0
    lost_s = 0.0
    for s, e in zip(starts.tolist(), ends.tolist()):
        if not has_mask or not mask[s:e].any():
            if e - s >= min_len:
                items.append([s, e, 0])
            else:
                rejected_short += 1
            continue
        free = np.flatnonzero(valid[s:e])  # type: ignore[index]  # has_mask, valid set
        if free.size < min_len or float(env[s:e][free].max()) <= on:
            lost += 1
            lost_s += (e - s) / rate
            continue
        a, b = s + int(free[0]), s + int(free[-1]) + 1
        items.append([a, b, (e - s) - int(free.size)])  # masked inside and at the trimmed ends
    # Merge contractions separated by less than merge_gap_ms of artefact-free signal: masked
    # samples in a gap are no evidence that the muscle rested (a dropout inside a plateau).
    gap = round(params.merge_gap_ms * rate / 1000.0)
    max_hole = round(params.max_masked_gap_ms * rate / 1000.0)
    merged: list[list[int]] = []
    n_merged = 0
    for it in items:
        if merged:
            prev = merged[-1]
            hole = int(mask[prev[1] : it[0]].sum()) if has_mask else 0
            if (it[0] - prev[1]) - hole < gap and hole <= max_hole:
                prev[1], prev[2] = it[1], prev[2] + hole + it[2]
                n_merged += 1
                continue
        merged.append(list(it))
    _extend_edges(
        merged, env, mask if has_mask else None, params.edge_baseline_factor * baseline, params.edge_peak_fraction
    )
    out: list[Contraction] = []
    partial = 0
    cut_s = 0.0
    for s, e, masked in merged:
        seg = env[s:e] if not masked else env[s:e][valid[s:e]]  # type: ignore[index]  # masked: has_mask, valid set
        lost_here = masked / rate
        # Seconds cut from the burst: masked samples inside plus trimmed masked ends.
        partial += bool(masked)
        cut_s += lost_here
        out.append(
            Contraction(
                start_s=s / rate,
                end_s=e / rate,
                duration_s=(e - s) / rate,
                peak_v=float(seg.max()),
                mean_v=float(seg.mean()),
                start_index=s,
                end_index=e,
                partially_masked=bool(masked),
                masked_s=float(lost_here),
            )
        )
    return Detection(
        on, off, baseline, strong, terms, rule, out, lost, lost_s, partial, cut_s, rejected_short, n_merged, high
    )


def _extend_edges(
    items: list[list[int]],
    env: NDArray[np.float64],
    mask: NDArray[np.bool_] | None,
    noise_level: float,
    peak_fraction: float,
) -> None:
    """Move each contraction's onset back and offset forward to where the envelope falls below
    its edge level, max(noise-relative level, ``peak_fraction`` x its own peak): onsets are
    then not late by the ramp up to a task-relative threshold, and a low-level tail after the
    contraction is not taken in. Never into masked samples, never past the midpoint to a
    neighbour (in place)."""
    if not items:
        return
    masked_idx = np.flatnonzero(mask) if mask is not None else np.zeros(0, dtype=np.int64)
    bounds = []
    for i, it in enumerate(items):
        s, e = it[0], it[1]
        lo = (items[i - 1][1] + s + 1) // 2 if i else 0
        hi = (e + items[i + 1][0]) // 2 if i + 1 < len(items) else env.size
        if masked_idx.size:
            j = int(np.searchsorted(masked_idx, s)) - 1  # last masked sample before s
            if j >= 0:
                lo = max(lo, int(masked_idx[j]) + 1)
            j = int(np.searchsorted(masked_idx, e))  # first masked sample at or after e
            if j < masked_idx.size:
                hi = min(hi, int(masked_idx[j]))
        bounds.append((lo, hi))
    for it, (lo, hi) in zip(items, bounds):
        s, e = it[0], it[1]
        level = max(noise_level, peak_fraction * float(env[s:e].max()))
        below = np.flatnonzero(env[lo:s] <= level)
        new_s = lo + int(below[-1]) + 1 if below.size else lo
        below = np.flatnonzero(env[e:hi] <= level)
        new_e = e + int(below[0]) if below.size else hi
        it[0], it[1] = min(s, new_s), max(e, new_e)


def backend_mvc(
    env: NDArray[np.float64], contractions: list[Contraction], percentile: float, mask: NDArray[np.bool_] | None = None
) -> float | None:
    """Percentile of the envelope over contraction samples only (rest excluded).

    Including rest (the previous implementation) puts the 95th percentile near the resting
    level whenever the muscle rests > 5 % of the time, making every contraction "intense".
    """
    if not contractions:
        return None
    parts = [
        env[c.start_index : c.end_index]
        if mask is None or not c.partially_masked
        else env[c.start_index : c.end_index][~mask[c.start_index : c.end_index]]
        for c in contractions
    ]
    samples = np.concatenate(parts)  # artefact samples (a saturated push) never set the MVC
    return float(np.percentile(samples, percentile, overwrite_input=True)) if samples.size else None


def classify(contractions: list[Contraction], mvc: float, mvc_fraction: float, duration_s: float) -> None:
    """Set meets_intensity / meets_duration / good in place."""
    limit = mvc_fraction * mvc
    for c in contractions:
        c.meets_intensity = bool(c.peak_v >= limit)
        # Durations are whole samples: compare with a half-sample tolerance, not float noise.
        # Masked seconds are not evidence of a sustained contraction: only uncorrupted time counts.
        c.meets_duration = bool(c.duration_s - c.masked_s >= duration_s - 1e-9)
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
