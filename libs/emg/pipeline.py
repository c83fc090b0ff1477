"""Signal chain: artefacts bridged -> high-pass 20 Hz -> mains notch (when hum is found) ->
full-wave rectify -> low-pass 10 Hz -> moving RMS.

These functions are THE definition of the "filtered" signal and of the envelope: ingest,
JIT streaming and export must call them (never re-implement them) so every service shows
the same numbers. They accept 1-D (n_samples,) or 2-D (n_channels, n_samples) arrays;
rows of a 2-D call are bit-identical to 1-D calls (tested).

Zero-phase filtering is ``scipy.signal.sosfiltfilt`` with its defaults (odd extension,
padlen = 3 x ntaps, initial conditions ``sosfilt_zi * edge value``) re-implemented on two
reusable buffers: sosfiltfilt allocates ~3 signal-sized arrays per call, and on the target
VMs every fresh multi-MB array costs ~0.7 ms of page faults, more than the filtering itself.
The same scipy kernel runs on the same inputs in the same order, so the results are
bit-identical to sosfiltfilt (tested against it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import signal
from scipy.ndimage import uniform_filter1d

from . import mains
from .errors import C3DContentError, SettingsError
from .mains import MainsResult
from .quality import ArtifactSpan, fill_constant_spans, find_artifacts
from .settings import ProcessingParams

try:  # the in-place kernel behind scipy.signal.sosfilt (private: checked once before use)
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - other scipy layouts use the public function
    _sosfilt_kernel = None

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
def design_filters(rate: float, params: ProcessingParams) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
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


def _longest_zero_run(x: NDArray[Any]) -> int:
    z = np.concatenate(([False], x == 0.0, [False]))
    edges = np.flatnonzero(z[1:] != z[:-1])
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def _needs_guard(row: NDArray[Any]) -> bool:
    return bool((row == 0.0).any()) and _longest_zero_run(row) >= _ZERO_RUN_GUARD


def _padlen(sos: NDArray[np.float64], n: int) -> int:
    # scipy's default padlen, shortened for very short signals instead of failing.
    default = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    return int(min(default, n - 1))


def _rows(raw: NDArray[Any]) -> list[NDArray[np.float64]]:
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise C3DContentError("Signal must be a non-empty 1-D or 2-D array (channels x samples).")
    return [x] if x.ndim == 1 else list(x)


@lru_cache(maxsize=64)
def _filter_plan(
    rate: float, params: ProcessingParams
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], int]:
    """(hp sos, lp sos, hp zi, lp zi, RMS window): what sosfiltfilt would recompute per call."""
    hp, lp = design_filters(rate, params)
    win = max(1, round(params.rms_window_ms * rate / 1000.0))
    win += 1 - win % 2  # odd window: centred, no half-sample shift of onsets
    return hp, lp, signal.sosfilt_zi(hp), signal.sosfilt_zi(lp), win


_KERNEL_CHECKED: bool | None = None


def _use_kernel() -> bool:
    """True when scipy's private in-place kernel exists and matches the public sosfilt."""
    global _KERNEL_CHECKED
    if _KERNEL_CHECKED is None:
        ok = False
        if _sosfilt_kernel is not None:
            try:
                sos = signal.butter(2, 0.1, output="sos")
                x = np.random.default_rng(0).normal(size=64)
                zi = signal.sosfilt_zi(sos) * x[0]
                ref = signal.sosfilt(sos, x, zi=zi)[0]
                buf = x.copy().reshape(1, -1)
                _sosfilt_kernel(sos, buf, np.ascontiguousarray(zi.reshape(1, *zi.shape)))
                ok = bool(np.array_equal(buf[0], ref))
            except Exception:  # noqa: BLE001 - any mismatch in the private API: use the public one
                ok = False
        _KERNEL_CHECKED = ok
    return _KERNEL_CHECKED


def _sosfilt_inplace(sos: NDArray[np.float64], zi: NDArray[np.float64], buf: NDArray[np.float64]) -> None:
    """``buf[:] = sosfilt(sos, buf, zi=zi * buf[:1])[0]`` without allocating a signal-sized array."""
    z = zi * buf[:1]  # exactly sosfiltfilt's ``zi * x_0``
    if _use_kernel():
        _sosfilt_kernel(sos, buf.reshape(1, -1), z.reshape(1, *z.shape))
    else:
        buf[:] = signal.sosfilt(sos, buf, zi=z)[0]


