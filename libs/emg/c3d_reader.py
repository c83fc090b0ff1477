"""C3D reading: a vectorised analog reader plus GHOSTLY metadata extraction.

Why not just ezc3d: ezc3d builds one C++ object per sample (~50 ms for a 2.8 MB file) while
the analog block of a float, little-endian C3D is a plain strided float32 array (~1.5 ms with
numpy). The ezc3d Python API (1.7) has no "parameters only" option, so the header and the
parameter section (a few kB) are parsed here; tests cross-check both the parameters and the
analog values (bit for bit) against ezc3d. ezc3d stays the reader for every layout the fast
path does not handle (integer data, DEC/MIPS processors, inconsistent headers).
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
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


@dataclass
class Recording:
    """Analog content of one C3D file; ``analogs`` has shape (n_channels, n_samples)."""

    rate: float
    labels: list[str]
    analogs: np.ndarray
    units: list[str]
    metadata: GameMetadata
    warnings: list[str] = field(default_factory=list)
    reader: Literal["numpy", "ezc3d"] = "numpy"
    file_name: str | None = None

    @property
    def n_samples(self) -> int:
        return int(self.analogs.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate


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


def _fast_layout(header: dict, params: dict, size: int) -> dict | None:
    """Geometry of the analog block, or None when only ezc3d can read the file."""
    if header["processor"] != _PROCESSOR_INTEL or header["scale_factor"] >= 0:
        return None  # integer data or non-Intel byte order: ezc3d handles the conversions
    if int(_first(params, "ROTATION", "USED", 0)):
        return None  # rotation blocks follow the data: rare, leave them to ezc3d
    n_points = int(_first(params, "POINT", "USED", header["n_points"]))
    n_analogs = int(_first(params, "ANALOG", "USED", 0))
    point_rate = float(_first(params, "POINT", "RATE", header["frame_rate"]))
    analog_rate = float(_first(params, "ANALOG", "RATE", 0.0))
    # Same rule as ezc3d::c3d::updateHeader: subframes from the rates when a point rate exists.
    if int(point_rate) != 0 and analog_rate:
        n_sub = int(analog_rate / point_rate)
    else:
        n_sub = header["analog_per_frame"]
    frames_param = params.get("POINT", {}).get("FRAMES")
    n_frames = int(frames_param[0]) if frames_param is not None and len(frames_param) else 0
    if n_frames < 0:
        return None  # > 32767 frames stored in a signed word: let ezc3d decide
    if n_frames == 0:
        n_frames = header["last_frame"] - header["first_frame"] + 1
    start = (header["data_start"] - 1) * _BLOCK
    frame_len = 4 * n_points + n_sub * n_analogs
    if n_analogs == 0 or n_sub == 0 or n_frames <= 0 or start < _BLOCK:
        return {"n_analogs": n_analogs, "n_sub": n_sub, "n_frames": max(n_frames, 0), "frame_len": frame_len,
                "start": start, "n_points": n_points}
    if start + 4 * frame_len * n_frames > size:
        got = max(0, (size - start) // (4 * frame_len))
        raise C3DFormatError(
            f"Truncated C3D file: {n_frames} frames declared but only {got} are present in the data section."
        )
    return {"n_analogs": n_analogs, "n_sub": n_sub, "n_frames": n_frames, "frame_len": frame_len,
            "start": start, "n_points": n_points}


def _fast_analogs(buf: bytes | memoryview, params: dict, lay: dict) -> np.ndarray:
    """Analog block as (n_channels, n_samples) float64, bit-identical to ezc3d.

    ezc3d computes ``(float(raw) - int(|offset|)) * double(scale) * double(gen_scale)``: the
    subtraction happens in float32, the multiplications in float64, in that order.
    """
    na, ns, nf, fl = lay["n_analogs"], lay["n_sub"], lay["n_frames"], lay["frame_len"]
    frames = np.frombuffer(buf, dtype="<f4", count=nf * fl, offset=lay["start"]).reshape(nf, fl)
    block = frames[:, 4 * lay["n_points"] :].reshape(nf * ns, na).T  # strided view, no copy yet
    scales = np.asarray(_concat(params, "ANALOG", "SCALE"), dtype=np.float64)
    offsets = np.abs(np.asarray(_concat(params, "ANALOG", "OFFSET"), dtype=np.int64))
    gen = float(_first(params, "ANALOG", "GEN_SCALE", 1.0))
    if scales.size < na or offsets.size < na:
        raise C3DFormatError("Corrupt C3D file: ANALOG:SCALE/OFFSET have fewer entries than ANALOG:USED.")
    if np.all(offsets[:na] == 0):
        out = block.astype(np.float64)  # x - 0 is exact in float32: skip the pass
    else:
        out = (block - offsets[:na, None].astype(np.float32)).astype(np.float64)
    if not (np.all(scales[:na] == 1.0) and gen == 1.0):
        out *= scales[:na, None]
        out *= gen
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


def read_c3d(source: Source, *, file_name: str | None = None) -> Recording:
    """Read a C3D from a path or from its bytes (ingest stores bytes first).

    ``file_name`` supplies the GHOSTLY file name (for the session seconds) when ``source``
    is bytes. Raises C3DFormatError / C3DContentError, never returns an empty recording.
    """
    path: str | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = memoryview(source).cast("B") if not isinstance(source, bytes) else source
    else:
        path = os.fspath(source)
        file_name = file_name or os.path.basename(path)
        try:
            with open(path, "rb") as fh:
                buf = fh.read()
        except OSError as exc:
            raise C3DFormatError(f"Cannot open C3D file {path!r}: {exc.strerror or exc}.") from exc
    header, params = parse_parameters(buf)
    warnings: list[str] = []
    lay = _fast_layout(header, params, len(buf)) if params else None
    if lay is not None:
        if lay["n_analogs"] == 0 or lay["n_sub"] == 0:
            raise C3DContentError("The C3D file contains no analog channels, so there is no EMG to analyse.")
        if lay["n_frames"] == 0:
            raise C3DContentError("The C3D file contains analog channels but zero samples.")
        analogs = _fast_analogs(buf, params, lay)
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
    # A sum is finite iff every term is (barring overflow, then the exact check runs): one
    # pass without a multi-MB boolean temporary.
    if not np.isfinite(analogs.sum()) and not (finite := np.isfinite(analogs)).all():
        bad = [labels[i] for i in np.flatnonzero(~finite.all(axis=1))]
        raise C3DContentError(
            f"The C3D file contains NaN or infinite analog values (channels: {', '.join(bad)}); "
            "the recording is corrupt and cannot be analysed."
        )
    metadata = _metadata(params, file_name, warnings)
    return Recording(rate=rate, labels=labels, analogs=analogs, units=units, metadata=metadata,
                     warnings=warnings, reader=reader, file_name=file_name)


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
