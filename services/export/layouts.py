"""Layouts: downstream replies (StatisticsService / JitSignalService messages) -> ExportDocument.

Tidy tables, one row per observation:
  statistics_only     'statistics'   one row per session x channel
  performance_report  'performance'  one row per session
  clinical_summary    'sessions'     one row per session (session + performance)
                      'channels'     one row per session x channel (statistics)
                      CSV: 'summary' = channels joined with their session row
  bfr_safety_report   'bfr'          one row per session
Column names carry the unit when the quantity has one and the name does not already say it
(mvc_peak_value_v, ..._seconds, ..._aop, ..._mmhg); see services/export/README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ghostly.statistics.v1 import statistics_pb2 as spb
from libs.convert import SESSION_TYPE_NAME, from_micros, timestamp_micros
from services.export.model import (
    BOOL,
    FLOAT,
    INT,
    TEXT,
    TEXT_LIST,
    Column,
    ExportDocument,
    SignalSet,
    SignalTrace,
    Table,
)

UNIT_CONVENTIONS = {
    "amplitudes": "V (volts, as read from the C3D; no scaling)",
    "time": "s (seconds from the first analog sample)",
    "rates": "fraction 0-1 (completion/intensity/duration rates, compliance, quality, confidence)",
    "scores": "0-100 (performance_scores components and P_overall)",
    "pressures": "% of arterial occlusion pressure (AOP), 0-100",
    "timestamps": "ISO 8601, UTC",
    "missing": "empty cell (CSV/Excel), null (JSON), NaN or '' (MATLAB)",
}

SIGNAL_KINDS = {
    "raw": "raw EMG as recorded (C3D analog), volts",
    "filtered": "20 Hz high-pass, Butterworth order 4, zero-phase, volts",
    "envelope": "ingest pipeline envelope 20Hz->Rectify->10Hz->RMS, volts (same numbers as ingest)",
}

# ChannelStatistics.signal_flags vocabulary and meanings (the EMG core's libs/emg/flags.py
# SIGNAL_FLAGS, which a test keeps this equal to; the export service does not load the EMG core).
# Written into the metadata of every export with channel rows.
SIGNAL_FLAGS = {
    "mains_interference": "power-line interference (50 or 60 Hz and harmonics) found in the rest periods; "
    "removed by a zero-phase notch before the envelope",
    "saturation": "the raw signal sat at (or within the tolerance of) the ADC rail; those spans are artefacts",
    "dropout": "constant-value fills (data loss, e.g. a wireless dropout); those spans are artefacts",
    "weak_signal": "the channel's strongest activity is too weak to tell contractions from noise; "
    "excluded from symmetry and the overall score",
    "no_usable_emg": "flat, disconnected or hum-only channel: no muscle activity can be measured; "
    "excluded from symmetry and the overall score",
    "partially_masked": "at least one contraction overlapped an artefact: only its uncorrupted part was kept, "
    "or it was not counted (see the warnings for count and seconds)",
}


def iso(ts) -> str | None:
    """protobuf Timestamp -> ISO 8601 UTC text; None when unset (seconds == nanos == 0)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    d = from_micros(timestamp_micros(ts))
    return d.isoformat().replace("+00:00", "Z")


def opt(msg, name: str):
    """Value of an `optional` proto field, None when unset."""
    return getattr(msg, name) if msg.HasField(name) else None


def recorded(msg, name: str):
    """A figure of a channel, None (an empty cell, JSON null) when the source did not record
    it (a channel migrated from the legacy system: ChannelStatistics.missing_fields)."""
    return None if name in msg.missing_fields else getattr(msg, name)


@dataclass
class SessionBundle:
    """What was fetched for one session; `error` set when the session could not be exported."""

    session_id: str
    session: spb.Session | None = None
    channels: list[spb.ChannelStatistics] | None = None
    performance: spb.PerformanceScore | None = None
    bfr: spb.BfrMonitoring | None = None
    settings: spb.SessionSettings | None = None
    error: str | None = None
    error_code: str | None = None  # grpc StatusCode name of the failure


# --------------------------------------------------------------------------- column sets


def _c(name, kind=FLOAT, unit="", desc=""):
    return Column(name, kind, unit, desc)


