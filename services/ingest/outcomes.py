"""Post-session outcomes: record RPE / game points / BFR measurement after the upload and
re-score the session from its stored statistics (the C3D is not read again).

Re-scoring uses the per-muscle rates stored in emg_statistics (usable channels only, by side,
exactly as the analysis scored them) with the scoring configuration version the session was
scored with (the current one for a session never scored), so recording an outcome changes
only what the outcome changes. One writer per session at a time: the session row is locked
for the whole read-merge-write.
"""
from __future__ import annotations

import math
import uuid
from typing import Any

import asyncpg

from ghostly.ingest.v1 import ingest_pb2
from libs import auth
from libs.convert import parse_uuid, to_timestamp
from libs.emg import scoring
from libs.emg.flags import EXCLUDING_FLAGS
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.scoring_config import ScoringConfig
from services.ingest import repository as repo

OUTCOME_COLUMNS = ("rpe_post_session", "game_points", "game_points_max", "bfr_actual_pressure_aop")
DEFAULT_GAME_POINTS_MAX = 1000


def requested_values(req: ingest_pb2.RecordSessionOutcomeRequest) -> dict[str, Any]:
    """The outcome values the request sets, validated (INVALID_ARGUMENT names the field)."""
    out: dict[str, Any] = {}
    if req.HasField("rpe_post_session"):
        if not 0 <= req.rpe_post_session <= 10:
            raise InvalidArgument(f"rpe_post_session must be a Borg CR10 value 0..10, got {req.rpe_post_session}")
        out["rpe_post_session"] = req.rpe_post_session
    if req.HasField("game_points"):
        if req.game_points < 0:
            raise InvalidArgument(f"game_points must be >= 0, got {req.game_points}")
        out["game_points"] = req.game_points
    if req.HasField("game_points_max"):
        if req.game_points_max <= 0:
            raise InvalidArgument(f"game_points_max must be > 0, got {req.game_points_max}")
        out["game_points_max"] = req.game_points_max
    if req.HasField("bfr"):
        v = req.bfr.actual_pressure_aop
        if not math.isfinite(v) or not 0 <= v <= 100:
            raise InvalidArgument(f"bfr.actual_pressure_aop must be a percentage of AOP in [0, 100], got {v}")
        out["bfr_actual_pressure_aop"] = v
    if not out:
        raise InvalidArgument("nothing to record: give rpe_post_session, game_points, game_points_max or bfr")
    return out


def _sides(channels: list[asyncpg.Record]) -> tuple[dict[str, dict | None], dict[str, str]]:
    """Per-side rates of the usable channels (first channel per side, as the analysis) and the
    reasons of unusable sides."""
    rates: dict[str, dict | None] = {"left": None, "right": None}
    unusable: dict[str, str] = {}
    for ch in channels:
        side = ch["side"]
        if side not in rates or rates[side] is not None:
            continue
        if not ch["usable"]:
            unusable.setdefault(side, f"{ch['channel_name']} ({side}) has no usable EMG: "
                                      + ", ".join(f for f in ch["signal_flags"] if f in EXCLUDING_FLAGS))
            continue
        rates[side] = {k: ch[k] for k in ("completion_rate", "intensity_rate", "duration_rate",
                                          "muscle_compliance_score")}
    return rates, {k: v for k, v in unusable.items() if rates.get(k) is None}


def _baseline_values(score: asyncpg.Record | None, settings: asyncpg.Record | None,
                     bfr: asyncpg.Record | None) -> dict[str, Any]:
    """What the session was scored with before any recorded outcome (upload values)."""
    out: dict[str, Any] = {c: None for c in OUTCOME_COLUMNS}
    if score is not None:
        excluded = (score["performance_weights"] or {}).get("excluded", {})
        out["rpe_post_session"] = score["rpe_post_session"]
        out["game_points"] = None if "game" in excluded else score["game_points_achieved"]
        out["game_points_max"] = score["game_points_maximum"]
        out["bfr_actual_pressure_aop"] = score["bfr_pressure_aop"]
    if out["bfr_actual_pressure_aop"] is None and bfr is not None:
        out["bfr_actual_pressure_aop"] = bfr["actual_pressure_aop"]
    return out


