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


def _sides(channels: list[dict]) -> tuple[dict[str, dict | None], dict[str, str]]:
    """Per-side rates of the usable channels (first channel per side, as the analysis) and the
    reasons of unusable sides."""
    rates: dict[str, dict | None] = {"left": None, "right": None}
    unusable: dict[str, str] = {}
    for ch in channels:
        side = ch["side"]
        if side not in rates or rates[side] is not None:
            continue
        if not ch["usable"]:
            unusable.setdefault(
                side,
                f"{ch['channel_name']} ({side}) has no usable EMG: "
                + ", ".join(f for f in ch["signal_flags"] if f in EXCLUDING_FLAGS),
            )
            continue
        rates[side] = {
            k: ch[k] for k in ("completion_rate", "intensity_rate", "duration_rate", "muscle_compliance_score")
        }
    return rates, {k: v for k, v in unusable.items() if rates.get(k) is None}


_CONFIGS: dict[int, ScoringConfig] = {}  # scoring_config rows are immutable: cached by version


async def _config(conn: asyncpg.Connection, version: int | None) -> ScoringConfig:
    if version is not None and version in _CONFIGS:
        return _CONFIGS[version]
    cfg = ScoringConfig.from_row(await repo.scoring_config(conn, version))
    _CONFIGS[cfg.version] = cfg
    return cfg


def _recorded(row: asyncpg.Record) -> dict[str, Any] | None:
    if row["o_recorded_by"] is None:
        return None
    return {
        "rpe_post_session": row["o_rpe"],
        "game_points": row["o_game_points"],
        "game_points_max": row["o_game_points_max"],
        "bfr_actual_pressure_aop": row["o_bfr"],
        "recorded_by": row["o_recorded_by"],
        "recorded_at": row["o_recorded_at"],
    }


def _baseline(row: asyncpg.Record) -> dict[str, Any]:
    """What the session was scored with before any recorded outcome (the upload's values)."""
    out: dict[str, Any] = {c: None for c in OUTCOME_COLUMNS}
    if row["score_id"] is not None:
        excluded = (row["score_weights"] or {}).get("excluded", {})
        out["rpe_post_session"] = row["rpe_post_session"]
        out["game_points"] = None if "game" in excluded else row["game_points_achieved"]
        out["game_points_max"] = row["game_points_maximum"]
        out["bfr_actual_pressure_aop"] = row["bfr_pressure_aop"]
    if out["bfr_actual_pressure_aop"] is None:
        out["bfr_actual_pressure_aop"] = row["bfr_actual"]
    return out


def _requested_weights(row: asyncpg.Record, config: ScoringConfig) -> dict[str, float]:
    if row["score_weights"] and row["score_weights"].get("requested"):
        return {k: float(v) for k, v in row["score_weights"]["requested"].items()}
    if row["settings_weights"]:
        return {k: float(v) for k, v in row["settings_weights"].items()}
    return dict(config.performance_weights)


