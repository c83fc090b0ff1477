"""StatisticsService (ghostly.statistics.v1): the read-only dashboard read path.

Every RPC is one round trip to PostgreSQL (GetEmgStatistics with contractions: two), through a
pool connected as the read-only role `ghostly_statistics` (services/statistics/db.py), on a
read replica when STATISTICS_DATABASE_URL says so (ServiceSpec.dsn), so the process holds no
connection with broader privileges and the health probe checks the connection the RPCs use.
"""
from __future__ import annotations

import datetime as dt
import gc
import uuid

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ghostly.common.v1 import common_pb2
from ghostly.statistics.v1 import statistics_pb2 as pb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.registry_pb import calibration_pb, patient_pb
from libs.scoring_config import ScoringConfig
from libs import auth, errors, paging
from libs.convert import EPOCH, MICROSECOND, parse_uuid, to_timestamp
from libs.db import access
from libs.grpc_server import ServiceContext, ServiceSpec
from services.statistics import queries as q
from services.statistics.db import keep_session, statistics_dsn

FULL_NAME = pb.DESCRIPTOR.services_by_name["StatisticsService"].full_name

DEFAULT_PAGE_SIZE = 50
DEFAULT_PATIENT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
# scoring_config.version is an INTEGER: a larger uint32 cannot name a stored version.
MAX_SCORING_VERSION = 2**31 - 1
MAX_BATCH = 500
# Protocol: 5 therapy sessions a week over the 14-day protocol.
SESSIONS_EXPECTED = 10

SESSION_TYPE = {"baseline": common_pb2.SESSION_TYPE_BASELINE,
                "training": common_pb2.SESSION_TYPE_TRAINING,
                "assessment": common_pb2.SESSION_TYPE_ASSESSMENT}
SESSION_TYPE_NAME = {v: k for k, v in SESSION_TYPE.items()}
STATUS = {"pending": common_pb2.PROCESSING_STATUS_PENDING,
          "processing": common_pb2.PROCESSING_STATUS_PROCESSING,
          "completed": common_pb2.PROCESSING_STATUS_COMPLETED,
          "failed": common_pb2.PROCESSING_STATUS_FAILED}
STATUS_NAME = {v: k for k, v in STATUS.items()}


_EPOCH, _US = EPOCH, MICROSECOND
_COMPONENTS = ("compliance", "symmetry", "effort", "game")


# --------------------------------------------------------------------------- conversions

