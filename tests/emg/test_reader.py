from __future__ import annotations

from datetime import datetime

import ezc3d
import numpy as np
import pytest

from libs.emg import C3DContentError, C3DFormatError, muscle_channels, read_c3d
from libs.emg.c3d_reader import parse_parameters
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, regular_contractions

from .conftest import SAMPLE_FILES, needs_samples, standard_spec


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_fast_reader_bit_identical_on_samples(path):
    rec = read_c3d(path)
    ref = ezc3d.c3d(str(path))["data"]["analogs"][0]
    assert rec.reader == "numpy"
    assert rec.analogs.dtype == np.float64
    assert np.array_equal(rec.analogs, ref)
    assert rec.rate == 990.0
    assert rec.labels == ["CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated"]


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_parameter_parser_matches_ezc3d(path):
    _, params = parse_parameters(path.read_bytes())
    ref = ezc3d.c3d(str(path))["parameters"]
    n = 0
    for group, items in params.items():
        for name, value in items.items():
            expected = ref[group][name]["value"]
            if isinstance(expected, list):
                assert list(value) == expected, (group, name)
            else:
                assert np.array_equal(np.ravel(value).astype(float), np.ravel(expected).astype(float)), (group, name)
            n += 1
    assert n >= 25


@needs_samples
def test_sample_metadata_and_channels():
    path = [p for p in SAMPLE_FILES if p.name == "Ghostly_Emg_20230321_17-50-17-0881.c3d"]
    if not path:
        pytest.skip("largest sample absent")
    rec = read_c3d(path[0].read_bytes(), file_name=path[0].name)  # bytes input, like ingest
    md = rec.metadata
    assert md.session_datetime == datetime(2023, 3, 21, 17, 50, 17, 88100)
    assert md.game_name == "Ghostly" and md.game_level == 1 and md.game_score == 12.0
    assert md.therapist_id is None  # '---' placeholder is missing data, not an id
    assert md.duration_s == 173.0
    mcs = muscle_channels(rec)
    assert [(m.name, m.side, m.activated_index) for m in mcs] == [("CH1", "left", 2), ("CH2", "right", 3)]


@pytest.mark.parametrize(
    "rate,points,n_ch", [(990.0, True, 2), (2000.0, False, 2), (1000.0, True, 3), (500.0, False, 1), (2048.0, True, 4)]
)
def test_fast_reader_bit_identical_on_synthetic(write, rate, points, n_ch):
    spec = SyntheticSpec(
        rate=rate,
        duration_s=8.0,
        with_points=points,
        point_rate=None if rate != 2048.0 else 64.0,
        channels=[ChannelSpec(contractions=regular_contractions(1, 1.0, 3.0)) for _ in range(n_ch)],
    )
    path, truth = write(spec)
    rec = read_c3d(path)
    assert rec.reader == "numpy"
    assert rec.rate == rate
    assert np.array_equal(rec.analogs, ezc3d.c3d(str(path))["data"]["analogs"][0])
    assert np.array_equal(rec.analogs, truth["analogs"])
    assert rec.analogs.shape == (2 * n_ch, truth["n_samples"])


def test_scale_and_offset_applied_like_ezc3d(write, tmp_path):
    path, _ = write(SyntheticSpec(rate=990.0, duration_s=3.0, channels=[ChannelSpec(), ChannelSpec()]))
    c = ezc3d.c3d(str(path))
    c["parameters"]["ANALOG"]["SCALE"]["value"] = np.array([0.5, 3.3e-3, 1.0, 2.0])
    c["parameters"]["ANALOG"]["OFFSET"]["value"] = np.array([3, -7, 0, 1])
    c["parameters"]["ANALOG"]["GEN_SCALE"]["value"] = np.array([0.7])
    out = tmp_path / "scaled.c3d"
    c.write(str(out))
    rec = read_c3d(out)
    assert rec.reader == "numpy"
    assert np.array_equal(rec.analogs, ezc3d.c3d(str(out))["data"]["analogs"][0])


def test_header_and_point_scale_disagreeing_on_the_storage_is_refused(write, tmp_path):
    # Integer files used to go through ezc3d, which reads the points by POINT:SCALE and the
    # analogs by the header's scale factor: this file (header patched to "integer", POINT:SCALE
    # still "float") came back as garbage. Integer files of every processor are read by numpy,
    # cross-checked with ezc3d, in tests/emg/test_c3d_formats.py.
    path, _ = write(SyntheticSpec(rate=990.0, duration_s=3.0))
    buf = bytearray(path.read_bytes())
    buf[12:16] = np.float32(1.0).tobytes()  # positive header scale = integer data
    out = tmp_path / "int.c3d"
    out.write_bytes(bytes(buf))
    with pytest.raises(C3DFormatError, match="Inconsistent C3D file: the header declares int data"):
        read_c3d(out)


def test_non_ghostly_labels_are_all_muscles(write):
    path, _ = write(SyntheticSpec(duration_s=3.0, ghostly_labels=False, ghostly_metadata=False), "plain.c3d")
    rec = read_c3d(path)
    mcs = muscle_channels(rec)
    assert [m.name for m in mcs] == ["EMG1", "EMG2"]
    assert all(m.side is None for m in mcs)
    assert rec.metadata.game_name is None and rec.metadata.session_datetime is None
    assert any("INFO" in w for w in rec.warnings)
    sided = muscle_channels(rec, {"EMG1": "right", "EMG2": "left"})
    assert [m.side for m in sided] == ["right", "left"]


def test_malformed_random_and_empty(tmp_path):
    rnd = tmp_path / "random.c3d"
    rnd.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(C3DFormatError, match="Not a C3D"):
        read_c3d(rnd)
    empty = tmp_path / "empty.c3d"
    empty.write_bytes(b"")
    with pytest.raises(C3DFormatError):
        read_c3d(empty)
    with pytest.raises(C3DFormatError, match="Cannot open"):
        read_c3d(tmp_path / "missing.c3d")


def test_truncated_synthetic(write, tmp_path):
    path, _ = write(standard_spec())
    data = path.read_bytes()
    for cut in (len(data) // 2, 1024 + 100, 600):
        with pytest.raises(C3DFormatError):
            read_c3d(data[:cut])


@needs_samples
def test_truncated_real_sample():
    data = SAMPLE_FILES[0].read_bytes()
    with pytest.raises(C3DFormatError, match="Truncated"):
        read_c3d(data[: len(data) - 5000])


def test_nan_in_analogs(write, tmp_path):
    path, _ = write(SyntheticSpec(rate=990.0, duration_s=3.0))
    c = ezc3d.c3d(str(path))
    a = c["data"]["analogs"].copy()
    a[0, 1, 100] = np.nan
    c["data"]["analogs"] = a
    out = tmp_path / "nan.c3d"
    c.write(str(out))
    with pytest.raises(C3DContentError, match="NaN"):
        read_c3d(out)


def test_no_analog_channels(tmp_path):
    c = ezc3d.c3d()
    c["parameters"]["POINT"]["RATE"]["value"] = np.array([100.0])
    c["parameters"]["POINT"]["LABELS"]["value"] = ["P"]
    c["data"]["points"] = np.ones((4, 1, 50))
    out = tmp_path / "points_only.c3d"
    c.write(str(out))
    with pytest.raises(C3DContentError, match="no analog"):
        read_c3d(out)
