"""Pure signal side of the JIT service: request validation, processing, windows, downsampling,
payloads and chunking. No database, no gRPC server, no event loop (callers run the heavy
functions in a thread)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
from tsdownsample import MinMaxLTTBDownsampler

from ghostly.common.v1 import common_pb2
from ghostly.jit_signal.v1 import jit_signal_pb2 as pb
from libs.convert import parse_uuid
from libs.emg import PROCESSING_VERSION, ProcessingParams, chain_1d, inspect_c3d, muscle_channels, read_c3d
from libs.emg.c3d_reader import _WHOLE_READ_MAX_BYTES
from libs.emg.pipeline import LOW_MEMORY_SAMPLES, chain_lowmem, raw_slot, work_size, workspace
from libs.emg.settings import decode_params
from libs.errors import DataLoss, InvalidArgument, NotFound

DEFAULT_POINTS = 1000
MIN_POINTS, MAX_POINTS = 3, 1_000_000
DEFAULT_CHUNK, MIN_CHUNK, MAX_CHUNK = 16384, 256, 262144
KINDS = {
    pb.SIGNAL_KIND_UNSPECIFIED: "raw",
    pb.SIGNAL_KIND_RAW: "raw",
    pb.SIGNAL_KIND_FILTERED: "filtered",
    pb.SIGNAL_KIND_ENVELOPE: "envelope",
}
KIND_ENUM = {"raw": pb.SIGNAL_KIND_RAW, "filtered": pb.SIGNAL_KIND_FILTERED, "envelope": pb.SIGNAL_KIND_ENVELOPE}
F32 = np.dtype("<f4")
U32 = np.dtype("<u4")
# A sample boundary computed from seconds x rate may be off by rounding; this much is ignored.
_EPS = 1e-9


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Plan:
    """A validated StreamSignals request."""

    session_id: uuid.UUID
    channels: tuple[str, ...]  # as requested; empty = all muscle channels
    kind: str  # raw | filtered | envelope
    t_start: float
    t_end: float | None  # None = end of recording
    max_points: int | None  # None = full resolution
    include_contractions: bool
    chunk_samples: int

    @property
    def cache_type(self) -> str:
        """signal_processing_cache.cache_type: full resolution -> export_full; a downsampled
        envelope -> envelope_rms; any other downsampled plot -> visualization_1k."""
        if self.max_points is None:
            return "export_full"
        return "envelope_rms" if self.kind == "envelope" else "visualization_1k"

    def canonical(self) -> str:
        """Everything the payload depends on besides the file hash (chunking is not)."""
        return json.dumps(
            {
                "v": 1,
                "session": str(self.session_id),
                "channels": list(self.channels),
                "kind": self.kind,
                "t_start": repr(self.t_start),
                "t_end": None if self.t_end is None else repr(self.t_end),
                "points": self.max_points or "full",
                "contractions": self.include_contractions,
                "processing_version": PROCESSING_VERSION,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def key_suffix(self) -> str:
        """Hashed after the file hash: key = sha256(file_hash || key_suffix) (also computed in SQL)."""
        return "\n" + self.canonical()


def request_key(file_hash: str, plan: Plan) -> str:
    return hashlib.sha256((file_hash + plan.key_suffix()).encode()).hexdigest()


def plan_request(req: pb.StreamSignalsRequest, max_message_bytes: int) -> Plan:
    sid = parse_uuid(req.session_id, "session_id")
    if req.kind not in KINDS:
        raise InvalidArgument(f"kind {req.kind} is not a known SignalKind (raw, filtered, envelope)")
    t_start = req.t_start_s if req.HasField("t_start_s") else 0.0
    if not math.isfinite(t_start) or t_start < 0:
        raise InvalidArgument(f"t_start_s must be a finite number >= 0, got {t_start!r}")
    t_end = None
    if req.HasField("t_end_s"):
        t_end = req.t_end_s
        if not math.isfinite(t_end) or t_end <= t_start:
            raise InvalidArgument(f"t_end_s must be a finite number > t_start_s ({t_start:g}), got {t_end!r}")
    points = None
    if not req.full_resolution:
        points = req.max_points or DEFAULT_POINTS
        if not MIN_POINTS <= points <= MAX_POINTS:
            raise InvalidArgument(
                f"max_points must be 0 (= {DEFAULT_POINTS}) or in {MIN_POINTS}..{MAX_POINTS}, got {points}"
            )
    chunk = req.chunk_samples or DEFAULT_CHUNK
    if not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise InvalidArgument(
            f"chunk_samples must be 0 (= {DEFAULT_CHUNK}) or in {MIN_CHUNK}..{MAX_CHUNK}, got {chunk}"
        )
    # A chunk carries at most 8 bytes per sample (float32 value + uint32 index): keep it under
    # half the configured message limit whatever the caller asked.
    chunk = max(MIN_CHUNK, min(chunk, max_message_bytes // 16))
    names = tuple(req.channels)
    if any(not n.strip() for n in names):
        raise InvalidArgument("channel names must not be empty")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"channels must not repeat a channel: {', '.join(names)}")
    return Plan(
        sid,
        names,
        KINDS[req.kind],
        float(t_start),
        None if t_end is None else float(t_end),
        points,
        bool(req.include_contractions),
        int(chunk),
    )


def muscle_names(labels: list[str]) -> list[tuple[str, str, str | None]]:
    """(muscle, raw label, default side) from the C3D analog labels, exactly as ingest pairs them."""
    labels_only: Any = SimpleNamespace(labels=list(labels))  # all muscle_channels reads of a Recording
    return [(m.name, m.raw_label, m.side) for m in muscle_channels(labels_only)]


def resolve_channels(plan: Plan, labels: list[str]) -> list[str]:
    available = [m[0] for m in muscle_names(labels)]
    if not plan.channels:
        if not available:
            raise NotFound("the session has no muscle channel")
        return available
    for name in plan.channels:
        if name not in available:
            raise NotFound(
                f"channel {name!r} is not a muscle channel of this session "
                f"(available: {', '.join(available) or 'none'})"
            )
    return list(plan.channels)


def resolve_window(plan: Plan, rate: float, n: int) -> tuple[int, int]:
    """Half-open sample range [i0, i1): samples with t_start <= i/rate < t_end."""
    duration = n / rate
    i0 = max(0, math.ceil(plan.t_start * rate - _EPS))
    if i0 >= n:
        raise InvalidArgument(f"t_start_s {plan.t_start:g} is at or after the end of the recording ({duration:g} s)")
    i1 = n if plan.t_end is None else min(n, math.ceil(plan.t_end * rate - _EPS))
    if i1 <= i0:
        raise InvalidArgument(f"the window [{plan.t_start:g}, {plan.t_end:g}) s contains no sample at {rate:g} Hz")
    return i0, i1


# --------------------------------------------------------------------------- processing

KIND_NAMES = ("raw", "filtered", "envelope")


@dataclass
class Processed:
    """Signals of one C3D (float32, all muscle channels, the whole recording), for the kinds
    computed (the others are None). Read-only arrays shared by every concurrent request;
    requests slice them, never copy them whole."""

    rate: float
    n: int
    units: dict[str, str]
    raw: dict[str, np.ndarray] | None
    filtered: dict[str, np.ndarray] | None = None
    envelope: dict[str, np.ndarray] | None = None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for d in (self.raw or {}, self.filtered or {}, self.envelope or {}) for a in d.values())

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in KIND_NAMES if getattr(self, k) is not None)

    def signal(self, kind: str, channel: str) -> np.ndarray:
        signals = {"raw": self.raw, "filtered": self.filtered, "envelope": self.envelope}[kind]
        assert signals is not None, f"{kind} signals were not computed"
        return signals[channel]

    def only(self, kind: str) -> Processed:
        """This recording's signals of one kind (what the in-memory LRU keeps, per kind)."""
        return Processed(
            self.rate, self.n, self.units, **{k: getattr(self, k) if k == kind else None for k in KIND_NAMES}
        )


