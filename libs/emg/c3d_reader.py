"""C3D reading: a vectorised analog reader plus GHOSTLY metadata extraction.

Why not just ezc3d: ezc3d builds one C++ object per sample (~50 ms for a 2.8 MB file, and
~34x the file size in memory for an integer file: every value of every channel as a float64
object) while the analog block of a C3D is a plain strided array of float32 or int16 values
(~1.5 ms with numpy). The ezc3d Python API (1.7) has no "parameters only" option, so the
header and the parameter section (a few kB) are parsed here; tests cross-check both the
parameters and the analog values (bit for bit) against ezc3d.

Storage formats read here, per the C3D specification (c3d.org, "The C3D File Format"):

* processor 84 Intel (little-endian IEEE), 85 DEC (VAX F-float, little-endian integers),
  86 MIPS/SGI (big-endian IEEE and integers) — for the header, the parameters and the data;
* float data (header scale factor < 0): float32 values; integer data: 16-bit words, signed
  unless ANALOG:FORMAT is 'UNSIGNED' (then ANALOG:OFFSET is read as unsigned too).
  A point takes 4 values (X, Y, Z, residual/cameras) before the analog block of each frame.
* analog value = (stored - |ANALOG:OFFSET|) x ANALOG:SCALE x ANALOG:GEN_SCALE, computed as
  ezc3d does so float files stay bit-identical: the subtraction on the float32 value (exact
  for 16-bit integers), the two multiplications in float64, in that order. ezc3d reads
  'UNSIGNED' integers as signed; this reader follows the specification.
* VAX F-float is converted exactly: its 16-bit words swapped give IEEE-like bits of 4x the
  value (bias 129 and a hidden bit of 0.1f), so the exponent minus 2 is the IEEE float; the
  few values near the bottom of the range become subnormals (rounded), exponent 0 is zero
  (or a "reserved operand", read as NaN and refused as such).

ezc3d is kept only for files with ROTATION data (never written by GHOSTLY);
``estimate_analysis_bytes`` accounts for its much larger memory use.

Memory is bounded by design: rows are converted on demand, one channel at a time, into a
float64 buffer sized for one channel (``Recording.channel``/``row``); the analysis needs two
of GHOSTLY's four channels as float64 and the 'activated' pair only as a > 0 mask. Files up
to ``_WHOLE_READ_MAX_BYTES`` (and bytes given by the caller) are held in memory once; larger
files are never read whole: the data section is read from the file in blocks of
``_BLOCK_BYTES`` per channel conversion (a few passes over the page cache), so a 256 MB file
costs its per-channel buffers, not its size. ``estimate_analysis_bytes`` computes the working
memory of an analysis from the header and parameters alone, so a caller can refuse a file
(``MemoryBudgetExceeded``) before reading it.

Truncated or inconsistent files are refused (C3DFormatError) for every processor and storage:
a data section shorter than the declared frames, a header pointing past the end of the file,
a header and parameters that disagree on the frame layout or the frame count.

Long recordings: POINT:FRAMES is a signed 16-bit word and the header's last_frame an unsigned
one, so files over 32,767 frames store a wrapped count and files over 65,535 frames a
saturated one (ezc3d writes -1 and 65,535, and reads such files back truncated to 65,535
frames without a warning). The fast reader sizes them from the data section, constrained by
the 16-bit counts (see ``_long_frame_count``), and raises C3DFormatError rather than
truncating when the length cannot be determined. Limitation: a file whose counts are all
saturated and which was cut exactly at a frame boundary reads as a shorter recording.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from .errors import C3DContentError, C3DFormatError, MemoryBudgetExceeded, SettingsError

_BLOCK = 512
_PROCESSOR_INTEL, _PROCESSOR_DEC, _PROCESSOR_MIPS = 84, 85, 86
_PROCESSOR_NAMES = {_PROCESSOR_INTEL: "Intel", _PROCESSOR_DEC: "DEC", _PROCESSOR_MIPS: "MIPS"}
# Values GHOSTLY writes when a field is unknown; they are reported as missing, not as data.
_PLACEHOLDERS = {"", "---", "N/A", "NA", "NONE", "NULL"}
_GHOSTLY_NAME = re.compile(r"(\d{4})(\d{2})(\d{2})_(\d{2})-(\d{2})-(\d{2})-(\d{1,6})")
_RAW_SUFFIX = " raw"
_ACTIVATED_SUFFIX = " activated"

# Files up to this size are read into memory once (fastest for the usual few-MB sessions);
# larger ones are read in blocks of _BLOCK_BYTES from the file, per channel.
_WHOLE_READ_MAX_BYTES = 32 * 1024 * 1024
_BLOCK_BYTES = 4 * 1024 * 1024

Source = str | os.PathLike[str] | bytes | bytearray | memoryview
# The parameter section: GROUP -> PARAM -> value (numbers as arrays, strings as lists).
Params = dict[str, dict[str, Any]]
Header = dict[str, Any]


@dataclass
class GameMetadata:
    """Game/session metadata from INFO, SUBJECTS and the file name (None = not in the file)."""

    game_name: str | None = None
    game_level: int | None = None
    game_level_name: str | None = None
    duration_s: float | None = None
    therapist_id: str | None = None
    group_id: str | None = None
    player_name: str | None = None
    game_score: float | None = None
    session_datetime: datetime | None = None


class Recording:
    """Analog content of one C3D file; ``analogs`` has shape (n_channels, n_samples).

    The reader converts the stored analog block lazily: ``channel(i)`` converts one row
    (what the analysis needs), ``analogs`` converts and caches the whole block on first access
    (bit-identical either way; it costs 8 bytes per value of every channel, so code that may
    meet large files uses ``row``/``channel``). ``analogs`` may also be passed as a plain array.
    """

    def __init__(
        self,
        rate: float,
        labels: list[str],
        analogs: NDArray[np.float64] | _LazyAnalogs,
        units: list[str],
        metadata: GameMetadata,
        warnings: list[str] | None = None,
        reader: Literal["numpy", "ezc3d"] = "numpy",
        file_name: str | None = None,
    ):
        self.rate = rate
        self.labels = labels
        self.units = units
        self.metadata = metadata
        self.warnings = warnings if warnings is not None else []
        self.reader = reader
        self.file_name = file_name
        self._lazy: _LazyAnalogs | None = None
        self._analogs: NDArray[np.float64] | None = None
        self._rows: dict[int, NDArray[np.float64]] = {}
        if isinstance(analogs, _LazyAnalogs):
            self._lazy = analogs
        else:
            self._analogs = analogs

    @property
    def analogs(self) -> NDArray[np.float64]:
        if self._analogs is None:
            lazy = self._lazy
            assert lazy is not None
            full = np.empty(lazy.shape, dtype=np.float64)
            for i in range(lazy.shape[0]):
                row = self._rows.get(i)
                if row is not None:
                    full[i] = row
                else:
                    lazy.row(i, out=full[i])
            self._analogs, self._lazy, self._rows = full, None, {}
        return self._analogs

    @analogs.setter
    def analogs(self, value: NDArray[np.float64]) -> None:
        self._analogs, self._lazy, self._rows = value, None, {}

    @property
    def shape(self) -> tuple[int, int]:
        if self._analogs is not None:
            return (int(self._analogs.shape[0]), int(self._analogs.shape[1]))
        assert self._lazy is not None
        return self._lazy.shape

    def channel(self, index: int) -> NDArray[np.float64]:
        """Row ``index`` of ``analogs`` (float64), converting only that row when still lazy."""
        if self._analogs is not None:
            view: NDArray[np.float64] = self._analogs[index]
            return view
        row = self._rows.get(index)
        if row is None:
            assert self._lazy is not None
            row = self._rows.setdefault(index, self._lazy.row(index))
        return row

    def row(self, index: int, out: NDArray[np.float64]) -> NDArray[np.float64]:
        """Row ``index`` as float64 for a short-lived computation: a view when ``analogs`` is
        materialised or the row cached, else converted into ``out`` (not cached)."""
        if self._analogs is not None:
            view: NDArray[np.float64] = self._analogs[index]
            return view
        row = self._rows.get(index)
        if row is not None:
            return row
        assert self._lazy is not None
        return self._lazy.row(index, out=out)

    def channel_positive(self, index: int) -> NDArray[np.bool_]:
        """``channel(index) > 0`` without converting the whole row to float64 when still lazy."""
        lazy = self._lazy
        if self._analogs is None and lazy is not None and index not in self._rows:
            return lazy.positive(index)
        return self.channel(index) > 0

    @property
    def n_samples(self) -> int:
        return self.shape[1]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate

    def __repr__(self) -> str:
        return (
            f"Recording(rate={self.rate!r}, labels={self.labels!r}, shape={self.shape}, units={self.units!r}, "
            f"reader={self.reader!r}, file_name={self.file_name!r})"
        )


@dataclass
class MuscleChannel:
    """One muscle: its raw EMG row and, if present, the device's 'activated' row."""

    name: str
    side: Literal["left", "right"] | None
    raw_index: int
    raw_label: str
    activated_index: int | None = None


