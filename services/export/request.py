"""ExportService requests: enum names, limits, and the parsing and validation of CreateExport
and ListExportHistory requests (INVALID_ARGUMENT with a message saying what to send)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from ghostly.export.v1 import export_pb2 as pb
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from libs import errors, paging
from libs.convert import parse_uuid, request_window
from services.export.history import decode_token

MAX_SESSIONS = 10_000  # sessions per export
DEFAULT_MAX_POINTS = 1000
MAX_POINTS = 1_000_000
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500

TYPES = {
    pb.EXPORT_TYPE_STATISTICS_ONLY: "statistics_only",
    pb.EXPORT_TYPE_PERFORMANCE_REPORT: "performance_report",
    pb.EXPORT_TYPE_SIGNALS_VISUALIZATION: "signals_visualization",
    pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL: "signals_research_full",
    pb.EXPORT_TYPE_CLINICAL_SUMMARY: "clinical_summary",
    pb.EXPORT_TYPE_BFR_SAFETY_REPORT: "bfr_safety_report",
}
TYPE_ENUM: dict[str, pb.ExportType] = {v: k for k, v in TYPES.items()}
FORMATS = {
    pb.EXPORT_FORMAT_JSON: "json",
    pb.EXPORT_FORMAT_CSV: "csv",
    pb.EXPORT_FORMAT_EXCEL: "excel",
    pb.EXPORT_FORMAT_MATLAB: "matlab",
}
FORMAT_ENUM: dict[str, pb.ExportFormat] = {v: k for k, v in FORMATS.items()}
STATUSES = {pb.EXPORT_STATUS_SUCCESS: "success", pb.EXPORT_STATUS_PARTIAL: "partial", pb.EXPORT_STATUS_FAILED: "failed"}
STATUS_ENUM: dict[str, pb.ExportStatus] = {v: k for k, v in STATUSES.items()}
SIGNAL_TYPES = {"signals_visualization", "signals_research_full"}
KINDS = {"raw": jpb.SIGNAL_KIND_RAW, "filtered": jpb.SIGNAL_KIND_FILTERED, "envelope": jpb.SIGNAL_KIND_ENVELOPE}


def maybe_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def export_kind(request: pb.CreateExportRequest) -> tuple[str, str]:
    """The export type and format names; checked first, before the history row (its CHECKs
    need both)."""
    export_type = TYPES.get(request.type)
    if export_type is None:
        raise errors.InvalidArgument("type is required: one of " + ", ".join(TYPES.values()))
    data_format = FORMATS.get(request.format)
    if data_format is None:
        raise errors.InvalidArgument("format is required: one of json, csv, excel, matlab")
    return export_type, data_format


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


def parse_request(request: pb.CreateExportRequest, export_type: str, data_format: str) -> Selection:
    ids = list(dict.fromkeys(s.strip() for s in request.session_ids if s.strip()))
    for s in ids:
        parse_uuid(s, "session_ids")
    date_from, date_to = request_window(request)
    channels = list(dict.fromkeys(c.strip() for c in request.channels if c.strip()))
    kinds = list(dict.fromkeys(k.strip().lower() for k in request.signal_kinds if k.strip())) or ["raw"]
    sel = Selection(
        export_type,
        data_format,
        ids,
        request.patient_id.strip(),
        date_from,
        date_to,
        channels,
        kinds,
        request.max_points or DEFAULT_MAX_POINTS,
    )
    if sel.is_signal:
        if len(ids) != 1 or sel.patient_id or date_from or date_to:
            raise errors.InvalidArgument(
                f"{export_type} exports take exactly one session in session_ids "
                f"(got {len(ids)}{', and a patient/date selection' if sel.patient_id or date_from or date_to else ''})"
            )
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise errors.InvalidArgument(f"unknown signal_kinds {bad}: use raw, filtered or envelope")
        if export_type == "signals_visualization" and not 3 <= sel.max_points <= MAX_POINTS:
            raise errors.InvalidArgument(
                f"max_points must be 3-{MAX_POINTS:,} (0 = {DEFAULT_MAX_POINTS}), got {request.max_points}"
            )
    else:
        if request.signal_kinds:
            raise errors.InvalidArgument(f"signal_kinds only apply to signal exports, not {export_type}")
        if ids and (sel.patient_id or date_from or date_to):
            raise errors.InvalidArgument("give either session_ids or a patient_id / date window, not both")
        if not ids and not (sel.patient_id or date_from or date_to):
            raise errors.InvalidArgument(
                "select sessions: session_ids, or patient_id and/or a date_from/date_to window"
            )
        if len(ids) > MAX_SESSIONS:
            raise errors.InvalidArgument(f"at most {MAX_SESSIONS:,} sessions per export, got {len(ids):,}")
    return sel


@dataclass
class HistoryQuery:
    """A validated ListExportHistory request: the History.list filters and the page."""

    page_size: int
    session_id: uuid.UUID | None
    exported_by: uuid.UUID | None
    export_type: str | None
    data_format: str | None
    status: str | None
    time_from: dt.datetime | None
    time_to: dt.datetime | None
    filters: str  # hash of the filters, bound into the page tokens
    cursor: Any  # decoded page_token, None for the first page


def parse_history_request(request: pb.ListExportHistoryRequest) -> HistoryQuery:
    size = paging.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
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
    lo, hi = request_window(request, "from", "to")
    filters = paging.filter_hash(
        [
            str(session or ""),
            str(researcher or ""),
            etype,
            fmt,
            status,
            lo.isoformat() if lo else None,
            hi.isoformat() if hi else None,
        ]
    )
    cursor = decode_token(request.page_token, filters) if request.page_token else None
    return HistoryQuery(size, session, researcher, etype, fmt, status, lo, hi, filters, cursor)
