"""StatisticsService (ghostly.statistics.v1) RPC handlers: validate the request, run the
statements of repository.py, convert the rows (messages.py). See README.md.

Every RPC is one round trip to PostgreSQL (GetEmgStatistics with contractions: two), through a
pool connected as the read-only role `ghostly_statistics` (db.py)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import grpc

from ghostly.common.v1 import common_pb2
from ghostly.statistics.v1 import statistics_pb2 as pb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs import auth, errors, paging
from libs.convert import (
    PROCESSING_STATUS_NAME,
    SESSION_TYPE_NAME,
    datetime_micros,
    from_micros,
    parse_uuid,
    request_window,
    timestamp_micros,
    to_timestamp,
)
from libs.db import access
from libs.scoring_config import ScoringConfig
from services.statistics import messages as to_pb
from services.statistics import repository as q

DEFAULT_PAGE_SIZE = 50
DEFAULT_PATIENT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
# scoring_config.version is an INTEGER: a larger uint32 cannot name a stored version.
MAX_SCORING_VERSION = 2**31 - 1
MAX_BATCH = 500
# Protocol: 5 therapy sessions a week over the 14-day protocol.
SESSIONS_EXPECTED = 10
# MuscleProgress fields copied from emg_statistics (NULL only for a migrated legacy channel).
PROGRESS_FIELDS = (
    "completion_rate",
    "intensity_rate",
    "duration_rate",
    "muscle_compliance_score",
    "mvc_peak_value",
    "total_contractions",
    "good_contractions_both",
)


def _uuid(value: str, field: str) -> uuid.UUID:
    if not value:
        raise errors.InvalidArgument(f"{field} is required (a UUID)")
    return parse_uuid(value, field)


def _patient_code(value: str) -> str:
    if not value:
        raise errors.InvalidArgument("patient_code is required (a patient code, e.g. P005)")
    return value


def _caseload(arg: paging.Params) -> str | None:
    """The caller's caseload as a condition on patients (alias p); None = every patient
    (the caller's subject is bound through `arg` when needed)."""
    caller = auth.current()
    if not caller.is_therapist:
        return None
    subject = caller.subject_uuid()
    return q.therapist_condition(arg(subject) if subject is not None else None)


class StatisticsServicer(statistics_pb2_grpc.StatisticsServiceServicer):
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # Every connection carries the caller's identity (RLS, migration 012) and therapists are
    # also filtered by the queries themselves (libs/db/access.py): two walls.
    async def _rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with access.acquire(self.pool) as conn:
            return await conn.fetch(sql, *args)

    async def _session_row(self, sql: str, session_id: str) -> asyncpg.Record:
        sid = _uuid(session_id, "session_id")
        async with access.acquire(self.pool) as conn:
            await access.ensure_session_visible(conn, sid)
            row = await conn.fetchrow(sql, sid)
        if row is None:
            raise errors.NotFound(f"session {sid} does not exist")
        return row

    async def _child_row(self, sql: str, session_id: str, what: str) -> asyncpg.Record:
        """The one row of a per-session table (repository.py: read by session_id alone); when
        there is none, a second query tells a missing session from a session without `what`."""
        sid = _uuid(session_id, "session_id")
        async with access.acquire(self.pool) as conn:
            await access.ensure_session_visible(conn, sid)
            row = await conn.fetchrow(sql, sid)
            if row is not None:
                return row
            session = await conn.fetchrow(q.SESSION_STATUS, sid)
        if session is None:
            raise errors.NotFound(f"session {sid} does not exist")
        raise errors.NotFound(
            f"session {sid} has no {what} (processing status: {session['processing_status'] or 'unknown'})"
        )

    # -- sessions ----------------------------------------------------------------------------
    async def GetSession(self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext) -> pb.Session:
        return to_pb.session(await self._session_row(q.GET_SESSION, request.session_id))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        size = paging.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        lo, hi = request_window(request)
        arg = paging.Params()
        conds: list[str] = []
        if request.patient_id:
            conds.append(f"patient_id = {arg(request.patient_id)}")
        caller = auth.current()
        if caller.is_therapist:  # the caseload as a sub-select of the same statement
            subject = caller.subject_uuid()
            cond = access.caseload_condition("patient_id", arg(subject) if subject else "")
            conds.append(cond if cond is not None else "false")
        therapist = _uuid(request.therapist_id, "therapist_id") if request.therapist_id else None
        if therapist is not None:
            conds.append(f"therapist_id = {arg(therapist)}")
        if lo is not None:
            conds.append(f"session_date >= {arg(lo)}")
        if hi is not None:
            conds.append(f"session_date < {arg(hi)}")
        stype = request.session_type
        if stype:
            if stype not in SESSION_TYPE_NAME:
                raise errors.InvalidArgument(f"session_type {stype} is not a known SessionType")
            conds.append(f"session_type = {arg(SESSION_TYPE_NAME[stype])}")
        status = request.processing_status
        if status:
            if status not in PROCESSING_STATUS_NAME:
                raise errors.InvalidArgument(f"processing_status {status} is not a known ProcessingStatus")
            conds.append(f"processing_status = {arg(PROCESSING_STATUS_NAME[status])}")

        filters = paging.filter_hash(
            [
                request.patient_id,
                str(therapist or ""),
                timestamp_micros(request.date_from) if lo else None,
                timestamp_micros(request.date_to) if hi else None,
                stype,
                status,
            ]
        )
        date_arg = id_arg = None
        if request.page_token:
            cursor_us, cursor_id = to_pb.decode_page_token(request.page_token, filters)
            if cursor_us is not None:
                arg(from_micros(cursor_us))
                date_arg = len(arg)
            arg(cursor_id)
            id_arg = len(arg)
        arg(size + 1)
        sql = q.list_sessions(conds, date_arg, id_arg, dated_only=lo is not None or hi is not None, limit_arg=len(arg))
        rows = await self._rows(sql, *arg)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            d = last["session_date"]
            token = to_pb.encode_page_token(None if d is None else datetime_micros(d), str(last["id"]), filters)
        return pb.ListSessionsResponse(sessions=[to_pb.session(r) for r in rows], next_page_token=token)

    # -- per-session statistics -------------------------------------------------------------
    async def GetEmgStatistics(
        self, request: pb.GetEmgStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEmgStatisticsResponse:
        sid = _uuid(request.session_id, "session_id")
        channels = list(dict.fromkeys(request.channels))
        async with access.acquire(self.pool) as conn:
            await access.ensure_session_visible(conn, sid)
            if channels:
                rows = await conn.fetch(q.EMG_STATISTICS_CHANNELS, sid, channels)
            else:
                rows = await conn.fetch(q.EMG_STATISTICS, sid)
            if not rows:
                raise errors.NotFound(f"session {sid} does not exist")
            rows = [r for r in rows if r["id"] is not None]
            if channels:
                missing = set(channels) - {r["channel_name"] for r in rows}
                if missing:
                    raise errors.NotFound(
                        f"session {sid} has no statistics for channel(s) {', '.join(sorted(missing))}"
                    )
            out = {r["id"]: to_pb.channel(r) for r in rows}
            if request.include_contractions and out:
                crows = (
                    await conn.fetch(q.CONTRACTIONS_CHANNELS, sid, channels)
                    if channels
                    else await conn.fetch(q.CONTRACTIONS, sid)
                )
                for c in crows:
                    ch = out.get(c["statistics_id"])
                    if ch is not None:
                        ch.contractions.add(
                            index=c["contraction_index"],
                            start_s=c["start_time_s"],
                            end_s=c["end_time_s"],
                            duration_s=c["duration_s"],
                            peak_amplitude=c["peak_amplitude"],
                            mean_amplitude=c["mean_amplitude"],
                            meets_intensity=c["meets_intensity"],
                            meets_duration=c["meets_duration"],
                            good=c["is_good"],
                            partially_masked=c["partially_masked"],
                            masked_s=c["masked_s"],
                        )
        return pb.GetEmgStatisticsResponse(channels=list(out.values()))

    async def GetPerformanceScore(
        self, request: pb.SessionKey, context: grpc.aio.ServicerContext
    ) -> pb.PerformanceScore:
        return to_pb.performance(await self._child_row(q.PERFORMANCE_SCORE, request.session_id, "performance score"))

    async def GetBfrMonitoring(self, request: pb.SessionKey, context: grpc.aio.ServicerContext) -> pb.BfrMonitoring:
        r = await self._child_row(q.BFR_MONITORING, request.session_id, "BFR monitoring data")
        cal = r["device_calibration_date"]
        return pb.BfrMonitoring(
            id=str(r["id"]),
            session_id=str(r["sid"]),
            target_pressure_aop=r["target_pressure_aop"],
            actual_pressure_aop=r["actual_pressure_aop"],
            pressure_stability_coefficient=r["pressure_stability_coefficient"],
            safety_gate_status=r["safety_gate_status"],
            safety_violations_count=r["safety_violations_count"] or 0,
            safety_violations_duration_seconds=r["safety_violations_duration_seconds"],
            max_pressure_deviation_aop=r["max_pressure_deviation_aop"],
            patient_aop_baseline_mmhg=r["patient_aop_baseline_mmhg"],
            patient_limb_circumference_cm=r["patient_limb_circumference_cm"],
            cuff_size=r["cuff_size"] or "",
            cuff_position=r["cuff_position"] or "",
            monitoring_device=r["monitoring_device"] or "",
            device_calibration_date=cal.isoformat() if cal else "",
            device_serial_number=r["device_serial_number"] or "",
            bfr_session_duration_minutes=r["bfr_session_duration_minutes"],
            monitoring_frequency_hz=r["monitoring_frequency_hz"],
            created_at=to_timestamp(r["created_at"]),
        )

    async def GetSessionSettings(self, request: pb.SessionKey, context: grpc.aio.ServicerContext) -> pb.SessionSettings:
        r = await self._child_row(q.SESSION_SETTINGS, request.session_id, "session settings")
        sources = r["value_sources"] if isinstance(r["value_sources"], dict) else {}
        return pb.SessionSettings(
            id=str(r["id"]),
            session_id=str(r["sid"]),
            mvc_calculation_method=r["mvc_calculation_method"],
            mvc_threshold_percentage=r["mvc_threshold_percentage"],
            mvc_user_left_quad=r["mvc_user_left_quad"],
            mvc_user_right_quad=r["mvc_user_right_quad"],
            performance_weights=to_pb.weights(r["performance_weights"]),
            duration_threshold_seconds=r["duration_threshold_seconds"],
            duration_threshold_left_quad=r["duration_threshold_left_quad"],
            duration_threshold_right_quad=r["duration_threshold_right_quad"],
            target_contractions_per_muscle=r["target_contractions_per_muscle"],
            rest_period_between_contractions_seconds=r["rest_period_between_contractions_seconds"],
            rest_period_between_sets_seconds=r["rest_period_between_sets_seconds"],
            bfr_enabled=bool(r["bfr_enabled"]),
            bfr_target_pressure_aop=r["bfr_target_pressure_aop"],
            game_difficulty_level=r["game_difficulty_level"],
            visual_feedback_enabled=bool(r["visual_feedback_enabled"]),
            audio_feedback_enabled=bool(r["audio_feedback_enabled"]),
            real_time_mvc_display=bool(r["real_time_mvc_display"]),
            created_at=to_timestamp(r["created_at"]),
            updated_at=to_timestamp(r["updated_at"]),
            calibration_id=str(r["calibration_id"]) if r["calibration_id"] else "",
            calibration_source=r["calibration_source"] or "",
            value_sources={str(k): str(v) for k, v in sources.items()},
        )

    async def BatchGetSessionStatistics(
        self, request: pb.BatchGetSessionStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetSessionStatisticsResponse:
        ids = list(dict.fromkeys(_uuid(v, "session_ids") for v in request.session_ids))
        if not 1 <= len(ids) <= MAX_BATCH:
            raise errors.InvalidArgument(f"session_ids must hold 1-{MAX_BATCH} ids, got {len(ids)}")
        channels = list(dict.fromkeys(request.channels))
        async with access.acquire(self.pool) as conn:
            allowed = await access.caseload(conn)
            sessions = {
                r["id"]: r
                for r in await conn.fetch(q.BATCH_SESSIONS, ids)
                if allowed is None or r["patient_id"] in allowed
            }
            visible = list(sessions)
            stats = await conn.fetch(q.BATCH_EMG_STATISTICS, visible, channels)
            scores = {r["sid"]: r for r in await conn.fetch(q.BATCH_PERFORMANCE, visible)}
        by_session: dict[uuid.UUID, list] = {}
        for r in stats:
            by_session.setdefault(r["sid"], []).append(to_pb.channel(r))
        out = pb.BatchGetSessionStatisticsResponse()
        for sid in ids:
            row = sessions.get(sid)
            if row is None:
                out.not_found.append(str(sid))
                continue
            item = out.sessions.add(session=to_pb.session(row), channels=by_session.get(sid, []))
            if sid in scores:
                item.performance.CopyFrom(to_pb.performance(scores[sid]))
        return out

    # -- longitudinal / cohort ----------------------------------------------------------------
    async def GetPatientProgress(
        self, request: pb.GetPatientProgressRequest, context: grpc.aio.ServicerContext
    ) -> pb.PatientProgress:
        patient = request.patient_id
        if not patient:
            raise errors.InvalidArgument("patient_id is required (a patient code, e.g. P005)")
        lo, hi = request_window(request)
        args = [patient] + [v for v in (lo, hi) if v is not None]
        async with access.acquire(self.pool) as conn:
            await access.ensure_patient_visible(conn, patient, f"patient {patient!r}")
            rows = await conn.fetch(q.patient_progress(lo is not None, hi is not None), *args)
        head = rows[0]
        if not head["patient_exists"]:
            raise errors.NotFound(f"patient {patient!r} does not exist")
        out = pb.PatientProgress(patient_id=patient, sessions_expected=SESSIONS_EXPECTED)
        if head["n"]:
            current = None
            for r in rows:
                if r["sid"] != current:
                    current = r["sid"]
                    excluded = to_pb.excluded_components(r["performance_weights"])
                    point = out.points.add(
                        session_id=str(current),
                        session_date=to_timestamp(r["session_date"]),
                        protocol_day=r["protocol_day"] or 0,
                        session_type=to_pb.session_type(r["session_type"]),
                        overall_performance_score=r["overall"],
                        compliance_score=None if "compliance" in excluded else r["compliance_score"],
                        symmetry_score=None if "symmetry" in excluded else r["symmetry_score"],
                        effort_score=None if "effort" in excluded else r["effort_score"],
                        game_score=None if "game" in excluded else r["game_score"],
                    )
                name = r["channel_name"]
                if name is None:
                    continue
                key = r["side"] or name
                if key in point.muscles:
                    key = name
                m = point.muscles[key]
                m.channel_name = name
                for field in PROGRESS_FIELDS:
                    if r[field] is None:  # a migrated legacy channel that lacked the value
                        m.missing_fields.append(field)
                    else:
                        setattr(m, field, r[field])
            if head["slope"] is not None:
                out.trend_slope_per_day = head["slope"]
            out.first_score = head["first_score"]
            out.last_score = head["last_score"]
            out.best_score = head["best_score"]
            out.best_session_id = str(head["best_id"])
        done = head["days_done"]
        out.sessions_done = done
        out.adherence_rate = min(done / SESSIONS_EXPECTED, 1.0)
        return out

    async def GetCohortSummary(
        self, request: pb.GetCohortSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.CohortSummary:
        lo, hi = request_window(request)
        therapist = _uuid(request.therapist_id, "therapist_id") if request.therapist_id else None
        async with access.acquire(self.pool) as conn:
            caller = auth.current()
            if caller.is_therapist:
                # A therapist's cohort is their own caseload.
                own = await conn.fetchval(q.THERAPIST_OF_USER, caller.subject_uuid())
                if therapist is not None and therapist != own:
                    raise errors.PermissionDenied("a therapist may only summarise their own patients")
                if own is None:
                    return pb.CohortSummary()  # not a registered therapist: an empty caseload
                therapist = own
            args: list = [therapist] if therapist is not None else []
            args += [v for v in (lo, hi) if v is not None]
            sql = q.cohort_summary(therapist is not None, lo is not None, hi is not None)
            rows = await conn.fetch(sql, *args)
        if therapist is not None and not rows[0]["therapist_known"]:  # (never for a therapist's own id)
            raise errors.NotFound(f"therapist {therapist} does not exist")
        out = pb.CohortSummary()
        for r in rows:
            if r["is_total"]:
                out.patient_count = r["patient_count"]
                out.session_count = r["session_count"]
                out.mean_overall_score = r["mean_overall"] or 0.0
                continue
            out.days.add(
                protocol_day=r["protocol_day"],
                session_count=r["session_count"],
                patient_count=r["patient_count"],
                mean_overall_score=r["mean_overall"],
                stddev_overall_score=r["stddev_overall"] or 0.0,
                mean_compliance_score=r["mean_compliance"],
                mean_symmetry_score=r["mean_symmetry"],
            )
        return out

    # -- patients, calibrations, scoring configuration (migration 016) ------------------------
    async def GetPatient(self, request: pb.GetPatientRequest, context: grpc.aio.ServicerContext) -> common_pb2.Patient:
        code = _patient_code(request.patient_code)
        args = paging.Params([code])
        conds = ["p.patient_code = $1"]
        if (caseload := _caseload(args)) is not None:
            conds.append(caseload)
        rows = await self._rows(q.patients(conds), *args)
        if not rows:  # unknown, or outside the therapist's caseload: the same answer
            raise errors.NotFound(f"patient {code!r} does not exist")
        return to_pb.patient(rows[0])

    async def ListPatients(
        self, request: pb.ListPatientsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPatientsResponse:
        size = paging.page_size(request.page_size, DEFAULT_PATIENT_PAGE_SIZE, MAX_PAGE_SIZE)
        therapist = _uuid(request.therapist_id, "therapist_id") if request.therapist_id else None
        filters = paging.filter_hash(["patients", str(therapist or ""), bool(request.include_inactive)])
        args = paging.Params()
        conds: list[str] = []
        if (caseload := _caseload(args)) is not None:
            conds.append(caseload)
        if therapist is not None:
            conds.append(f"p.therapist_id = {args(therapist)}")
        if not request.include_inactive:
            conds.append("p.active")
        if request.page_token:
            after = to_pb.decode_patient_page_token(request.page_token, filters)
            conds.append(f"p.patient_code > {args(after)}")
        args(size + 1)
        rows = await self._rows(q.patients(conds, limit_arg=len(args)), *args)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = to_pb.encode_patient_page_token(rows[-1]["patient_code"], filters)
        return pb.ListPatientsResponse(patients=[to_pb.patient(r) for r in rows], next_page_token=token)

    async def ListPatientCalibrations(
        self, request: pb.ListPatientCalibrationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPatientCalibrationsResponse:
        code = _patient_code(request.patient_code)
        args = paging.Params([code])
        rows = await self._rows(q.patient_calibrations(_caseload(args)), *args)
        if not rows:  # same answer as GetPatient for an unknown or foreign patient
            raise errors.NotFound(f"patient {code!r} does not exist")
        return pb.ListPatientCalibrationsResponse(
            calibrations=[to_pb.calibration(r) for r in rows if r["cal_id"] is not None]
        )

    async def GetScoringConfig(
        self, request: pb.GetScoringConfigRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ScoringConfig:
        version = request.version
        if version == 0:
            rows = await self._rows(q.CURRENT_SCORING_CONFIG)
            if not rows:
                raise errors.NotFound("no scoring configuration is stored")
        else:
            rows = await self._rows(q.SCORING_CONFIG, version) if version <= MAX_SCORING_VERSION else []
            if not rows:
                raise errors.NotFound(f"scoring configuration version {version} does not exist")
        return ScoringConfig.from_row(rows[0]).to_proto()  # the one codec (libs/scoring_config.py)
