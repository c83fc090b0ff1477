"""PatientService: the patient registry and per-patient calibration (the clinic's writes).

Who may write (the interceptor lets therapists, admins and services in; the caseload rule is
checked here): admin and service write anything; a therapist creates patients into their own
caseload and edits only those. A patient outside the caller's caseload answers NOT_FOUND with
the message of an unknown one, so codes of other therapists' patients are not revealed.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from typing import Any

import asyncpg

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from libs import auth
from libs.convert import parse_uuid, to_timestamp
from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from libs.registry_pb import CALIBRATION_VALUES, calibration_pb, patient_pb
from services.ingest import repository as repo

CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
NAME_MAX = 100
NOTES_MAX = 1000
DEFAULT_TOP_N, MAX_TOP_N = 3, 20
# Calibration value -> (proto field, valid range (exclusive low?, low, high), unit for messages)
CAL_LIMITS = {
    "mvc_left_v": (0.0, 0.1, "V"),
    "mvc_right_v": (0.0, 0.1, "V"),
    "duration_threshold_left_s": (0.0, 60.0, "s"),
    "duration_threshold_right_s": (0.0, 60.0, "s"),
    "target_contractions": (0, 1000, ""),
    "bfr_target_pressure_aop": (-1e-9, 100.0, "% AOP"),
}
CAL_VALUES = CALIBRATION_VALUES
assert tuple(CAL_LIMITS) == CALIBRATION_VALUES


def _name(value: str, field: str) -> str:
    v = value.strip()
    if not v or len(v) > NAME_MAX or "\x00" in v:
        raise InvalidArgument(f"{field} must be 1-{NAME_MAX} characters without NUL, got {value[:40]!r}")
    return v


def _dob(value: str) -> dt.date:
    try:
        d = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"date_of_birth must be YYYY-MM-DD, got {value[:40]!r}") from None
    if not dt.date(1900, 1, 1) <= d < dt.date.today():
        raise InvalidArgument(f"date_of_birth must be after 1900-01-01 and in the past, got {value}")
    return d


def _code(value: str) -> str:
    if not CODE_RE.match(value):
        raise InvalidArgument(f"patient_code must be 1-32 letters, digits, '-' or '_', got {value[:40]!r}")
    return value


def _notes(value: str) -> str | None:
    if len(value) > NOTES_MAX or "\x00" in value:
        raise InvalidArgument(f"notes must be at most {NOTES_MAX} characters without NUL")
    return value or None


def therapist_pb(row: asyncpg.Record) -> common_pb2.Therapist:
    return common_pb2.Therapist(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        first_name=row["first_name"],
        last_name=row["last_name"],
        created_at=to_timestamp(row["created_at"]),
    )


async def caller_therapist(conn: asyncpg.Connection, me: auth.Identity) -> asyncpg.Record | None:
    """The calling therapist's row (None for admin/service); FAILED_PRECONDITION when a
    therapist token names no registered therapist."""
    if not me.is_therapist:
        return None
    uid = me.subject_uuid()
    row = await repo.therapist_by_user(conn, uid) if uid else None
    if row is None:
        raise FailedPrecondition(f"the calling therapist (user {me.subject}) is not registered")
    return row


async def editable_patient(conn: asyncpg.Connection, code: str, *, for_update: bool = True) -> asyncpg.Record:
    """The patient, if the caller may edit it; NOT_FOUND (same message) otherwise."""
    me = auth.current()
    row = await repo.patient(conn, code, for_update=for_update) if code else None
    if row is None or (me.is_therapist and str(row["therapist_user_id"]) != me.subject):
        raise NotFound(f"patient {code!r} does not exist")
    return row


class PatientServicer(ingest_pb2_grpc.PatientServiceServicer):
    def __init__(self, pool: asyncpg.Pool):
        self.db = pool

    async def CreateTherapist(self, request: ingest_pb2.CreateTherapistRequest, context) -> common_pb2.Therapist:
        uid = parse_uuid(request.user_id, "user_id")
        first, last = _name(request.first_name, "first_name"), _name(request.last_name, "last_name")
        async with self.db.acquire() as conn:
            row = await repo.create_therapist(conn, uid, first, last)
        if row is None:
            raise AlreadyExists(f"a therapist with user_id {uid} is already registered")
        return therapist_pb(row)

    async def CreatePatient(self, request: ingest_pb2.CreatePatientRequest, context) -> common_pb2.Patient:
        code = _code(request.patient_code) if request.patient_code else None
        first, last = _name(request.first_name, "first_name"), _name(request.last_name, "last_name")
        dob = _dob(request.date_of_birth)
        async with self.db.acquire() as conn, conn.transaction():
            me = await caller_therapist(conn, auth.current())
            if me is not None:
                if request.therapist_id and parse_uuid(request.therapist_id, "therapist_id") != me["id"]:
                    raise PermissionDenied("a therapist registers patients into their own caseload only")
                therapist_id = me["id"]
            else:
                if not request.therapist_id:
                    raise InvalidArgument("therapist_id is required (the patient's therapist, therapists.id)")
                therapist_id = parse_uuid(request.therapist_id, "therapist_id")
                if not await repo.therapist_exists(conn, therapist_id):
                    raise FailedPrecondition(f"therapist {therapist_id} is not registered")
            created = await repo.create_patient(conn, code, therapist_id, first, last, dob)
            if created is None:
                raise AlreadyExists(f"patient code {code!r} is already taken")
            found = await repo.patient(conn, created)
            assert found is not None  # created in this transaction
            return patient_pb(found, None)

    async def UpdatePatient(self, request: ingest_pb2.UpdatePatientRequest, context) -> common_pb2.Patient:
        changes: dict[str, Any] = {}
        if request.HasField("first_name"):
            changes["first_name"] = _name(request.first_name, "first_name")
        if request.HasField("last_name"):
            changes["last_name"] = _name(request.last_name, "last_name")
        if request.HasField("date_of_birth"):
            changes["date_of_birth"] = _dob(request.date_of_birth)
        async with self.db.acquire() as conn, conn.transaction():
            row = await editable_patient(conn, request.patient_code)
            if request.HasField("therapist_id"):
                if auth.current().is_therapist:
                    raise PermissionDenied("only an admin or a service moves a patient to another therapist")
                tid = parse_uuid(request.therapist_id, "therapist_id")
                if not await repo.therapist_exists(conn, tid):
                    raise FailedPrecondition(f"therapist {tid} is not registered")
                changes["therapist_id"] = tid
            if changes:
                await repo.update_patient(conn, row["patient_code"], changes)
            found = await repo.patient(conn, row["patient_code"])
            assert found is not None  # locked by editable_patient
            return patient_pb(found, await repo.current_calibration(conn, row["patient_code"]))

    async def DeactivatePatient(self, request: ingest_pb2.DeactivatePatientRequest, context) -> common_pb2.Patient:
        async with self.db.acquire() as conn, conn.transaction():
            row = await editable_patient(conn, request.patient_code)
            await repo.deactivate_patient(conn, row["patient_code"])
            found = await repo.patient(conn, row["patient_code"])
            assert found is not None  # locked by editable_patient
            return patient_pb(found, await repo.current_calibration(conn, row["patient_code"]))

    async def SetPatientCalibration(
        self, request: ingest_pb2.SetPatientCalibrationRequest, context
    ) -> common_pb2.PatientCalibration:
        given: dict[str, Any] = {}
        for col, (low, high, unit) in CAL_LIMITS.items():
            if request.HasField(col):
                v = getattr(request, col)
                if (isinstance(v, float) and not math.isfinite(v)) or not low < v <= high:
                    raise InvalidArgument(
                        f"{col} must be > {max(low, 0):g} and <= {high:g} {unit}".rstrip() + f", got {v!r}"
                    )
                given[col] = v
        if not given:
            raise InvalidArgument(
                "give at least one calibration value (mvc_left_v, mvc_right_v, "
                "duration_threshold_left_s/right_s, target_contractions, bfr_target_pressure_aop)"
            )
        notes = _notes(request.notes)
        return await self._calibrate(
            request.patient_code, given, source="therapist_entered", session_id=None, rule=None, notes=notes
        )

    async def CalibrateFromSession(
        self, request: ingest_pb2.CalibrateFromSessionRequest, context
    ) -> common_pb2.PatientCalibration:
        sid = parse_uuid(request.session_id, "session_id")
        top_n = request.top_n or DEFAULT_TOP_N
        if not 1 <= top_n <= MAX_TOP_N:
            raise InvalidArgument(f"top_n must be 0 (= {DEFAULT_TOP_N}) or 1..{MAX_TOP_N}, got {request.top_n}")
        notes = _notes(request.notes)
        async with self.db.acquire() as conn:
            session = await repo.session_owner(conn, sid)
            if session is None or session["patient_id"] is None:
                raise NotFound(f"session {sid} does not exist")
            try:
                await editable_patient(conn, session["patient_id"], for_update=False)
            except NotFound:
                raise NotFound(f"session {sid} does not exist") from None
            if session["processing_status"] != "completed":
                raise FailedPrecondition(f"session {sid} is {session['processing_status']}, not completed")
            if session["session_type"] != "assessment" and not request.allow_any_session_type:
                raise FailedPrecondition(
                    f"session {sid} is of type {session['session_type'] or 'unknown'}, not "
                    "assessment (set allow_any_session_type to use it anyway)"
                )
            channels = await repo.strongest_peaks(conn, sid)
        given, notes_rule = mvc_from_peaks(channels, top_n)
        if not given:
            raise FailedPrecondition(f"session {sid} yields no MVC: {notes_rule}")
        return await self._calibrate(
            session["patient_id"], given, source="assessment_session", session_id=sid, rule=notes_rule, notes=notes
        )

    async def _calibrate(
        self,
        code: str,
        given: dict[str, Any],
        *,
        source: str,
        session_id: uuid.UUID | None,
        rule: str | None,
        notes: str | None,
    ) -> common_pb2.PatientCalibration:
        me = auth.current()
        async with self.db.acquire() as conn, conn.transaction():
            row = await editable_patient(conn, code)  # locks the patient: calibrations are serialised
            if not row["active"]:
                raise FailedPrecondition(f"patient {code!r} is deactivated")
            previous = await repo.current_calibration(conn, code)
            values = {
                c: (given[c] if c in given else (previous[c] if previous is not None else None)) for c in CAL_VALUES
            }
            new = await repo.insert_calibration(
                conn,
                code,
                values,
                source=source,
                source_session_id=session_id,
                rule=rule,
                created_by=me.subject,
                created_by_role=me.role,
                notes=notes,
            )
        return calibration_pb(new)


def mvc_from_peaks(channels: dict[str, dict[str, Any]], top_n: int) -> tuple[dict[str, float], str]:
    """(MVC columns, rule text): per side, the median envelope peak of the ``top_n`` strongest
    contractions no artefact touched; a side whose channel is unusable or has fewer such
    contractions gets no value (its previous calibration is kept)."""
    import statistics

    given: dict[str, float] = {}
    parts = [f"median envelope peak of the {top_n} strongest uncorrupted contractions per muscle"]
    for ch in sorted(channels.values(), key=lambda c: c["channel_name"]):
        side = ch["side"]
        if side not in ("left", "right") or f"mvc_{side}_v" in given:
            continue
        peaks = list(ch["peaks"])
        if not ch["usable"]:
            parts.append(f"{ch['channel_name']} ({side}) unusable ({', '.join(ch['signal_flags'])}): kept previous")
        elif len(peaks) < top_n:
            parts.append(
                f"{ch['channel_name']} ({side}) has {len(peaks)} uncorrupted contraction(s) < {top_n}: kept previous"
            )
        else:
            given[f"mvc_{side}_v"] = float(statistics.median(peaks[:top_n]))
            parts.append(f"{ch['channel_name']} ({side}) from {top_n} of {len(peaks)}")
    return given, "; ".join(parts)
