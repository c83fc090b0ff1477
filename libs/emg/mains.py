"""Power-line interference: detection from the spectrum of rest periods, zero-phase notch.

Detection (per channel, on the high-passed signal with artefact samples excluded):
1. split the signal into non-overlapping windows of ``nfft`` samples (power of two closest
   to ``mains_window_ms``; 1024 at 990 Hz: 0.97 Hz resolution) that contain no artefact;
2. take the quietest ``mains_rest_fraction`` of them (lowest RMS, at least 4) as rest: the
   muscle is silent there, so a line spectrum is interference, not EMG;
3. average their Hann-windowed periodograms; for 50 and 60 Hz and each harmonic below the
   Nyquist frequency, a line is present when the peak within +/-2 Hz stands at least
   ``mains_line_ratio`` above the median of the neighbouring bins (4-10 Hz away);
4. the family (50 or 60 Hz) whose present lines carry the larger excess power wins; it is
   interference when the fundamental or any harmonic is present and the lines carry at least
   ``mains_min_share`` of the rest power (``highpass_hz`` .. Nyquist).
The line frequency is refined by parabolic interpolation of the log spectrum, so a grid
that is off nominal (49.8 Hz) is still notched at the right place.

Removal: one second-order IIR notch (scipy.signal.iirnotch, -3 dB width
``notch_bandwidth_hz``) per present line, applied forward and backward (zero-phase) to the
high-passed signal before rectification. The notch only runs on channels where
interference was found; clean channels are bit-identical to the plain chain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from .settings import ProcessingParams

FAMILIES = (50.0, 60.0)
_MIN_WINDOWS = 4
_MAX_WINDOWS = 32
_LINE_HALF_WIDTH_HZ = 2.0  # Hann main lobe at ~1 Hz resolution
_FLOOR_NEAR_HZ, _FLOOR_FAR_HZ = 4.0, 10.0


@dataclass
class MainsResult:
    """What the rest-period spectrum showed (reported with the statistics)."""

    present: bool
    frequency_hz: float | None  # refined fundamental of the winning family
    family_hz: float | None  # 50 or 60
    harmonics: list[int] = field(default_factory=list)  # harmonic numbers found (1 = fundamental)
    notched_hz: list[float] = field(default_factory=list)  # notch centre frequencies applied
    rest_share: float = 0.0  # share of rest power in the lines of the winning family
    line_ratio_db: float | None = None  # strongest line over its neighbourhood, dB
    rest_windows: int = 0  # windows the spectrum was averaged over
    rest_rms_v: float | None = None  # RMS of those windows before the notch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nfft(rate: float, params: ProcessingParams) -> int:
    n = params.mains_window_ms * rate / 1000.0
    return int(2 ** max(6, round(np.log2(max(n, 2.0)))))


def _median(x: NDArray[np.floating[Any]]) -> float:
    """np.median of a small array without its per-call overhead (~30 us)."""
    v = np.sort(x)
    m = v.size // 2
    return float(v[m]) if v.size % 2 else float(0.5 * (v[m - 1] + v[m]))


def _refine(freqs: NDArray[np.floating[Any]], logp: NDArray[np.floating[Any]], k: int) -> float:
    """Parabolic interpolation of the peak at bin k on the log spectrum."""
    if 0 < k < freqs.size - 1:
        a, b, c = logp[k - 1], logp[k], logp[k + 1]
        den = a - 2 * b + c
        if den < 0:
            return float(freqs[k] + 0.5 * (a - c) / den * (freqs[1] - freqs[0]))
    return float(freqs[k])


def _family(
    freqs: NDArray[np.floating[Any]], psd: NDArray[np.floating[Any]], f0: float, nyq: float, ratio: float
) -> tuple[float, list[int], list[float], float]:
    """(excess line power, harmonics present, their refined frequencies, best line ratio)."""
    df = float(freqs[1] - freqs[0])
    logp = np.log(np.maximum(psd, 1e-300))
    excess, found, where, best = 0.0, [], [], 0.0
    h = 1
    while h * f0 + _FLOOR_FAR_HZ < nyq:
        fh = h * f0
        line = np.flatnonzero(np.abs(freqs - fh) <= _LINE_HALF_WIDTH_HZ)
        dist = np.abs(freqs - fh)
        near = np.flatnonzero((dist >= _FLOOR_NEAR_HZ) & (dist <= _FLOOR_FAR_HZ))
        if line.size and near.size:
            floor = _median(psd[near])
            k = int(line[np.argmax(psd[line])])
            r = float(psd[k] / floor) if floor > 0 else float("inf")
            best = max(best, r)
            if r >= ratio:
                found.append(h)
                where.append(_refine(freqs, logp, k))
                excess += max(float(psd[line].sum() - floor * line.size), 0.0) * df
        h += 1
    return excess, found, where, best


def detect(
    filtered: NDArray[np.float64], flag: NDArray[np.bool_] | None, rate: float, params: ProcessingParams
) -> MainsResult:
    """Mains interference in the rest periods of one high-passed channel (``flag``: artefact
    samples, excluded)."""
    n = nfft(rate, params)
    k = filtered.size // n
    if k < _MIN_WINDOWS:
        return MainsResult(False, None, None)
    win = filtered[: k * n].reshape(k, n)
    ok = np.ones(k, dtype=bool)
    if flag is not None and flag.any():
        ok = cast(NDArray[np.bool_], ~flag[: k * n].reshape(k, n).any(axis=1))  # any(axis=1) of a 2-D array: an array
    idx = np.flatnonzero(ok)
    if idx.size < _MIN_WINDOWS:
        return MainsResult(False, None, None)
    ms = np.einsum("ij,ij->i", win, win)[idx] / n  # no BLAS: keeps the analysis on one core
    take = int(np.clip(round(idx.size * params.mains_rest_fraction), _MIN_WINDOWS, _MAX_WINDOWS))
    rest = idx[np.argsort(ms, kind="stable")[:take]]
    rest_rms = float(np.sqrt(ms[np.isin(idx, rest)].mean()))
    # Averaged Hann periodogram (one-sided; the scale cancels in every ratio below).
    window = _hann(n)
    spec = np.fft.rfft(win[rest] * window, axis=-1)
    psd = (spec.real**2 + spec.imag**2).mean(axis=0) * (2.0 / (rate * float((window * window).sum())))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    nyq = rate / 2.0
    band = freqs >= params.highpass_hz
    total = float(psd[band].sum() * (freqs[1] - freqs[0]))
    best: tuple[float, float, list[int], list[float], float] | None = None
    best_ratio = 0.0
    for f0 in FAMILIES:
        excess, found, where, ratio = _family(freqs, psd, f0, nyq, params.mains_line_ratio)
        best_ratio = max(best_ratio, ratio)
        if found and (best is None or excess > best[1]):
            best = (f0, excess, found, where, ratio)
    ratio_db = float(10 * np.log10(best_ratio)) if best_ratio > 0 else None
    if best is None or total <= 0:
        return MainsResult(False, None, None, line_ratio_db=ratio_db, rest_windows=int(take), rest_rms_v=rest_rms)
    f0, excess, found, where, _ = best
    share = float(min(excess / total, 1.0))
    present = share >= params.mains_min_share
    # The fundamental's refined frequency, or the first harmonic found divided by its number.
    fund = where[0] / found[0]
    return MainsResult(
        present,
        round(fund, 3),
        f0,
        found if present else [],
        [round(w, 3) for w in where] if present else [],
        share,
        ratio_db,
        int(take),
        rest_rms,
    )


@lru_cache(maxsize=8)
def _hann(n: int) -> NDArray[np.float64]:
    window: NDArray[np.float64] = signal.get_window("hann", n)
    return window


@lru_cache(maxsize=64)
def notch_sos(rate: float, centres: tuple[float, ...], bandwidth_hz: float) -> NDArray[np.float64]:
    """Cascade of second-order notches (one per centre frequency), as SOS."""
    rows = []
    for f in centres:
        if 0 < f < rate / 2.0:
            b, a = signal.iirnotch(f, f / bandwidth_hz, fs=rate)
            rows.append(np.r_[b, a])
    return np.array(rows, dtype=np.float64).reshape(-1, 6)
