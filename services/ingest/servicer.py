"""IngestService: upload / storage event -> content store -> analysis -> statistics tables."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from libs import auth
from libs.convert import SESSION_TYPE_NAME, parse_uuid
from libs.emg import PROCESSING_VERSION, AnalysisSettings, EmgError, MemoryBudgetExceeded, check_analysis_budget
from libs.emg.settings import BFR_SAFE_RANGE
from libs.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from libs.grpc_server import ServiceContext
from libs.grpc_server.interceptor import is_connection_error
from libs.scoring_config import ScoringConfig
from libs.storage import ContentStore, StoredObject, validate_relative_path
from services.ingest import events, outcomes, request_checks
from services.ingest import plan as plan_mod
from services.ingest import repository as repo
from services.ingest.options import options_overrides, settings_from_request
from services.ingest.worker import AnalysisPool

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("ghostly.ingest")

# How long a claimed session's results wait for the database to come back (see _settle_later).
SETTLE_TIMEOUT_S = 300.0
# Re-analyses of one session whose inputs changed meanwhile before Reprocess gives up (ABORTED).
REPROCESS_ATTEMPTS = 3
# A Reprocess work item is taken again when its replica died, at most this many times in all.
ITEM_MAX_ATTEMPTS = 3
REPROCESS_POLL_S = 0.25  # how often a Reprocess call looks for items other replicas finished
FINISHED_ITEMS_KEPT_S = 86400.0  # finished work items are deleted a day later

STATUS = {
    "pending": common_pb2.PROCESSING_STATUS_PENDING,
    "processing": common_pb2.PROCESSING_STATUS_PROCESSING,
    "completed": common_pb2.PROCESSING_STATUS_COMPLETED,
    "failed": common_pb2.PROCESSING_STATUS_FAILED,
}
BFR_FIELDS = {  # BfrInput field -> bfr_monitoring column
    "target_pressure_aop": "target_pressure_aop",
    "actual_pressure_aop": "actual_pressure_aop",
    "pressure_stability_coefficient": "pressure_stability_coefficient",
    "safety_violations_count": "safety_violations_count",
    "safety_violations_duration_s": "safety_violations_duration_seconds",
    "max_pressure_deviation_aop": "max_pressure_deviation_aop",
    "patient_aop_baseline_mmhg": "patient_aop_baseline_mmhg",
    "patient_limb_circumference_cm": "patient_limb_circumference_cm",
    "bfr_session_duration_minutes": "bfr_session_duration_minutes",
    "monitoring_frequency_hz": "monitoring_frequency_hz",
    "cuff_size": "cuff_size",
    "cuff_position": "cuff_position",
    "monitoring_device": "monitoring_device",
    "device_serial_number": "device_serial_number",
}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def bfr_row(meta: ingest_pb2.SessionMetadata, gate: tuple[float, float] = BFR_SAFE_RANGE) -> dict[str, Any] | None:
    """bfr_monitoring values from the request (None when the session had no BFR)."""
    if not meta.HasField("bfr"):
        return None
    b = meta.bfr
    out: dict[str, Any] = {}
    for field, col in BFR_FIELDS.items():
        desc = b.DESCRIPTOR.fields_by_name[field]
        if desc.has_presence:
            out[col] = getattr(b, field) if b.HasField(field) else None
        else:
            out[col] = getattr(b, field) or None
        if isinstance(out[col], str) and "\x00" in out[col]:
            raise InvalidArgument(f"bfr.{field} must not contain NUL characters")
    if out["target_pressure_aop"] is None:
        out["target_pressure_aop"] = 50.0
    if out["actual_pressure_aop"] is None:
        # Plain proto3 double: 0 cannot be told from unset; the column is NOT NULL, and 0 % AOP
        # is a valid reading (the safety gate then fails), as options.py already treats it.
        out["actual_pressure_aop"] = 0.0
    for col in ("target_pressure_aop", "actual_pressure_aop"):
        if not 0 <= out[col] <= 100:
            raise InvalidArgument(f"bfr.{col} must be a percentage of AOP in [0, 100], got {out[col]}")
    lo, hi = gate  # the scoring configuration's gate (callers that know it pass it)
    out["safety_gate_status"] = lo <= out["actual_pressure_aop"] <= hi
    out["safety_violations_count"] = out["safety_violations_count"] or 0
    if b.device_calibration_date:
        try:
            out["device_calibration_date"] = datetime.strptime(b.device_calibration_date, "%Y-%m-%d").date()
        except ValueError:
            raise InvalidArgument("bfr.device_calibration_date must be YYYY-MM-DD") from None
    else:
        out["device_calibration_date"] = None
    return out


def _content_named(path: str, sha256: str) -> str:
    """Where an upload goes when its name is taken by other content (e.g. two tablets)."""
    p = PurePosixPath(path)
    return str(p.with_name(f"{p.stem}__{sha256[:12]}{p.suffix}"))


def _level(meta: ingest_pb2.SessionMetadata) -> int | None:
    return meta.options.game_difficulty_level if meta.options.HasField("game_difficulty_level") else None


def _gated(bfr: dict | None, plan: plan_mod.Plan) -> dict | None:
    """The BFR row with its safety gate from the plan's scoring configuration."""
    if bfr is not None:
        lo, hi = plan.settings.bfr_gate_range
        bfr["safety_gate_status"] = lo <= bfr["actual_pressure_aop"] <= hi
    return bfr


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, ctx: ServiceContext, store: ContentStore, analysis_pool: AnalysisPool):
        # The ingest service always runs with a database (its spec's DSN): the pool is set.
        self.ctx, self.db, self.store, self.analysis = ctx, cast("asyncpg.Pool", ctx.pool), store, analysis_pool
        self.device_tz = ZoneInfo(ctx.config.device_timezone)
        self.settling: set[asyncio.Task] = set()  # results/failures waiting for the database
        # Lease owner of the sessions this process claims: unique per process start.
        self.owner = f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.leases: set[uuid.UUID] = set()  # claimed sessions being processed here
        self.recovering: set[uuid.UUID] = set()
        # Reprocess work items: replicas sharing one content store share one queue.
        self.queue = hashlib.sha256(store.identity().encode()).hexdigest()[:16]
        self.running_items: set[int] = set()
        self._wake = asyncio.Event()
        self._item_finished = asyncio.Event()

    # -- RPCs ------------------------------------------------------------------------------
    async def Upload(self, request_iterator, context) -> ingest_pb2.IngestReply:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("metadata"):
            raise InvalidArgument("the first Upload message must carry metadata (file name, patient code)")
        meta = first.metadata
        file_name = meta.file_name
        if "/" in file_name or "\\" in file_name:
            raise InvalidArgument(f"file_name must be a plain file name without folders, got {file_name!r}")
        validate_relative_path(file_name)
        if not file_name.lower().endswith(".c3d"):
            raise InvalidArgument(f"file_name must end with .c3d, got {meta.file_name!r}")
        patient_code = meta.session.patient_code.strip()
        if not patient_code:
            raise InvalidArgument("session.patient_code is required for an upload")
        validate_relative_path(patient_code)
        request_checks.check_session(meta.session)  # bad fields: nothing is stored
        settings = settings_from_request(meta.session)
        bfr = bfr_row(meta.session)
        limit = self.ctx.config.max_upload_bytes
        async with self.store.staging() as staging:
            async for msg in request_iterator:
                if msg.HasField("metadata"):
                    raise InvalidArgument("metadata may only be sent in the first Upload message")
                if staging.size_bytes + len(msg.chunk) > limit:
                    raise ResourceExhausted(f"upload exceeds the maximum C3D size of {limit} bytes")
                await staging.write(msg.chunk)
            if staging.size_bytes == 0:
                raise InvalidArgument("the uploaded file is empty")
            if meta.HasField("expected_size_bytes") and meta.expected_size_bytes != staging.size_bytes:
                raise InvalidArgument(f"received {staging.size_bytes} bytes, expected {meta.expected_size_bytes}")
            if meta.expected_sha256 and meta.expected_sha256.lower() != staging.sha256:
                raise InvalidArgument("SHA-256 of the received bytes does not match expected_sha256")
            existing = await self._existing(staging.sha256)
            if existing:
                return existing
            patient, therapist = await self._people(patient_code, meta.session.therapist_id)
            target = f"{patient}/{file_name}"
            async with self.db.acquire() as conn:
                # Until the claim: the paths this upload may write, so that a process dying in
                # between leaves a note the orphan sweep follows (not an unknown file).
                await repo.note_pending_file(conn, staging.sha256, [target, _content_named(target, staging.sha256)])
            obj = await self._commit(staging, target)
        return await self._register_and_process(obj, meta.session, settings, bfr, patient, therapist, uploaded=True)

    async def IngestStoredFile(self, request, context) -> ingest_pb2.IngestReply:
        path = validate_relative_path(request.file_path)
        secret = self.ctx.config.event_secret
        events.verify(secret, request)
        request_checks.check_session(request.session)  # before the event id is recorded
        settings = settings_from_request(request.session)
        bfr = bfr_row(request.session)
        if secret is not None:
            if not request.event_id or len(request.event_id) > 512 or "\x00" in request.event_id:
                raise InvalidArgument("event_id must be 1-512 characters without NUL for a signed event")
            digest = events.digest(request)
            async with self.db.acquire() as conn:
                first = await repo.record_event(conn, request.event_id, digest, events.MAX_SKEW_S)
            if first is not None and first != digest:
                raise FailedPrecondition(f"storage event {request.event_id!r} was already used for another request")
        obj = await self.store.stat(path)  # NOT_FOUND; refuses paths leaving the store
        existing = await self._existing(obj.sha256)
        if existing:
            return existing
        async with self.db.acquire() as conn:
            registered = await repo.find_by_path(conn, path)
        if registered:
            raise FailedPrecondition(
                f"{path} is already registered (session {registered[0]}) with different "
                "content: stored C3D files are immutable"
            )
        code = request.session.patient_code.strip() or (path.split("/")[0] if "/" in path else "")
        if not code:
            raise InvalidArgument("no patient code: give session.patient_code or store the file under <patient>/")
        patient, therapist = await self._people(code, request.session.therapist_id)
        return await self._register_and_process(obj, request.session, settings, bfr, patient, therapist)

    async def GetProcessingStatus(self, request, context) -> ingest_pb2.ProcessingStatusReply:
        key = request.WhichOneof("key")
        if key is None:
            raise InvalidArgument("give one of session_id, file_hash, file_path")
        value: Any = getattr(request, key)
        column = {"session_id": "id", "file_hash": "file_hash", "file_path": "file_path"}[key]
        if key == "session_id":
            value = parse_uuid(value, "session_id")
        row = await repo.processing_status(self.db, column, value)
        if row is None:
            raise NotFound(f"no session with {key} {getattr(request, key)!r}")
        reply = ingest_pb2.ProcessingStatusReply(
            session_id=str(row["id"]),
            status=STATUS[row["processing_status"]],
            error_message=row["error_message"] or "",
            processing_version=row["processing_version"],
            processing_time_ms=row["processing_time_ms"] or 0,
            file_path=row["file_path"],
            file_hash=row["file_hash"],
        )
        if row["created_at"]:
            reply.created_at.FromDatetime(row["created_at"])
        if row["processed_at"]:
            reply.processed_at.FromDatetime(row["processed_at"])
        return reply

    async def Reprocess(self, request, context) -> AsyncIterator[ingest_pb2.ReprocessProgress]:
        scope = request.WhichOneof("scope")
        if scope is None or (scope == "all" and not request.all):
            raise InvalidArgument("give the scope: session_id, patient_code or all=true")
        if request.HasField("options"):
            request_checks.check_options(request.options, "options")
        overrides = options_overrides(request.options) if request.HasField("options") else {}
        AnalysisSettings(**overrides)  # invalid options fail the whole call before any work
        where, args = {
            "session_id": ("id = $1", [parse_uuid(request.session_id, "session_id")] if scope == "session_id" else []),
            "patient_code": ("patient_id = $1", [request.patient_code]),
            "all": ("true", []),
        }[scope]
        if request.only_outdated:
            where += f" AND processing_version <> ${len(args) + 1}"
            args.append(PROCESSING_VERSION)
        ids = await repo.session_ids(self.db, where, args)
        if scope == "session_id" and not ids and not request.only_outdated:
            raise NotFound(f"session {args[0]} does not exist")  # the parsed id, whatever case was sent
        # Work items every ingest replica sharing this content store consumes (SKIP LOCKED
        # queue, migration 022); this call streams its items' progress wherever they ran.
        batch = uuid.uuid4()
        work = ingest_pb2.ReprocessRequest()
        work.CopyFrom(request)
        work.ClearField(scope)
        async with self.db.acquire() as conn:
            await repo.enqueue_reprocess(conn, batch, self.queue, ids, work.SerializeToString())
        self._wake_consumers()
        reported: list[int] = []
        done = failed = 0
        try:
            while done < len(ids):
                finished = self._item_finished
                async with self.db.acquire() as conn:
                    rows = await repo.finished_reprocess_items(conn, batch, reported)
                for r in rows:
                    reported.append(r["id"])
                    done += 1
                    failed += r["status"] == "failed"
                    yield ingest_pb2.ReprocessProgress(
                        session_id=str(r["session_id"]),
                        status=STATUS["failed" if r["status"] == "failed" else "completed"],
                        error_message=r["error_message"] or "",
                        done_count=done,
                        total_count=len(ids),
                        failed_count=failed,
                        processing_version=PROCESSING_VERSION,
                    )
                if done < len(ids):
                    # Woken at once by this replica's consumers; items another replica runs
                    # are seen at the next poll.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(finished.wait(), REPROCESS_POLL_S)
            yield ingest_pb2.ReprocessProgress(
                done=True,
                done_count=done,
                total_count=len(ids),
                failed_count=failed,
                processing_version=PROCESSING_VERSION,
            )
        finally:
            if done < len(ids):
                # Client gone or deadline: what has not started is dropped; each started item
                # still finishes its own transaction (nothing half-written).
                async def cancel():
                    async with self.db.acquire() as conn:
                        await repo.cancel_queued_reprocess(conn, batch)

                with contextlib.suppress(Exception):
                    await asyncio.shield(cancel())

    async def RecordSessionOutcome(
        self, request: ingest_pb2.RecordSessionOutcomeRequest, context
    ) -> ingest_pb2.SessionOutcomeReply:
        async with self.db.acquire() as conn:
            return await outcomes.record(conn, request)

    async def SetScoringConfig(self, request: ingest_pb2.SetScoringConfigRequest, context) -> common_pb2.ScoringConfig:
        if not request.HasField("config"):
            raise InvalidArgument("config is required")
        cfg = ScoringConfig.from_proto(request.config)
        async with self.db.acquire() as conn:
            row = await repo.insert_scoring_config(conn, cfg.to_json(), auth.current().subject, cfg.notes)
        return ScoringConfig.from_row(row).to_proto()

    # -- internals -------------------------------------------------------------------------
    async def _existing(self, file_hash: str) -> ingest_pb2.IngestReply | None:
        async with self.db.acquire() as conn:
            found = await repo.find_by_hash(conn, file_hash)
        if found is None:
            return None
        if found.status == "failed":
            raise InvalidArgument(
                f"this file was already ingested as session {found.id} and failed: {found.error_message}"
            )
        return ingest_pb2.IngestReply(
            session_id=str(found.id),
            created=False,
            status=STATUS[found.status],
            file_hash=file_hash,
            file_path=found.file_path,
            processing_version=found.processing_version,
        )

    async def _people(self, patient_code: str, therapist_id: str) -> tuple[str, uuid.UUID | None]:
        """Documented rule: patient codes must be registered (patients need a name, birth date
        and therapist that a C3D does not carry), so an unknown code is FAILED_PRECONDITION."""
        row = await repo.upload_patient(self.db, patient_code)
        if row is None:
            raise FailedPrecondition(f"patient {patient_code!r} is not registered; register the patient first")
        if not therapist_id:
            return row["patient_code"], row["therapist_id"]
        tid = parse_uuid(therapist_id, "session.therapist_id")
        if not await repo.therapist_exists(self.db, tid):
            raise FailedPrecondition(f"therapist {therapist_id} is not registered")
        return row["patient_code"], tid

    async def _commit(self, staging, path: str) -> StoredObject:
        try:
            return await staging.commit(path)
        except FileExistsError:
            # Same name, other content (e.g. two tablets): keep both, the new one content-named.
            return await staging.commit(_content_named(path, staging.sha256))

    def _session_date(self, meta: ingest_pb2.SessionMetadata) -> datetime | None:
        return meta.session_date.ToDatetime(tzinfo=UTC) if meta.HasField("session_date") else None

    async def _register_and_process(
        self,
        obj: StoredObject,
        meta: ingest_pb2.SessionMetadata,
        settings: AnalysisSettings,
        bfr: dict | None,
        patient: str,
        therapist: uuid.UUID | None,
        *,
        uploaded: bool = False,
    ) -> ingest_pb2.IngestReply:
        header = repo.SessionHeader(
            file_path=obj.path,
            file_hash=obj.sha256,
            file_size_bytes=obj.size_bytes,
            patient_id=patient,
            therapist_id=therapist,
            session_label=PurePosixPath(obj.path).stem,
            session_date=self._session_date(meta),
            session_type=SESSION_TYPE_NAME.get(meta.session_type),
            protocol_day=meta.protocol_day if meta.HasField("protocol_day") else None,
            processing_version=PROCESSING_VERSION,
        )
        level = _level(meta)
        try:
            async with self.db.acquire() as conn:
                plan = await plan_mod.for_upload(conn, patient, meta)
        except BaseException:
            if uploaded:
                await self._discard_upload(obj)
            raise
        bfr = _gated(bfr, plan)
        try:
            await self._check_memory(obj)
        except ResourceExhausted:
            if uploaded:
                await self._discard_upload(obj)
            raise
        try:
            async with self.db.acquire() as conn:
                sid = await repo.claim(conn, header, owner=self.owner, request=meta.SerializeToString())
        except Exception as exc:
            if is_connection_error(exc):
                # The claim may have committed without its reply reaching us: finish the
                # session once the database is back, so it is not left 'processing'.
                self._resume_later(obj, plan, bfr, level)
            elif uploaded:
                await self._discard_upload(obj)
            raise
        if sid is None:  # a concurrent upload of the same bytes won
            existing = await self._existing(obj.sha256)
            assert existing is not None  # the winner's session holds this hash
            if existing.file_path != obj.path:
                await self.store.delete(obj.path)
            return existing
        # Once claimed, finish even if the caller goes away: no session is left 'processing'.
        return await asyncio.shield(self._process(sid, obj, plan, bfr, level, created=True))

    async def _check_memory(self, obj: StoredObject) -> None:
        """RESOURCE_EXHAUSTED, before the session is claimed, when the C3D's header says its
        analysis needs more than GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB (a few kB are read). The
        file is not at fault, so no failed session is recorded; an unreadable header is left to
        the analysis, which records the session as failed with the reader's message."""
        budget = self.ctx.config.analysis_memory_budget_bytes
        if budget <= 0:
            return
        async with self.store.local_path(obj.path) as local:
            try:
                await asyncio.to_thread(check_analysis_budget, str(local), budget)
            except MemoryBudgetExceeded as exc:
                raise ResourceExhausted(f"{PurePosixPath(obj.path).name}: {exc}") from None
            except EmgError:
                pass

    async def _discard_upload(self, obj: StoredObject) -> None:
        """An upload refused after its file was stored: remove the file unless a session uses
        it (a concurrent duplicate). Best effort: what remains, the orphan sweep removes."""
        try:
            async with self.db.acquire() as conn:
                if await repo.find_by_path(conn, obj.path) is None:
                    await self.store.delete(obj.path)
                    await repo.forget_pending_file(conn, obj.sha256)
        except Exception:  # the request's own error is what the caller must see
            log.warning("stored file %s of a refused upload left for the orphan sweep", obj.path, exc_info=True)

    async def _process(
        self,
        sid: uuid.UUID,
        obj: StoredObject,
        plan: plan_mod.Plan,
        bfr: dict | None,
        game_difficulty_level: int | None,
        *,
        created: bool,
        outcome_recorded_at: Any = repo.NOT_CHECKED,
    ) -> ingest_pb2.IngestReply:
        settings = plan.settings
        t0 = time.perf_counter()
        if created:
            self.leases.add(sid)  # renewed by the maintenance loop while this call works
        try:
            async with self.store.local_path(obj.path) as local:
                outcome = await self.analysis.analyze(str(local), settings, PurePosixPath(obj.path).name)
            elapsed = int((time.perf_counter() - t0) * 1000)
            if outcome.error is not None:

                async def unreadable(conn):
                    await repo.mark_failed(conn, sid, outcome.error, PROCESSING_VERSION, elapsed)

                await self._write_or_settle(sid, unreadable, created)
                raise InvalidArgument(
                    f"{PurePosixPath(obj.path).name} cannot be analysed: {outcome.error} "
                    f"(session {sid} recorded as failed)"
                )
            analysis = outcome.analysis
            assert analysis is not None  # an outcome without an error has its analysis
            metadata = _jsonable(analysis.metadata)
            session_dt = analysis.metadata.get("session_datetime")
            if isinstance(session_dt, datetime) and session_dt.tzinfo is None:
                analysis.metadata["session_datetime"] = session_dt.replace(tzinfo=self.device_tz)

            async def write(conn):
                await repo.write_results(
                    conn,
                    sid,
                    analysis,
                    settings,
                    bfr=bfr,
                    game_difficulty_level=game_difficulty_level,
                    processing_time_ms=elapsed,
                    game_metadata=metadata,
                    scoring_config_version=plan.config_version,
                    calibration_id=plan.calibration_id,
                    value_sources=plan.value_sources,
                    bfr_target=plan.bfr_target,
                    outcome_recorded_at=outcome_recorded_at,
                )

            await self._write_or_settle(sid, write, created)
        except (InvalidArgument, repo.InputsChanged):
            raise
        except BaseException as exc:
            # Unexpected failure after the claim: record it rather than leave 'processing'. A
            # lost database connection is not the session's fault: its write is retried
            # (_write_or_settle). A reprocessed session keeps its previous results: the
            # error is reported to the caller, the statistics are not deleted.
            if created and not isinstance(exc, asyncio.CancelledError) and not is_connection_error(exc):
                log.exception("processing of session %s failed", sid)
                message = f"internal error: {exc.__class__.__name__}"

                async def fail(conn):
                    await repo.mark_failed(
                        conn, sid, message, PROCESSING_VERSION, int((time.perf_counter() - t0) * 1000)
                    )

                try:
                    async with self.db.acquire() as conn:
                        await fail(conn)
                except Exception as exc2:  # database gone too: retry in the background
                    log.warning("could not record the failure of session %s yet", sid, exc_info=True)
                    if created and is_connection_error(exc2):
                        self._settle_later(sid, fail)
            raise
        finally:
            if created:
                self.leases.discard(sid)
        return ingest_pb2.IngestReply(
            session_id=str(sid),
            created=created,
            status=common_pb2.PROCESSING_STATUS_COMPLETED,
            file_hash=obj.sha256,
            file_path=obj.path,
            file_size_bytes=obj.size_bytes,
            processing_version=analysis.processing_version,
            processing_time_ms=elapsed,
            overall_performance_score=analysis.performance.overall_performance_score,
            warnings=analysis.warnings + plan.warnings,
        )

    async def _write_or_settle(self, sid: uuid.UUID, write, created: bool) -> None:
        """`write(conn)` now; if the database connection is lost and the session was claimed
        by this call, the caller gets UNAVAILABLE and the write is retried in the background
        as soon as the database is back (the session never stays 'processing')."""
        try:
            async with self.db.acquire() as conn:
                await write(conn)
        except Exception as exc:
            if created and is_connection_error(exc):
                self._settle_later(sid, write)
            raise

    def _when_database_back(self, name: str, attempt, on_give_up: str, then=None) -> None:
        """Run `attempt(conn)` in the background, retrying with backoff while the database is
        unreachable, for at most SETTLE_TIMEOUT_S (then log `on_give_up`); afterwards, with the
        connection released, `then(result)` if given."""

        async def run():
            delay, deadline = 0.2, time.monotonic() + SETTLE_TIMEOUT_S
            while True:
                await asyncio.sleep(delay)
                try:
                    async with self.db.acquire() as conn:
                        result = await attempt(conn)
                    break
                except Exception as exc:
                    if not is_connection_error(exc) or time.monotonic() > deadline:
                        log.error("%s", on_give_up, exc_info=True)
                        return
                    delay = min(delay * 2, 5.0)
            if then is not None:
                await then(result)

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)

    def _settle_later(self, sid: uuid.UUID, write) -> None:
        """Retry the final write of a claimed session (`write(conn)`: results or failure) until
        the database is back; only while the session is still 'processing' (a Reprocess may have
        completed it meanwhile). A session whose retry runs out, or whose process stops first,
        stays 'processing' until a Reprocess completes it."""

        async def attempt(conn):
            async with conn.transaction():
                status = await repo.lock_status(conn, sid)
                if status == "processing":
                    await write(conn)
            log.info("session %s settled after a database outage", sid)

        self._when_database_back(f"settle-{sid}", attempt, f"session {sid} left 'processing'; Reprocess it")

    def _resume_later(self, obj: StoredObject, settings: plan_mod.Plan, bfr: dict | None, level: int | None) -> None:
        """After an ambiguous claim: when the database answers again, process the session if
        the claim did commit and the session is still 'processing' (an identical second run is
        harmless: results are replaced atomically)."""

        async def attempt(conn):
            return await repo.find_by_hash(conn, obj.sha256)

        async def then(found):
            if found is None or found.status != "processing":
                return
            try:
                await self._process(found.id, obj, settings, bfr, level, created=True)
                log.info("session %s completed after an interrupted claim", found.id)
            except Exception:  # _process records failures (and retries) itself
                log.warning("session %s: processing after an interrupted claim failed", found.id, exc_info=True)

        self._when_database_back(
            f"resume-{obj.sha256[:12]}",
            attempt,
            f"could not check the claim of {obj.path}; Reprocess it if it stays 'processing'",
            then,
        )

    # -- Reprocess work items (every replica consumes the shared queue) -----------------------
    def _wake_consumers(self) -> None:
        self._wake.set()

    def _announce_finished(self) -> None:
        finished, self._item_finished = self._item_finished, asyncio.Event()
        finished.set()

    async def consume(self) -> None:
        """One consumer of the Reprocess queue (the service runs one per analysis worker)."""
        cfg = self.ctx.config
        while True:
            try:
                async with self.db.acquire() as conn:
                    item = await repo.claim_reprocess_item(
                        conn, self.queue, self.owner, cfg.ingest_claim_lease_s, ITEM_MAX_ATTEMPTS
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database away: try again shortly
                (log.debug if is_connection_error(exc) else log.warning)("reprocess queue unavailable", exc_info=True)
                item = None
                await asyncio.sleep(1.0)
            if item is None:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), REPROCESS_POLL_S * 2)
                continue
            await self._run_item(item)

    async def _run_item(self, item) -> None:
        self.running_items.add(item["id"])
        try:
            if item["exhausted"]:
                error: str | None = (
                    f"gave up after {ITEM_MAX_ATTEMPTS} attempts: the ingest processes running it stopped; "
                    "previous results are kept"
                )
            else:
                req = ingest_pb2.ReprocessRequest.FromString(item["request"])
                overrides = options_overrides(req.options) if req.HasField("options") else {}
                try:
                    error = await asyncio.shield(
                        self._reprocess_one(
                            item["session_id"],
                            overrides,
                            apply_calibration=req.apply_current_calibration,
                            apply_config=req.apply_current_scoring_config,
                        )
                    )
                except asyncio.CancelledError:
                    raise  # service stopping: the item's lease runs out, another replica takes it
                except Exception as exc:  # reported on the item; results kept
                    if is_connection_error(exc):
                        return  # lease runs out; the item is taken again
                    log.exception("reprocess of session %s failed", item["session_id"])
                    error = f"internal error: {exc.__class__.__name__}"
            async with self.db.acquire() as conn:
                await repo.finish_reprocess_item(conn, item["id"], self.owner, error)
            self._announce_finished()
        except asyncio.CancelledError:
            raise
        except Exception:  # finishing failed (database gone): the lease expires
            log.warning("reprocess item %s not finished; it will be taken again", item["id"], exc_info=True)
        finally:
            self.running_items.discard(item["id"])

    # -- crash recovery: leases, stale claims, orphan files ------------------------------------
    async def maintain(self) -> None:
        """Background loop of the service: renew the leases of the sessions this process
        works on, take over claims whose owner stopped renewing (a dead process), and sweep
        staging files and orphan uploads. Runs at start (the startup sweep) and then every
        third of the lease period; database outages only delay it."""
        lease = self.ctx.config.ingest_claim_lease_s
        while True:
            try:
                await self.maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried on the next tick
                (log.debug if is_connection_error(exc) else log.warning)("ingest maintenance failed", exc_info=True)
            await asyncio.sleep(lease / 3)

    async def maintain_once(self) -> dict[str, int]:
        cfg = self.ctx.config
        counts = {"renewed": len(self.leases), "recovered": 0, "staging_removed": 0, "orphans_removed": 0}
        async with self.db.acquire() as conn:
            if self.leases:
                await repo.renew_leases(conn, self.owner, list(self.leases))
            if self.running_items:
                await repo.renew_reprocess_items(conn, self.owner, list(self.running_items))
            await repo.purge_finished_reprocess(conn, FINISHED_ITEMS_KEPT_S)
            stale = [
                sid
                for sid in await repo.stale_claims(conn, cfg.ingest_claim_lease_s)
                if sid not in self.leases and sid not in self.recovering
            ]
            pending = await repo.stale_pending_files(conn, cfg.ingest_sweep_grace_s)
        results = await asyncio.gather(*(self._recover(sid) for sid in stale), return_exceptions=True)
        counts["recovered"] = sum(r is True for r in results)
        counts["staging_removed"] = await self.store.sweep_staging(cfg.ingest_sweep_grace_s)
        for row in pending:
            for path in row["orphans"]:
                try:
                    obj = await self.store.stat(path)
                except NotFound:
                    continue
                if obj.sha256 == row["file_hash"]:  # never someone else's bytes under that name
                    await self.store.delete(path)
                    counts["orphans_removed"] += 1
                    log.info("removed %s: stored by an upload that never registered its session", path)
            async with self.db.acquire() as conn:
                await repo.forget_pending_file(conn, row["file_hash"])
        return counts

    async def _recover(self, sid: uuid.UUID) -> bool:
        """Take over a stale claim and process the session as its upload would have."""
        self.recovering.add(sid)
        try:
            async with self.db.acquire() as conn:
                row = await repo.take_over(conn, sid, self.owner, self.ctx.config.ingest_claim_lease_s)
            if row is None:
                return False  # renewed meanwhile, or another process took it
            log.warning("session %s: its claim's owner stopped; processing it here", sid)
            meta = ingest_pb2.SessionMetadata.FromString(row["claim_request"] or b"")
            try:
                obj = await self.store.stat(row["file_path"])
                if obj.sha256 != row["file_hash"]:
                    raise InvalidArgument(f"source file {row['file_path']} no longer matches its file_hash")
                async with self.db.acquire() as conn:
                    plan = await plan_mod.for_upload(conn, row["patient_id"], meta)
                bfr = _gated(bfr_row(meta), plan)
            except (NotFound, InvalidArgument) as exc:
                async with self.db.acquire() as conn:
                    await repo.mark_failed(
                        conn, sid, f"recovery after the ingest process stopped: {exc}", PROCESSING_VERSION, 0
                    )
                return True
            try:
                await self._process(sid, obj, plan, bfr, _level(meta), created=True)
            except InvalidArgument:
                pass  # recorded as failed by _process (an unreadable file)
            return True
        finally:
            self.recovering.discard(sid)

    async def close(self) -> None:
        """Service stop: give pending settles a moment, then cancel them."""
        if self.settling:
            await asyncio.wait(list(self.settling), timeout=2.0)
            for t in list(self.settling):
                t.cancel()

    async def _reprocess_one(
        self, sid: uuid.UUID, overrides: dict[str, Any], *, apply_calibration: bool = False, apply_config: bool = False
    ) -> str | None:
        """Recompute one session from its stored C3D. Returns an error message or None.
        Writers of one session take turns (row lock); an outcome recorded while the analysis
        ran makes its inputs stale: re-read and re-analysed, a few times at most."""
        for _ in range(REPROCESS_ATTEMPTS):
            try:
                return await self._reprocess_attempt(
                    sid, overrides, apply_calibration=apply_calibration, apply_config=apply_config
                )
            except repo.InputsChanged:
                continue
        return (
            f"ABORTED: session {sid} kept changing (outcome recorded during each of {REPROCESS_ATTEMPTS} "
            "re-analyses); its previous results are kept, retry"
        )

    async def _reprocess_attempt(
        self, sid: uuid.UUID, overrides: dict[str, Any], *, apply_calibration: bool, apply_config: bool
    ) -> str | None:
        async with self.db.acquire() as conn:
            session, settings_row, score_row, bfr_row_ = await repo.load_inputs(conn, sid)
            outcome_row = await repo.outcome(conn, sid)
            plan = None
            if session is not None:
                plan = await plan_mod.for_reprocess(
                    conn,
                    session["patient_id"],
                    (settings_row, score_row, bfr_row_, outcome_row),
                    overrides,
                    apply_calibration=apply_calibration,
                    apply_config=apply_config,
                )
        if session is None:
            return "session disappeared"
        assert plan is not None  # planned above for the existing session
        try:
            obj = await self.store.stat(session["file_path"])
        except NotFound:
            return f"source file {session['file_path']} is missing from the content store"
        if obj.sha256 != session["file_hash"]:
            return f"source file {session['file_path']} no longer matches its file_hash (data loss)"
        try:
            await self._check_memory(obj)
        except ResourceExhausted as exc:
            return f"RESOURCE_EXHAUSTED: {exc}; its previous results are kept"
        try:
            await self._process(
                sid,
                obj,
                plan,
                None,
                None,
                created=False,
                outcome_recorded_at=outcome_row["recorded_at"] if outcome_row else None,
            )
        except InvalidArgument as exc:
            return str(exc)
        return None


async def build(ctx: ServiceContext) -> IngestServicer:
    from libs.storage import open_store

    pool = AnalysisPool(ctx.config.ingest_workers or None)
    await pool.start()
    ctx.on_stop.append(pool.close)
    servicer = IngestServicer(ctx, open_store(ctx.config.store_location, on_stop=ctx.on_stop), pool)
    ctx.on_stop.append(servicer.close)
    loop = asyncio.get_running_loop()
    background = [loop.create_task(servicer.maintain(), name="ingest-maintenance")]
    background += [loop.create_task(servicer.consume(), name=f"reprocess-consumer-{i}") for i in range(pool.workers)]

    async def stop_maintenance() -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    ctx.on_stop.append(stop_maintenance)  # hooks run in reverse: stopped first
    vars(ctx)["ingest"] = servicer  # reachable from tests and embedding code through RunningService.context
    return servicer
