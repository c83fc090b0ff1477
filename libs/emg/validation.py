"""Validation of contraction detection: event matching, a synthetic suite with exact truth,
and agreement with the GHOSTLY device's own 'activated' channel on real recordings.

Pure library: numpy plus the EMG package itself (the generator in ``synthetic`` and the
public analysis API ``libs.emg.analyze_file``); no database, gRPC or configuration. Used by
``bench/validate_detection.py`` and ``tests/emg/test_detection_validation.py``.

Matching (``match_events``): a detected event and a truth event are a candidate pair when
their intervals overlap (by more than 0 s) or their onsets are within ``max_onset_s``
(300 ms). Pairs are then taken GREEDILY, one-to-one: largest overlap first, ties (and
non-overlapping candidates) by smallest onset distance, then by index. Greedy rather than
Hungarian keeps the module numpy-only and is what a reader would do by hand; with events
that are seconds long and separated by seconds of rest both give the same pairing. Counts:
TP = pairs, FP = unpaired detections, FN = unpaired truth events; precision = TP/(TP+FP),
recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), each 1.0 when its denominator is 0 (nothing to
find and nothing found is a perfect score). Onset error = detected start - truth start (s).

Synthetic suite (``synthetic_suite``): deterministic named cases, each a ``SyntheticSpec``
whose truth comes from ``write_synthetic_c3d``; what counts is the truth's "expected" list
per channel (task contractions not destroyed by artefacts). Background bursts are not truth:
detecting one is a false positive; so is detecting an "excluded" (fully saturated, or inside
a dropout) contraction. Each channel also has flag expectations (``ChannelExpectation``).

Device agreement (``device_agreement``): the device's events are the runs of activated > 0,
joined across gaps < 200 ms, runs < 100 ms dropped. Device events and detections that touch
an artefact span the analysis reported (``quality.artifacts`` widened by the ringing margin
``artifact_margin_ms`` the analysis used) are left out of both sides; then the same matching.
Only this module reads the activated row: it is the reference, never an input of detection.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import flags as fl
from .synthetic import (
    DROPOUT_SAMPLES,
    QUANT_STEP_V,
    RAIL_V,
    ChannelSpec,
    ContractionSpec,
    SyntheticSpec,
    background_bursts,
    dead_channel,
    disconnected_channel,
    ghostly_file_name,
    varied_contractions,
    write_synthetic_c3d,
)

TARGET_EVENT_F1 = 0.95  # synthetic: event F1 per case and pooled
TARGET_ONSET_MS = 50.0  # synthetic: median |onset error| of matched pairs, per case and pooled
TARGET_DEVICE_F1 = 0.90  # real recordings: pooled F1 against the device's activated channel
MAX_ONSET_S = 0.3
DEVICE_MERGE_GAP_S = 0.2
DEVICE_MIN_DURATION_S = 0.1

Interval = tuple[float, float]
Analyzer = Callable[[Path], Any]  # path -> SessionAnalysis (libs.emg.analyze_file by default)


# --------------------------------------------------------------------------- matching


def as_interval(event: Any) -> Interval:
    """(start_s, end_s) of a tuple/list, a dict with start_s/end_s, or an object with those attributes."""
    if isinstance(event, dict):
        return float(event["start_s"]), float(event["end_s"])
    if hasattr(event, "start_s"):
        return float(event.start_s), float(event.end_s)
    s, e = event[0], event[1]
    return float(s), float(e)


def intervals(events: Iterable[Any]) -> list[Interval]:
    return [as_interval(e) for e in events]


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


@dataclass
class MatchResult:
    tp: int
    fp: int
    fn: int
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (detected index, truth index)
    onset_errors_s: list[float] = field(default_factory=list)  # detected start - truth start, per pair
    offset_errors_s: list[float] = field(default_factory=list)  # detected end - truth end, per pair
    unmatched_detected: list[int] = field(default_factory=list)
    unmatched_truth: list[int] = field(default_factory=list)

    @property
    def n_detected(self) -> int:
        return self.tp + self.fp

    @property
    def n_truth(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def median_abs_onset_ms(self) -> float | None:
        """Median |onset error| of the matched pairs (ms); None without pairs."""
        if not self.onset_errors_s:
            return None
        return float(np.median(np.abs(self.onset_errors_s)) * 1e3)

    @property
    def median_abs_offset_ms(self) -> float | None:
        if not self.offset_errors_s:
            return None
        return float(np.median(np.abs(self.offset_errors_s)) * 1e3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "median_abs_onset_ms": self.median_abs_onset_ms,
            "median_abs_offset_ms": self.median_abs_offset_ms,
            "pairs": self.pairs,
            "onset_errors_s": self.onset_errors_s,
        }


def match_events(detected: Iterable[Any], truth: Iterable[Any], max_onset_s: float = MAX_ONSET_S) -> MatchResult:
    """One-to-one greedy matching of detected to truth events (see the module docstring).

    A pair is a candidate when the intervals overlap or the onsets are within ``max_onset_s``;
    candidates are taken by decreasing overlap, then increasing onset distance.
    """
    d, t = intervals(detected), intervals(truth)
    cands = []
    for i, (ds, de) in enumerate(d):
        for j, (ts, te) in enumerate(t):
            overlap = min(de, te) - max(ds, ts)
            onset = abs(ds - ts)
            if overlap > 0 or onset <= max_onset_s:
                cands.append((-max(overlap, 0.0), onset, i, j))
    cands.sort()
    used_d, used_t, pairs = set(), set(), []
    for _, _, i, j in cands:
        if i not in used_d and j not in used_t:
            used_d.add(i)
            used_t.add(j)
            pairs.append((i, j))
    pairs.sort(key=lambda p: p[1])
    return MatchResult(
        tp=len(pairs),
        fp=len(d) - len(pairs),
        fn=len(t) - len(pairs),
        pairs=pairs,
        onset_errors_s=[d[i][0] - t[j][0] for i, j in pairs],
        offset_errors_s=[d[i][1] - t[j][1] for i, j in pairs],
        unmatched_detected=[i for i in range(len(d)) if i not in used_d],
        unmatched_truth=[j for j in range(len(t)) if j not in used_t],
    )


def pool(results: Iterable[MatchResult]) -> MatchResult:
    """Sum of several results (TP/FP/FN added, onset errors concatenated; indices dropped)."""
    results = list(results)
    return MatchResult(
        tp=sum(r.tp for r in results),
        fp=sum(r.fp for r in results),
        fn=sum(r.fn for r in results),
        onset_errors_s=[e for r in results for e in r.onset_errors_s],
        offset_errors_s=[e for r in results for e in r.offset_errors_s],
    )


def _touches(iv: Interval, windows: Sequence[Interval]) -> bool:
    """True when ``iv`` overlaps any of ``windows``."""
    return any(iv[1] > a and iv[0] < b for a, b in windows)


# --------------------------------------------------------------------------- synthetic suite

ALL_FLAGS = frozenset(fl.SIGNAL_FLAGS)
_NOT_EMG = frozenset({fl.WEAK_SIGNAL, fl.NO_USABLE_EMG})


@dataclass(frozen=True)
class ChannelExpectation:
    """What a correct analysis says about one channel besides its contractions."""

    required_flags: frozenset[str] = frozenset()
    forbidden_flags: frozenset[str] = frozenset()
    usable: bool = True
    note: str = ""


CLEAN = ChannelExpectation(forbidden_flags=ALL_FLAGS, note="clean EMG: no flag at all")


@dataclass
class SyntheticCase:
    name: str
    description: str
    spec: SyntheticSpec
    expectations: list[ChannelExpectation]
    parameters: dict[str, Any] = field(default_factory=dict)  # how the case was built (for the report)

    def file_path(self, directory: str | os.PathLike[str]) -> Path:
        return Path(directory) / self.name / ghostly_file_name(self.spec)

    def write(self, directory: str | os.PathLike[str]) -> dict[str, Any]:
        path = self.file_path(directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_synthetic_c3d(path, self.spec)


def _end_s(channels: list[ChannelSpec], rate: float = 990.0, tail_s: float = 3.0) -> float:
    ends = [c.start_s + c.duration_s for ch in channels for c in ch.contractions + ch.background]
    ends += [s + n / rate for ch in channels for s, n in ch.dropouts]
    return float(math.ceil(max(ends, default=30.0) + tail_s))


def _last_end(cons: list[ContractionSpec]) -> float:
    return max(c.start_s + c.duration_s for c in cons)


def _rest_points(
    cons: list[ContractionSpec], rng: np.random.Generator, k: int, clearance_s: float, length_s: float
) -> list[float]:
    """Starts of ``k`` artefacts of ``length_s`` in distinct rest gaps, >= clearance_s from contractions."""
    gaps = []
    ordered = sorted(cons, key=lambda c: c.start_s)
    for a, b in itertools.pairwise(ordered):
        lo, hi = a.start_s + a.duration_s + clearance_s, b.start_s - clearance_s - length_s
        if hi > lo:
            gaps.append((lo, hi))
    if len(gaps) < k:
        raise ValueError("not enough rest gaps for the artefacts")
    pick = sorted(rng.choice(len(gaps), size=k, replace=False).tolist())
    return [round(float(rng.uniform(*gaps[i])), 3) for i in pick]


def _task(rng: np.random.Generator, n: int = 12) -> list[ContractionSpec]:
    return varied_contractions(rng, n, fluctuation=0.1)


def synthetic_suite(seed: int = 20240506) -> list[SyntheticCase]:
    """The deterministic list of named cases (see the module docstring and each description).

    Common to all: 990 Hz, 16-bit quantisation (QUANT_STEP_V), 12 task contractions per EMG
    channel with amplitude 150-500 uV RMS, duration 0.3-4 s, ramps 50-300 ms (<= 40 % of the
    duration), rests 2-4.5 s, 10 % slow plateau fluctuation, baseline noise 4-6 uV; each
    recording 60-80 s long.
    """
    cases: list[SyntheticCase] = []

    def add(
        name: str,
        description: str,
        channels: list[ChannelSpec],
        expectations: list[ChannelExpectation],
        k: int,
        **parameters: Any,
    ) -> None:
        spec = SyntheticSpec(
            duration_s=_end_s(channels),
            channels=channels,
            seed=seed + k,
            quantize_v=QUANT_STEP_V,
            time=(2024, 5, 6, 14, k % 60),
        )
        cases.append(SyntheticCase(name, description, spec, expectations, parameters))

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, k])

    hum_kw: dict[str, Any] = dict(
        hum_rms_v=15e-6, hum_am_depth=0.2, hum_drift_hz=0.02
    )  # 3x the 5 uV noise: ~90 % of rest power

    # 1. Clean, varied task contractions.
    g = rng(1)
    add(
        "clean_varied",
        "varied task contractions on 4-6 uV white noise, nothing else",
        [ChannelSpec(_task(g), noise_sd_v=float(g.uniform(4e-6, 6e-6))) for _ in range(2)],
        [CLEAN, CLEAN],
        1,
    )

    # 2. Task + background bursts at 10-25 % of the weakest task contraction.
    g = rng(2)
    chans = []
    for _ in range(2):
        cons = _task(g)
        chans.append(
            ChannelSpec(
                cons, noise_sd_v=5e-6, background=background_bursts(g, cons, _last_end(cons) + 3.0, per_gap=0.8)
            )
        )
    add(
        "background_10_25pct",
        "task contractions + 0.1-0.5 s background bursts at 10-25 % of the weakest "
        "task contraction, in the rests (>= 0.8 s clear); bursts are not contractions",
        chans,
        [CLEAN, CLEAN],
        2,
        background_ratio=(0.10, 0.25),
        background_s=(0.1, 0.5),
    )

    # 3/4. Mains hum at 50 and 60 Hz, 3x the noise RMS (rest ~90 % hum power), 3rd and 5th harmonics.
    hum_exp = ChannelExpectation(
        required_flags=frozenset({fl.MAINS_INTERFERENCE}),
        forbidden_flags=frozenset({fl.SATURATION, fl.DROPOUT, fl.PARTIALLY_MASKED}) | _NOT_EMG,
        note="hum flagged (and notched), nothing else",
    )
    for k, hz in ((3, 50.0), (4, 60.0)):
        g = rng(k)
        add(
            f"hum_{int(hz)}hz",
            f"task contractions + {hz:g} Hz hum (15 uV RMS incl. 3rd 0.25 and 5th 0.10 "
            "harmonics, 20 % slow AM, +/-0.02 Hz drift) on 5 uV noise: rest ~90 % hum power",
            [ChannelSpec(_task(g), noise_sd_v=5e-6, hum_hz=hz, **hum_kw) for _ in range(2)],
            [hum_exp, hum_exp],
            k,
            hum_hz=hz,
            **hum_kw,
        )

    # 5. Hum + background.
    g = rng(5)
    chans = []
    for _ in range(2):
        cons = _task(g)
        chans.append(
            ChannelSpec(
                cons,
                noise_sd_v=5e-6,
                hum_hz=50.0,
                **hum_kw,
                background=background_bursts(g, cons, _last_end(cons) + 3.0, per_gap=0.8),
            )
        )
    add(
        "hum_background",
        "50 Hz hum as in hum_50hz + background bursts as in background_10_25pct",
        chans,
        [hum_exp, hum_exp],
        5,
        hum_hz=50.0,
        **hum_kw,
        background_ratio=(0.10, 0.25),
    )

    # 6. Saturation with jittering rails during strong contractions.
    g = rng(6)
    cons = _task(g)
    long_ones = [i for i, c in enumerate(cons) if c.duration_s >= 2.0]
    if len(long_ones) < 3 or len(cons) - 3 < 2:
        raise AssertionError("saturation case: the seed gave too few long contractions")
    surged = sorted(g.choice(long_ones, size=3, replace=False).tolist())
    full = sorted(g.choice([i for i in range(len(cons)) if i not in surged], size=2, replace=False).tolist())
    for i in surged:  # a 0.3-0.6 s push to ~6 mV RMS inside a normal contraction: expected (partially masked)
        c = cons[i]
        dur = round(float(g.uniform(0.3, 0.6)), 3)
        off = round(float(g.uniform(0.8, c.duration_s - dur - 0.5)), 3)
        c.surge = (off, dur, 6e-3)
    for i in full:  # saturated from end to end (7 mV RMS, 50 ms ramps): excluded from the truth
        cons[i].amplitude_v, cons[i].ramp_s = 7e-3, 0.05
    sat = ChannelSpec(cons, noise_sd_v=5e-6, clip_v=RAIL_V, rail_jitter_lsb=2.0)
    add(
        "saturation_jitter",
        "CH1: 3 contractions with a 0.3-0.6 s surge to 6 mV RMS (expected: their "
        "uncorrupted part is valid) and 2 contractions at 7 mV RMS (fully saturated: excluded); rails at "
        "+/-5.49 mV with 2 LSB of ADC noise (no two clipped runs exactly equal). CH2 clean",
        [sat, ChannelSpec(_task(g), noise_sd_v=5e-6)],
        [
            ChannelExpectation(
                required_flags=frozenset({fl.SATURATION, fl.PARTIALLY_MASKED}),
                forbidden_flags=frozenset({fl.DROPOUT, fl.MAINS_INTERFERENCE}) | _NOT_EMG,
                note="saturation and partially_masked flagged",
            ),
            CLEAN,
        ],
        6,
        rail_v=RAIL_V,
        rail_jitter_lsb=2.0,
        surged=surged,
        fully_saturated=full,
    )

    # 7. Dropouts: in rests, inside contraction plateaus, and one long outage over a whole contraction.
    g = rng(7)
    cons = _task(g)
    long_ones = [i for i, c in enumerate(cons) if c.duration_s >= 2.0]
    short_ones = [i for i, c in enumerate(cons) if c.duration_s <= 1.2]
    if len(long_ones) < 2 or not short_ones:
        raise AssertionError("dropout case: the seed gave no suitable contractions")
    inside = sorted(g.choice(long_ones, size=2, replace=False).tolist())
    covered = int(g.choice(short_ones))
    drops = [
        (round(cons[i].start_s + cons[i].duration_s * float(g.uniform(0.4, 0.6)), 3), DROPOUT_SAMPLES) for i in inside
    ]
    c = cons[covered]
    n_long = math.ceil((c.duration_s + 0.4) * 990.0 / DROPOUT_SAMPLES) * DROPOUT_SAMPLES  # consecutive fills
    drops.append((round(c.start_s - 0.2, 3), n_long))
    drops += [(s, DROPOUT_SAMPLES) for s in _rest_points(cons, g, 3, 1.0, DROPOUT_SAMPLES / 990.0)]
    cons2 = _task(g)
    drops2 = [(s, DROPOUT_SAMPLES) for s in _rest_points(cons2, g, 2, 1.0, DROPOUT_SAMPLES / 990.0)]
    add(
        "dropouts",
        "CH1: 270-sample fills at -5.50008 mV in 3 rests and inside 2 contraction plateaus "
        "(expected, partially masked), and consecutive fills covering one whole contraction (excluded). "
        "CH2: 2 fills in rests",
        [
            ChannelSpec(cons, noise_sd_v=5e-6, dropouts=sorted(drops)),
            ChannelSpec(cons2, noise_sd_v=5e-6, dropouts=drops2),
        ],
        [
            ChannelExpectation(
                required_flags=frozenset({fl.DROPOUT, fl.PARTIALLY_MASKED}),
                forbidden_flags=frozenset({fl.SATURATION, fl.MAINS_INTERFERENCE}) | _NOT_EMG,
                note="dropout and partially_masked flagged",
            ),
            ChannelExpectation(
                required_flags=frozenset({fl.DROPOUT}),
                forbidden_flags=frozenset({fl.SATURATION, fl.MAINS_INTERFERENCE}) | _NOT_EMG,
                note="dropout flagged",
            ),
        ],
        7,
        inside=inside,
        covered=covered,
        covered_fill_samples=n_long,
    )

    # 8-10. A channel without EMG next to a normal one.
    unusable = ChannelExpectation(
        required_flags=frozenset({fl.NO_USABLE_EMG}), usable=False, note="0 contractions, no_usable_emg, not usable"
    )
    for k, name, ch, desc in (
        (
            8,
            "disconnected_hum",
            disconnected_channel("hum", 50.0),
            "CH2 disconnected: 60 uV RMS 50 Hz hum (harmonics, 30 % AM) on 3 uV noise, no EMG",
        ),
        (
            9,
            "disconnected_lsb",
            disconnected_channel("lsb"),
            "CH2 disconnected: near-flat quantisation noise (0.6 LSB), no EMG",
        ),
        (10, "dead_channel", dead_channel(0.0), "CH2 dead: exactly 0 V throughout"),
    ):
        g = rng(k)
        add(
            name,
            f"CH1 normal task contractions; {desc}",
            [ChannelSpec(_task(g), noise_sd_v=5e-6), ch],
            [CLEAN, unusable],
            k,
        )
    return cases


# --------------------------------------------------------------------------- evaluation


@dataclass
class ChannelScore:
    case: str
    channel: str
    match: MatchResult
    n_excluded: int  # truth contractions excluded (destroyed by artefacts)
    n_background: int  # background bursts in the channel
    background_hits: int  # detections overlapping a background burst
    excluded_hits: int  # detections overlapping an excluded contraction
    flags: list[str]
    usable: bool | None
    expectation: ChannelExpectation
    failures: list[str] = field(default_factory=list)  # flag / usable / empty-channel problems

    @property
    def n_truth(self) -> int:
        return self.match.n_truth

    @property
    def n_detected(self) -> int:
        return self.match.n_detected


@dataclass
class CaseResult:
    case: SyntheticCase
    channels: list[ChannelScore]
    pooled: MatchResult
    failures: list[str]
    truth: dict[str, Any] | None = None
    analysis: Any = None
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class SuiteResult:
    cases: list[CaseResult]
    pooled: MatchResult
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures and all(c.passed for c in self.cases)


def _channel_of(res: Any, i: int) -> Any:
    name = f"CH{i + 1}"
    try:
        return res.channel(name)
    except (KeyError, AttributeError):
        return res.channels[i]


def target_failures(
    m: MatchResult, what: str, f1_target: float = TARGET_EVENT_F1, onset_target_ms: float | None = TARGET_ONSET_MS
) -> list[str]:
    out = []
    if m.f1 < f1_target:
        out.append(f"{what}: F1 {m.f1:.3f} < {f1_target:g} (TP {m.tp}, FP {m.fp}, FN {m.fn})")
    med = m.median_abs_onset_ms
    if onset_target_ms is not None and med is not None and med > onset_target_ms:
        out.append(f"{what}: median |onset error| {med:.0f} ms > {onset_target_ms:g} ms")
    return out


def evaluate_case(case: SyntheticCase, truth: dict[str, Any], res: Any, max_onset_s: float = MAX_ONSET_S) -> CaseResult:
    """Score one analysed case against its truth and expectations."""
    scores = []
    for i, (tc, exp) in enumerate(zip(truth["channels"], case.expectations)):
        ch = _channel_of(res, i)
        det = intervals(ch.contractions)
        m = match_events(det, tc["expected"], max_onset_s)
        bg = [(b["start_s"], b["end_s"]) for b in tc["background"]]
        flags = list(getattr(ch, "signal_flags", []) or [])
        usable = getattr(ch, "usable", None)
        name = getattr(ch, "channel_name", f"CH{i + 1}")
        fails = []
        missing = sorted(exp.required_flags - set(flags))
        extra = sorted(exp.forbidden_flags & set(flags))
        if missing:
            fails.append(f"{case.name}/{name}: missing flag(s) {', '.join(missing)}")
        if extra:
            fails.append(f"{case.name}/{name}: unexpected flag(s) {', '.join(extra)}")
        if usable is not None and bool(usable) != exp.usable:
            fails.append(f"{case.name}/{name}: usable is {usable}, expected {exp.usable}")
        if not tc["expected"] and det:
            fails.append(f"{case.name}/{name}: {len(det)} contraction(s) on a channel that has none")
        scores.append(
            ChannelScore(
                case.name,
                name,
                m,
                len(tc["excluded"]),
                len(bg),
                sum(_touches(d, bg) for d in det),
                sum(_touches(d, tc["excluded"]) for d in det),
                flags,
                usable,
                exp,
                fails,
            )
        )
    pooled = pool(s.match for s in scores)
    failures = target_failures(pooled, case.name) + [f for s in scores for f in s.failures]
    return CaseResult(case, scores, pooled, failures, truth, res)


def run_case(
    case: SyntheticCase, directory: str | os.PathLike[str], analyze: Analyzer | None = None, catch: bool = False
) -> CaseResult:
    """Write the case under ``directory``, analyse it with ``analyze`` (default
    ``libs.emg.analyze_file``) and score it. With ``catch`` an analysis error becomes a
    failed result instead of an exception."""
    if analyze is None:
        from .analysis import analyze_file

        analyze = analyze_file
    truth = case.write(directory)
    path = case.file_path(directory)
    try:
        res = analyze(path)
    except Exception as exc:
        if not catch:
            raise
        empty = [
            ChannelScore(
                case.name,
                f"CH{i + 1}",
                match_events([], tc["expected"]),
                len(tc["excluded"]),
                len(tc["background"]),
                0,
                0,
                [],
                None,
                exp,
                [],
            )
            for i, (tc, exp) in enumerate(zip(truth["channels"], case.expectations))
        ]
        return CaseResult(
            case,
            empty,
            pool(s.match for s in empty),
            [f"{case.name}: analysis raised {type(exc).__name__}: {exc}"],
            truth,
            None,
            path,
        )
    out = evaluate_case(case, truth, res)
    out.path = path
    return out


def run_suite(
    directory: str | os.PathLike[str],
    cases: list[SyntheticCase] | None = None,
    analyze: Analyzer | None = None,
    catch: bool = True,
) -> SuiteResult:
    results = [run_case(c, directory, analyze, catch) for c in (cases if cases is not None else synthetic_suite())]
    pooled = pool(r.pooled for r in results)
    return SuiteResult(results, pooled, target_failures(pooled, "synthetic pooled"))


# --------------------------------------------------------------------------- device agreement


def _runs(on: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    z = np.concatenate(([False], on, [False]))
    edges = np.flatnonzero(z[1:] != z[:-1])
    return edges[::2], edges[1::2]


def device_events(
    activated: NDArray[Any],
    rate: float,
    merge_gap_s: float = DEVICE_MERGE_GAP_S,
    min_duration_s: float = DEVICE_MIN_DURATION_S,
) -> list[Interval]:
    """Device events: runs of activated > 0, joined across gaps < ``merge_gap_s``, then runs
    shorter than ``min_duration_s`` dropped. (start_s, end_s), end exclusive."""
    starts, ends = _runs(np.asarray(activated) > 0)
    if starts.size > 1:
        keep = (starts[1:] - ends[:-1]) >= merge_gap_s * rate
        starts = np.r_[starts[0], starts[1:][keep]]
        ends = np.r_[ends[:-1][keep], ends[-1]]
    long = (ends - starts) >= min_duration_s * rate
    return [(s / rate, e / rate) for s, e in zip(starts[long].tolist(), ends[long].tolist())]


def device_profile(activated: NDArray[Any], rate: float) -> dict[str, Any]:
    """What the device's activated row looks like: its threshold (estimated as the value of
    the first non-zero sample of each run: the envelope is smooth, so it has just crossed
    the threshold there), active fraction, raw runs and merged event durations."""
    a = np.asarray(activated, dtype=np.float64)
    starts, ends = _runs(a > 0)
    ev = device_events(a, rate)
    dur = np.array([e - s for s, e in ev])
    first = a[starts] if starts.size else np.zeros(0)
    return {
        "zero_fraction": float(np.mean(a == 0)),
        "raw_runs": int(starts.size),
        "raw_runs_under_100ms": int(np.sum((ends - starts) < 0.1 * rate)),
        "threshold_v": float(np.median(first)) if first.size else None,
        "threshold_p10_p90_v": (float(np.percentile(first, 10)), float(np.percentile(first, 90)))
        if first.size
        else None,
        "min_positive_v": float(a[a > 0].min()) if (a > 0).any() else None,
        "peak_v": float(a.max()),
        "events": len(ev),
        "event_duration_s": {
            "median": float(np.median(dur)),
            "p10": float(np.percentile(dur, 10)),
            "p90": float(np.percentile(dur, 90)),
            "max": float(dur.max()),
        }
        if dur.size
        else None,
    }


@dataclass
class DeviceAgreement:
    file: str
    channel: str
    match: MatchResult
    n_device_excluded: int  # device events touching an artefact span (+ margin)
    n_detected_excluded: int  # our detections touching one
    flags: list[str]
    usable: bool | None
    device: dict[str, Any]
    artifacts: int

    @property
    def n_device(self) -> int:
        return self.match.n_truth

    @property
    def n_detected(self) -> int:
        return self.match.n_detected


def _margin_s(res: Any) -> float:
    try:
        return float(res.parameters["settings"]["processing"]["artifact_margin_ms"]) / 1000.0
    except (AttributeError, KeyError, TypeError):
        from .settings import ProcessingParams

        return ProcessingParams().artifact_margin_ms / 1000.0


def device_agreement(
    path: str | os.PathLike[str],
    analyze: Analyzer | None = None,
    merge_gap_s: float = DEVICE_MERGE_GAP_S,
    min_duration_s: float = DEVICE_MIN_DURATION_S,
    max_onset_s: float = MAX_ONSET_S,
) -> list[DeviceAgreement]:
    """Per muscle channel of a real file: our detections vs the device's activated events."""
    from .c3d_reader import muscle_channels, read_c3d

    if analyze is None:
        from .analysis import analyze_file

        analyze = analyze_file
    path = Path(path)
    res = analyze(path)
    rec = read_c3d(path)  # the reference row, read here and only here
    margin = _margin_s(res)
    out = []
    for i, mc in enumerate(muscle_channels(rec)):
        if mc.activated_index is None:
            continue
        try:
            ch = res.channel(mc.name)
        except (KeyError, AttributeError):
            ch = res.channels[i]
        act = rec.channel(mc.activated_index)
        windows = [(a.start_s - margin, a.end_s + margin) for a in ch.quality.artifacts]
        dev_all = device_events(act, rec.rate, merge_gap_s, min_duration_s)
        det_all = intervals(ch.contractions)
        dev = [e for e in dev_all if not _touches(e, windows)]
        det = [e for e in det_all if not _touches(e, windows)]
        out.append(
            DeviceAgreement(
                path.name,
                mc.name,
                match_events(det, dev, max_onset_s),
                len(dev_all) - len(dev),
                len(det_all) - len(det),
                list(getattr(ch, "signal_flags", []) or []),
                getattr(ch, "usable", None),
                device_profile(act, rec.rate),
                len(ch.quality.artifacts),
            )
        )
    return out


