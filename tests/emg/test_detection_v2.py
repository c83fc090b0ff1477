"""Analysis 2.0.0: each failure of 1.0.0 on real recordings, reproduced with known truth.

The validation suite (test_detection_validation.py) measures event F1 and onset error over
realistic recordings; these tests pin the individual mechanisms: hysteresis, the onset
threshold terms, artefacts costing only what they touch, saturation tolerance, mains, and
channel usability.
"""

from __future__ import annotations

import numpy as np
import pytest

from libs.emg import AnalysisSettings, ProcessingParams, analyze_file, mains
from libs.emg import contractions as cx
from libs.emg import quality as qx
from libs.emg.synthetic import ChannelSpec, ContractionSpec, SyntheticSpec, regular_contractions

from .conftest import SAMPLE_FILES, needs_samples

RATE = 990.0


def _envelope(n_s: float, noise_v: float = 4e-6) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.abs(rng.normal(noise_v, noise_v * 0.2, int(n_s * RATE)))


def _burst(env: np.ndarray, start_s: float, dur_s: float, level_v: float) -> None:
    s, e = int(start_s * RATE), int((start_s + dur_s) * RATE)
    env[s:e] = np.maximum(env[s:e], level_v * np.hanning(e - s) ** 0.3)


def test_noise_crossings_do_not_chain_two_bursts():
    """Two 0.4 s bursts with 1.2 s of 30 uV noise crossings (every 150 ms) between them: 1.0.0
    closed the short gaps first (one 2.0 s 'good duration' contraction); hysteresis keeps two."""
    env = _envelope(10.0)
    _burst(env, 3.0, 0.4, 300e-6)
    _burst(env, 4.6, 0.4, 300e-6)
    for t in np.arange(3.5, 4.55, 0.15):
        _burst(env, t, 0.03, 30e-6)
    det = cx.detect(env, np.zeros(env.size, dtype=bool), RATE, ProcessingParams())
    assert [(round(c.start_s, 1), round(c.end_s, 1)) for c in det.contractions] == [(3.0, 3.4), (4.6, 5.0)]
    assert all(c.duration_s < 0.5 for c in det.contractions)


def test_onset_threshold_follows_strong_activity_not_only_the_noise_floor():
    """Background bursts at 20 % of the task level are not contractions; the rule that set the
    threshold is reported with every candidate."""
    env = _envelope(40.0)
    for i in range(8):
        _burst(env, 2.0 + 4 * i, 0.8, 300e-6)  # task
        _burst(env, 4.0 + 4 * i, 0.3, 60e-6)  # background, 20 %
    det = cx.detect(env, np.zeros(env.size, dtype=bool), RATE, ProcessingParams())
    assert len(det.contractions) == 8
    assert det.threshold_rule == "activity"
    assert det.threshold_v == pytest.approx(0.3 * det.strong_level_v)
    assert det.strong_level_v == pytest.approx(300e-6, rel=0.02)
    assert set(det.threshold_terms) == {"noise", "activity", "floor"}


def test_calibrated_mvc_raises_the_onset_threshold():
    """Without task contractions the strong level is the background itself; the patient's
    calibrated MVC (0.2 x MVC) still keeps it from counting."""
    env = _envelope(30.0)
    for i in range(6):
        _burst(env, 2.0 + 4 * i, 0.4, 50e-6)
    mask = np.zeros(env.size, dtype=bool)
    assert len(cx.detect(env, mask, RATE, ProcessingParams()).contractions) == 6
    det = cx.detect(env, mask, RATE, ProcessingParams(), calibrated_mvc=400e-6)
    assert det.contractions == [] and det.threshold_rule == "mvc"
    assert det.threshold_v == pytest.approx(80e-6)


def test_short_clipping_inside_a_contraction_costs_only_what_it_touches(write):
    """A 10-sample saturated span inside a strong 3 s contraction: 1.0.0 dropped the whole
    contraction; now it is kept (flagged) with only the masked seconds cut, and said so."""
    cons = regular_contractions(5, 3.0, 6.0, amplitude_v=300e-6)
    spec = SyntheticSpec(duration_s=36.0, channels=[ChannelSpec(contractions=cons), ChannelSpec(contractions=cons)])
    path, _truth = write(spec)
    # Saturate 10 samples in the middle of the third contraction of CH1 (rail +/- jitter).
    import ezc3d

    c3d = ezc3d.c3d(str(path))
    s = int((cons[2].start_s + 1.5) * RATE)
    rng = np.random.default_rng(5)
    c3d["data"]["analogs"][0, 0, s : s + 10] = 5.49e-3 + rng.normal(0, 3e-7, 10)
    c3d.write(str(path))
    ch = analyze_file(path).channel("CH1")
    assert ch.total_contractions == 5
    assert "saturation" in ch.signal_flags and "partially_masked" in ch.signal_flags
    hit = [c for c in ch.contractions if c.partially_masked]
    assert len(hit) == 1 and abs(hit[0].start_s - cons[2].start_s) < 0.12 and hit[0].duration_s > 2.8
    margin = ProcessingParams().artifact_margin_ms / 1000
    assert hit[0].masked_s == pytest.approx(10 / RATE + 2 * margin, abs=0.01)
    assert hit[0].peak_v < 600e-6  # from uncorrupted samples only, not the rail
    assert any("1 contraction(s) overlapped artefacts" in w and "s cut" in w for w in ch.warnings)


