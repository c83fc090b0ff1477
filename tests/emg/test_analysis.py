from __future__ import annotations

import json

import numpy as np
import pytest

from libs.emg import (
    AnalysisSettings,
    ProcessingParams,
    SettingsError,
    analyze,
    analyze_file,
    envelope,
    highpass,
    read_c3d,
)
from libs.emg.pipeline import chain_1d, design_filters
from libs.emg.synthetic import ChannelSpec, ContractionSpec, SyntheticSpec, regular_contractions

from .conftest import SAMPLE_FILES, needs_samples, standard_spec

# Per edge: the envelope smoothing (10 Hz low-pass + 50 ms RMS) spreads a 20 ms ramp, and edges
# are placed where the envelope falls to 2.5 x the noise floor: ~40-70 ms early/late.
TOL_S = 0.12


@pytest.mark.parametrize("rate", [990.0, 2000.0])
def test_known_contractions(write, rate):
    path, truth = write(standard_spec(rate))
    res = analyze_file(path)
    assert res.recording["rate_hz"] == rate and res.recording["n_samples"] == truth["n_samples"]
    left, right = res.channel("CH1"), res.channel("CH2")
    assert left.total_contractions == 12
    assert right.total_contractions == 10  # the two dropouts are not counted
    for ch, spec in ((left, truth["channels"][0]), (right, truth["channels"][1])):
        for c, (start, dur, _) in zip(ch.contractions, spec["contractions"]):
            assert abs(c.start_s - start) < TOL_S and abs(c.end_s - (start + dur)) < TOL_S
    assert left.good_contractions_duration == 12 and right.good_contractions_duration == 0
    assert left.completion_rate == 1.0 and right.completion_rate == pytest.approx(10 / 12)
    # The fills are bridged before filtering, so they make no burst at all; the spans are flagged.
    assert right.artifacts_detected == 2 and right.detection["rejected_artifact"] == 0
    assert "dropout" in right.signal_flags and right.usable
    assert left.artifacts_detected == 0
    assert left.mvc_calculation_method == "backend_95percentile"
    assert left.mvc_confidence_score > 0.9


def test_dropouts_never_overlap_contractions(write):
    path, _truth = write(standard_spec())
    res = analyze_file(path)
    ch = res.channel("CH2")
    for a in ch.quality.artifacts:
        for c in ch.contractions:
            assert c.end_s <= a.start_s or c.start_s >= a.end_s


def test_noise_only_channel_gives_no_contractions(write):
    spec = SyntheticSpec(
        duration_s=60.0,
        channels=[ChannelSpec(contractions=regular_contractions(12, 2.5, 4.5)), ChannelSpec(noise_sd_v=13e-6)],
    )
    path, _ = write(spec)
    res = analyze_file(path)
    noise = res.channel("CH2")
    assert noise.total_contractions == 0
    assert noise.muscle_compliance_score == 0.0
    assert noise.signal_quality_score < 0.2
    assert noise.mvc_confidence_score == 0.0
    assert res.channel("CH1").signal_quality_score > 0.9
    # A channel with no activity above its noise floor is an electrode problem, not the
    # patient's 0: flagged, excluded from symmetry and the overall score, and said so.
    assert noise.signal_flags == ["no_usable_emg"] and not noise.usable
    assert res.channel("CH1").usable and res.channel("CH1").signal_flags == []
    perf = res.performance
    assert perf.symmetry_score is None and "CH2 (right)" in perf.components_excluded["symmetry"]
    assert perf.compliance_score == pytest.approx(res.channel("CH1").muscle_compliance_score * 100)
    assert any("check the CH2 (right) electrode" in w for w in res.warnings)


def test_clipping_detected(write):
    cons = regular_contractions(6, 2.0, 5.0, amplitude_v=300e-6)
    cons[2] = ContractionSpec(cons[2].start_s, 2.0, 6e-3)  # saturates the ADC
    spec = SyntheticSpec(duration_s=40.0, channels=[ChannelSpec(contractions=cons, clip_v=5.49e-3), ChannelSpec()])
    path, _ = write(spec)
    ch = analyze_file(path).channel("CH1")
    kinds = {a.kind for a in ch.quality.artifacts}
    assert kinds == {"clipping"}
    assert ch.quality.clipped_samples > 50
    assert ch.total_contractions == 5  # the clipped one is not measurable
    assert ch.signal_quality_score < 1.0


