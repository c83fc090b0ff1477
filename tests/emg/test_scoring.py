from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from libs.emg import AnalysisSettings, SettingsError
from libs.emg.scoring import bfr_gate, combine, effort_score, performance, rates, symmetry_score

unit = st.floats(0.0, 1.0, allow_nan=False)
score = st.floats(0.0, 100.0, allow_nan=False)


def side(c):
    return {"completion_rate": c, "intensity_rate": c, "duration_rate": c, "muscle_compliance_score": c}


@st.composite
def weights(draw):
    raw = [draw(st.floats(0.01, 1.0)) for _ in range(4)]
    total = sum(raw)
    w = dict(zip(("compliance", "symmetry", "effort", "game"), (r / total for r in raw)))
    w["game"] = 1.0 - w["compliance"] - w["symmetry"] - w["effort"]
    return w


@given(
    unit,
    unit,
    st.none() | st.integers(0, 10),
    st.none() | st.floats(0, 100),
    st.none() | st.integers(0, 5000),
    weights(),
)
def test_scores_bounded(lc, rc, rpe, bfr, pts, w):
    r = performance(side(lc), side(rc), rpe=rpe, bfr_pressure_aop=bfr, game_points=pts, game_points_max=1000, weights=w)
    assert 0.0 <= r.overall_performance_score <= 100.0
    for v in (r.compliance_score, r.symmetry_score, r.effort_score, r.game_score):
        assert v is None or 0.0 <= v <= 100.0
    assert abs(sum(r.effective_weights.values()) - 1.0) < 1e-9
    assert set(r.components_used) | set(r.components_excluded) == {"compliance", "symmetry", "effort", "game"}


@given(st.dictionaries(st.sampled_from(["compliance", "symmetry", "effort", "game"]), score, min_size=1), weights())
def test_renormalisation_is_weighted_mean(present, w):
    scores = {k: present.get(k) for k in ("compliance", "symmetry", "effort", "game")}
    p, used, _excluded, _eff = combine(scores, w)
    assert set(used) == set(present)
    expected = sum(w[k] * present[k] for k in present) / sum(w[k] for k in present)
    assert p == pytest.approx(expected)
    assert min(present.values()) - 1e-9 <= p <= max(present.values()) + 1e-9


@given(unit, unit, st.integers(0, 10), st.integers(0, 1000), weights())
def test_missing_component_never_beats_a_perfect_one(lc, rc, rpe, pts, w):
    kw = dict(bfr_pressure_aop=50.0, game_points_max=1000, weights=w)
    no_rpe = performance(side(lc), side(rc), rpe=None, game_points=pts, **kw)
    perfect_rpe = performance(side(lc), side(rc), rpe=5, game_points=pts, **kw)
    assert no_rpe.effort_score is None and "effort" in no_rpe.components_excluded
    assert no_rpe.overall_performance_score <= perfect_rpe.overall_performance_score + 1e-9
    no_game = performance(side(lc), side(rc), rpe=rpe, game_points=None, **kw)
    full_game = performance(side(lc), side(rc), rpe=rpe, game_points=1000, **kw)
    assert no_game.overall_performance_score <= full_game.overall_performance_score + 1e-9


@hsettings(max_examples=50)
@given(st.lists(st.floats(0, 1), min_size=4, max_size=4).filter(lambda w: abs(sum(w) - 1) > 1e-5))
def test_weights_not_summing_to_one_rejected(ws):
    w = dict(zip(("compliance", "symmetry", "effort", "game"), ws))
    with pytest.raises(SettingsError, match="sum to 1"):
        AnalysisSettings(performance_weights=w)
    with pytest.raises(SettingsError):
        combine({"compliance": 50.0}, w)


def test_effort_table():
    assert [effort_score(r) for r in range(11)] == [20, 20, 60, 80, 100, 100, 100, 80, 60, 20, 20]
    assert effort_score(None) is None
    with pytest.raises(SettingsError):
        effort_score(11)


def test_bfr_gate_inclusive_and_missing():
    assert bfr_gate(45.0) == 1.0 and bfr_gate(55.0) == 1.0 and bfr_gate(44.99) == 0.0 and bfr_gate(55.01) == 0.0
    assert bfr_gate(None) is None
    w = AnalysisSettings().performance_weights
    r = performance(
        side(0.8), side(0.8), rpe=5, bfr_pressure_aop=None, game_points=500, game_points_max=1000, weights=w
    )
    assert r.bfr_compliance_gate is None and r.compliance_score == pytest.approx(80.0)
    assert any("BFR" in f for f in r.flags)
    gated = performance(
        side(0.8), side(0.8), rpe=5, bfr_pressure_aop=70.0, game_points=500, game_points_max=1000, weights=w
    )
    assert gated.compliance_score == 0.0 and gated.bfr_compliance_gate == 0.0


def test_symmetry_and_rates():
    assert symmetry_score(0.5, 0.5) == 100.0
    assert symmetry_score(1.0, 0.0) == 0.0
    assert symmetry_score(0.0, 0.0) == 0.0  # no effort on either side is not rewarded
    assert symmetry_score(0.6, 0.2) == pytest.approx(50.0)
    assert rates(0, 0, 0, 12) == (0.0, 0.0, 0.0)
    assert rates(24, 6, 12, 12) == (1.0, 0.25, 0.5)


def test_worked_example():
    w = {"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15}
    r = performance(
        side(0.9), side(0.7), rpe=7, bfr_pressure_aop=50.0, game_points=1500, game_points_max=1000, weights=w
    )
    # compliance 80, symmetry (1 - 0.2/1.6) * 100 = 87.5, effort 80, game clipped to 100
    assert r.compliance_score == pytest.approx(80.0) and r.symmetry_score == pytest.approx(87.5)
    assert r.game_score == 100.0
    assert r.overall_performance_score == pytest.approx(0.4 * 80 + 0.25 * 87.5 + 0.2 * 80 + 0.15 * 100)


def test_settings_validation():
    with pytest.raises(SettingsError):
        AnalysisSettings(mvc_threshold_percentage=1.5)
    with pytest.raises(SettingsError):
        AnalysisSettings(rpe=12)
    with pytest.raises(SettingsError):
        AnalysisSettings(compliance_weights={"completion": 0.5, "intensity": 0.5, "duration": 0.5})
    with pytest.raises(SettingsError):
        AnalysisSettings(target_contractions=0)
