"""Recordings longer than a signed 16-bit frame count (> 32,767 frames).

What ezc3d 1.7 writes for such files (checked below, so a change in ezc3d shows up here):
- up to 65,535 frames: POINT:FRAMES wraps negative (39,600 frames -> -25,936) while the
  header's last_frame (unsigned 16-bit) is exact. ezc3d reads these back in full.
- above 65,535 frames: POINT:FRAMES = -1 and header last_frame saturates at 65,535, with no
  TRIAL:ACTUAL_*_FIELD; the data section is complete (plus 1..512 bytes of zero padding).
  ezc3d reads these back silently truncated to 65,535 frames, so only the data-section
  size tells the true length.
The written files are therefore kept as ezc3d writes them (that is what the reader meets).
"""

from __future__ import annotations

import ezc3d
import numpy as np
import pytest

from libs.emg import C3DFormatError, analyze, read_c3d
from libs.emg.c3d_reader import parse_parameters
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, regular_contractions


def _header_counts(path):
    header, params = parse_parameters(path.read_bytes())
    return int(params["POINT"]["FRAMES"][0]), header["first_frame"], header["last_frame"]


@pytest.fixture(scope="module")
def long_990(tmp_path_factory):
    """20 minutes at 990 Hz with 33 Hz points: 39,600 frames (GHOSTLY layout)."""
    from libs.emg.synthetic import write_synthetic_c3d

    spec = SyntheticSpec(
        rate=990.0,
        duration_s=1200.0,
        channels=[
            ChannelSpec(contractions=regular_contractions(40, 2.5, 29.0)),
            ChannelSpec(contractions=regular_contractions(20, 1.5, 59.0)),
        ],
    )
    path = tmp_path_factory.mktemp("long") / "Ghostly_Emg_20240506_14-30-17-0881.c3d"
    return path, write_synthetic_c3d(path, spec)


@pytest.fixture(scope="module")
def long_2000(tmp_path_factory):
    """12 minutes at 2000 Hz with 100 Hz points: 72,000 frames (> 65,535)."""
    from libs.emg.synthetic import write_synthetic_c3d

    spec = SyntheticSpec(
        rate=2000.0,
        duration_s=720.0,
        channels=[
            ChannelSpec(contractions=regular_contractions(24, 3.0, 29.0)),
            ChannelSpec(contractions=regular_contractions(12, 2.0, 59.0)),
        ],
    )
    path = tmp_path_factory.mktemp("long") / "Ghostly_Emg_20240506_14-30-18-0001.c3d"
    return path, write_synthetic_c3d(path, spec)


def test_20min_990hz_read_in_full_and_analysed(long_990):
    path, truth = long_990
    assert _header_counts(path) == (39600 - 65536, 1, 39600)  # FRAMES wrapped, header exact
    rec = read_c3d(path)
    assert rec.reader == "numpy"
    assert rec.n_samples == truth["n_samples"] == 1200 * 990
    assert rec.duration_s == 1200.0
    assert np.array_equal(rec.analogs, truth["analogs"])
    ez = ezc3d.c3d(str(path))["data"]["analogs"][0]
    assert ez.shape[1] == rec.n_samples  # ezc3d is right for this one: compare bit for bit
    assert np.array_equal(rec.analogs, ez)
    assert not any("frame" in w.lower() for w in rec.warnings)
    res = analyze(rec)
    assert res.recording["n_samples"] == 1200 * 990
    assert res.channel("CH1").total_contractions == 40
    assert res.channel("CH2").total_contractions == 20
    assert res.performance.session_duration_minutes == pytest.approx(20.0)


def test_12min_2000hz_with_points_read_in_full_and_analysed(long_2000):
    path, truth = long_2000
    assert _header_counts(path) == (-1, 1, 65535)  # ezc3d: both counts saturated
    rec = read_c3d(path)
    assert rec.reader == "numpy"
    assert rec.n_samples == truth["n_samples"] == 720 * 2000
    assert np.array_equal(rec.analogs, truth["analogs"])
    assert any("16-bit" in w for w in rec.warnings)  # length taken from the data section
    ez = ezc3d.c3d(str(path))["data"]["analogs"][0]
    assert ez.shape[1] == 65535 * 20 < rec.n_samples  # ezc3d silently truncates ...
    assert np.array_equal(rec.analogs[:, : ez.shape[1]], ez)  # ... but agrees where it has data
    res = analyze(rec)
    assert res.recording["n_samples"] == 720 * 2000
    # 4 contractions of CH1 and 1 of CH2 start after the 655 s ezc3d would keep
    assert res.channel("CH1").total_contractions == 24
    assert res.channel("CH2").total_contractions == 12
    assert res.performance.session_duration_minutes == pytest.approx(12.0)


