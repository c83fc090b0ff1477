"""Every C3D storage the numpy reader handles (Intel / DEC / MIPS, float / signed / unsigned
16-bit integer), cross-checked with ezc3d and with the specification's conversion; the
blockwise file reading of large files; the header-only size estimate and memory budget."""

from __future__ import annotations

import os
import time

import ezc3d
import numpy as np
import pytest

from libs.emg import C3DContentError, C3DFormatError, EmgError, MemoryBudgetExceeded, analyze, read_c3d
from libs.emg import c3d_reader as cr
from libs.emg.c3d_reader import (
    check_analysis_budget,
    dec_to_float32,
    estimate_analysis_bytes,
    inspect_c3d,
    parse_parameters,
)

from .test_c3d_writer import DEC, INTEL, MIPS, C3DSpec, Param, build_c3d, ieee_to_dec

PROCESSORS = {"intel": INTEL, "dec": DEC, "mips": MIPS}
SCALE = [0.5, 2.5e-6, 1.0, 3.0]
OFFSET = [0, 3, -7, 1]
GEN = 0.7


def _stored(storage: str, n: int = 990 * 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if storage == "float":
        a: np.ndarray = rng.normal(0, 1e-4, (4, n)).astype(np.float32)
        a[2:] = a[2:] > 0
        a[1, 100:200] = 0.0  # exact zeros (a DEC zero has exponent 0)
        return a
    a = rng.integers(-32768, 32768, (4, n))
    a[0, :3] = [-32768, 32767, 0]
    return a


def _truth(stored: np.ndarray, storage: str) -> np.ndarray:
    """(stored - |offset|) x scale x gen as ezc3d computes it (float32 subtraction for floats)."""
    off = np.abs(np.asarray(OFFSET))
    out = np.empty(stored.shape)
    for i in range(stored.shape[0]):
        if storage == "float":
            d = (stored[i].astype(np.float32) - np.float32(off[i])).astype(np.float64)
        else:
            d = stored[i].astype(np.float64) - off[i]
        out[i] = d * float(np.float32(SCALE[i])) * float(np.float32(GEN))  # the file stores float32 scales
    return out


def _spec(storage: str, proc: int, n_points: int = 1, **kw) -> C3DSpec:
    return C3DSpec(
        _stored(storage),
        storage=storage,
        processor=proc,
        n_points=n_points,
        scale=SCALE,
        offset=OFFSET,
        gen_scale=GEN,
        **kw,
    )


def _write(tmp_path, spec: C3DSpec, name: str = "f.c3d"):
    path = tmp_path / name
    path.write_bytes(build_c3d(spec))
    return path


@pytest.fixture(
    params=[(INTEL, "float"), (INTEL, "int"), (DEC, "float"), (DEC, "int"), (MIPS, "float"), (MIPS, "int")],
    ids=lambda p: f"{ {84: 'intel', 85: 'dec', 86: 'mips'}[p[0]] }-{p[1]}",
)
def fmt(request):
    return request.param


@pytest.mark.parametrize("n_points", [0, 1, 3])
def test_values_equal_ezc3d_and_the_specification(tmp_path, fmt, n_points):
    proc, storage = fmt
    spec = _spec(storage, proc, n_points)
    path = _write(tmp_path, spec)
    rec = read_c3d(path)
    assert rec.reader == "numpy"
    assert rec.shape == (4, spec.analogs.shape[1]) and rec.rate == 990.0
    assert rec.labels == ["CH1 Raw", "CH2 Raw", "CH3 Raw", "CH4 Raw"]
    truth = _truth(spec.analogs, storage)
    assert np.array_equal(rec.analogs, truth)
    if proc == MIPS:
        # ezc3d 1.7 refuses MIPS files ("not supported yet"): cross-check with ezc3d's reading
        # of the same file written for Intel.
        with pytest.raises(Exception, match="MIPS"):
            ezc3d.c3d(str(path))
        twin = _write(tmp_path, _spec(storage, INTEL, n_points), "intel_twin.c3d")
        ref = ezc3d.c3d(str(twin))["data"]["analogs"][0]
    else:
        ref = ezc3d.c3d(str(path))["data"]["analogs"][0]
    assert np.array_equal(rec.analogs, ref)
    fresh = read_c3d(path)  # lazy rows and masks equal the materialised block
    for i in range(4):
        assert np.array_equal(fresh.channel_positive(i), truth[i] > 0)
        assert np.array_equal(fresh.channel(i), truth[i])


def test_parameters_equal_ezc3d(tmp_path, fmt):
    proc, storage = fmt
    path = _write(tmp_path, _spec(storage, INTEL if proc == MIPS else proc, 1))
    header, params = parse_parameters(path.read_bytes())
    ref = ezc3d.c3d(str(path))["parameters"]
    for group, items in params.items():
        for name, value in items.items():
            expected = ref[group][name]["value"]
            if isinstance(expected, list):
                assert list(value) == expected, (group, name)
            else:
                assert np.array_equal(np.ravel(value).astype(float), np.ravel(expected).astype(float)), (group, name)
    if proc == MIPS:  # same parameters read from the big-endian file
        h2, p2 = parse_parameters(_write(tmp_path, _spec(storage, MIPS, 1), "m.c3d").read_bytes())
        assert {g: {k: list(np.ravel(v)) for k, v in d.items()} for g, d in p2.items()} == {
            g: {k: list(np.ravel(v)) for k, v in d.items()} for g, d in params.items()
        }
        assert (h2["frame_rate"], h2["scale_factor"], h2["data_start"]) == (
            header["frame_rate"],
            header["scale_factor"],
            header["data_start"],
        )


def test_unsigned_integers_follow_the_specification(tmp_path):
    """ANALOG:FORMAT 'UNSIGNED': words and offsets are unsigned (ezc3d reads them signed)."""
    stored = np.array([[0, 1, 32768, 40000, 65535, 2048] * 30] * 2)
    for proc in (INTEL, DEC, MIPS):
        spec = C3DSpec(
            stored,
            storage="int",
            processor=proc,
            n_points=1,
            analog_format="UNSIGNED",
            offset=[32768 - 65536, 2048],
            scale=[1e-3, 2.0],
            gen_scale=0.5,
        )
        rec = read_c3d(_write(tmp_path, spec))
        assert np.array_equal(rec.channel(0), (stored[0] - 32768.0) * float(np.float32(1e-3)) * 0.5)
        assert np.array_equal(rec.channel(1), (stored[1] - 2048.0) * 2.0 * 0.5)
        assert np.array_equal(rec.channel_positive(0), stored[0] > 32768)


def _vax_value(bits16_swapped: int) -> float:
    """Exact value of a VAX F-float given as its IEEE-like bits (words already swapped)."""
    s, e, f = bits16_swapped >> 31, (bits16_swapped >> 23) & 0xFF, bits16_swapped & 0x7FFFFF
    if e == 0:
        return float("nan") if s else 0.0
    return (-1.0) ** s * np.ldexp(0.5 + f / 2.0**24, e - 128)


def test_dec_float_conversion_is_exact_over_the_whole_range():
    rng = np.random.default_rng(5)
    bits = np.concatenate(
        [
            rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32),
            np.array(
                [
                    0,
                    0x80000000,
                    1 << 23,
                    2 << 23,
                    3 << 23,
                    (3 << 23) | 5,
                    0x7FFFFFFF,
                    0xFFFFFFFF,
                    (1 << 23) | 0x7FFFFF,
                    0x80000000 | (2 << 23) | 77,
                ],
                dtype=np.uint32,
            ),
        ]
    )
    stored = ((bits << np.uint32(16)) | (bits >> np.uint32(16))).astype("<u4")  # the file's word order
    got = dec_to_float32(stored)
    for b, g in zip(bits.tolist(), got.tolist()):
        want = _vax_value(b)
        if np.isnan(want):
            assert np.isnan(g), hex(b)
        else:
            assert g == np.float32(want), (hex(b), g, want)  # exact, or the rounded subnormal
    # and the writer's encoding is its inverse
    x = rng.normal(0, 1e-3, 1000).astype(np.float32)
    assert np.array_equal(dec_to_float32(ieee_to_dec(x)), x)