_CHANNEL_POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="jit-chain")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def kinds_to_compute(kind: str, n_muscles: int, n: int, keep_bytes: int) -> tuple[str, ...]:
    """What one computation produces for a request of ``kind``: raw alone (no filters);
    for a filtered or envelope request all three kinds of a recording whose float32 signals
    fit easily in the in-memory LRU (``keep_bytes``: one read then serves every plot), else
    only the kind asked for (a long recording: memory for one kind, not three)."""
    if kind == "raw":
        return ("raw",)
    if n <= LOW_MEMORY_SAMPLES and 3 * 4 * n_muscles * n <= keep_bytes // 2:
        return KIND_NAMES
    return (kind,)


def process_source(source, file_name: str, params: ProcessingParams, kinds: tuple[str, ...]) -> Processed:
    """Read the C3D (a path or its bytes) and run THE pipeline per muscle (libs.emg.chain_1d on
    float64, as ingest) for the ``kinds`` asked for. Long recordings (> LOW_MEMORY_SAMPLES)
    run one channel at a time through libs.emg.pipeline.chain_lowmem (bit-identical): the raw
    row is converted into the work buffer, so the float64 working set is two or three signals
    of one channel, plus the float32 results."""
    rec = read_c3d(source, file_name=file_name)
    muscles = muscle_channels(rec)
    n = rec.n_samples
    out = Processed(
        rate=float(rec.rate),
        n=n,
        units={m.name: rec.units[m.raw_index] for m in muscles},
        raw={} if "raw" in kinds else None,
        filtered={} if "filtered" in kinds else None,
        envelope={} if "envelope" in kinds else None,
    )
    chain = out.filtered is not None or out.envelope is not None
    if n <= LOW_MEMORY_SAMPLES:
        if out.raw is not None:
            out.raw.update({m.name: _readonly(rec.channel(m.raw_index).astype(F32)) for m in muscles})
        if chain:

            def one(m):
                f, e = chain_1d(rec.channel(m.raw_index), rec.rate, params)
                return _readonly(f.astype(F32)), _readonly(e.astype(F32))

            # One channel per core: scipy's filters release the GIL, so channels run in parallel.
            results = list(_CHANNEL_POOL.map(one, muscles)) if len(muscles) > 1 else [one(m) for m in muscles]
            for m, (f, e) in zip(muscles, results):
                if out.filtered is not None:
                    out.filtered[m.name] = f
                if out.envelope is not None:
                    out.envelope[m.name] = e
        return out
    with workspace() as ws:
        work = ws.buffer("work", work_size(n))
        for m in muscles:
            raw = rec.row(m.raw_index, raw_slot(work, n))
            if out.raw is not None:
                out.raw[m.name] = _readonly(raw.astype(F32))
            if chain:
                # The float32 results are the chain's outputs (rounded once from float64, as
                # astype would): no float64 signal besides the work buffer.
                f32 = np.empty(n, F32) if out.filtered is not None else None
                e32 = np.empty(n, F32) if out.envelope is not None else None
                chain_lowmem(raw, rec.rate, params, work, e32, f32)
                if f32 is not None and out.filtered is not None:
                    out.filtered[m.name] = _readonly(f32)
                if e32 is not None and out.envelope is not None:
                    out.envelope[m.name] = _readonly(e32)
            del raw
    return out