def test_short_gaps_are_merged_and_long_kept(write):
    cons = [
        ContractionSpec(2.0, 1.0),
        ContractionSpec(3.1, 1.0),  # 100 ms gap -> one contraction
        ContractionSpec(8.0, 1.0),
        ContractionSpec(10.0, 1.0),
    ]  # 1 s gap -> two
    path, _ = write(SyntheticSpec(duration_s=14.0, channels=[ChannelSpec(contractions=cons), ChannelSpec()]))
    ch = analyze_file(path).channel("CH1")
    assert ch.total_contractions == 3
    assert abs(ch.contractions[0].duration_s - 2.1) < 2 * TOL_S
    assert ch.detection["merged_gaps"] >= 1


def test_twelve_minute_recording(write):
    spec = SyntheticSpec(
        rate=990.0,
        duration_s=720.0,
        channels=[
            ChannelSpec(contractions=regular_contractions(24, 3.0, 29.0)),
            ChannelSpec(contractions=regular_contractions(12, 2.0, 55.0)),
        ],
    )
    path, _ = write(spec)
    res = analyze_file(path)
    assert res.recording["duration_s"] >= 720.0
    assert res.channel("CH1").total_contractions == 24
    assert res.channel("CH2").total_contractions == 12
    assert res.performance.session_duration_minutes == pytest.approx(12.0, abs=0.01)


def test_user_mvc_priority_and_counts_unchanged(write):
    path, _ = write(standard_spec())
    rec = read_c3d(path)
    base = analyze(rec)
    user = analyze(rec, AnalysisSettings(mvc_user={"left": 1e-3}, mvc_session=5e-5))
    l_, r_ = user.channel("CH1"), user.channel("CH2")
    assert l_.mvc_rms_value == 1e-3 and l_.mvc_source == "user_muscle" and l_.mvc_calculation_method == "user_defined"
    assert r_.mvc_rms_value == 5e-5 and r_.mvc_source == "session"
    assert l_.total_contractions == base.channel("CH1").total_contractions  # MVC never changes detection
    assert l_.good_contractions_intensity == 0  # 300 uV peaks < 0.75 mV
    assert r_.good_contractions_intensity == r_.total_contractions


def test_duration_threshold_override(write):
    path, _ = write(standard_spec())
    res = analyze_file(path, AnalysisSettings(duration_threshold={"CH2": 0.8}))
    assert res.channel("CH2").good_contractions_duration == 10
    assert res.channel("CH2").duration_threshold_seconds == 0.8
    assert res.channel("CH1").duration_threshold_seconds == 2.0


def test_result_is_json_and_has_all_columns(write):
    path, _ = write(standard_spec())
    res = analyze_file(path, AnalysisSettings(rpe=5, bfr_pressure_aop=50.0, game_points=600))
    d = json.loads(json.dumps(res.to_dict()))
    emg_cols = [
        "mvc_peak_value",
        "mvc_rms_value",
        "mvc_confidence_score",
        "mvc_calculation_method",
        "total_contractions",
        "good_contractions_intensity",
        "good_contractions_duration",
        "good_contractions_both",
        "completion_rate",
        "intensity_rate",
        "duration_rate",
        "muscle_compliance_score",
        "signal_quality_score",
        "noise_level_db",
        "artifacts_detected",
        "processing_confidence",
        "processing_pipeline",
        "processing_version",
        "processing_time_ms",
        "mvc_threshold_percentage",
        "duration_threshold_seconds",
        "channel_name",
    ]
    for ch in d["channels"]:
        assert set(emg_cols) <= set(ch)
        assert 0 <= ch["signal_quality_score"] <= 1 and 0 <= ch["processing_confidence"] <= 1
        assert ch["processing_pipeline"] == "20Hz->Rectify->10Hz->RMS"
    perf_cols = [
        "overall_performance_score",
        "compliance_score",
        "symmetry_score",
        "effort_score",
        "game_score",
        "performance_weights",
        "bfr_pressure_aop",
        "bfr_compliance_gate",
        "rpe_post_session",
        "game_points_achieved",
        "game_points_maximum",
        "session_duration_minutes",
        "left_muscle_completion_rate",
        "left_muscle_intensity_rate",
        "left_muscle_duration_rate",
        "right_muscle_completion_rate",
        "right_muscle_intensity_rate",
        "right_muscle_duration_rate",
    ]
    assert set(perf_cols) <= set(d["performance"])
    assert d["performance"]["components_used"] == ["compliance", "symmetry", "effort", "game"]
    assert d["performance"]["game_score"] == 60.0 and d["performance"]["effort_score"] == 100.0


