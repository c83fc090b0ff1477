"""JitSignalService end to end: real gRPC on loopback, real PostgreSQL, sessions created by a real
IngestService sharing the content store; real GHOSTLY samples and synthetic C3D files."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import numpy as np
import pytest

from ghostly.jit_signal.v1 import jit_signal_pb2 as pb
from libs.db import signal_cache
from libs.emg import PROCESSING_VERSION, AnalysisSettings, analyze_file, chain_1d, highpass, muscle_channels, read_c3d
from services.jit_signal import cache as jcache
from tests.helpers import by_channel, collect, sample_files, wait_for, wait_until

SAMPLES = sample_files()
needs_samples = pytest.mark.skipif(not SAMPLES, reason="real GHOSTLY samples not found")
RAW, FILTERED, ENVELOPE = pb.SIGNAL_KIND_RAW, pb.SIGNAL_KIND_FILTERED, pb.SIGNAL_KIND_ENVELOPE


def expected_signals(path: Path) -> tuple[float, dict[str, dict[str, np.ndarray]]]:
    """Direct computation: raw = read_c3d cast to float32; filtered = highpass; envelope = the
    ingest pipeline's envelope (analyze's chain_1d with the ingest settings' parameters)."""
    rec = read_c3d(path)
    params = AnalysisSettings().processing
    out = {}
    for m in muscle_channels(rec):
        row = rec.analogs[m.raw_index]
        _, env = chain_1d(row, rec.rate, params)
        out[m.name] = {
            "raw": row.astype(np.float32),
            "filtered": highpass(row, rec.rate).astype(np.float32),
            "envelope": env.astype(np.float32),
        }
    return rec.rate, out


async def _code(coro) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value


# --------------------------------------------------------------------------- values


@needs_samples
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
async def test_samples_full_resolution_match_direct_computation(stub, sessions, sample):
    reply = await sessions.upload(sample.read_bytes(), sample.name)
    rate, expected = expected_signals(sample)
    for kind, name in ((RAW, "raw"), (FILTERED, "filtered"), (ENVELOPE, "envelope")):
        chunks = await collect(stub, session_id=reply.session_id, kind=kind, full_resolution=True)
        got = by_channel(chunks)
        assert list(got) == list(expected)
        info = chunks[0].info
        assert info.downsampling == "none" and info.processing_version == PROCESSING_VERSION
        for ch, sig in expected.items():
            assert np.array_equal(got[ch]["values"], sig[name]), (kind, ch)
            assert np.array_equal(got[ch]["indices"], np.arange(sig[name].size))
            assert info.points_per_channel[ch] == sig[name].size
            assert all(c.sample_rate_hz == rate and c.unit == "V" and c.kind == kind for c in got[ch]["chunks"])
            assert [c.last_for_channel for c in got[ch]["chunks"]][-1] and not any(
                c.last_for_channel for c in got[ch]["chunks"][:-1]
            )
        assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
        assert all(len(c.SerializeToString()) < 1 << 20 for c in chunks)


@needs_samples
async def test_sample_envelope_is_the_ingest_envelope_and_peaks_survive(stub, sessions, db):
    sample = SAMPLES[-1]
    reply = await sessions.upload(sample.read_bytes(), sample.name)
    analysis = analyze_file(sample)  # what ingest stored: its contractions come from this envelope
    rate, expected = expected_signals(sample)
    for kind, name in ((RAW, "raw"), (FILTERED, "filtered"), (ENVELOPE, "envelope")):
        chunks = await collect(stub, session_id=reply.session_id, kind=kind, include_contractions=True)
        got = by_channel(chunks)
        assert chunks[0].info.downsampling == "minmaxlttb"
        for ch, sig in expected.items():
            full = sig[name]
            idx, vals = got[ch]["indices"], got[ch]["values"]
            assert vals.size == 1000 and np.all(np.diff(idx) > 0)
            assert np.array_equal(vals, full[idx])  # exact values at exact sample indices
            assert int(np.argmax(full)) in idx and int(np.argmin(full)) in idx  # peaks survive
            assert idx[0] == 0 and idx[-1] == full.size - 1
            first = got[ch]["chunks"][0]
            assert first.t0_s == idx[0] / rate
            want = [x for c in analysis.channel(ch).contractions for x in (c.start_s, c.end_s)]
            assert [x for c in first.contractions for x in (c.start_s, c.end_s)] == pytest.approx(want)
            assert len(want) > 0