@pytest.mark.parametrize("fixture", ["long_990", "long_2000"])
def test_truncated_long_files_raise(request, fixture):
    path, _ = request.getfixturevalue(fixture)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) // 3 + 7):
        with pytest.raises(C3DFormatError, match="Truncated"):
            read_c3d(data[:cut])


def _small_long_file(write, seconds: float = 70.0, n_channels: int = 1):
    """> 65,535 frames in a small file: one analog sample per frame (point rate = analog rate)."""
    spec = SyntheticSpec(
        rate=1000.0,
        point_rate=1000.0,
        duration_s=seconds,
        with_points=False,
        channels=[ChannelSpec(contractions=regular_contractions(3, 2.0, 20.0)) for _ in range(n_channels)],
    )
    return write(spec)


def test_tiny_frames_padding_is_not_data(write):
    # 8-byte frames: the 1..512 padding bytes could hold up to 64 more frames.
    path, truth = _small_long_file(write)
    assert _header_counts(path) == (-1, 1, 65535)
    rec = read_c3d(path)
    assert rec.n_samples == truth["n_samples"] == 70000
    assert np.array_equal(rec.analogs, truth["analogs"])


def test_trial_fields_give_the_exact_length(write, tmp_path):
    path, truth = _small_long_file(write)
    c = ezc3d.c3d(str(path))
    # Vicon convention: 32-bit frame numbers as two unsigned 16-bit words (low, high).
    n = truth["n_samples"]
    c.add_parameter("TRIAL", "ACTUAL_START_FIELD", [1, 0])
    c.add_parameter("TRIAL", "ACTUAL_END_FIELD", [n & 0xFFFF, n >> 16])
    out = tmp_path / "trial.c3d"
    c.write(str(out))
    data = bytearray(out.read_bytes())
    # ezc3d rewrote only the 65,535 frames it had read: append the rest of the original data.
    header, _ = parse_parameters(bytes(data))
    start_out = (header["data_start"] - 1) * 512
    src = path.read_bytes()
    h_src, _ = parse_parameters(src)
    start_src = (h_src["data_start"] - 1) * 512
    frame_bytes = 4 * 2
    # Non-zero trailing bytes: without TRIAL they would be taken for 12 more frames.
    data = data[:start_out] + src[start_src : start_src + n * frame_bytes] + b"\1" * 100
    rec = read_c3d(bytes(data))
    assert rec.n_samples == n
    assert np.array_equal(rec.analogs, truth["analogs"])


def test_inconsistent_trial_fields_raise(write, tmp_path):
    path, _truth = _small_long_file(write)
    c = ezc3d.c3d(str(path))
    c.add_parameter("TRIAL", "ACTUAL_START_FIELD", [1, 0])
    c.add_parameter("TRIAL", "ACTUAL_END_FIELD", [5000, 3])  # ~200k frames: not in the file
    out = tmp_path / "bad_trial.c3d"
    c.write(str(out))
    with pytest.raises(C3DFormatError, match="ACTUAL"):
        read_c3d(out)


def test_disagreeing_counts_warn_and_use_the_data_section(long_990):
    # Header last_frame patched to 39,000 while POINT:FRAMES (39,600 wrapped) and the data
    # section agree on 39,600: the data is read in full and the disagreement reported.
    path, truth = long_990
    data = bytearray(path.read_bytes())
    data[8:10] = (39000).to_bytes(2, "little")  # header last_frame
    rec = read_c3d(bytes(data))
    assert rec.n_samples == truth["n_samples"]
    assert any("disagree" in w and "39000" in w for w in rec.warnings)


def test_overflowed_frames_with_zero_header_uses_data_size(long_990):
    # Header last_frame lost (0) and POINT:FRAMES wrapped: the wrapped count still fixes the length.
    path, truth = long_990
    data = bytearray(path.read_bytes())
    data[6:8] = (0).to_bytes(2, "little")  # first_frame
    data[8:10] = (0).to_bytes(2, "little")  # last_frame
    rec = read_c3d(bytes(data))
    assert rec.n_samples == truth["n_samples"]