async def record(conn: asyncpg.Connection, req: ingest_pb2.RecordSessionOutcomeRequest) -> ingest_pb2.SessionOutcomeReply:
    sid = parse_uuid(req.session_id, "session_id")
    given = requested_values(req)
    me = auth.current()
    async with conn.transaction():
        session = await repo.lock_session(conn, sid)
        if session is None or not await _visible(conn, session, me):
            raise NotFound(f"session {sid} does not exist")
        if session["processing_status"] != "completed":
            raise FailedPrecondition(f"session {sid} is {session['processing_status']}: an outcome can be recorded "
                                     "once it is completed")
        channels, score, outcome, settings, bfr = await repo.scoring_inputs(conn, sid)
        current = dict(outcome) if outcome is not None else _baseline_values(score, settings, bfr)
        merged = {c: given.get(c, current.get(c)) for c in OUTCOME_COLUMNS}
        if outcome is not None and all(merged[c] == outcome[c] for c in OUTCOME_COLUMNS):
            return _reply(sid, outcome, score, changed=False)
        version = score["scoring_config_version"] if score is not None else None
        config = ScoringConfig.from_row(await repo.scoring_config(conn, version))
        level = (session["game_metadata"] or {}).get("game_level")
        points_max = merged["game_points_max"] or config.game_points_max_by_level.get(level) \
            or (score["game_points_maximum"] if score is not None else None) or DEFAULT_GAME_POINTS_MAX
        merged["game_points_max"] = int(points_max)
        rates, unusable = _sides(channels)
        perf = scoring.performance(
            rates["left"], rates["right"], rpe=merged["rpe_post_session"],
            bfr_pressure_aop=merged["bfr_actual_pressure_aop"], game_points=merged["game_points"],
            game_points_max=merged["game_points_max"], weights=_requested_weights(score, settings, config),
            bfr_range=config.bfr_gate, session_duration_minutes=score["session_duration_minutes"] if score else None,
            unusable_sides=unusable, rpe_effort=config.rpe_effort)
        saved = await repo.upsert_outcome(conn, sid, merged, me.subject)
        if perf.overall_performance_score is not None:
            await repo.insert_score(conn, sid, perf, _requested_weights(score, settings, config), config.version)
        else:
            await conn.execute("DELETE FROM performance_scores WHERE session_id = $1", sid)
        if "bfr_actual_pressure_aop" in given:
            await _record_bfr(conn, sid, req.bfr, bfr, config)
        score = await conn.fetchrow("SELECT * FROM performance_scores WHERE session_id = $1", sid)
        return _reply(sid, saved, score, changed=True, config_version=config.version)


def _requested_weights(score, settings, config: ScoringConfig) -> dict[str, float]:
    if score is not None and (score["performance_weights"] or {}).get("requested"):
        return {k: float(v) for k, v in score["performance_weights"]["requested"].items()}
    if settings is not None and settings["performance_weights"]:
        return {k: float(v) for k, v in settings["performance_weights"].items()}
    return dict(config.performance_weights)


async def _record_bfr(conn: asyncpg.Connection, sid: uuid.UUID, b: ingest_pb2.BfrInput, existing, config) -> None:
    from services.ingest.servicer import bfr_row  # one reading of BfrInput (lazy: servicer imports us)

    meta = ingest_pb2.SessionMetadata(bfr=b)
    row = bfr_row(meta, config.bfr_gate)
    if existing is not None and not b.HasField("target_pressure_aop"):
        row["target_pressure_aop"] = existing["target_pressure_aop"]
    await repo.upsert_bfr(conn, sid, row)


async def _visible(conn: asyncpg.Connection, session: asyncpg.Record, me: auth.Identity) -> bool:
    if not me.is_therapist:
        return True
    owner = await conn.fetchval(
        "SELECT t.user_id::text FROM patients p JOIN therapists t ON t.id = p.therapist_id WHERE p.patient_code = $1",
        session["patient_id"])
    return owner == me.subject


def _reply(sid: uuid.UUID, outcome, score, *, changed: bool, config_version: int | None = None
           ) -> ingest_pb2.SessionOutcomeReply:
    msg = ingest_pb2.SessionOutcomeReply(session_id=str(sid), changed=changed, recorded_by=outcome["recorded_by"],
                                         recorded_at=to_timestamp(outcome["recorded_at"]))
    for col, field in (("rpe_post_session", "rpe_post_session"), ("game_points", "game_points"),
                       ("game_points_max", "game_points_max"), ("bfr_actual_pressure_aop", "bfr_actual_pressure_aop")):
        if outcome[col] is not None:
            setattr(msg, field, outcome[col])
    if score is not None:
        msg.overall_performance_score = score["overall_performance_score"]
        msg.scoring_config_version = score["scoring_config_version"]
        for k, v in ((score["performance_weights"] or {}).get("excluded") or {}).items():
            msg.components_excluded[k] = v
    elif config_version is not None:
        msg.scoring_config_version = config_version
    return msg