def test_dec_reserved_operand_is_refused_as_nan(tmp_path):
    spec = _spec("float", DEC)
    blob = bytearray(build_c3d(spec))
    header, _params = parse_parameters(bytes(blob))
    start = (header["data_start"] - 1) * 512
    blob[start + 16 + 4 * 1 : start + 16 + 4 * 2] = bytes([0, 0x80, 0, 0])  # channel 2, sample 0: sign set, exponent 0
    with pytest.raises(C3DContentError, match="NaN or infinite analog values \\(channels: CH2 Raw\\)"):
        read_c3d(bytes(blob))


def test_float_nan_found_for_every_processor(tmp_path):
    for proc in (INTEL, MIPS):
        spec = _spec("float", proc)
        spec.analogs[3, 50] = np.inf
        with pytest.raises(C3DContentError, match="CH4 Raw"):
            read_c3d(_write(tmp_path, spec))


def test_unknown_processor_is_refused_clearly(tmp_path):
    blob = bytearray(build_c3d(_spec("int", INTEL)))
    blob[512 + 3] = 87
    with pytest.raises(C3DFormatError, match="unknown processor type 87"):
        read_c3d(bytes(blob))


# --------------------------------------------------------------------------- large files


@pytest.fixture
def small_blocks(monkeypatch):
    """Make every file 'large': read from the file in blocks of a few frames."""
    monkeypatch.setattr(cr, "_WHOLE_READ_MAX_BYTES", 0)
    monkeypatch.setattr(cr, "_BLOCK_BYTES", 5000)


