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

import numpy as np
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


@lru_cache(maxsize=64)
def _filter_plan(rate: float, params: ProcessingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(hp sos, lp sos, hp zi, lp zi, RMS window): what sosfiltfilt would recompute per call."""
    hp, lp = design_filters(rate, params)
    win = max(1, int(round(params.rms_window_ms * rate / 1000.0)))
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


def _sosfilt_inplace(sos: np.ndarray, zi: np.ndarray, buf: np.ndarray) -> None:
    """``buf[:] = sosfilt(sos, buf, zi=zi * buf[:1])[0]`` without allocating a signal-sized array."""
    z = zi * buf[:1]  # exactly sosfiltfilt's ``zi * x_0``
    if _use_kernel():
        _sosfilt_kernel(sos, buf.reshape(1, -1), z.reshape(1, *z.shape))
    else:
        buf[:] = signal.sosfilt(sos, buf, zi=z)[0]


def _odd_ext_edges(ext: np.ndarray, n: int, p: int) -> None:
    """Fill the ``p`` padding samples on each side of ``ext[p:p + n]`` like scipy's odd_ext."""
    if p == 0:
        return
    x = ext[p:p + n]
    np.subtract(2 * x[:1], x[p:0:-1], out=ext[:p])
    np.subtract(2 * x[-1:], x[-2:-(p + 2):-1], out=ext[p + n:])


def _zero_phase(sos: np.ndarray, zi: np.ndarray, n: int, a: np.ndarray, b: np.ndarray,
                padlen: int | None = None) -> np.ndarray:
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
    return bwd[p:p + n][::-1]


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
    flag: np.ndarray  # bool per sample: inside an artefact span (no margin)
    mains: MainsResult  # power-line interference found in the rest periods (notched when present)


@lru_cache(maxsize=64)
def _notch_plan(rate: float, centres: tuple[float, ...], bandwidth_hz: float) -> tuple[np.ndarray, np.ndarray]:
    sos = mains.notch_sos(rate, centres, bandwidth_hz)
    return sos, signal.sosfilt_zi(sos)


def chain_into(raw: np.ndarray, rate: float, params: ProcessingParams, filtered: np.ndarray, env: np.ndarray,
               a: np.ndarray, b: np.ndarray) -> Conditioning:
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
    x = a[p:p + n]
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
        a[p:p + n] = filtered
        np.copyto(filtered, _zero_phase(sos, zi, n, a, b, p))
        # Whatever the padding, a reflected hum changes phase at the ends of the recording and
        # the narrow notch rings there for a few time constants: those samples are artefacts.
        edge = notch_padlen(rate, params, n)
        if n > 4 * edge:
            flag[:edge] = True
            flag[n - edge:] = True
            spans = sorted(spans + [ArtifactSpan("filter_edge", 0.0, edge / rate, edge, None),
                                    ArtifactSpan("filter_edge", (n - edge) / rate, n / rate, edge, None)],
                           key=lambda x: x.start_s)
    # Rectify into the low-pass buffer, low-pass, square.
    p = _padlen(lp, n)
    mid = a[p:p + n]
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
    for a in spans:
        if a.kind == "filter_edge":  # the notch's start-up transient is not EMG: no envelope there
            env[int(round(a.start_s * rate)):int(round(a.start_s * rate)) + a.n_samples] = 0.0
    return Conditioning(spans, flag, hum)


def chain_1d(raw: np.ndarray, rate: float, params: ProcessingParams) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------- workspaces


class Workspace:
    """Reusable float64 buffers, keyed by name, within a byte budget.

    Buffers over the budget are allocated fresh and not kept. A workspace is used by one
    analysis at a time (``workspace()`` hands them out); distinct keys may be used from
    several threads of that analysis.
    """

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._bufs: dict[object, np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def buffer(self, key: object, n: int) -> np.ndarray:
        with self._lock:
            cur = self._bufs.get(key)
            if cur is not None and cur.size >= n:
                return cur[:n]
            new = np.empty(n)
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


class workspace:  # noqa: N801 - used as a context manager like open()
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