def sample_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The C3D files of ``directory`` (none when it does not exist)."""
    d = Path(directory)
    return sorted(d.glob("*.c3d")) if d.is_dir() else []


# --------------------------------------------------------------------------- tables


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def format_suite(result: SuiteResult) -> str:
    header = ["case", "ch", "truth", "det", "TP", "FP", "FN", "F1", "|onset| ms", "bg", "excl", "flags", "usable", "ok"]
    rows = []
    for cr in result.cases:
        for s in cr.channels:
            m = s.match
            rows.append(
                [
                    cr.name,
                    s.channel,
                    str(m.n_truth),
                    str(m.n_detected),
                    str(m.tp),
                    str(m.fp),
                    str(m.fn),
                    f"{m.f1:.3f}",
                    _fmt_ms(m.median_abs_onset_ms),
                    f"{s.background_hits}/{s.n_background}" if s.n_background else "-",
                    f"{s.excluded_hits}/{s.n_excluded}" if s.n_excluded else "-",
                    ",".join(s.flags) or "-",
                    "-" if s.usable is None else ("yes" if s.usable else "no"),
                    "ok" if not s.failures else "FLAGS",
                ]
            )
        p = cr.pooled
        rows.append(
            [
                cr.name,
                "all",
                str(p.n_truth),
                str(p.n_detected),
                str(p.tp),
                str(p.fp),
                str(p.fn),
                f"{p.f1:.3f}",
                _fmt_ms(p.median_abs_onset_ms),
                "",
                "",
                "",
                "",
                "PASS" if cr.passed else "FAIL",
            ]
        )
    p = result.pooled
    rows.append(
        [
            "POOLED",
            "",
            str(p.n_truth),
            str(p.n_detected),
            str(p.tp),
            str(p.fp),
            str(p.fn),
            f"{p.f1:.3f}",
            _fmt_ms(p.median_abs_onset_ms),
            "",
            "",
            "",
            "",
            "PASS" if result.passed else "FAIL",
        ]
    )
    return _table(header, rows) + (
        "\n  bg = detections on background bursts / bursts; excl = detections on excluded "
        "(artefact-destroyed) contractions / excluded"
    )


def format_device(rows_in: list[DeviceAgreement], pooled: MatchResult | None = None) -> str:
    header = [
        "file",
        "ch",
        "device",
        "det",
        "TP",
        "FP",
        "FN",
        "F1",
        "|onset| ms",
        "excl dev/det",
        "dev thr uV",
        "dev dur med ms",
        "flags",
    ]
    rows = []
    for r in rows_in:
        m = r.match
        d = r.device
        rows.append(
            [
                r.file,
                r.channel,
                str(m.n_truth),
                str(m.n_detected),
                str(m.tp),
                str(m.fp),
                str(m.fn),
                f"{m.f1:.3f}",
                _fmt_ms(m.median_abs_onset_ms),
                f"{r.n_device_excluded}/{r.n_detected_excluded}",
                "-" if d["threshold_v"] is None else f"{d['threshold_v'] * 1e6:.1f}",
                "-" if d["event_duration_s"] is None else f"{d['event_duration_s']['median'] * 1e3:.0f}",
                ",".join(r.flags) or "-",
            ]
        )
    if pooled is not None:
        rows.append(
            [
                "POOLED",
                "",
                str(pooled.n_truth),
                str(pooled.n_detected),
                str(pooled.tp),
                str(pooled.fp),
                str(pooled.fn),
                f"{pooled.f1:.3f}",
                _fmt_ms(pooled.median_abs_onset_ms),
                "",
                "",
                "",
                "",
            ]
        )
    return _table(header, rows)
