"""Everything one analysis of a session runs with: scoring configuration (versioned), the
patient's calibration and the session's own values, merged by the priority rule (session >
calibration > default; a session's weights > the configuration's), with provenance."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ghostly.ingest.v1 import ingest_pb2
from libs.emg import AnalysisSettings
from libs.scoring_config import ScoringConfig
from services.ingest import calibration as cal
from services.ingest import repository as repo
from services.ingest.options import kwargs_from_rows, request_kwargs

WEIGHTS_KEY = "performance_weights"  # value_sources entry: session_request | scoring_config


@dataclass
class Plan:
    settings: AnalysisSettings
    config_version: int
    calibration_id: uuid.UUID | None
    value_sources: dict[str, str]
    bfr_target: float | None
    warnings: list[str] = field(default_factory=list)


def _build(
    config: ScoringConfig,
    kwargs: dict[str, Any],
    requested: dict[str, Any],
    calibration: Any | None,
    weights_from_session: bool,
) -> Plan:
    merged = {**config.settings_kwargs(), **{k: v for k, v in kwargs.items() if k != WEIGHTS_KEY}}
    if weights_from_session:
        merged[WEIGHTS_KEY] = kwargs[WEIGHTS_KEY]
    resolved = cal.resolve(merged, requested, calibration)
    sources = dict(resolved.sources)
    sources[WEIGHTS_KEY] = cal.SESSION_REQUEST if weights_from_session else "scoring_config"
    return Plan(
        AnalysisSettings(**resolved.kwargs), config.version, resolved.calibration_id, sources, resolved.bfr_target
    )


async def for_upload(conn: asyncpg.Connection, patient_code: str, meta: ingest_pb2.SessionMetadata) -> Plan:
    """A new session: the current configuration and the patient's current calibration."""
    config = ScoringConfig.from_row(await repo.scoring_config(conn))
    kwargs = request_kwargs(meta)
    bfr_target = (
        meta.bfr.target_pressure_aop if meta.HasField("bfr") and meta.bfr.HasField("target_pressure_aop") else None
    )
    calibration = await repo.current_calibration(conn, patient_code)
    plan = _build(config, kwargs, cal.request_values(kwargs, bfr_target), calibration, WEIGHTS_KEY in kwargs)
    if await repo.patient_active(conn, patient_code) is False:
        plan.warnings.append(f"patient {patient_code} is deactivated; the session was ingested all the same")
    return plan


async def for_reprocess(
    conn: asyncpg.Connection,
    patient_code: str | None,
    rows: tuple,
    overrides: dict[str, Any],
    *,
    apply_calibration: bool,
    apply_config: bool,
) -> Plan:
    """A stored session: its own values (and, unless asked otherwise, the calibration and the
    configuration version it was analysed with)."""
    settings_row, score_row, bfr_row, outcome_row = rows
    version = None if apply_config or score_row is None else score_row["scoring_config_version"]
    config = ScoringConfig.from_row(await repo.scoring_config(conn, version))
    kwargs = kwargs_from_rows(settings_row, score_row, bfr_row, overrides, outcome_row)
    stored_sources: dict[str, str] = dict(settings_row["value_sources"] or {}) if settings_row is not None else {}
    stored_bfr_target = settings_row["bfr_target_pressure_aop"] if settings_row is not None else None
    weights_from_session = WEIGHTS_KEY in (overrides or {}) or (
        WEIGHTS_KEY in kwargs
        and (
            stored_sources.get(WEIGHTS_KEY) == cal.SESSION_REQUEST
            or (not stored_sources and kwargs[WEIGHTS_KEY] != config.performance_weights)
        )
    )
    if apply_calibration:
        requested = cal.stored_request_part(kwargs, stored_sources, stored_bfr_target)
        requested.update(cal.request_values(overrides or {}, None))
        calibration = await repo.current_calibration(conn, patient_code) if patient_code else None
        return _build(config, kwargs, requested, calibration, weights_from_session)
    # Keep what the session was analysed with: every stored value counts as given.
    plan = _build(config, kwargs, cal.request_values(kwargs, stored_bfr_target), None, weights_from_session)
    if stored_sources:
        plan.value_sources = {**stored_sources, WEIGHTS_KEY: plan.value_sources[WEIGHTS_KEY]}
        for side, key in (("left", "mvc_left"), ("right", "mvc_right")):
            if stored_sources.get(key) == cal.PATIENT_CALIBRATION and side in plan.settings.mvc_user:
                plan.settings.mvc_sources[side] = cal.PATIENT_CALIBRATION
    plan.calibration_id = settings_row["calibration_id"] if settings_row is not None else None
    return plan
