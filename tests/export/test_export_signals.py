"""Signal exports end to end (JitSignalService over gRPC): full resolution and downsampled, every
format, cross-checked against the C3D read directly and against StreamSignals replies."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from ghostly.export.v1 import export_pb2 as pb
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from libs.emg import read_c3d
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from tests.helpers import new_patient, run_export, sample_files, upload, variant

SAMPLES = sample_files()
FORMATS = {
    "json": pb.EXPORT_FORMAT_JSON,
    "csv": pb.EXPORT_FORMAT_CSV,
    "excel": pb.EXPORT_FORMAT_EXCEL,
    "matlab": pb.EXPORT_FORMAT_MATLAB,
}
KIND = {"raw": jpb.SIGNAL_KIND_RAW, "filtered": jpb.SIGNAL_KIND_FILTERED, "envelope": jpb.SIGNAL_KIND_ENVELOPE}


@pytest.fixture(scope="module")
async def sig_world(ingest_stub, db, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export-signals")
    patient = await new_patient(db)
    if SAMPLES:
        path = variant(max(SAMPLES, key=lambda p: p.stat().st_size), tmp, 2)
    else:
        spec = SyntheticSpec(
            duration_s=60.0,
            seed=21,
            channels=[ChannelSpec(contractions=regular_contractions(8, 2.0, 6.0)), ChannelSpec()],
        )
        path = tmp / ghostly_file_name(spec, seconds=21)
        write_synthetic_c3d(path, spec)
    r = await upload(ingest_stub, path.read_bytes(), path.name, patient)
    spec = SyntheticSpec(
        duration_s=30.0,
        seed=22,
        time=(2024, 6, 1, 9, 0),
        channels=[ChannelSpec(contractions=regular_contractions(4, 2.0, 6.0)), ChannelSpec()],
    )
    spath = tmp / ghostly_file_name(spec, seconds=22)
    write_synthetic_c3d(spath, spec)
    s = await upload(ingest_stub, spath.read_bytes(), spath.name, patient)
    return {"patient": patient, "main": r.session_id, "path": path, "synthetic": s.session_id, "synthetic_path": spath}


def raw_channels(path: Path) -> dict[str, np.ndarray]:
    rec = read_c3d(path)
    return {
        lab.split()[0]: np.asarray(rec.channel(i), dtype=np.float32)
        for i, lab in enumerate(rec.labels)
        if lab.endswith(" Raw")
    }


async def jit_traces(jit_stub, session_id, kind, full, max_points=0) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    out: dict[str, tuple[list, list]] = {}
    async for ch in jit_stub.StreamSignals(
        jpb.StreamSignalsRequest(session_id=session_id, kind=KIND[kind], full_resolution=full, max_points=max_points),
        timeout=60,
    ):
        v, i = out.setdefault(ch.channel, ([], []))
        v.append(np.frombuffer(ch.samples, "<f4"))
        if ch.sample_indices:
            i.append(np.frombuffer(ch.sample_indices, "<u4"))
    return {c: (np.concatenate(v), np.concatenate(i) if i else None) for c, (v, i) in out.items()}


def load_signals(payload: bytes, fmt: str) -> dict:
    """-> {'labels': [...], 'data': {label: values}, 'time': {label: t}, 'index': {label: idx}} (+ raw handles)."""
    out: dict[str, Any] = {"data": {}, "time": {}, "index": {}}
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(payload.decode())))
        head, body = rows[0], rows[1:]
        if head[0] == "sample_index":  # wide
            cols = list(zip(*body))
            idx = np.array(cols[0], dtype=np.int64)
            t = np.array(cols[1], dtype=np.float64)
            for name, col in zip(head[2:], cols[2:]):
                label = name.rsplit("_", 1)[0]
                out["data"][label] = np.array(col, dtype=np.float32)
                out["time"][label], out["index"][label] = t, idx
        else:  # long: channel,kind,sample_index,time_s,value_V
            assert head == ["channel", "kind", "sample_index", "time_s", "value_V"]
            groups: dict[str, list] = {}
            for c, k, i, ts, v in body:
                groups.setdefault(f"{c}_{k}", []).append((int(i), float(ts), np.float32(v)))
            for label, g in groups.items():
                out["index"][label] = np.array([x[0] for x in g])
                out["time"][label] = np.array([x[1] for x in g])
                out["data"][label] = np.array([x[2] for x in g], dtype=np.float32)
        return out
    if fmt == "json":
        s = json.loads(payload)["signals"]
        for t in s["traces"]:
            out["data"][t["label"]] = np.array(t["values"], dtype=np.float32)
            out["time"][t["label"]] = np.array(s["time_s"] if s["same_time_base"] else t["time_s"])
            out["index"][t["label"]] = np.array(s["sample_index"] if s["same_time_base"] else t["sample_index"])
        return out
    if fmt == "excel":
        import openpyxl

        ws = openpyxl.load_workbook(io.BytesIO(payload), read_only=True)["signals"]
        rows = list(ws.iter_rows(values_only=True))
        head = rows[0]
        fake = "\n".join(
            ",".join("" if v is None else repr(v) if isinstance(v, float) else str(v) for v in r) for r in rows
        )
        return load_signals(fake.encode() + b"\n", "csv")
    if fmt == "matlab":
        from scipy.io import loadmat

        g = loadmat(io.BytesIO(payload), squeeze_me=True, struct_as_record=False)["ghostly"]
        labels = list(np.atleast_1d(g.labels))
        data = np.atleast_2d(g.data.T).T if g.data.ndim == 1 else g.data
        time = g.time
        idx = g.sample_index
        for j, label in enumerate(labels):
            series = data[:, j]
            keep = ~np.isnan(series) if time.ndim == 2 else slice(None)
            out["data"][label] = series[keep].astype(np.float32)
            out["time"][label] = (time[:, j] if time.ndim == 2 else time)[keep]
            out["index"][label] = (idx[:, j] if idx.ndim == 2 else idx)[keep].astype(np.int64)
        out["mat"] = g
        return out
    raise ValueError(fmt)


async def audited(db, started, payload, completed):
    sha = hashlib.sha256(payload).hexdigest()
    assert completed.sha256 == sha and completed.size_bytes == len(payload)
    row = await db.fetchrow("SELECT * FROM export_history WHERE id = $1::uuid", started.export_id)
    assert row["export_hash"] == sha and row["file_size_bytes"] == len(payload)
    assert row["processing_method"] == "jit_c3d_processing" and row["data_source"] == "c3d_file_processed"
    checks = {c["name"]: c for c in row["validation_checks"]}
    assert {"row_count", "channels_non_empty", "points_complete", "values_finite", "hash_verified"} <= set(checks)
    assert all(c["passed"] for c in checks.values()), checks
    assert row["export_status"] == "success" and completed.status == pb.EXPORT_STATUS_SUCCESS
    return row


@pytest.mark.parametrize("fmt", FORMATS)
async def test_research_full_raw_equals_the_c3d(export_stub, db, sig_world, fmt):
    started, payload, completed, n_chunks = await run_export(
        export_stub,
        type=pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL,
        format=FORMATS[fmt],
        session_ids=[sig_world["main"]],
        timeout=300,
    )
    row = await audited(db, started, payload, completed)
    assert n_chunks == -(-len(payload) // (1 << 20))
    assert str(row["session_id"]) == sig_world["main"]
    raw = raw_channels(sig_world["path"])
    got = load_signals(payload, fmt)
    assert sorted(got["data"]) == sorted(f"{c}_raw" for c in raw)
    for ch, values in raw.items():
        v = got["data"][f"{ch}_raw"]
        np.testing.assert_array_equal(v, values)  # float32, bit for bit
        n = len(values)
        np.testing.assert_array_equal(got["index"][f"{ch}_raw"], np.arange(n))
        np.testing.assert_allclose(got["time"][f"{ch}_raw"], np.arange(n) / 990.0, rtol=0, atol=1e-12)
    if fmt == "matlab":
        g = got["mat"]
        assert g.rate == 990.0 and list(g.channels) == sorted(raw) and list(g.units) == ["V"] * len(raw)
        assert g.data.shape == (len(next(iter(raw.values()))), len(raw)) and g.time.ndim == 1
        assert g.metadata.processing.full_resolution
        assert g.metadata.session.source_file_sha256 == hashlib.sha256(sig_world["path"].read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_research_full_filtered_and_envelope_match_jit(export_stub, jit_stub, db, sig_world, fmt):
    sid = sig_world["synthetic"]
    started, payload, completed, _ = await run_export(
        export_stub,
        type=pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL,
        format=FORMATS[fmt],
        session_ids=[sid],
        signal_kinds=["filtered", "envelope"],
        channels=["CH1"],
    )
    await audited(db, started, payload, completed)
    got = load_signals(payload, fmt)
    assert sorted(got["data"]) == ["CH1_envelope", "CH1_filtered"]
    for kind in ("filtered", "envelope"):
        ref = (await jit_traces(jit_stub, sid, kind, True))["CH1"][0]
        np.testing.assert_array_equal(got["data"][f"CH1_{kind}"], ref)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_visualization_long_layout_matches_jit(export_stub, jit_stub, db, sig_world, fmt):
    sid = sig_world["main"]
    started, payload, completed, _ = await run_export(
        export_stub,
        type=pb.EXPORT_TYPE_SIGNALS_VISUALIZATION,
        format=FORMATS[fmt],
        session_ids=[sid],
        max_points=500,
        signal_kinds=["raw", "envelope"],
    )
    row = await audited(db, started, payload, completed)
    assert row["export_options"]["max_points"] == 500
    assert row["export_options"]["metadata"]["processing"]["downsampling"] == "minmaxlttb"
    got = load_signals(payload, fmt)
    for kind in ("raw", "envelope"):
        ref = await jit_traces(jit_stub, sid, kind, False, 500)
        for ch, (values, idx) in ref.items():
            label = f"{ch}_{kind}"
            assert len(values) == 500
            np.testing.assert_array_equal(got["data"][label], values)
            np.testing.assert_array_equal(got["index"][label], idx)
            assert idx is not None
            np.testing.assert_allclose(got["time"][label], idx / 990.0, rtol=0, atol=1e-12)


async def test_signal_selection_errors(export_stub, sig_world):
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        (
            dict(session_ids=[sig_world["main"], sig_world["synthetic"]]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "exactly one session",
        ),
        (dict(session_ids=[sig_world["main"]], signal_kinds=["emg"]), grpc.StatusCode.INVALID_ARGUMENT, "emg"),
        (dict(session_ids=[sig_world["main"]], channels=["CH7"]), grpc.StatusCode.NOT_FOUND, "CH7"),
        (dict(session_ids=[sig_world["main"]], max_points=2), grpc.StatusCode.INVALID_ARGUMENT, "max_points"),
    ]
    for fields, code, needle in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await run_export(
                export_stub, type=pb.EXPORT_TYPE_SIGNALS_VISUALIZATION, format=pb.EXPORT_FORMAT_CSV, **fields
            )
        assert info.value.code() == code and needle in info.value.details(), info.value.details()
