"""Standard EMG descriptors on the FILTERED (high-passed) signal.

Amplitude: RMS and MAV over the artefact-free samples, and RMS over the contractions.
Spectrum: Welch PSD (scipy.signal.welch, Hann window, 50 % overlap) averaged over windows
that lie entirely inside contractions, i.e. only where the muscle is active; when no window
fits (no or very short contractions) the artefact-free signal is used and
``spectrum_source`` says so. Running Welch on the whole 175 s signal costs more than the
rest of the analysis and is dominated by rest noise; the selected windows are both cheaper
and more meaningful.
Fatigue index: slope of the median frequency across contractions (Hz per minute, linear
least squares of each contraction's MDF against its mid time); negative = spectral
compression, the classical sign of fatigue. Needs >= 3 contractions with a full window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from scipy import signal

from .arrays import mean_abs, select
from .contractions import Contraction
from .quality import rms as _rms
from .settings import ProcessingParams

UNITS = {
    "rms_v": "V",
    "mav_v": "V",
    "contraction_rms_v": "V",
    "mean_frequency_hz": "Hz",
    "median_frequency_hz": "Hz",
    "fatigue_index_hz_per_min": "Hz/min",
}


@dataclass
class Descriptors:
    rms_v: float | None
    mav_v: float | None
    contraction_rms_v: float | None
    mean_frequency_hz: float | None
    median_frequency_hz: float | None
    fatigue_index_hz_per_min: float | None
    spectrum_source: str  # 'contractions' | 'whole_signal' | 'none'
    spectrum_windows: int
    fatigue_points: int  # contractions used for the fatigue slope

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["units"] = dict(UNITS)
        return d


def _nperseg(rate: float, params: ProcessingParams) -> int:
    n = params.welch_window_ms * rate / 1000.0
    return int(2 ** max(4, round(np.log2(n))))


def _mnf_mdf(freqs: NDArray[np.float64], psd: NDArray[np.float64]) -> tuple[float | None, float | None]:
    total = psd.sum()
    if total <= 0:
        return None, None
    mnf = float((freqs * psd).sum() / total)
    cum = np.cumsum(psd)
    mdf = float(np.interp(total / 2.0, cum, freqs))
    return mnf, mdf


def _windows_inside(valid: NDArray[np.bool_], n: int, step: int) -> NDArray[np.intp]:
    """Start indices (multiples of ``step``) of length-n windows where ``valid`` is all True."""
    starts = np.arange(0, valid.size - n + 1, step)
    if starts.size == 0:
        return starts
    if n % step == 0:
        # A window is n / step consecutive blocks of ``step`` samples: all-True blocks via one
        # logical_and.reduceat (no signal-sized int64 cumsum).
        k = n // step
        blocks = np.logical_and.reduceat(valid[: (starts[-1] + n)], np.arange(0, starts[-1] + n, step))
        ok = np.ones(starts.size, dtype=bool)
        for j in range(k):
            ok &= blocks[j : j + starts.size]
        return starts[ok]
    c = np.concatenate(([0], np.cumsum(valid, dtype=np.int64)))
    inside: NDArray[np.intp] = starts[(c[starts + n] - c[starts]) == n]
    return inside


_WELCH_BATCH_BYTES = 4 << 20  # segments copied per scipy.signal.welch call (its peak is ~6x this)


def _spectra(
    x: NDArray[Any], starts: NDArray[np.intp], n: int, rate: float, lo_hz: float, groups: list[tuple[int, int]]
) -> tuple[NDArray[np.float64], NDArray[np.float64], list[NDArray[np.float64] | None]]:
    """(freqs, mean PSD, mean PSD of each group) in [lo_hz, Nyquist] over the length-n
    Welch segments of ``x`` at ``starts``; a group is a range [a, b) of segment indices.

    Up to _WELCH_BATCH_BYTES of segments: one scipy.signal.welch call and numpy means (the
    historical computation). More (a long recording): batches whose PSDs are summed as they
    come, so welch's copies of the segments (detrended, windowed, their FFT) and the PSD
    rows stay bounded instead of several times the active signal (same result up to the
    order of the float64 sums). float32 input is computed in float64."""
    per = max(1, _WELCH_BATCH_BYTES // (8 * n))
    view = sliding_window_view(x, n)

    def welch(rows: NDArray[np.intp]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        segs = view[rows]
        if segs.dtype != np.float64:
            segs = segs.astype(np.float64)
        freqs, psd = signal.welch(segs, fs=rate, window="hann", nperseg=n, noverlap=0, axis=-1)
        band = (freqs >= lo_hz) & (freqs <= rate / 2.0)
        return freqs[band], psd[:, band]

    if starts.size <= per:
        freqs, psd = welch(starts)
        return freqs, psd.mean(axis=0), [psd[a:b].mean(axis=0) if b > a else None for a, b in groups]
    total: NDArray[np.float64] | None = None
    sums: list[NDArray[np.float64] | None] = [None] * len(groups)
    for b0 in range(0, starts.size, per):
        b1 = min(starts.size, b0 + per)
        freqs, psd = welch(starts[b0:b1])
        part = psd.sum(axis=0)
        total = part if total is None else total + part
        for g, (a, b) in enumerate(groups):
            a, b = max(a, b0), min(b, b1)
            if b > a:
                s = psd[a - b0 : b - b0].sum(axis=0)
                sums[g] = s if sums[g] is None else sums[g] + s
    means = [s / (b - a) if s is not None else None for s, (a, b) in zip(sums, groups)]
    assert total is not None  # starts.size > per >= 1: at least one batch
    return freqs, total / starts.size, means


def compute(
    filtered: NDArray[Any],
    mask: NDArray[np.bool_],
    contractions: list[Contraction],
    rate: float,
    params: ProcessingParams,
    scratch: NDArray[np.float64] | None = None,
) -> Descriptors:
    """Descriptors of one channel; ``scratch`` (>= filtered.size float64, clobbered) replaces
    the signal-sized temporaries (same values, no fresh multi-MB arrays)."""
    valid = ~mask
    x_ok = select(valid, filtered, scratch) if mask.any() else filtered  # no copy when clean
    rms = _rms(x_ok)
    if not x_ok.size:
        mav = None
    else:
        mav = mean_abs(x_ok, scratch)
    active = np.zeros(filtered.size, dtype=bool)
    for c in contractions:
        active[c.start_index : c.end_index] = True
    if mask.any():
        active &= valid  # masked samples inside partially masked contractions are not EMG
    xa = select(active, filtered, scratch)
    c_rms = _rms(xa)

    n = _nperseg(rate, params)
    step = n // 2
    starts = _windows_inside(active, n, step)
    source = "contractions"
    if starts.size == 0:
        starts = _windows_inside(valid, n, step)
        source = "whole_signal"
    mnf = mdf = fatigue = None
    points = 0
    if starts.size:
        per_contraction = source == "contractions" and len(contractions) >= 3
        # The windows inside each contraction: a contiguous run of the (sorted) starts.
        groups = (
            [
                (
                    int(np.searchsorted(starts, c.start_index, "left")),
                    int(np.searchsorted(starts, c.end_index - n, "right")),
                )
                for c in contractions
            ]
            if per_contraction
            else []
        )
        freqs, mean_psd, group_psd = _spectra(filtered, starts, n, rate, params.highpass_hz, groups)
        mnf, mdf = _mnf_mdf(freqs, mean_psd)
        if per_contraction:
            times, mdfs = [], []
            for c, psd_c in zip(contractions, group_psd):
                if psd_c is not None:
                    _, m = _mnf_mdf(freqs, psd_c)
                    if m is not None:
                        times.append((c.start_s + c.end_s) / 2.0 / 60.0)
                        mdfs.append(m)
            points = len(mdfs)
            if points >= 3 and np.ptp(times) > 0:
                # Least-squares slope in closed form (np.polyfit goes through LAPACK/BLAS).
                t, mf = np.asarray(times), np.asarray(mdfs)
                dt = t - t.mean()
                fatigue = float((dt * (mf - mf.mean())).sum() / (dt * dt).sum())
    else:
        source = "none"
    return Descriptors(rms, mav, c_rms, mnf, mdf, fatigue, source, int(starts.size), points)