def process_bytes(data: bytes, file_name: str, params: ProcessingParams, with_chain: bool) -> Processed:
    """``process_source`` of bytes: raw only, or all three kinds (the former interface)."""
    return process_source(data, file_name, params, KIND_NAMES if with_chain else ("raw",))


process_path = process_source  # a path: files above libs.emg's whole-read size are read in blocks


def estimate_stream_bytes(source, kind: str, keep_bytes: int = 256 << 20) -> int:
    """Memory (bytes) of processing ``source`` for a ``kind`` request, from the C3D header and
    parameters only (libs.emg.inspect_c3d), calibrated with bench/bench_memory.py: the file's
    bytes when read whole; the float64 working set of one channel (work buffer + one per
    filtered / envelope computed) or, up to LOW_MEMORY_SAMPLES, of chain_1d on every channel
    thread; the float32 results of the kinds computed (``kinds_to_compute``)."""
    info = inspect_c3d(source)
    n = info.n_samples
    n_muscles = max(1, len(muscle_names(info.labels)))
    kinds = kinds_to_compute(kind, n_muscles, n, keep_bytes)
    resident = info.file_size if info.read_whole else 8 << 20
    chain = [k for k in kinds if k != "raw"]
    if n <= LOW_MEMORY_SAMPLES:
        working = 8 * n * ((7 * min(n_muscles, _CHANNEL_POOL._max_workers)) if chain else 1) + 8 * n * n_muscles
    else:
        working = 10 * n  # the float64 work buffer and masks; the float32 outputs are the results
    results = 4 * n * n_muscles * len(kinds)
    if info.reader == "ezc3d":
        working += info.n_values * 88
    return int(resident + working + results)


