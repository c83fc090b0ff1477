"""C3D reading: a vectorised analog reader plus GHOSTLY metadata extraction.

Why not just ezc3d: ezc3d builds one C++ object per sample (~50 ms for a 2.8 MB file) while
the analog block of a float, little-endian C3D is a plain strided float32 array (~1.5 ms with
numpy). The ezc3d Python API (1.7) has no "parameters only" option, so the header and the
parameter section (a few kB) are parsed here; tests cross-check both the parameters and the
analog values (bit for bit) against ezc3d. ezc3d stays the reader for every layout the fast
path does not handle (integer data, DEC/MIPS processors, rotation blocks).

Rows are converted from float32 on demand (``Recording.channel``/``row``): the analysis needs
two of GHOSTLY's four channels as float64 and the 'activated' pair only as a > 0 mask.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from .errors import C3DContentError, C3DFormatError, SettingsError

_BLOCK = 512
_PROCESSOR_INTEL, _PROCESSOR_DEC, _PROCESSOR_MIPS = 84, 85, 86
# Values GHOSTLY writes when a field is unknown; they are reported as missing, not as data.
_PLACEHOLDERS = {"", "---", "N/A", "NA", "NONE", "NULL"}
_GHOSTLY_NAME = re.compile(r"(\d{4})(\d{2})(\d{2})_(\d{2})-(\d{2})-(\d{2})-(\d{1,6})")
_RAW_SUFFIX = " raw"
_ACTIVATED_SUFFIX = " activated"

Source = str | os.PathLike | bytes | bytearray | memoryview


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

    The fast reader converts the float32 analog block lazily: ``channel(i)`` converts one row
    (what the analysis needs), ``analogs`` converts and caches the whole block on first access
    (bit-identical either way). ``analogs`` may also be passed as a plain array.
    """

    def __init__(self, rate: float, labels: list[str], analogs: "np.ndarray | _LazyAnalogs", units: list[str],
                 metadata: GameMetadata, warnings: list[str] | None = None,
                 reader: Literal["numpy", "ezc3d"] = "numpy", file_name: str | None = None):
        self.rate = rate
        self.labels = labels
        self.units = units
        self.metadata = metadata
        self.warnings = warnings if warnings is not None else []
        self.reader = reader
        self.file_name = file_name
        self._lazy: _LazyAnalogs | None = None
        self._analogs: np.ndarray | None = None
        self._rows: dict[int, np.ndarray] = {}
        if isinstance(analogs, _LazyAnalogs):
            self._lazy = analogs
        else:
            self._analogs = analogs

    @property
    def analogs(self) -> np.ndarray:
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
    def analogs(self, value: np.ndarray) -> None:
        self._analogs, self._lazy, self._rows = value, None, {}

    @property
    def shape(self) -> tuple[int, int]:
        if self._analogs is not None:
            return (int(self._analogs.shape[0]), int(self._analogs.shape[1]))
        assert self._lazy is not None
        return self._lazy.shape

    def channel(self, index: int) -> np.ndarray:
        """Row ``index`` of ``analogs`` (float64), converting only that row when still lazy."""
        if self._analogs is not None:
            return self._analogs[index]
        row = self._rows.get(index)
        if row is None:
            assert self._lazy is not None
            row = self._rows.setdefault(index, self._lazy.row(index))
        return row

    def row(self, index: int, out: np.ndarray) -> np.ndarray:
        """Row ``index`` as float64 for a short-lived computation: a view when ``analogs`` is
        materialised or the row cached, else converted into ``out`` (not cached)."""
        if self._analogs is not None:
            return self._analogs[index]
        row = self._rows.get(index)
        if row is not None:
            return row
        assert self._lazy is not None
        return self._lazy.row(index, out=out)

    def channel_positive(self, index: int) -> np.ndarray:
        """``channel(index) > 0`` without converting the row when the conversion keeps signs."""
        lazy = self._lazy
        if self._analogs is None and lazy is not None and index not in self._rows and lazy.sign_preserving(index):
            return (lazy.block3[index] > 0).reshape(-1)
        return self.channel(index) > 0

    @property
    def n_samples(self) -> int:
        return self.shape[1]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate

    def __repr__(self) -> str:
        return (f"Recording(rate={self.rate!r}, labels={self.labels!r}, shape={self.shape}, units={self.units!r}, "
                f"reader={self.reader!r}, file_name={self.file_name!r})")


@dataclass
class MuscleChannel:
    """One muscle: its raw EMG row and, if present, the device's 'activated' row."""

    name: str
    side: Literal["left", "right"] | None
    raw_index: int
    raw_label: str
    activated_index: int | None = None