async def test_synthetic_window_exact_and_indices(stub, sessions):
    reply, path = await sessions.synthetic()
    rate, expected = expected_signals(path)
    t0, t1 = 10.0, 12.5  # 9900 .. 12375 at 990 Hz
    i0, i1 = int(np.ceil(t0 * rate)), int(np.ceil(t1 * rate))
    for kind, name in ((RAW, "raw"), (FILTERED, "filtered"), (ENVELOPE, "envelope")):
        chunks = await collect(
            stub,
            session_id=reply.session_id,
            kind=kind,
            t_start_s=t0,
            t_end_s=t1,
            full_resolution=True,
            chunk_samples=256,
            channels=["CH2"],
        )
        got = by_channel(chunks)
        assert list(got) == ["CH2"]
        info = chunks[0].info
        assert info.window_sample_count == i1 - i0 and info.t_start_s == i0 / rate and info.t_end_s == i1 / rate
        assert np.array_equal(got["CH2"]["values"], expected["CH2"][name][i0:i1])
        assert np.array_equal(got["CH2"]["indices"], np.arange(i0, i1))
        assert all(c.sample_count <= 256 for c in chunks)
        assert [c.t0_s for c in chunks] == [(i0 + 256 * k) / rate for k in range(len(chunks))]
    # Downsampled window: indices are absolute sample indices, times = index / rate.
    chunks = await collect(
        stub,
        session_id=reply.session_id,
        kind=ENVELOPE,
        t_start_s=5.05,
        t_end_s=20.0,
        max_points=300,
        chunk_samples=256,
    )
    got = by_channel(chunks)
    j0, j1 = int(np.ceil(5.05 * rate - 1e-9)), int(np.ceil(20.0 * rate - 1e-9))
    for ch in ("CH1", "CH2"):
        full = expected[ch]["envelope"][j0:j1]
        idx = got[ch]["indices"]
        assert idx.size == 300 and idx[0] == j0 and idx[-1] == j1 - 1
        assert np.array_equal(got[ch]["values"], expected[ch]["envelope"][idx])
        assert j0 + int(np.argmax(full)) in idx and j0 + int(np.argmin(full)) in idx
        assert [c.sample_count for c in got[ch]["chunks"]] == [256, 44]
        assert [c.t0_s for c in got[ch]["chunks"]] == [idx[0] / rate, idx[256] / rate]


async def test_list_channels(stub, sessions):
    reply, path = await sessions.synthetic()
    rec = read_c3d(path)
    res = await stub.ListChannels(pb.ListChannelsRequest(session_id=reply.session_id))
    assert [(c.name, c.raw_label, c.side, c.unit) for c in res.channels] == [
        ("CH1", "CH1 Raw", "left", "V"),
        ("CH2", "CH2 Raw", "right", "V"),
    ]
    for c in res.channels:
        assert c.sample_rate_hz == rec.rate and c.sample_count == rec.n_samples
        assert c.duration_s == pytest.approx(rec.duration_s)


# --------------------------------------------------------------------------- errors


