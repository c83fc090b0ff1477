"""A C3D writer for the reader's tests: every processor (Intel, DEC, MIPS) and storage (float,
signed/unsigned 16-bit integer) built from bytes, following the C3D specification, so the
reader can be checked against ezc3d (which writes Intel float only) and against the truth.

``build_c3d`` returns the file's bytes; ``layout_of`` where its parts are (for cutting and
patching files in the truncation tests).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import numpy as np

INTEL, DEC, MIPS = 84, 85, 86
BLOCK = 512


def ieee_to_dec(x) -> np.ndarray:
    """float32 values as VAX F-floats: the little-endian uint32 of the 4 stored bytes.

    VAX F = IEEE bits of 4x the value (exponent + 2) with the two 16-bit words swapped.
    Zero stays zero. Values whose 4x overflows float32 are not representable here."""
    v = np.asarray(x, dtype=np.float32) * np.float32(4.0)
    bits = v.view(np.uint32).astype(np.uint32)
    bits = np.where(v == 0, np.uint32(0), bits)
    return ((bits << np.uint32(16)) | (bits >> np.uint32(16))).astype("<u4")


def float_bytes(values, processor: int) -> bytes:
    if processor == DEC:
        return ieee_to_dec(values).tobytes()
    return np.asarray(values, dtype=(">" if processor == MIPS else "<") + "f4").tobytes()


def int_bytes(values, processor: int, code: str = "i2") -> bytes:
    return np.asarray(values).astype((">" if processor == MIPS else "<") + code).tobytes()


@dataclass
class Param:
    group: str
    name: str
    value: object  # str | list[str] | list/np.ndarray of numbers
    kind: str = "auto"  # 'char' | 'int16' | 'float' | 'byte' | 'auto'


@dataclass
class C3DSpec:
    analogs: np.ndarray  # (n_channels, n_samples) stored values (float or int)
    rate: float = 990.0
    point_rate: float = 33.0
    storage: str = "float"  # 'float' | 'int'
    processor: int = INTEL
    n_points: int = 1
    scale: list[float] | None = None  # ANALOG:SCALE (default 1)
    offset: list[int] | None = None  # ANALOG:OFFSET (default 0)
    gen_scale: float = 1.0
    labels: list[str] | None = None
    units: list[str] | None = None
    analog_format: str | None = None  # ANALOG:FORMAT ('SIGNED' / 'UNSIGNED')
    point_scale: float | None = None  # POINT:SCALE (default: -1 float, 0.1 integer)
    header_scale: float | None = None  # the header's copy of it (default: point_scale)
    frames_param: int | None = None  # POINT:FRAMES override (default: the frame count, wrapped)
    header_first: int = 1
    header_last: int | None = None  # header last frame override
    header_analog_values: int | None = None  # header word 3 override
    header_points: int | None = None  # header word 2 override
    data_start: int | None = None  # override (blocks, 1-based)
    extra: list[Param] = field(default_factory=list)
    pad_to_block: bool = True


def _param_value_bytes(p: Param, processor: int) -> tuple[int, list[int], bytes]:
    """(type code, dims, data bytes)."""
    v = p.value
    kind = p.kind
    if kind == "auto":
        if (
            isinstance(v, str)
            or (isinstance(v, list) and v and all(isinstance(x, str) for x in v))
            or (isinstance(v, list) and not v)
        ):
            kind = "char"
        else:
            arr = np.asarray(v)
            kind = "int16" if np.issubdtype(arr.dtype, np.integer) else "float"
    if kind == "char":
        strings = [v] if isinstance(v, str) else list(cast("Iterable[str]", v))
        if isinstance(v, str):
            return -1, [len(v)], v.encode("latin-1")
        width = max((len(s) for s in strings), default=0)
        data = b"".join(s.ljust(width).encode("latin-1") for s in strings)
        return -1, [width, len(strings)], data
    arr = np.atleast_1d(np.asarray(v))
    dims = [arr.size]
    if kind == "int16":
        return 2, dims, int_bytes(arr, processor)
    if kind == "byte":
        return 1, dims, arr.astype("i1").tobytes()
    return 4, dims, float_bytes(arr.astype(np.float32), processor)


def _parameter_section(params: list[Param], processor: int) -> bytes:
    e = ">" if processor == MIPS else "<"
    groups: dict[str, int] = {}
    for p in params:
        groups.setdefault(p.group, len(groups) + 1)
    items: list[tuple[bytes, bytes]] = []  # (name part, rest)
    for g, gid in groups.items():
        name = g.encode()
        body = struct.pack("bb", len(name), -gid) + name
        items.append((body, b"\x00"))  # offset then description length 0
        for p in (p for p in params if p.group == g):
            pname = p.name.encode()
            code, dims, data = _param_value_bytes(p, processor)
            rest = struct.pack("bB", code, len(dims)) + bytes(dims) + data + b"\x00"
            items.append((struct.pack("bb", len(pname), gid) + pname, rest))
    out = bytearray(b"\x01\x50\x00" + bytes([processor]))
    for k, (head, rest) in enumerate(items):
        last = k == len(items) - 1
        offset = 0 if last else 2 + len(rest)
        out += head + struct.pack(e + "H", offset) + rest
    nblocks = max(1, math.ceil(len(out) / BLOCK))
    out[2] = nblocks
    out += b"\x00" * (nblocks * BLOCK - len(out))
    return bytes(out)


def build_c3d(spec: C3DSpec) -> bytes:
    proc = spec.processor
    e = ">" if proc == MIPS else "<"
    data = np.asarray(spec.analogs)
    n_ch, n = data.shape
    n_sub = int(spec.rate / spec.point_rate) if spec.point_rate else 1
    if n % n_sub:
        raise ValueError("samples must fill whole frames")
    n_frames = n // n_sub
    is_float = spec.storage == "float"
    point_scale = spec.point_scale if spec.point_scale is not None else (-1.0 if is_float else 0.1)
    labels = spec.labels or [f"CH{i + 1} Raw" for i in range(n_ch)]
    frames_param = (
        spec.frames_param
        if spec.frames_param is not None
        else (n_frames if n_frames <= 32767 else (n_frames - 65536 if n_frames <= 65535 else -1))
    )
    params = [
        Param("POINT", "USED", [spec.n_points], "int16"),
        Param("POINT", "SCALE", [point_scale], "float"),
        Param("POINT", "RATE", [spec.point_rate], "float"),
        Param("POINT", "FRAMES", [frames_param], "int16"),
        Param("POINT", "LABELS", [f"P{i + 1}" for i in range(spec.n_points)] or [], "char"),
        Param("ANALOG", "USED", [n_ch], "int16"),
        Param("ANALOG", "LABELS", labels, "char"),
        Param("ANALOG", "SCALE", spec.scale if spec.scale is not None else [1.0] * n_ch, "float"),
        Param("ANALOG", "OFFSET", spec.offset if spec.offset is not None else [0] * n_ch, "int16"),
        Param("ANALOG", "GEN_SCALE", [spec.gen_scale], "float"),
        Param("ANALOG", "RATE", [spec.rate], "float"),
        Param("ANALOG", "UNITS", spec.units or ["V"] * n_ch, "char"),
    ]
    if spec.analog_format is not None:
        params.append(Param("ANALOG", "FORMAT", spec.analog_format, "char"))
    params += spec.extra
    psec = _parameter_section(params, proc)
    data_start = spec.data_start or 2 + len(psec) // BLOCK
    header = bytearray(BLOCK)
    header[0], header[1] = 2, 0x50
    last = spec.header_last if spec.header_last is not None else min(65535, spec.header_first + n_frames - 1)
    struct.pack_into(
        e + "hhhHHh",
        header,
        2,
        spec.header_points if spec.header_points is not None else spec.n_points,
        spec.header_analog_values if spec.header_analog_values is not None else n_ch * n_sub,
        spec.header_first,
        last,
        0,
        0,
    )
    header[12:16] = float_bytes([point_scale if spec.header_scale is None else spec.header_scale], proc)
    struct.pack_into(e + "HH", header, 16, data_start, n_sub)
    header[20:24] = float_bytes([spec.point_rate], proc)
    # Frames: points (4 values each), then n_sub subframes x n_ch channels.
    if is_float:
        pts: np.ndarray = np.zeros((n_frames, spec.n_points, 4), dtype=np.float32)
        pts[:, :, :3] = 1.5
        an: np.ndarray = data.astype(np.float32).reshape(n_ch, n_frames, n_sub).transpose(1, 2, 0).reshape(n_frames, -1)
        frames = np.concatenate([pts.reshape(n_frames, -1), an], axis=1)
        body = float_bytes(frames, proc)
    else:
        code = "u2" if (spec.analog_format or "").upper() == "UNSIGNED" else "i2"
        pts = np.zeros((n_frames, spec.n_points, 4), dtype=np.int64)
        pts[:, :, :3] = 15
        an = data.astype(np.int64).reshape(n_ch, n_frames, n_sub).transpose(1, 2, 0).reshape(n_frames, -1)
        frames = np.concatenate([pts.reshape(n_frames, -1).astype(an.dtype), an], axis=1)
        if code == "u2":
            body = (frames & 0xFFFF).astype(e + "u2").tobytes()
        else:
            body = int_bytes(frames, proc)
    out = (bytes(header) + psec).ljust((data_start - 1) * BLOCK, b"\x00")[: (data_start - 1) * BLOCK] + body
    if spec.pad_to_block and len(out) % BLOCK:
        out += b"\x00" * (BLOCK - len(out) % BLOCK)
    return out


@dataclass
class Where:
    data_start: int  # byte offset of the data section
    frame_bytes: int
    n_frames: int

    @property
    def data_end(self) -> int:
        return self.data_start + self.frame_bytes * self.n_frames


def layout_of(spec: C3DSpec, blob: bytes) -> Where:
    e = ">" if spec.processor == MIPS else "<"
    data_start = (struct.unpack_from(e + "H", blob, 16)[0] - 1) * BLOCK
    n_ch, n = np.asarray(spec.analogs).shape
    n_sub = int(spec.rate / spec.point_rate)
    vb = 4 if spec.storage == "float" else 2
    return Where(data_start, vb * (4 * spec.n_points + n_sub * n_ch), n // n_sub)


# --------------------------------------------------------------------------- the writer itself


def test_writer_output_is_what_ezc3d_reads():
    """Intel and DEC files of this writer read back through ezc3d as written (MIPS: ezc3d
    1.7 refuses the processor, see test_c3d_formats)."""
    import os
    import tempfile

    import ezc3d

    rng = np.random.default_rng(0)
    for proc in (INTEL, DEC):
        for storage in ("float", "int"):
            a = rng.normal(0, 1e-3, (2, 990)) if storage == "float" else rng.integers(-999, 999, (2, 990))
            blob = build_c3d(C3DSpec(a, storage=storage, processor=proc, n_points=1))
            with tempfile.NamedTemporaryFile(suffix=".c3d", delete=False) as fh:
                fh.write(blob)
            try:
                c = ezc3d.c3d(fh.name)
            finally:
                os.unlink(fh.name)
            expected = a.astype(np.float32).astype(np.float64) if storage == "float" else a.astype(np.float64)
            assert np.array_equal(c["data"]["analogs"][0], expected), (proc, storage)
            assert c["parameters"]["ANALOG"]["RATE"]["value"][0] == 990.0
            assert c["parameters"]["ANALOG"]["LABELS"]["value"] == ["CH1 Raw", "CH2 Raw"]
