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
"""
from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

DEFAULT_TARGET_CONTRACTIONS = 12
DEFAULT_MVC_THRESHOLD_PERCENTAGE = 0.75       # legacy default (75 % MVC)
DEFAULT_DURATION_THRESHOLD_SECONDS = 2.0
DEFAULT_PIPELINE = "20Hz->Rectify->10Hz->RMS"
REQUESTED_WEIGHTS = {"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15}
UNKNOWN_VERSION = "legacy-unknown"
USER_MVC_METHODS = ("user_defined", "user", "clinical_request", "manual")

# channel keys carried by an emg_statistics column (legacy key -> column)
COUNT_KEYS = {
    "contraction_count": "total_contractions",
    "mvc_contraction_count": "good_contractions_intensity",
    "duration_contraction_count": "good_contractions_duration",
    "good_contraction_count": "good_contractions_both",
}
SIGNAL_KEYS = {
    "rms": "rms_value",
    "mav": "mav_value",
    "mpf": "mean_frequency_hz",
    "mdf": "median_frequency_hz",
    "fatigue_index_fi_nsm5": "fatigue_index",
}
# Always removed from analysis_details.legacy (the column gives them back exactly: null -> NULL).
ALWAYS_CARRIED = tuple(SIGNAL_KEYS) + ("contractions",)
# Always-defaulted NOT NULL columns of emg_statistics (no legacy source at all).
STAT_DEFAULTED = ("mvc_rms_value", "mvc_confidence_score", "signal_quality_score",
                  "processing_confidence", "mvc_threshold_percentage")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


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
    return None if f is None else int(round(f))


def map_channel(name: str, ch: dict, *, processing_version: str, mvc_value: float | None = None) -> tuple[dict, list[dict]]:
    """One analytics_data channel -> (emg_statistics values, emg_contractions values)."""
    defaulted: list[str] = list(STAT_DEFAULTED)
    counts = {}
    for key, col in COUNT_KEYS.items():
        c = _count(ch.get(key))
        if c is None:
            defaulted.append(col)
        counts[col] = c if c is not None else 0
    total = counts["total_contractions"]
    expected = _count(ch.get("expected_contractions"))
    target = expected if expected and expected > 0 else DEFAULT_TARGET_CONTRACTIONS
    completion = min(total / target, 1.0)
    intensity = min(counts["good_contractions_intensity"] / total, 1.0) if total else 0.0
    duration = min(counts["good_contractions_duration"] / total, 1.0) if total else 0.0
    thr = _num(ch.get("mvc_threshold_actual_value"))
    if mvc_value is not None:
        mvc_peak, mvc_source = float(mvc_value), "analysis_results.mvc_values"
    elif thr is not None:
        mvc_peak, mvc_source = thr / DEFAULT_MVC_THRESHOLD_PERCENTAGE, "mvc_threshold_actual_value / 0.75"
    else:
        mvc_peak, mvc_source = 0.0, "none (defaulted 0)"
        defaulted.append("mvc_peak_value")
    dthr = _num(ch.get("duration_threshold_actual_value"))
    if dthr is None:
        defaulted.append("duration_threshold_seconds")
    method = ch.get("mvc_estimation_method")
    steps = (ch.get("signal_processing") or {}).get("processing_steps") if isinstance(ch.get("signal_processing"), dict) else None
    removed = set(ALWAYS_CARRIED) | {k for k in COUNT_KEYS if _num(ch.get(k)) is not None}
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
        "muscle_compliance_score": (completion + intensity + duration) / 3.0,
        "signal_quality_score": 0.0,
        "processing_confidence": 0.0,
        "processing_pipeline": "->".join(map(str, steps)) if isinstance(steps, list) and steps else DEFAULT_PIPELINE,
        "processing_version": processing_version,
        "mvc_threshold_percentage": DEFAULT_MVC_THRESHOLD_PERCENTAGE,
        "duration_threshold_seconds": dthr / 1000.0 if dthr is not None else DEFAULT_DURATION_THRESHOLD_SECONDS,
        **{col: _num(ch.get(key)) for key, col in SIGNAL_KEYS.items()},
        "legacy": {k: v for k, v in ch.items() if k not in removed},
        "defaulted": sorted(defaulted),
        "mvc_peak_source": mvc_source,
    }
    contractions = []
    for i, c in enumerate(ch.get("contractions") or []):
        contractions.append({
            "contraction_index": i,
            "start_time_s": float(c["start_time_ms"]) / 1000.0,
            "end_time_s": float(c["end_time_ms"]) / 1000.0,
            "duration_s": float(c["duration_ms"]) / 1000.0,
            "peak_amplitude": float(c.get("max_amplitude") or 0.0),
            "mean_amplitude": float(c.get("mean_amplitude") or 0.0),
            "meets_intensity": bool(c.get("meets_mvc")),
            "meets_duration": bool(c.get("meets_duration")),
            "is_good": bool(c.get("is_good")),
        })
    return stats, contractions


def performance(stats: list[dict], game_metadata: dict | None, session_duration_s: float | None) -> dict:
    """performance_scores values derived from the migrated channel statistics.

    compliance = mean muscle compliance x 100; symmetry from the left/right compliance when both
    sides exist (else excluded); effort (no RPE in legacy data) and game (no maximum score in
    legacy data) are excluded: score 0, weight 0, reason under "excluded" (README rule).
    """
    comp = [s["muscle_compliance_score"] for s in stats]
    compliance = sum(comp) / len(comp) * 100.0 if comp else 0.0
    left = next((s for s in stats if s["side"] == "left"), None)
    right = next((s for s in stats if s["side"] == "right"), None)
    excluded = {"effort": "no RPE in legacy data", "game": "no maximum game score in legacy data"}
    if left is not None and right is not None:
        L, R = left["muscle_compliance_score"], right["muscle_compliance_score"]
        symmetry = (1.0 - abs(L - R) / (L + R)) * 100.0 if L + R > 0 else 0.0
    else:
        symmetry = 0.0
        excluded["symmetry"] = "left/right pair not available"
    used = [k for k in ("compliance", "symmetry") if k not in excluded]
    total_w = sum(REQUESTED_WEIGHTS[k] for k in used)
    eff = {k: (REQUESTED_WEIGHTS[k] / total_w if k in used else 0.0) for k in REQUESTED_WEIGHTS}
    overall = eff["compliance"] * compliance + eff["symmetry"] * symmetry
    score = (game_metadata or {}).get("score")
    points = int(score) if isinstance(score, str) and score.isdigit() else None
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
        "left": left, "right": right,
    }


def legacy_float_equal(a: Any, b: Any, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-12)