# --------------------------------------------------------------------------- parsing


def _int8(b: int) -> int:
    return b - 256 if b > 127 else b


def parse_parameters(buf: bytes | memoryview) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Parse the 512-byte header and the parameter section of a C3D file.

    Returns ``(header, params)`` where params maps GROUP -> PARAM -> value. Values follow
    ezc3d's conventions: numbers as flat float64/int arrays, strings as a list of strings
    with trailing spaces removed. Raises C3DFormatError on anything inconsistent.
    """
    n = len(buf)
    if n < _BLOCK:
        raise C3DFormatError(f"Not a C3D file: only {n} bytes, a C3D header alone is 512 bytes.")
    param_block, key = buf[0], buf[1]
    if key != 0x50 or param_block < 2:
        raise C3DFormatError("Not a C3D file: the header signature (byte 2 = 0x50) is missing.")
    pstart = (param_block - 1) * _BLOCK
    if pstart + 4 > n:
        raise C3DFormatError("Truncated C3D file: the parameter section is missing.")
    processor = buf[pstart + 3]
    if processor not in (_PROCESSOR_INTEL, _PROCESSOR_DEC, _PROCESSOR_MIPS):
        raise C3DFormatError(f"Unsupported C3D file: unknown processor type {processor}.")
    endian = ">" if processor == _PROCESSOR_MIPS else "<"
    words = struct.unpack_from(endian + "hhhHHh", buf, 2)
    header = {
        "n_points": words[0],
        "n_analog_per_frame": words[1],
        "first_frame": words[2],
        "last_frame": words[3],
        "scale_factor": struct.unpack_from(endian + "f", buf, 12)[0],
        "data_start": struct.unpack_from(endian + "H", buf, 16)[0],
        "analog_per_frame": struct.unpack_from(endian + "H", buf, 18)[0],
        "frame_rate": struct.unpack_from(endian + "f", buf, 20)[0],
        "processor": processor,
    }
    if processor == _PROCESSOR_DEC:
        # DEC floats are not IEEE: the header values above are meaningless; only the
        # processor type matters because DEC files always go through ezc3d.
        return header, {}

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
                    raw = bytes(buf[p : p + count]).decode("latin-1")
                    if not dims:
                        value: Any = []
                    elif len(dims) == 1:
                        value = [raw.rstrip(" ")] if dims[0] else []
                    else:
                        w, n_str = dims[0], int(np.prod(dims[1:]))
                        value = [raw[i * w : (i + 1) * w].rstrip(" ") for i in range(n_str)]
                elif dtype in (1, 2, 4):
                    code = {1: "i1", 2: "i2", 4: "f4"}[dtype]
                    arr = np.frombuffer(buf, dtype=endian + code, count=count, offset=p)
                    value = arr.astype(np.float64 if dtype == 4 else np.int64)
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


def _first(params: dict, group: str, name: str, default: Any = None) -> Any:
    value = params.get(group, {}).get(name)
    if value is None or len(value) == 0:
        return default
    return value[0]


def _concat(params: dict, group: str, name: str) -> list:
    """LABELS, LABELS2, ... concatenated, as ezc3d does for > 255 channels."""
    out = list(params.get(group, {}).get(name, []))
    i = 2
    while f"{name}{i}" in params.get(group, {}):
        out += list(params[group][f"{name}{i}"])
        i += 1
    return out


# --------------------------------------------------------------------------- analog block


_U16_SATURATED = 0xFFFF  # a 16-bit frame count at its maximum: the true count may be larger
_MAX_PADDING = _BLOCK  # writers pad the data section to a 512-byte block (ezc3d: 1..512 bytes)


def _u16_count(value: int) -> int:
    """A frame count stored in a signed 16-bit word, read back as unsigned (wraps at 65536)."""
    return int(value) & 0xFFFF


def _trial_frames(params: dict) -> int | None:
    """TRIAL:ACTUAL_END_FIELD - ACTUAL_START_FIELD + 1 (Vicon's 32-bit frame numbers), if present."""
    trial = params.get("TRIAL", {})
    start, end = trial.get("ACTUAL_START_FIELD"), trial.get("ACTUAL_END_FIELD")
    if start is None or end is None or len(start) < 2 or len(end) < 2:
        return None
    s = _u16_count(start[0]) + (_u16_count(start[1]) << 16)
    e = _u16_count(end[0]) + (_u16_count(end[1]) << 16)
    return e - s + 1 if e >= s >= 0 else None


def _long_frame_count(header: dict, params: dict, frames_param: int | None, avail: int, frame_bytes: int,
                      buf: bytes | memoryview, start: int, warnings: list[str]) -> int:
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
                f"holds {hi} frames of {frame_bytes} bytes.")
        return trial
    consistent = [n for n in candidates if all(fits(n, c) for _, c in sources)]
    if not consistent:
        floor = max((c for _, c in sources), default=0)
        if hi < floor:
            raise C3DFormatError(
                f"Truncated C3D file: the header declares at least {floor} frames but only {hi} are present "
                "in the data section.")
        declared = ", ".join(f"{name} = {c}" for name, c in sources) or "no frame count"
        if len(candidates) != 1:
            candidates = _drop_zero_padding(candidates, buf, start, frame_bytes)
        if len(candidates) != 1:
            raise C3DFormatError(
                f"Cannot determine the length of this C3D file: {declared} disagree with the data section "
                f"({avail} bytes, {frame_bytes} bytes per frame).")
        warnings.append(f"C3D frame counts disagree ({declared}); using the {candidates[0]} frames present "
                        "in the data section.")
        return candidates[0]
    if len(consistent) > 1:
        consistent = _drop_zero_padding(consistent, buf, start, frame_bytes)
        if len(consistent) > 1:
            raise C3DFormatError(
                f"Cannot determine the length of this C3D file: the data section could hold any of "
                f"{consistent} frames and the 16-bit frame counts cannot tell them apart.")
        warnings.append(f"C3D frame count above the 16-bit range: {consistent[0]} frames taken from the data "
                        "section; trailing zero bytes were treated as block padding.")
    return consistent[0]


