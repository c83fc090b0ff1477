"""ExportService (ghostly.export.v1): research and clinical exports with an audit trail.

CreateExport, in order:
  1. type and format are checked (INVALID_ARGUMENT; no history row: the row needs both);
  2. the export_history row is inserted (status failed / "in progress"): from here on every
     outcome, refusals included, is on record;
  3. exported_by is checked: malformed -> INVALID_ARGUMENT, unknown -> FAILED_PRECONDITION;
  4. the selection is validated and the data fetched over gRPC (statistics from
     StatisticsService, signals from JitSignalService) with the caller's deadline and request id;
  5. the file is rendered completely (so a failure never leaves a truncated file behind),
     read back (row counts) and hashed;
  6. `started`, the `data` chunks (<= 1 MiB) and `completed` are streamed; the SHA-256 of the
     bytes actually sent is compared with the hash of the rendered file (hash_verified) and
     the row is completed (success / partial) before `completed` is sent.
Any failure completes the row as failed with the error message, and the caller gets the
mapped status (UNAVAILABLE when a downstream service is down).
"""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import io
import json
import re
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

import logging

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from ghostly.common.v1 import common_pb2
from ghostly.export.v1 import export_pb2 as pb
from ghostly.export.v1 import export_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from ghostly.statistics.v1 import statistics_pb2 as spb
from libs import auth, errors, paging
from libs.convert import EPOCH, parse_uuid, to_timestamp
from services.export import layouts, writers
from services.export.downstream import CallOptions, Downstream
from services.export.history import History, decode_token, encode_token
from services.export.model import ExportDocument

CHUNK_BYTES = 1 << 20                 # <= 1 MiB per data message
# Sessions fetched concurrently (bounded gather; each runs its 2-3 statistics RPCs at once).
MAX_SESSIONS = 10_000                 # sessions per export
DEFAULT_MAX_POINTS = 1000
MAX_POINTS = 1_000_000
STREAM_CHUNK_SAMPLES = 65_536         # JIT chunk size asked for (256 KiB of float32)
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
LIST_PAGE = 500

TYPES = {pb.EXPORT_TYPE_STATISTICS_ONLY: "statistics_only",
         pb.EXPORT_TYPE_PERFORMANCE_REPORT: "performance_report",
         pb.EXPORT_TYPE_SIGNALS_VISUALIZATION: "signals_visualization",
         pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL: "signals_research_full",
         pb.EXPORT_TYPE_CLINICAL_SUMMARY: "clinical_summary",
         pb.EXPORT_TYPE_BFR_SAFETY_REPORT: "bfr_safety_report"}
TYPE_ENUM = {v: k for k, v in TYPES.items()}
FORMATS = {pb.EXPORT_FORMAT_JSON: "json", pb.EXPORT_FORMAT_CSV: "csv",
           pb.EXPORT_FORMAT_EXCEL: "excel", pb.EXPORT_FORMAT_MATLAB: "matlab"}
FORMAT_ENUM = {v: k for k, v in FORMATS.items()}
STATUSES = {pb.EXPORT_STATUS_SUCCESS: "success", pb.EXPORT_STATUS_PARTIAL: "partial",
            pb.EXPORT_STATUS_FAILED: "failed"}
STATUS_ENUM = {v: k for k, v in STATUSES.items()}
SIGNAL_TYPES = {"signals_visualization", "signals_research_full"}
KINDS = {"raw": jpb.SIGNAL_KIND_RAW, "filtered": jpb.SIGNAL_KIND_FILTERED, "envelope": jpb.SIGNAL_KIND_ENVELOPE}

# Per-session failures that make a multi-session export partial; anything else (UNAVAILABLE,
# DEADLINE_EXCEEDED, INTERNAL) fails the whole export: a transient outage is retried, not
# silently turned into a smaller file.
BATCH = 500   # sessions per BatchGetSessionStatistics call (its maximum)
SESSION_ERRORS = (errors.NotFound, errors.FailedPrecondition, errors.InvalidArgument, errors.DataLoss)

_EPOCH = EPOCH
log = logging.getLogger("ghostly.export")


def _ts_dt(ts: Timestamp, field: str = "timestamp") -> dt.datetime:
    try:
        return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    except OverflowError:
        raise errors.InvalidArgument(f"{field} is outside the years 0001-9999") from None


def _maybe_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _check(name: str, passed: bool, detail: str) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail}


