"""Performance score P_overall = w_c*S_compliance + w_s*S_symmetry + w_e*S_effort + w_g*S_game.

Pure functions, all scores on 0-100. Missing inputs are never scored as perfect:
- RPE or game points missing -> that component is excluded (score None) and the weights of
  the remaining components are renormalised to sum to 1;
- BFR pressure missing -> the safety gate is not evaluated (gate None), compliance is not
  gated, and the exclusion list says so;
- a single side (no left/right pair) -> symmetry is excluded;
- a side whose channel is unusable (flat, disconnected, hum-only, very weak: see
  libs/emg/flags.py) counts as absent, with the reason, never as the patient's 0;
- no usable muscle channel, or nothing measurable at all -> no overall score (None): the
  session is reported, not scored (an RPE alone is not the session's performance).
Renormalisation makes P a weighted mean of the components actually measured, so P can never
exceed what it would be if the missing component had been scored 100 (the old behaviour).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

from .errors import SettingsError
from .settings import BFR_SAFE_RANGE, _check_weights, default_rpe_effort

COMPONENTS = ("compliance", "symmetry", "effort", "game")


def muscle_compliance(completion: float, intensity: float, duration: float, weights: dict[str, float]) -> float:
    """Weighted average of the three rates (each 0-1), result 0-1."""
    return weights["completion"] * completion + weights["intensity"] * intensity + weights["duration"] * duration


def rates(total: int, good_intensity: int, good_duration: int, target: int) -> tuple[float, float, float]:
    """(completion, intensity, duration) rates; intensity/duration are 0 when total is 0."""
    completion = min(total / target, 1.0)
    if total == 0:
        return completion, 0.0, 0.0
    return completion, good_intensity / total, good_duration / total


def effort_score(rpe: int | None, table: dict[int, float] | None = None) -> float | None:
    """Borg CR10 post-session RPE -> 0-100 through the trial's table (default: 4-6 -> 100,
    3/7 -> 80, 2/8 -> 60, 0-1/9-10 -> 20; see settings.default_rpe_effort)."""
    if rpe is None:
        return None
    if not isinstance(rpe, int) or not 0 <= rpe <= 10:
        raise SettingsError(f"RPE must be an integer 0..10, got {rpe!r}.")
    return float((table or default_rpe_effort())[rpe])


def bfr_gate(
    pressure_aop: float | None, low: float = BFR_SAFE_RANGE[0], high: float = BFR_SAFE_RANGE[1]
) -> float | None:
    """1.0 inside [low, high] % AOP (inclusive), 0.0 outside, None when not measured."""
    if pressure_aop is None:
        return None
    return 1.0 if low <= pressure_aop <= high else 0.0


def symmetry_score(left: float, right: float) -> float:
    """(1 - |L-R|/(L+R)) x 100 on compliance values >= 0.

    L+R = 0 (neither side did anything) is defined as 0: symmetry of no effort is not a
    therapeutic success and must not add 25 points to an empty session.
    """
    total = left + right
    if total <= 0:
        return 0.0
    return (1.0 - abs(left - right) / total) * 100.0


def game_score(points: int | None, max_points: int) -> float | None:
    if points is None:
        return None
    if max_points <= 0:
        raise SettingsError(f"game_points_max must be > 0, got {max_points!r}.")
    return min(max(points / max_points, 0.0), 1.0) * 100.0


@dataclass
class PerformanceResult:
    """All performance_scores columns (same names) plus how the score was composed."""

    overall_performance_score: float | None  # None: no component could be measured
    compliance_score: float | None
    symmetry_score: float | None
    effort_score: float | None
    game_score: float | None
    performance_weights: dict[str, float]
    bfr_pressure_aop: float | None
    bfr_compliance_gate: float | None
    rpe_post_session: int | None
    game_points_achieved: int | None
    game_points_maximum: int
    session_duration_minutes: float | None
    left_muscle_completion_rate: float | None = None
    left_muscle_intensity_rate: float | None = None
    left_muscle_duration_rate: float | None = None
    right_muscle_completion_rate: float | None = None
    right_muscle_intensity_rate: float | None = None
    right_muscle_duration_rate: float | None = None
    left_muscle_compliance: float | None = None
    right_muscle_compliance: float | None = None
    components_used: list[str] = field(default_factory=list)
    components_excluded: dict[str, str] = field(default_factory=dict)
    effective_weights: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def combine(
    scores: dict[str, float | None], weights: dict[str, float], reasons: dict[str, str] | None = None
) -> tuple[float | None, list[str], dict[str, str], dict[str, float]]:
    """Weighted mean of the available components with renormalised weights.

    Returns (P, used, excluded-with-reason, effective weights). Components with weight 0
    are reported as used (they are measured) but contribute nothing. P is None when no
    component is measured at all.
    """
    _check_weights("performance_weights", weights, COMPONENTS)
    reasons = dict(reasons or {})
    used = [k for k in COMPONENTS if scores.get(k) is not None]
    excluded = {k: reasons.get(k, "input missing") for k in COMPONENTS if scores.get(k) is None}
    if not used:
        return None, used, excluded, {}
    total_w = sum(weights[k] for k in used)
    if total_w <= 0:
        raise SettingsError(
            "No performance component can be scored: every measured component has weight 0 "
            f"(excluded: {', '.join(f'{k} ({v})' for k, v in excluded.items()) or 'none'})."
        )
    eff = {k: weights[k] / total_w for k in used}
    p = sum(eff[k] * float(cast(float, scores[k])) for k in used)  # used: scores[k] is not None
    return min(max(p, 0.0), 100.0), used, excluded, eff


def performance(
    left: dict[str, float] | None,
    right: dict[str, float] | None,
    *,
    rpe: int | None,
    bfr_pressure_aop: float | None,
    game_points: int | None,
    game_points_max: int,
    weights: dict[str, float],
    bfr_range: tuple[float, float] = BFR_SAFE_RANGE,
    session_duration_minutes: float | None = None,
    unusable_sides: dict[str, str] | None = None,
    rpe_effort: dict[int, float] | None = None,
) -> PerformanceResult:
    """Session score from per-side rates.

    ``left``/``right``: dicts with completion_rate, intensity_rate, duration_rate and
    muscle_compliance_score (0-1), or None when that side is absent. ``unusable_sides``
    says why an absent side is absent (its channel is unusable), for the exclusion reasons.
    """
    reasons: dict[str, str] = {}
    flags: list[str] = []
    unusable = dict(unusable_sides or {})
    sides = [s for s in (left, right) if s is not None]
    gate = bfr_gate(bfr_pressure_aop, *bfr_range)
    for side, why in unusable.items():
        flags.append(f"{side} side not scored: {why}")
    if not sides:
        s_comp = None
        reasons["compliance"] = (
            ("no usable muscle channel: " + "; ".join(unusable.values()))
            if unusable
            else "no muscle channel with a left/right side"
        )
    else:
        mean_c = sum(s["muscle_compliance_score"] for s in sides) / len(sides)
        s_comp = mean_c * (gate if gate is not None else 1.0) * 100.0
        if len(sides) == 1:
            flags.append("compliance uses a single side")
    if gate is None:
        flags.append("BFR pressure missing: safety gate not evaluated, compliance not gated")
    elif gate == 0.0:
        flags.append(
            f"BFR pressure {bfr_pressure_aop:g} % AOP outside [{bfr_range[0]:g}, {bfr_range[1]:g}]: compliance gated to 0"
        )
    if left is not None and right is not None:
        s_sym = symmetry_score(left["muscle_compliance_score"], right["muscle_compliance_score"])
    else:
        s_sym = None
        reasons["symmetry"] = "needs both a left and a right muscle" + (
            " (" + "; ".join(unusable.values()) + ")" if unusable else ""
        )
    s_eff = effort_score(rpe, rpe_effort)
    if s_eff is None:
        reasons["effort"] = "post-session RPE missing"
    s_game = game_score(game_points, game_points_max)
    if s_game is None:
        reasons["game"] = "game points missing"
    scores = {"compliance": s_comp, "symmetry": s_sym, "effort": s_eff, "game": s_game}
    if s_comp is None and unusable:
        # No muscle could be measured: effort or game alone are not the session's performance.
        scores = {k: None for k in scores}
        for k in ("effort", "game"):
            reasons[k] = reasons.get(k) or "not scored without a usable muscle channel"
    p, used, excluded, eff = combine(scores, weights, reasons)

    def side_value(s: dict[str, float] | None, key: str) -> float | None:
        return None if s is None else s[key]

    return PerformanceResult(
        overall_performance_score=p,
        compliance_score=s_comp,
        symmetry_score=s_sym,
        effort_score=s_eff,
        game_score=s_game,
        performance_weights=dict(weights),
        bfr_pressure_aop=bfr_pressure_aop,
        bfr_compliance_gate=gate,
        rpe_post_session=rpe,
        game_points_achieved=game_points,
        game_points_maximum=game_points_max,
        session_duration_minutes=session_duration_minutes,
        left_muscle_completion_rate=side_value(left, "completion_rate"),
        left_muscle_intensity_rate=side_value(left, "intensity_rate"),
        left_muscle_duration_rate=side_value(left, "duration_rate"),
        right_muscle_completion_rate=side_value(right, "completion_rate"),
        right_muscle_intensity_rate=side_value(right, "intensity_rate"),
        right_muscle_duration_rate=side_value(right, "duration_rate"),
        left_muscle_compliance=side_value(left, "muscle_compliance_score"),
        right_muscle_compliance=side_value(right, "muscle_compliance_score"),
        components_used=used,
        components_excluded=excluded,
        effective_weights=eff,
        flags=flags,
    )
