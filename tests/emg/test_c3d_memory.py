"""Memory bounded by design (issue 16, item 2): an integer C3D used to be read by ezc3d as
float64 for every channel (~34x the file size in one analysis worker); it is now converted
per channel, long recordings run the chain in place on one work buffer, and the working
memory is known from the header before the file is read. Bit-identity of the low-memory
chain with the standard one is checked here too (the numbers must not change)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from libs.emg import ProcessingParams, analyze, estimate_analysis_bytes, read_c3d
from libs.emg import analysis as an
from libs.emg import pipeline as pl

from .test_c3d_writer import C3DSpec, build_c3d

ROOT = Path(__file__).resolve().parents[2]


def _signals():
    rng = np.random.default_rng(11)
    t = np.arange(60_000) / 990.0
    on = (t % 6.0) < 2.0
    yield "contractions", rng.normal(0, 5e-6, t.size) + on * rng.normal(0, 3e-4, t.size), 990.0
    yield (
        "mains hum (notch)",
        rng.normal(0, 5e-6, t.size) + 15e-6 * np.sin(2 * np.pi * 50.0 * t) + on * rng.normal(0, 2e-4, t.size),
        990.0,
    )
    burst = np.zeros(50_000)
    burst[5000:9000] = rng.normal(0, 3e-4, 4000)
    yield "zero runs (guard)", burst, 2000.0
    dropout = rng.normal(0, 2e-5, 30_000)
    dropout[8000:8270] = -0.00550008
    yield "dropout (bridged)", dropout, 990.0
    clipped = np.clip(rng.normal(0, 2e-4, 30_000), -3e-4, 3e-4)
    yield "saturation", clipped, 990.0
    for n in (2, 3, 16, 31, 100, 5000):
        yield f"short n={n}", rng.normal(0, 1e-4, n), 990.0


@pytest.mark.parametrize("name,x,rate", list(_signals()), ids=lambda v: v if isinstance(v, str) else "")
def test_low_memory_chain_is_bit_identical(name, x, rate, monkeypatch):
    p = ProcessingParams()
    n = x.size
    f_ref, e_ref = np.empty(n), np.empty(n)
    cond_ref = pl.chain_into(x, rate, p, f_ref, e_ref, np.empty(pl.work_size(n)), np.empty(pl.work_size(n)))
    work = np.empty(pl.work_size(n))
    slot = pl.raw_slot(work, n)
    slot[:] = x
    f, e = np.empty(n), np.empty(n)
    cond = pl.chain_lowmem(slot, rate, p, work, e, f)  # raw converted in place
    assert np.array_equal(f, f_ref) and np.array_equal(e, e_ref)
    assert cond.artifacts == cond_ref.artifacts and np.array_equal(cond.flag, cond_ref.flag)
    assert cond.mains.present == cond_ref.mains.present
    e2 = np.empty(n)
    pl.chain_lowmem(x, rate, p, np.empty(pl.work_size(n)), e2)  # copied in; envelope only
    assert np.array_equal(e2, e_ref)
    f3 = np.empty(n)
    pl.chain_lowmem(x, rate, p, np.empty(pl.work_size(n)), None, f3)  # filtered only
    assert np.array_equal(f3, f_ref)
    f32, e32 = np.empty(n, np.float32), np.empty(n, np.float32)  # jit_signal's float32 results
    monkeypatch.setattr(pl, "_MOVE_CHUNK", 1000)  # several blocks of the float32 moving RMS
    pl.chain_lowmem(x, rate, p, np.empty(pl.work_size(n)), e32, f32)
    assert np.array_equal(f32, f_ref.astype(np.float32)) and np.array_equal(e32, e_ref.astype(np.float32))
    if name.startswith("mains"):
        assert cond.mains.present


def test_moving_mean_equals_uniform_filter1d():
    assert pl._moving_mean_ok()
    rng = np.random.default_rng(2)
    for _ in range(200):
        n, win = int(rng.integers(1, 20_000)), int(rng.integers(1, 400))
        x = (rng.normal(size=n) * 10.0 ** rng.integers(-9, 2)) ** 2
        x[rng.integers(0, n, n // 4)] = 0.0
        w = np.empty(n + win + 7)
        at = int(rng.integers(0, 8))
        w[at : at + n] = x
        out = np.empty(n)
        pl._moving_mean(w, at, n, win, out)
        assert np.array_equal(out, uniform_filter1d(x, size=win, mode="nearest")), (n, win)


def test_in_place_moves_and_reversal(monkeypatch):
    monkeypatch.setattr(pl, "_MOVE_CHUNK", 7)
    rng = np.random.default_rng(0)
    for _ in range(100):
        size = int(rng.integers(1, 200))
        buf = rng.normal(size=size + 40)
        ref = buf.copy()
        n = int(rng.integers(0, size))
        src, dst = int(rng.integers(0, 40)), int(rng.integers(0, 40))
        ref[dst : dst + n] = ref[src : src + n].copy()
        pl._move(buf, dst, src, n)
        assert np.array_equal(buf, ref)
        pl._reverse_inplace(buf[:size])
        assert np.array_equal(buf[:size], ref[:size][::-1])


def _numbers(res) -> dict:
    d = res.to_dict()
    d.pop("timings_ms"), d.pop("processing_time_ms")
    for ch in d["channels"]:
        ch.pop("timings_ms"), ch.pop("processing_time_ms")
    return d


def _differences(a, b, path="", rel=1e-6) -> list[str]:
    """Where two analysis dicts differ: anything but a float exactly; floats beyond ``rel``."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}", rel)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]", rel)]
    if isinstance(a, float) and isinstance(b, float) and not (a == b or abs(a - b) <= rel * max(abs(a), abs(b))):
        return [f"{path}: {a!r} != {b!r}"]
    if not isinstance(a, float) and a != b:
        return [f"{path}: {a!r} != {b!r}"]
    return []