def _odd_ext_edges(ext: NDArray[np.float64], n: int, p: int) -> None:
    """Fill the ``p`` padding samples on each side of ``ext[p:p + n]`` like scipy's odd_ext."""
    if p == 0:
        return
    x = ext[p : p + n]
    np.subtract(2 * x[:1], x[p:0:-1], out=ext[:p])
    np.subtract(2 * x[-1:], x[-2 : -(p + 2) : -1], out=ext[p + n :])


def _zero_phase(
    sos: NDArray[np.float64],
    zi: NDArray[np.float64],
    n: int,
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    padlen: int | None = None,
) -> NDArray[np.float64]:
    """sosfiltfilt (padtype='odd', default padlen) of the signal already stored in a[p:p + n].

    ``a`` and ``b`` are work buffers of at least n + 2p samples; ``a`` is clobbered. Returns a
    reversed view of ``b`` holding the result (consume it before reusing ``b``).
    """
    p = _padlen(sos, n) if padlen is None else padlen
    m = n + 2 * p
    if a.size < m or b.size < m:
        raise ValueError(f"work buffers of {m} samples needed, got {a.size} and {b.size}")
    fwd, bwd = a[:m], b[:m]
    _odd_ext_edges(fwd, n, p)
    _sosfilt_inplace(sos, zi, fwd)
    np.copyto(bwd, fwd[::-1])
    _sosfilt_inplace(sos, zi, bwd)
    return bwd[p : p + n][::-1]


_MAX_SECTIONS = 16  # order-16 filter or 16 notches: more than any plan here uses
_MAX_NOTCH_PAD = 2048


def notch_padlen(rate: float, params: ProcessingParams, n: int) -> int:
    """Padding of the notch pass: three time constants of the narrow notch (1 / (pi x width),
    0.16 s at 2 Hz), so its start-up transient settles in the odd extension instead of leaving
    ~0.2 s of hum at each end of the recording; scipy's default (21 samples) is far too short."""
    return int(min(n - 1, _MAX_NOTCH_PAD, round(3.0 * rate / (np.pi * params.notch_bandwidth_hz))))


def work_size(n: int) -> int:
    """Length of the work buffers ``chain_into`` needs for an n-sample signal."""
    # padlen is at most 3 x ntaps of the cascade, or the notch padding
    return n + 2 * max(3 * (2 * _MAX_SECTIONS + 1), _MAX_NOTCH_PAD)


@dataclass
class Conditioning:
    """What the chain found and did on one channel before the envelope."""

    artifacts: list[ArtifactSpan]  # dropout / flatline / clipping spans of the raw signal
    flag: NDArray[np.bool_]  # bool per sample: inside an artefact span (no margin)
    mains: MainsResult  # power-line interference found in the rest periods (notched when present)