def test_saturation_with_jittering_rails_is_found_and_a_clean_peak_is_not():
    from scipy import signal

    rng = np.random.default_rng(11)
    band = signal.butter(4, [20.0, 150.0], btype="bandpass", fs=RATE, output="sos")
    x = signal.sosfilt(band, rng.normal(0, 1.0, 20_000))
    x *= 1e-3 / x.std()  # band-limited like sEMG: a saturated excursion spans several samples
    clean_spans, _ = qx.find_artifacts(x, RATE, ProcessingParams())
    assert clean_spans == []  # a clean signal reaches its extremes once
    rail = 2.5e-3
    sat = np.clip(x, -rail, rail)
    at = np.abs(sat) >= rail
    sat[at] += rng.normal(0, 0.5e-6, at.sum())  # the last bits jitter
    assert np.count_nonzero(sat == sat.max()) < 5  # exact equality finds (next to) nothing
    spans, flag = qx.find_artifacts(sat, RATE, ProcessingParams())
    assert spans and {a.kind for a in spans} == {"clipping"}
    assert flag[at].all()


def test_mains_detected_in_rest_and_notched():
    """50 Hz hum (15 uV RMS, 3rd harmonic) on 5 uV noise with contractions: found in the rest
    periods at the right frequency; the notched envelope at rest is back near the noise level."""
    spec = SyntheticSpec(
        duration_s=40.0,
        channels=[
            ChannelSpec(contractions=regular_contractions(6, 1.0, 6.0), hum_hz=50.0, hum_rms_v=15e-6),
            ChannelSpec(contractions=regular_contractions(6, 1.0, 6.0)),
        ],
    )
    import tempfile
    from pathlib import Path

    from libs.emg.synthetic import write_synthetic_c3d

    path = Path(tempfile.mkdtemp()) / "hum.c3d"
    write_synthetic_c3d(path, spec)
    res = analyze_file(path)
    hum, clean = res.channel("CH1"), res.channel("CH2")
    m = hum.detection["mains"]
    assert m["present"] and m["family_hz"] == 50.0 and abs(m["frequency_hz"] - 50.0) < 0.1 and 1 in m["harmonics"]
    assert m["rest_share"] > 0.5
    assert hum.signal_flags == ["mains_interference"] and clean.signal_flags == []
    assert not clean.detection["mains"]["present"]
    assert hum.total_contractions == clean.total_contractions == 6
    assert hum.detection["baseline_v"] < 2 * clean.detection["baseline_v"]  # not inflated 2-3x
    assert any("mains interference at 50.0" in w or "mains interference at 49.9" in w for w in hum.warnings)


def test_notch_is_zero_phase_and_narrow():
    sos = mains.notch_sos(RATE, (50.0, 150.0), 2.0)
    from scipy import signal

    w, h = signal.sosfreqz(sos, worN=8192, fs=RATE)
    gain = np.abs(h) ** 2  # forward + backward
    assert gain[np.argmin(np.abs(w - 50.0))] < 1e-3 and gain[np.argmin(np.abs(w - 150.0))] < 1e-3
    assert gain[np.argmin(np.abs(w - 55.0))] > 0.8 and gain[np.argmin(np.abs(w - 100.0))] > 0.99


def test_dead_channel_is_flagged_and_excluded_not_scored_zero(write):
    spec = SyntheticSpec(
        duration_s=40.0,
        channels=[ChannelSpec(contractions=regular_contractions(10, 1.0, 3.5)), ChannelSpec(noise_sd_v=0.0)],
    )
    path, _ = write(spec)
    res = analyze_file(path, AnalysisSettings(rpe=5))
    dead = res.channel("CH2")
    assert dead.signal_flags[-1] == "no_usable_emg" and not dead.usable
    perf = res.performance
    assert perf.symmetry_score is None and perf.right_muscle_compliance is None
    # P = compliance (left only) and effort, weights renormalised as for a missing RPE.
    w = perf.effective_weights
    assert set(w) == {"compliance", "effort"} and sum(w.values()) == pytest.approx(1.0)
    assert perf.overall_performance_score == pytest.approx(w["compliance"] * perf.compliance_score + w["effort"] * 100)
    assert any("check the CH2 (right) electrode" in x for x in res.warnings)