async def record(
    conn: asyncpg.Connection, req: ingest_pb2.RecordSessionOutcomeRequest
) -> ingest_pb2.SessionOutcomeReply:
    sid = parse_uuid(req.session_id, "session_id")
    given = requested_values(req)
    me = auth.current()
    async with conn.transaction():
        row = await repo.outcome_inputs(conn, sid)  # locks the session: one writer at a time
        if row is None or (me.is_therapist and row["owner_user_id"] != me.subject):
            raise NotFound(f"session {sid} does not exist")
        if row["processing_status"] != "completed":
            raise FailedPrecondition(
                f"session {sid} is {row['processing_status']}: an outcome can be recorded once it is completed"
            )
        outcome = _recorded(row)
        current = outcome if outcome is not None else _baseline(row)
        merged: dict[str, Any] = {c: given.get(c, current.get(c)) for c in OUTCOME_COLUMNS}
        config = await _config(conn, row["scoring_config_version"])
        level = int(row["game_level"]) if row["game_level"] and row["game_level"].isdigit() else None
        merged["game_points_max"] = int(
            merged["game_points_max"]
            or (config.game_points_max_by_level.get(level) if level is not None else None)
            or DEFAULT_GAME_POINTS_MAX
        )
        if outcome is not None and all(merged[c] == outcome[c] for c in OUTCOME_COLUMNS):
            return _reply(
                sid, outcome, row["score_id"] is not None and row, changed=False, config_version=config.version
            )
        rates, unusable = _sides(row["channels"])
        weights = _requested_weights(row, config)
        perf = scoring.performance(
            rates["left"],
            rates["right"],
            rpe=merged["rpe_post_session"],
            bfr_pressure_aop=merged["bfr_actual_pressure_aop"],
            game_points=merged["game_points"],
            game_points_max=merged["game_points_max"],
            weights=weights,
            bfr_range=config.bfr_gate,
            session_duration_minutes=row["session_duration_minutes"],
            unusable_sides=unusable,
            rpe_effort=config.rpe_effort,
        )
        saved = dict(await repo.upsert_outcome(conn, sid, merged, me.subject))
        score: Any = None
        if perf.overall_performance_score is not None:
            score = await repo.update_score(conn, sid, perf, weights, config.version)
            if score is None:  # never scored before (e.g. nothing was measurable without the outcome)
                await repo.insert_score(conn, sid, perf, weights, config.version)
                score = {
                    "overall_performance_score": perf.overall_performance_score,
                    "performance_weights": repo.weights_json(perf, weights),
                    "scoring_config_version": config.version,
                }
        elif row["score_id"] is not None:
            await repo.delete_score(conn, sid)
        if "bfr_actual_pressure_aop" in given:
            await _record_bfr(conn, sid, req.bfr, config)
        return _reply(sid, saved, score, changed=True, config_version=config.version)


async def _record_bfr(conn: asyncpg.Connection, sid: uuid.UUID, b: ingest_pb2.BfrInput, config: ScoringConfig) -> None:
    """The measured BFR data of the outcome, merged into the session's bfr_monitoring row:
    fields the request leaves unset keep their recorded values."""
    from services.ingest.servicer import bfr_row  # one reading of BfrInput (lazy: servicer imports us)

    existing = await repo.bfr(conn, sid)
    new = bfr_row(ingest_pb2.SessionMetadata(bfr=b), config.bfr_gate)
    assert new is not None  # the metadata holds the BFR message
    if existing is not None:
        for col, value in list(new.items()):
            if (
                col in existing
                and col not in ("actual_pressure_aop", "safety_gate_status")
                and (
                    value is None
                    or (col == "target_pressure_aop" and not b.HasField("target_pressure_aop"))
                    or (col == "safety_violations_count" and not b.HasField("safety_violations_count"))
                )
            ):
                new[col] = existing[col]
    await repo.upsert_bfr(conn, sid, new)


def _reply(
    sid: uuid.UUID, outcome: dict[str, Any], score: Any, *, changed: bool, config_version: int | None = None
) -> ingest_pb2.SessionOutcomeReply:
    """``score``: a row with overall_performance_score, performance_weights (JSON) and
    scoring_config_version, or None/False when the session has no score."""
    msg = ingest_pb2.SessionOutcomeReply(
        session_id=str(sid),
        changed=changed,
        recorded_by=outcome["recorded_by"],
        recorded_at=to_timestamp(outcome["recorded_at"]),
    )
    for col, field in (
        ("rpe_post_session", "rpe_post_session"),
        ("game_points", "game_points"),
        ("game_points_max", "game_points_max"),
        ("bfr_actual_pressure_aop", "bfr_actual_pressure_aop"),
    ):
        if outcome[col] is not None:
            setattr(msg, field, outcome[col])
    if score:
        msg.overall_performance_score = score["overall_performance_score"]
        msg.scoring_config_version = score["scoring_config_version"]
        weights = score["performance_weights"] if "performance_weights" in score else score["score_weights"]
        for k, v in ((weights or {}).get("excluded") or {}).items():
            msg.components_excluded[k] = v
    elif config_version is not None:
        msg.scoring_config_version = config_version
    return msg
