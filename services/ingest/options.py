"""Analysis settings of a session: from an ingest request, and back from the database for
re-processing (so a reprocess without changes recomputes with exactly the same inputs)."""

from __future__ import annotations

from typing import Any

from ghostly.ingest.v1 import ingest_pb2
from libs.emg import AnalysisSettings

WEIGHT_KEYS = ("compliance", "symmetry", "effort", "game")


def _opt(msg, name: str):
    return getattr(msg, name) if msg.HasField(name) else None


def options_overrides(o: ingest_pb2.AnalysisOptions) -> dict[str, Any]:
    """Only the options the caller set, as AnalysisSettings keyword arguments."""
    out: dict[str, Any] = {}
    if (v := _opt(o, "mvc_threshold_percentage")) is not None:
        out["mvc_threshold_percentage"] = v
    mvc = {
        side: v
        for side, v in (("left", _opt(o, "mvc_user_left")), ("right", _opt(o, "mvc_user_right")))
        if v is not None
    }
    if mvc:
        out["mvc_user"] = mvc
    if (v := _opt(o, "duration_threshold_s")) is not None:
        out["duration_threshold_s"] = v
    dur = {
        side: v
        for side, v in (
            ("left", _opt(o, "duration_threshold_left_s")),
            ("right", _opt(o, "duration_threshold_right_s")),
        )
        if v is not None
    }
    if dur:
        out["duration_threshold"] = dur
    if (v := _opt(o, "target_contractions")) is not None:
        out["target_contractions"] = int(v)
    if o.HasField("performance_weights"):
        w = o.performance_weights
        out["performance_weights"] = {k: getattr(w, k) for k in WEIGHT_KEYS}
    return out


def settings_from_request(meta: ingest_pb2.SessionMetadata) -> AnalysisSettings:
    """AnalysisSettings of what the request alone sets (validation before anything is stored).
    Invalid values raise SettingsError (INVALID_ARGUMENT)."""
    return AnalysisSettings(**request_kwargs(meta))


def request_kwargs(meta: ingest_pb2.SessionMetadata) -> dict[str, Any]:
    """AnalysisSettings keyword arguments the session's request sets (unset: not present)."""
    kwargs = options_overrides(meta.options)
    kwargs["rpe"] = _opt(meta, "rpe_post_session")
    kwargs["game_points"] = _opt(meta, "game_points")
    if (v := _opt(meta, "game_points_max")) is not None:
        kwargs["game_points_max"] = v
    if meta.HasField("bfr"):
        kwargs["bfr_pressure_aop"] = meta.bfr.actual_pressure_aop
    return kwargs


def settings_from_rows(settings_row, score_row, bfr_row, overrides: dict[str, Any] | None = None) -> AnalysisSettings:
    """Rebuild the inputs a session was analysed with from session_settings, performance_scores
    and bfr_monitoring, then apply `overrides` (Reprocess options)."""
    return AnalysisSettings(**kwargs_from_rows(settings_row, score_row, bfr_row, overrides))


def kwargs_from_rows(
    settings_row, score_row, bfr_row, overrides: dict[str, Any] | None = None, outcome_row=None
) -> dict[str, Any]:
    """settings_from_rows as keyword arguments; a recorded post-session outcome wins over the
    values given at upload."""
    kwargs: dict[str, Any] = {}
    if settings_row is not None:
        kwargs["mvc_threshold_percentage"] = settings_row["mvc_threshold_percentage"]
        mvc = {
            side: settings_row[col]
            for side, col in (("left", "mvc_user_left_quad"), ("right", "mvc_user_right_quad"))
            if settings_row[col] is not None
        }
        if mvc:
            kwargs["mvc_user"] = mvc
        kwargs["duration_threshold_s"] = settings_row["duration_threshold_seconds"]
        dur = {
            side: settings_row[col]
            for side, col in (("left", "duration_threshold_left_quad"), ("right", "duration_threshold_right_quad"))
            if settings_row[col] is not None
        }
        if dur:
            kwargs["duration_threshold"] = dur
        kwargs["target_contractions"] = settings_row["target_contractions_per_muscle"]
        weights = settings_row["performance_weights"] or {}
        kwargs["performance_weights"] = {k: float(weights[k]) for k in WEIGHT_KEYS if k in weights}
    if score_row is not None:
        excluded = (score_row["performance_weights"] or {}).get("excluded", {})
        kwargs["rpe"] = score_row["rpe_post_session"]
        # game_points_achieved is NOT NULL: 'game' in the exclusions means it was missing.
        kwargs["game_points"] = None if "game" in excluded else score_row["game_points_achieved"]
        kwargs["game_points_max"] = score_row["game_points_maximum"]
        kwargs["bfr_pressure_aop"] = score_row["bfr_pressure_aop"]
    if kwargs.get("bfr_pressure_aop") is None and bfr_row is not None:
        kwargs["bfr_pressure_aop"] = bfr_row["actual_pressure_aop"]
    if outcome_row is not None:
        for col, key in (
            ("rpe_post_session", "rpe"),
            ("game_points", "game_points"),
            ("game_points_max", "game_points_max"),
            ("bfr_actual_pressure_aop", "bfr_pressure_aop"),
        ):
            if outcome_row[col] is not None:
                kwargs[key] = outcome_row[col]
    kwargs.update(overrides or {})
    return kwargs
