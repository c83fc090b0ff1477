"""Detection validation: the synthetic suite against its targets, event matching, the
generator's truth, and the device-agreement helpers.

The per-case tests assert the validation targets (event F1 >= 0.95, median |onset error|
<= 50 ms, flag/usable expectations). They are meant to fail while the detection misses a
target: they are the measuring instrument, not a description of the current behaviour.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import signal

from libs.emg import analyze_file
from libs.emg import validation as v
from libs.emg.synthetic import (
    DROPOUT_VALUE,
    QUANT_STEP_V,
    RAIL_V,
    ChannelSpec,
    ContractionSpec,
    SyntheticSpec,
    background_bursts,
    dead_channel,
    disconnected_channel,
    varied_contractions,
    write_synthetic_c3d,
)

from .conftest import SAMPLE_FILES, needs_samples

CASES = v.synthetic_suite()


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("validation")


@pytest.fixture(scope="module")
def results(suite_dir):
    """Each case written and analysed once (libs.emg.analyze_file), shared by the tests below."""
    return {c.name: v.run_case(c, suite_dir) for c in CASES}


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_synthetic_case_meets_targets(results, name):
    r = results[name]
    if not r.passed:
        pytest.fail("\n".join(r.failures) + "\n" + v.format_suite(v.SuiteResult([r], r.pooled, [])), pytrace=False)


def test_synthetic_pooled_meets_targets(results):
    rs = list(results.values())
    pooled = v.pool(r.pooled for r in rs)
    fails = v.target_failures(pooled, "synthetic pooled")
    if fails:
        pytest.fail("\n".join(fails) + "\n" + v.format_suite(v.SuiteResult(rs, pooled, fails)), pytrace=False)


def test_suite_is_deterministic_and_covers_the_brief():
    names = [c.name for c in CASES]
    assert names == [c.name for c in v.synthetic_suite()]
    assert [c.spec for c in CASES] == [c.spec for c in v.synthetic_suite()]
    assert len(set(names)) == len(names)
    for wanted in (
        "clean_varied",
        "background_10_25pct",
        "hum_50hz",
        "hum_60hz",
        "hum_background",
        "saturation_jitter",
        "dropouts",
        "disconnected_hum",
        "dead_channel",
    ):
        assert wanted in names
    for c in CASES:
        assert 30 <= c.spec.duration_s <= 120
        assert c.spec.quantize_v == QUANT_STEP_V
        assert len(c.expectations) == len(c.spec.channels)


# --------------------------------------------------------------------------- match_events


def test_match_exact_counts_on_hand_made_intervals():
    truth = [(1.0, 2.0), (4.0, 5.0), (8.0, 9.0), (12.0, 13.0)]
    detected = [
        (1.05, 1.9),  # overlaps truth 0
        (3.8, 3.95),  # no overlap with truth 1 but onset 200 ms early: matched
        (6.0, 6.5),  # nothing there: FP
        (12.5, 14.0),
    ]  # overlaps truth 3
    m = v.match_events(detected, truth)
    assert (m.tp, m.fp, m.fn) == (3, 1, 1)
    assert m.pairs == [(0, 0), (1, 1), (3, 3)]
    assert m.unmatched_detected == [2] and m.unmatched_truth == [2]
    assert m.onset_errors_s == pytest.approx([0.05, -0.2, 0.5])
    assert m.precision == pytest.approx(0.75) and m.recall == pytest.approx(0.75)
    assert m.f1 == pytest.approx(0.75)
    assert m.median_abs_onset_ms == pytest.approx(200.0)


def test_match_is_one_to_one():
    # One long detection over two truth events: one TP (the larger overlap), one FN.
    m = v.match_events([(0.9, 4.1)], [(1.0, 2.0), (2.5, 4.0)])
    assert (m.tp, m.fp, m.fn) == (1, 0, 1) and m.pairs == [(0, 1)]
    # A contraction reported in two pieces: one TP, one FP.
    m = v.match_events([(1.0, 1.6), (1.9, 3.0)], [(1.0, 3.0)])
    assert (m.tp, m.fp, m.fn) == (1, 1, 0) and m.pairs == [(1, 0)]


def test_match_onset_window_and_greedy_order():
    # Not overlapping, onsets 310 ms apart: no match; 290 ms: match.
    assert v.match_events([(1.31, 1.4)], [(1.0, 1.05)]).tp == 0
    assert v.match_events([(1.29, 1.4)], [(1.0, 1.05)]).tp == 1
    assert v.match_events([(1.31, 1.4)], [(1.0, 1.05)], max_onset_s=0.4).tp == 1
    # Overlap beats onset distance: the detection goes to the truth it overlaps most.
    m = v.match_events([(2.0, 3.0)], [(1.9, 2.1), (2.2, 3.5)])
    assert m.pairs == [(0, 1)]
    # Touching intervals do not overlap (end is exclusive) but their onsets may still match.
    assert v.match_events([(5.0, 6.0)], [(4.0, 5.0)]).tp == 0


def test_match_empty_sides_and_pool():
    assert v.match_events([], []).f1 == 1.0
    m = v.match_events([], [(1, 2)])
    assert (m.tp, m.fp, m.fn, m.f1, m.precision, m.recall) == (0, 0, 1, 0.0, 1.0, 0.0)
    m = v.match_events([(1, 2)], [])
    assert (m.tp, m.fp, m.fn, m.f1) == (0, 1, 0, 0.0)
    assert m.median_abs_onset_ms is None
    p = v.pool([v.match_events([(1, 2)], [(1.1, 2)]), v.match_events([(5, 6)], [])])
    assert (p.tp, p.fp, p.fn) == (1, 1, 0) and p.onset_errors_s == pytest.approx([-0.1])


def test_match_accepts_dicts_and_objects():
    class E:
        start_s, end_s = 1.0, 2.0

    m = v.match_events([E()], [{"start_s": 1.1, "end_s": 2.0}])
    assert m.tp == 1


# --------------------------------------------------------------------------- device events


def test_device_events_merge_and_drop():
    rate = 1000.0
    a = np.zeros(10_000)
    a[1000:1300] = 1e-4  # 300 ms ...
    a[1450:1600] = 1e-4  # ... 150 ms gap: merged with it -> 1.0-1.6 s
    a[3000:3050] = 1e-4  # 50 ms: dropped
    a[5000:5200] = 1e-4  # 200 ms ...
    a[5400:5500] = 1e-4  # ... exactly 200 ms gap: kept apart (gaps < 200 ms merge)
    a[8000:8080] = 1e-4  # 80 ms ...
    a[8150:8200] = 1e-4  # ... + 70 ms gap + 50 ms: merged = 200 ms, kept
    ev = v.device_events(a, rate)
    assert ev == [(1.0, 1.6), (5.0, 5.2), (5.4, 5.5), (8.0, 8.2)]
    prof = v.device_profile(a, rate)
    assert prof["threshold_v"] == pytest.approx(1e-4) and prof["events"] == 4 and prof["raw_runs"] == 7


@needs_samples
def test_device_agreement_on_real_samples():
    rows = [r for f in SAMPLE_FILES for r in v.device_agreement(f)]
    assert len(rows) == 2 * len(SAMPLE_FILES)
    for r in rows:
        assert r.n_device > 0 and r.device["zero_fraction"] > 0.8
        assert r.match.tp + r.match.fn == r.n_device
    # The largest sample's CH1 has dropout fills: the device events touching them are left out.
    largest = [r for r in rows if r.file == "Ghostly_Emg_20230321_17-50-17-0881.c3d" and r.channel == "CH1"]
    if largest:
        assert largest[0].artifacts >= 6 and largest[0].n_device_excluded >= 1
    pooled = v.pool(r.match for r in rows)
    assert pooled.f1 >= v.TARGET_DEVICE_F1, v.format_device(rows)


# --------------------------------------------------------------------------- generator truth


def _write(tmp_path, spec, name="x.c3d"):
    return write_synthetic_c3d(tmp_path / name, spec)


def _rest_mask(truth, i, rate, n, pad_s=0.5):
    tc = truth["channels"][i]
    rest = np.ones(n, dtype=bool)
    spans = [(s, s + d) for s, d, _ in tc["contractions"]] + [(b["start_s"], b["end_s"]) for b in tc["background"]]
    for s, e in spans:
        rest[max(0, int((s - pad_s) * rate)) : int((e + pad_s) * rate)] = False
    return rest


@pytest.mark.parametrize("hz", [50.0, 60.0])
def test_hum_at_the_right_frequency_and_level(tmp_path, hz):
    cons = [ContractionSpec(2.0, 2.0, 300e-6, 0.1), ContractionSpec(8.0, 1.0, 200e-6, 0.2)]
    spec = SyntheticSpec(
        duration_s=16.0,
        channels=[ChannelSpec(cons, noise_sd_v=5e-6, hum_hz=hz, hum_rms_v=15e-6, hum_am_depth=0.2, hum_drift_hz=0.02)],
    )
    truth = _write(tmp_path, spec)
    rate, x = truth["rate"], truth["analogs"][0]
    rest = x[_rest_mask(truth, 0, rate, x.size)]
    f, p = signal.welch(rest, fs=rate, nperseg=2048)

    def band(f0, w=3.0):
        return p[(f > f0 - w) & (f < f0 + w)].sum()

    assert abs(f[np.argmax(p)] - hz) < 1.0
    assert band(3 * hz) > 10 * band(2 * hz) and band(3 * hz) < band(hz)
    if 5 * hz < rate / 2:
        assert band(5 * hz) > 4 * band(4 * hz) and band(5 * hz) < band(3 * hz)
    share = (band(hz) + band(3 * hz) + band(5 * hz)) / p.sum()
    assert 0.85 < share < 0.95  # "realistic level": rest ~90 % hum power
    hum = truth["channels"][0]["hum"]
    assert hum["hz"] == hz and hum["rms_v"] == 15e-6 and hum["harmonics"] == [(3, 0.25), (5, 0.10)]
    assert np.std(rest) == pytest.approx(np.hypot(15e-6, 5e-6), rel=0.1)


def test_saturation_rails_jitter_and_truth(tmp_path):
    cons = [
        ContractionSpec(2.0, 3.0, 400e-6, 0.1, surge=(1.2, 0.5, 6e-3)),  # partially saturated
        ContractionSpec(7.0, 1.5, 7e-3, 0.05),  # fully saturated
        ContractionSpec(11.0, 1.0, 300e-6),
    ]
    spec = SyntheticSpec(
        duration_s=14.0, quantize_v=QUANT_STEP_V, channels=[ChannelSpec(cons, clip_v=RAIL_V, rail_jitter_lsb=2.0)]
    )
    truth = _write(tmp_path, spec)
    x, tc, rate = truth["analogs"][0], truth["channels"][0], truth["rate"]
    sat = tc["saturation"]
    assert sat["n_clipped"] > 500
    near = np.abs(x) > RAIL_V - 10 * QUANT_STEP_V
    vals = np.abs(x[near])
    assert near.sum() >= sat["n_clipped"] * 0.9
    assert np.all(np.abs(vals - RAIL_V) < 10 * QUANT_STEP_V)  # within tolerance of the rail ...
    assert np.unique(x[near]).size > 20  # ... but not all equal
    # Exact-equality clipping finds next to nothing: few samples at the extremes, no constant runs.
    assert np.sum(x == x.max()) < 5 and np.sum(x == x.min()) < 5
    same = np.concatenate(([False], x[1:] == x[:-1], [False]))
    edges = np.flatnonzero(np.diff(same.astype(int)))
    assert (edges[1::2] - edges[::2]).max(initial=0) < 0.01 * rate
    # Quantised on the 16-bit grid.
    k = x / QUANT_STEP_V
    assert np.allclose(k, np.round(k), atol=1e-3)
    # Truth: one span per saturated stretch; the surged contraction is expected, the full one excluded.
    spans = sat["spans"]
    assert len(spans) == 2
    assert spans[0][0] == pytest.approx(3.2, abs=0.05) and spans[0][1] == pytest.approx(3.7, abs=0.05)
    assert spans[1][0] == pytest.approx(7.0, abs=0.05) and spans[1][1] == pytest.approx(8.5, abs=0.05)
    assert [e["expected"] for e in tc["events"]] == [True, False, True]
    assert tc["events"][1]["excluded_by"] == "saturation"
    assert tc["expected"] == [(2.0, 5.0), (11.0, 12.0)] and tc["excluded"] == [(7.0, 8.5)]
    assert tc["events"][0]["clean_s"] == pytest.approx(2.5, abs=0.05)


def test_exact_rails_without_jitter_unchanged(tmp_path):
    spec = SyntheticSpec(duration_s=8.0, channels=[ChannelSpec([ContractionSpec(2.0, 2.0, 6e-3)], clip_v=RAIL_V)])
    x = _write(tmp_path, spec)["analogs"][0]
    assert np.sum(x == np.float32(RAIL_V)) > 100 and np.sum(x == np.float32(-RAIL_V)) > 100


def test_background_bursts_ratio_and_placement(tmp_path):
    g = np.random.default_rng(3)
    cons = varied_contractions(g, 8)
    end = cons[-1].start_s + cons[-1].duration_s + 3.0
    bg = background_bursts(g, cons, end, per_gap=1.0)
    assert len(bg) >= 6
    weakest = min(c.amplitude_v for c in cons)
    for b in bg:
        assert 0.10 * weakest <= b.amplitude_v <= 0.25 * weakest
        assert 0.1 <= b.duration_s <= 0.5
        for c in cons:
            assert b.start_s >= c.start_s + c.duration_s + 0.8 or b.start_s + b.duration_s <= c.start_s - 0.8
    spec = SyntheticSpec(duration_s=float(np.ceil(end)), channels=[ChannelSpec(cons, noise_sd_v=2e-6, background=bg)])
    truth = _write(tmp_path, spec)
    tc, x, rate = truth["channels"][0], truth["analogs"][0], truth["rate"]
    assert [b["ratio_to_min_task"] for b in tc["background"]] == pytest.approx([b.amplitude_v / weakest for b in bg])
    assert len(tc["expected"]) == len(cons)  # bursts are not truth contractions
    weak = min(cons, key=lambda c: c.amplitude_v)

    def plateau_rms(s, d, ramp):
        a, b = int((s + ramp) * rate), int((s + d - ramp) * rate)
        return float(np.sqrt(np.mean(x[a:b] ** 2 - (2e-6) ** 2)))

    for b in bg:
        measured = plateau_rms(b.start_s, b.duration_s, b.ramp_s) / plateau_rms(
            weak.start_s, weak.duration_s, weak.ramp_s
        )
        assert measured == pytest.approx(b.amplitude_v / weakest, rel=0.35)


def test_varied_contractions_ranges():
    cons = varied_contractions(7, 40)
    assert all(150e-6 <= c.amplitude_v <= 500e-6 and 0.3 <= c.duration_s <= 4.0 for c in cons)
    assert all(c.ramp_s <= 0.3 and c.ramp_s <= 0.4 * c.duration_s + 1e-3 for c in cons)
    assert max(c.amplitude_v for c in cons) / min(c.amplitude_v for c in cons) > 2.0
    assert all(b.start_s > a.start_s + a.duration_s for a, b in itertools.pairwise(cons))
    assert cons == varied_contractions(7, 40)


def test_ramp_shape(tmp_path):
    spec = SyntheticSpec(
        duration_s=6.0, channels=[ChannelSpec([ContractionSpec(2.0, 2.0, 400e-6, ramp_s=0.3)], noise_sd_v=0.0)]
    )
    x, rate = _write(tmp_path, spec)["analogs"][0], 990.0

    def rms(a, b):
        return float(np.sqrt(np.mean(x[int(a * rate) : int(b * rate)] ** 2)))

    assert rms(1.0, 2.0) == 0.0 and rms(4.0, 5.0) == 0.0
    assert rms(2.0, 2.1) < 0.4 * rms(2.5, 3.5) < rms(2.2, 2.3)  # linear rise over 300 ms
    assert rms(3.9, 4.0) < 0.4 * rms(2.5, 3.5)


def test_dropouts_and_excluded_truth(tmp_path):
    cons = [ContractionSpec(2.0, 3.0), ContractionSpec(7.0, 0.5), ContractionSpec(10.0, 1.0)]
    spec = SyntheticSpec(duration_s=13.0, channels=[ChannelSpec(cons, dropouts=[(3.4, 270), (6.8, 1080), (9.0, 270)])])
    truth = _write(tmp_path, spec)
    tc, x = truth["channels"][0], truth["analogs"][0]
    assert tc["dropout_spans"] == [(3.4, 3.4 + 270 / 990), (6.8, 6.8 + 1080 / 990), (9.0, 9.0 + 270 / 990)]
    assert np.sum(x == np.float32(DROPOUT_VALUE)) == 270 + 1080 + 270
    assert [e["expected"] for e in tc["events"]] == [True, False, True]
    assert tc["events"][1]["excluded_by"] == "dropout" and tc["events"][1]["clean_s"] == pytest.approx(0.0, abs=1e-9)
    assert [a["kind"] for a in tc["artifacts"]] == ["dropout"] * 3


def test_disconnected_and_dead_channels(tmp_path):
    spec = SyntheticSpec(
        duration_s=10.0,
        quantize_v=QUANT_STEP_V,
        channels=[disconnected_channel("hum"), disconnected_channel("lsb"), dead_channel(0.0)],
    )
    truth = _write(tmp_path, spec)
    hum, lsb, dead = truth["analogs"][:3]
    assert [c["status"] for c in truth["channels"]] == ["disconnected", "disconnected", "dead"]
    assert all(not c["expected"] for c in truth["channels"])
    f, p = signal.welch(hum, fs=990.0, nperseg=2048)
    assert abs(f[np.argmax(p)] - 50.0) < 1.0 and 40e-6 < np.std(hum) < 80e-6
    assert np.max(np.abs(lsb)) <= 4 * QUANT_STEP_V * 1.0001 and np.unique(lsb).size <= 9
    assert np.all(dead == 0.0)
    with pytest.raises(ValueError, match="channel has no muscle activity"):
        _write(tmp_path, SyntheticSpec(channels=[ChannelSpec([ContractionSpec(1, 1)], status="dead")]), "bad.c3d")


def test_new_options_do_not_change_other_channels(tmp_path):
    base = SyntheticSpec(
        duration_s=10.0, channels=[ChannelSpec([ContractionSpec(2.0, 1.0)]), ChannelSpec([ContractionSpec(5.0, 1.0)])]
    )
    more = SyntheticSpec(
        duration_s=10.0,
        channels=[
            ChannelSpec([ContractionSpec(2.0, 1.0)]),
            ChannelSpec(
                [ContractionSpec(5.0, 1.0, fluctuation=0.1)],
                hum_hz=50.0,
                hum_rms_v=15e-6,
                clip_v=RAIL_V,
                rail_jitter_lsb=2.0,
            ),
        ],
    )
    a, b = _write(tmp_path, base, "a.c3d"), _write(tmp_path, more, "b.c3d")
    assert np.array_equal(a["analogs"][0], b["analogs"][0])
    assert not np.array_equal(a["analogs"][1], b["analogs"][1])


def test_detection_never_reads_the_activated_channel(tmp_path):
    case = next(c for c in CASES if c.name == "hum_background")
    spec = case.spec
    junk = SyntheticSpec(**{**spec.__dict__, "activated": "noise"})
    a, b = _write(tmp_path, spec, "device.c3d"), _write(tmp_path, junk, "junk.c3d")
    n = len(spec.channels)
    assert np.array_equal(a["analogs"][:n], b["analogs"][:n]) and not np.array_equal(a["analogs"][n:], b["analogs"][n:])
    ra, rb = analyze_file(a["path"]), analyze_file(b["path"])
    for ca, cb in zip(ra.channels, rb.channels):
        assert v.intervals(ca.contractions) == v.intervals(cb.contractions)
        assert list(getattr(ca, "signal_flags", [])) == list(getattr(cb, "signal_flags", []))
