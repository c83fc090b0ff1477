"""The legacy -> statistics-first mapping rules, as pure Python functions.

These functions are the *reference* for the rules. The migration itself runs the same rules as
set-based SQL (libs/legacy/migrate.py, for speed: 100k sessions in well under a minute);
tests/legacy/test_migrate.py checks, session by session, that the SQL gives what these give.

Rules (also in migrations/README.md, "Legacy rollout"):
* one therapy session per distinct file_hash; the *primary* legacy row of a hash is the row the
  chosen analysis belongs to, else the earliest created (ties: smallest id). therapy_sessions.id
  = that row's c3d_metadata.id (legacy ids keep working). Every other path of the hash is kept
  in legacy_c3d_sources (is_primary = false) with its full legacy row.
* analysis choice per hash: usable (analytics_data is a non-empty object) first, then
  non-expired first, then newest created_at, then largest id. An expired analysis is still used
  when nothing better exists (legacy rows expire 30 days after processing, so on a real
  deployment nearly all of them are expired: dropping expired ones would drop everything);
  the choice is flagged ("analysis_expired").
* no usable analysis -> no statistics, status 'failed' (legacy 'completed'/'failed' or an empty
  analysis row), or the legacy status ('pending'/'processing') when no analysis row exists.
* patient_id: kept when it is an existing patients.patient_code, else NULL and the original is
  recorded (legacy_c3d_sources.legacy_values / notes). Patients are never created: they need a
  name and date of birth the legacy rows do not have.
* therapist_id: kept when it is the UUID of an existing therapist, else NULL (+ recorded).
* session_date (legacy TIMESTAMP without time zone) is read as UTC.
* NOT NULL columns without a legacy source get a fixed value and are listed under
  "migrated_from_legacy" -> "defaulted" in analysis_details / performance_weights.
* issue 17: both generations of analytics_data key names (FIELD_MAP below); a clinical value
  absent from the legacy channel is NULL and listed under "migrated_from_legacy" -> "missing",
  never 0; values outside the new constraints (session type, game level) are mapped when the
  mapping is sound, else NULL with the original kept in legacy_values and a note.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

DEFAULT_TARGET_CONTRACTIONS = 12
DEFAULT_MVC_THRESHOLD_PERCENTAGE = 0.75  # legacy default (75 % MVC)
DEFAULT_DURATION_THRESHOLD_SECONDS = 2.0
DEFAULT_PIPELINE = "20Hz->Rectify->10Hz->RMS"
REQUESTED_WEIGHTS = {"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15}
UNKNOWN_VERSION = "legacy-unknown"
USER_MVC_METHODS = ("user_defined", "user", "clinical_request", "manual")

# ----------------------------------------------------------------------------- field map
# The old system wrote two generations of analytics_data key names (issue 17). Field by field,
# the new column, the Aug 2025 key, the Sep 2025 key, and the rule. A key absent from the legacy
# channel (in both generations) gives NULL, listed under migrated_from_legacy.missing: never a 0
# that would flow into the rates and scores.
#
# | column                       | Aug 2025 key                      | Sep 2025 key                    | rule |
# |------------------------------|-----------------------------------|---------------------------------|------|
# | total_contractions           | contraction_count                 | contraction_count               | rounded |
# | good_contractions_intensity  | mvc_contraction_count             | mvc_compliant_count             | rounded |
# | good_contractions_duration   | duration_contraction_count        | duration_compliant_count        | rounded |
# | good_contractions_both       | good_contraction_count            | good_contraction_count          | rounded |
# | mvc_peak_value               | analysis_results.mvc_values[ch], else threshold / percentage | estimated_mvc_value (else the same) | volts |
# | mvc_threshold_percentage     | (none: 0.75, defaulted)           | mvc_threshold_percentage_used   | percent (> 1) / 100 |
# | (threshold, in legacy only)  | mvc_threshold_actual_value        | mvc75_threshold                 | kept in analysis_details.legacy |
# | duration_threshold_seconds   | duration_threshold_actual_value   | duration_threshold_actual_value | ms / 1000 (else 2.0, defaulted) |
# | processing_pipeline          | signal_processing.processing_steps | signal_processing_steps        | joined by '->' |
# | rms/mav/mpf/mdf/fatigue      | rms, mav, mpf, mdf, fatigue_index_fi_nsm5 (both)                    | | float or NULL |
# | contraction start/end        | start_time_ms / end_time_ms       | start_ms / end_ms (or the Aug keys) | ms / 1000 |
# | contraction duration         | duration_ms                       | duration_ms (else end - start)  | ms / 1000 |
# | (kept in legacy only)        | signal_processing{...}            | compliance_rate, signal_processing_parameters, timing_signal, processed_signal_stats, raw_signal_stats | unchanged |
# Rates (libs.emg.scoring.rates): completion = total / target (target = expected_contractions,
# else 12, defaulted), intensity = intensity count / total, duration = duration count / total,
# each capped at 1 and NULL when one of its inputs is NULL; muscle_compliance_score = mean of
# the rates that exist (NULL when none). Session compliance = mean of the channels' existing
# muscle compliance x 100 (excluded when none), symmetry needs both sides' compliance.
FIELD_MAP: dict[str, tuple[str, ...]] = {
    "total_contractions": ("contraction_count",),
    "good_contractions_intensity": ("mvc_contraction_count", "mvc_compliant_count"),
    "good_contractions_duration": ("duration_contraction_count", "duration_compliant_count"),
    "good_contractions_both": ("good_contraction_count",),
}
# channel keys carried by an emg_statistics column (legacy key -> column), both generations
COUNT_KEYS = {k: col for col, keys in FIELD_MAP.items() for k in keys}
THRESHOLD_KEYS = ("mvc_threshold_actual_value", "mvc75_threshold")
MVC_VALUE_KEYS = ("estimated_mvc_value",)
PERCENTAGE_KEYS = ("mvc_threshold_percentage_used",)
START_KEYS = ("start_time_ms", "start_ms")
END_KEYS = ("end_time_ms", "end_ms")
CONTRACTION_KEYS = (
    "start_time_ms",
    "end_time_ms",
    "start_ms",
    "end_ms",
    "duration_ms",
    "mean_amplitude",
    "max_amplitude",
    "is_good",
    "meets_mvc",
    "meets_duration",
)
SIGNAL_KEYS = {
    "rms": "rms_value",
    "mav": "mav_value",
    "mpf": "mean_frequency_hz",
    "mdf": "median_frequency_hz",
    "fatigue_index_fi_nsm5": "fatigue_index",
}
# Always-defaulted NOT NULL columns of emg_statistics (no legacy source at all).
STAT_DEFAULTED = ("mvc_rms_value", "mvc_confidence_score", "signal_quality_score", "processing_confidence")
# Values outside the new schema's constraints (issue 17): session_type has a CHECK in
# therapy_sessions, none in the legacy DDL. 'therapy' (the old code's later default) is a
# training session; anything else unknown is stored NULL (original kept in legacy_values).
SESSION_TYPES = ("baseline", "training", "assessment")
SESSION_TYPE_MAP = {"therapy": "training"}
GAME_LEVEL_RANGE = (1, 10)  # session_settings.game_difficulty_level CHECK

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NUMERIC_TEXT = re.compile(r"^\s*[0-9]+(\.[0-9]+)?\s*$")
_LABEL_DATE = re.compile(r"(\d{8})_(\d{2})-(\d{2})-(\d{2})")


def json_kind(v: Any) -> str:
    """'i' integer literal, 'f' other number, 'b' boolean, 'n' null, 's' string, 'o' other."""
    if v is None:
        return "n"
    if isinstance(v, bool):
        return "b"
    if isinstance(v, int):
        return "i"
    if isinstance(v, float):
        return "f"
    return "s" if isinstance(v, str) else "o"


def parse_number(v: Any) -> float | None:
    """A JSON number, or a string holding a plain non-negative decimal ('24', '24.0')."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and _NUMERIC_TEXT.match(v):
        return float(v)
    return None