@lru_cache(maxsize=64)
def _notch_plan(
    rate: float, centres: tuple[float, ...], bandwidth_hz: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    sos = mains.notch_sos(rate, centres, bandwidth_hz)
    return sos, signal.sosfilt_zi(sos)


def _mark_notch_edges(
    flag: NDArray[np.bool_], spans: list[ArtifactSpan], rate: float, params: ProcessingParams, n: int
) -> list[ArtifactSpan]:
    """Whatever the padding, a reflected hum changes phase at the ends of the recording and the
    narrow notch rings there for a few time constants: those samples are artefacts (flagged in
    place; the spans returned in time order)."""
    edge = notch_padlen(rate, params, n)
    if n <= 4 * edge:
        return spans
    flag[:edge] = True
    flag[n - edge :] = True
    return sorted(
        [
            *spans,
            ArtifactSpan("filter_edge", 0.0, edge / rate, edge, None),
            ArtifactSpan("filter_edge", (n - edge) / rate, n / rate, edge, None),
        ],
        key=lambda x: x.start_s,
    )


def chain_into(
    raw: NDArray[np.float64],
    rate: float,
    params: ProcessingParams,
    filtered: NDArray[np.float64],
    env: NDArray[np.float64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
) -> Conditioning:
    """The chain of one channel written into ``filtered`` and ``env`` (n samples each), using
    the work buffers ``a`` and ``b`` (>= ``work_size(n)`` samples, clobbered). All five arrays
    must be distinct, C-contiguous float64.

    Steps: artefact spans of the raw signal -> constant fills bridged -> high-pass -> mains
    interference looked for in the rest periods and notched when present -> rectify ->
    low-pass -> moving RMS.
    """
    n = raw.size
    if n == 0:
        raise C3DContentError("Signal must be a non-empty 1-D or 2-D array (channels x samples).")
    hp, lp, zi_hp, zi_lp, win = _filter_plan(float(rate), params)
    spans, flag = find_artifacts(raw, rate, params, b)
    guard = _GUARD_OFFSET if _needs_guard(raw) else 0.0
    # High-pass of raw (+ guard): the signal goes straight into the padded buffer.
    p = _padlen(hp, n)
    x = a[p : p + n]
    if guard:
        np.add(raw, guard, out=x)
    else:
        x[:] = raw
    if spans:
        fill_constant_spans(x, spans, rate)
    np.copyto(filtered, _zero_phase(hp, zi_hp, n, a, b))
    hum = mains.detect(filtered, flag, rate, params)
    if hum.present:
        sos, zi = _notch_plan(float(rate), tuple(hum.notched_hz), float(params.notch_bandwidth_hz))
        p = notch_padlen(rate, params, n)
        a[p : p + n] = filtered
        np.copyto(filtered, _zero_phase(sos, zi, n, a, b, p))
        spans = _mark_notch_edges(flag, spans, rate, params, n)
    # Rectify into the low-pass buffer, low-pass, square.
    p = _padlen(lp, n)
    mid = a[p : p + n]
    np.abs(filtered, out=mid)
    if guard:
        mid += guard
    low = _zero_phase(lp, zi_lp, n, a, b)
    if guard:
        low -= guard
    sq = a[:n]
    np.multiply(low, low, out=sq)
    ms = uniform_filter1d(sq, size=win, mode="nearest", output=env)
    np.maximum(ms, 0.0, out=ms)  # running sums can leave -1e-30 where the signal is ~0
    np.sqrt(ms, out=ms)
    for span in spans:
        if span.kind == "filter_edge":  # the notch's start-up transient is not EMG: no envelope there
            env[round(span.start_s * rate) : round(span.start_s * rate) + span.n_samples] = 0.0
    return Conditioning(spans, flag, hum)


def chain_1d(
    raw: NDArray[Any], rate: float, params: ProcessingParams
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(filtered, envelope) of one channel: THE implementation behind every public function.

    Works on 1-D rows on purpose: scipy's 2-D axis=-1 path is ~2x slower. The two work
    buffers come from a per-thread workspace; the returned arrays are new.
    """
    raw = np.asarray(raw, dtype=np.float64)
    n = raw.size
    filtered, env = np.empty(n), np.empty(n)
    with workspace() as ws:
        chain_into(raw, rate, params, filtered, env, ws.buffer("a", work_size(n)), ws.buffer("b", work_size(n)))
    return filtered, env


# --------------------------------------------------------------------------- low-memory chain

# Above this many samples (~9 min at 990 Hz) the chain runs in place on ONE work buffer and
# the moving RMS without scipy's internal line buffers (uniform_filter1d allocates two
# signal-sized float64 copies): an analysis then holds three float64 signals per channel (the
# work buffer, the filtered signal, the envelope) instead of seven. Same operations on the
# same values in the same order: bit-identical to chain_into (tested).
LOW_MEMORY_SAMPLES = 1 << 19
_WORK_PAD = max(3 * (2 * _MAX_SECTIONS + 1), _MAX_NOTCH_PAD)  # work_size's padding on each side
_MOVE_CHUNK = 1 << 18  # samples per step of the in-place moves (a temporary of 2 MiB at most)


def raw_slot(work: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """Where ``chain_lowmem`` expects the raw signal in ``work`` (convert it there: no copy)."""
    return work[_WORK_PAD : _WORK_PAD + n]


def _move(buf: NDArray[np.float64], dst: int, src: int, n: int) -> None:
    """``buf[dst:dst + n] = buf[src:src + n]`` for overlapping ranges, in chunks (numpy would
    copy a whole overlapping source first)."""
    if dst == src or n <= 0:
        return
    starts = range(0, n, _MOVE_CHUNK)
    for i in starts if dst < src else reversed(starts):
        j = min(n, i + _MOVE_CHUNK)
        buf[dst + i : dst + j] = buf[src + i : src + j]


def _reverse_inplace(buf: NDArray[np.float64]) -> None:
    """``buf[:] = buf[::-1]`` in chunks swapped from both ends (no signal-sized temporary)."""
    i, j = 0, buf.size
    while j - i > 1:
        k = min(_MOVE_CHUNK, (j - i) // 2)
        left = buf[i : i + k].copy()
        buf[i : i + k] = buf[j - k : j][::-1]
        buf[j - k : j] = left[::-1]
        i, j = i + k, j - k


def _zero_phase_inplace(
    sos: NDArray[np.float64], zi: NDArray[np.float64], w: NDArray[np.float64], n: int, p: int
) -> NDArray[np.float64]:
    """``_zero_phase`` on one buffer: the signal at w[p:p + n] is replaced by its zero-phase
    filtered version (returned as that view, in forward order)."""
    m = n + 2 * p
    if w.size < m:
        raise ValueError(f"a work buffer of {m} samples is needed, got {w.size}")
    buf = w[:m]
    _odd_ext_edges(buf, n, p)
    _sosfilt_inplace(sos, zi, buf)
    _reverse_inplace(buf)
    _sosfilt_inplace(sos, zi, buf)
    _reverse_inplace(buf)
    return w[p : p + n]


_RMS_CHECKED: bool | None = None


def _moving_mean_ok() -> bool:
    """True when ``_moving_mean`` reproduces scipy's uniform_filter1d (mode 'nearest') bit for
    bit on this scipy (its running sum, then one division per sample); checked once."""
    global _RMS_CHECKED
    if _RMS_CHECKED is None:
        rng = np.random.default_rng(3)
        ok = True
        for n, win in ((5000, 49), (3000, 1), (777, 100), (64, 201), (1, 3)):
            x = rng.normal(size=n) ** 2 * 1e-8
            ref = uniform_filter1d(x, size=win, mode="nearest")
            w = np.empty(n + win + 2)
            w[:n] = x
            out = np.empty(n)
            _moving_mean(w, 0, n, win, out)
            ok = ok and bool(np.array_equal(out, ref))
        _RMS_CHECKED = ok
    return _RMS_CHECKED


def _moving_mean(w: NDArray[np.float64], at: int, n: int, win: int, out: NDArray[np.float64]) -> NDArray[np.float64]:
    """``uniform_filter1d(w[at:at + n], win, mode='nearest', output=out)`` computed in ``w``
    (clobbered; it needs n + win - 1 samples) and ``out`` only: the values move to
    w[h:h + n] with the nearest-value extension around them; then the running sum of the
    differences (numpy's cumsum is sequential, like scipy's loop) divided by ``win``."""
    h = win // 2
    if w.size < n + win - 1:
        raise ValueError(f"a work buffer of {n + win - 1} samples is needed, got {w.size}")
    _move(w, h, at, n)
    w[:h] = w[h]
    w[h + n : n + win - 1] = w[h + n - 1]
    if n > 1:
        np.subtract(w[win : win + n - 1], w[: n - 1], out=out[1:])
    out[0] = np.add.accumulate(w[:win])[-1]
    np.cumsum(out, out=out)
    out /= win
    return out


def _moving_rms_blocks(w: NDArray[np.float64], at: int, n: int, win: int, out: NDArray[Any]) -> None:
    """sqrt(max(0, ``_moving_mean``)) written into ``out`` of another dtype (float32: a JIT
    result array), computed in float64 blocks: the running sum continues from block to block
    (numpy's cumsum is sequential), then mean, clamp and root in float64 and one rounding to
    ``out``'s dtype, so the values equal the float64 chain's envelope cast afterwards."""
    h = win // 2
    if w.size < n + win - 1:
        raise ValueError(f"a work buffer of {n + win - 1} samples is needed, got {w.size}")
    _move(w, h, at, n)
    w[:h] = w[h]
    w[h + n : n + win - 1] = w[h + n - 1]
    tmp = np.empty(min(n, _MOVE_CHUNK))
    carry = 0.0
    for i in range(0, n, _MOVE_CHUNK):
        j = min(n, i + _MOVE_CHUNK)
        blk = tmp[: j - i]
        if i == 0:
            blk[0] = np.add.accumulate(w[:win])[-1]
            if j > 1:
                np.subtract(w[win : win + j - 1], w[: j - 1], out=blk[1:])
        else:
            np.subtract(w[win + i - 1 : win + j - 1], w[i - 1 : j - 1], out=blk)
            blk[0] += carry
        np.cumsum(blk, out=blk)
        carry = float(blk[-1])
        blk /= win
        np.maximum(blk, 0.0, out=blk)
        np.sqrt(blk, out=blk)
        out[i:j] = blk


def chain_lowmem(
    raw: NDArray[np.float64],
    rate: float,
    params: ProcessingParams,
    work: NDArray[np.float64],
    env: NDArray[Any] | None,
    filtered: NDArray[Any] | None = None,
) -> Conditioning:
    """``chain_into`` on one work buffer (>= ``work_size(n)`` samples, clobbered): the raw
    signal is best converted straight into ``raw_slot(work, n)`` (else it is copied there).

    ``filtered`` (n samples) receives the filtered signal; without it the filtered signal only
    lives in ``work`` until the envelope is computed. ``env`` None stops after the filtered
    signal (no envelope needed). Afterwards ``work`` is free (scratch for the statistics).
    """
    n = raw.size
    if n == 0:
        raise C3DContentError("Signal must be a non-empty 1-D or 2-D array (channels x samples).")
    if work.size < work_size(n):
        raise ValueError(f"a work buffer of {work_size(n)} samples is needed, got {work.size}")
    hp, lp, zi_hp, zi_lp, win = _filter_plan(float(rate), params)
    slot = raw_slot(work, n)
    if not (raw.ctypes.data == slot.ctypes.data and raw.dtype == slot.dtype):
        np.copyto(slot, raw)
    x = slot
    spans, flag = find_artifacts(x, rate, params)
    guard = _GUARD_OFFSET if _needs_guard(x) else 0.0
    if guard:
        x += guard
    if spans:
        fill_constant_spans(x, spans, rate)
    p = _padlen(hp, n)
    _move(work, p, _WORK_PAD, n)
    cur = _zero_phase_inplace(hp, zi_hp, work, n, p)
    if filtered is not None:
        np.copyto(filtered, cur)  # float32 or float64: the chain goes on in float64 in ``work``
    hum = mains.detect(cur, flag, rate, params)
    if hum.present:
        sos, zi = _notch_plan(float(rate), tuple(hum.notched_hz), float(params.notch_bandwidth_hz))
        pn = notch_padlen(rate, params, n)
        _move(work, pn, p, n)
        p = pn
        cur = _zero_phase_inplace(sos, zi, work, n, p)
        if filtered is not None:
            np.copyto(filtered, cur)
        spans = _mark_notch_edges(flag, spans, rate, params, n)
    if env is None:
        return Conditioning(spans, flag, hum)
    # Rectify, low-pass, square, moving mean, root.
    pl_ = _padlen(lp, n)
    _move(work, pl_, p, n)
    mid = work[pl_ : pl_ + n]
    np.abs(mid, out=mid)
    if guard:
        mid += guard
    low = _zero_phase_inplace(lp, zi_lp, work, n, pl_)
    if guard:
        low -= guard
    np.multiply(low, low, out=low)
    if env.dtype != np.float64 and work.size >= n + win - 1 and _moving_mean_ok():
        _moving_rms_blocks(work, pl_, n, win, env)  # float32 out: no float64 envelope buffer
    else:
        if work.size >= n + win - 1 and _moving_mean_ok():
            ms = _moving_mean(work, pl_, n, win, env)
        else:  # pragma: no cover - a scipy whose uniform_filter1d differs, or a huge window
            ms = uniform_filter1d(low, size=win, mode="nearest", output=env)
        np.maximum(ms, 0.0, out=ms)  # running sums can leave -1e-30 where the signal is ~0
        np.sqrt(ms, out=ms)
    for span in spans:
        if span.kind == "filter_edge":  # the notch's start-up transient is not EMG: no envelope there
            env[round(span.start_s * rate) : round(span.start_s * rate) + span.n_samples] = 0.0
    return Conditioning(spans, flag, hum)


def analysis_bytes(n: int) -> int:
    """Working memory (bytes) of ``analysis.analyze`` for channels of n samples, calibrated
    with bench/bench_memory.py (peak RSS of a fresh process minus its ~100 MB baseline, on
    GHOSTLY-like recordings with activity ~30 % of the time).

    Up to LOW_MEMORY_SAMPLES: the workspace (kept between analyses, <= its budget) and per
    channel raw, filtered, envelope, two work buffers and uniform_filter1d's two copies. Above:
    the work buffer and envelope of one channel in float64 and its filtered signal in float32
    (20 B/sample), and the statistics' temporaries of that channel: boolean masks, the
    artefact search, the contraction samples of the MVC percentile (~7 B/sample at ~30 %
    activity; the Welch batches and boolean selections are bounded, libs.emg.arrays).
    """
    if n <= LOW_MEMORY_SAMPLES:
        return int(WORKSPACE_BUDGET_BYTES + 96 * n)
    return int(_ANALYSIS_BYTES_PER_SAMPLE * n + 8 * 2 * _WORK_PAD + 4 * _MOVE_CHUNK * 8)


_ANALYSIS_BYTES_PER_SAMPLE = 28


# --------------------------------------------------------------------------- workspaces


class Workspace:
    """Reusable float64 buffers, keyed by name, within a byte budget.

    Buffers over the budget are allocated fresh and not kept. A workspace is used by one
    analysis at a time (``workspace()`` hands them out); distinct keys may be used from
    several threads of that analysis.
    """

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._bufs: dict[object, NDArray[Any]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def buffer(self, key: object, n: int, dtype: type[np.floating[Any]] = np.float64) -> NDArray[Any]:
        with self._lock:
            cur = self._bufs.get(key)
            if cur is not None and cur.size >= n and cur.dtype == dtype:
                return cur[:n]
            new: NDArray[Any] = np.empty(n, dtype)
            total = self._bytes - (cur.nbytes if cur is not None else 0) + new.nbytes
            if total <= self.budget:
                self._bufs[key] = new
                self._bytes = total
            return new

    @property
    def nbytes(self) -> int:
        return self._bytes


WORKSPACE_BUDGET_BYTES = 64 * 1024 * 1024  # per workspace: a 3-min 2-channel session needs ~12 MB
_MAX_IDLE_WORKSPACES = 2
_idle: list[Workspace] = []
_idle_lock = threading.Lock()


_PRIME_BYTES = 4 * 1024 * 1024
_primed = False


def _prime_allocator() -> None:
    """Allocate and free one 4 MiB block, once per process.

    glibc serves allocations >= its mmap threshold (128 KiB at start) with a fresh mmap, so
    each of the analysis' ~20 bool temporaries per channel (1 byte/sample: 173 KiB for a
    3-minute file) costs page faults, ~2 us per 4 KiB page on the target VMs. Freeing a
    larger mmapped block raises that threshold (glibc's documented dynamic threshold), after
    which such temporaries are recycled from the heap. The previous code got this as a side
    effect of freeing its multi-MB arrays; with buffers reused, nothing that big is freed
    any more. Harmless no-op with other allocators or an explicit M_MMAP_THRESHOLD.
    """
    global _primed
    if not _primed:
        _primed = True
        block = np.empty(_PRIME_BYTES, dtype=np.uint8)
        del block


class workspace:
    """``with workspace() as ws:`` borrows an idle Workspace (or a new one) and returns it."""

    def __enter__(self) -> Workspace:
        _prime_allocator()
        with _idle_lock:
            self._ws = _idle.pop() if _idle else Workspace(WORKSPACE_BUDGET_BYTES)
        return self._ws

    def __exit__(self, *exc: object) -> None:
        with _idle_lock:
            if len(_idle) < _MAX_IDLE_WORKSPACES:
                _idle.append(self._ws)


def filter_chain(
    raw: NDArray[Any], rate: float, params: ProcessingParams
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]:
    """Per-channel lists (filtered, envelope) for a 1-D or 2-D block; what ``analyze`` uses."""
    pairs = [chain_1d(row, rate, params) for row in _rows(raw)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def highpass(raw: NDArray[Any], rate: float, params: ProcessingParams | None = None) -> NDArray[np.float64]:
    """The "filtered" EMG: zero-phase Butterworth high-pass (V, same shape as ``raw``)."""
    params = params or ProcessingParams()
    x = np.asarray(raw)
    return np.stack(filter_chain(x, rate, params)[0]).reshape(x.shape)


def envelope(raw: NDArray[Any], rate: float, params: ProcessingParams | None = None) -> NDArray[np.float64]:
    """The EMG linear envelope (V RMS, same shape as ``raw``) used for all statistics."""
    params = params or ProcessingParams()
    x = np.asarray(raw)
    return np.stack(filter_chain(x, rate, params)[1]).reshape(x.shape)