def _drop_zero_padding(candidates: list[int], buf: bytes | memoryview, start: int, frame_bytes: int) -> list[int]:
    """Keep the smallest candidate that still covers every non-zero byte of the data section:
    frames made only of zero bytes after it cannot be told from padding (and hold no signal)."""
    end = start + max(candidates) * frame_bytes
    first = start + min(candidates) * frame_bytes
    tail = np.frombuffer(buf, dtype=np.uint8, count=end - first, offset=first)
    nz = np.flatnonzero(tail)
    last_data = first + int(nz[-1]) + 1 if nz.size else first  # exclusive end of non-zero bytes
    covering = [n for n in candidates if start + n * frame_bytes >= last_data]
    return covering[:1] if covering else candidates


def _fast_layout(header: dict, params: dict, buf: bytes | memoryview, warnings: list[str]) -> dict | None:
    """Geometry of the analog block, or None when only ezc3d can read the file."""
    size = len(buf)
    if header["processor"] != _PROCESSOR_INTEL or header["scale_factor"] >= 0:
        return None  # integer data or non-Intel byte order: ezc3d handles the conversions
    if int(_first(params, "ROTATION", "USED", 0)):
        return None  # rotation blocks follow the data: rare, leave them to ezc3d
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
    frames_param = params.get("POINT", {}).get("FRAMES")
    frames_value = int(frames_param[0]) if frames_param is not None and len(frames_param) else None
    n_frames = frames_value or 0
    start = (header["data_start"] - 1) * _BLOCK
    frame_len = 4 * n_points + n_sub * n_analogs
    lay = {"n_analogs": n_analogs, "n_sub": n_sub, "n_frames": 0, "frame_len": frame_len, "start": start,
           "n_points": n_points}
    if n_analogs == 0 or n_sub == 0 or start < _BLOCK or frame_len == 0:
        lay["n_frames"] = max(n_frames, 0)
        return lay
    frame_bytes = 4 * frame_len
    avail = size - start
    header_frames = header["last_frame"] - header["first_frame"] + 1
    # POINT:FRAMES is a signed 16-bit word: > 32,767 frames wrap negative (ezc3d writes -1 when
    # even 65,535 is exceeded, and saturates the header's last_frame at 65,535). Those files,
    # and files whose declared count is a saturation value while more data follows, are sized
    # from the data section; ezc3d would silently stop at 65,535 frames.
    long_file = (n_frames < 0 or (n_frames == 0 and header["last_frame"] >= _U16_SATURATED)
                 or (n_frames in (32767, _U16_SATURATED) and avail - n_frames * frame_bytes > _MAX_PADDING))
    if long_file:
        n_frames = _long_frame_count(header, params, frames_value, avail, frame_bytes, buf, start, warnings)
    elif n_frames == 0:
        n_frames = header_frames
    if n_frames <= 0:
        lay["n_frames"] = max(n_frames, 0)
        return lay
    if start + frame_bytes * n_frames > size:
        got = max(0, avail // frame_bytes)
        raise C3DFormatError(
            f"Truncated C3D file: {n_frames} frames declared but only {got} are present in the data section."
        )
    extra = avail - n_frames * frame_bytes
    if not long_file and extra >= frame_bytes and extra > _MAX_PADDING:
        warnings.append(f"The C3D data section holds {extra // frame_bytes} frames more than the {n_frames} "
                        "declared; only the declared frames are read.")
    lay["n_frames"] = n_frames
    return lay


class _LazyAnalogs:
    """The float32 analog block of a fast-path file, converted to float64 row by row on demand.

    Bit-identical to ezc3d, which computes ``(float(raw) - int(|offset|)) * double(scale) *
    double(gen_scale)``: the subtraction in float32, the multiplications in float64, in order.
    """

    def __init__(self, buf: bytes | memoryview, params: dict, lay: dict):
        na, ns, nf, fl = lay["n_analogs"], lay["n_sub"], lay["n_frames"], lay["frame_len"]
        frames = np.frombuffer(buf, dtype="<f4", count=nf * fl, offset=lay["start"]).reshape(nf, fl)
        self.frames_analog = frames[:, 4 * lay["n_points"]:]
        # (channel, frame, subframe) view. Flattening frames x subframes into one axis is not
        # a view when points sit between the analog blocks (it silently copied the block).
        self.block3 = self.frames_analog.reshape(nf, ns, na).transpose(2, 0, 1)
        self.shape = (na, nf * ns)
        scales = np.asarray(_concat(params, "ANALOG", "SCALE"), dtype=np.float64)
        offsets = np.abs(np.asarray(_concat(params, "ANALOG", "OFFSET"), dtype=np.int64))
        if scales.size < na or offsets.size < na:
            raise C3DFormatError("Corrupt C3D file: ANALOG:SCALE/OFFSET have fewer entries than ANALOG:USED.")
        self.scales = scales[:na]
        self.offsets = offsets[:na]
        self.gen = float(_first(params, "ANALOG", "GEN_SCALE", 1.0))
        self.unscaled = bool(np.all(self.scales == 1.0) and self.gen == 1.0)

    def row(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        src = self.block3[i]
        if out is None:
            out = np.empty(self.shape[1], dtype=np.float64)
        if not out.flags.c_contiguous or out.size != self.shape[1]:
            raise ValueError("out must be a contiguous float64 row of n_samples values")
        dst = out.reshape(src.shape)  # a view: out is a contiguous row
        if self.offsets[i] == 0:
            dst[...] = src  # x - 0 is exact in float32: skip the pass
        else:
            np.subtract(src, np.float32(self.offsets[i]), out=dst, dtype=np.float32, casting="unsafe")
        if not self.unscaled:
            out *= self.scales[i]
            out *= self.gen
        return out

    def conversion_is_benign(self) -> bool:
        """Finite float32 input gives finite float64 output (no offset or scale can overflow)."""
        s = np.abs(self.scales) * abs(self.gen)
        return bool(np.all(self.offsets == 0) and np.isfinite(s).all() and s.max(initial=0.0) < 1e250)

    def sign_preserving(self, i: int) -> bool:
        """``row(i) > 0`` equals ``block[i] > 0`` (no offset; scale and gen positive, no underflow)."""
        s, g = float(self.scales[i]), self.gen
        return self.offsets[i] == 0 and 1e-100 < s < 1e100 and 1e-100 < g < 1e100

    def nonfinite_rows(self) -> np.ndarray:
        """Indices of rows holding NaN/inf.

        A float64 sum of float32 values cannot overflow, so it is finite iff every value is.
        Summed in chunks of frames: the strided block would otherwise be copied whole.
        """
        fa = self.frames_analog
        step = max(1, (1 << 16) // max(1, fa.shape[1]))
        total = 0.0
        for i in range(0, fa.shape[0], step):
            total += float(fa[i:i + step].sum(dtype=np.float64))
        if np.isfinite(total):
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(~np.isfinite(self.block3).all(axis=(1, 2)))


def _fast_analogs(buf: bytes | memoryview, params: dict, lay: dict) -> np.ndarray:
    """Analog block as (n_channels, n_samples) float64, bit-identical to ezc3d (eager)."""
    lazy = _LazyAnalogs(buf, params, lay)
    out = np.empty(lazy.shape, dtype=np.float64)
    for i in range(lazy.shape[0]):
        lazy.row(i, out=out[i])
    return out


def _ezc3d_read(path: str) -> tuple[np.ndarray, dict]:
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


def _session_datetime(params: dict, file_name: str | None, warnings: list[str]) -> datetime | None:
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
        warnings.append("Session seconds unknown (file name is not Ghostly_Emg_YYYYMMDD_HH-MM-SS-ffff.c3d); seconds set to 0.")
        return from_info
    if from_name:
        warnings.append("INFO:TIME missing; session time taken from the file name.")
        return from_name
    warnings.append("Session date/time not found (no INFO:TIME, no GHOSTLY file name).")
    return None


def _metadata(params: dict, file_name: str | None, warnings: list[str]) -> GameMetadata:
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


def read_c3d(source: Source, *, file_name: str | None = None) -> Recording:
    """Read a C3D from a path or from its bytes (ingest stores bytes first).

    ``file_name`` supplies the GHOSTLY file name (for the session seconds) when ``source``
    is bytes. Raises C3DFormatError / C3DContentError, never returns an empty recording.
    """
    path: str | None = None
    pooled: memoryview | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = memoryview(source).cast("B") if not isinstance(source, bytes) else source
    else:
        path = os.fspath(source)
        file_name = file_name or os.path.basename(path)
        try:
            buf = pooled = _read_file(path)
        except OSError as exc:
            raise C3DFormatError(f"Cannot open C3D file {path!r}: {exc.strerror or exc}.") from exc
    header, params = parse_parameters(buf)
    warnings: list[str] = []
    try:
        lay = _fast_layout(header, params, buf, warnings) if params else None
    except (ValueError, TypeError, OverflowError) as exc:
        # Parameters of the wrong type or absurd size (e.g. text where numbers belong).
        raise C3DFormatError(f"Corrupt C3D parameter section: {exc}.") from exc
    analogs: np.ndarray | _LazyAnalogs
    if lay is not None:
        if lay["n_analogs"] == 0 or lay["n_sub"] == 0:
            raise C3DContentError("The C3D file contains no analog channels, so there is no EMG to analyse.")
        if lay["n_frames"] == 0:
            raise C3DContentError("The C3D file contains analog channels but zero samples.")
        try:
            lazy = _LazyAnalogs(buf, params, lay)
        except (ValueError, TypeError, OverflowError) as exc:
            raise C3DFormatError(f"Corrupt C3D parameter section: {exc}.") from exc
        bad_rows = lazy.nonfinite_rows()
        # Rows are converted on demand; when a scale/offset could turn finite values into
        # inf, convert everything now so the finite check below sees the final values.
        analogs = lazy if lazy.conversion_is_benign() else _fast_analogs(buf, params, lay)
        n_ch = lazy.shape[0]
        reader: Literal["numpy", "ezc3d"] = "numpy"
    else:
        if path is None:
            with tempfile.NamedTemporaryFile(suffix=".c3d", delete=False) as tmp:
                tmp.write(buf)
            try:
                analogs, params = _ezc3d_read(tmp.name)
            finally:
                os.unlink(tmp.name)
        else:
            analogs, params = _ezc3d_read(path)
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
        warnings.append(f"ANALOG:LABELS has {len(labels)} names for {n_ch} channels; unnamed channels are called A<index>.")
        labels += [f"A{i + 1}" for i in range(len(labels), n_ch)]
    units = [str(s).strip() for s in _concat(params, "ANALOG", "UNITS")][:n_ch]
    if len(units) < n_ch or not all(units):
        warnings.append("ANALOG:UNITS missing; values are assumed to be volts (GHOSTLY convention).")
        units = [u or "V" for u in units] + ["V"] * (n_ch - len(units))
    if isinstance(analogs, np.ndarray):
        # A sum is finite iff every term is (barring overflow, then the exact check runs): one
        # pass without a multi-MB boolean temporary.
        if not np.isfinite(analogs.sum()) and not (finite := np.isfinite(analogs)).all():
            bad_rows = np.flatnonzero(~finite.all(axis=1))
    if bad_rows is not None and bad_rows.size:
        bad = [labels[i] for i in bad_rows]
        raise C3DContentError(
            f"The C3D file contains NaN or infinite analog values (channels: {', '.join(bad)}); "
            "the recording is corrupt and cannot be analysed."
        )
    metadata = _metadata(params, file_name, warnings)
    rec = Recording(rate=rate, labels=labels, analogs=analogs, units=units, metadata=metadata,
                    warnings=warnings, reader=reader, file_name=file_name)
    if pooled is not None and isinstance(analogs, _LazyAnalogs):
        # Only the recording's lazy block views the buffer: recycle it when the recording dies.
        weakref.finalize(rec, _recycle, pooled)
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
        out.append(MuscleChannel(name=name, side=side, raw_index=i, raw_label=label, activated_index=act))
    return out