def test_public_functions_match_analysis(write):
    path, _ = write(standard_spec())
    rec = read_c3d(path)
    p = ProcessingParams()
    f, e = chain_1d(rec.analogs[0], rec.rate, p)
    assert np.array_equal(highpass(rec.analogs[0], rec.rate), f)
    assert np.array_equal(envelope(rec.analogs[:2], rec.rate)[0], e)
    assert np.array_equal(highpass(rec.analogs[:2], rec.rate)[1], chain_1d(rec.analogs[1], rec.rate, p)[0])
    assert (e >= 0).all()


def test_filters_follow_rate_and_check_nyquist():
    hp990, _ = design_filters(990.0, ProcessingParams())
    hp2000, _ = design_filters(2000.0, ProcessingParams())
    assert not np.allclose(hp990, hp2000)
    with pytest.raises(SettingsError, match="Nyquist"):
        design_filters(30.0, ProcessingParams())


def test_subnormal_guard_keeps_results_and_speed():
    rate = 990.0
    x = np.zeros(200_000)
    x[1000:1500] = np.random.default_rng(0).normal(0, 1e-4, 500)  # one burst, then silence
    f, e = chain_1d(x, rate, ProcessingParams())
    assert np.isfinite(e).all() and e[1200] > 1e-5
    # Silence stays silent: what is left is the moving mean's running-sum residue (~1e-12 V
    # with scipy 1.17, 0 with older ones), far below a GHOSTLY ADC step (~0.1 uV).
    assert np.abs(e[50_000:]).max() < 1e-9
    tiny = np.abs(f[(f != 0)])
    assert (tiny > 1e-300).all()  # nothing subnormal reaches the envelope


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_real_samples_plausible(path):
    res = analyze_file(path)
    assert len(res.channels) == 2
    for ch in res.channels:
        # GHOSTLY activations last 0.1-0.9 s: a few, not hundreds, and never 100 % intensity
        assert 5 <= ch.total_contractions <= 60
        assert ch.intensity_rate < 1.0
        assert ch.mvc_rms_value > ch.detection_threshold_v
        assert 10 < ch.noise_level_db < 30  # ~3-30 uV rest noise
        for a in ch.quality.artifacts:
            for c in ch.contractions:
                assert c.end_s <= a.start_s or c.start_s >= a.end_s
        assert 20 < ch.descriptors.median_frequency_hz < 200
        print(
            f"{path.name} {ch.channel_name}: {ch.total_contractions} contractions, MVC {ch.mvc_rms_value * 1e6:.0f} uV "
            f"(conf {ch.mvc_confidence_score:.2f}), threshold {ch.detection_threshold_v * 1e6:.0f} uV, "
            f"artifacts {ch.artifacts_detected}, MDF {ch.descriptors.median_frequency_hz:.0f} Hz"
        )
    assert res.performance.effort_score is None and "effort" in res.performance.components_excluded


@needs_samples
def test_largest_sample_dropouts_masked():
    from .conftest import LARGEST

    if not LARGEST.exists():
        pytest.skip("largest sample absent")
    ch = analyze_file(LARGEST).channel("CH1")
    dropouts = [a for a in ch.quality.artifacts if a.kind == "dropout"]
    assert len(dropouts) == 6 and all(a.n_samples == 270 for a in dropouts)
    assert all(abs(a.value - (-0.00550008)) < 1e-7 for a in dropouts)
    # Bridged fills make no burst of their own; a contraction next to one keeps its uncorrupted
    # part, and one whose every above-threshold sample is masked is counted as lost (and said so).
    assert ch.artifacts_detected == 6 and ch.detection["rejected_artifact"] <= 1
    if ch.detection["rejected_artifact"]:
        assert any("lost to artefacts" in w for w in ch.warnings)
    assert ch.signal_flags[:1] == ["dropout"]
    margin = 0.1  # artifact_margin_ms
    for a in dropouts:
        for c in ch.contractions:
            assert c.end_s <= a.start_s - margin + 1e-9 or c.start_s >= a.end_s + margin - 1e-9