@pytest.mark.parametrize("threads", ["1", "2"])
def test_long_recording_analysis_is_identical(write, monkeypatch, threads):
    """The long-recording path gives the standard path's analysis: detection, contractions,
    MVC and scores exactly (the envelope is computed in float64 by both); the descriptors and
    noise figures from the float32 copy of the filtered signal within 1e-6 relative."""
    from libs.emg.synthetic import ChannelSpec, SyntheticSpec, regular_contractions

    spec = SyntheticSpec(
        duration_s=120.0,
        channels=[
            ChannelSpec(contractions=regular_contractions(12, 2.5, 9.0), hum_hz=50.0, hum_rms_v=15e-6),
            ChannelSpec(
                contractions=regular_contractions(10, 1.0, 11.0),
                dropouts=[(4.0, 270), (30.2, 270)],
                clip_v=4e-4,
                rail_jitter_lsb=1.5,
            ),
        ],
    )
    path, _ = write(spec)
    monkeypatch.setenv("EMG_ANALYSIS_THREADS", threads)
    standard = _numbers(analyze(read_c3d(path)))
    monkeypatch.setattr(an, "LOW_MEMORY_SAMPLES", 1000)  # every channel through chain_lowmem
    long_path = _numbers(analyze(read_c3d(path)))
    assert _differences(long_path, standard) == []
    approximate = [d for d in _differences(long_path, standard, rel=0.0)]
    assert all(any(k in d for k in ("descriptors", "noise", "snr")) for d in approximate), approximate
    for ch_long, ch in zip(long_path["channels"], standard["channels"]):
        assert ch_long["contractions"] == ch["contractions"]
        assert ch_long["mvc_rms_value"] == ch["mvc_rms_value"]
    assert _numbers(analyze(read_c3d(path))) == long_path  # reused (shared) workspace buffers


# --------------------------------------------------------------------------- peak memory

_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
from libs.emg import analyze_file
import libs.emg.pipeline
base = hwm()
res = analyze_file(sys.argv[1])
print(json.dumps({"base": base, "peak": hwm(), "n": res.recording["n_samples"],
                  "contractions": [c.total_contractions for c in res.channels]}))
"""


def _integer_file(path: Path, minutes: float) -> Path:
    rate, n_sub = 990.0, 30
    n = int(minutes * 60 * rate) // n_sub * n_sub
    rng = np.random.default_rng(4)
    t = np.arange(n) / rate
    data = np.empty((4, n), dtype=np.int64)
    for ch in range(2):
        on = ((t + 3 * ch) % 8.0) < 2.5
        data[ch] = np.round((rng.normal(0, 5e-6, n) + on * rng.normal(0, 300e-6, n)) / 0.16781e-6)
        data[2 + ch] = on
    spec = C3DSpec(
        data,
        storage="int",
        n_points=1,
        scale=[0.16781e-6, 0.16781e-6, 1.0, 1.0],
        labels=["CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated"],
    )
    path.write_bytes(build_c3d(spec))
    return path


def test_integer_file_analysis_memory_is_per_channel(tmp_path):
    """A 24 MB integer file: ~34x its size in one worker when ezc3d read it; now the float64
    working set of one channel (plus the file, read whole at this size)."""
    path = _integer_file(tmp_path / "Ghostly_Emg_20240506_14-30-17-0881.c3d", minutes=51)
    size = path.stat().st_size
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    used = got["peak"] - got["base"]
    assert got["contractions"][0] > 300
    assert used < 12 * size, f"{used / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"
    estimate = estimate_analysis_bytes(path)
    assert 0.6 * used < estimate < 1.6 * used, (estimate, used)


def test_batched_spectra_and_blocked_selections_match_one_pass(write, monkeypatch):
    """The bounded-memory forms (Welch PSDs summed batch by batch, burst peaks and boolean
    selections block by block) give the one-pass results: bursts and selections exactly,
    spectra up to the order of the float64 sums."""
    from libs.emg import arrays
    from libs.emg import contractions as cx
    from libs.emg import descriptors as dx
    from libs.emg.synthetic import ChannelSpec, SyntheticSpec, regular_contractions

    spec = SyntheticSpec(
        duration_s=60.0,
        channels=[
            ChannelSpec(contractions=regular_contractions(8, 2.0, 6.0), dropouts=[(10.0, 300)]),
            ChannelSpec(contractions=regular_contractions(5, 1.0, 9.0)),
        ],
    )
    path, _ = write(spec)
    standard = _numbers(analyze(read_c3d(path)))
    monkeypatch.setattr(dx, "_WELCH_BATCH_BYTES", 8 * 256 * 7)  # 7 segments per welch call
    monkeypatch.setattr(arrays, "BLOCK", 1000)
    monkeypatch.setattr(cx, "BLOCK", 1000)
    small = _numbers(analyze(read_c3d(path)))
    assert _differences(small, standard, rel=1e-12) == []
    assert [c["contractions"] for c in small["channels"]] == [c["contractions"] for c in standard["channels"]]