SESSION_COLUMNS: list[tuple[Column, Callable[[spb.Session], Any]]] = [
    (_c("session_id", TEXT, desc="therapy_sessions.id (UUID)"), lambda s: s.id),
    (_c("session_label", TEXT, desc="game session label from the C3D file name"), lambda s: s.session_label),
    (_c("patient_id", TEXT, desc="patient code"), lambda s: s.patient_id or None),
    (_c("session_date", TEXT, "ISO 8601 UTC", "session start"), lambda s: iso(s.session_date)),
    (
        _c("session_type", TEXT, desc="baseline / training / assessment"),
        lambda s: SESSION_TYPE_NAME.get(s.session_type),
    ),
    (_c("protocol_day", INT, "day", "day in the 14-day protocol"), lambda s: s.protocol_day or None),
]

CHANNEL_COLUMNS: list[tuple[Column, Callable[[spb.ChannelStatistics], Any]]] = [
    (_c("channel_name", TEXT, desc="muscle channel (C3D 'CHn Raw' -> CHn)"), lambda c: c.channel_name),
    (_c("side", TEXT, desc="left / right, empty when unknown"), lambda c: c.side or None),
    (
        _c("mvc_peak_value_v", FLOAT, "V", "MVC used for the intensity criterion"),
        lambda c: recorded(c, "mvc_peak_value"),
    ),
    (
        _c("mvc_rms_value_v", FLOAT, "V", "RMS of the envelope at the MVC-defining contractions"),
        lambda c: c.mvc_rms_value,
    ),
    (_c("mvc_confidence_score", FLOAT, "fraction 0-1"), lambda c: c.mvc_confidence_score),
    (_c("mvc_calculation_method", TEXT), lambda c: c.mvc_calculation_method),
    (_c("total_contractions", INT, "count"), lambda c: recorded(c, "total_contractions")),
    (_c("good_contractions_intensity", INT, "count"), lambda c: recorded(c, "good_contractions_intensity")),
    (_c("good_contractions_duration", INT, "count"), lambda c: recorded(c, "good_contractions_duration")),
    (_c("good_contractions_both", INT, "count"), lambda c: recorded(c, "good_contractions_both")),
    (_c("completion_rate", FLOAT, "fraction 0-1", "min(total / target, 1)"), lambda c: recorded(c, "completion_rate")),
    (_c("intensity_rate", FLOAT, "fraction 0-1"), lambda c: recorded(c, "intensity_rate")),
    (_c("duration_rate", FLOAT, "fraction 0-1"), lambda c: recorded(c, "duration_rate")),
    (_c("muscle_compliance_score", FLOAT, "fraction 0-1"), lambda c: recorded(c, "muscle_compliance_score")),
    (_c("signal_quality_score", FLOAT, "fraction 0-1"), lambda c: c.signal_quality_score),
    (_c("noise_level_db", FLOAT, "dB"), lambda c: opt(c, "noise_level_db")),
    (_c("artifacts_detected", INT, "count"), lambda c: c.artifacts_detected),
    (_c("processing_confidence", FLOAT, "fraction 0-1"), lambda c: c.processing_confidence),
    (
        _c("mvc_threshold_percentage", FLOAT, "fraction 0-1", "processing parameter: fraction of MVC"),
        lambda c: c.mvc_threshold_percentage,
    ),
    (
        _c("duration_threshold_seconds", FLOAT, "s", "processing parameter: minimum good duration"),
        lambda c: c.duration_threshold_seconds,
    ),
    (_c("processing_pipeline", TEXT, desc="processing parameter"), lambda c: c.processing_pipeline),
    (_c("processing_version", TEXT, desc="EMG pipeline version"), lambda c: c.processing_version),
    (_c("processed_at", TEXT, "ISO 8601 UTC"), lambda c: iso(c.processed_at)),
    # Appended after the original columns (their order is kept).
    (
        _c(
            "signal_flags",
            TEXT_LIST,
            desc="signal flags of the channel (JSON: a list; CSV/Excel/MATLAB: joined by ';'); empty = none; "
            "one of " + ", ".join(SIGNAL_FLAGS) + " (meanings: metadata.signal_flags)",
        ),
        lambda c: list(c.signal_flags),
    ),
    (
        _c("usable", BOOL, desc="false = excluded from symmetry and the overall score (weak_signal / no_usable_emg)"),
        lambda c: c.usable,
    ),
]


def _excluded_text(p: spb.PerformanceScore) -> str | None:
    if not p.excluded_components:
        return None
    return "; ".join(f"{k}: {v}" for k, v in sorted(p.excluded_components.items()))


def game_points(p: spb.PerformanceScore) -> int | None:
    """Points achieved, None when they were never given.

    performance_scores.game_points_achieved is NOT NULL: a score whose game component is
    excluded stores 0 when no points were reported (ingest: "game points missing"; legacy
    rows without a numeric score: 0 listed under `defaulted`), and PerformanceScore carries
    that 0 (a plain int32). A 0 next to an excluded game component is therefore "missing",
    never the patient's 0. Points that were known although the game was excluded for another
    reason (legacy rows: no maximum score) are kept."""
    if "game" in p.excluded_components and p.game_points_achieved == 0:
        return None
    return p.game_points_achieved


