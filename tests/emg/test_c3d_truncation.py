"""Truncated or inconsistent C3D files are refused (C3DFormatError, which ingest maps to
INVALID_ARGUMENT and a failed session) for every processor and storage, whether read whole,
from bytes or in blocks from the file. Integer files used to go through ezc3d, which returned
a truncated one as a shorter recording (issue 16, item 5)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from libs.emg import C3DFormatError, analyze_file, estimate_analysis_bytes, read_c3d
from libs.emg import c3d_reader as cr

from .test_c3d_writer import DEC, INTEL, MIPS, C3DSpec, build_c3d, layout_of

FORMATS = [(INTEL, "float"), (INTEL, "int"), (DEC, "float"), (DEC, "int"), (MIPS, "float"), (MIPS, "int")]
IDS = [f"{ {84: 'intel', 85: 'dec', 86: 'mips'}[p] }-{s}" for p, s in FORMATS]


def _spec(proc: int, storage: str, **kw) -> C3DSpec:
    rng = np.random.default_rng(1)
    n = 990 * 6
    a = rng.normal(0, 1e-4, (4, n)).astype(np.float32) if storage == "float" else rng.integers(-2000, 2000, (4, n))
    return C3DSpec(a, storage=storage, processor=proc, n_points=1, **kw)


@pytest.fixture(params=["whole", "bytes", "blocks"])
def reader(request, tmp_path, monkeypatch):
    """read_c3d of a file's bytes: from a path read whole, from bytes, from a path in blocks."""
    if request.param == "blocks":
        monkeypatch.setattr(cr, "_WHOLE_READ_MAX_BYTES", 0)
        monkeypatch.setattr(cr, "_BLOCK_BYTES", 4096)

    def read(blob: bytes, **kw):
        if request.param == "bytes":
            return read_c3d(blob)
        path = tmp_path / "Ghostly_Emg_20240506_14-30-17-0881.c3d"
        path.write_bytes(blob)
        return read_c3d(path)

    return read


def _patch_header_word(blob: bytes, proc: int, offset: int, fmt: str, value) -> bytes:
    out = bytearray(blob)
    struct.pack_into((">" if proc == MIPS else "<") + fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize("proc,storage", FORMATS, ids=IDS)
def test_truncated_mid_data_is_refused(proc, storage, reader):
    spec = _spec(proc, storage)
    blob = build_c3d(spec)
    where = layout_of(spec, blob)
    assert read_c3d(blob).n_samples == spec.analogs.shape[1]  # the whole file is fine
    for cut in (
        where.data_start + (where.data_end - where.data_start) * 3 // 5,  # 60 % of the data
        where.data_end - 1,  # one byte short
        where.data_end - where.frame_bytes,  # one whole frame short
        where.data_start + 1,
    ):
        with pytest.raises(C3DFormatError, match=r"Truncated C3D file: \d+ frames declared but only \d+ are present"):
            reader(blob[:cut])


@pytest.mark.parametrize("proc,storage", FORMATS, ids=IDS)
def test_header_pointing_past_the_end_is_refused(proc, storage, reader):
    blob = build_c3d(_spec(proc, storage))
    past = _patch_header_word(blob, proc, 16, "H", len(blob) // 512 + 10)  # data_start past EOF
    with pytest.raises(C3DFormatError, match=r"data section at byte .* past the end of the file"):
        reader(past)
    params_past = bytes([200]) + blob[1:]  # parameter block 200 of a 24-block file
    with pytest.raises(C3DFormatError, match=r"parameter section at byte .* past the end of the file"):
        reader(params_past)
    with pytest.raises(C3DFormatError, match=r"Truncated C3D file|Truncated or corrupt C3D parameter section"):
        reader(blob[: 512 + 300])  # cut inside the parameter section


@pytest.mark.parametrize("proc,storage", FORMATS, ids=IDS)
def test_inconsistent_counts_are_refused(proc, storage, reader):
    cases = {
        "header points": (dict(header_points=2), "header declares 2 points per frame, POINT:USED 1"),
        "header analog values": (dict(header_analog_values=96), "header declares 96 analog values per frame"),
        "frames": (dict(frames_param=150), "POINT:FRAMES declares 150 frames, the header 198"),
        "header frames": (dict(header_last=170), "POINT:FRAMES declares 198 frames, the header 170"),
        "scales": (dict(scale=[1.0, 1.0]), "ANALOG:SCALE/OFFSET have fewer entries than ANALOG:USED"),
        "offsets": (dict(offset=[0]), "ANALOG:SCALE/OFFSET have fewer entries than ANALOG:USED"),
        "storage": (
            dict(point_scale=1.0 if storage == "float" else -1.0, header_scale=-1.0 if storage == "float" else 1.0),
            f"the header declares {storage} data .* but POINT:SCALE = ",
        ),
        "data inside the parameters": (dict(), "header places the data section at block 2, inside the header"),
    }
    for name, (kw, message) in cases.items():
        blob = build_c3d(_spec(proc, storage, **kw))
        if name == "data inside the parameters":
            blob = _patch_header_word(blob, proc, 16, "H", 2)
        with pytest.raises(C3DFormatError, match="Inconsistent C3D file: (the )?" + message.replace("(", r"\(")):
            reader(blob)


def test_truncated_integer_file_fails_the_analysis(tmp_path):
    """What ingest runs (analyze_file on the stored path): refused, not analysed shorter."""
    spec = _spec(INTEL, "int")
    blob = build_c3d(spec)
    where = layout_of(spec, blob)
    path = tmp_path / "Ghostly_Emg_20240506_14-30-17-0881.c3d"
    path.write_bytes(blob[: where.data_start + (where.data_end - where.data_start) // 2])
    with pytest.raises(C3DFormatError, match="Truncated C3D file: 198 frames declared but only 99 are present"):
        analyze_file(path)
    with pytest.raises(C3DFormatError, match="Truncated"):
        estimate_analysis_bytes(path)  # the budget check refuses it before any analysis too