def _short_list(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


@dataclass
class Selection:
    export_type: str
    data_format: str
    session_ids: list[str]
    patient_id: str
    date_from: dt.datetime | None
    date_to: dt.datetime | None
    channels: list[str]
    kinds: list[str]
    max_points: int

    @property
    def is_signal(self) -> bool:
        return self.export_type in SIGNAL_TYPES

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"session_ids": self.session_ids}
        if self.patient_id:
            out["patient_id"] = self.patient_id
        if self.date_from:
            out["date_from"] = self.date_from.isoformat()
        if self.date_to:
            out["date_to"] = self.date_to.isoformat()
        if self.channels:
            out["channels"] = self.channels
        if self.is_signal:
            out["signal_kinds"] = self.kinds
            if self.export_type == "signals_visualization":
                out["max_points"] = self.max_points
            else:
                out["full_resolution"] = True
        return out


@dataclass
class Outcome:
    doc: ExportDocument
    checks: list[dict] = field(default_factory=list)
    expected_rows: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)     # "id: reason" of sessions not exported
    session_id: str | None = None                        # single-session exports


def parse_request(request: pb.CreateExportRequest, export_type: str, data_format: str) -> Selection:
    ids = list(dict.fromkeys(s.strip() for s in request.session_ids if s.strip()))
    for s in ids:
        parse_uuid(s, "session_ids")
    date_from = _ts_dt(request.date_from, "date_from") if request.HasField("date_from") else None
    date_to = _ts_dt(request.date_to, "date_to") if request.HasField("date_to") else None
    if date_from and date_to and date_from >= date_to:
        raise errors.InvalidArgument(f"date_from must be before date_to ({date_from.isoformat()} >= "
                                     f"{date_to.isoformat()})")
    channels = list(dict.fromkeys(c.strip() for c in request.channels if c.strip()))
    kinds = list(dict.fromkeys(k.strip().lower() for k in request.signal_kinds if k.strip())) or ["raw"]
    sel = Selection(export_type, data_format, ids, request.patient_id.strip(), date_from, date_to, channels,
                    kinds, request.max_points or DEFAULT_MAX_POINTS)
    if sel.is_signal:
        if len(ids) != 1 or sel.patient_id or date_from or date_to:
            raise errors.InvalidArgument(f"{export_type} exports take exactly one session in session_ids "
                                         f"(got {len(ids)}{', and a patient/date selection' if sel.patient_id or date_from or date_to else ''})")
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise errors.InvalidArgument(f"unknown signal_kinds {bad}: use raw, filtered or envelope")
        if export_type == "signals_visualization" and not 3 <= sel.max_points <= MAX_POINTS:
            raise errors.InvalidArgument(f"max_points must be 3-{MAX_POINTS:,} (0 = {DEFAULT_MAX_POINTS}), "
                                         f"got {request.max_points}")
    else:
        if request.signal_kinds:
            raise errors.InvalidArgument(f"signal_kinds only apply to signal exports, not {export_type}")
        if ids and (sel.patient_id or date_from or date_to):
            raise errors.InvalidArgument("give either session_ids or a patient_id / date window, not both")
        if not ids and not (sel.patient_id or date_from or date_to):
            raise errors.InvalidArgument("select sessions: session_ids, or patient_id and/or a "
                                         "date_from/date_to window")
        if len(ids) > MAX_SESSIONS:
            raise errors.InvalidArgument(f"at most {MAX_SESSIONS:,} sessions per export, got {len(ids):,}")
    return sel


def _as_caller(request: pb.CreateExportRequest) -> pb.CreateExportRequest:
    """exported_by follows the caller: a researcher exports as themselves (empty = their own
    id; another id is PERMISSION_DENIED); a therapist's export has no researcher (the caller is
    audited in export_options.requested_by); admins and services may export on a researcher's
    behalf."""
    caller = auth.current()
    if caller.role == "researcher":
        if request.exported_by and request.exported_by != caller.subject:
            raise errors.PermissionDenied("a researcher exports as themselves: exported_by must be empty "
                                          "or the caller's own id")
        if not request.exported_by:
            request = _copy(request)
            request.exported_by = caller.subject
    elif caller.role == "therapist" and request.exported_by:
        raise errors.PermissionDenied("exported_by names a researcher; a therapist's export leaves it empty")
    return request


def _copy(request: pb.CreateExportRequest) -> pb.CreateExportRequest:
    out = pb.CreateExportRequest()
    out.CopyFrom(request)
    return out