def bfr_status(gate: float | None) -> str:
    """migrations/README.md: unknown pressure -> 'unknown', never 'compliant'."""
    if gate is None:
        return "unknown"
    return "compliant" if gate == 1.0 else "non-compliant"


PERFORMANCE_COLUMNS: list[tuple[Column, Callable[[spb.PerformanceScore], Any]]] = [
    (_c("overall_performance_score", FLOAT, "score 0-100", "P_overall"), lambda p: p.overall_performance_score),
    (
        _c("compliance_score", FLOAT, "score 0-100", "empty when excluded (no usable muscle channel)"),
        lambda p: opt(p, "compliance_score"),
    ),
    (
        _c("symmetry_score", FLOAT, "score 0-100", "empty when excluded (a side missing or unusable)"),
        lambda p: opt(p, "symmetry_score"),
    ),
    (_c("effort_score", FLOAT, "score 0-100", "empty when excluded (RPE missing)"), lambda p: opt(p, "effort_score")),
    (
        _c("game_score", FLOAT, "score 0-100", "empty when excluded (game points missing)"),
        lambda p: opt(p, "game_score"),
    ),
    (_c("weight_compliance", FLOAT, "fraction 0-1", "effective weight"), lambda p: p.effective_weights.compliance),
    (_c("weight_symmetry", FLOAT, "fraction 0-1", "effective weight"), lambda p: p.effective_weights.symmetry),
    (_c("weight_effort", FLOAT, "fraction 0-1", "effective weight"), lambda p: p.effective_weights.effort),
    (_c("weight_game", FLOAT, "fraction 0-1", "effective weight"), lambda p: p.effective_weights.game),
    (_c("requested_weight_compliance", FLOAT, "fraction 0-1"), lambda p: p.requested_weights.compliance),
    (_c("requested_weight_symmetry", FLOAT, "fraction 0-1"), lambda p: p.requested_weights.symmetry),
    (_c("requested_weight_effort", FLOAT, "fraction 0-1"), lambda p: p.requested_weights.effort),
    (_c("requested_weight_game", FLOAT, "fraction 0-1"), lambda p: p.requested_weights.game),
    (_c("excluded_components", TEXT, desc="component: reason; ..."), _excluded_text),
    (_c("bfr_pressure_aop", FLOAT, "% AOP", "empty when unknown"), lambda p: opt(p, "bfr_pressure_aop")),
    (_c("bfr_compliance_gate", FLOAT, "0 or 1", "empty when not evaluated"), lambda p: opt(p, "bfr_compliance_gate")),
    (
        _c("bfr_status", TEXT, desc="compliant / non-compliant / unknown"),
        lambda p: bfr_status(opt(p, "bfr_compliance_gate")),
    ),
    (_c("rpe_post_session", INT, "RPE 0-10"), lambda p: opt(p, "rpe_post_session")),
    (_c("game_points_achieved", INT, "points", "empty when not reported (game component excluded)"), game_points),
    (_c("game_points_maximum", INT, "points"), lambda p: p.game_points_maximum),
    (_c("session_duration_minutes", FLOAT, "min"), lambda p: opt(p, "session_duration_minutes")),
    (_c("left_muscle_completion_rate", FLOAT, "fraction 0-1"), lambda p: opt(p, "left_muscle_completion_rate")),
    (_c("left_muscle_intensity_rate", FLOAT, "fraction 0-1"), lambda p: opt(p, "left_muscle_intensity_rate")),
    (_c("left_muscle_duration_rate", FLOAT, "fraction 0-1"), lambda p: opt(p, "left_muscle_duration_rate")),
    (_c("right_muscle_completion_rate", FLOAT, "fraction 0-1"), lambda p: opt(p, "right_muscle_completion_rate")),
    (_c("right_muscle_intensity_rate", FLOAT, "fraction 0-1"), lambda p: opt(p, "right_muscle_intensity_rate")),
    (_c("right_muscle_duration_rate", FLOAT, "fraction 0-1"), lambda p: opt(p, "right_muscle_duration_rate")),
    (_c("calculated_at", TEXT, "ISO 8601 UTC"), lambda p: iso(p.calculated_at)),
]

