"""Artefact detection and signal-quality figures for one raw EMG channel.

Artefacts found in GHOSTLY recordings, all of which a previous tool counted as contractions:
- dropout fills: runs of the exact same value (e.g. 270 samples at -5.50008 mV, just past the
  rail). Real EMG is never constant for >= 10 ms at 16-bit resolution, so any such run is an
  artefact ('dropout' when at the signal extreme, 'flatline' otherwise);
- clipping (saturation): samples at or within ``clip_tolerance`` of the channel's extreme
  values (the ADC rails, which jitter in the last bits), in runs;
- noise-only channels: no artefact span, but a low envelope dynamic range (see ``snr_db``).
Constant fills are bridged by linear interpolation before filtering (``fill_constant_spans``),
so the filters do not ring on the 5 mV step; the analysis still masks every span plus a margin
(``artifact_mask``) because the samples there are not EMG.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from .arrays import select, sum_squares
from .settings import ProcessingParams


@dataclass
class ArtifactSpan:
    kind: str  # 'dropout' | 'flatline' | 'clipping' | 'filter_edge' (notch start-up at the recording's ends)
    start_s: float
    end_s: float
    n_samples: int
    value: float | None  # the constant/rail value (V) where meaningful

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QualityDetail:
    """How the quality figures were obtained (reported with the statistics)."""

    artifacts: list[ArtifactSpan]
    masked_fraction: float  # share of the recording excluded from analysis (spans + margins)
    clipped_samples: int
    baseline_envelope_v: float  # resting envelope level (percentile of unmasked envelope)
    noise_rms_v: float  # RMS of the filtered signal at rest
    noise_level_db: float | None  # 20*log10(noise_rms / 1 uV): dB re 1 uV RMS (dBuV)
    snr_db: float | None  # 20*log10(p99.5 envelope / resting envelope), unmasked samples
    snr_factor: float  # snr_db mapped to [0, 1]: 6 dB -> 0, 26 dB -> 1
    artifact_factor: float  # 1 - masked_fraction / 0.2, clipped to [0, 1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["artifacts"] = [a.to_dict() for a in self.artifacts]
        return d


def rms(x: NDArray[Any]) -> float | None:
    """RMS of ``x`` without BLAS: np.dot wakes OpenBLAS threads that spin a second core for
    the same wall time; einsum's own loop is as fast on one core."""
    return float(np.sqrt(sum_squares(x) / x.size)) if x.size else None


