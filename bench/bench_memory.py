"""Peak memory of one analysis and of one JIT stream for large C3D files (issue 16, items 2 and 5).

Generates GHOSTLY-layout files (4 analog channels: CH1/CH2 Raw + activated at 990 Hz, one
point at 33 Hz, Intel) of 10/40/128/256 MB in 16-bit integer and float storage under /tmp
(synthetic EMG: noise and a contraction every 8 s), then measures the peak RSS (VmHWM) of

  ingest   the analysis the ingest pool runs (services.ingest.worker._analyze on the stored
           path) in a fresh process;
  jit      jit_signal serving one full-resolution envelope stream of the file: with
           --service, a real jit_signal server (its own process, fresh per file) over a
           database where the real ingest service registered the file; else the servicer's
           compute path (services.jit_signal.signals.process_path) in a fresh process.

Target: peak <= 3 x file size + 200 MB (the ~100 MB of interpreter, numpy and scipy
included). Also prints the estimate (libs.emg.estimate_analysis_bytes) next to the measured
working set. Each process is alone on the machine while it is measured (one at a time).

    .venv/bin/python bench/bench_memory.py [--sizes 10,40,128,256] [--formats int,float]
                                           [--service] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.*
from bench.common import ROOT

MB = 1_000_000
RATE, POINT_RATE, N_SUB, N_CH = 990.0, 33.0, 30, 4
INT_SCALE = 0.16781e-6  # V per LSB (GHOSTLY's 16-bit quantisation step)


# --------------------------------------------------------------------------- files


def _params(n_frames: int, storage: str) -> bytes:
    """Parameter section (Intel): POINT, ANALOG, INFO, SUBJECTS, as GHOSTLY writes them."""
    is_float = storage == "float"
    labels = ["CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated"]
    frames = n_frames if n_frames <= 32767 else (n_frames - 65536 if n_frames <= 65535 else -1)
    groups: dict[str, list[tuple[str, int, list[Any]]]] = {
        "POINT": [
            ("USED", 2, [1]),
            ("SCALE", 4, [-1.0 if is_float else 0.1]),
            ("RATE", 4, [POINT_RATE]),
            ("FRAMES", 2, [frames]),
            ("LABELS", -1, ["PlayerPosition"]),
        ],
        "ANALOG": [
            ("USED", 2, [N_CH]),
            ("LABELS", -1, labels),
            ("UNITS", -1, ["V"] * N_CH),
            ("SCALE", 4, [1.0 if is_float else INT_SCALE] * 2 + [1.0] * 2),
            ("OFFSET", 2, [0] * N_CH),
            ("GEN_SCALE", 4, [1.0]),
            ("RATE", 4, [RATE]),
        ],
        "INFO": [
            ("GAME_NAME", -1, ["Ghostly"]),
            ("GAME_LEVEL", 2, [1]),
            ("DURATION", 4, [n_frames / POINT_RATE]),
            ("TIME", -1, ["2024", "5", "6", "14", "30"]),
        ],
        "SUBJECTS": [("PLAYER_NAME", -1, ["Bench"]), ("GAME_SCORE", 4, [12.0])],
    }
    items = []
    for gid, (g, plist) in enumerate(groups.items(), 1):
        items.append((struct.pack("bb", len(g), -gid) + g.encode(), b"\x00"))
        for name, code, value in plist:
            if code == -1:
                width = max(len(s) for s in value)
                data, dims = b"".join(s.ljust(width).encode() for s in value), [width, len(value)]
            elif code == 2:
                data, dims = struct.pack(f"<{len(value)}h", *value), [len(value)]
            else:
                data, dims = struct.pack(f"<{len(value)}f", *value), [len(value)]
            rest = struct.pack("bB", code, len(dims)) + bytes(dims) + data + b"\x00"
            items.append((struct.pack("bb", len(name), gid) + name.encode(), rest))
    out = bytearray(b"\x01\x50\x00\x54")
    for k, (head, rest) in enumerate(items):
        out += head + struct.pack("<H", 0 if k == len(items) - 1 else 2 + len(rest)) + rest
    nblocks = math.ceil(len(out) / 512)
    out[2] = nblocks
    return bytes(out.ljust(nblocks * 512, b"\x00"))


def write_file(path: Path, size_mb: float, storage: str, seed: int = 0) -> Path:
    """A GHOSTLY-layout file of about size_mb MB, written block by block (bounded memory)."""
    import numpy as np

    vb = 4 if storage == "float" else 2
    frame_bytes = vb * (4 + N_SUB * N_CH)
    n_frames = int(size_mb * MB) // frame_bytes
    params = _params(n_frames, storage)
    header = bytearray(512)
    header[0], header[1] = 2, 0x50
    struct.pack_into("<hhhHHh", header, 2, 1, N_SUB * N_CH, 1, min(65535, n_frames), 0, 0)
    struct.pack_into(
        "<fHHf", header, 12, -1.0 if storage == "float" else 0.1, 2 + len(params) // 512, N_SUB, POINT_RATE
    )
    rng = np.random.default_rng(seed)
    block = 33 * 60  # frames per block: one minute
    with open(path, "wb") as fh:
        fh.write(bytes(header) + params)
        for f0 in range(0, n_frames, block):
            nf = min(block, n_frames - f0)
            n = nf * N_SUB
            t = (np.arange(n) + f0 * N_SUB) / RATE
            frames = np.zeros((nf, 4 + N_SUB * N_CH), dtype=np.float64)
            frames[:, :3] = rng.normal(0, 100, (nf, 3))
            an = np.empty((N_CH, n))
            for ch in range(2):
                on = ((t + 3 * ch) % 8.0) < 2.5  # a 2.5 s contraction every 8 s
                an[ch] = rng.normal(0, 5e-6, n) + on * rng.normal(0, 300e-6, n)
                an[2 + ch] = on.astype(float)
            frames[:, 4:] = an.reshape(N_CH, nf, N_SUB).transpose(1, 2, 0).reshape(nf, -1)
            if storage == "float":
                fh.write(frames.astype("<f4").tobytes())
            else:
                frames[:, 4 : 4 + N_SUB * N_CH] = frames[:, 4:] / np.tile([INT_SCALE, INT_SCALE, 1, 1], N_SUB)
                fh.write(np.clip(np.round(frames), -32768, 32767).astype("<i2").tobytes())
        pad = (-fh.tell()) % 512
        fh.write(b"\x00" * pad)
    return path


# --------------------------------------------------------------------------- measurements

_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
mode, path = sys.argv[1], sys.argv[2]
if mode == "ingest":
    from libs.emg import AnalysisSettings, estimate_analysis_bytes
    from services.ingest.worker import _analyze
    import libs.emg.pipeline  # noqa: what the worker preloads
    base = hwm()
    estimate = estimate_analysis_bytes(path)
    t = time.perf_counter()
    out = _analyze(path, AnalysisSettings(), os.path.basename(path))
    elapsed = time.perf_counter() - t
    ok = out.error is None
    detail = out.error or f"{{sum(c.total_contractions for c in out.analysis.channels)}} contractions"
else:
    from libs.emg import ProcessingParams
    from services.jit_signal import signals
    base = hwm()
    estimate = signals.estimate_stream_bytes(path, "envelope")
    t = time.perf_counter()
    proc = signals.process_path(path, os.path.basename(path), ProcessingParams(), ("envelope",))
    elapsed = time.perf_counter() - t
    ok, detail = True, f"{{proc.nbytes / 1e6:.0f}} MB of envelopes kept"
print(json.dumps(dict(peak=hwm(), base=base, estimate=estimate, elapsed=elapsed, ok=ok, detail=detail)))
"""


