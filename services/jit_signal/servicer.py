"""JitSignalService: processed EMG signals streamed from the source C3D (see README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from ghostly.jit_signal.v1 import jit_signal_pb2 as pb
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from libs import auth
from libs.convert import parse_uuid
from libs.db import access
from libs.emg import PROCESSING_VERSION, EmgError, MemoryBudgetExceeded, inspect_c3d
from libs.errors import DataLoss, FailedPrecondition, NotFound, ResourceExhausted
from libs.grpc_server import ServiceContext
from libs.storage import ContentStore
from services.jit_signal import cache as c
from services.jit_signal import repository as q
from services.jit_signal.signals import (
    Payload,
    Plan,
    Processed,
    build_payload,
    chunks,
    decode_payload,
    encode_payload,
    estimate_stream_bytes,
    file_identity,
    kinds_to_compute,
    muscle_names,
    params_from_details,
    plan_request,
    process_source,
    read_verified,
    request_key,
    resolve_channels,
    resolve_window,
)

log = logging.getLogger("ghostly.jit_signal")

# In-process memory bounds (bytes); environment overrides for operators.
HIT_FLUSH_DELAY_S = 0.2
# Cache maintenance (sweep): at start, then this often; invalid rows are kept this long.
SWEEP_INTERVAL_S = 3600.0
SWEEP_KEEP_INVALID_DAYS = 30
# Larger payloads (full-resolution streams of long recordings) are not written to the disk
# cache: encoding one for it copies it 3-4 times over.
PERSIST_MAX_BYTES = 16 << 20
_THREAD_READ_BYTES = 1 << 20


def _check_status(row) -> None:
    status = row["processing_status"]
    if status != "completed":
        why = f": {row['error_message']}" if status == "failed" and row["error_message"] else ""
        raise FailedPrecondition(
            f"session is {status}, not completed{why}; signals are served for processed sessions only"
        )


class JitSignalServicer(jit_signal_pb2_grpc.JitSignalServiceServicer):
    def __init__(self, ctx: ServiceContext, store: ContentStore):
        assert ctx.pool is not None, "JitSignalService needs a database pool"
        self.ctx, self.db, self.store = ctx, ctx.pool, store
        self.max_message_bytes = ctx.config.max_message_bytes
        self.disk = c.DiskCache(ctx.config.cache_dir, ctx.config.cache_max_bytes)
        # decoded payloads, keyed (request key, generation); processed recordings, keyed (file
        # hash, params, chain)
        self.payloads = c.MemoryLRU(ctx.config.jit_payload_memory_bytes)
        self.signals = c.MemoryLRU(ctx.config.jit_signal_memory_bytes)
        self.verified: dict[str, tuple[tuple[int, ...], str]] = {}  # path -> (file identity, verified sha256)
        self.payload_flight = c.SingleFlight()
        self.signal_flight = c.SingleFlight()
        # Recordings processed at once (the rest wait their turn), and the memory one may need.
        self.cold = asyncio.Semaphore(ctx.config.jit_cold_computations)
        self.budget = ctx.config.analysis_memory_budget_bytes
        self.pending: dict[tuple[str, str], Payload] = {}  # computed, cache row not written yet
        self.inflight = 0  # StreamSignals handlers running now
        self.background: set[asyncio.Task] = set()  # cache writes, hit flushes
        self.stats: Counter[str] = Counter()
        self._hits: Counter = Counter()
        self._hit_task: asyncio.Task | None = None
        self._sweeper: asyncio.Task[None] | None = None  # the periodic cache sweep (start_sweeper)

    # -- RPCs ------------------------------------------------------------------------------
    async def StreamSignals(
        self, request: pb.StreamSignalsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SignalChunk]:
        self.inflight += 1
        try:
            plan = plan_request(request, self.max_message_bytes)
            payload, hit = await self._resolve(plan)
            for msg in chunks(payload, plan.chunk_samples, hit):
                yield msg  # awaits HTTP/2 flow control: a slow reader holds one chunk, not the file
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away (cancel, deadline, disconnect). grpc.aio cancels the task that
            # drives this generator; the generator itself is then closed (GeneratorExit) at its
            # pending yield. Either way: nothing else to stop (no work is left behind except the
            # detached cache write), clean up and re-raise.
            self.stats["cancelled"] += 1
            raise
        finally:
            self.inflight -= 1

    # Queries run as the caller (RLS of the ghostly_jit_signal role); cache writes detached
    # from a request keep its identity (tasks copy the request's context).
    async def _fetchrow(self, sql: str, *args):
        async with access.acquire(self.db) as conn:
            return await conn.fetchrow(sql, *args)

    async def _fetch(self, sql: str, *args):
        async with access.acquire(self.db) as conn:
            return await conn.fetch(sql, *args)

    async def _fetchval(self, sql: str, *args):
        async with access.acquire(self.db) as conn:
            return await conn.fetchval(sql, *args)

    async def _execute(self, sql: str, *args):
        async with access.acquire(self.db) as conn:
            return await conn.execute(sql, *args)

    async def _ensure_visible(self, row, session_id) -> None:
        """A therapist sees only their own patients' sessions (NOT_FOUND otherwise)."""
        if auth.current().is_therapist:
            async with access.acquire(self.db) as conn:
                await access.ensure_patient_visible(conn, row["patient_id"], f"session {session_id}")

    async def ListChannels(
        self, request: pb.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChannelsResponse:
        sid = parse_uuid(request.session_id, "session_id")
        row = await self._fetchrow(q.LIST, sid)
        if row is None:
            raise NotFound(f"session {sid} does not exist")  # the parsed id: same text as for a foreign one
        await self._ensure_visible(row, sid)
        _check_status(row)
        stats = row["stats"] or {}
        rate, n = float(row["original_sampling_rate"]), int(row["original_sample_count"])
        out = pb.ListChannelsResponse()
        for name, raw_label, default_side in muscle_names(row["channel_names"] or []):
            st = stats.get(name) or {}
            out.channels.add(
                name=name,
                raw_label=raw_label,
                side=st.get("side") or default_side or "",
                sample_rate_hz=rate,
                sample_count=n,
                duration_s=n / rate if rate else 0.0,
                unit=st.get("unit") or "V",
            )
        return out

    # -- resolution ------------------------------------------------------------------------
    async def _resolve(self, plan: Plan) -> tuple[Payload, bool]:
        row = await self._fetchrow(q.HOT, plan.session_id, plan.key_suffix())
        if row is None:
            raise NotFound(f"session {plan.session_id} does not exist")
        await self._ensure_visible(row, plan.session_id)
        _check_status(row)
        channels = resolve_channels(plan, row["channel_names"] or [])
        window = resolve_window(plan, float(row["original_sampling_rate"]), int(row["original_sample_count"]))
        key = request_key(row["file_hash"], plan)
        gen = row["processed_at"].isoformat() if row["processed_at"] else ""
        try:
            async with self.store.local_path(row["file_path"]) as path:
                data = await self._verify(path, row)
                if row["cache_id"] is not None and row["cache_valid"]:
                    if row["cache_expired"]:
                        await self._execute(q.MARK_EXPIRED, row["cache_id"])
                        self.stats["expired"] += 1
                    elif row["cache_version"] == PROCESSING_VERSION:
                        payload = await self._cached(key, gen)
                        if payload is not None:
                            self.stats["hits"] += 1
                            self._record_hit(row["cache_id"])
                            return payload, True
                self.stats["misses"] += 1
                if row["cache_id"] is None:
                    # No row yet, but computed a moment ago in this process (its row is being
                    # written, or was committed after our read): share it. Never for an invalid or
                    # expired row.
                    recent = self.pending.get((key, gen)) or self.payloads.get((key, gen))
                    if recent is not None:
                        return recent, False
                payload = await self.payload_flight.do(
                    (key, gen), lambda: self._compute(plan, row, channels, window, key, Path(path), data)
                )
                return payload, False
        except NotFound:
            raise DataLoss(
                f"the C3D file {row['file_path']!r} of session {plan.session_id} is missing from the content store"
            ) from None

    async def _verify(self, path: Path, row) -> bytes | None:
        """Cheap on the hot path: one stat() compared with the identity of the last verified
        read. Otherwise read + SHA-256 (returned bytes are reused by the cold path)."""
        try:
            ident = file_identity(os.stat(path))
        except FileNotFoundError:
            raise NotFound("missing") from None
        memo = self.verified.get(str(path))
        if memo is not None and memo == (ident, row["file_hash"]):
            return None
        if ident[2] != row["file_size_bytes"]:
            raise DataLoss(
                f"the stored C3D file has {ident[2]} bytes, the session recorded {row['file_size_bytes']}: "
                "the file was modified after ingest"
            )
        self.verified.pop(str(path), None)
        self.stats["hashes"] += 1
        data, ident = await asyncio.to_thread(read_verified, str(path), row["file_hash"], row["file_size_bytes"])
        if len(self.verified) > 100_000:
            self.verified.clear()
        self.verified[str(path)] = (ident, row["file_hash"])
        return data

    async def _cached(self, key: str, gen: str) -> Payload | None:
        payload = self.payloads.get((key, gen))
        if payload is not None:
            return payload
        size = self.disk._index.get(key, 0)
        blob = await asyncio.to_thread(self.disk.get, key) if size > _THREAD_READ_BYTES else self.disk.get(key)
        if blob is None:
            return None
        try:
            payload = (
                await asyncio.to_thread(decode_payload, blob)
                if len(blob) > _THREAD_READ_BYTES
                else decode_payload(blob)
            )
        except Exception:  # noqa: BLE001 - a damaged cache file is a miss, never an error
            log.warning("unreadable cache file %s; recomputing", key)
            self.disk.discard(key)
            return None
        if payload.generation != gen:
            return None  # written for another ingest run of the session
        self.payloads.put((key, gen), payload)
        return payload

    async def _compute(
        self, plan: Plan, row, channels: list[str], window: tuple[int, int], key: str, path: Path, data: bytes | None
    ) -> Payload:
        run = await self._fetch(q.RUN, plan.session_id, plan.include_contractions)
        processed_at = run[0]["processed_at"] if run else row["processed_at"]
        gen = processed_at.isoformat() if processed_at else ""
        params = next((params_from_details(r["processing"]) for r in run if r["processing"] is not None), None)
        if params is None:
            params = params_from_details(None)
        marks = {r["channel_name"]: r["contractions"] or [] for r in run if r["channel_name"]}
        proc = await self._signals(row, params, plan.kind, path, data)
        if plan.max_points is not None and len(channels) * (window[1] - window[0]) > 2_000_000:
            payload = await asyncio.to_thread(build_payload, proc, plan, channels, window, gen, marks)
        else:
            payload = build_payload(proc, plan, channels, window, gen, marks)
        self.stats["computations"] += 1
        if payload.nbytes > PERSIST_MAX_BYTES:
            # A full-resolution stream of a long recording: views of the processed signals
            # kept in memory (rebuilt from them in no time); encoding it for the disk cache
            # would copy it 3-4 times over.
            self.stats["not_persisted"] += 1
            return payload
        self.payloads.put((key, gen), payload)
        self.pending[(key, gen)] = payload
        self._spawn(self._persist(plan, key, payload, processed_at, (key, gen)))
        return payload

    async def _signals(self, row, params, kind: str, path: Path, data: bytes | None) -> Processed:
        """The processed recording for ``kind``: from the in-memory LRU (one entry per file,
        params and kind: any window of any later request is sliced from it), else computed
        once (single flight per file and params: concurrent streams of one file share one
        computation and its arrays), at most ``jit_cold_computations`` recordings at a time,
        and refused (RESOURCE_EXHAUSTED) when the C3D's header says processing it would need
        more than the analysis memory budget."""
        file_hash = row["file_hash"]
        fkey = (file_hash, params)  # one computation per recording at a time, whatever the kind
        while True:
            found = self.signals.get((file_hash, params, kind))
            if found is not None:
                return found

            async def load():
                async with self.cold:
                    done = self.signals.get((file_hash, params, kind))
                    if done is not None:  # computed by the flight that held the slot before us
                        return {kind: done}
                    return await self._process(row, params, kind, path, data)

            result = await self.signal_flight.do(fkey, load)
            if kind in result:
                return result[kind]
            # We joined a flight computing another kind of this recording (raw, or one kind of
            # a long recording): ours is computed next, once that flight has been forgotten.
            await asyncio.sleep(0)

    async def _process(self, row, params, kind: str, path: Path, data: bytes | None) -> dict[str, Processed]:
        file_hash, size = row["file_hash"], row["file_size_bytes"]
        source = data if data is not None else str(path)
        try:
            info = await asyncio.to_thread(inspect_c3d, source)
        except EmgError:
            info = None  # the read below raises the same error with its message
        n_muscles = max(1, len(muscle_names(row["channel_names"] or [])))
        kinds = kinds_to_compute(kind, n_muscles, info.n_samples if info else 0, self.signals.max_bytes)
        if info is not None and self.budget > 0:
            need = await asyncio.to_thread(estimate_stream_bytes, source, kind, self.signals.max_bytes)
            if need > self.budget:
                self.stats["over_budget"] += 1
                raise ResourceExhausted(
                    str(
                        MemoryBudgetExceeded(
                            need, self.budget, f"processing the C3D file of session {row['file_path']!r}"
                        )
                    )
                )

        def work():
            blob = data
            if blob is None:
                memo = self.verified.get(str(path))
                if memo is None or memo[1] != file_hash or file_identity(os.stat(path)) != memo[0]:
                    blob, ident = read_verified(str(path), file_hash, size)
                    self.verified[str(path)] = (ident, file_hash)
            proc = process_source(blob if blob is not None else str(path), path.name, params, kinds)
            if blob is None:
                # Read from the file after its hash was verified (small files again whole, long
                # ones in blocks): it must not have changed meanwhile (ctime moves with any
                # write, a replacement changes the inode).
                memo = self.verified.get(str(path))
                if memo is None or file_identity(os.stat(path)) != memo[0]:
                    self.verified.pop(str(path), None)
                    raise DataLoss("the stored C3D file changed while it was being processed")
            return proc

        proc = await asyncio.to_thread(work)
        self.stats["c3d_reads"] += 1
        out = {k: proc.only(k) for k in proc.kinds}
        for k, one in out.items():
            self.signals.put((file_hash, params, k), one)
        return out

    # -- background work -------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def _persist(self, plan: Plan, key: str, payload: Payload, processed_at, pending_key) -> None:
        """Write the payload file, then (re)validate the index row. Detached from the request:
        the work is done already, and other clients will want it."""
        try:
            blob = await asyncio.to_thread(encode_payload, payload)
            if not await asyncio.to_thread(self.disk.put, key, blob):
                return  # larger than the whole cache: not cached
            stored = await self._fetchval(
                q.UPSERT, plan.session_id, key, processed_at, PROCESSING_VERSION, plan.cache_type
            )
            self.stats["stored" if stored else "store_skipped"] += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("could not store cache entry %s", key, exc_info=True)
        finally:
            self.pending.pop(pending_key, None)

    def _record_hit(self, cache_id) -> None:
        """Hit accounting off the hot path: counted here, written in one batched UPDATE shortly
        after (20 concurrent hits on one row do not queue on its row lock)."""
        self._hits[cache_id] += 1
        if self._hit_task is None:
            self._hit_task = self._spawn(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(HIT_FLUSH_DELAY_S)
        finally:
            self._hit_task = None
        await self.flush_hits()

    async def flush_hits(self) -> None:
        pending, self._hits = self._hits, Counter()
        if not pending:
            return
        try:
            await self.db.execute(q.HITS, list(pending), list(pending.values()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("could not record %d cache hits", sum(pending.values()), exc_info=True)

    async def drain(self) -> None:
        """Wait for background cache writes and write pending hit counts (tests, shutdown)."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
        await self.flush_hits()

    # -- maintenance -------------------------------------------------------------------------
    async def sweep(self, keep_invalid_days: int = SWEEP_KEEP_INVALID_DAYS) -> dict[str, int]:
        """Mark expired cache rows, delete the payload files of rows that are not valid, drop
        invalid rows untouched for `keep_invalid_days`. Safe while requests are served: an
        invalid row is never served, and a valid row whose file is gone is a miss."""
        async with self.db.acquire() as conn:
            expired = await conn.execute(q.SWEEP_EXPIRED)
            keys = [r["processing_request_hash"] for r in await conn.fetch(q.SWEEP_INVALID)]
            removed = await asyncio.to_thread(self._remove_files, keys)
            deleted = await conn.execute(q.SWEEP_DELETE, int(keep_invalid_days))
        counts = {
            "expired": int(expired.split()[-1]),
            "files_removed": removed,
            "rows_deleted": int(deleted.split()[-1]),
        }
        if any(counts.values()):
            log.info("signal cache sweep: %s", counts)
        return counts

    def _remove_files(self, keys: list[str]) -> int:
        removed = 0
        for key in keys:
            if self.disk.path(key).exists():
                self.disk.discard(key)
                removed += 1
        return removed

    async def _sweep_periodically(self, interval_s: float) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # maintenance only: retried at the next interval
                log.warning("signal cache sweep failed", exc_info=True)
            await asyncio.sleep(interval_s)

    def start_sweeper(self, interval_s: float = SWEEP_INTERVAL_S) -> None:
        """Run `sweep` now and then every `interval_s` until `close`."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_periodically(interval_s), name="jit-signal-cache-sweep"
            )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        try:
            await asyncio.wait_for(self.drain(), 5.0)
        except TimeoutError:
            for t in list(self.background):
                t.cancel()


async def build(ctx: ServiceContext) -> JitSignalServicer:
    from libs.storage import open_store

    servicer = JitSignalServicer(ctx, open_store(ctx.config.store_location, on_stop=ctx.on_stop))
    ctx.on_stop.append(servicer.close)
    servicer.start_sweeper()
    ctx.jit_signal = servicer  # type: ignore[attr-defined]  # reachable from tests and embedding code through RunningService.context
    return servicer
