"""The speed-ups must not change a single number: buffer-reusing zero-phase filtering vs
scipy.signal.sosfiltfilt, threaded vs inline channels, lazy vs eager analog conversion,
pooled read buffers."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from scipy import signal
from scipy.ndimage import uniform_filter1d

from libs.emg import ProcessingParams, analyze, analyze_file, chain_1d, mains, quality, read_c3d
from libs.emg import pipeline as pl
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, regular_contractions

from .conftest import LARGEST, needs_samples, standard_spec


def reference_chain(raw: np.ndarray, rate: float, params: ProcessingParams) -> tuple[np.ndarray, np.ndarray]:
    """The chain written plainly on scipy.signal.sosfiltfilt (default padtype='odd'): constant
    fills bridged, high-pass, notch when mains was found, rectify, low-pass, moving RMS."""
    hp, lp = pl.design_filters(float(rate), params)
    spans, flag = quality.find_artifacts(raw, rate, params)
    guard = pl._GUARD_OFFSET if pl._needs_guard(raw) else 0.0
    src = raw + guard if guard else raw.copy()
    quality.fill_constant_spans(src, spans, rate)
    filtered = signal.sosfiltfilt(hp, src, padlen=pl._padlen(hp, raw.size))
    hum = mains.detect(filtered, flag, rate, params)
    if hum.present:
        sos = mains.notch_sos(float(rate), tuple(hum.notched_hz), params.notch_bandwidth_hz)
        filtered = signal.sosfiltfilt(sos, filtered, padlen=pl.notch_padlen(rate, params, raw.size))
    rect = np.abs(filtered)
    if guard:
        rect += guard
    low = signal.sosfiltfilt(lp, rect, padlen=pl._padlen(lp, raw.size))
    if guard:
        low -= guard
    win = max(1, round(params.rms_window_ms * rate / 1000.0))
    win += 1 - win % 2
    ms = uniform_filter1d(low * low, size=win, mode="nearest")
    env = np.sqrt(np.maximum(ms, 0.0))
    edge = pl.notch_padlen(rate, params, raw.size)
    if hum.present and raw.size > 4 * edge:  # the notch's start-up transient: no envelope there
        env[:edge] = 0.0
        env[raw.size - edge :] = 0.0
    return filtered, env


def _signals():
    rng = np.random.default_rng(7)
    yield "noise", rng.normal(0, 5e-5, 20_000), 990.0
    burst = np.zeros(30_000)
    burst[5000:9000] = rng.normal(0, 3e-4, 4000)
    yield "zero-runs (guard)", burst, 2000.0
    t = np.arange(40_000) / 990.0
    yield "mains hum (notch)", rng.normal(0, 5e-6, t.size) + 15e-6 * np.sin(2 * np.pi * 50.0 * t), 990.0
    dropout = rng.normal(0, 2e-5, 20_000)
    dropout[8000:8270] = -0.00550008
    yield "dropout (bridged)", dropout, 990.0
    yield "offset+drift", 1e-3 + np.linspace(0, 1e-4, 15_000) + rng.normal(0, 1e-5, 15_000), 1000.0
    for n in (1, 2, 3, 15, 16, 31, 32, 100):  # padlen = min(15, n - 1) edge cases
        yield f"short n={n}", rng.normal(0, 1e-4, n), 990.0


@pytest.mark.parametrize("kernel", [True, False], ids=["inplace-kernel", "public-sosfilt"])
def test_chain_equals_sosfiltfilt_reference(monkeypatch, kernel):
    if kernel and not pl._use_kernel():
        pytest.skip("scipy's in-place kernel is not available")
    monkeypatch.setattr(pl, "_use_kernel", lambda: kernel)
    p = ProcessingParams()
    for name, x, rate in _signals():
        f_ref, e_ref = reference_chain(x, rate, p)
        f, e = chain_1d(x, rate, p)
        if name.startswith("mains"):  # the notch path really ran
            assert mains.detect(signal.sosfiltfilt(pl.design_filters(rate, p)[0], x), None, rate, p).present
        assert np.allclose(f, f_ref, rtol=1e-10, atol=0), name
        assert np.allclose(e, e_ref, rtol=1e-10, atol=0), name
        # Same kernel, same inputs, same order: in practice bit-identical.
        assert np.array_equal(f, f_ref) and np.array_equal(e, e_ref), name


@pytest.mark.parametrize("order", [1, 2, 4, 8])
def test_zero_phase_equals_sosfiltfilt(order):
    rng = np.random.default_rng(order)
    for n in (1, 2, 5, 30, 1000):
        x = rng.normal(size=n)
        for sos in (
            signal.butter(order, 20.0, "highpass", fs=990.0, output="sos"),
            signal.butter(order, 10.0, "lowpass", fs=990.0, output="sos"),
        ):
            a, b = np.empty(pl.work_size(n)), np.empty(pl.work_size(n))
            p = pl._padlen(sos, n)
            a[p : p + n] = x
            got = pl._zero_phase(sos, signal.sosfilt_zi(sos), n, a, b)
            ref = signal.sosfiltfilt(sos, x, padlen=p)
            assert np.allclose(got, ref, rtol=1e-10, atol=0)
            assert np.array_equal(got, ref)


@needs_samples
def test_chain_equals_reference_on_largest_sample():
    if not LARGEST.exists():
        pytest.skip("largest sample absent")
    rec = read_c3d(LARGEST)
    p = ProcessingParams()
    for i in range(rec.shape[0]):  # raw (no guard) and 'activated' (zero runs: guard) rows
        f_ref, e_ref = reference_chain(rec.analogs[i], rec.rate, p)
        f, e = chain_1d(rec.analogs[i], rec.rate, p)
        assert np.allclose(f, f_ref, rtol=1e-10, atol=0) and np.allclose(e, e_ref, rtol=1e-10, atol=0)


def _numbers(res) -> dict:
    d = res.to_dict()
    d.pop("timings_ms")
    d.pop("processing_time_ms")
    for ch in d["channels"]:
        ch.pop("timings_ms")
        ch.pop("processing_time_ms")
    return d


def test_threaded_equals_inline_and_repeatable(write, monkeypatch):
    path, _ = write(standard_spec())
    monkeypatch.setenv("EMG_ANALYSIS_THREADS", "1")
    inline = _numbers(analyze_file(path))
    monkeypatch.setenv("EMG_ANALYSIS_THREADS", "2")
    threaded = analyze_file(path)
    assert threaded.timings_ms["threads"] == 2
    assert _numbers(threaded) == inline
    assert _numbers(analyze_file(path)) == inline  # reused workspace buffers leave no trace


def test_workspace_budget_and_sizes():
    ws = pl.Workspace(budget_bytes=1000 * 8)
    a = ws.buffer("a", 600)
    assert a.size == 600 and ws.nbytes == 600 * 8
    assert ws.buffer("a", 500).base is a.base or np.shares_memory(ws.buffer("a", 500), a)
    big = ws.buffer("b", 900)  # over budget: fresh, not kept
    assert big.size == 900 and ws.nbytes == 600 * 8
    assert not np.shares_memory(ws.buffer("b", 900), big)


def test_lazy_rows_equal_eager_block(write):
    path, truth = write(
        SyntheticSpec(
            rate=990.0,
            duration_s=5.0,
            channels=[ChannelSpec(contractions=regular_contractions(1, 1.0, 2.0)), ChannelSpec()],
        )
    )
    rec = read_c3d(path)
    assert rec.shape == truth["analogs"].shape and rec.n_samples == truth["n_samples"]
    for i in range(rec.shape[0]):
        assert np.array_equal(rec.channel(i), truth["analogs"][i])
        assert np.array_equal(rec.channel_positive(i), truth["analogs"][i] > 0)
    out = np.empty(rec.n_samples)
    rec2 = read_c3d(path)
    assert np.array_equal(rec2.row(1, out), truth["analogs"][1])
    assert np.array_equal(rec2.analogs, truth["analogs"])  # materialised after a row
    assert np.array_equal(rec.analogs, truth["analogs"])  # materialised after cached rows


def test_pooled_read_buffers_never_alias(write):
    p1, t1 = write(standard_spec(), "one.c3d")
    p2, t2 = write(SyntheticSpec(duration_s=60.0, seed=5, channels=[ChannelSpec(), ChannelSpec()]), "two.c3d")
    r1 = read_c3d(p1)
    r2 = read_c3d(p2)
    assert np.array_equal(r1.channel(0), t1["analogs"][0])
    del r2
    gc.collect()
    r3 = read_c3d(p2)  # may reuse r2's buffer, must not touch r1's
    assert np.array_equal(r1.analogs, t1["analogs"])
    assert np.array_equal(r3.analogs, t2["analogs"])
    res = analyze(read_c3d(p1))
    assert res.channel("CH1").total_contractions == 12