def _runs(flags: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(starts, ends) of True runs; ends exclusive."""
    z = np.concatenate(([False], flags, [False]))
    edges = np.flatnonzero(z[1:] != z[:-1])
    return edges[::2], edges[1::2]


def find_artifacts(
    raw: NDArray[np.float64], rate: float, params: ProcessingParams, scratch: NDArray[np.float64] | None = None
) -> tuple[list[ArtifactSpan], NDArray[np.bool_]]:
    """Artefact spans and a boolean per-sample artefact flag (without margins).

    ``scratch`` is accepted for the callers' uniformity and not needed (no signal-sized copies).
    """
    n = raw.size
    flag = np.zeros(n, dtype=bool)
    spans: list[ArtifactSpan] = []
    min_run = max(3, round(params.artifact_min_run_ms * rate / 1000.0))
    same = raw[1:] == raw[:-1]  # pair i means samples i and i+1 are equal
    starts, ends = _runs(same)
    long = (ends - starts + 1) >= min_run
    lo, hi = float(raw.min()), float(raw.max())
    extreme = max(abs(lo), abs(hi))
    for s, e in zip(starts[long], ends[long] + 1):  # e exclusive in samples
        v = float(raw[s])
        kind = "dropout" if extreme > 0 and abs(v) >= 0.98 * extreme else "flatline"
        flag[s:e] = True
        spans.append(ArtifactSpan(kind, s / rate, e / rate, int(e - s), v))

    # Saturation: samples within ``clip_tolerance`` of the signal's range from its highest
    # (resp. lowest) value. Rails jitter in the last bits, so exact equality finds nothing on a
    # saturated channel. A clean signal reaches its extreme once, in isolation; a saturated one
    # sits near the rail repeatedly and for consecutive samples: the channel counts as
    # saturated at a rail when >= clip_min_samples samples are near it, at least one run of two
    # or more consecutive samples is, and they are a small part of the recording (a channel
    # that is mostly "at its extremes" is quantisation noise or a stuck input, not saturation).
    # A channel that takes only a few distinct values (quantisation noise: < 64 in 4096
    # samples) has no meaningful rail.
    clipped = np.zeros(n, dtype=bool)
    keep = ~flag if flag.any() else None
    if n - (0 if keep is None else int(np.count_nonzero(flag))) > 2:
        # Extremes of what is left, without copying it (reductions with where=).
        lo = float(raw.min(where=keep, initial=np.inf)) if keep is not None else float(raw.min())
        hi = float(raw.max(where=keep, initial=-np.inf)) if keep is not None else float(raw.max())
        span = hi - lo
        sub = raw[:: max(1, n // 4096)]
        distinct = np.unique(sub if keep is None else sub[keep[:: max(1, n // 4096)]]).size
        if span > 0 and distinct >= 64:
            tol = params.clip_tolerance * span
            for at in (raw >= hi - tol, raw <= lo + tol):
                at &= ~flag
                count = int(np.count_nonzero(at))
                if params.clip_min_samples <= count <= 0.2 * n and bool((at[1:] & at[:-1]).any()):
                    clipped |= at
    n_clipped = int(clipped.sum())
    if n_clipped:
        gap = round(params.clip_merge_ms * rate / 1000.0)
        idx = np.flatnonzero(clipped)
        breaks = np.flatnonzero(np.diff(idx) > gap)
        for s, e in zip(np.r_[idx[0], idx[breaks + 1]], np.r_[idx[breaks], idx[-1]] + 1):
            flag[s:e] = True
            spans.append(ArtifactSpan("clipping", s / rate, e / rate, int(clipped[s:e].sum()), float(raw[s])))
    spans.sort(key=lambda a: a.start_s)
    return spans, flag


def fill_constant_spans(x: NDArray[np.float64], spans: list[ArtifactSpan], rate: float) -> None:
    """Replace dropout/flatline spans of ``x`` (in place) by a straight line between the samples
    that bound them: the fill value is not EMG and its step would make the filters ring."""
    n = x.size
    for a in spans:
        if a.kind not in ("dropout", "flatline"):
            continue
        s = round(a.start_s * rate)
        e = s + a.n_samples
        left = x[s - 1] if s > 0 else (x[e] if e < n else 0.0)
        right = x[e] if e < n else left
        x[s:e] = np.linspace(left, right, e - s + 2)[1:-1]


def artifact_mask(flag: NDArray[np.bool_], rate: float, params: ProcessingParams) -> NDArray[np.bool_]:
    """Artefact flag widened by the ringing margin on both sides."""
    if not flag.any():
        return flag
    m = round(params.artifact_margin_ms * rate / 1000.0)
    starts, ends = _runs(flag)
    delta = np.zeros(flag.size + 1, dtype=np.int32)
    np.add.at(delta, np.maximum(starts - m, 0), 1)
    np.add.at(delta, np.minimum(ends + m, flag.size), -1)
    return np.cumsum(delta[:-1], dtype=np.int32) > 0


def snr_factor(snr_db: float | None) -> float:
    if snr_db is None:
        return 0.0
    return float(np.clip((snr_db - 6.0) / 20.0, 0.0, 1.0))


def assess(
    filtered: NDArray[Any],
    env: NDArray[np.float64],
    mask: NDArray[np.bool_],
    spans: list[ArtifactSpan],
    threshold: float,
    baseline: float,
    high: float,
    scratch: NDArray[np.float64] | None = None,
) -> QualityDetail:
    """Noise level, SNR and the artefact factor on the unmasked part of the channel.

    ``high`` is the 99.5th percentile of the artefact-free envelope (computed with the
    baseline during detection, to partition the envelope only once). ``scratch`` (>=
    filtered.size float64, clobbered) receives the rest samples instead of a fresh copy.
    """
    rest = env < threshold
    if mask.any():
        rest &= ~mask
    r = select(rest, filtered, scratch)
    noise_rms = cast(float, rms(r)) if r.size else float("nan")  # rms is None only for an empty r
    noise_db = 20.0 * np.log10(noise_rms / 1e-6) if np.isfinite(noise_rms) and noise_rms > 0 else None
    snr_db = None
    if baseline > 0 and high > 0:
        snr_db = float(20.0 * np.log10(high / baseline))
    masked_fraction = float(mask.mean())
    return QualityDetail(
        artifacts=spans,
        masked_fraction=masked_fraction,
        clipped_samples=int(sum(a.n_samples for a in spans if a.kind == "clipping")),
        baseline_envelope_v=baseline,
        noise_rms_v=noise_rms if np.isfinite(noise_rms) else 0.0,
        noise_level_db=float(noise_db) if noise_db is not None else None,
        snr_db=snr_db,
        snr_factor=snr_factor(snr_db),
        artifact_factor=float(np.clip(1.0 - masked_fraction / 0.2, 0.0, 1.0)),
    )