BFR_COLUMNS: list[tuple[Column, Callable[[spb.BfrMonitoring], Any]]] = [
    (_c("target_pressure_aop", FLOAT, "% AOP"), lambda b: b.target_pressure_aop),
    (_c("actual_pressure_aop", FLOAT, "% AOP"), lambda b: b.actual_pressure_aop),
    (
        _c(
            "safety_gate_status",
            BOOL,
            desc="actual pressure within the BFR safe range of the scoring configuration (bfr_gate, % AOP)",
        ),
        lambda b: b.safety_gate_status,
    ),
    (_c("safety_violations_count", INT, "count"), lambda b: b.safety_violations_count),
    (_c("safety_violations_duration_seconds", FLOAT, "s"), lambda b: opt(b, "safety_violations_duration_seconds")),
    (_c("max_pressure_deviation_aop", FLOAT, "% AOP"), lambda b: opt(b, "max_pressure_deviation_aop")),
    (_c("pressure_stability_coefficient", FLOAT, "CV"), lambda b: opt(b, "pressure_stability_coefficient")),
    (_c("patient_aop_baseline_mmhg", FLOAT, "mmHg"), lambda b: opt(b, "patient_aop_baseline_mmhg")),
    (_c("patient_limb_circumference_cm", FLOAT, "cm"), lambda b: opt(b, "patient_limb_circumference_cm")),
    (_c("cuff_size", TEXT), lambda b: b.cuff_size or None),
    (_c("cuff_position", TEXT), lambda b: b.cuff_position or None),
    (_c("monitoring_device", TEXT), lambda b: b.monitoring_device or None),
    (_c("device_calibration_date", TEXT, "ISO 8601 date"), lambda b: b.device_calibration_date or None),
    (_c("device_serial_number", TEXT), lambda b: b.device_serial_number or None),
    (_c("bfr_session_duration_minutes", FLOAT, "min"), lambda b: opt(b, "bfr_session_duration_minutes")),
    (_c("monitoring_frequency_hz", FLOAT, "Hz"), lambda b: opt(b, "monitoring_frequency_hz")),
]


def _cols(spec) -> list[Column]:
    return [c for c, _ in spec]


def _vals(spec, msg) -> tuple:
    if msg is None:
        return (None,) * len(spec)
    return tuple(f(msg) for _, f in spec)


# --------------------------------------------------------------------------- statistics types


def statistics_table(bundles: list[SessionBundle]) -> Table:
    t = Table("statistics", _cols(SESSION_COLUMNS) + _cols(CHANNEL_COLUMNS))
    for b in bundles:
        s = _vals(SESSION_COLUMNS, b.session)
        t.rows += [s + _vals(CHANNEL_COLUMNS, c) for c in b.channels or ()]
    return t


def performance_table(bundles: list[SessionBundle], name: str = "performance") -> Table:
    t = Table(name, _cols(SESSION_COLUMNS) + _cols(PERFORMANCE_COLUMNS))
    t.rows = [_vals(SESSION_COLUMNS, b.session) + _vals(PERFORMANCE_COLUMNS, b.performance) for b in bundles]
    return t


BFR_EXTRA = [
    _c("bfr_data_available", BOOL, desc="a bfr_monitoring row exists"),
    _c("bfr_enabled", BOOL, desc="session_settings.bfr_enabled; empty when no settings"),
    _c("bfr_target_pressure_setting_aop", FLOAT, "% AOP", "session_settings.bfr_target_pressure_aop"),
    _c("bfr_compliance_gate", FLOAT, "0 or 1", "gate applied to S_compliance; empty when not evaluated"),
    _c("bfr_status", TEXT, desc="compliant / non-compliant / unknown (no pressure: unknown, never compliant)"),
]


def bfr_table(bundles: list[SessionBundle]) -> Table:
    t = Table("bfr", _cols(SESSION_COLUMNS) + BFR_EXTRA + _cols(BFR_COLUMNS))
    for b in bundles:
        gate = opt(b.performance, "bfr_compliance_gate") if b.performance is not None else None
        if gate is None and b.bfr is not None:
            gate = 1.0 if b.bfr.safety_gate_status else 0.0
        st = b.settings
        extra = (
            b.bfr is not None,
            None if st is None else st.bfr_enabled,
            None if st is None else opt(st, "bfr_target_pressure_aop"),
            gate,
            bfr_status(gate),
        )
        t.rows.append(_vals(SESSION_COLUMNS, b.session) + extra + _vals(BFR_COLUMNS, b.bfr))
    return t