def params_from_details(processing: Any) -> ProcessingParams:
    """The ProcessingParams of the ingest run, through the EMG core's codec
    (libs.emg.settings.decode_params of analysis_details[PARAMS_KEY]); defaults when absent."""
    return decode_params(processing)


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever the file's bytes can have changed. ctime cannot be set from user
    space (utime sets it to now), so a rewrite that restores size and mtime still shows."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_HASH_BLOCK = 4 << 20


def read_verified(
    path: str, file_hash: str, file_size: int | None, keep_max: int = _WHOLE_READ_MAX_BYTES
) -> tuple[bytes | None, tuple[int, ...]]:
    """Check the file's SHA-256; returns (bytes, identity), DataLoss if different. The bytes
    are returned (for the cold path to parse) when the file has at most ``keep_max`` bytes;
    a larger file is hashed block by block and None returned (it is then read in blocks by
    libs.emg, never held whole)."""
    try:
        with open(path, "rb") as fh:
            before = file_identity(os.fstat(fh.fileno()))
            if before[2] <= keep_max:
                whole = fh.read()
                data: bytes | None = whole
                size = len(whole)
                digest = hashlib.sha256(whole).hexdigest()
            else:
                data, size, h = None, 0, hashlib.sha256()
                buf = bytearray(_HASH_BLOCK)
                view = memoryview(buf)
                while got := fh.readinto(view):
                    h.update(view[:got])
                    size += got
                digest = h.hexdigest()
    except FileNotFoundError:
        raise DataLoss(f"the stored C3D file {path!r} is missing from the content store") from None
    if file_size is not None and size != file_size:
        raise DataLoss(
            f"the stored C3D file has {size} bytes, the session recorded {file_size}: "
            "the file was modified after ingest"
        )
    if digest != file_hash:
        raise DataLoss(
            f"the stored C3D file no longer matches its file_hash (sha256 {digest[:12]}..., "
            f"recorded {file_hash[:12]}...): the file was modified after ingest"
        )
    if file_identity(os.stat(path)) != before:
        raise DataLoss("the stored C3D file changed while it was being verified")
    return data, before


# --------------------------------------------------------------------------- downsampling

_DOWNSAMPLER = MinMaxLTTBDownsampler()


