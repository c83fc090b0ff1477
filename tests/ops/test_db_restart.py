"""PostgreSQL restarted under load: health follows the database, requests during the outage fail
fast with UNAVAILABLE, the services recover by themselves (no restart, no stale pooled
connection failing the first requests) and no request leaves partial data."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2 as spb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.grpc_server import start_service
from services.ingest.server import SPEC as INGEST
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import connect, make_config, pg_stop_fast, synthetic_file, upload_messages, wait_for
from tests.helpers import register_patient_at as register_patient

PROBE_S = 0.2
RPC_DEADLINE_S = 3.0
OK, UNAVAILABLE = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE


async def _health(channel) -> str:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class Load:
    """Bounded request loops against statistics (reads) and ingest (uploads of new files)."""

    def __init__(self, stats, ingest, session_id, patient, tmp):
        self.stats, self.ingest, self.session_id, self.patient, self.tmp = stats, ingest, session_id, patient, tmp
        self.results: list[tuple[float, str, grpc.StatusCode, float]] = []  # (t, rpc, code, seconds)
        self.stop = asyncio.Event()
        self.seed = 5000
        self.unexpected: list[str] = []

    async def _timed(self, rpc: str, coro):
        t0 = time.monotonic()
        try:
            await coro
            code = OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code not in (OK, UNAVAILABLE):
                self.unexpected.append(f"{rpc}: {code.name}: {exc.details()}")
        self.results.append((t0, rpc, code, time.monotonic() - t0))
        return code

    async def reads(self):
        while not self.stop.is_set():
            # A database read whose success does not depend on row visibility (RLS, migration 012).
            await self._timed(
                "ListSessions", self.stats.ListSessions(spb.ListSessionsRequest(page_size=5), timeout=RPC_DEADLINE_S)
            )
            await asyncio.sleep(0.02)

    async def uploads(self):
        while not self.stop.is_set():
            self.seed += 1
            name, data = await asyncio.to_thread(synthetic_file, self.tmp, self.seed, 30.0)
            await self._timed(
                "Upload", self.ingest.Upload(upload_messages(data, name, self.patient), timeout=RPC_DEADLINE_S + 5)
            )

    def window(self, t0: float, t1: float):
        return [r for r in self.results if t0 <= r[0] <= t1]


async def test_postgres_restart_under_load(own_pg, tmp_path):
    cfg = make_config(own_pg.dsn, tmp_path, health_interval_s=PROBE_S, ingest_workers=1)
    patient = await register_patient(own_pg.dsn)
    ingest = await start_service(INGEST, cfg, port=0, metrics_port=0)
    stats = await start_service(STATISTICS, cfg, port=0, metrics_port=0)
    ich = grpc.aio.insecure_channel(ingest.address)
    sch = grpc.aio.insecure_channel(stats.address)
    try:
        istub, sstub = ingest_pb2_grpc.IngestServiceStub(ich), statistics_pb2_grpc.StatisticsServiceStub(sch)
        name, data = synthetic_file(tmp_path, 4242)
        first = await istub.Upload(upload_messages(data, name, patient), timeout=30)
        assert await _health(sch) == "SERVING" and await _health(ich) == "SERVING"

        load = Load(sstub, istub, first.session_id, patient, tmp_path)
        tasks = [asyncio.create_task(load.reads()), asyncio.create_task(load.uploads())]
        await asyncio.sleep(1.0)
        assert any(r[2] is OK for r in load.results), load.results

        # -- outage --------------------------------------------------------------------------
        await asyncio.to_thread(pg_stop_fast, own_pg)
        t_stopped = time.monotonic()

        async def both(state):
            return await _health(sch) == state and await _health(ich) == state

        await wait_for(lambda: both("NOT_SERVING"), timeout=5 * PROBE_S + 1.0, interval=0.02)
        t_not_serving = time.monotonic()
        assert t_not_serving - t_stopped < 5 * PROBE_S + 1.0
        await asyncio.sleep(1.5)  # requests keep coming during the outage
        t_up = time.monotonic()
        await asyncio.to_thread(own_pg.start)
        await wait_for(lambda: both("SERVING"), timeout=10, interval=0.02)
        t_serving = time.monotonic()
        await asyncio.sleep(1.5)  # and after the recovery
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)

        during = load.window(t_stopped + 0.05, t_up)
        assert during, "no request ran during the outage"
        codes = {r[2] for r in during}
        assert codes <= {OK, UNAVAILABLE}, load.unexpected
        assert UNAVAILABLE in codes
        assert all(r[3] < RPC_DEADLINE_S for r in during if r[1] == "ListSessions"), "a read hung during the outage"
        everything = {r[2] for r in load.results}
        assert everything <= {OK, UNAVAILABLE}, load.unexpected

        # Recovery without restart, and no stale pooled connection: every read that STARTED after
        # health went back to SERVING succeeded.
        after = [r for r in load.results if r[0] >= t_serving]
        reads_after = [r for r in after if r[1] == "ListSessions"]
        assert len(reads_after) >= 10
        assert all(r[2] is OK for r in reads_after), [(r[2], round(r[0] - t_serving, 3)) for r in reads_after]
        assert any(r[2] is OK for r in after if r[1] == "Upload") or not [r for r in after if r[1] == "Upload"]
        status = await istub.GetProcessingStatus(
            ingest_pb2.GetProcessingStatusRequest(session_id=first.session_id), timeout=2
        )
        assert status.session_id == first.session_id
        print(
            f"\nrestart: NOT_SERVING {t_not_serving - t_stopped:.2f}s after stop; SERVING "
            f"{t_serving - t_up:.2f}s after start; {len(load.results)} requests, {len(during)} during the "
            f"outage ({sum(r[2] is UNAVAILABLE for r in during)} UNAVAILABLE)"
        )

        # -- no partial data -----------------------------------------------------------------
        conn = await connect(own_pg.dsn)
        try:

            async def settled():
                return not await conn.fetchval(
                    "SELECT count(*) FROM therapy_sessions WHERE processing_status = 'processing'"
                )

            await wait_for(settled, timeout=10, interval=0.1)
            rows = await conn.fetch(
                "SELECT s.id, s.processing_status, "
                "  (SELECT count(*) FROM emg_statistics e WHERE e.session_id = s.id) AS stats, "
                "  (SELECT count(*) FROM performance_scores p WHERE p.session_id = s.id) AS scores "
                "FROM therapy_sessions s"
            )
        finally:
            await conn.close()
        for r in rows:
            if r["processing_status"] == "completed":
                assert r["stats"] == 2 and r["scores"] == 1, dict(r)
            else:
                assert r["processing_status"] == "failed" and r["stats"] == 0 and r["scores"] == 0, dict(r)
    finally:
        await ich.close()
        await sch.close()
        await stats.stop(0)
        await ingest.stop(0)


async def test_upload_claimed_then_database_lost_settles_after_recovery(own_pg, tmp_path):
    """The narrow window: the session row is claimed ('processing'), the analysis runs, and the
    database dies before the results are written. The caller gets UNAVAILABLE; once the database
    is back the already computed results are written: the session ends 'completed', never
    'processing' forever."""
    cfg = make_config(own_pg.dsn, tmp_path, health_interval_s=PROBE_S, ingest_workers=1)
    patient = await register_patient(own_pg.dsn)
    ingest = await start_service(INGEST, cfg, port=0, metrics_port=0)
    servicer_analyze = pool = None
    try:
        # Make the analysis step wait until the database is down (deterministic window).
        gate_in, gate_out = asyncio.Event(), asyncio.Event()
        svc = ingest.context.ingest
        pool = svc.analysis
        servicer_analyze = pool.analyze

        async def slow_analyze(*a, **kw):
            outcome = await servicer_analyze(*a, **kw)
            gate_in.set()
            await gate_out.wait()
            return outcome

        pool.analyze = slow_analyze

        name, data = synthetic_file(tmp_path, 777)
        async with grpc.aio.insecure_channel(ingest.address) as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)
            call = asyncio.ensure_future(stub.Upload(upload_messages(data, name, patient), timeout=30))
            await asyncio.wait_for(gate_in.wait(), 20)
            await asyncio.to_thread(pg_stop_fast, own_pg)
            gate_out.set()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() is UNAVAILABLE, info.value
            assert svc.settling, "no background settle scheduled"
            await asyncio.to_thread(own_pg.start)
            await asyncio.wait_for(asyncio.gather(*svc.settling), timeout=20)
        conn = await connect(own_pg.dsn)
        try:
            row = await conn.fetchrow(
                "SELECT processing_status, (SELECT count(*) FROM emg_statistics e WHERE e.session_id = s.id) n "
                "FROM therapy_sessions s WHERE file_path LIKE $1",
                f"%{name}",
            )
        finally:
            await conn.close()
        assert row["processing_status"] == "completed" and row["n"] == 2, dict(row)
    finally:
        if servicer_analyze is not None:
            pool.analyze = servicer_analyze
        if not own_pg.running():
            own_pg.start()
        await ingest.stop(0)


async def test_idle_pooled_connections_are_not_stale_after_restart(own_pg, tmp_path):
    """Idle connections of the pool die with the server. The failing health probe expires the
    whole pool, so the first burst of requests after recovery gets fresh connections (without
    it, each idle connection would fail one request with UNAVAILABLE first)."""
    cfg = make_config(own_pg.dsn, tmp_path, health_interval_s=PROBE_S, db_pool_min=1, db_pool_max=8)
    stats = await start_service(STATISTICS, cfg, port=0, metrics_port=0)
    try:
        async with grpc.aio.insecure_channel(stats.address) as ch:
            stub = statistics_pb2_grpc.StatisticsServiceStub(ch)
            req = spb.ListSessionsRequest(page_size=5)

            async def burst():
                return await asyncio.gather(
                    *(stub.ListSessions(req, timeout=5) for _ in range(16)), return_exceptions=True
                )

            warm = await burst()
            assert all(not isinstance(r, Exception) for r in warm), warm
            assert stats.context.pool.get_size() >= 4, "the burst should have opened several connections"
            await asyncio.to_thread(pg_stop_fast, own_pg)

            async def state(name):
                return await _health(ch) == name

            await wait_for(lambda: state("NOT_SERVING"), timeout=5, interval=0.02)
            await asyncio.to_thread(own_pg.start)
            await wait_for(lambda: state("SERVING"), timeout=10, interval=0.02)
            after = await burst()
            failures = [r for r in after if isinstance(r, Exception)]
            assert not failures, [f.code() for f in failures]
    finally:
        await stats.stop(0)
