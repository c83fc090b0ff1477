"""Which value a session is analysed with: sent with the session > patient calibration > default.

A session's calibratable values (MVC and duration threshold per muscle, target contractions,
BFR target pressure) are resolved here, once, for uploads and re-processing; the result
records where each value came from (session_settings.value_sources) and which calibration
was used (session_settings.calibration_id), so a later calibration never silently rewrites a
session and Reprocess(apply_current_calibration) replaces only what did not come from the
session itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

SESSION_REQUEST, PATIENT_CALIBRATION, DEFAULT = "session_request", "patient_calibration", "default"
VALUE_KEYS = ("mvc_left", "mvc_right", "duration_left", "duration_right", "target_contractions", "bfr_target")
# value key -> patient_calibrations column
CALIBRATION_COLUMNS = {
    "mvc_left": "mvc_left_v",
    "mvc_right": "mvc_right_v",
    "duration_left": "duration_threshold_left_s",
    "duration_right": "duration_threshold_right_s",
    "target_contractions": "target_contractions",
    "bfr_target": "bfr_target_pressure_aop",
}
SIDES = {
    "mvc_left": ("mvc_user", "left"),
    "mvc_right": ("mvc_user", "right"),
    "duration_left": ("duration_threshold", "left"),
    "duration_right": ("duration_threshold", "right"),
}


@dataclass
class Resolved:
    """AnalysisSettings keyword arguments plus their provenance."""

    kwargs: dict[str, Any]
    sources: dict[str, str]
    calibration_id: uuid.UUID | None
    calibration_source: str | None
    bfr_target: float | None  # session_settings.bfr_target_pressure_aop (None: column default)
    warnings: list[str] = field(default_factory=list)


def request_values(kwargs: dict[str, Any], bfr_target: float | None) -> dict[str, Any]:
    """The calibratable values a request (or the stored request part) sets, by value key."""
    out: dict[str, Any] = {}
    for key, (table, side) in SIDES.items():
        v = (kwargs.get(table) or {}).get(side)
        if v is None and table == "duration_threshold" and kwargs.get("duration_threshold_s") is not None:
            v = kwargs["duration_threshold_s"]  # a session-wide duration applies to both muscles
        if v is not None:
            out[key] = v
    if kwargs.get("target_contractions") is not None:
        out["target_contractions"] = kwargs["target_contractions"]
    if bfr_target is not None:
        out["bfr_target"] = bfr_target
    return out


def resolve(kwargs: dict[str, Any], requested: dict[str, Any], calibration: Any | None) -> Resolved:
    """Apply the priority rule. ``kwargs``: the session's AnalysisSettings arguments (scoring
    configuration and request options merged); ``requested``: request_values() of what the
    session itself sent; ``calibration``: the patient's calibration row to use, or None."""
    out = dict(kwargs)
    out["mvc_user"] = dict(out.get("mvc_user") or {})
    out["duration_threshold"] = dict(out.get("duration_threshold") or {})
    out["mvc_sources"] = {}
    sources: dict[str, str] = {}
    bfr_target: float | None = None
    for key in VALUE_KEYS:
        # Whatever ``kwargs`` holds for a value the session did not send is replaced.
        if key in SIDES:
            out[SIDES[key][0]].pop(SIDES[key][1], None)
        elif key == "target_contractions" and key not in requested:
            out.pop("target_contractions", None)
        if key in requested:
            value, source = requested[key], SESSION_REQUEST
        elif calibration is not None and calibration[CALIBRATION_COLUMNS[key]] is not None:
            value, source = calibration[CALIBRATION_COLUMNS[key]], PATIENT_CALIBRATION
        else:
            sources[key] = DEFAULT
            continue
        sources[key] = source
        if key in SIDES:
            table, side = SIDES[key]
            out[table][side] = float(value)
            if table == "mvc_user" and source == PATIENT_CALIBRATION:
                out["mvc_sources"][side] = PATIENT_CALIBRATION
        elif key == "target_contractions":
            out["target_contractions"] = int(value)
        else:
            bfr_target = float(value)
    used = calibration if calibration is not None and PATIENT_CALIBRATION in sources.values() else None
    return Resolved(
        out, sources, used["id"] if used is not None else None, used["source"] if used is not None else None, bfr_target
    )


def stored_request_part(
    kwargs: dict[str, Any], value_sources: dict[str, str] | None, bfr_target: float | None
) -> dict[str, Any]:
    """From a session's stored values: only those that came from the session's own request
    (for Reprocess with apply_current_calibration). Sessions written before calibrations
    existed have no value_sources: their stored thresholds were sent with the session."""
    stored = request_values(kwargs, bfr_target)
    if not value_sources:
        return stored
    return {k: v for k, v in stored.items() if value_sources.get(k) == SESSION_REQUEST}