def downsample(values: np.ndarray, n_out: int) -> np.ndarray:
    """MinMaxLTTB indices (int64, increasing) into ``values``, n_out of them, with the global
    maximum and minimum guaranteed among them (n_out >= 4): LTTB keeps one point per bucket
    and may prefer a neighbour of a peak; the extreme then replaces the nearest selected
    non-endpoint so a plot never loses the highest or lowest value."""
    n = values.size
    if n_out >= n:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(_DOWNSAMPLER.downsample(values, n_out=n_out), dtype=np.int64)
    protected = {0, n - 1}
    for ext in (int(np.argmax(values)), int(np.argmin(values))):
        pos = int(np.searchsorted(idx, ext))
        if pos < idx.size and idx[pos] == ext:
            protected.add(ext)
            continue
        candidates = [p for p in (pos - 1, pos) if 0 <= p < idx.size and int(idx[p]) not in protected]
        if not candidates:
            continue
        best = min(candidates, key=lambda p: abs(int(idx[p]) - ext))
        idx[best] = ext
        idx.sort()
        protected.add(ext)
    return idx


# --------------------------------------------------------------------------- payloads


@dataclass
class ChannelPayload:
    name: str
    unit: str
    values: np.ndarray  # float32 LE, read-only (may be a view of shared arrays)
    indices: np.ndarray | None  # uint32 LE original sample indices; None = contiguous from i0
    contractions: list[list] = field(default_factory=list)


@dataclass
class Payload:
    kind: str
    downsampling: str  # "minmaxlttb" | "none"
    rate: float
    i0: int
    i1: int
    generation: str  # therapy_sessions.processed_at of the ingest run
    channels: list[ChannelPayload]

    @property
    def nbytes(self) -> int:
        return sum(c.values.nbytes + (c.indices.nbytes if c.indices is not None else 0) for c in self.channels) + 512


def build_payload(
    proc: Processed,
    plan: Plan,
    channels: list[str],
    window: tuple[int, int],
    generation: str,
    contractions: dict[str, list[list]],
) -> Payload:
    i0, i1 = window
    out = []
    downsampled = False
    for name in channels:
        sig = proc.signal(plan.kind, name)[i0:i1]  # a view: no copy of the whole signal
        if plan.max_points is not None and plan.max_points < sig.size:
            idx = downsample(sig, plan.max_points)
            values, indices = _readonly(sig[idx]), _readonly((idx + i0).astype(U32))
            downsampled = True
        else:
            values, indices = sig, None
        t0, t1 = i0 / proc.rate, i1 / proc.rate
        marks = [c for c in contractions.get(name, []) if c[2] > t0 and c[1] < t1] if plan.include_contractions else []
        out.append(ChannelPayload(name, proc.units.get(name, "V"), values, indices, marks))
    return Payload(plan.kind, "minmaxlttb" if downsampled else "none", proc.rate, i0, i1, generation, out)


_MAGIC = b"GJSC\x01"
_PROBE = 1 << 16


def _shuffle_compress(body: np.ndarray, level: int) -> list[tuple[bool, bytes]]:
    """Byte planes of 4-byte words (exponents compress, mantissas barely do): each plane is
    zlib-compressed when a probe of it shrinks below 90 %, else stored."""
    planes = body.view(np.uint8).reshape(-1, 4).T
    out = []
    for plane in planes:
        raw = np.ascontiguousarray(plane).tobytes()
        probe = raw[:_PROBE]
        if probe and len(zlib.compress(probe, 1)) < 0.9 * len(probe):
            out.append((True, zlib.compress(raw, level)))
        else:
            out.append((False, raw))
    return out


def encode_payload(p: Payload) -> bytes:
    """Cache file: magic, u32 header length, JSON header, then 4 byte planes of all channel
    words (values float32 then indices uint32, per channel), each zlib'd or stored."""
    parts = []
    chans = []
    for c in p.channels:
        parts.append(np.ascontiguousarray(c.values, dtype=F32).view(U32))
        if c.indices is not None:
            parts.append(np.ascontiguousarray(c.indices, dtype=U32))
        chans.append(
            {
                "name": c.name,
                "unit": c.unit,
                "count": int(c.values.size),
                "indexed": c.indices is not None,
                "contractions": c.contractions,
            }
        )
    body = np.concatenate(parts) if parts else np.zeros(0, U32)
    planes = _shuffle_compress(body, 6 if body.nbytes <= (1 << 20) else 1)
    header = json.dumps(
        {
            "kind": p.kind,
            "downsampling": p.downsampling,
            "rate": p.rate,
            "i0": p.i0,
            "i1": p.i1,
            "generation": p.generation,
            "words": int(body.size),
            "channels": chans,
            "planes": [[z, len(b)] for z, b in planes],
        }
    ).encode()
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *(b for _, b in planes)])


