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

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["units"] = dict(UNITS)
        return d


def _nperseg(rate: float, params: ProcessingParams) -> int:
    n = params.welch_window_ms * rate / 1000.0
    return int(2 ** max(4, round(np.log2(n))))


def _mnf_mdf(freqs: np.ndarray, psd: np.ndarray) -> tuple[float | None, float | None]:
    total = psd.sum()
    if total <= 0:
        return None, None
    mnf = float((freqs * psd).sum() / total)
    cum = np.cumsum(psd)
    mdf = float(np.interp(total / 2.0, cum, freqs))
    return mnf, mdf


def _windows_inside(valid: np.ndarray, n: int, step: int) -> np.ndarray:
    """Start indices (multiples of ``step``) of length-n windows where ``valid`` is all True."""
    starts = np.arange(0, valid.size - n + 1, step)
    if starts.size == 0:
        return starts
    if n % step == 0:
        # A window is n / step consecutive blocks of ``step`` samples: all-True blocks via one
        # logical_and.reduceat (no signal-sized int64 cumsum).
        k = n // step
        blocks = np.logical_and.reduceat(valid[:(starts[-1] + n)], np.arange(0, starts[-1] + n, step))
        ok = np.ones(starts.size, dtype=bool)
        for j in range(k):
            ok &= blocks[j:j + starts.size]
        return starts[ok]
    c = np.concatenate(([0], np.cumsum(valid, dtype=np.int64)))
    return starts[(c[starts + n] - c[starts]) == n]


def _select(flags: np.ndarray, x: np.ndarray, scratch: np.ndarray | None) -> np.ndarray:
    return x[flags] if scratch is None else np.compress(flags, x, out=scratch[:np.count_nonzero(flags)])


def compute(filtered: np.ndarray, mask: np.ndarray, contractions: list[Contraction], rate: float,
            params: ProcessingParams, scratch: np.ndarray | None = None) -> Descriptors:
    """Descriptors of one channel; ``scratch`` (>= filtered.size float64, clobbered) replaces
    the signal-sized temporaries (same values, no fresh multi-MB arrays)."""
    valid = ~mask
    x_ok = _select(valid, filtered, scratch) if mask.any() else filtered  # no copy when clean
    rms = _rms(x_ok)
    if not x_ok.size:
        mav = None
    elif scratch is None:
        mav = float(np.mean(np.abs(x_ok)))
    else:
        mav = float(np.mean(np.abs(x_ok, out=scratch[:x_ok.size])))
    active = np.zeros(filtered.size, dtype=bool)
    for c in contractions:
        active[c.start_index:c.end_index] = True
    if mask.any():
        active &= valid  # masked samples inside partially masked contractions are not EMG
    xa = _select(active, filtered, scratch)
    c_rms = _rms(xa)

    n = _nperseg(rate, params)
    step = n // 2
    starts = _windows_inside(active, n, step)
    source = "contractions"
    if starts.size == 0:
        starts = _windows_inside(valid, n, step)
        source = "whole_signal"
    band_hi = rate / 2.0
    mnf = mdf = fatigue = None
    points = 0
    if starts.size:
        segs = sliding_window_view(filtered, n)[starts]
        freqs, psd = signal.welch(segs, fs=rate, window="hann", nperseg=n, noverlap=0, axis=-1)
        band = (freqs >= params.highpass_hz) & (freqs <= band_hi)
        freqs, psd = freqs[band], psd[:, band]
        mnf, mdf = _mnf_mdf(freqs, psd.mean(axis=0))
        if source == "contractions" and len(contractions) >= 3:
            times, mdfs = [], []
            for c in contractions:
                inside = (starts >= c.start_index) & (starts + n <= c.end_index)
                if inside.any():
                    _, m = _mnf_mdf(freqs, psd[inside].mean(axis=0))
                    if m is not None:
                        times.append((c.start_s + c.end_s) / 2.0 / 60.0)
                        mdfs.append(m)
            points = len(mdfs)
            if points >= 3 and np.ptp(times) > 0:
                # Least-squares slope in closed form (np.polyfit goes through LAPACK/BLAS).
                t, m = np.asarray(times), np.asarray(mdfs)
                dt = t - t.mean()
                fatigue = float((dt * (m - m.mean())).sum() / (dt * dt).sum())
    else:
        source = "none"
    return Descriptors(rms, mav, c_rms, mnf, mdf, fatigue, source, int(starts.size), points)
