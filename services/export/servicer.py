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

This module is the orchestration; the parts live next to it: request.py (parsing and
validation), permissions.py (who may export what), gather.py (fetching the data downstream),
layouts.py / writers.py (document and file), readback.py (the row_count check), history.py
(the audit rows).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc

from ghostly.export.v1 import export_pb2 as pb
from ghostly.export.v1 import export_pb2_grpc
from libs import errors
from libs.convert import to_timestamp
from services.export import writers
from services.export.downstream import CallOptions, Downstream
from services.export.gather import Gatherer, short_list
from services.export.history import History, encode_token
from services.export.model import ExportDocument, Outcome, check
from services.export.permissions import as_caller, requested_by
from services.export.readback import readback_checks
from services.export.request import (
    FORMAT_ENUM,
    SIGNAL_TYPES,
    STATUS_ENUM,
    TYPE_ENUM,
    Selection,
    export_kind,
    maybe_uuid,
    parse_history_request,
    parse_request,
)

CHUNK_BYTES = 1 << 20  # <= 1 MiB per data message

log = logging.getLogger("ghostly.export")


class ExportServicer(export_pb2_grpc.ExportServiceServicer):
    def __init__(self, history: History, downstream: Downstream, session_concurrency: int = 16):
        self.history = history
        self.downstream = downstream
        self.gather = Gatherer(downstream, session_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ CreateExport
    # (who may export what: services/export/permissions.py; therapists see only their own
    # patients because the caller's token is forwarded to StatisticsService / JitSignalService)
    async def CreateExport(
        self, request: pb.CreateExportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportChunk]:
        started_at = time.perf_counter()
        export_type, data_format = export_kind(request)

        request = as_caller(request)
        export_id = uuid.uuid4()
        signal = export_type in SIGNAL_TYPES
        raw_ids = [s.strip() for s in request.session_ids if s.strip()]
        options: dict[str, Any] = {"session_ids": list(dict.fromkeys(raw_ids)), "requested_by": requested_by()}
        if request.exported_by and maybe_uuid(request.exported_by) is None:
            options["requested_exported_by"] = request.exported_by[:80]
        researcher = maybe_uuid(request.exported_by)
        row = await self.history.start(
            export_id=export_id,
            session_id=maybe_uuid(raw_ids[0]) if len(raw_ids) == 1 else None,
            export_type=export_type,
            channels=list(dict.fromkeys(request.channels)) or None,
            data_format=data_format,
            options=options,
            processing_method="jit_c3d_processing" if signal else "database_query",
            data_source="c3d_file_processed" if signal else "cached_statistics",
            exported_by=researcher,
        )

        sent = 0
        try:
            if request.exported_by:
                if researcher is None:
                    raise errors.InvalidArgument(
                        f"exported_by must be a researcher UUID, got {request.exported_by[:80]!r}"
                    )
                if row.exported_by is None:
                    options["requested_exported_by"] = str(researcher)
                    raise errors.FailedPrecondition(
                        f"exported_by {researcher} is not a registered researcher (researcher_profiles); "
                        f"register the researcher first"
                    )
            sel = parse_request(request, export_type, data_format)
            options = sel.options()
            options["requested_by"] = requested_by()
            if request.exported_by and row.exported_by is None:
                options["requested_exported_by"] = request.exported_by[:80]
            call = CallOptions(context)
            if sel.is_signal:
                outcome = await self.gather.signals(sel, call)
            else:
                outcome = await self.gather.statistics(sel, call)
            meta = outcome.doc.metadata
            meta["export"] = {
                "export_id": str(export_id),
                "export_type": export_type,
                "format": data_format,
                "created_at": row.export_timestamp.isoformat(),
                "request_id": call.request_id,
                "exported_by": str(row.exported_by) if row.exported_by else None,
                **meta.get("export", {}),
            }
            try:  # (format limits, e.g. Excel's row count, are checked before anything is written)
                payload = await asyncio.to_thread(writers.render, outcome.doc, data_format)
            except writers.FormatLimitError as exc:
                raise errors.InvalidArgument(str(exc)) from None
            checks = list(outcome.checks)
            checks += await asyncio.to_thread(readback_checks, payload, data_format, outcome)
            rendered_hash = await asyncio.to_thread(lambda: hashlib.sha256(payload).hexdigest())
            options.update(
                file_name=file_name(export_id, sel, outcome),
                content_type=writers.CONTENT_TYPES[data_format],
                metadata=_options_metadata(outcome.doc),
            )

            yield pb.ExportChunk(
                started=pb.ExportStarted(
                    export_id=str(export_id), file_name=options["file_name"], content_type=options["content_type"]
                )
            )
            digest = hashlib.sha256()
            view = memoryview(payload)
            for i in range(0, len(payload), CHUNK_BYTES):
                piece = bytes(view[i : i + CHUNK_BYTES])
                digest.update(piece)
                yield pb.ExportChunk(data=piece)
                sent += len(piece)
            sent_hash = digest.hexdigest()
            ok = sent_hash == rendered_hash and sent == len(payload)
            checks.append(
                check(
                    "hash_verified",
                    ok,
                    f"sha256 of the {sent:,} bytes sent {'equals' if ok else 'DIFFERS FROM'} "
                    f"the re-hashed rendered file ({rendered_hash[:16]}...)",
                )
            )
            status = "success" if all(c["passed"] for c in checks) and not outcome.missing else "partial"
            elapsed = int((time.perf_counter() - started_at) * 1000)
            error = None
            if status == "partial":
                failed = [c["name"] for c in checks if not c["passed"]]
                error = "; ".join(
                    filter(
                        None,
                        [
                            f"{len(outcome.missing)} session(s) not exported: {short_list(outcome.missing, 5)}"
                            if outcome.missing
                            else "",
                            f"validation checks failed: {', '.join(failed)}" if failed else "",
                        ],
                    )
                )
            await self.history.finish(
                export_id,
                status=status,
                processing_time_ms=elapsed,
                size=sent,
                sha256=sent_hash,
                checks=checks,
                error_message=error,
                options=options,
            )
            yield pb.ExportChunk(
                completed=pb.ExportCompleted(
                    export_id=str(export_id),
                    size_bytes=sent,
                    sha256=sent_hash,
                    status=STATUS_ENUM[status],
                    processing_time_ms=elapsed,
                    validation_checks=[pb.ValidationCheck(**c) for c in checks],
                )
            )
        except BaseException as exc:
            elapsed = int((time.perf_counter() - started_at) * 1000)
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                # The client went away. Record it in the background and leave at once: the
                # handler must not outlive the cancelled call (the interceptor reads its peer).
                self._background(
                    self.history.finish(
                        export_id,
                        status="failed",
                        processing_time_ms=elapsed,
                        size=sent or None,
                        sha256=None,
                        checks=None,
                        error_message=f"cancelled by the client after {sent:,} bytes",
                        options=options,
                    )
                )
                raise
            message = str(exc) or exc.__class__.__name__
            try:
                await self.history.finish(
                    export_id,
                    status="failed",
                    processing_time_ms=elapsed,
                    size=sent or None,
                    sha256=None,
                    checks=None,
                    error_message=message[:4000],
                    options=options,
                )
            except Exception:
                log.warning("could not record failed export %s", export_id, exc_info=True)
            if isinstance(exc, errors.DomainError):
                raise exc.__class__(f"{message} (export {export_id} recorded as failed)") from None
            raise

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ ListExportHistory
    async def ListExportHistory(
        self, request: pb.ListExportHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExportHistoryResponse:
        q = parse_history_request(request)
        size, filters = q.page_size, q.filters
        rows = await self.history.list(
            session_id=q.session_id,
            exported_by=q.exported_by,
            export_type=q.export_type,
            data_format=q.data_format,
            status=q.status,
            time_from=q.time_from,
            time_to=q.time_to,
            cursor=q.cursor,
            limit=size + 1,
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = encode_token(rows[-1]["export_timestamp"], rows[-1]["id"], filters)
        return pb.ListExportHistoryResponse(records=[_record(r) for r in rows], next_page_token=token)


def _record(r) -> pb.ExportRecord:
    checks = r["validation_checks"] or []
    return pb.ExportRecord(
        id=str(r["id"]),
        session_id=str(r["session_id"]) if r["session_id"] else "",
        type=TYPE_ENUM.get(r["export_type"], pb.EXPORT_TYPE_UNSPECIFIED),
        format=FORMAT_ENUM.get(r["data_format"], pb.EXPORT_FORMAT_UNSPECIFIED),
        channels_exported=r["channels_exported"] or [],
        export_options_json=json.dumps(r["export_options"]) if r["export_options"] is not None else "",
        processing_method=r["processing_method"],
        processing_time_ms=r["processing_time_ms"] or 0,
        data_source=r["data_source"] or "",
        exported_by=str(r["exported_by"]) if r["exported_by"] else "",
        export_timestamp=to_timestamp(r["export_timestamp"]),
        file_size_bytes=r["file_size_bytes"] or 0,
        export_hash=r["export_hash"] or "",
        status=STATUS_ENUM.get(r["export_status"], pb.EXPORT_STATUS_UNSPECIFIED),
        validation_checks=[
            pb.ValidationCheck(name=c.get("name", ""), passed=bool(c.get("passed")), detail=c.get("detail", ""))
            for c in checks
        ],
        error_message=r["error_message"] or "",
    )


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
        scope = (
            f"{len(sel.session_ids) or outcome.doc.metadata.get('selection', {}).get('sessions_requested', 0)}sessions"
        )
    return f"ghostly_{sel.export_type}_{scope}_{str(export_id)[:8]}.{writers.EXTENSIONS[sel.data_format]}"