def game_points(score: Any) -> int | None:
    n = parse_number(score)
    return None if n is None or n < 0 or n >= 1e9 else math.floor(n + 0.5)


def game_level(level: Any) -> tuple[int | None, str | None]:
    """(game_difficulty_level, note when the legacy value could not be kept)."""
    if level is None or level == "":
        return None, None
    n = parse_number(level)
    if n is None or n != int(n):
        return None, f"legacy level {level!r} is not a whole number: stored NULL"
    if not GAME_LEVEL_RANGE[0] <= n <= GAME_LEVEL_RANGE[1]:
        return None, f"legacy level {level!r} outside 1-10: stored NULL"
    return int(n), None


def session_type(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    return v if v in SESSION_TYPES else SESSION_TYPE_MAP.get(v)


def session_date_from_name(*names: str | None) -> datetime | None:
    """The game's label (Ghostly_Emg_YYYYMMDD_HH-MM-SS-nnnn) in the session id or file name, UTC."""
    for name in names:
        m = _LABEL_DATE.search(name or "")
        if m:
            try:
                return datetime.strptime("".join(m.groups()), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
            except ValueError:
                continue
    return None


def is_usable(analytics_data: Any) -> bool:
    return isinstance(analytics_data, dict) and len(analytics_data) > 0


def choose_analysis(rows: list[dict], now: datetime) -> dict | None:
    """The analysis_results row to migrate for one file_hash (see module doc)."""
    if not rows:
        return None

    def key(r):
        fresh = r.get("expires_at") is None or r["expires_at"] > now
        return (is_usable(r["analytics_data"]), fresh, r["created_at"], str(r["id"]))

    return max(rows, key=key)


def therapist_uuid(text: str | None, existing: set[str]) -> str | None:
    if text is None or not _UUID.match(text.strip()):
        return None
    value = text.strip().lower()
    return value if value in existing else None


def channel_side(name: str) -> str | None:
    """GHOSTLY convention (libs.emg.settings: channel_map None): CH1 left, CH2 right."""
    n = name.lower()
    if n == "ch1" or "left" in n:
        return "left"
    if n == "ch2" or "right" in n:
        return "right"
    return None


def session_status(legacy_status: str | None, analysis: dict | None) -> str:
    if analysis is not None and is_usable(analysis["analytics_data"]):
        return "completed"
    if analysis is not None or legacy_status in ("completed", "failed") or legacy_status is None:
        return "failed"
    return legacy_status  # 'pending' / 'processing' and never analysed: unchanged


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _count(v: Any) -> int | None:
    f = _num(v)
    return None if f is None else math.floor(f + 0.5)


def _first(ch: dict, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        v = _num(ch.get(k))
        if v is not None:
            return v
    return None


def _rate(num: int | None, den: int | None) -> float | None:
    if num is None or den is None:
        return None
    return 0.0 if den == 0 else min(num / den, 1.0)


def map_channel(
    name: str, ch: dict, *, processing_version: str, mvc_value: float | None = None
) -> tuple[dict, list[dict]]:
    """One analytics_data channel (either key generation) -> (emg_statistics values,
    emg_contractions values). Raises ValueError for a contraction without numeric times (the
    migration quarantines such a row)."""
    defaulted: list[str] = list(STAT_DEFAULTED)
    missing: list[str] = []
    counts = {}
    for col, keys in FIELD_MAP.items():
        c = None
        for k in keys:
            c = _count(ch.get(k))
            if c is not None:
                break
        if c is None:
            missing.append(col)
        counts[col] = c
    total = counts["total_contractions"]
    expected = _count(ch.get("expected_contractions"))
    target = expected if expected and expected > 0 else DEFAULT_TARGET_CONTRACTIONS
    completion = None if total is None else min(total / target, 1.0)
    intensity = _rate(counts["good_contractions_intensity"], total)
    duration = _rate(counts["good_contractions_duration"], total)
    for col, v in (("completion_rate", completion), ("intensity_rate", intensity), ("duration_rate", duration)):
        if v is None:
            missing.append(col)
    have = [r for r in (completion, intensity, duration) if r is not None]
    mcs = sum(have) / len(have) if have else None
    if mcs is None:
        missing.append("muscle_compliance_score")
    pct = _first(ch, PERCENTAGE_KEYS)
    if pct is not None and pct > 1:
        pct = pct / 100.0
    if pct is None or not 0 < pct <= 1:
        pct = None
        defaulted.append("mvc_threshold_percentage")
    thr = _first(ch, THRESHOLD_KEYS)
    est = _first(ch, MVC_VALUE_KEYS)
    if mvc_value is not None:
        mvc_peak, mvc_source = float(mvc_value), "analysis_results.mvc_values"
    elif est is not None:
        mvc_peak, mvc_source = est, "estimated_mvc_value"
    elif thr is not None:
        mvc_peak = thr / (pct or DEFAULT_MVC_THRESHOLD_PERCENTAGE)
        mvc_source = "mvc threshold / " + ("mvc_threshold_percentage_used" if pct else "0.75")
    else:
        mvc_peak, mvc_source = None, "none (NULL)"
        missing.append("mvc_peak_value")
    dthr = _num(ch.get("duration_threshold_actual_value"))
    if dthr is None:
        defaulted.append("duration_threshold_seconds")
    method = ch.get("mvc_estimation_method")
    sp = ch.get("signal_processing")
    steps = sp.get("processing_steps") if isinstance(sp, dict) else None
    if not isinstance(steps, list):
        steps = ch.get("signal_processing_steps")
    # carried by a column, so not repeated in analysis_details.legacy; the view gives them back
    # under their legacy name with their JSON number type
    carried = {}
    for k in COUNT_KEYS:
        if k in ch and json_kind(ch[k]) == "i":
            carried[k] = "i"
    for k in SIGNAL_KEYS:
        if k in ch and json_kind(ch[k]) in ("f", "n"):
            carried[k] = json_kind(ch[k])
    contr_list = ch.get("contractions")
    contraction_keys = None
    if isinstance(contr_list, list):
        carried["contractions"] = "a"
        first = contr_list[0] if contr_list and isinstance(contr_list[0], dict) else {}
        contraction_keys = {k: json_kind(first[k]) for k in CONTRACTION_KEYS if k in first}
    stats = {
        "channel_name": name,
        "side": channel_side(name),
        "mvc_peak_value": mvc_peak,
        "mvc_rms_value": 0.0,
        "mvc_confidence_score": 0.0,
        "mvc_calculation_method": "user_defined" if method in USER_MVC_METHODS else "backend_95percentile",
        **counts,
        "completion_rate": completion,
        "intensity_rate": intensity,
        "duration_rate": duration,
        "muscle_compliance_score": mcs,
        "signal_quality_score": 0.0,
        "processing_confidence": 0.0,
        "processing_pipeline": "->".join(map(str, steps)) if isinstance(steps, list) and steps else DEFAULT_PIPELINE,
        "processing_version": processing_version,
        "mvc_threshold_percentage": pct if pct is not None else DEFAULT_MVC_THRESHOLD_PERCENTAGE,
        "duration_threshold_seconds": dthr / 1000.0 if dthr is not None else DEFAULT_DURATION_THRESHOLD_SECONDS,
        **{col: _num(ch.get(key)) for key, col in SIGNAL_KEYS.items()},
        "legacy": {k: v for k, v in ch.items() if k not in carried},
        "defaulted": sorted(defaulted),
        "missing": sorted(missing),
        "carried": carried,
        "contraction_keys": contraction_keys,
        "mvc_peak_source": mvc_source,
    }
    contractions = []
    for i, c in enumerate(contr_list if isinstance(contr_list, list) else []):
        start, end = _first(c, START_KEYS), _first(c, END_KEYS)
        if start is None or end is None:
            raise ValueError(f"contraction {i} of {name} has no numeric start/end time")
        dur = _num(c.get("duration_ms"))
        contractions.append(
            {
                "contraction_index": i,
                "start_time_s": start / 1000.0,
                "end_time_s": end / 1000.0,
                "duration_s": (dur if dur is not None else end - start) / 1000.0,
                "peak_amplitude": float(c.get("max_amplitude") or 0.0),
                "mean_amplitude": float(c.get("mean_amplitude") or 0.0),
                "meets_intensity": bool(c.get("meets_mvc")),
                "meets_duration": bool(c.get("meets_duration")),
                "is_good": bool(c.get("is_good")),
            }
        )
    return stats, contractions


def performance(stats: list[dict], game_metadata: dict | None, session_duration_s: float | None) -> dict:
    """performance_scores values derived from the migrated channel statistics.

    compliance = mean of the channels' existing muscle compliance x 100 (excluded when no channel
    has one); symmetry from the left/right compliance when both exist (else excluded); effort
    (no RPE in legacy data) and game (no maximum score in legacy data) are excluded: score 0,
    weight 0, reason under "excluded" (README rule).
    """
    comp = [s["muscle_compliance_score"] for s in stats if s["muscle_compliance_score"] is not None]
    excluded = {"effort": "no RPE in legacy data", "game": "no maximum game score in legacy data"}
    if comp:
        compliance = sum(comp) / len(comp) * 100.0
    else:
        compliance = 0.0
        excluded["compliance"] = "no compliance rates in legacy data"
    left = next((s for s in stats if s["side"] == "left"), None)
    right = next((s for s in stats if s["side"] == "right"), None)
    L = left["muscle_compliance_score"] if left is not None else None
    R = right["muscle_compliance_score"] if right is not None else None
    if L is not None and R is not None:
        symmetry = (1.0 - abs(L - R) / (L + R)) * 100.0 if L + R > 0 else 0.0
    else:
        symmetry = 0.0
        excluded["symmetry"] = "left/right pair not available"
    used = [k for k in ("compliance", "symmetry") if k not in excluded]
    total_w = sum(REQUESTED_WEIGHTS[k] for k in used)
    eff = {k: (REQUESTED_WEIGHTS[k] / total_w if k in used else 0.0) for k in REQUESTED_WEIGHTS}
    overall = eff["compliance"] * compliance + eff["symmetry"] * symmetry
    points = game_points((game_metadata or {}).get("score"))
    return {
        "overall_performance_score": min(max(overall, 0.0), 100.0),
        "compliance_score": compliance,
        "symmetry_score": symmetry,
        "effort_score": 0.0,
        "game_score": 0.0,
        "effective_weights": eff,
        "excluded": excluded,
        "game_points_achieved": points if points is not None else 0,
        "session_duration_minutes": session_duration_s / 60.0 if session_duration_s is not None else None,
        "left": left,
        "right": right,
    }


def legacy_float_equal(a: Any, b: Any, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-12)