def clinical_tables(bundles: list[SessionBundle]) -> tuple[Table, Table, Table]:
    sessions = performance_table(bundles, "sessions")
    channels = Table("channels", [SESSION_COLUMNS[0][0], *_cols(CHANNEL_COLUMNS)])
    summary = Table("summary", sessions.columns + _cols(CHANNEL_COLUMNS))
    for b, srow in zip(bundles, sessions.rows):
        for c in b.channels or ():
            crow = _vals(CHANNEL_COLUMNS, c)
            channels.rows.append((b.session_id, *crow))
            summary.rows.append(srow + crow)
        if not b.channels:
            summary.rows.append(srow + (None,) * len(CHANNEL_COLUMNS))
    return sessions, channels, summary


def statistics_document(export_type: str, bundles: list[SessionBundle], metadata: dict) -> ExportDocument:
    ok = [b for b in bundles if b.error is None]
    doc = ExportDocument(export_type, metadata)
    if export_type == "statistics_only":
        doc.tables = [statistics_table(ok)]
    elif export_type == "performance_report":
        doc.tables = [performance_table(ok)]
    elif export_type == "bfr_safety_report":
        doc.tables = [bfr_table(ok)]
    elif export_type == "clinical_summary":
        sessions, channels, summary = clinical_tables(ok)
        doc.tables = [sessions, channels]
        doc.csv_override = summary
    else:  # pragma: no cover - guarded by the servicer
        raise ValueError(export_type)
    if export_type in ("statistics_only", "clinical_summary"):
        metadata["signal_flags"] = dict(SIGNAL_FLAGS)
    versions = sorted(
        {c.processing_version for b in ok for c in b.channels or ()}
        | {b.session.processing_version for b in ok if b.session is not None}
    )
    pipelines = sorted({c.processing_pipeline for b in ok for c in b.channels or ()})
    metadata.setdefault("processing", {})
    metadata["processing"].update(
        {
            "processing_versions": versions,
            "pipelines": pipelines,
            "thresholds": "per row: mvc_threshold_percentage, duration_threshold_seconds",
        }
    )
    return doc


# --------------------------------------------------------------------------- signals


@dataclass
class _Acc:
    channel: str
    kind: str
    unit: str = "V"
    rate: float = 0.0
    t0: float | None = None
    values: list[bytes] = field(default_factory=list)
    indices: list[bytes] = field(default_factory=list)
    count: int = 0
    last: bool = False


class SignalCollector:
    """Accumulates SignalChunk messages of one or more StreamSignals calls into traces."""

    def __init__(self):
        self._acc: dict[tuple[str, str], _Acc] = {}
        self.order: list[tuple[str, str]] = []
        self.infos: dict[str, Any] = {}

    def add(self, kind: str, chunk) -> None:
        if chunk.HasField("info") and kind not in self.infos:
            self.infos[kind] = chunk.info
        key = (chunk.channel, kind)
        acc = self._acc.get(key)
        if acc is None:
            acc = self._acc[key] = _Acc(chunk.channel, kind)
            self.order.append(key)
        if acc.t0 is None:
            acc.t0 = chunk.t0_s
        acc.unit = chunk.unit or acc.unit
        acc.rate = chunk.sample_rate_hz or acc.rate
        if chunk.dtype and chunk.dtype != "float32le":
            raise ValueError(f"unsupported sample dtype {chunk.dtype!r} from JitSignalService")
        acc.values.append(chunk.samples)
        if chunk.sample_indices:
            acc.indices.append(chunk.sample_indices)
        acc.count += chunk.sample_count
        acc.last = acc.last or chunk.last_for_channel

    def traces(self, channels: list[str], kinds: list[str]) -> list[SignalTrace]:
        """Traces ordered channel-major (CH1 raw, CH1 envelope, CH2 raw, ...)."""
        out = []
        chans = channels or list(dict.fromkeys(c for c, _ in self.order))
        for ch in chans:
            for kind in kinds:
                acc = self._acc.get((ch, kind))
                if acc is None:
                    continue
                values = np.frombuffer(b"".join(acc.values), dtype="<f4")
                idx = np.frombuffer(b"".join(acc.indices), dtype="<u4") if acc.indices else None
                info = self.infos.get(kind)
                expected = (
                    int(info.points_per_channel[ch]) if info is not None and ch in info.points_per_channel else None
                )
                out.append(SignalTrace(ch, kind, acc.unit or "V", acc.rate, acc.t0 or 0.0, values, idx, expected))
        return out

    def complete(self, key: tuple[str, str]) -> bool:
        acc = self._acc.get(key)
        return acc is not None and acc.last


def signals_document(
    export_type: str, traces: list[SignalTrace], full_resolution: bool, metadata: dict
) -> ExportDocument:
    doc = ExportDocument(export_type, metadata, signals=SignalSet(traces, full_resolution))
    return doc