def test_nothing_measurable_is_not_scored(write):
    spec = SyntheticSpec(duration_s=30.0, channels=[ChannelSpec(noise_sd_v=13e-6), ChannelSpec(noise_sd_v=13e-6)])
    path, _ = write(spec)
    res = analyze_file(path)
    assert [c.usable for c in res.channels] == [False, False]
    assert res.performance.overall_performance_score is None
    assert set(res.performance.components_excluded) == {"compliance", "symmetry", "effort", "game"}
    assert any(w.startswith("Session not scored") for w in res.warnings)


@needs_samples
def test_real_samples_flags():
    """What the real samples contain: the 2025 file has mains at ~49.5 Hz in its rests (its
    clock is not exactly 990 Hz), the 2023 files have none; the largest has dropouts on CH1."""
    flags = {(p.name, c.channel_name): c for p in SAMPLE_FILES for c in analyze_file(p).channels}
    for (name, ch), c in flags.items():
        assert c.usable, (name, ch)
        if name.startswith("Ghostly_Emg_2025"):
            assert "mains_interference" in c.signal_flags
            assert 49.3 < c.detection["mains"]["frequency_hz"] < 49.7
        else:
            assert "mains_interference" not in c.signal_flags
        assert "saturation" not in c.signal_flags
    largest = flags.get(("Ghostly_Emg_20230321_17-50-17-0881.c3d", "CH1"))
    if largest is not None:
        assert "dropout" in largest.signal_flags


def test_contraction_spec_helpers_still_exact():
    # The synthetic generator's default ramp stays 20 ms (the old tests' truth).
    assert ContractionSpec(0.0, 1.0).ramp_s == pytest.approx(0.02)


# --------------------------------------------------------------------------- review findings


def _noise(n: int, sd: float = 3e-6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, sd, n)


def _emg(x: np.ndarray, s: float, e: float, amp: float = 300e-6, seed: int = 1, ramp: float = 0.05) -> np.ndarray:
    from scipy import signal

    rng = np.random.default_rng(seed)
    i0, i1 = int(s * RATE), int(e * RATE)
    b, a = signal.butter(4, [20, 450], btype="band", fs=RATE)
    z = signal.lfilter(b, a, rng.normal(0, 1, i1 - i0))
    z /= z.std()
    r = int(ramp * RATE)
    w = np.ones(i1 - i0)
    w[:r], w[-r:] = np.linspace(0, 1, r), np.linspace(1, 0, r)
    x[i0:i1] += amp * z * w
    return x


def _analyze(rows, settings=None):
    from libs.emg import analyze
    from libs.emg.c3d_reader import GameMetadata, Recording

    rows = np.atleast_2d(np.asarray(rows, float))
    rec = Recording(RATE, [f"CH{i + 1} Raw" for i in range(rows.shape[0])], rows, ["V"] * rows.shape[0], GameMetadata())
    return analyze(rec, settings or AnalysisSettings())


def _twelve(n: int, seed: int = 0) -> np.ndarray:
    x = _noise(n, seed=seed)
    for k in range(12):
        x = _emg(x, 2 + 4.5 * k, 4.5 + 4.5 * k, seed=10 + k + seed)
    return x


def test_a_dc_offset_is_not_saturation():
    x = _twelve(int(60 * RATE))
    for offset in (2e-3, -2e-3):
        ch = _analyze([x + offset, x]).channel("CH1")
        assert "saturation" not in ch.signal_flags and ch.usable and ch.total_contractions == 12


def test_a_saturated_push_does_not_set_the_mvc():
    n = int(60 * RATE)
    clean, pushed = _twelve(n), _twelve(n)
    i0, i1 = int(2.5 * RATE), int(4.0 * RATE)
    push = _emg(np.zeros(n), 2.5, 4.0, amp=8e-3, seed=99)[i0:i1]
    pushed[i0:i1] = np.clip(push, -5.49e-3, 5.49e-3) + np.random.default_rng(3).normal(0, 5e-7, i1 - i0)
    ref, sat = _analyze([clean, clean]).channel("CH1"), _analyze([pushed, clean]).channel("CH1")
    assert "saturation" in sat.signal_flags
    assert sat.mvc_rms_value == pytest.approx(ref.mvc_rms_value, rel=0.15)
    assert sat.good_contractions_intensity >= ref.good_contractions_intensity - 1
    assert sat.descriptors.contraction_rms_v == pytest.approx(ref.descriptors.contraction_rms_v, rel=0.15)


