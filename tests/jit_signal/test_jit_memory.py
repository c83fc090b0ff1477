"""JitSignalService memory by design (issue 16, item 2): a processed recording is kept once per
(file, params, kind) and every window is sliced from it; long recordings are processed one
kind and one channel at a time; cold computations are bounded; a recording whose header says
it would need more than the memory budget is refused with RESOURCE_EXHAUSTED; ListChannels
never waits behind a computation; payloads too large for the disk cache are not encoded."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest

from ghostly.jit_signal.v1 import jit_signal_pb2 as pb
from services.jit_signal import cache as jcache
from services.jit_signal import servicer as jservicer
from services.jit_signal import signals
from tests.helpers import by_channel, collect, wait_until
from tests.jit_signal.test_jit_signal import expected_signals

RAW, FILTERED, ENVELOPE = pb.SIGNAL_KIND_RAW, pb.SIGNAL_KIND_FILTERED, pb.SIGNAL_KIND_ENVELOPE


@pytest.fixture
def long_recordings(monkeypatch):
    """Every recording takes the long-recording path (one kind at a time, chain_lowmem)."""
    monkeypatch.setattr(signals, "LOW_MEMORY_SAMPLES", 1000)


async def test_new_windows_are_sliced_from_the_kept_recording(stub, sessions, servicer, monkeypatch):
    """An LRU that holds one kind but not all three (a long recording against the default
    256 MiB): each new window used to read the C3D and run the filters again."""
    reply, path = await sessions.synthetic(duration_s=60.0)
    n = 60 * 990
    one_kind = 2 * 4 * n
    monkeypatch.setattr(servicer, "signals", jcache.MemoryLRU(int(one_kind * 1.5)))
    _rate, expected = expected_signals(path)
    reads = servicer.stats["c3d_reads"]
    windows = [(0.0, 10.0), (10.0, 20.0), (5.0, 55.0), (30.0, None)]
    for t0, t1 in windows:
        kw = dict(session_id=reply.session_id, kind=ENVELOPE, t_start_s=t0)
        if t1 is not None:
            kw["t_end_s"] = t1
        for extra in (dict(max_points=400), dict(full_resolution=True)):
            got = by_channel(await collect(stub, **kw, **extra))
            for ch in ("CH1", "CH2"):
                assert np.array_equal(got[ch]["values"], expected[ch]["envelope"][got[ch]["indices"]])
    assert servicer.stats["c3d_reads"] == reads + 1
    assert servicer.signals.total <= one_kind + 1024  # the envelope only, once


async def test_long_recording_values_equal_the_ingest_pipeline(stub, sessions, servicer, long_recordings):
    reply, path = await sessions.synthetic(duration_s=50.0)
    _rate, expected = expected_signals(path)
    reads = servicer.stats["c3d_reads"]
    for kind, name in ((ENVELOPE, "envelope"), (FILTERED, "filtered"), (RAW, "raw")):
        got = by_channel(await collect(stub, session_id=reply.session_id, kind=kind, full_resolution=True))
        for ch in ("CH1", "CH2"):
            assert np.array_equal(got[ch]["values"], expected[ch][name]), (kind, ch)
    assert servicer.stats["c3d_reads"] == reads + 3  # one kind per read: never three at once
    await collect(stub, session_id=reply.session_id, kind=FILTERED, t_start_s=7.0, max_points=300)
    assert servicer.stats["c3d_reads"] == reads + 3


async def test_concurrent_streams_of_a_long_recording_share_one_computation(
    stub, sessions, servicer, long_recordings, monkeypatch
):
    reply, _path = await sessions.synthetic(duration_s=60.0)
    running, peak = [0], [0]
    real = signals.process_source

    def counted(*a, **kw):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.2)
            return real(*a, **kw)
        finally:
            running[0] -= 1

    monkeypatch.setattr(jservicer, "process_source", counted)
    reads = servicer.stats["c3d_reads"]
    kw = dict(session_id=reply.session_id, kind=ENVELOPE, full_resolution=True)
    a, b, _c = await asyncio.gather(
        collect(stub, **kw),
        collect(stub, **kw),
        collect(stub, **dict(kw, t_start_s=20.0, full_resolution=False, max_points=50)),
    )
    assert servicer.stats["c3d_reads"] == reads + 1 and peak[0] == 1
    assert [m.samples for m in a] == [m.samples for m in b]
    # a filtered stream meanwhile waits for the envelope's computation (one per recording at a time)
    await asyncio.gather(collect(stub, **dict(kw, kind=FILTERED)), collect(stub, **kw))
    assert servicer.stats["c3d_reads"] == reads + 2 and peak[0] == 1


async def test_cold_computations_are_bounded(stub, sessions, servicer, monkeypatch):
    replies = [(await sessions.synthetic(duration_s=30.0))[0] for _ in range(4)]
    monkeypatch.setattr(servicer, "cold", asyncio.Semaphore(1))
    running, peak = [0], [0]
    real = signals.process_source
    lock = threading.Lock()

    def counted(*a, **kw):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.1)
            return real(*a, **kw)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(jservicer, "process_source", counted)
    await asyncio.gather(*(collect(stub, session_id=r.session_id, kind=ENVELOPE) for r in replies))
    assert peak[0] == 1


async def test_list_channels_does_not_wait_behind_computations(stub, sessions, servicer, monkeypatch):
    busy, other = (await sessions.synthetic(duration_s=30.0))[0], (await sessions.synthetic(duration_s=30.0))[0]
    release = threading.Event()
    started = threading.Event()
    real = signals.process_source

    def blocked(*a, **kw):
        started.set()
        release.wait(20)
        return real(*a, **kw)

    monkeypatch.setattr(jservicer, "process_source", blocked)
    monkeypatch.setattr(servicer, "cold", asyncio.Semaphore(1))
    streams = [asyncio.ensure_future(collect(stub, session_id=s.session_id, kind=ENVELOPE)) for s in (busy, other)]
    try:
        await wait_until(started.is_set)
        for sid in (busy.session_id, other.session_id):  # computing, and waiting for a slot
            t = time.perf_counter()
            reply = await stub.ListChannels(pb.ListChannelsRequest(session_id=sid), timeout=2)
            assert time.perf_counter() - t < 1.0
            assert [c.name for c in reply.channels] == ["CH1", "CH2"]
            assert reply.channels[0].sample_count == 30 * 990
    finally:
        release.set()
        await asyncio.gather(*streams)


async def test_over_the_memory_budget_is_resource_exhausted(stub, sessions, servicer, monkeypatch):
    reply, _ = await sessions.synthetic(duration_s=30.0)
    need = signals.estimate_stream_bytes(_stored_path(servicer, reply), "envelope", servicer.signals.max_bytes)
    monkeypatch.setattr(servicer, "budget", need - 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub, session_id=reply.session_id, kind=ENVELOPE)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB" in info.value.details() and "MiB" in info.value.details()
    assert (await stub.ListChannels(pb.ListChannelsRequest(session_id=reply.session_id))).channels
    monkeypatch.setattr(servicer, "budget", need)
    assert await collect(stub, session_id=reply.session_id, kind=ENVELOPE)


def _stored_path(servicer, reply):
    return servicer.ctx.config.store_dir / reply.file_path


async def test_payloads_too_large_for_the_disk_cache_are_not_encoded(stub, sessions, servicer, db, monkeypatch):
    reply, path = await sessions.synthetic(duration_s=30.0)
    monkeypatch.setattr(jservicer, "PERSIST_MAX_BYTES", 50_000)
    _rate, expected = expected_signals(path)
    reads, skipped = servicer.stats["c3d_reads"], servicer.stats["not_persisted"]
    for _ in range(2):
        got = by_channel(await collect(stub, session_id=reply.session_id, kind=ENVELOPE, full_resolution=True))
        assert np.array_equal(got["CH2"]["values"], expected["CH2"]["envelope"])
    await servicer.drain()
    assert servicer.stats["not_persisted"] == skipped + 2 and servicer.stats["c3d_reads"] == reads + 1
    assert (
        await db.fetchval("SELECT count(*) FROM signal_processing_cache WHERE session_id = $1::uuid", reply.session_id)
        == 0
    )
    # a plot of the same session is small: cached as before
    await collect(stub, session_id=reply.session_id, kind=ENVELOPE)
    await servicer.drain()
    assert (
        await db.fetchval("SELECT count(*) FROM signal_processing_cache WHERE session_id = $1::uuid", reply.session_id)
        == 1
    )


def test_estimate_and_kinds_from_the_header(tmp_path):
    from libs.emg.synthetic import SyntheticSpec, write_synthetic_c3d

    path = tmp_path / "s.c3d"
    write_synthetic_c3d(path, SyntheticSpec(duration_s=30.0))
    n = 20 * 990
    assert signals.kinds_to_compute("raw", 2, n, 256 << 20) == ("raw",)
    assert signals.kinds_to_compute("envelope", 2, n, 256 << 20) == ("raw", "filtered", "envelope")
    assert signals.kinds_to_compute("envelope", 2, n, 3 * 4 * 2 * n) == ("envelope",)  # LRU too small for 3
    assert signals.kinds_to_compute("filtered", 2, 10**8, 256 << 20) == ("filtered",)  # long recording
    est = signals.estimate_stream_bytes(path, "envelope")
    assert path.stat().st_size + 3 * 4 * 2 * n < est < 64 << 20
