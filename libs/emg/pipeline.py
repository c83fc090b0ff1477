"""Signal chain: high-pass 20 Hz -> full-wave rectify -> low-pass 10 Hz -> moving RMS.

These functions are THE definition of the "filtered" signal and of the envelope: ingest,
JIT streaming and export must call them (never re-implement them) so every service shows
the same numbers. They accept 1-D (n_samples,) or 2-D (n_channels, n_samples) arrays;
rows of a 2-D call are bit-identical to 1-D calls (tested).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal
from scipy.ndimage import uniform_filter1d

from .errors import C3DContentError, SettingsError
from .settings import ProcessingParams

PROCESSING_PIPELINE = "20Hz->Rectify->10Hz->RMS"

# Exact-zero runs at least this long make the filter states decay through the subnormal
# range, which is ~20x slower on x86. Only then is the offset guard below applied.
_ZERO_RUN_GUARD = 64
# Power-of-two offset (~1 uV): the high-pass removes it exactly up to rounding, and the
# low-pass input stays a normal float; values that would be subnormal are < 1e-300 V anyway.
_GUARD_OFFSET = 2.0**-20


def pipeline_description(params: ProcessingParams) -> str:
    """Pipeline label; the standard string when the standard cutoffs are used."""
    if params.highpass_hz == 20.0 and params.lowpass_hz == 10.0:
        return PROCESSING_PIPELINE
    return f"{params.highpass_hz:g}Hz->Rectify->{params.lowpass_hz:g}Hz->RMS"


@lru_cache(maxsize=64)
def design_filters(rate: float, params: ProcessingParams) -> tuple[np.ndarray, np.ndarray]:
    """Butterworth SOS (high-pass, low-pass) for this sampling rate; cached per (rate, params)."""
    if not np.isfinite(rate) or rate <= 0:
        raise C3DContentError(f"Sampling rate must be a positive number, got {rate!r}.")
    nyq = rate / 2.0
    for name, fc in (("high-pass", params.highpass_hz), ("low-pass", params.lowpass_hz)):
        if fc >= nyq:
            raise SettingsError(
                f"The {name} cutoff ({fc:g} Hz) must be below the Nyquist frequency ({nyq:g} Hz) "
                f"of this recording sampled at {rate:g} Hz."
            )
    hp = signal.butter(params.filter_order, params.highpass_hz, btype="highpass", fs=rate, output="sos")
    lp = signal.butter(params.filter_order, params.lowpass_hz, btype="lowpass", fs=rate, output="sos")
    return hp, lp  # shared by the cache: callers must not modify them


def _longest_zero_run(x: np.ndarray) -> int:
    z = np.concatenate(([False], x == 0.0, [False]))
    edges = np.flatnonzero(z[1:] != z[:-1])
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def _needs_guard(row: np.ndarray) -> bool:
    return bool((row == 0.0).any()) and _longest_zero_run(row) >= _ZERO_RUN_GUARD


def _padlen(sos: np.ndarray, n: int) -> int:
    # scipy's default padlen, shortened for very short signals instead of failing.
    default = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    return int(min(default, n - 1))


def _rows(raw: np.ndarray) -> list[np.ndarray]:
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise C3DContentError("Signal must be a non-empty 1-D or 2-D array (channels x samples).")
    return [x] if x.ndim == 1 else list(x)


def chain_1d(raw: np.ndarray, rate: float, params: ProcessingParams) -> tuple[np.ndarray, np.ndarray]:
    """(filtered, envelope) of one channel: THE implementation behind every public function.

    Works on 1-D rows on purpose: scipy's 2-D axis=-1 path is ~2x slower, and every fresh
    multi-MB array costs ~1 ms of page faults on the target VMs, so nothing is stacked.
    """
    hp, lp = design_filters(float(rate), params)
    guard = _GUARD_OFFSET if _needs_guard(raw) else 0.0
    src = raw + guard if guard else raw
    filtered = signal.sosfiltfilt(hp, src, padlen=_padlen(hp, raw.size))
    rect = np.abs(filtered)
    if guard:
        rect += guard
    low = signal.sosfiltfilt(lp, rect, padlen=_padlen(lp, raw.size))
    if guard:
        low -= guard
    win = max(1, int(round(params.rms_window_ms * rate / 1000.0)))
    win += 1 - win % 2  # odd window: centred, no half-sample shift of onsets
    np.multiply(low, low, out=low)
    ms = uniform_filter1d(low, size=win, mode="nearest", output=rect)
    np.maximum(ms, 0.0, out=ms)  # running sums can leave -1e-30 where the signal is ~0
    return filtered, np.sqrt(ms, out=ms)


def filter_chain(raw: np.ndarray, rate: float, params: ProcessingParams) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-channel lists (filtered, envelope) for a 1-D or 2-D block; what ``analyze`` uses."""
    pairs = [chain_1d(row, rate, params) for row in _rows(raw)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def highpass(raw: np.ndarray, rate: float, params: ProcessingParams | None = None) -> np.ndarray:
    """The "filtered" EMG: zero-phase Butterworth high-pass (V, same shape as ``raw``)."""
    params = params or ProcessingParams()
    x = np.asarray(raw)
    return np.stack(filter_chain(x, rate, params)[0]).reshape(x.shape)


def envelope(raw: np.ndarray, rate: float, params: ProcessingParams | None = None) -> np.ndarray:
    """The EMG linear envelope (V RMS, same shape as ``raw``) used for all statistics."""
    params = params or ProcessingParams()
    x = np.asarray(raw)
    return np.stack(filter_chain(x, rate, params)[1]).reshape(x.shape)