def decode_payload(blob: bytes) -> Payload:
    if not blob.startswith(_MAGIC):
        raise ValueError("not a JIT cache payload")
    (hlen,) = struct.unpack_from("<I", blob, len(_MAGIC))
    pos = len(_MAGIC) + 4
    h = json.loads(blob[pos : pos + hlen])
    pos += hlen
    words = h["words"]
    shuffled = np.empty((4, words), np.uint8)
    for i, (zipped, size) in enumerate(h["planes"]):
        chunk = blob[pos : pos + size]
        pos += size
        shuffled[i] = np.frombuffer(zlib.decompress(chunk) if zipped else chunk, np.uint8, count=words)
    body = np.ascontiguousarray(shuffled.T).view(U32).reshape(-1)
    out, off = [], 0
    for c in h["channels"]:
        n = c["count"]
        values = _readonly(body[off : off + n].view(F32))
        off += n
        indices = None
        if c["indexed"]:
            indices = _readonly(body[off : off + n])
            off += n
        out.append(ChannelPayload(c["name"], c["unit"], values, indices, c["contractions"]))
    return Payload(h["kind"], h["downsampling"], h["rate"], h["i0"], h["i1"], h["generation"], out)


# --------------------------------------------------------------------------- chunks


def _contraction_pb(c: list) -> common_pb2.Contraction:
    # cache.RUN_SQL's array; payloads cached before migration 015 hold the first 9 items only
    # (their rows had partially_masked = false, masked_s = 0 then).
    i, start, end, dur, peak, mean, mi, md, good = c[:9]
    masked, masked_s = (c[9], c[10]) if len(c) >= 11 else (False, 0.0)
    return common_pb2.Contraction(
        index=i,
        start_s=start,
        end_s=end,
        duration_s=dur,
        peak_amplitude=peak,
        mean_amplitude=mean,
        meets_intensity=mi,
        meets_duration=md,
        good=good,
        partially_masked=masked,
        masked_s=masked_s,
    )


def chunks(p: Payload, chunk_samples: int, cache_hit: bool) -> Iterator[pb.SignalChunk]:
    """SignalChunks in request order; each holds a slice (copied into the message only)."""
    kind = KIND_ENUM[p.kind]
    index = 0
    for c in p.channels:
        n = c.values.size
        for off in range(0, n, chunk_samples):
            end = min(n, off + chunk_samples)
            first_sample = int(c.indices[off]) if c.indices is not None else p.i0 + off
            msg = pb.SignalChunk(
                chunk_index=index,
                channel=c.name,
                kind=kind,
                unit=c.unit,
                sample_rate_hz=p.rate,
                t0_s=first_sample / p.rate,
                dtype="float32le",
                samples=c.values[off:end].tobytes(),
                sample_indices=c.indices[off:end].tobytes() if c.indices is not None else b"",
                sample_count=end - off,
                last_for_channel=end == n,
            )
            if off == 0 and c.contractions:
                msg.contractions.extend(_contraction_pb(x) for x in c.contractions)
            if index == 0:
                msg.info.CopyFrom(
                    pb.StreamInfo(
                        processing_version=PROCESSING_VERSION,
                        cache_hit=cache_hit,
                        downsampling=p.downsampling,
                        points_per_channel={x.name: int(x.values.size) for x in p.channels},
                        window_sample_count=p.i1 - p.i0,
                        t_start_s=p.i0 / p.rate,
                        t_end_s=p.i1 / p.rate,
                    )
                )
            index += 1
            yield msg