# --------------------------------------------------------------------------- numbers


def _int8(b: int) -> int:
    return b - 256 if b > 127 else b


def dec_to_float32(raw: NDArray[Any]) -> NDArray[np.float32]:
    """VAX F-floats, given as the little-endian uint32 of their 4 stored bytes, as float32.

    The two 16-bit words swapped are IEEE-like bits of 4x the value (exponent bias 129, hidden
    bit 0.1f): for an exponent >= 3 the IEEE float is those bits with the exponent minus 2
    (exact); exponents 1 and 2 give IEEE subnormals (value / 4, rounded); exponent 0 is zero
    with the sign clear and a VAX "reserved operand" with it set (returned as NaN).
    """
    u = np.asarray(raw, dtype=np.uint32)
    bits = (u << np.uint32(16)) | (u >> np.uint32(16))
    exp = (bits >> np.uint32(23)) & np.uint32(0xFF)
    out = (bits - np.uint32(2 << 23)).view(np.float32)
    small = exp < 3
    if small.any():
        b = bits[small]
        v = b.view(np.float32) * np.float32(0.25)
        e0 = exp[small] == 0
        v[e0] = np.where((b[e0] >> np.uint32(31)) != 0, np.float32(np.nan), np.float32(0.0))
        out[small] = v
    return out


def _float_reader(processor: int) -> Callable[[bytes | memoryview, int], float]:
    """struct-style reader of one float32 at an offset, for the header and parameters."""
    if processor == _PROCESSOR_DEC:

        def read(buf: bytes | memoryview, off: int) -> float:
            return float(dec_to_float32(np.frombuffer(buf, "<u4", 1, off))[0])

        return read
    code = ">f" if processor == _PROCESSOR_MIPS else "<f"
    return lambda buf, off: struct.unpack_from(code, buf, off)[0]


def _float_array(buf: bytes | memoryview, processor: int, count: int, offset: int) -> NDArray[np.float64]:
    if processor == _PROCESSOR_DEC:
        return dec_to_float32(np.frombuffer(buf, "<u4", count, offset)).astype(np.float64)
    return np.frombuffer(buf, (">" if processor == _PROCESSOR_MIPS else "<") + "f4", count, offset).astype(np.float64)


# --------------------------------------------------------------------------- parsing


