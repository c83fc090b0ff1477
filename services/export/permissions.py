"""Who may export what (ExportService's authorization rules).

Roles per RPC (the interceptor enforces PERMISSIONS, libs/grpc_server/interceptor.py); who an
export is recorded for (as_caller). Which patients a caller sees is not decided here: the
caller's token is forwarded with every downstream call (services/export/downstream.py), so
StatisticsService / JitSignalService apply their row-level rules (a therapist: their own
patients only).
"""

from __future__ import annotations

from ghostly.export.v1 import export_pb2 as pb
from libs import auth, errors

PERMISSIONS: dict[str, frozenset[str]] = {
    # The audit trail is for researchers and operators; every role may export (a therapist
    # only their own patients: the token is forwarded and checked downstream).
    "ListExportHistory": frozenset({"researcher", "admin", "service"}),
}


def requested_by() -> dict[str, str]:
    """The caller, as recorded in export_options.requested_by."""
    caller = auth.current()
    return {"role": caller.role, "subject": caller.subject}


def as_caller(request: pb.CreateExportRequest) -> pb.CreateExportRequest:
    """exported_by follows the caller: a researcher exports as themselves (empty = their own
    id; another id is PERMISSION_DENIED); a therapist's export has no researcher (the caller is
    audited in export_options.requested_by); admins and services may export on a researcher's
    behalf."""
    caller = auth.current()
    if caller.role == "researcher":
        if request.exported_by and request.exported_by != caller.subject:
            raise errors.PermissionDenied(
                "a researcher exports as themselves: exported_by must be empty or the caller's own id"
            )
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