def test_blockwise_file_reading_equals_in_memory(tmp_path, fmt, small_blocks):
    proc, storage = fmt
    spec = _spec(storage, proc, 1)
    path = _write(tmp_path, spec)
    rec = read_c3d(path)
    lazy = rec._lazy
    assert lazy is not None and isinstance(lazy.src, cr._FileSource)  # not read whole
    truth = _truth(spec.analogs, storage)
    for i in range(4):
        assert np.array_equal(rec.channel_positive(i), truth[i] > 0)
        out = np.empty(rec.n_samples)
        assert np.array_equal(rec.row(i, out), truth[i])
    assert np.array_equal(read_c3d(path).analogs, truth)
    assert np.array_equal(read_c3d(path.read_bytes()).analogs, truth)  # bytes: in memory


def test_blockwise_analysis_is_identical(tmp_path, write, monkeypatch):
    from .conftest import standard_spec

    path, _ = write(standard_spec())
    d0 = analyze(read_c3d(path)).to_dict()
    monkeypatch.setattr(cr, "_WHOLE_READ_MAX_BYTES", 0)
    monkeypatch.setattr(cr, "_BLOCK_BYTES", 64 * 1024)
    d1 = analyze(read_c3d(path)).to_dict()
    for d in (d0, d1):
        d.pop("timings_ms"), d.pop("processing_time_ms")
        for c in d["channels"]:
            c.pop("timings_ms"), c.pop("processing_time_ms")
    assert d0 == d1


def test_blockwise_file_is_closed_with_its_recording(tmp_path, small_blocks):
    import gc

    path = _write(tmp_path, _spec("int", INTEL))
    before = len(os.listdir("/proc/self/fd"))
    rec = read_c3d(path)
    assert len(os.listdir("/proc/self/fd")) == before + 1
    rec.channel(0)
    del rec
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


def test_file_cut_after_the_header_was_read_is_refused(tmp_path, small_blocks):
    path = _write(tmp_path, _spec("int", DEC))
    rec = read_c3d(path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(C3DFormatError, match="Truncated C3D file"):
        rec.channel(0)


# --------------------------------------------------------------------------- estimate, budget


def _sparse_file(tmp_path, storage: str, n_frames: int, name: str) -> tuple:
    """A GHOSTLY-layout file of n_frames frames whose data section is a hole (zeros)."""
    spec = C3DSpec(
        np.zeros((4, 30), dtype=np.int64 if storage == "int" else np.float32),
        storage=storage,
        n_points=1,
        frames_param=-1 if n_frames > 65535 else n_frames,
        header_last=min(65535, n_frames),
        extra=[
            Param("TRIAL", "ACTUAL_START_FIELD", [1, 0], "int16"),
            Param("TRIAL", "ACTUAL_END_FIELD", [n_frames & 0xFFFF, n_frames >> 16], "int16"),
        ],
    )
    blob = build_c3d(spec)
    header, _ = parse_parameters(blob)
    start = (header["data_start"] - 1) * 512
    frame_bytes = (4 if storage == "float" else 2) * (4 + 120)
    path = tmp_path / name
    with open(path, "wb") as fh:
        fh.write(blob[:start])
        fh.truncate(start + n_frames * frame_bytes)
    return path, n_frames * 30


def test_estimate_reads_only_the_header(tmp_path):
    path, n = _sparse_file(tmp_path, "int", 1_000_000, "big.c3d")  # 248 MB, 30 M samples per channel
    t = time.perf_counter()
    info = inspect_c3d(path)
    need = estimate_analysis_bytes(path)
    assert time.perf_counter() - t < 0.5
    assert (info.n_samples, info.n_channels, info.storage, info.processor, info.reader, info.read_whole) == (
        n,
        4,
        "int",
        "Intel",
        "numpy",
        False,
    )
    # one channel at a time: three float64 signals (24 B/sample) + the statistics' temporaries;
    # never the file (8 B/sample here), never all channels
    assert 24 * n < need < 80 * n
    assert check_analysis_budget(path, 2 * need) == need
    with pytest.raises(MemoryBudgetExceeded, match="MiB of memory") as exc:
        check_analysis_budget(path, need // 2)
    assert exc.value.needed_bytes == need and exc.value.budget_bytes == need // 2
    assert not isinstance(exc.value, EmgError)  # not the file's fault: not INVALID_ARGUMENT
    assert check_analysis_budget(path, 0) == need  # 0 = no limit


def test_estimate_of_small_files_and_bytes(tmp_path):
    spec = _spec("float", INTEL)
    blob = build_c3d(spec)
    n = spec.analogs.shape[1]
    path = tmp_path / "s.c3d"
    path.write_bytes(blob)
    assert estimate_analysis_bytes(path) == estimate_analysis_bytes(blob) >= len(blob) + 40 * n
    assert inspect_c3d(blob).read_whole
    with pytest.raises(C3DFormatError, match="Truncated"):
        estimate_analysis_bytes(blob[: len(blob) // 2])
