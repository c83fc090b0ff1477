"""Synthetic GHOSTLY-like C3D files with known ground truth (for tests of every service).

    truth = write_synthetic_c3d(path, SyntheticSpec(rate=990, channels=[ChannelSpec(...)]))

Each contraction is Gaussian noise band-limited to 20-450 Hz times a trapezoid (20 ms ramps
by default) on a white-noise baseline, so the envelope crosses the detection threshold at the
nominal start/end within a few tens of milliseconds. Files are written by ezc3d (float,
Intel), with GHOSTLY labels ('CHn Raw', 'CHn activated'), INFO/SUBJECTS parameters, and
optionally a 3-D point so that both data layouts are exercised.

Realistic options, all off by default (a spec that uses none of them gives the same file,
bit for bit, as before they existed; each option draws from its own random stream, so
turning one on never changes the others):

- ``ContractionSpec.ramp_s`` (rise and fall time, e.g. 0.05-0.3 s), ``fluctuation`` (slow
  random modulation of the plateau amplitude, relative SD) and ``surge`` (a short extra-strong
  push inside the contraction, e.g. one that saturates the ADC);
- ``ChannelSpec.background``: short low-level bursts (posture, co-contraction, crosstalk) that
  are NOT task contractions; returned separately in the truth;
- mains hum: ``hum_hz`` (50 or 60), ``hum_rms_v`` (RMS of the whole hum, harmonics included),
  ``hum_harmonics`` ((order, amplitude relative to the fundamental), ...), ``hum_am_depth`` and
  ``hum_drift_hz`` (slow amplitude and frequency wander). "Realistic level": hum RMS ~3x the
  baseline noise SD, i.e. rest periods ~90 % hum power;
- saturation with jittering rails: ``clip_v`` clips at +/- the rail; with ``rail_jitter_lsb``
  > 0 the clipped samples are the rail plus the ADC's own noise (Gaussian, SD in LSB of
  ``QUANT_STEP_V``): the front-end saturates at ~5.49 mV, a little inside the 16-bit full
  scale (32767 x 0.1678 uV = 5.4986 mV), and the ADC digitises that level with its noise, so
  the clipped samples scatter a few LSB around the rail and their extreme value is a noise
  outlier reached once or twice: exact-equality clipping tests find (next to) nothing;
- ``SyntheticSpec.quantize_v``: 16-bit quantisation of every raw row (``QUANT_STEP_V``);
- dropouts (runs of exactly ``DROPOUT_VALUE``, usually ``DROPOUT_SAMPLES`` long) as before;
- ``ChannelSpec.status``: 'disconnected' (no EMG at all: noise and/or hum only, see
  ``disconnected_channel``) or 'dead' (exactly constant, see ``dead_channel``).
- ``SyntheticSpec.activated``: 'device' (default: a device-like envelope set to exactly 0
  below its own threshold) or 'noise' (junk, to prove an analysis never reads that row).

Truth (per channel, besides the original "contractions"/"dropouts"/"clip_v" keys): "events"
(every task contraction with its ramp, surge, uncorrupted seconds and whether it is expected
to be detected), "expected"/"excluded" (start_s, end_s) lists, "background", "artifacts"
(saturation and dropout spans), "saturation", "dropout_spans", "hum", "status". A task
contraction is expected unless less than ``EXPECTED_MIN_CLEAN_S`` of it lies outside every
artefact span (fully saturated, or inside a dropout): those are "excluded".

Long files are written as ezc3d writes them: over 32,767 frames POINT:FRAMES wraps negative
(the header's last_frame stays exact up to 65,535); over 65,535 frames ezc3d writes
POINT:FRAMES = -1 and last_frame = 65,535 (no TRIAL:ACTUAL_*_FIELD) with the data complete,
and its own reader then returns only 65,535 frames. read_c3d sizes such files from the data
section (tests/emg/test_long_recordings.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy import signal

DROPOUT_VALUE = -0.00550008  # V, GHOSTLY dropout fill just past the rail
DROPOUT_SAMPLES = 270  # length of the dropout fills seen in the samples
RAIL_V = 0.00549  # V, GHOSTLY ADC rail (front-end saturation level)
QUANT_STEP_V = 0.16781e-6  # V, 16-bit quantisation step measured on the samples
SATURATION_MERGE_S = 0.05  # clipped samples closer than this form one saturated span (truth)
EXPECTED_MIN_CLEAN_S = 0.25  # a task contraction with less uncorrupted time is excluded from the truth

# Independent random streams of the optional features: default_rng([seed, channel, stream]).
_FLUCTUATION, _HUM, _JITTER, _ACTIVATED = 1, 2, 3, 4


@dataclass
class ContractionSpec:
    start_s: float
    duration_s: float
    amplitude_v: float = 300e-6  # RMS of the raw EMG during the plateau
    ramp_s: float = 0.02  # linear rise and fall (each), capped at half the duration
    fluctuation: float = 0.0  # relative SD of a slow (< 1.5 Hz) random plateau modulation
    surge: tuple[float, float, float] | None = None  # (offset_s from start, duration_s, extra amplitude V RMS)


@dataclass
class ChannelSpec:
    contractions: list[ContractionSpec] = field(default_factory=list)
    noise_sd_v: float = 5e-6  # baseline white noise
    dropouts: list[tuple[float, int]] = field(default_factory=list)  # (start_s, n_samples)
    clip_v: float | None = None  # clip the raw signal at +/- this value (the rail)
    rail_jitter_lsb: float = 0.0  # SD (in QUANT_STEP_V) of the ADC noise on clipped samples; 0 = exact rails
    background: list[ContractionSpec] = field(default_factory=list)  # non-task bursts (not truth contractions)
    hum_hz: float | None = None  # mains frequency (50 or 60); None = no hum
    hum_rms_v: float = 0.0  # RMS of the whole hum waveform (fundamental + harmonics)
    hum_harmonics: tuple[tuple[int, float], ...] = ((3, 0.25), (5, 0.10))  # (order, amplitude / fundamental)
    hum_am_depth: float = 0.0  # slow (0.05-0.2 Hz) sinusoidal amplitude wander, relative
    hum_drift_hz: float = 0.0  # slow (0.03 Hz) wander of the mains frequency, +/- Hz
    status: str = "ok"  # 'ok' | 'disconnected' (no EMG: noise/hum only) | 'dead' (constant dead_value_v)
    dead_value_v: float = 0.0


@dataclass
class SyntheticSpec:
    rate: float = 990.0
    duration_s: float = 60.0
    channels: list[ChannelSpec] = field(default_factory=lambda: [ChannelSpec(), ChannelSpec()])
    with_points: bool = True  # add one 3-D point ("PlayerPosition") like GHOSTLY files
    point_rate: float | None = None  # default: 33 Hz at 990 Hz, else rate / 20
    ghostly_labels: bool = True  # 'CHn Raw' + 'CHn activated'; False: plain 'EMGn' labels
    ghostly_metadata: bool = True
    game_score: int = 12
    game_level: int = 1
    time: tuple[int, int, int, int, int] = (2024, 5, 6, 14, 30)
    seed: int = 1
    quantize_v: float | None = None  # round every raw row to this step (QUANT_STEP_V for 16 bits)
    activated: str = "device"  # 'device' | 'noise' (junk: an analysis must not read it)


def ghostly_file_name(spec: SyntheticSpec, seconds: int = 17, frac: str = "0881") -> str:
    y, mo, d, h, mi = spec.time
    return f"Ghostly_Emg_{y:04d}{mo:02d}{d:02d}_{h:02d}-{mi:02d}-{seconds:02d}-{frac}.c3d"


def _trapezoid(length: int, ramp: int) -> NDArray[np.float64]:
    shape = np.ones(length)
    r = min(ramp, length // 2)
    if r > 0:
        shape[:r] = np.linspace(0, 1, r)
        shape[length - r :] = np.linspace(1, 0, r)
    return shape


def _span(start_s: float, duration_s: float, rate: float, n: int, what: object) -> tuple[int, int]:
    s, e = round(start_s * rate), round((start_s + duration_s) * rate)
    if s < 0 or e > n:
        raise ValueError(f"{what} does not fit in the {n / rate:g} s recording")
    return s, e


def _slow_modulation(rng: np.random.Generator, n: int, rate: float, cutoff_hz: float = 1.5) -> NDArray[np.float64]:
    """Stationary zero-mean, unit-SD random modulation below ``cutoff_hz`` over ``n`` samples
    (segments of it keep SD ~1 on average; a short one is not stretched to a full swing)."""
    m = signal.sosfiltfilt(signal.butter(2, cutoff_hz, fs=rate, output="sos"), rng.normal(0.0, 1.0, n))
    sd = m.std()
    return (m - m.mean()) / sd if sd > 0 else np.zeros(n)


def _hum(ch: ChannelSpec, rate: float, n: int, rng: np.random.Generator) -> tuple[NDArray[np.float64], dict[str, Any]]:
    t = np.arange(n) / rate
    f0 = float(cast(float, ch.hum_hz))  # the caller checks hum_hz is not None
    if ch.hum_drift_hz:
        inst = f0 + ch.hum_drift_hz * np.sin(2 * np.pi * 0.03 * t + rng.uniform(0, 2 * np.pi))
        phase = 2 * np.pi * np.cumsum(inst) / rate
    else:
        phase = 2 * np.pi * f0 * t
    fundamental = np.sin(phase + rng.uniform(0, 2 * np.pi))
    wave = fundamental.copy()
    harmonics = []
    for order, rel in ch.hum_harmonics:
        ph = rng.uniform(0, 2 * np.pi)
        if order * f0 < 0.5 * rate and rel > 0:
            wave += rel * np.sin(order * phase + ph)
            harmonics.append((int(order), float(rel)))
    if ch.hum_am_depth:
        am = 1.0 + ch.hum_am_depth * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 2 * np.pi))
        wave *= am
        fundamental *= am
    scale = ch.hum_rms_v / np.sqrt(np.mean(wave**2))
    info = {
        "hz": f0,
        "rms_v": float(ch.hum_rms_v),
        "fundamental_rms_v": float(scale * np.sqrt(np.mean(fundamental**2))),
        "harmonics": harmonics,
        "am_depth": float(ch.hum_am_depth),
        "drift_hz": float(ch.hum_drift_hz),
    }
    return scale * wave, info


def _merge_runs(idx: NDArray[np.intp], gap: int) -> list[tuple[int, int]]:
    """(start, end exclusive) sample runs of sorted indices, joined across gaps <= ``gap``."""
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _channel_signal(
    ch: ChannelSpec,
    rate: float,
    n: int,
    rng: np.random.Generator,
    seed: int = 1,
    index: int = 0,
    quantize_v: float | None = None,
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """Raw row of one channel and what the truth needs to know about it (samples)."""
    if ch.status not in ("ok", "disconnected", "dead"):
        raise ValueError(f"unknown channel status {ch.status!r}")
    if ch.status != "ok" and (ch.contractions or ch.background):
        raise ValueError(f"a {ch.status} channel has no muscle activity: no contractions or background bursts")
    x = rng.normal(0.0, ch.noise_sd_v, n)
    info: dict[str, Any] = {"hum": None, "clipped": np.zeros(0, dtype=np.int64)}
    if ch.contractions or ch.background:
        band = signal.butter(4, [20.0, min(450.0, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
        carrier = signal.sosfilt(band, rng.normal(0.0, 1.0, n))
        carrier /= carrier.std()
        modulation = None
        for c in list(ch.contractions) + list(ch.background):
            s, e = _span(c.start_s, c.duration_s, rate, n, f"contraction {c}")
            shape = _trapezoid(e - s, max(1, int(c.ramp_s * rate)))
            if c.fluctuation:
                if modulation is None:
                    modulation = _slow_modulation(np.random.default_rng([seed, index, _FLUCTUATION]), n, rate)
                shape *= np.clip(1.0 + c.fluctuation * modulation[s:e], 0.2, None)
            x[s:e] += c.amplitude_v * shape * carrier[s:e]
            if c.surge is not None:
                off, dur, amp = c.surge
                ss, se = _span(c.start_s + off, dur, rate, n, f"surge of {c}")
                if ss < s or se > e:
                    raise ValueError(f"the surge of {c} is not inside the contraction")
                x[ss:se] += amp * _trapezoid(se - ss, max(1, int(0.03 * rate))) * carrier[ss:se]
    if ch.hum_hz is not None and ch.hum_rms_v > 0:
        hum, info["hum"] = _hum(ch, rate, n, np.random.default_rng([seed, index, _HUM]))
        x += hum
    if ch.status == "dead":
        x[:] = ch.dead_value_v
    if ch.clip_v is not None:
        clipped = np.abs(x) >= ch.clip_v
        info["clipped"] = np.flatnonzero(clipped)
        np.clip(x, -ch.clip_v, ch.clip_v, out=x)
        if ch.rail_jitter_lsb > 0 and info["clipped"].size:
            jit = np.random.default_rng([seed, index, _JITTER])
            x[clipped] += jit.normal(0.0, ch.rail_jitter_lsb * QUANT_STEP_V, info["clipped"].size)
    if quantize_v:
        np.multiply(np.round(x / quantize_v), quantize_v, out=x)
    for start_s, length in ch.dropouts:
        s = round(start_s * rate)
        x[s : s + length] = DROPOUT_VALUE
    return x, info


def _activated(x: NDArray[np.float64], rate: float) -> NDArray[np.float64]:
    """Device-like 'activated' channel: an envelope set to exactly 0 below its own threshold."""
    sos = signal.butter(2, 5.0, fs=rate, output="sos")
    env = signal.sosfilt(sos, np.abs(x))
    return np.where(env > 50e-6, env, 0.0)


def _interval_overlap(s: float, e: float, spans: list[tuple[float, float]]) -> float:
    """Seconds of [s, e] covered by the union of ``spans``."""
    pts = sorted((max(a, s), min(b, e)) for a, b in spans if b > s and a < e)
    total, cur_s = 0.0, 0.0  # cur_s is read only once cur_e is set
    cur_e: float | None = None
    for a, b in pts:
        if cur_e is None or a > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def _channel_truth(ch: ChannelSpec, info: dict[str, Any], rate: float) -> dict[str, Any]:
    sat_spans = [
        (s / rate, e / rate, int(e - s)) for s, e in _merge_runs(info["clipped"], round(SATURATION_MERGE_S * rate))
    ]
    drop_spans = [(st, st + length / rate, int(length)) for st, length in ch.dropouts]
    artifacts: list[dict[str, Any]] = sorted(
        [{"kind": "saturation", "start_s": s, "end_s": e, "n_samples": k} for s, e, k in sat_spans]
        + [{"kind": "dropout", "start_s": s, "end_s": e, "n_samples": k} for s, e, k in drop_spans],
        key=lambda a: a["start_s"],
    )
    spans = [(a["start_s"], a["end_s"]) for a in artifacts]
    events = []
    for c in ch.contractions:
        s, e = c.start_s, c.start_s + c.duration_s
        covered = {
            k: _interval_overlap(s, e, [(a["start_s"], a["end_s"]) for a in artifacts if a["kind"] == k])
            for k in ("saturation", "dropout")
        }
        clean = c.duration_s - _interval_overlap(s, e, spans)
        expected = clean >= EXPECTED_MIN_CLEAN_S
        events.append(
            {
                "start_s": s,
                "end_s": e,
                "duration_s": c.duration_s,
                "amplitude_v": c.amplitude_v,
                "ramp_s": min(c.ramp_s, c.duration_s / 2),
                "fluctuation": c.fluctuation,
                "surge": c.surge,
                "clean_s": clean,
                "corrupted_s": c.duration_s - clean,
                "expected": expected,
                "excluded_by": None if expected else max(covered, key=lambda k: covered[k]),
            }
        )
    ref = min((c.amplitude_v for c in ch.contractions), default=None)
    background = [
        {
            "start_s": b.start_s,
            "end_s": b.start_s + b.duration_s,
            "duration_s": b.duration_s,
            "amplitude_v": b.amplitude_v,
            "ratio_to_min_task": b.amplitude_v / ref if ref else None,
        }
        for b in ch.background
    ]
    return {
        "contractions": [(c.start_s, c.duration_s, c.amplitude_v) for c in ch.contractions],
        "dropouts": list(ch.dropouts),
        "clip_v": ch.clip_v,
        "status": ch.status,
        "noise_sd_v": ch.noise_sd_v,
        "events": events,
        "expected": [(ev["start_s"], ev["end_s"]) for ev in events if ev["expected"]],
        "excluded": [(ev["start_s"], ev["end_s"]) for ev in events if not ev["expected"]],
        "background": background,
        "artifacts": artifacts,
        "dropout_spans": [(s, e) for s, e, _ in drop_spans],
        "saturation": None
        if ch.clip_v is None
        else {
            "rail_v": ch.clip_v,
            "jitter_lsb": ch.rail_jitter_lsb,
            "n_clipped": int(info["clipped"].size),
            "spans": [(s, e) for s, e, _ in sat_spans],
        },
        "hum": info["hum"],
    }


def write_synthetic_c3d(path: str | os.PathLike[str], spec: SyntheticSpec) -> dict[str, Any]:
    """Write ``spec`` to ``path``; return the ground truth (float64 analogs included)."""
    import ezc3d

    rng = np.random.default_rng(spec.seed)
    rate = float(spec.rate)
    point_rate = spec.point_rate or (33.0 if rate == 990.0 else rate / 20.0)
    n_sub = round(rate / point_rate)
    n_frames = int(np.ceil(spec.duration_s * rate / n_sub))
    n = n_frames * n_sub
    made = [_channel_signal(ch, rate, n, rng, spec.seed, i, spec.quantize_v) for i, ch in enumerate(spec.channels)]
    raws = [x for x, _ in made]
    if spec.activated not in ("device", "noise"):
        raise ValueError(f"unknown activated mode {spec.activated!r}")
    if spec.ghostly_labels:
        labels = [f"CH{i + 1} Raw" for i in range(len(raws))] + [f"CH{i + 1} activated" for i in range(len(raws))]
        if spec.activated == "device":
            act = [_activated(x, rate) for x in raws]
        else:
            junk = np.random.default_rng([spec.seed, 0, _ACTIVATED])
            act = [np.where(junk.random(n) < 0.3, np.abs(junk.normal(0, 200e-6, n)), 0.0) for _ in raws]
        data = np.vstack(raws + act)
    else:
        labels = [f"EMG{i + 1}" for i in range(len(raws))]
        data = np.vstack(raws)

    c = ezc3d.c3d()
    c["parameters"]["POINT"]["RATE"]["value"] = np.array([point_rate])
    c["parameters"]["ANALOG"]["RATE"]["value"] = np.array([rate])
    c["parameters"]["ANALOG"]["LABELS"]["value"] = labels
    if spec.with_points:
        c["parameters"]["POINT"]["LABELS"]["value"] = ["PlayerPosition"]
        pts = np.zeros((4, 1, n_frames))
        pts[:3, 0, :] = rng.normal(0, 100, (3, n_frames))
        pts[3] = 1.0
    else:
        pts = np.zeros((4, 0, n_frames))
    c["data"]["points"] = pts
    c["data"]["analogs"] = data[np.newaxis, :, :]
    if spec.ghostly_metadata:
        y, mo, d, h, mi = spec.time
        c.add_parameter("INFO", "SYSTEM", ["OpenFeasyo"])
        c.add_parameter("INFO", "GAME_NAME", ["Ghostly"])
        c.add_parameter("INFO", "GAME_LEVEL", [spec.game_level])
        c.add_parameter("INFO", "GAME_LEVEL_NAME", [" ---"])
        c.add_parameter("INFO", "DURATION", [int(spec.duration_s) - 1])
        c.add_parameter("INFO", "THERAPIST_ID", ["---"])
        c.add_parameter("INFO", "GROUP_ID", ["N/A"])
        c.add_parameter("INFO", "TIME", [str(y), str(mo), str(d), str(h), str(mi)])
        c.add_parameter("SUBJECTS", "PLAYER_NAME", ["Synthetic"])
        c.add_parameter("SUBJECTS", "GAME_SCORE", [float(spec.game_score)])
    c.write(str(path))
    # The file stores float32: ground truth is what a reader must return.
    stored = data.astype(np.float32).astype(np.float64)
    return {
        "path": Path(path),
        "rate": rate,
        "n_samples": n,
        "labels": labels,
        "analogs": stored,
        "quantize_v": spec.quantize_v,
        "channels": [_channel_truth(ch, info, rate) for ch, (_, info) in zip(spec.channels, made)],
    }


def regular_contractions(
    n: int, duration_s: float, period_s: float, first_s: float = 2.0, amplitude_v: float = 300e-6
) -> list[ContractionSpec]:
    """``n`` equal contractions every ``period_s`` seconds starting at ``first_s``."""
    return [ContractionSpec(first_s + i * period_s, duration_s, amplitude_v) for i in range(n)]


def _generator(rng: np.random.Generator | int) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def varied_contractions(
    rng: np.random.Generator | int,
    n: int,
    *,
    first_s: float = 2.0,
    amplitude_v: tuple[float, float] = (150e-6, 500e-6),
    duration_s: tuple[float, float] = (0.3, 4.0),
    ramp_s: tuple[float, float] = (0.05, 0.3),
    rest_s: tuple[float, float] = (2.0, 4.5),
    fluctuation: float = 0.0,
) -> list[ContractionSpec]:
    """``n`` task contractions with uniformly drawn amplitude (V RMS), duration, ramp and rest.

    Ramps are capped at 40 % of the contraction's duration (a 0.3 s contraction has at most
    0.12 s ramps). The last contraction ends at most ``n * (max duration + max rest)`` after
    ``first_s``; size the recording from ``contractions[-1]``.
    """
    g = _generator(rng)
    out, t = [], first_s
    for _ in range(n):
        dur = float(g.uniform(*duration_s))
        ramp = min(float(g.uniform(*ramp_s)), 0.4 * dur)
        out.append(
            ContractionSpec(round(t, 3), round(dur, 3), float(g.uniform(*amplitude_v)), round(ramp, 3), fluctuation)
        )
        t += dur + float(g.uniform(*rest_s))
    return out


def background_bursts(
    rng: np.random.Generator | int,
    contractions: list[ContractionSpec],
    recording_s: float,
    *,
    per_gap: float = 0.6,
    ratio: tuple[float, float] = (0.10, 0.25),
    duration_s: tuple[float, float] = (0.1, 0.5),
    clearance_s: float = 0.8,
    ramp_s: float = 0.03,
) -> list[ContractionSpec]:
    """Short non-task bursts in the rest periods, at least ``clearance_s`` from any contraction.

    Each rest gap long enough gets a burst with probability ``per_gap``; its amplitude is a
    fraction in ``ratio`` of the WEAKEST task contraction of the channel (so every burst is
    at most ``ratio[1]`` of every task contraction), its duration is drawn from ``duration_s``.
    """
    g = _generator(rng)
    ref = min(c.amplitude_v for c in contractions)
    edges = (
        [0.0]
        + [x for c in sorted(contractions, key=lambda c: c.start_s) for x in (c.start_s, c.start_s + c.duration_s)]
        + [recording_s]
    )
    out = []
    for lo, hi in zip(edges[::2], edges[1::2]):
        lo, hi = lo + clearance_s, hi - clearance_s
        dur = float(g.uniform(*duration_s))
        take = g.random() < per_gap
        start = float(g.uniform(lo, hi - dur)) if hi - lo > dur else None
        amp = float(g.uniform(*ratio)) * ref
        if take and start is not None:
            out.append(ContractionSpec(round(start, 3), round(dur, 3), amp, min(ramp_s, 0.4 * dur)))
    return out


def disconnected_channel(kind: str = "hum", hum_hz: float = 50.0) -> ChannelSpec:
    """A channel with no EMG at all.

    'hum': a floating electrode picking up mains (60 uV RMS hum with harmonics and a slow
    amplitude wander, over 3 uV of noise); 'lsb': near-flat quantisation noise (0.6 LSB of
    noise: use with ``SyntheticSpec.quantize_v = QUANT_STEP_V``).
    """
    if kind == "hum":
        return ChannelSpec(noise_sd_v=3e-6, hum_hz=hum_hz, hum_rms_v=60e-6, hum_am_depth=0.3, status="disconnected")
    if kind == "lsb":
        return ChannelSpec(noise_sd_v=0.6 * QUANT_STEP_V, status="disconnected")
    raise ValueError(f"unknown disconnected kind {kind!r} ('hum' or 'lsb')")


def dead_channel(value_v: float = 0.0) -> ChannelSpec:
    """A dead channel: every sample exactly ``value_v``."""
    return ChannelSpec(status="dead", dead_value_v=value_v)