def measure_child(mode: str, path: Path) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", _CHILD.format(root=str(ROOT)), mode, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if r.returncode:
        return dict(
            peak=0,
            base=0,
            estimate=0,
            elapsed=time.perf_counter() - t,
            ok=False,
            detail=(r.stderr.strip().splitlines() or ["?"])[-1],
        )
    return json.loads(r.stdout.strip().splitlines()[-1])


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    return 0


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def measure_services(files: list[tuple[str, float, Path]]) -> dict[tuple[str, float], dict]:
    """Through the real services: ingest (fresh service per file: its analysis worker's VmHWM)
    then jit_signal (fresh server per file: its VmHWM serving one full-resolution envelope)."""
    import asyncio

    import asyncpg
    import grpc

    from app.client.ingest import requests
    from bench.common import database, register_patient, services
    from ghostly.ingest.v1 import ingest_pb2_grpc
    from ghostly.jit_signal.v1 import jit_signal_pb2 as pb
    from ghostly.jit_signal.v1 import jit_signal_pb2_grpc

    out: dict[tuple[str, float], dict] = {}
    opts = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        data_dir = str(Path(tmp) / "data")

        async def patient() -> None:
            conn = await asyncpg.connect(dsn)
            await register_patient(conn, "P900")
            await conn.close()

        asyncio.run(patient())
        for storage, size, path in files:
            row: dict = {}
            with services(
                ["ingest"],
                dsn,
                quiet=True,
                GHOSTLY_DATA_DIR=data_dir,
                GHOSTLY_INGEST_WORKERS="1",
                GHOSTLY_MAX_UPLOAD_BYTES=str(300 << 20),
            ) as running:
                server = running.procs["ingest"]
                before = {p: vm_hwm(p) for p in descendants(server.pid)}

                async def upload(path=path):
                    async with grpc.aio.insecure_channel(running.addresses["ingest"], options=opts) as ch:
                        t = time.perf_counter()
                        reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(requests(path, "P900"), timeout=3600)
                        return reply, time.perf_counter() - t

                try:
                    reply, elapsed = asyncio.run(upload())
                    peaks = {p: vm_hwm(p) for p in descendants(server.pid)}
                    worker = max(peaks, key=lambda p: peaks[p] - before.get(p, 0))
                    row["ingest"] = dict(
                        peak=peaks[worker],
                        base=before.get(worker, 0),
                        elapsed=elapsed,
                        ok=reply.session.processing_status == "completed" if hasattr(reply, "session") else True,
                        detail=f"session {getattr(reply, 'session_id', '')}"[:60],
                    )
                    sid = reply.session_id if hasattr(reply, "session_id") else reply.session.id
                except grpc.aio.AioRpcError as exc:
                    row["ingest"] = dict(
                        peak=0, base=0, elapsed=0, ok=False, detail=f"{exc.code().name}: {exc.details()}"
                    )
                    sid = None
            if sid:
                with services(["jit_signal"], dsn, quiet=True, GHOSTLY_DATA_DIR=data_dir) as running:
                    server = running.procs["jit_signal"]
                    base = vm_hwm(server.pid)

                    async def stream(sid=sid):
                        async with grpc.aio.insecure_channel(running.addresses["jit_signal"], options=opts) as ch:
                            stub = jit_signal_pb2_grpc.JitSignalServiceStub(ch)
                            t = time.perf_counter()
                            n = 0
                            async for msg in stub.StreamSignals(
                                pb.StreamSignalsRequest(
                                    session_id=sid, kind=pb.SIGNAL_KIND_ENVELOPE, full_resolution=True
                                ),
                                timeout=3600,
                            ):
                                n += msg.sample_count
                            return n, time.perf_counter() - t

                    try:
                        n, elapsed = asyncio.run(stream())
                        row["jit"] = dict(
                            peak=vm_hwm(server.pid), base=base, elapsed=elapsed, ok=True, detail=f"{n} samples streamed"
                        )
                    except grpc.aio.AioRpcError as exc:
                        row["jit"] = dict(
                            peak=vm_hwm(server.pid),
                            base=base,
                            elapsed=0,
                            ok=False,
                            detail=f"{exc.code().name}: {exc.details()[:80]}",
                        )
            out[(storage, size)] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,40,128,256", help="file sizes in MB")
    ap.add_argument("--formats", default="int,float")
    ap.add_argument("--service", action="store_true", help="also measure through the real ingest / jit_signal services")
    ap.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    formats = args.formats.split(",")
    folder = Path(args.dir or tempfile.mkdtemp(prefix="ghostly-bench-memory-", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    files: list[tuple[str, float, Path]] = []
    for storage in formats:
        for size in sizes:
            path = folder / f"Ghostly_Emg_20240506_14-30-{len(files):02d}-0001.c3d"
            if not path.exists():
                t = time.perf_counter()
                write_file(path, size, storage, seed=len(files))
                print(
                    f"wrote {path.name}: {storage}, {path.stat().st_size / MB:.0f} MB "
                    f"({time.perf_counter() - t:.0f} s)",
                    file=sys.stderr,
                )
            files.append((storage, size, path))
    rows = []
    for storage, size, path in files:
        for mode in ("ingest", "jit"):
            r = measure_child(mode, path)
            rows.append((f"{mode} (process)", storage, path, r))
            print(
                f"  {mode:6} {storage:5} {size:5.0f} MB: peak {r['peak'] / 2**20:6.0f} MiB in {r['elapsed']:.1f} s "
                f"({r['detail']})",
                file=sys.stderr,
            )
    if args.service:
        for (storage, size), row in measure_services(files).items():
            path = next(p for s, z, p in files if (s, z) == (storage, size))
            for mode, r in row.items():
                rows.append((f"{mode} (service)", storage, path, r))
    print(f"\npeak RSS (VmHWM) per process, target <= 3 x file + 200 MB; {os.cpu_count()} CPUs")
    print(
        f"{'path':<17} {'format':<6} {'file MB':>8} {'peak MiB':>9} {'base MiB':>9} {'est. MiB':>9} "
        f"{'target MiB':>11} {'result':>7} {'time s':>8}  detail"
    )
    failed = 0
    for what, storage, path, r in rows:
        size = path.stat().st_size
        target = 3 * size + 200 * MB
        ok = r["ok"] and 0 < r["peak"] <= target
        failed += not ok
        est = r.get("estimate")
        print(
            f"{what:<17} {storage:<6} {size / MB:8.0f} {r['peak'] / 2**20:9.0f} {r['base'] / 2**20:9.0f} "
            f"{(est / 2**20 if est else float('nan')):9.0f} {target / 2**20:11.0f} {'pass' if ok else 'FAIL':>7} "
            f"{r['elapsed']:8.1f}  {r['detail']}"
        )
    if not args.keep and args.dir is None:
        for _, _, path in files:
            path.unlink(missing_ok=True)
        folder.rmdir()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