def test_a_contraction_hidden_by_an_artefact_is_counted_as_lost():
    n = int(30 * RATE)
    x = _noise(n)
    for s in (3.0, 13.0, 23.0):
        x = _emg(x, s, s + 1.5, seed=int(s))
    # The middle contraction saturates from start to end.
    i0, i1 = int(12.9 * RATE), int(14.6 * RATE)
    x[i0:i1] = np.sign(x[i0:i1]) * 5.49e-3 + np.random.default_rng(2).normal(0, 5e-7, i1 - i0)
    ch = _analyze([x, x]).channel("CH1")
    assert ch.total_contractions == 2 and ch.detection["rejected_artifact"] == 1
    assert "partially_masked" in ch.signal_flags
    assert any("1 contraction(s)" in w and "lost to artefacts" in w for w in ch.warnings)


def test_a_long_dropout_does_not_join_two_contractions():
    from libs.emg.synthetic import DROPOUT_VALUE

    n = int(20 * RATE)
    x = _noise(n)
    x = _emg(x, 3.0, 4.2, seed=1)
    x = _emg(x, 7.0, 8.2, seed=2)
    x[int(4.2 * RATE) : int(7.0 * RATE)] = DROPOUT_VALUE
    ch = _analyze([x, x], AnalysisSettings(duration_threshold_s=2.0)).channel("CH1")
    assert ch.total_contractions == 2 and ch.good_contractions_duration == 0


def test_masked_ends_are_counted_and_do_not_make_a_good_duration():
    """An artefact over the first 0.3 s of a 2.2 s contraction: kept, flagged, the masked time
    is reported and does not count towards the 2 s duration criterion."""
    n = int(20 * RATE)
    x = _noise(n)
    x = _emg(x, 5.0, 7.2, seed=4)
    s = int(5.0 * RATE)
    x[s : s + 300] = np.sign(x[s : s + 300] + 1e-9) * 5.49e-3
    ch = _analyze([x, _emg(_noise(n), 5.0, 7.2, seed=4)]).channel("CH1")
    [c] = ch.contractions
    assert c.partially_masked and c.masked_s >= 0.3 and not c.meets_duration


def test_a_far_too_high_calibrated_mvc_is_reported():
    x = _twelve(int(60 * RATE))
    ch = _analyze([x, x], AnalysisSettings(mvc_user={"left": 3e-3})).channel("CH1")
    assert ch.total_contractions == 0 and ch.mvc_confidence_score == 0.5
    assert any("check the calibration" in w for w in ch.warnings)


def test_a_resting_leg_on_a_connected_electrode_is_scored():
    """A quiet, connected electrode (3 uV noise) on a leg that did nothing is the patient's 0:
    usable, scored, with a warning; only positive evidence (hum, high noise, flat) excludes."""
    n = int(60 * RATE)
    res = _analyze([_twelve(n), _noise(n, seed=5)])
    rest = res.channel("CH2")
    assert rest.usable and rest.signal_flags == [] and rest.total_contractions == 0
    assert res.performance.symmetry_score == 0.0
    assert any("no muscle activity detected on the CH2 (right)" in w for w in res.warnings)


def test_rpe_alone_is_not_a_session_score():
    n = int(30 * RATE)
    res = _analyze([_noise(n, 13e-6, 1), _noise(n, 13e-6, 2)], AnalysisSettings(rpe=5))
    assert res.performance.overall_performance_score is None
    assert "effort" in res.performance.components_excluded


def test_hundreds_of_background_bursts_do_not_lower_the_strong_level():
    peaks = np.r_[np.full(300, 60e-6), np.full(12, 300e-6)]
    assert cx.strong_level(peaks, 0.1) == pytest.approx(300e-6)


def test_processing_params_codec_round_trips_and_reads_old_rows():
    """One codec (libs.emg.settings) for what ingest stores and jit_signal re-runs the chain with."""
    from libs.emg.settings import PARAMS_KEY, SettingsError, decode_params, encode_params

    p = ProcessingParams(activity_fraction=0.35, notch_bandwidth_hz=1.5)
    stored = encode_params(p)
    assert stored["layout"] == 1 and decode_params(stored) == p
    import json

    assert decode_params(json.dumps(stored)) == p
    old = {"highpass_hz": 20.0, "lowpass_hz": 10.0, "threshold_baseline_factor": 5.0, "a_removed_field": 1}
    assert decode_params(old) == ProcessingParams()  # rows of 1.0.0: new fields take defaults
    assert decode_params(None) == ProcessingParams() and PARAMS_KEY == "processing_params"
    with pytest.raises(SettingsError):
        decode_params({"activity_fraction": 3.0})