def parse_parameters(
    buf: bytes | memoryview, size: int | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Parse the 512-byte header and the parameter section of a C3D file.

    ``buf`` holds the file or at least its header and parameter section; ``size`` is the
    size of the whole file when ``buf`` is only its beginning. Returns ``(header, params)``
    where params maps GROUP -> PARAM -> value. Values follow ezc3d's conventions: numbers as
    flat float64/int arrays, strings as a list of strings with trailing spaces removed.
    Raises C3DFormatError on anything inconsistent.
    """
    n = len(buf)
    size = n if size is None else size
    if n < _BLOCK:
        raise C3DFormatError(f"Not a C3D file: only {size} bytes, a C3D header alone is 512 bytes.")
    param_block, key = buf[0], buf[1]
    if key != 0x50 or param_block < 2:
        raise C3DFormatError("Not a C3D file: the header signature (byte 2 = 0x50) is missing.")
    pstart = (param_block - 1) * _BLOCK
    if pstart + 4 > n:
        raise C3DFormatError(
            f"Truncated C3D file: the header places the parameter section at byte {pstart}, "
            f"past the end of the file ({size} bytes)."
        )
    processor = buf[pstart + 3]
    if processor not in (_PROCESSOR_INTEL, _PROCESSOR_DEC, _PROCESSOR_MIPS):
        raise C3DFormatError(
            f"Unsupported C3D file: unknown processor type {processor} (84 Intel, 85 DEC and 86 MIPS are defined)."
        )
    endian = ">" if processor == _PROCESSOR_MIPS else "<"
    rfloat = _float_reader(processor)
    words = struct.unpack_from(endian + "hhhHHh", buf, 2)
    header = {
        "n_points": words[0],
        "n_analog_per_frame": words[1],
        "first_frame": words[2],
        "last_frame": words[3],
        "scale_factor": rfloat(buf, 12),
        "data_start": struct.unpack_from(endian + "H", buf, 16)[0],
        "analog_per_frame": struct.unpack_from(endian + "H", buf, 18)[0],
        "frame_rate": rfloat(buf, 20),
        "processor": processor,
        "param_start": pstart,
        "param_blocks": buf[pstart + 2],
    }

    groups: dict[int, str] = {}
    pending: list[tuple[int, str, Any]] = []
    pos = pstart + 4
    end = min(n, pstart + buf[pstart + 2] * _BLOCK) if buf[pstart + 2] else n
    try:
        while pos + 2 <= end:
            name_len = abs(_int8(buf[pos]))
            gid = _int8(buf[pos + 1])
            if name_len == 0:
                break
            name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode("latin-1").upper()
            p = pos + 2 + name_len
            (offset,) = struct.unpack_from(endian + "H", buf, p)
            nxt = p + offset if offset else 0
            p += 2
            if gid < 0:
                groups[-gid] = name
            else:
                dtype = _int8(buf[p])
                ndim = buf[p + 1]
                dims = list(buf[p + 2 : p + 2 + ndim])
                p += 2 + ndim
                count = int(np.prod(dims)) if dims else 1
                if dtype == -1:
                    if p + count > n:
                        raise ValueError("parameter data past the end of the section")
                    raw = bytes(buf[p : p + count]).decode("latin-1")
                    if not dims:
                        value: Any = []
                    elif len(dims) == 1:
                        value = [raw.rstrip(" ")] if dims[0] else []
                    else:
                        w, n_str = dims[0], int(np.prod(dims[1:]))
                        value = [raw[i * w : (i + 1) * w].rstrip(" ") for i in range(n_str)]
                elif dtype == 4:
                    value = _float_array(buf, processor, count, p)
                elif dtype in (1, 2):
                    code = {1: "i1", 2: "i2"}[dtype]
                    value = np.frombuffer(buf, dtype=endian + code, count=count, offset=p).astype(np.int64)
                else:
                    raise C3DFormatError(f"Corrupt C3D parameter section: parameter {name} has unknown type {dtype}.")
                pending.append((gid, name, value))
            if not nxt:
                break
            pos = nxt
    except (struct.error, ValueError, IndexError) as exc:
        raise C3DFormatError("Truncated or corrupt C3D parameter section.") from exc
    params: dict[str, dict[str, Any]] = {g: {} for g in groups.values()}
    for gid, name, value in pending:
        params.setdefault(groups.get(gid, f"GROUP{gid}"), {})[name] = value
    return header, params


def _first(params: Params, group: str, name: str, default: Any = None) -> Any:
    value = params.get(group, {}).get(name)
    if value is None or len(value) == 0:
        return default
    return value[0]


def _concat(params: Params, group: str, name: str) -> list[Any]:
    """LABELS, LABELS2, ... concatenated, as ezc3d does for > 255 channels."""
    out = list(params.get(group, {}).get(name, []))
    i = 2
    while f"{name}{i}" in params.get(group, {}):
        out += list(params[group][f"{name}{i}"])
        i += 1
    return out


# --------------------------------------------------------------------------- byte sources


class _FileSource:
    """An open C3D file read by offset (pread): the data section is never held whole."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self.size = os.fstat(self.fd).st_size
        except OSError:
            os.close(self.fd)
            raise
        self._closer = weakref.finalize(self, os.close, self.fd)

    def read_into(self, view: memoryview, offset: int) -> None:
        got = 0
        while got < len(view):
            n = os.preadv(self.fd, [view[got:]], offset + got)
            if n <= 0:
                raise C3DFormatError(
                    f"Truncated C3D file: it ended at byte {offset + got} while being read "
                    "(the file changed after its header was read)."
                )
            got += n

    def read(self, offset: int, count: int) -> memoryview:
        count = max(0, min(count, self.size - offset))
        buf = bytearray(count)
        view = memoryview(buf)
        if count:
            self.read_into(view, offset)
        return view

    def close(self) -> None:
        self._closer()


def _read_head(src: _FileSource) -> memoryview:
    """The header and the parameter section (up to the data section): a few kB."""
    first = src.read(0, _BLOCK)
    if len(first) < _BLOCK or first[1] != 0x50 or first[0] < 2:
        return src.read(0, max(len(first), src.size))[: _BLOCK * 2] if len(first) < _BLOCK else first
    pstart = (first[0] - 1) * _BLOCK
    p4 = src.read(pstart, 4)
    end = pstart + _BLOCK
    if len(p4) == 4:
        endian = ">" if p4[3] == _PROCESSOR_MIPS else "<"
        data_start = struct.unpack_from(endian + "H", first, 16)[0]
        end = max(pstart + max(1, p4[2]) * _BLOCK, (data_start - 1) * _BLOCK)
    return src.read(0, min(end, src.size))


# --------------------------------------------------------------------------- analog block


_U16_SATURATED = 0xFFFF  # a 16-bit frame count at its maximum: the true count may be larger
_MAX_PADDING = _BLOCK  # writers pad the data section to a 512-byte block (ezc3d: 1..512 bytes)


def _u16_count(value: int) -> int:
    """A frame count stored in a signed 16-bit word, read back as unsigned (wraps at 65536)."""
    return int(value) & 0xFFFF


def _trial_frames(params: Params) -> int | None:
    """TRIAL:ACTUAL_END_FIELD - ACTUAL_START_FIELD + 1 (Vicon's 32-bit frame numbers), if present."""
    trial = params.get("TRIAL", {})
    start, end = trial.get("ACTUAL_START_FIELD"), trial.get("ACTUAL_END_FIELD")
    if start is None or end is None or len(start) < 2 or len(end) < 2:
        return None
    s = _u16_count(start[0]) + (_u16_count(start[1]) << 16)
    e = _u16_count(end[0]) + (_u16_count(end[1]) << 16)
    return e - s + 1 if e >= s >= 0 else None


ReadRange = Any  # callable (offset, count) -> buffer of the file's bytes there


def _long_frame_count(
    header: Header,
    params: Params,
    frames_param: int | None,
    avail: int,
    frame_bytes: int,
    read_range: ReadRange,
    start: int,
    warnings: list[str],
) -> int:
    """Frame count of a file whose 16-bit counts overflowed (> 32,767 frames) or saturated.

    Candidates are the counts the data section can hold once the block padding (0..512 bytes)
    is allowed for; the 16-bit counts (header last_frame - first_frame + 1, POINT:FRAMES read
    as unsigned) then select among them modulo 65,536, a saturated count (65,535) meaning
    "at least 65,535". TRIAL:ACTUAL_*_FIELD, when present, is exact. Raises C3DFormatError
    rather than guessing when the length cannot be determined.
    """
    hi = avail // frame_bytes
    lo = max(0, -(-(avail - _MAX_PADDING) // frame_bytes))
    candidates = list(range(lo, hi + 1))
    sources: list[tuple[str, int]] = []
    if header["last_frame"] >= header["first_frame"] >= 1:
        sources.append(("header last_frame - first_frame + 1", header["last_frame"] - header["first_frame"] + 1))
    if frames_param is not None:
        sources.append(("POINT:FRAMES (as unsigned 16-bit)", _u16_count(frames_param)))
    trial = _trial_frames(params)

    def fits(n: int, c: int) -> bool:
        if c >= _U16_SATURATED:
            return n >= _U16_SATURATED
        return n >= c and (n - c) % 65536 == 0

    if trial is not None:
        chosen = [n for n in candidates if n == trial]
        if not chosen:
            raise C3DFormatError(
                f"Inconsistent C3D file: TRIAL:ACTUAL_*_FIELD declares {trial} frames but the data section "
                f"holds {hi} frames of {frame_bytes} bytes."
            )
        return trial
    consistent = [n for n in candidates if all(fits(n, c) for _, c in sources)]
    if not consistent:
        floor = max((c for _, c in sources), default=0)
        if hi < floor:
            raise C3DFormatError(
                f"Truncated C3D file: the header declares at least {floor} frames but only {hi} are present "
                "in the data section."
            )
        declared = ", ".join(f"{name} = {c}" for name, c in sources) or "no frame count"
        if len(candidates) != 1:
            candidates = _drop_zero_padding(candidates, read_range, start, frame_bytes)
        if len(candidates) != 1:
            raise C3DFormatError(
                f"Cannot determine the length of this C3D file: {declared} disagree with the data section "
                f"({avail} bytes, {frame_bytes} bytes per frame)."
            )
        warnings.append(
            f"C3D frame counts disagree ({declared}); using the {candidates[0]} frames present in the data section."
        )
        return candidates[0]
    if len(consistent) > 1:
        consistent = _drop_zero_padding(consistent, read_range, start, frame_bytes)
        if len(consistent) > 1:
            raise C3DFormatError(
                f"Cannot determine the length of this C3D file: the data section could hold any of "
                f"{consistent} frames and the 16-bit frame counts cannot tell them apart."
            )
        warnings.append(
            f"C3D frame count above the 16-bit range: {consistent[0]} frames taken from the data "
            "section; trailing zero bytes were treated as block padding."
        )
    return consistent[0]


def _drop_zero_padding(candidates: list[int], read_range: ReadRange, start: int, frame_bytes: int) -> list[int]:
    """Keep the smallest candidate that still covers every non-zero byte of the data section:
    frames made only of zero bytes after it cannot be told from padding (and hold no signal)."""
    end = start + max(candidates) * frame_bytes
    first = start + min(candidates) * frame_bytes
    tail = np.frombuffer(read_range(first, end - first), dtype=np.uint8)
    nz = np.flatnonzero(tail)
    last_data = first + int(nz[-1]) + 1 if nz.size else first  # exclusive end of non-zero bytes
    covering = [n for n in candidates if start + n * frame_bytes >= last_data]
    return covering[:1] if covering else candidates


@dataclass(frozen=True)
class _Layout:
    """Geometry and storage of the frames (points, then analog subframes x channels)."""

    processor: int
    storage: Literal["float", "int"]
    unsigned: bool  # integer data declared ANALOG:FORMAT 'UNSIGNED'
    n_points: int
    n_analogs: int
    n_sub: int
    n_frames: int
    start: int  # byte offset of the data section

    @property
    def value_bytes(self) -> int:
        return 4 if self.storage == "float" else 2

    @property
    def frame_len(self) -> int:
        """Values per frame."""
        return 4 * self.n_points + self.n_sub * self.n_analogs

    @property
    def frame_bytes(self) -> int:
        return self.value_bytes * self.frame_len

    @property
    def n_samples(self) -> int:
        return self.n_frames * self.n_sub

    @property
    def dtype(self) -> np.dtype[Any]:
        e = ">" if self.processor == _PROCESSOR_MIPS else "<"
        if self.storage == "int":
            return np.dtype(e + ("u2" if self.unsigned else "i2"))
        return np.dtype("<u4" if self.processor == _PROCESSOR_DEC else e + "f4")

    def describe(self) -> str:
        kind = "float" if self.storage == "float" else ("unsigned 16-bit" if self.unsigned else "16-bit integer")
        return f"{_PROCESSOR_NAMES[self.processor]} {kind}"


def _analog_format_unsigned(params: Params) -> bool:
    fmt = _first(params, "ANALOG", "FORMAT")
    return isinstance(fmt, str) and fmt.strip().upper() == "UNSIGNED"


def _layout(header: Header, params: Params, size: int, read_range: ReadRange, warnings: list[str]) -> _Layout | None:
    """Geometry of the analog block, or None when only ezc3d can read the file (rotations).

    Raises C3DFormatError for a truncated or inconsistent file.
    """
    processor = header["processor"]
    if int(_first(params, "ROTATION", "USED", 0)):
        return None  # rotation blocks follow the data: rare, leave them to ezc3d
    storage: Literal["float", "int"] = "float" if header["scale_factor"] < 0 else "int"
    point_scale = _first(params, "POINT", "SCALE")
    if point_scale is not None and np.isfinite(point_scale) and (point_scale < 0) != (storage == "float"):
        # The specification's switch is POINT:SCALE, the header keeps a copy; ezc3d reads the
        # points by one and the analogs by the other, i.e. garbage.
        raise C3DFormatError(
            f"Inconsistent C3D file: the header declares {storage} data (scale factor {header['scale_factor']:g}) "
            f"but POINT:SCALE = {float(point_scale):g} declares {'float' if point_scale < 0 else 'integer'} data."
        )
    unsigned = storage == "int" and _analog_format_unsigned(params)
    n_points = int(_first(params, "POINT", "USED", header["n_points"]))
    n_analogs = int(_first(params, "ANALOG", "USED", 0))
    point_rate = float(_first(params, "POINT", "RATE", header["frame_rate"]))
    analog_rate = float(_first(params, "ANALOG", "RATE", 0.0))
    if not (np.isfinite(point_rate) and np.isfinite(analog_rate) and point_rate >= 0 and analog_rate >= 0):
        raise C3DFormatError("Corrupt C3D parameter section: POINT:RATE / ANALOG:RATE are not valid rates.")
    # Same rule as ezc3d::c3d::updateHeader: subframes from the rates when a point rate exists.
    if int(point_rate) != 0 and analog_rate:
        n_sub = int(analog_rate / point_rate)
    else:
        n_sub = header["analog_per_frame"]
    if n_points < 0 or n_analogs < 0 or n_sub < 0:
        raise C3DFormatError("Corrupt C3D parameter section: negative point or analog counts.")
    # The header repeats the frame layout: a disagreement leaves the frames ambiguous.
    if header["n_points"] != n_points:
        raise C3DFormatError(
            f"Inconsistent C3D file: the header declares {header['n_points']} points per frame, POINT:USED {n_points}."
        )
    if n_analogs and n_sub and header["n_analog_per_frame"] not in (0, n_analogs * n_sub):
        raise C3DFormatError(
            f"Inconsistent C3D file: the header declares {header['n_analog_per_frame']} analog values per frame, "
            f"the parameters {n_analogs} channels x {n_sub} samples per frame (ANALOG:RATE {analog_rate:g} Hz, "
            f"POINT:RATE {point_rate:g} Hz)."
        )
    frames_param = params.get("POINT", {}).get("FRAMES")
    frames_value = int(frames_param[0]) if frames_param is not None and len(frames_param) else None
    n_frames = frames_value or 0
    start = (header["data_start"] - 1) * _BLOCK
    lay = dict(
        processor=processor,
        storage=storage,
        unsigned=unsigned,
        n_points=n_points,
        n_analogs=n_analogs,
        n_sub=n_sub,
        start=start,
    )
    frame_bytes = (4 if storage == "float" else 2) * (4 * n_points + n_sub * n_analogs)
    if n_analogs == 0 or n_sub == 0 or frame_bytes == 0:
        return _Layout(n_frames=max(n_frames, 0), **lay)
    if header["data_start"] < 2 or start < header["param_start"] + _BLOCK:
        raise C3DFormatError(
            f"Inconsistent C3D file: the header places the data section at block "
            f"{header['data_start']}, inside the header or the parameter section."
        )
    if start >= size:
        raise C3DFormatError(
            f"Truncated C3D file: the header places the data section at byte {start}, past the "
            f"end of the file ({size} bytes)."
        )
    avail = size - start
    header_frames = header["last_frame"] - header["first_frame"] + 1
    # POINT:FRAMES is a signed 16-bit word: > 32,767 frames wrap negative (ezc3d writes -1 when
    # even 65,535 is exceeded, and saturates the header's last_frame at 65,535). Those files,
    # and files whose declared count is a saturation value while more data follows, are sized
    # from the data section; ezc3d would silently stop at 65,535 frames.
    long_file = (
        n_frames < 0
        or (n_frames == 0 and header["last_frame"] >= _U16_SATURATED)
        or (n_frames in (32767, _U16_SATURATED) and avail - n_frames * frame_bytes > _MAX_PADDING)
    )
    if long_file:
        n_frames = _long_frame_count(header, params, frames_value, avail, frame_bytes, read_range, start, warnings)
    elif n_frames == 0:
        n_frames = header_frames
    elif (
        header["first_frame"] >= 1
        and header_frames > 0
        and header["last_frame"] < _U16_SATURATED
        and header_frames != n_frames
    ):
        raise C3DFormatError(
            f"Inconsistent C3D file: POINT:FRAMES declares {n_frames} frames, the header "
            f"{header_frames} (frames {header['first_frame']} to {header['last_frame']})."
        )
    if n_frames <= 0:
        return _Layout(n_frames=max(n_frames, 0), **lay)
    if start + frame_bytes * n_frames > size:
        got = max(0, avail // frame_bytes)
        raise C3DFormatError(
            f"Truncated C3D file: {n_frames} frames declared but only {got} are present in the data section."
        )
    extra = avail - n_frames * frame_bytes
    if not long_file and extra >= frame_bytes and extra > _MAX_PADDING:
        warnings.append(
            f"The C3D data section holds {extra // frame_bytes} frames more than the {n_frames} "
            "declared; only the declared frames are read."
        )
    return _Layout(n_frames=n_frames, **lay)


class _LazyAnalogs:
    """The stored analog block, converted to float64 row by row on demand.

    Bit-identical to ezc3d, which computes ``(float(stored) - int(|offset|)) * double(scale) *
    double(gen_scale)``: the subtraction in float32, the multiplications in float64, in order
    (for 16-bit integers the float32 subtraction is exact, so it is done in float64).

    ``src`` is the file's bytes (a view, converted with no copy) or a ``_FileSource``, read in
    blocks of frames per conversion (one block buffer of ~_BLOCK_BYTES per call: rows of
    different channels may be converted from several threads at once).
    """

    def __init__(self, src: bytes | memoryview | _FileSource, params: Params, lay: _Layout):
        na, ns, nf = lay.n_analogs, lay.n_sub, lay.n_frames
        self.lay = lay
        self.src = src
        self.dtype = lay.dtype
        self.shape = (na, nf * ns)
        self.frames_analog: NDArray[Any] | None = None
        if not isinstance(src, _FileSource):
            frames = np.frombuffer(src, dtype=self.dtype, count=nf * lay.frame_len, offset=lay.start)
            self.frames_analog = frames.reshape(nf, lay.frame_len)[:, 4 * lay.n_points :]
        self._block_frames = max(1, _BLOCK_BYTES // max(1, lay.frame_bytes))
        unsigned = lay.unsigned
        scales = np.asarray(_concat(params, "ANALOG", "SCALE"), dtype=np.float64)
        offsets = np.asarray(_concat(params, "ANALOG", "OFFSET"), dtype=np.int64)
        if scales.size < na or offsets.size < na:
            raise C3DFormatError("Inconsistent C3D file: ANALOG:SCALE/OFFSET have fewer entries than ANALOG:USED.")
        self.scales = scales[:na]
        # ezc3d uses |offset|; unsigned data has unsigned offsets (a 16-bit word read as such).
        self.offsets = (offsets[:na] & 0xFFFF) if unsigned else np.abs(offsets[:na])
        self.gen = float(_first(params, "ANALOG", "GEN_SCALE", 1.0))
        self.unscaled = bool(np.all(self.scales == 1.0) and self.gen == 1.0)

    # -- blocks ---------------------------------------------------------------------------
    def _blocks(self, whole: bool = False) -> Iterator[tuple[int, int, NDArray[Any]]]:
        """(first frame, end frame, analog values (frames, subframes, channels) as stored)."""
        lay = self.lay
        na, ns, nf = lay.n_analogs, lay.n_sub, lay.n_frames
        if self.frames_analog is not None:
            step = nf if whole else self._block_frames
            for f0 in range(0, nf, step):
                f1 = min(nf, f0 + step)
                yield f0, f1, self.frames_analog[f0:f1].reshape(f1 - f0, ns, na)
            return
        src = self.src
        assert isinstance(src, _FileSource)
        step = self._block_frames
        buf = bytearray(min(nf, step) * lay.frame_bytes)
        view = memoryview(buf)
        for f0 in range(0, nf, step):
            f1 = min(nf, f0 + step)
            nbytes = (f1 - f0) * lay.frame_bytes
            src.read_into(view[:nbytes], lay.start + f0 * lay.frame_bytes)
            frames = np.frombuffer(buf, dtype=self.dtype, count=(f1 - f0) * lay.frame_len).reshape(f1 - f0, -1)
            yield f0, f1, frames[:, 4 * lay.n_points :].reshape(f1 - f0, ns, na)

    def _stored(self, values: NDArray[Any]) -> NDArray[Any]:
        """Stored values as numbers numpy computes with (DEC floats decoded to float32)."""
        if self.lay.processor == _PROCESSOR_DEC and self.lay.storage == "float":
            return dec_to_float32(values)
        return values

    def _convert(self, src: NDArray[Any], dst: NDArray[np.float64], i: int | np.integer[Any]) -> None:
        """``dst[...] = stored - |offset|`` (float64 destination, before the scales)."""
        src = self._stored(src)
        off = self.offsets[i]
        if off == 0:
            dst[...] = src  # x - 0 is exact: skip the pass
        elif self.lay.storage == "float":
            np.subtract(src, np.float32(off), out=dst, dtype=np.float32, casting="unsafe")
        else:
            np.subtract(src, float(off), out=dst, dtype=np.float64, casting="unsafe")

    # -- rows -----------------------------------------------------------------------------
    def row(self, i: int, out: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        n = self.shape[1]
        ns = self.lay.n_sub
        if out is None:
            out = np.empty(n, dtype=np.float64)
        if not out.flags.c_contiguous or out.size != n or out.dtype != np.float64:
            raise ValueError("out must be a contiguous float64 row of n_samples values")
        whole = self.lay.processor != _PROCESSOR_DEC  # in memory: one strided pass, no temporary
        for f0, f1, blk in self._blocks(whole=whole):
            self._convert(blk[:, :, i], out[f0 * ns : f1 * ns].reshape(f1 - f0, ns), i)
        if not self.unscaled:
            out *= self.scales[i]
            out *= self.gen
        return out

    def positive(self, i: int) -> NDArray[np.bool_]:
        """``row(i) > 0`` as a bool array, without a float64 row (block by block)."""
        n, ns = self.shape[1], self.lay.n_sub
        out = np.empty(n, dtype=bool)
        if (
            self.frames_analog is not None
            and self.sign_preserving(i)
            and not (self.lay.processor == _PROCESSOR_DEC and self.lay.storage == "float")
        ):
            blk = self.frames_analog.reshape(self.lay.n_frames, ns, self.lay.n_analogs)[:, :, i]
            np.greater(blk, 0, out=out.reshape(blk.shape))
            return out
        tmp = np.empty(min(n, self._block_frames * ns), dtype=np.float64)
        for f0, f1, blk in self._blocks():
            t = tmp[: (f1 - f0) * ns]
            self._convert(blk[:, :, i], t.reshape(f1 - f0, ns), i)
            if not self.unscaled:
                t *= self.scales[i]
                t *= self.gen
            np.greater(t, 0, out=out[f0 * ns : f1 * ns])
        return out

    def conversion_is_benign(self) -> bool:
        """Finite stored values give finite float64 values: float32 minus a 16-bit offset
        cannot overflow in float32 (it rounds back to the largest float), and |scale x gen|
        below 1e250 keeps any float32 finite in float64."""
        s = np.abs(self.scales) * abs(self.gen)
        return bool(np.isfinite(s).all() and np.isfinite(self.gen) and s.max(initial=0.0) < 1e250)

    def sign_preserving(self, i: int) -> bool:
        """``row(i) > 0`` equals ``stored[i] > 0`` (no offset; scale and gen positive, no underflow)."""
        s, g = float(self.scales[i]), self.gen
        return self.offsets[i] == 0 and 1e-100 < s < 1e100 and 1e-100 < g < 1e100

    def nonfinite_rows(self) -> NDArray[np.intp]:
        """Indices of rows holding NaN/inf (after the conversion).

        Integer data is always finite once the conversion is benign. For float data a float64
        sum of float32 values cannot overflow, so it is finite iff every value is; summed
        block by block (the strided block would otherwise be copied whole).
        """
        benign = self.conversion_is_benign()
        if benign and self.lay.storage == "int":
            return np.zeros(0, dtype=np.int64)
        if benign:
            total = 0.0
            fa = self.frames_analog
            if fa is not None and self.lay.processor != _PROCESSOR_DEC:
                step = max(1, (1 << 16) // max(1, fa.shape[1]))  # small chunks: no strided copy
                for f0 in range(0, fa.shape[0], step):
                    total += float(fa[f0 : f0 + step].sum(dtype=np.float64))
            else:
                for _, _, blk in self._blocks():
                    total += float(self._stored(blk).sum(dtype=np.float64))
            if np.isfinite(total):
                return np.zeros(0, dtype=np.int64)
        bad = np.zeros(self.shape[0], dtype=bool)
        ns = self.lay.n_sub
        tmp = np.empty(min(self.shape[1], self._block_frames * ns), dtype=np.float64)
        for f0, f1, blk in self._blocks():
            for i in np.flatnonzero(~bad):
                t = tmp[: (f1 - f0) * ns]
                self._convert(blk[:, :, i], t.reshape(f1 - f0, ns), i)
                if not self.unscaled:
                    t *= self.scales[i]
                    t *= self.gen
                if not np.isfinite(t.sum()) and not np.isfinite(t).all():
                    bad[i] = True
        return np.flatnonzero(bad)


def _ezc3d_read(path: str) -> tuple[NDArray[np.float64], Params]:
    import ezc3d  # imported lazily: only fallback files pay its import cost

    try:
        c = ezc3d.c3d(path)
    except Exception as exc:  # ezc3d raises bare RuntimeError/IOError subclasses
        raise C3DFormatError(f"Unreadable C3D file: {exc}") from exc
    analogs = np.asarray(c["data"]["analogs"], dtype=np.float64)
    analogs = analogs[0] if analogs.ndim == 3 else analogs.reshape(0, 0)
    params = {
        g: {k: v["value"] for k, v in grp.items() if k != "__METADATA__"}
        for g, grp in c["parameters"].items()
        if g != "__METADATA__"
    }
    return analogs, params


# --------------------------------------------------------------------------- metadata


def _clean_str(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return None if s.upper() in _PLACEHOLDERS else s


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _session_datetime(params: Params, file_name: str | None, warnings: list[str]) -> datetime | None:
    time_vals = list(params.get("INFO", {}).get("TIME", []))
    from_info = None
    try:
        if len(time_vals) >= 5:
            y, mo, d, h, mi = (int(float(str(v).strip())) for v in time_vals[:5])
            from_info = datetime(y, mo, d, h, mi)
    except (TypeError, ValueError):
        warnings.append(f"INFO:TIME {time_vals!r} is not a valid [year, month, day, hour, minute].")
    m = _GHOSTLY_NAME.search(file_name or "")
    from_name = None
    if m:
        try:
            y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
            frac = m.group(7)
            from_name = datetime(y, mo, d, h, mi, s, int(frac.ljust(6, "0")[:6]))
        except ValueError:
            from_name = None
    if from_info and from_name:
        if from_name.replace(second=0, microsecond=0) == from_info:
            return from_name
        warnings.append("INFO:TIME and the file name disagree; using INFO:TIME without seconds.")
        return from_info
    if from_info:
        warnings.append(
            "Session seconds unknown (file name is not Ghostly_Emg_YYYYMMDD_HH-MM-SS-ffff.c3d); seconds set to 0."
        )
        return from_info
    if from_name:
        warnings.append("INFO:TIME missing; session time taken from the file name.")
        return from_name
    warnings.append("Session date/time not found (no INFO:TIME, no GHOSTLY file name).")
    return None


def _metadata(params: Params, file_name: str | None, warnings: list[str]) -> GameMetadata:
    info, subj = params.get("INFO", {}), params.get("SUBJECTS", {})
    level = _num(_first(params, "INFO", "GAME_LEVEL"))
    md = GameMetadata(
        game_name=_clean_str(_first(params, "INFO", "GAME_NAME")),
        game_level=int(level) if level is not None else None,
        game_level_name=_clean_str(_first(params, "INFO", "GAME_LEVEL_NAME")),
        duration_s=_num(_first(params, "INFO", "DURATION")),
        therapist_id=_clean_str(_first(params, "INFO", "THERAPIST_ID")),
        group_id=_clean_str(_first(params, "INFO", "GROUP_ID")),
        player_name=_clean_str(_first(params, "SUBJECTS", "PLAYER_NAME")),
        game_score=_num(_first(params, "SUBJECTS", "GAME_SCORE")),
        session_datetime=_session_datetime(params, file_name, warnings),
    )
    if not info:
        warnings.append("No INFO group: game metadata unavailable (not a GHOSTLY file?).")
    if not subj:
        warnings.append("No SUBJECTS group: player name and game score unavailable.")
    return md


# --------------------------------------------------------------------------- public API


_READ_POOL_MAX_BYTES = 64 * 1024 * 1024  # larger files get a buffer of their own
_read_pool: list[bytearray] = []
_read_pool_lock = threading.Lock()


def _read_file(path: str) -> memoryview:
    """The file's bytes in a pooled buffer, handed back to the pool when its Recording dies.

    A fresh multi-MB bytes object per read costs ~1.5 ms of page faults on the target VMs
    (glibc returns the heap top to the kernel after each analysis); a recycled buffer none.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        buf = None
        if size <= _READ_POOL_MAX_BYTES:
            with _read_pool_lock:
                for i, cand in enumerate(_read_pool):
                    if len(cand) >= size:
                        buf = _read_pool.pop(i)
                        break
        if buf is None:
            buf = bytearray(max(size, 1))
        view = memoryview(buf)[:size]
        got = fh.readinto(view)
        if got != size:  # the file changed size while being read
            view.release()
            fh.seek(0)
            data = fh.read()
            return memoryview(data)
    return view


def _recycle(view: memoryview) -> None:
    base = view.obj
    if isinstance(base, bytearray) and len(base) <= _READ_POOL_MAX_BYTES:
        with _read_pool_lock:
            if len(_read_pool) < 2:
                _read_pool.append(base)


class _Opened:
    """A C3D source opened for reading: its bytes (small files, bytes given) or the open file."""

    def __init__(self, source: Source, *, whole: bool = True):
        self.path: str | None = None
        self.pooled: memoryview | None = None
        self.file: _FileSource | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.buf: Any = memoryview(source).cast("B") if not isinstance(source, bytes) else source
            self.size = len(self.buf)
            self.head = self.buf
            return
        self.path = os.fspath(source)
        try:
            size = os.stat(self.path).st_size
            if whole and size <= _WHOLE_READ_MAX_BYTES:
                self.buf = self.pooled = _read_file(self.path)
                self.size = len(self.buf)
                self.head = self.buf
            else:
                self.file = _FileSource(self.path)
                self.size = self.file.size
                self.head = _read_head(self.file)
                self.buf = None
        except OSError as exc:
            raise C3DFormatError(f"Cannot open C3D file {self.path!r}: {exc.strerror or exc}.") from exc

    def read_range(self, offset: int, count: int) -> bytes | memoryview:
        if self.buf is not None:
            part: bytes | memoryview = self.buf[offset : offset + count]
            return part
        assert self.file is not None
        return self.file.read(offset, count)

    @property
    def data(self) -> bytes | memoryview | _FileSource:
        if self.buf is not None:
            buf: bytes | memoryview = self.buf
            return buf
        assert self.file is not None  # no bytes: the file is open
        return self.file

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@dataclass(frozen=True)
class C3DInfo:
    """What the header and parameters say about a C3D, without reading its data section."""

    file_size: int
    reader: Literal["numpy", "ezc3d"]  # ezc3d only for files with ROTATION data
    processor: str  # Intel | DEC | MIPS
    storage: Literal["float", "int"]
    n_channels: int
    n_samples: int
    rate: float | None
    labels: list[str]
    read_whole: bool  # the analysis holds the file's bytes (else it reads it in blocks)

    @property
    def n_values(self) -> int:
        return self.n_channels * self.n_samples


def _describe(opened: _Opened, warnings: list[str]) -> tuple[Header, Params, _Layout | None]:
    header, params = parse_parameters(opened.head, opened.size)
    try:
        lay = _layout(header, params, opened.size, opened.read_range, warnings)
    except (ValueError, TypeError, OverflowError) as exc:
        # Parameters of the wrong type or absurd size (e.g. text where numbers belong).
        raise C3DFormatError(f"Corrupt C3D parameter section: {exc}.") from exc
    return header, params, lay


def inspect_c3d(source: Source) -> C3DInfo:
    """Header and parameters of a C3D (a path or its bytes): a few kB are read, never the data
    section (but for the last frames of a long file whose 16-bit counts overflowed). Raises
    C3DFormatError as ``read_c3d`` does for a truncated or inconsistent file."""
    opened = _Opened(source, whole=False)
    try:
        header, params, lay = _describe(opened, [])
    finally:
        opened.close()
    reader: Literal["numpy", "ezc3d"]
    if lay is not None:
        n_ch, n, storage, reader = lay.n_analogs, lay.n_samples, lay.storage, "numpy"
    else:
        n_ch = int(_first(params, "ANALOG", "USED", 0))
        n_sub = max(1, header["analog_per_frame"])
        frame_bytes = (4 if header["scale_factor"] < 0 else 2) * (4 * header["n_points"] + n_sub * n_ch)
        n = max(0, (opened.size - (header["data_start"] - 1) * _BLOCK)) // max(1, frame_bytes) * n_sub
        storage, reader = ("float" if header["scale_factor"] < 0 else "int"), "ezc3d"
    rate = _num(_first(params, "ANALOG", "RATE"))
    labels = [str(s) for s in _concat(params, "ANALOG", "LABELS")][:n_ch]
    whole = opened.path is None or opened.size <= _WHOLE_READ_MAX_BYTES
    return C3DInfo(
        file_size=opened.size,
        reader=reader,
        processor=_PROCESSOR_NAMES[header["processor"]],
        storage=storage,
        n_channels=n_ch,
        n_samples=n,
        rate=rate,
        labels=labels,
        read_whole=whole,
    )


# Memory model of one analysis (bytes), checked by bench/bench_memory.py against the peak RSS
# measured in a fresh process (which adds ~100 MB of interpreter, numpy and scipy).
_EZC3D_BYTES_PER_VALUE = 80  # ezc3d 1.7: C++ objects of every value plus the float64 copies


def estimate_analysis_bytes(source: Source) -> int:
    """Working memory of ``analyze_file(source)`` in bytes, from the header and parameters
    only: the file's bytes when it is read whole, the block buffers otherwise, and the
    per-channel float64 buffers of the pipeline and statistics (libs.emg.pipeline
    ``analysis_bytes``). Excludes the interpreter and libraries (~100 MB per process).

    Raises C3DFormatError / C3DContentError as ``read_c3d`` would for a file it cannot size.
    """
    from .pipeline import analysis_bytes

    info = inspect_c3d(source)
    if info.n_channels == 0 or info.n_samples == 0:
        return info.file_size if info.read_whole else 2 * _BLOCK_BYTES
    resident = info.file_size if info.read_whole else 2 * _BLOCK_BYTES
    total = resident + analysis_bytes(info.n_samples)
    if info.reader == "ezc3d":
        total += info.n_values * (_EZC3D_BYTES_PER_VALUE + 8)
    return int(total)


def check_analysis_budget(source: Source, budget_bytes: int) -> int:
    """``estimate_analysis_bytes(source)``, or MemoryBudgetExceeded when it is above
    ``budget_bytes`` (0 or less: no limit). Call it before reading the file."""
    need = estimate_analysis_bytes(source)
    if budget_bytes > 0 and need > budget_bytes:
        raise MemoryBudgetExceeded(need, budget_bytes)
    return need


def read_c3d(source: Source, *, file_name: str | None = None) -> Recording:
    """Read a C3D from a path or from its bytes (ingest stores bytes first).

    ``file_name`` supplies the GHOSTLY file name (for the session seconds) when ``source``
    is bytes. Raises C3DFormatError / C3DContentError, never returns an empty recording.
    A path larger than ``_WHOLE_READ_MAX_BYTES`` stays open while the recording lives (its
    rows are read from the file in blocks); the file must not change meanwhile.
    """
    if not isinstance(source, (bytes, bytearray, memoryview)):
        file_name = file_name or os.path.basename(os.fspath(source))
    opened = _Opened(source)
    try:
        return _read(opened, file_name)
    except BaseException:
        opened.close()
        raise


def _read(opened: _Opened, file_name: str | None) -> Recording:
    warnings: list[str] = []
    _header, params, lay = _describe(opened, warnings)
    analogs: NDArray[np.float64] | _LazyAnalogs
    if lay is not None:
        if lay.n_analogs == 0 or lay.n_sub == 0:
            raise C3DContentError("The C3D file contains no analog channels, so there is no EMG to analyse.")
        if lay.n_frames == 0:
            raise C3DContentError("The C3D file contains analog channels but zero samples.")
        try:
            analogs = _LazyAnalogs(opened.data, params, lay)
        except (ValueError, TypeError, OverflowError) as exc:
            raise C3DFormatError(f"Corrupt C3D parameter section: {exc}.") from exc
        bad_rows = analogs.nonfinite_rows()
        n_ch = analogs.shape[0]
        reader: Literal["numpy", "ezc3d"] = "numpy"
    else:
        opened.close()
        if opened.path is None:
            with tempfile.NamedTemporaryFile(suffix=".c3d", delete=False) as tmp:
                tmp.write(opened.buf)
            try:
                analogs, params = _ezc3d_read(tmp.name)
            finally:
                os.unlink(tmp.name)
        else:
            analogs, params = _ezc3d_read(opened.path)
        reader = "ezc3d"
        if analogs.size == 0 and analogs.shape[0] == 0:
            raise C3DContentError("The C3D file contains no analog channels, so there is no EMG to analyse.")
        if analogs.shape[1] == 0:
            raise C3DContentError("The C3D file contains analog channels but zero samples.")
        n_ch = analogs.shape[0]
        bad_rows = None

    rate = _num(_first(params, "ANALOG", "RATE"))
    if rate is None or rate <= 0:
        raise C3DContentError("The C3D file has no valid ANALOG:RATE, so signals cannot be timed or filtered.")
    labels = [str(s) for s in _concat(params, "ANALOG", "LABELS")][:n_ch]
    if len(labels) < n_ch:
        warnings.append(
            f"ANALOG:LABELS has {len(labels)} names for {n_ch} channels; unnamed channels are called A<index>."
        )
        labels += [f"A{i + 1}" for i in range(len(labels), n_ch)]
    units = [str(s).strip() for s in _concat(params, "ANALOG", "UNITS")][:n_ch]
    if len(units) < n_ch or not all(units):
        warnings.append("ANALOG:UNITS missing; values are assumed to be volts (GHOSTLY convention).")
        units = [u or "V" for u in units] + ["V"] * (n_ch - len(units))
    # A sum is finite iff every term is (barring overflow, then the exact check runs): one pass
    # without a multi-MB boolean temporary.
    if (
        isinstance(analogs, np.ndarray)
        and not np.isfinite(analogs.sum())
        and not (finite := np.isfinite(analogs)).all()
    ):
        bad_rows = np.flatnonzero(~finite.all(axis=1))
    if bad_rows is not None and bad_rows.size:
        bad = [labels[i] for i in bad_rows]
        raise C3DContentError(
            f"The C3D file contains NaN or infinite analog values (channels: {', '.join(bad)}); "
            "the recording is corrupt and cannot be analysed."
        )
    metadata = _metadata(params, file_name, warnings)
    rec = Recording(
        rate=rate,
        labels=labels,
        analogs=analogs,
        units=units,
        metadata=metadata,
        warnings=warnings,
        reader=reader,
        file_name=file_name,
    )
    if opened.pooled is not None and isinstance(analogs, _LazyAnalogs):
        # Only the recording's lazy block views the buffer: recycle it when the recording dies.
        weakref.finalize(rec, _recycle, opened.pooled)
    return rec


def muscle_channels(recording: Recording, channel_map: dict[str, str] | None = None) -> list[MuscleChannel]:
    """Pair each muscle's raw channel with its 'activated' channel and assign a side.

    GHOSTLY labels are '<muscle> Raw' / '<muscle> activated'. Files without ' Raw' labels
    are treated as one muscle per analog channel (label = muscle). Sides come from
    ``channel_map`` ({muscle: 'left'|'right'}); without it CH1 = left and CH2 = right
    (GHOSTLY convention), anything else has no side.
    """
    lower = [lab.lower() for lab in recording.labels]
    has_raw = any(lab.endswith(_RAW_SUFFIX) for lab in lower)
    default_sides = {"CH1": "left", "CH2": "right"}
    out: list[MuscleChannel] = []
    for i, label in enumerate(recording.labels):
        low = lower[i]
        if has_raw:
            if not low.endswith(_RAW_SUFFIX):
                continue
            name = label[: -len(_RAW_SUFFIX)].strip()
        else:
            name = label.strip()
        act = None
        target = (name + _ACTIVATED_SUFFIX).lower()
        if has_raw and target in lower:
            act = lower.index(target)
        side = (channel_map or default_sides).get(name)
        if side is not None and side not in ("left", "right"):
            raise SettingsError(f"channel_map side for {name!r} must be 'left' or 'right', got {side!r}.")
        side_lr = cast(Literal["left", "right"] | None, side)  # checked just above
        out.append(MuscleChannel(name=name, side=side_lr, raw_index=i, raw_label=label, activated_index=act))
    return out