def _micros(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def _from_micros(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _uuid(value: str, field: str) -> uuid.UUID:
    if not value:
        raise errors.InvalidArgument(f"{field} is required (a UUID)")
    return parse_uuid(value, field)


# The Timestamp range of the protobuf spec (0001-01-01 .. 9999-12-31), which datetime covers.
_MIN_S, _MAX_S = -62_135_596_800, 253_402_300_799
_MIN_US, _MAX_US = _MIN_S * 1_000_000, _MAX_S * 1_000_000 + 999_999


def _instant(request, field: str) -> dt.datetime | None:
    if not request.HasField(field):
        return None
    ts = getattr(request, field)
    if not (_MIN_S <= ts.seconds <= _MAX_S and 0 <= ts.nanos <= 999_999_999):
        raise errors.InvalidArgument(f"{field} is not a valid timestamp (0001-01-01 .. 9999-12-31, "
                                     f"nanos 0..999999999): seconds={ts.seconds}, nanos={ts.nanos}")
    return _from_micros(_micros(ts))


def _window(request, field_from: str = "date_from", field_to: str = "date_to"
            ) -> tuple[dt.datetime | None, dt.datetime | None]:
    lo = _instant(request, field_from)
    hi = _instant(request, field_to)
    if lo is not None and hi is not None and lo >= hi:
        raise errors.InvalidArgument(f"{field_from} must be before {field_to} "
                                     f"({lo.isoformat()} >= {hi.isoformat()})")
    return lo, hi


def _weights(w: dict | None) -> common_pb2.PerformanceWeights:
    w = w or {}
    return common_pb2.PerformanceWeights(**{k: float(w.get(k) or 0.0) for k in _COMPONENTS})


def _excluded(weights: dict | None) -> dict[str, str]:
    """Components that were not available (README: weight 0 AND listed under "excluded")."""
    excluded = (weights or {}).get("excluded") or {}
    return {k: str(v) for k, v in excluded.items() if not (weights or {}).get(k)}


def _session(r: asyncpg.Record) -> pb.Session:
    return pb.Session(
        id=str(r["id"]), file_path=r["file_path"], file_hash=r["file_hash"],
        file_size_bytes=r["file_size_bytes"], patient_id=r["patient_id"] or "",
        therapist_id=str(r["therapist_id"]) if r["therapist_id"] else "",
        session_label=r["session_id"] or "", session_date=to_timestamp(r["session_date"]),
        session_type=SESSION_TYPE.get(r["session_type"], 0), protocol_day=r["protocol_day"] or 0,
        original_sampling_rate=r["original_sampling_rate"],
        original_duration_seconds=r["original_duration_seconds"],
        original_sample_count=r["original_sample_count"], channel_names=r["channel_names"] or (),
        channel_count=r["channel_count"], processing_version=r["processing_version"],
        processing_status=STATUS.get(r["processing_status"], 0),
        processing_time_ms=r["processing_time_ms"] or 0, created_at=to_timestamp(r["created_at"]),
        processed_at=to_timestamp(r["processed_at"]), error_message=r["error_message"] or "")


def _channel(r: asyncpg.Record) -> pb.ChannelStatistics:
    return pb.ChannelStatistics(
        id=str(r["id"]), session_id=str(r["session_id"]), channel_name=r["channel_name"],
        mvc_peak_value=r["mvc_peak_value"], mvc_rms_value=r["mvc_rms_value"],
        mvc_confidence_score=r["mvc_confidence_score"],
        mvc_calculation_method=r["mvc_calculation_method"],
        total_contractions=r["total_contractions"],
        good_contractions_intensity=r["good_contractions_intensity"],
        good_contractions_duration=r["good_contractions_duration"],
        good_contractions_both=r["good_contractions_both"], completion_rate=r["completion_rate"],
        intensity_rate=r["intensity_rate"], duration_rate=r["duration_rate"],
        muscle_compliance_score=r["muscle_compliance_score"],
        signal_quality_score=r["signal_quality_score"], noise_level_db=r["noise_level_db"],
        artifacts_detected=r["artifacts_detected"] or 0,
        processing_confidence=r["processing_confidence"],
        processing_pipeline=r["processing_pipeline"], processing_version=r["processing_version"],
        processing_time_ms=r["processing_time_ms"] or 0,
        mvc_threshold_percentage=r["mvc_threshold_percentage"],
        duration_threshold_seconds=r["duration_threshold_seconds"],
        processed_at=to_timestamp(r["processed_at"]), side=r["side"] or "",
        signal_flags=r["signal_flags"] or (), usable=r["usable"])


# --------------------------------------------------------------------------- page tokens

def _performance(r: asyncpg.Record) -> pb.PerformanceScore:
    w = r["performance_weights"] or {}
    excluded = _excluded(w)
    requested = w.get("requested") or {k: w.get(k) for k in _COMPONENTS}
    pressure = r["bfr_pressure_aop"]
    return pb.PerformanceScore(
        id=str(r["id"]), session_id=str(r["sid"]),
        overall_performance_score=r["overall_performance_score"],
        compliance_score=None if "compliance" in excluded else r["compliance_score"],
        symmetry_score=None if "symmetry" in excluded else r["symmetry_score"],
        effort_score=None if "effort" in excluded else r["effort_score"],
        game_score=None if "game" in excluded else r["game_score"],
        effective_weights=_weights(w), requested_weights=_weights(requested),
        excluded_components=excluded, bfr_pressure_aop=pressure,
        bfr_compliance_gate=None if pressure is None else r["bfr_compliance_gate"],
        rpe_post_session=r["rpe_post_session"], game_points_achieved=r["game_points_achieved"],
        game_points_maximum=r["game_points_maximum"],
        session_duration_minutes=r["session_duration_minutes"],
        left_muscle_completion_rate=r["left_muscle_completion_rate"],
        left_muscle_intensity_rate=r["left_muscle_intensity_rate"],
        left_muscle_duration_rate=r["left_muscle_duration_rate"],
        right_muscle_completion_rate=r["right_muscle_completion_rate"],
        right_muscle_intensity_rate=r["right_muscle_intensity_rate"],
        right_muscle_duration_rate=r["right_muscle_duration_rate"],
        calculated_at=to_timestamp(r["calculated_at"]),
        scoring_config_version=r["scoring_config_version"] or 0, outcome=_outcome(r))


def _outcome(r: asyncpg.Record) -> pb.SessionOutcome | None:
    """The session_outcomes row joined to a score (unset when none was recorded)."""
    if not r["has_outcome"]:
        return None
    return pb.SessionOutcome(rpe_post_session=r["o_rpe"], game_points=r["o_game_points"],
                             game_points_max=r["o_game_points_max"],
                             bfr_actual_pressure_aop=r["o_bfr_pressure"], recorded_by=r["o_recorded_by"] or "",
                             recorded_at=to_timestamp(r["o_recorded_at"]))


def _calibration(r: asyncpg.Record) -> common_pb2.PatientCalibration:
    """A patient_calibrations row read with the `cal_` column prefix (queries.CALIBRATION_COLUMNS)."""
    return calibration_pb(r, "cal_")


def _patient(r: asyncpg.Record) -> common_pb2.Patient:
    return patient_pb(r, r if r["cal_id"] is not None else None, "cal_")


def _patient_cursor(data: dict) -> str:
    code = data["c"]
    if not isinstance(code, str) or not code:
        raise ValueError("patient code")
    return code


def encode_patient_page_token(patient_code: str, filters: str) -> str:
    return paging.encode({"c": patient_code}, filters)


def _patient_code(value: str) -> str:
    if not value:
        raise errors.InvalidArgument("patient_code is required (a patient code, e.g. P005)")
    return value


class _Params(list):
    """Statement parameters: `params(value)` appends a value and returns its placeholder."""

    def __call__(self, value) -> str:
        self.append(value)
        return f"${len(self)}"


def _caseload(arg: _Params) -> str | None:
    """The caller's caseload as a condition on patients (alias p); None = every patient
    (the caller's subject is bound through `arg` when needed)."""
    caller = auth.current()
    if not caller.is_therapist:
        return None
    subject = caller.subject_uuid()
    return q.therapist_condition(arg(subject) if subject is not None else None)


def encode_page_token(date_us: int | None, session_id: str, filters: str) -> str:
    return paging.encode({"d": date_us, "i": session_id}, filters)


def _cursor(data: dict) -> tuple[int | None, uuid.UUID]:
    date_us, sid = data["d"], uuid.UUID(data["i"])
    if date_us is not None and not (isinstance(date_us, int) and _MIN_US <= date_us <= _MAX_US):
        raise ValueError("date")
    return date_us, sid


def decode_page_token(token: str, filters: str) -> tuple[int | None, uuid.UUID]:
    return paging.decode(token, filters, _cursor)


# --------------------------------------------------------------------------- servicer

class StatisticsServicer(statistics_pb2_grpc.StatisticsServiceServicer):
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # Every connection carries the caller's identity (RLS, migration 012) and therapists are
    # also filtered by the queries themselves (libs/db/access.py): two walls.
    async def _rows(self, sql: str, *args) -> list[asyncpg.Record]:
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
        """The one row of a per-session table (queries.py: read by session_id alone); when
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
        raise errors.NotFound(f"session {sid} has no {what} "
                              f"(processing status: {session['processing_status'] or 'unknown'})")

    # -- sessions ----------------------------------------------------------------------------
    async def GetSession(self, request, context):
        return _session(await self._session_row(q.GET_SESSION, request.session_id))

    async def ListSessions(self, request, context):
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise errors.InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE} (0 = {DEFAULT_PAGE_SIZE}), "
                                         f"got {request.page_size}")
        lo, hi = _window(request)
        args: list = []
        conds: list[str] = []

        def arg(value) -> str:
            args.append(value)
            return f"${len(args)}"

        if request.patient_id:
            conds.append(f"patient_id = {arg(request.patient_id)}")
        caller = auth.current()
        if caller.is_therapist:   # the caseload as a sub-select of the same statement
            subject = caller.subject_uuid()
            conds.append(access.caseload_condition("patient_id", arg(subject) if subject else ""))
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
            if status not in STATUS_NAME:
                raise errors.InvalidArgument(f"processing_status {status} is not a known ProcessingStatus")
            conds.append(f"processing_status = {arg(STATUS_NAME[status])}")

        filters = paging.filter_hash([request.patient_id, str(therapist or ""),
                                _micros(request.date_from) if lo else None,
                                _micros(request.date_to) if hi else None, stype, status])
        date_arg = id_arg = None
        if request.page_token:
            cursor_us, cursor_id = decode_page_token(request.page_token, filters)
            if cursor_us is not None:
                date_arg = len(args) + 1
                args.append(_from_micros(cursor_us))
            id_arg = len(args) + 1
            args.append(cursor_id)
        limit_arg = len(args) + 1
        args.append(size + 1)
        sql = q.list_sessions(conds, date_arg, id_arg, dated_only=lo is not None or hi is not None,
                              limit_arg=limit_arg)
        rows = await self._rows(sql, *args)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            d = last["session_date"]
            token = encode_page_token(None if d is None else (d - _EPOCH) // _US, str(last["id"]), filters)
        return pb.ListSessionsResponse(sessions=[_session(r) for r in rows], next_page_token=token)

    # -- per-session statistics -------------------------------------------------------------
    async def GetEmgStatistics(self, request, context):
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
                    raise errors.NotFound(f"session {sid} has no statistics for channel(s) "
                                          f"{', '.join(sorted(missing))}")
            out = {r["id"]: _channel(r) for r in rows}
            if request.include_contractions and out:
                crows = (await conn.fetch(q.CONTRACTIONS_CHANNELS, sid, channels) if channels
                         else await conn.fetch(q.CONTRACTIONS, sid))
                for c in crows:
                    ch = out.get(c["statistics_id"])
                    if ch is not None:
                        ch.contractions.add(
                            index=c["contraction_index"], start_s=c["start_time_s"],
                            end_s=c["end_time_s"], duration_s=c["duration_s"],
                            peak_amplitude=c["peak_amplitude"], mean_amplitude=c["mean_amplitude"],
                            meets_intensity=c["meets_intensity"], meets_duration=c["meets_duration"],
                            good=c["is_good"], partially_masked=c["partially_masked"],
                            masked_s=c["masked_s"])
        return pb.GetEmgStatisticsResponse(channels=list(out.values()))

    async def GetPerformanceScore(self, request, context):
        return _performance(await self._child_row(q.PERFORMANCE_SCORE, request.session_id,
                                                  "performance score"))

    async def GetBfrMonitoring(self, request, context):
        r = await self._child_row(q.BFR_MONITORING, request.session_id, "BFR monitoring data")
        cal = r["device_calibration_date"]
        return pb.BfrMonitoring(
            id=str(r["id"]), session_id=str(r["sid"]), target_pressure_aop=r["target_pressure_aop"],
            actual_pressure_aop=r["actual_pressure_aop"],
            pressure_stability_coefficient=r["pressure_stability_coefficient"],
            safety_gate_status=r["safety_gate_status"],
            safety_violations_count=r["safety_violations_count"] or 0,
            safety_violations_duration_seconds=r["safety_violations_duration_seconds"],
            max_pressure_deviation_aop=r["max_pressure_deviation_aop"],
            patient_aop_baseline_mmhg=r["patient_aop_baseline_mmhg"],
            patient_limb_circumference_cm=r["patient_limb_circumference_cm"],
            cuff_size=r["cuff_size"] or "", cuff_position=r["cuff_position"] or "",
            monitoring_device=r["monitoring_device"] or "",
            device_calibration_date=cal.isoformat() if cal else "",
            device_serial_number=r["device_serial_number"] or "",
            bfr_session_duration_minutes=r["bfr_session_duration_minutes"],
            monitoring_frequency_hz=r["monitoring_frequency_hz"], created_at=to_timestamp(r["created_at"]))

    async def GetSessionSettings(self, request, context):
        r = await self._child_row(q.SESSION_SETTINGS, request.session_id, "session settings")
        sources = r["value_sources"] if isinstance(r["value_sources"], dict) else {}
        return pb.SessionSettings(
            id=str(r["id"]), session_id=str(r["sid"]),
            mvc_calculation_method=r["mvc_calculation_method"],
            mvc_threshold_percentage=r["mvc_threshold_percentage"],
            mvc_user_left_quad=r["mvc_user_left_quad"], mvc_user_right_quad=r["mvc_user_right_quad"],
            performance_weights=_weights(r["performance_weights"]),
            duration_threshold_seconds=r["duration_threshold_seconds"],
            duration_threshold_left_quad=r["duration_threshold_left_quad"],
            duration_threshold_right_quad=r["duration_threshold_right_quad"],
            target_contractions_per_muscle=r["target_contractions_per_muscle"],
            rest_period_between_contractions_seconds=r["rest_period_between_contractions_seconds"],
            rest_period_between_sets_seconds=r["rest_period_between_sets_seconds"],
            bfr_enabled=bool(r["bfr_enabled"]), bfr_target_pressure_aop=r["bfr_target_pressure_aop"],
            game_difficulty_level=r["game_difficulty_level"],
            visual_feedback_enabled=bool(r["visual_feedback_enabled"]),
            audio_feedback_enabled=bool(r["audio_feedback_enabled"]),
            real_time_mvc_display=bool(r["real_time_mvc_display"]),
            created_at=to_timestamp(r["created_at"]), updated_at=to_timestamp(r["updated_at"]),
            calibration_id=str(r["calibration_id"]) if r["calibration_id"] else "",
            calibration_source=r["calibration_source"] or "",
            value_sources={str(k): str(v) for k, v in sources.items()})

    async def BatchGetSessionStatistics(self, request, context):
        ids = list(dict.fromkeys(_uuid(v, "session_ids") for v in request.session_ids))
        if not 1 <= len(ids) <= MAX_BATCH:
            raise errors.InvalidArgument(f"session_ids must hold 1-{MAX_BATCH} ids, got {len(ids)}")
        channels = list(dict.fromkeys(request.channels))
        async with access.acquire(self.pool) as conn:
            allowed = await access.caseload(conn)
            sessions = {r["id"]: r for r in await conn.fetch(q.BATCH_SESSIONS, ids)
                        if allowed is None or r["patient_id"] in allowed}
            visible = list(sessions)
            stats = await conn.fetch(q.BATCH_EMG_STATISTICS, visible, channels)
            scores = {r["sid"]: r for r in await conn.fetch(q.BATCH_PERFORMANCE, visible)}
        by_session: dict[uuid.UUID, list] = {}
        for r in stats:
            by_session.setdefault(r["sid"], []).append(_channel(r))
        out = pb.BatchGetSessionStatisticsResponse()
        for sid in ids:
            row = sessions.get(sid)
            if row is None:
                out.not_found.append(str(sid))
                continue
            item = out.sessions.add(session=_session(row), channels=by_session.get(sid, []))
            if sid in scores:
                item.performance.CopyFrom(_performance(scores[sid]))
        return out

    # -- longitudinal / cohort ----------------------------------------------------------------
    async def GetPatientProgress(self, request, context):
        patient = request.patient_id
        if not patient:
            raise errors.InvalidArgument("patient_id is required (a patient code, e.g. P005)")
        lo, hi = _window(request)
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
                    excluded = _excluded(r["performance_weights"])
                    point = out.points.add(
                        session_id=str(current), session_date=to_timestamp(r["session_date"]),
                        protocol_day=r["protocol_day"] or 0,
                        session_type=SESSION_TYPE.get(r["session_type"], 0),
                        overall_performance_score=r["overall"],
                        compliance_score=None if "compliance" in excluded else r["compliance_score"],
                        symmetry_score=None if "symmetry" in excluded else r["symmetry_score"],
                        effort_score=None if "effort" in excluded else r["effort_score"],
                        game_score=None if "game" in excluded else r["game_score"])
                name = r["channel_name"]
                if name is None:
                    continue
                key = r["side"] or name
                if key in point.muscles:
                    key = name
                m = point.muscles[key]
                m.channel_name = name
                m.completion_rate = r["completion_rate"]
                m.intensity_rate = r["intensity_rate"]
                m.duration_rate = r["duration_rate"]
                m.muscle_compliance_score = r["muscle_compliance_score"]
                m.mvc_peak_value = r["mvc_peak_value"]
                m.total_contractions = r["total_contractions"]
                m.good_contractions_both = r["good_contractions_both"]
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

    async def GetCohortSummary(self, request, context):
        lo, hi = _window(request)
        therapist = _uuid(request.therapist_id, "therapist_id") if request.therapist_id else None
        async with access.acquire(self.pool) as conn:
            caller = auth.current()
            if caller.is_therapist:
                # A therapist's cohort is their own caseload.
                own = await conn.fetchval("SELECT id FROM therapists WHERE user_id = $1", caller.subject_uuid())
                if therapist is not None and therapist != own:
                    raise errors.PermissionDenied("a therapist may only summarise their own patients")
                if own is None:
                    return pb.CohortSummary()   # not a registered therapist: an empty caseload
                therapist = own
            args: list = [therapist] if therapist is not None else []
            args += [v for v in (lo, hi) if v is not None]
            sql = q.cohort_summary(therapist is not None, lo is not None, hi is not None)
            rows = await conn.fetch(sql, *args)
        if therapist is not None and not rows[0]["therapist_known"]:   # (never for a therapist's own id)
            raise errors.NotFound(f"therapist {therapist} does not exist")
        out = pb.CohortSummary()
        for r in rows:
            if r["is_total"]:
                out.patient_count = r["patient_count"]
                out.session_count = r["session_count"]
                out.mean_overall_score = r["mean_overall"] or 0.0
                continue
            out.days.add(protocol_day=r["protocol_day"], session_count=r["session_count"],
                         patient_count=r["patient_count"], mean_overall_score=r["mean_overall"],
                         stddev_overall_score=r["stddev_overall"] or 0.0,
                         mean_compliance_score=r["mean_compliance"],
                         mean_symmetry_score=r["mean_symmetry"])
        return out

    # -- patients, calibrations, scoring configuration (migration 016) ------------------------
    async def GetPatient(self, request, context):
        code = _patient_code(request.patient_code)
        args = _Params([code])
        conds = ["p.patient_code = $1"]
        if (caseload := _caseload(args)) is not None:
            conds.append(caseload)
        rows = await self._rows(q.patients(conds), *args)
        if not rows:   # unknown, or outside the therapist's caseload: the same answer
            raise errors.NotFound(f"patient {code!r} does not exist")
        return _patient(rows[0])

    async def ListPatients(self, request, context):
        size = request.page_size or DEFAULT_PATIENT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise errors.InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE} (0 = {DEFAULT_PATIENT_PAGE_SIZE}), "
                                         f"got {request.page_size}")
        therapist = _uuid(request.therapist_id, "therapist_id") if request.therapist_id else None
        filters = paging.filter_hash(["patients", str(therapist or ""), bool(request.include_inactive)])
        args = _Params()
        conds: list[str] = []
        if (caseload := _caseload(args)) is not None:
            conds.append(caseload)
        if therapist is not None:
            conds.append(f"p.therapist_id = {args(therapist)}")
        if not request.include_inactive:
            conds.append("p.active")
        if request.page_token:
            after = paging.decode(request.page_token, filters, _patient_cursor)
            conds.append(f"p.patient_code > {args(after)}")
        args(size + 1)
        rows = await self._rows(q.patients(conds, limit_arg=len(args)), *args)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = encode_patient_page_token(rows[-1]["patient_code"], filters)
        return pb.ListPatientsResponse(patients=[_patient(r) for r in rows], next_page_token=token)

    async def ListPatientCalibrations(self, request, context):
        code = _patient_code(request.patient_code)
        args = _Params([code])
        rows = await self._rows(q.patient_calibrations(_caseload(args)), *args)
        if not rows:   # same answer as GetPatient for an unknown or foreign patient
            raise errors.NotFound(f"patient {code!r} does not exist")
        return pb.ListPatientCalibrationsResponse(
            calibrations=[_calibration(r) for r in rows if r["cal_id"] is not None])

    async def GetScoringConfig(self, request, context):
        version = request.version
        if version == 0:
            rows = await self._rows(q.CURRENT_SCORING_CONFIG)
            if not rows:
                raise errors.NotFound("no scoring configuration is stored")
        else:
            rows = await self._rows(q.SCORING_CONFIG, version) if version <= MAX_SCORING_VERSION else []
            if not rows:
                raise errors.NotFound(f"scoring configuration version {version} does not exist")
        return ScoringConfig.from_row(rows[0]).to_proto()   # the one codec (libs/scoring_config.py)


async def register(server: grpc.aio.Server, context: ServiceContext) -> None:
    statistics_pb2_grpc.add_StatisticsServiceServicer_to_server(StatisticsServicer(context.pool), server)
    # Start-up objects (modules, descriptors, pool) live forever: keep them out of the cyclic
    # GC's full collections, which otherwise show up as multi-millisecond tail latencies.
    gc.collect()
    gc.freeze()


# Every role reads every RPC; a therapist's rows are limited to their own caseload by the
# queries (and by RLS on the read-only role), not by the method.
PERMISSIONS = {m.name: auth.ALL_ROLES for m in pb.DESCRIPTOR.services_by_name["StatisticsService"].methods}

SPEC = ServiceSpec(name="statistics", full_names=(FULL_NAME,), register=register, permissions=PERMISSIONS,
                   dsn=statistics_dsn, pool_options={"reset": keep_session})