class ExportServicer(export_pb2_grpc.ExportServiceServicer):
    def __init__(self, history: History, downstream: Downstream, session_concurrency: int = 16):
        self.history = history
        self.downstream = downstream
        self.session_concurrency = session_concurrency   # GHOSTLY_EXPORT_SESSION_CONCURRENCY
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ CreateExport
    # (who may export what: _as_caller below; therapists see only their own patients because
    # the caller's token is forwarded to StatisticsService / JitSignalService)
    async def CreateExport(self, request: pb.CreateExportRequest, context):
        started_at = time.perf_counter()
        export_type = TYPES.get(request.type)
        if export_type is None:
            raise errors.InvalidArgument("type is required: one of " + ", ".join(TYPES.values()))
        data_format = FORMATS.get(request.format)
        if data_format is None:
            raise errors.InvalidArgument("format is required: one of json, csv, excel, matlab")

        request = _as_caller(request)
        export_id = uuid.uuid4()
        signal = export_type in SIGNAL_TYPES
        raw_ids = [s.strip() for s in request.session_ids if s.strip()]
        caller = auth.current()
        options: dict[str, Any] = {"session_ids": list(dict.fromkeys(raw_ids)),
                                   "requested_by": {"role": caller.role, "subject": caller.subject}}
        if request.exported_by and _maybe_uuid(request.exported_by) is None:
            options["requested_exported_by"] = request.exported_by[:80]
        researcher = _maybe_uuid(request.exported_by)
        row = await self.history.start(
            export_id=export_id,
            session_id=_maybe_uuid(raw_ids[0]) if len(raw_ids) == 1 else None,
            export_type=export_type, channels=list(dict.fromkeys(request.channels)) or None,
            data_format=data_format, options=options,
            processing_method="jit_c3d_processing" if signal else "database_query",
            data_source="c3d_file_processed" if signal else "cached_statistics",
            exported_by=researcher)

        sent = 0
        try:
            if request.exported_by:
                if researcher is None:
                    raise errors.InvalidArgument(f"exported_by must be a researcher UUID, got "
                                                 f"{request.exported_by[:80]!r}")
                if row.exported_by is None:
                    options["requested_exported_by"] = str(researcher)
                    raise errors.FailedPrecondition(
                        f"exported_by {researcher} is not a registered researcher (researcher_profiles); "
                        f"register the researcher first")
            sel = parse_request(request, export_type, data_format)
            options = sel.options()
            options["requested_by"] = {"role": caller.role, "subject": caller.subject}
            if request.exported_by and row.exported_by is None:
                options["requested_exported_by"] = request.exported_by[:80]
            call = CallOptions(context)
            if sel.is_signal:
                outcome = await self._signals(sel, call)
            else:
                outcome = await self._statistics(sel, call)
            meta = outcome.doc.metadata
            meta["export"] = {"export_id": str(export_id), "export_type": export_type, "format": data_format,
                              "created_at": row.export_timestamp.isoformat(), "request_id": call.request_id,
                              "exported_by": str(row.exported_by) if row.exported_by else None,
                              **meta.get("export", {})}
            try:   # (format limits, e.g. Excel's row count, are checked before anything is written)
                payload = await asyncio.to_thread(writers.render, outcome.doc, data_format)
            except writers.FormatLimitError as exc:
                raise errors.InvalidArgument(str(exc)) from None
            checks = list(outcome.checks)
            checks += await asyncio.to_thread(readback_checks, payload, data_format, outcome)
            rendered_hash = await asyncio.to_thread(lambda: hashlib.sha256(payload).hexdigest())
            options.update(file_name=file_name(export_id, sel, outcome), content_type=writers.CONTENT_TYPES[data_format],
                           metadata=_options_metadata(outcome.doc))

            yield pb.ExportChunk(started=pb.ExportStarted(export_id=str(export_id), file_name=options["file_name"],
                                                          content_type=options["content_type"]))
            digest = hashlib.sha256()
            view = memoryview(payload)
            for i in range(0, len(payload), CHUNK_BYTES):
                piece = bytes(view[i:i + CHUNK_BYTES])
                digest.update(piece)
                yield pb.ExportChunk(data=piece)
                sent += len(piece)
            sent_hash = digest.hexdigest()
            ok = sent_hash == rendered_hash and sent == len(payload)
            checks.append(_check("hash_verified", ok,
                                 f"sha256 of the {sent:,} bytes sent {'equals' if ok else 'DIFFERS FROM'} "
                                 f"the re-hashed rendered file ({rendered_hash[:16]}...)"))
            status = "success" if all(c["passed"] for c in checks) and not outcome.missing else "partial"
            elapsed = int((time.perf_counter() - started_at) * 1000)
            error = None
            if status == "partial":
                failed = [c["name"] for c in checks if not c["passed"]]
                error = "; ".join(filter(None, [
                    f"{len(outcome.missing)} session(s) not exported: {_short_list(outcome.missing, 5)}"
                    if outcome.missing else "",
                    f"validation checks failed: {', '.join(failed)}" if failed else ""]))
            await self.history.finish(export_id, status=status, processing_time_ms=elapsed, size=sent,
                                      sha256=sent_hash, checks=checks, error_message=error, options=options)
            yield pb.ExportChunk(completed=pb.ExportCompleted(
                export_id=str(export_id), size_bytes=sent, sha256=sent_hash, status=STATUS_ENUM[status],
                processing_time_ms=elapsed,
                validation_checks=[pb.ValidationCheck(**c) for c in checks]))
        except BaseException as exc:
            elapsed = int((time.perf_counter() - started_at) * 1000)
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                # The client went away. Record it in the background and leave at once: the
                # handler must not outlive the cancelled call (the interceptor reads its peer).
                self._background(self.history.finish(
                    export_id, status="failed", processing_time_ms=elapsed, size=sent or None, sha256=None,
                    checks=None, error_message=f"cancelled by the client after {sent:,} bytes", options=options))
                raise
            message = str(exc) or exc.__class__.__name__
            try:
                await self.history.finish(
                    export_id, status="failed", processing_time_ms=elapsed, size=sent or None, sha256=None,
                    checks=None, error_message=message[:4000], options=options)
            except Exception:  # noqa: BLE001 - the original error matters more to the caller
                log.warning("could not record failed export %s", export_id, exc_info=True)
            if isinstance(exc, errors.DomainError):
                raise exc.__class__(f"{message} (export {export_id} recorded as failed)") from None
            raise

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ statistics types
    async def _select_sessions(self, sel: Selection, call: CallOptions) -> list[layouts.SessionBundle]:
        if sel.session_ids:
            return [layouts.SessionBundle(s) for s in sel.session_ids]
        req = spb.ListSessionsRequest(patient_id=sel.patient_id, page_size=LIST_PAGE,
                                      processing_status=common_pb2.PROCESSING_STATUS_COMPLETED,
                                      date_from=to_timestamp(sel.date_from), date_to=to_timestamp(sel.date_to))
        bundles: list[layouts.SessionBundle] = []
        while True:
            page = await self.downstream.list_sessions(req, call)
            bundles += [layouts.SessionBundle(s.id, session=s) for s in page.sessions]
            if len(bundles) > MAX_SESSIONS:
                raise errors.InvalidArgument(f"the selection matches more than {MAX_SESSIONS:,} sessions; "
                                             f"narrow the date window")
            if not page.next_page_token:
                break
            req.page_token = page.next_page_token
        if not bundles:
            what = ", ".join(filter(None, [f"patient_id={sel.patient_id!r}" if sel.patient_id else "",
                                           f"date_from={sel.date_from.isoformat()}" if sel.date_from else "",
                                           f"date_to={sel.date_to.isoformat()}" if sel.date_to else ""]))
            raise errors.NotFound(f"no completed sessions match {what}")
        bundles.reverse()       # oldest first: reads as a timeline
        return bundles

    async def _fetch_session(self, b: layouts.SessionBundle, sel: Selection, call: CallOptions) -> None:
        d = self.downstream
        t = sel.export_type
        sid = b.session_id

        async def optional(coro):
            try:
                return await coro
            except errors.NotFound:
                return None

        jobs: dict[str, Any] = {}
        if b.session is None:
            jobs["session"] = d.get_session(sid, call)
        if t in ("statistics_only", "clinical_summary"):
            jobs["channels"] = d.emg_statistics(sid, sel.channels, call)
        if t in ("performance_report", "clinical_summary"):
            # A completed session may be unscored (no usable EMG): exported with empty score
            # cells, its channel rows and flags saying why (checked below).
            jobs["performance"] = optional(d.performance(sid, call))
        if t == "bfr_safety_report":
            jobs["bfr"] = optional(d.bfr(sid, call))
            jobs["settings"] = optional(d.settings(sid, call))
            jobs["performance"] = optional(d.performance(sid, call))
        try:
            results = await _gather_all(jobs)
        except SESSION_ERRORS as exc:
            b.error, b.error_code = str(exc), exc.__class__.__name__
            return
        if "session" in results:
            b.session = results["session"]
        b.channels = list(results["channels"].channels) if "channels" in results else None
        b.performance = results.get("performance")
        b.bfr = results.get("bfr")
        b.settings = results.get("settings")
        status = common_pb2.ProcessingStatus.Name(b.session.processing_status).removeprefix(
            "PROCESSING_STATUS_").lower()
        reason = f": {b.session.error_message}" if b.session.error_message else ""
        if t in ("statistics_only", "clinical_summary") and not b.channels:
            b.error = f"session {sid} has no EMG statistics (processing status {status}{reason})"
            b.error_code = "FailedPrecondition"
        elif t in ("performance_report", "clinical_summary") and b.performance is None and status != "completed":
            b.error = f"session {sid} has no performance score (processing status: {status}{reason})"
            b.error_code = "NotFound"

    async def _fetch_batch(self, bundles: list[layouts.SessionBundle], sel: Selection, call: CallOptions) -> None:
        """Statistics, performance and registry rows of many sessions in batches of BATCH
        (one StatisticsService call each instead of three per session)."""
        todo = []
        for b in bundles:
            if _maybe_uuid(b.session_id) is None:
                b.error, b.error_code = f"session_id must be a UUID, got {b.session_id[:80]!r}", "InvalidArgument"
            else:
                todo.append(b)
        t = sel.export_type
        for i in range(0, len(todo), BATCH):
            part = todo[i:i + BATCH]
            reply = await self.downstream.batch_statistics([b.session_id for b in part], sel.channels, call)
            found = {item.session.id: item for item in reply.sessions}
            for b in part:
                item = found.get(str(_maybe_uuid(b.session_id)))
                if item is None:
                    b.error, b.error_code = f"session {b.session_id} does not exist", "NotFound"
                    continue
                b.session = b.session or item.session
                b.channels = list(item.channels)
                b.performance = item.performance if item.HasField("performance") else None
                status = common_pb2.ProcessingStatus.Name(b.session.processing_status).removeprefix(
                    "PROCESSING_STATUS_").lower()
                reason = f": {b.session.error_message}" if b.session.error_message else ""
                missing = set(sel.channels) - {c.channel_name for c in b.channels}
                if t in ("statistics_only", "clinical_summary") and sel.channels and missing:
                    b.error = (f"session {b.session.id} has no statistics for channel(s) "
                               f"{', '.join(sorted(missing))}")
                    b.error_code = "NotFound"
                elif t in ("statistics_only", "clinical_summary") and not b.channels:
                    b.error = f"session {b.session_id} has no EMG statistics (processing status {status}{reason})"
                    b.error_code = "FailedPrecondition"
                elif t in ("performance_report", "clinical_summary") and b.performance is None \
                        and status != "completed":  # completed + no score: not scorable, exported empty
                    b.error = (f"session {b.session.id} has no performance score "
                               f"(processing status: {status}{reason})")
                    b.error_code = "NotFound"

    async def _statistics(self, sel: Selection, call: CallOptions) -> Outcome:
        bundles = await self._select_sessions(sel, call)
        if sel.export_type == "bfr_safety_report":
            await bounded_gather([lambda b=b: self._fetch_session(b, sel, call) for b in bundles],
                                 self.session_concurrency)
        else:
            await self._fetch_batch(bundles, sel, call)
        ok = [b for b in bundles if b.error is None]
        failed = [b for b in bundles if b.error is not None]
        if not ok:
            first = failed[0]
            cls = getattr(errors, first.error_code or "", None) or errors.FailedPrecondition
            msg = first.error if len(failed) == 1 else f"none of the {len(failed)} sessions could be exported; " \
                                                        f"first: {first.error}"
            raise cls(msg)
        meta = {"selection": {k: v for k, v in sel.options().items() if k != "session_ids"} |
                {"sessions_requested": len(bundles), "sessions_exported": len(ok)},
                "units": layouts.UNIT_CONVENTIONS,
                "missing_sessions": [{"session_id": b.session_id, "reason": b.error} for b in failed]}
        doc = layouts.statistics_document(sel.export_type, bundles, meta)
        out = Outcome(doc, missing=[f"{b.session_id} ({b.error})" for b in failed])
        if len(bundles) == 1:
            out.session_id = bundles[0].session_id
        out.checks.append(_check("sessions_exported", not failed,
                                 f"{len(ok)} of {len(bundles)} sessions exported"
                                 + (f"; missing: {_short_list(out.missing, 5)}" if failed else "")))
        # Expected rows come from the downstream replies, independently of the table builders;
        # the readback check compares them with what the rendered file holds.
        n_channels = sum(len(b.channels or ()) for b in ok)
        if sel.export_type == "statistics_only":
            out.expected_rows = {"statistics": n_channels}
        elif sel.export_type == "performance_report":
            out.expected_rows = {"performance": len(ok)}
        elif sel.export_type == "bfr_safety_report":
            out.expected_rows = {"bfr": len(ok)}
        else:
            out.expected_rows = {"sessions": len(ok), "channels": n_channels,
                                 "summary": sum(max(1, len(b.channels or ())) for b in ok)}
        if sel.export_type in ("statistics_only", "clinical_summary"):
            empty = [b.session_id for b in ok if not b.channels]
            out.checks.append(_check("channels_non_empty", not empty,
                                     f"{n_channels} channel rows over {len(ok)} sessions"
                                     + (f"; sessions without channels: {_short_list(empty)}" if empty else "")))
            if sel.channels:
                lacking = [b.session_id for b in ok
                           if set(sel.channels) - {c.channel_name for c in b.channels or ()}]
                out.checks.append(_check("channels_complete", not lacking,
                                         f"requested channels {', '.join(sel.channels)} present in every session"
                                         if not lacking else f"sessions lacking requested channels: "
                                                             f"{_short_list(lacking)}"))
        return out

    # ------------------------------------------------------------------ signal types
    async def _signals(self, sel: Selection, call: CallOptions) -> Outcome:
        sid = sel.session_ids[0]
        full = sel.export_type == "signals_research_full"
        session, listing = await asyncio.gather(self.downstream.get_session(sid, call),
                                                self.downstream.list_channels(sid, call))
        available = {c.name: c for c in listing.channels}
        if not available:
            raise errors.FailedPrecondition(f"session {sid} has no muscle channels")
        unknown = [c for c in sel.channels if c not in available]
        if unknown:
            raise errors.NotFound(f"session {sid} has no channel(s) {', '.join(unknown)} "
                                  f"(available: {', '.join(available)})")
        channels = sel.channels or list(available)
        # Refuse an Excel export before any signal is processed when it cannot fit a sheet.
        per_channel = {c: (available[c].sample_count if full else min(sel.max_points, available[c].sample_count))
                       for c in channels}
        if sel.data_format == "excel":
            rows = (max(per_channel.values()) if full
                    else sum(per_channel.values()) * len(sel.kinds))
            try:
                writers.check_excel_rows({"signals": rows})
            except writers.FormatLimitError as exc:
                raise errors.InvalidArgument(str(exc)) from None

        collector = layouts.SignalCollector()

        async def stream(kind: str):
            req = jpb.StreamSignalsRequest(session_id=sid, channels=channels, kind=KINDS[kind],
                                           full_resolution=full, max_points=0 if full else sel.max_points,
                                           chunk_samples=STREAM_CHUNK_SAMPLES)
            async for chunk in self.downstream.stream_signals(req, call):
                collector.add(kind, chunk)

        await asyncio.gather(*(stream(k) for k in sel.kinds))
        traces = collector.traces(channels, sel.kinds)
        info = {k: collector.infos.get(k) for k in sel.kinds}
        first = next((i for i in info.values() if i is not None), None)
        rate = available[channels[0]].sample_rate_hz
        meta = {
            "session": {"session_id": session.id, "session_label": session.session_label,
                        "patient_id": session.patient_id, "session_date": layouts.iso(session.session_date),
                        "source_file": session.file_path, "source_file_sha256": session.file_hash,
                        "source_file_size_bytes": session.file_size_bytes},
            "units": {"values": "V", "time": "s", "sample_rate": "Hz"},
            "processing": {
                "processing_version": first.processing_version if first else session.processing_version,
                "sample_rate_hz": rate,
                "full_resolution": full,
                "downsampling": "none" if full else (first.downsampling if first else "minmaxlttb"),
                "max_points": None if full else sel.max_points,
                "window_start_s": first.t_start_s if first else None,
                "window_end_s": first.t_end_s if first else None,
                "window_sample_count": first.window_sample_count if first else None,
                "cache_hit": {k: i.cache_hit for k, i in info.items() if i is not None},
                "signal_kinds": {k: layouts.SIGNAL_KINDS[k] for k in sel.kinds},
                "time_base": "t = sample_index / sample_rate_hz (s from the first analog sample)",
                "value_encoding": "float32 as processed; text formats use the shortest decimal that "
                                  "round-trips to the same float32",
            },
            "channels": [{"name": c, "raw_label": available[c].raw_label, "side": available[c].side,
                          "unit": available[c].unit or "V", "sample_count": available[c].sample_count,
                          "duration_s": available[c].duration_s} for c in channels],
        }
        doc = layouts.signals_document(sel.export_type, traces, full, meta)
        out = Outcome(doc, session_id=sid)
        expected = [(c, k) for c in channels for k in sel.kinds]
        got = {(t.channel, t.kind): t for t in traces}
        missing = [f"{c}/{k}" for c, k in expected if (c, k) not in got]
        empty = [t.label for t in traces if len(t.values) == 0]
        out.checks.append(_check("channels_non_empty", not missing and not empty,
                                 f"{len(traces)} of {len(expected)} channel/kind traces with data"
                                 + (f"; missing: {', '.join(missing)}" if missing else "")
                                 + (f"; empty: {', '.join(empty)}" if empty else "")))
        short = [f"{t.label} {len(t.values)}/{t.expected_points}" for t in traces
                 if (t.expected_points is not None and len(t.values) != t.expected_points)
                 or not collector.complete((t.channel, t.kind))
                 or (t.sample_index is not None and len(t.sample_index) != len(t.values))]
        out.checks.append(_check("points_complete", not short,
                                 "every trace has the points announced by JitSignalService "
                                 f"({', '.join(f'{t.label}={len(t.values)}' for t in traces)})"
                                 if not short else f"incomplete traces: {', '.join(short)}"))
        nonfinite = {t.label: int((~np.isfinite(t.values)).sum()) for t in traces}
        bad = {k: v for k, v in nonfinite.items() if v}
        out.checks.append(_check("values_finite", not bad, "no NaN/inf values" if not bad else
                                 "non-finite values: " + ", ".join(f"{k}={v}" for k, v in bad.items())))
        if full:
            same = doc.signals.same_time_base
            out.checks.append(_check("same_time_base", same, "all traces share one time base" if same else
                                     "traces differ in start or length"))
        out.expected_rows = {"signals": doc.signals.rows_wide() if doc.signals.same_time_base
                             else doc.signals.rows_long()}
        if missing:
            out.missing = [f"{sid} traces {', '.join(missing)}"]
        return out

    # ------------------------------------------------------------------ ListExportHistory
    async def ListExportHistory(self, request: pb.ListExportHistoryRequest, context):
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise errors.InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE} (0 = {DEFAULT_PAGE_SIZE}), "
                                         f"got {request.page_size}")
        session = parse_uuid(request.session_id, "session_id") if request.session_id else None
        researcher = parse_uuid(request.exported_by, "exported_by") if request.exported_by else None
        etype = fmt = status = None
        if request.type:
            if request.type not in TYPES:
                raise errors.InvalidArgument(f"type {request.type} is not a known ExportType")
            etype = TYPES[request.type]
        if request.format:
            if request.format not in FORMATS:
                raise errors.InvalidArgument(f"format {request.format} is not a known ExportFormat")
            fmt = FORMATS[request.format]
        if request.status:
            if request.status not in STATUSES:
                raise errors.InvalidArgument(f"status {request.status} is not a known ExportStatus")
            status = STATUSES[request.status]
        lo = _ts_dt(getattr(request, "from"), "from") if request.HasField("from") else None
        hi = _ts_dt(request.to, "to") if request.HasField("to") else None
        if lo and hi and lo >= hi:
            raise errors.InvalidArgument(f"from must be before to ({lo.isoformat()} >= {hi.isoformat()})")
        filters = paging.filter_hash([str(session or ""), str(researcher or ""), etype, fmt, status,
                               lo.isoformat() if lo else None, hi.isoformat() if hi else None])
        cursor = decode_token(request.page_token, filters) if request.page_token else None
        rows = await self.history.list(session_id=session, exported_by=researcher, export_type=etype,
                                       data_format=fmt, status=status, time_from=lo, time_to=hi,
                                       cursor=cursor, limit=size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = encode_token(rows[-1]["export_timestamp"], rows[-1]["id"], filters)
        return pb.ListExportHistoryResponse(records=[_record(r) for r in rows], next_page_token=token)


async def bounded_gather(factories: list, limit: int) -> None:
    """Run coroutine factories with at most `limit` in flight; the first exception cancels the rest and
    is raised (an UNAVAILABLE downstream stops a 1,000-session export at once)."""
    gate = asyncio.Semaphore(limit)

    async def one(factory):
        async with gate:
            await factory()

    tasks = [asyncio.ensure_future(one(f)) for f in factories]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _gather_all(jobs: dict[str, Any]) -> dict[str, Any]:
    keys = list(jobs)
    values = await asyncio.gather(*jobs.values())
    return dict(zip(keys, values))


def _record(r) -> pb.ExportRecord:
    checks = r["validation_checks"] or []
    return pb.ExportRecord(
        id=str(r["id"]), session_id=str(r["session_id"]) if r["session_id"] else "",
        type=TYPE_ENUM.get(r["export_type"], 0), format=FORMAT_ENUM.get(r["data_format"], 0),
        channels_exported=r["channels_exported"] or [],
        export_options_json=json.dumps(r["export_options"]) if r["export_options"] is not None else "",
        processing_method=r["processing_method"], processing_time_ms=r["processing_time_ms"] or 0,
        data_source=r["data_source"] or "", exported_by=str(r["exported_by"]) if r["exported_by"] else "",
        export_timestamp=to_timestamp(r["export_timestamp"]), file_size_bytes=r["file_size_bytes"] or 0,
        export_hash=r["export_hash"] or "", status=STATUS_ENUM.get(r["export_status"], 0),
        validation_checks=[pb.ValidationCheck(name=c.get("name", ""), passed=bool(c.get("passed")),
                                              detail=c.get("detail", "")) for c in checks],
        error_message=r["error_message"] or "")


def _options_metadata(doc: ExportDocument) -> dict:
    """What a CSV cannot carry (units, processing parameters), kept in export_options."""
    meta = {k: v for k, v in doc.metadata.items() if k not in ("export",)}
    meta["columns"] = [dict(table=t, column=c, unit=u) for t, c, k, u, d in writers.column_dictionary(doc)]
    return json.loads(json.dumps(meta, default=str))


def file_name(export_id: uuid.UUID, sel: Selection, outcome: Outcome) -> str:
    if outcome.session_id:
        scope = outcome.session_id
    elif sel.patient_id:
        scope = re.sub(r"[^A-Za-z0-9_-]", "_", sel.patient_id)
    else:
        scope = f"{len(sel.session_ids) or outcome.doc.metadata.get('selection', {}).get('sessions_requested', 0)}sessions"
    return f"ghostly_{sel.export_type}_{scope}_{str(export_id)[:8]}.{writers.EXTENSIONS[sel.data_format]}"


# --------------------------------------------------------------------------- readback checks

def readback_checks(payload: bytes, fmt: str, outcome: Outcome) -> list[dict]:
    """Re-open the rendered bytes with the format's reader and count what it holds."""
    expected = outcome.expected_rows
    try:
        found = _readback_rows(payload, fmt, outcome.doc)
    except Exception as exc:  # noqa: BLE001 - a file that does not open is a failed check
        return [_check("readback", False, f"the rendered {fmt} file does not open: {exc}")]
    if fmt == "csv":
        name = "signals" if outcome.doc.signals is not None else (
            outcome.doc.csv_override.name if outcome.doc.csv_override is not None else outcome.doc.tables[0].name)
        expected = {name: expected.get(name, -1)}
    else:
        written = {t.name for t in outcome.doc.tables} | ({"signals"} if outcome.doc.signals is not None else set())
        expected = {k: v for k, v in expected.items() if k in written}
    ok = all(found.get(k) == v for k, v in expected.items()) and all(v > 0 for v in expected.values())
    detail = ", ".join(f"{k}: {found.get(k)} rows (expected {v})" for k, v in expected.items())
    return [_check("row_count", ok, f"read back from the {fmt} file: {detail}")]


def _readback_rows(payload: bytes, fmt: str, doc: ExportDocument) -> dict[str, int]:
    if fmt == "csv":
        if doc.signals is not None:     # numbers only, no quoted newlines
            return {"signals": payload.count(b"\n") - 1}
        name = doc.csv_override.name if doc.csv_override is not None else doc.tables[0].name
        rows = list(csv.reader(io.StringIO(payload.decode("utf-8"))))
        return {name: len(rows) - 1}
    if fmt == "json":
        data = json.loads(payload)
        out = {t.name: len(data[t.name]) for t in doc.tables}
        if doc.signals is not None:
            s = data["signals"]
            lengths = [len(t["values"]) for t in s["traces"]]
            out["signals"] = (max(lengths, default=0) if s["same_time_base"] else sum(lengths))
        return out
    if fmt == "matlab":
        from scipy.io import loadmat
        m = loadmat(io.BytesIO(payload), squeeze_me=False, struct_as_record=False)["ghostly"][0, 0]
        out = {}
        for t in doc.tables:
            tab = getattr(m, writers.mat_field(t.name))[0, 0]
            first = writers.mat_field(t.columns[0].name)
            out[t.name] = getattr(tab, first).shape[0]
        if doc.signals is not None:
            data = m.data
            if doc.signals.same_time_base:
                out["signals"] = data.shape[0] if data.size else 0
            else:
                out["signals"] = int(np.isfinite(m.sample_index).sum())
        return out
    if fmt == "excel":
        out = {}
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            wb = z.read("xl/workbook.xml").decode()
            names = re.findall(r'<sheet name="([^"]+)" sheetId="(\d+)"', wb)
            for name, sid in names:
                xml = z.read(f"xl/worksheets/sheet{sid}.xml")
                m = re.search(rb'<dimension ref="[A-Z]+\d+(?::[A-Z]+(\d+))?"', xml)
                rows = int(m.group(1)) if m and m.group(1) else 1
                out[name] = rows - 1
        return out
    raise ValueError(fmt)