async def test_errors(stub, sessions, db):
    reply, _ = await sessions.synthetic()
    sid = reply.session_id
    cases = [
        (dict(session_id="nope"), grpc.StatusCode.INVALID_ARGUMENT, "UUID"),
        (dict(session_id="00000000-0000-0000-0000-000000000000"), grpc.StatusCode.NOT_FOUND, "does not exist"),
        (dict(session_id=sid, channels=["CH9"]), grpc.StatusCode.NOT_FOUND, "CH9"),
        (dict(session_id=sid, channels=["CH1", "CH1"]), grpc.StatusCode.INVALID_ARGUMENT, "repeat"),
        (dict(session_id=sid, kind=7), grpc.StatusCode.INVALID_ARGUMENT, "kind"),
        (dict(session_id=sid, t_start_s=5.0, t_end_s=5.0), grpc.StatusCode.INVALID_ARGUMENT, "t_end_s"),
        (dict(session_id=sid, t_start_s=-1.0), grpc.StatusCode.INVALID_ARGUMENT, "t_start_s"),
        (dict(session_id=sid, t_start_s=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "t_start_s"),
        (dict(session_id=sid, t_start_s=1e6), grpc.StatusCode.INVALID_ARGUMENT, "after the end"),
        (dict(session_id=sid, max_points=2), grpc.StatusCode.INVALID_ARGUMENT, "max_points"),
        (dict(session_id=sid, max_points=2_000_000), grpc.StatusCode.INVALID_ARGUMENT, "max_points"),
        (dict(session_id=sid, chunk_samples=10), grpc.StatusCode.INVALID_ARGUMENT, "chunk_samples"),
    ]
    for kw, code, text in cases:
        err = await _code(collect(stub, **kw))
        assert err.code() == code and text in err.details(), (kw, err.details())
    # max_points is ignored for full resolution
    assert await collect(stub, session_id=sid, max_points=2, full_resolution=True, t_end_s=0.5)
    err = await _code(stub.ListChannels(pb.ListChannelsRequest(session_id="00000000-0000-0000-0000-000000000000")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # not completed -> FAILED_PRECONDITION
    await db.execute("UPDATE therapy_sessions SET processing_status = 'processing' WHERE id = $1::uuid", sid)
    try:
        err = await _code(collect(stub, session_id=sid))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "processing" in err.details()
        err = await _code(stub.ListChannels(pb.ListChannelsRequest(session_id=sid)))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await db.execute("UPDATE therapy_sessions SET processing_status = 'completed' WHERE id = $1::uuid", sid)


async def test_failed_session_is_failed_precondition(stub, sessions, db):
    name = "Ghostly_Emg_20240506_14-30-59-9999.c3d"
    err = await _code(sessions.upload(b"not a c3d file at all" * 40, name))  # ingest records it as failed
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    sid = await db.fetchval("SELECT id::text FROM therapy_sessions WHERE file_path = $1", f"{sessions.patient}/{name}")
    err = await _code(collect(stub, session_id=sid))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "failed" in err.details()


async def test_modified_file_is_data_loss(stub, sessions, jit_server, servicer):
    reply, _ = await sessions.synthetic()
    sid = reply.session_id
    first = await collect(stub, session_id=sid, kind=ENVELOPE)  # verified and cached
    await servicer.drain()
    assert (await collect(stub, session_id=sid, kind=ENVELOPE))[0].info.cache_hit
    stored = jit_server.context.config.store_dir / reply.file_path
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0x01  # same size, one bit flipped
    stored.write_bytes(bytes(data))
    hashes = servicer.stats["hashes"]
    for kw in (dict(kind=ENVELOPE), dict(kind=RAW, full_resolution=True)):  # cached or not: refused
        err = await _code(collect(stub, session_id=sid, **kw))
        assert err.code() == grpc.StatusCode.DATA_LOSS and "file_hash" in err.details()
    assert servicer.stats["hashes"] > hashes
    stored.unlink()
    err = await _code(collect(stub, session_id=sid))
    assert err.code() == grpc.StatusCode.DATA_LOSS and "missing" in err.details()
    assert first


async def test_hot_path_does_not_rehash(stub, sessions, servicer):
    reply, _ = await sessions.synthetic()
    await collect(stub, session_id=reply.session_id)
    hashes, reads = servicer.stats["hashes"], servicer.stats["c3d_reads"]
    for kw in (dict(), dict(kind=ENVELOPE), dict(kind=FILTERED, full_resolution=True), dict(t_start_s=3.0)):
        await collect(stub, session_id=reply.session_id, **kw)
    assert servicer.stats["hashes"] == hashes
    assert servicer.stats["c3d_reads"] <= reads + 1  # raw already in memory; one read for the filter chain


# --------------------------------------------------------------------------- cache


async def _row(db, sid, key=None):
    rows = await db.fetch("SELECT * FROM signal_processing_cache WHERE session_id = $1::uuid ORDER BY created_at", sid)
    return rows


async def test_cache_hit_miss_and_row(stub, sessions, db, servicer, jit_server):
    reply, _ = await sessions.synthetic()
    sid = reply.session_id
    kw = dict(session_id=sid, kind=ENVELOPE, channels=["CH1", "CH2"])
    a = await collect(stub, **kw)
    assert not a[0].info.cache_hit
    await servicer.drain()
    rows = await _row(db, sid)
    assert len(rows) == 1
    r = rows[0]
    assert r["cache_type"] == "envelope_rms" and r["cache_valid"] and r["processing_version"] == PROCESSING_VERSION
    assert r["hit_count"] == 0 and r["expires_at"] > r["created_at"]
    assert r["expires_at"] - r["created_at"] == dt.timedelta(days=7)
    cache_file = jit_server.context.config.cache_dir / (r["processing_request_hash"] + jcache.SUFFIX)
    assert cache_file.is_file()
    for _ in range(3):
        b = await collect(stub, **kw)
        assert b[0].info.cache_hit
        assert [(c.channel, c.samples, c.sample_indices) for c in b] == [
            (c.channel, c.samples, c.sample_indices) for c in a
        ]
    await servicer.drain()
    r = (await _row(db, sid))[0]
    assert r["hit_count"] == 3 and r["last_accessed_at"] > rows[0]["last_accessed_at"]
    # Served from the file too (memory LRU cleared: read + decompress).
    servicer.payloads.clear()
    c = await collect(stub, **kw)
    assert c[0].info.cache_hit and [x.samples for x in c] == [x.samples for x in a]
    # Other requests are other keys and cache types.
    await collect(stub, session_id=sid, kind=RAW)
    await collect(stub, session_id=sid, kind=RAW, full_resolution=True, t_end_s=2.0)
    await servicer.drain()
    types = sorted(r["cache_type"] for r in await _row(db, sid))
    assert types == ["envelope_rms", "export_full", "visualization_1k"]


async def test_cache_expiry_and_invalidation(stub, sessions, db, servicer, ingest_stub):
    from ghostly.ingest.v1 import ingest_pb2

    reply, _ = await sessions.synthetic()
    sid = reply.session_id
    kw = dict(session_id=sid, kind=ENVELOPE, include_contractions=True)
    await collect(stub, **kw)
    await servicer.drain()
    assert (await collect(stub, **kw))[0].info.cache_hit
    # expired -> recomputed, row marked 'expired' then revalidated with a new expiry
    await db.execute(
        "UPDATE signal_processing_cache SET expires_at = now() - interval '1 minute' WHERE session_id = $1::uuid", sid
    )
    res = await collect(stub, **kw)
    assert not res[0].info.cache_hit
    r = (await _row(db, sid))[0]
    assert r["invalidated_reason"] == "expired" and r["invalidated_at"] is not None
    await servicer.drain()
    r = (await _row(db, sid))[0]
    assert r["cache_valid"] and r["invalidated_reason"] == "expired"  # reason of the last rebuild
    assert r["expires_at"] - r["created_at"] == dt.timedelta(days=7)
    assert (await collect(stub, **kw))[0].info.cache_hit
    # cache_valid = false is never served
    await db.execute("UPDATE signal_processing_cache SET cache_valid = false WHERE session_id = $1::uuid", sid)
    assert not (await collect(stub, **kw))[0].info.cache_hit
    await servicer.drain()
    assert (await collect(stub, **kw))[0].info.cache_hit
    # manual invalidation through the admin function
    assert await signal_cache.invalidate(db, (await _row(db, sid))[0]["session_id"]) == 1
    r = (await _row(db, sid))[0]
    assert not r["cache_valid"] and r["invalidated_reason"] == "manual"
    assert not (await collect(stub, **kw))[0].info.cache_hit
    await servicer.drain()
    # reprocess through ingest -> 'session_reprocessed'; new contractions are served afterwards
    before = await collect(stub, **kw)
    assert before[0].info.cache_hit
    async for _ in ingest_stub.Reprocess(
        ingest_pb2.ReprocessRequest(session_id=sid, options=ingest_pb2.AnalysisOptions(duration_threshold_s=0.5))
    ):
        pass
    r = (await _row(db, sid))[0]
    assert not r["cache_valid"] and r["invalidated_reason"] == "session_reprocessed"
    after = await collect(stub, **kw)
    assert not after[0].info.cache_hit
    assert all(c.meets_duration for c in after[0].contractions)  # the new run's classification
    assert [c.samples for c in after] == [c.samples for c in before]  # same signal


async def test_size_limit_evicts_least_recently_used(database_url, sessions, tmp_path, ingest_server):
    import dataclasses

    from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
    from libs.grpc_server import start_service
    from services.jit_signal.server import SPEC

    reply, _ = await sessions.synthetic()
    cfg = dataclasses.replace(ingest_server.context.config, cache_dir=tmp_path / "small-cache", cache_max_bytes=40_000)
    server = await start_service(SPEC, cfg, port=0)
    svc = server.context.jit_signal
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = jit_signal_pb2_grpc.JitSignalServiceStub(ch)
            windows = [(float(t), float(t) + 8.0) for t in range(0, 30, 3)]
            for t0, t1 in windows:
                await collect(stub, session_id=reply.session_id, t_start_s=t0, t_end_s=t1, kind=RAW)
                await svc.drain()
                files = list((tmp_path / "small-cache").glob("*.gjs"))
                assert sum(f.stat().st_size for f in files) <= 40_000
            assert svc.disk.evictions > 0
            svc.payloads.clear()
            last = await collect(stub, session_id=reply.session_id, t_start_s=windows[-1][0], t_end_s=windows[-1][1])
            assert last[0].info.cache_hit
            first = await collect(stub, session_id=reply.session_id, t_start_s=windows[0][0], t_end_s=windows[0][1])
            assert not first[0].info.cache_hit  # evicted: recomputed
    finally:
        await server.stop(0)


# --------------------------------------------------------------------------- concurrency


async def test_cancelled_full_resolution_stream_cleans_up(stub, sessions, servicer):
    reply, _ = await sessions.synthetic(duration_s=120.0)
    call = stub.StreamSignals(
        pb.StreamSignalsRequest(session_id=reply.session_id, kind=FILTERED, full_resolution=True, chunk_samples=256)
    )
    first = await call.read()
    assert first.info.window_sample_count > 100_000 and servicer.inflight >= 1
    cancelled = servicer.stats["cancelled"]
    call.cancel()

    async def settled():
        return servicer.inflight == 0 and servicer.stats["cancelled"] == cancelled + 1

    await wait_for(settled, timeout=5)
    await servicer.drain()
    assert len(servicer.payload_flight) == 0 and len(servicer.signal_flight) == 0


async def test_deadline_stops_the_stream(stub, sessions, servicer):
    reply, _ = await sessions.synthetic(duration_s=120.0)
    call = stub.StreamSignals(
        pb.StreamSignalsRequest(session_id=reply.session_id, kind=RAW, full_resolution=True, chunk_samples=256),
        timeout=0.3,
    )
    await call.read()
    await wait_until(call.done, timeout=10)  # a reader that stalls until its deadline has passed

    async def drain() -> None:
        while await call.read() is not grpc.aio.EOF:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await drain()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def settled():
        return servicer.inflight == 0

    await wait_for(settled, timeout=5)


async def test_twenty_concurrent_streams_compute_once(stub, sessions, servicer, db):
    reply, path = await sessions.synthetic()
    _rate, expected = expected_signals(path)
    reads, comps = servicer.stats["c3d_reads"], servicer.stats["computations"]
    kw = dict(session_id=reply.session_id, kind=ENVELOPE, max_points=500)
    results = await asyncio.gather(*(collect(stub, **kw) for _ in range(20)))
    assert servicer.stats["c3d_reads"] == reads + 1 and servicer.stats["computations"] == comps + 1
    ref = [c.samples for c in results[0]]
    assert all([c.samples for c in r] == ref for r in results)
    got = by_channel(results[0])
    for ch in ("CH1", "CH2"):
        assert np.array_equal(got[ch]["values"], expected[ch]["envelope"][got[ch]["indices"]])
    # 20 concurrent full-resolution streams of different kinds share the processed arrays
    mixed = await asyncio.gather(
        *(
            collect(
                stub,
                session_id=reply.session_id,
                kind=(RAW, FILTERED, ENVELOPE)[i % 3],
                full_resolution=True,
                chunk_samples=4096,
            )
            for i in range(20)
        )
    )
    for i, chunks in enumerate(mixed):
        name = ("raw", "filtered", "envelope")[i % 3]
        assert np.array_equal(by_channel(chunks)["CH1"]["values"], expected["CH1"][name])
    assert servicer.stats["c3d_reads"] == reads + 1
    await servicer.drain()
    assert servicer.inflight == 0
    assert (
        await db.fetchval("SELECT count(*) FROM signal_processing_cache WHERE session_id = $1::uuid", reply.session_id)
        == 4
    )


async def test_contraction_markers_carry_masking(stub, sessions, db):
    """Contraction.partially_masked / masked_s (migration 015) come from emg_contractions."""
    reply, _ = await sessions.synthetic()
    sid = reply.session_id
    await db.execute(
        "UPDATE emg_contractions SET partially_masked = true, masked_s = 0.75 "
        "WHERE session_id = $1::uuid AND channel_name = 'CH1' AND contraction_index = 2",
        sid,
    )
    chunks = await collect(stub, session_id=sid, kind=ENVELOPE, include_contractions=True)
    marks = {c.channel: list(c.contractions) for c in chunks if c.contractions}
    assert [(m.index, m.partially_masked, m.masked_s) for m in marks["CH1"]][:3] == [
        (0, False, 0.0),
        (1, False, 0.0),
        (2, True, 0.75),
    ]
    assert all(not m.partially_masked and m.masked_s == 0.0 for m in marks["CH2"])


def test_contraction_markers_of_payloads_cached_before_015():
    """A payload cached before migration 015 holds 9 values per contraction: read as not masked."""
    from services.jit_signal.signals import _contraction_pb

    old = _contraction_pb([3, 1.0, 2.5, 1.5, 1e-4, 5e-5, True, False, False])
    assert (old.index, old.end_s, old.partially_masked, old.masked_s) == (3, 2.5, False, 0.0)
    new = _contraction_pb([3, 1.0, 2.5, 1.5, 1e-4, 5e-5, True, False, False, True, 0.5])
    assert (new.partially_masked, new.masked_s, new.meets_intensity) == (True, 0.5, True)
