"""Synthetic GHOSTLY-like C3D files with known ground truth (for tests of every service).

    truth = write_synthetic_c3d(path, SyntheticSpec(rate=990, channels=[ChannelSpec(...)]))

Each contraction is Gaussian noise band-limited to 20-450 Hz times a trapezoid (20 ms ramps)
on a white-noise baseline, so the envelope crosses the detection threshold at the nominal
start/end within a few tens of milliseconds. Files are written by ezc3d (float, Intel), with
GHOSTLY labels ('CHn Raw', 'CHn activated'), INFO/SUBJECTS parameters, and optionally a
3-D point so that both data layouts are exercised.

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

import numpy as np
from scipy import signal

DROPOUT_VALUE = -0.00550008  # V, GHOSTLY dropout fill just past the rail
RAIL_V = 0.00549  # V, GHOSTLY ADC rail


@dataclass
class ContractionSpec:
    start_s: float
    duration_s: float
    amplitude_v: float = 300e-6  # RMS of the raw EMG during the plateau


@dataclass
class ChannelSpec:
    contractions: list[ContractionSpec] = field(default_factory=list)
    noise_sd_v: float = 5e-6  # baseline white noise
    dropouts: list[tuple[float, int]] = field(default_factory=list)  # (start_s, n_samples)
    clip_v: float | None = None  # clip the raw signal at +/- this value


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


def ghostly_file_name(spec: SyntheticSpec, seconds: int = 17, frac: str = "0881") -> str:
    y, mo, d, h, mi = spec.time
    return f"Ghostly_Emg_{y:04d}{mo:02d}{d:02d}_{h:02d}-{mi:02d}-{seconds:02d}-{frac}.c3d"


def _channel_signal(ch: ChannelSpec, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(0.0, ch.noise_sd_v, n)
    if ch.contractions:
        band = signal.butter(4, [20.0, min(450.0, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
        carrier = signal.sosfilt(band, rng.normal(0.0, 1.0, n))
        carrier /= carrier.std()
        ramp = max(1, int(0.02 * rate))
        for c in ch.contractions:
            s, e = int(round(c.start_s * rate)), int(round((c.start_s + c.duration_s) * rate))
            if s < 0 or e > n:
                raise ValueError(f"contraction {c} does not fit in the {n / rate:g} s recording")
            shape = np.ones(e - s)
            r = min(ramp, (e - s) // 2)
            shape[:r] = np.linspace(0, 1, r)
            shape[e - s - r:] = np.linspace(1, 0, r)
            x[s:e] += c.amplitude_v * shape * carrier[s:e]
    if ch.clip_v is not None:
        np.clip(x, -ch.clip_v, ch.clip_v, out=x)
    for start_s, length in ch.dropouts:
        s = int(round(start_s * rate))
        x[s:s + length] = DROPOUT_VALUE
    return x


def _activated(x: np.ndarray, rate: float) -> np.ndarray:
    """Device-like 'activated' channel: an envelope set to exactly 0 below its own threshold."""
    sos = signal.butter(2, 5.0, fs=rate, output="sos")
    env = signal.sosfilt(sos, np.abs(x))
    return np.where(env > 50e-6, env, 0.0)


def write_synthetic_c3d(path: str | os.PathLike, spec: SyntheticSpec) -> dict:
    """Write ``spec`` to ``path``; return the ground truth (float64 analogs included)."""
    import ezc3d

    rng = np.random.default_rng(spec.seed)
    rate = float(spec.rate)
    point_rate = spec.point_rate or (33.0 if rate == 990.0 else rate / 20.0)
    n_sub = int(round(rate / point_rate))
    n_frames = int(np.ceil(spec.duration_s * rate / n_sub))
    n = n_frames * n_sub
    raws = [_channel_signal(ch, rate, n, rng) for ch in spec.channels]
    if spec.ghostly_labels:
        labels = [f"CH{i + 1} Raw" for i in range(len(raws))] + [f"CH{i + 1} activated" for i in range(len(raws))]
        data = np.vstack(raws + [_activated(x, rate) for x in raws])
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
        "channels": [
            {
                "contractions": [(c_.start_s, c_.duration_s, c_.amplitude_v) for c_ in ch.contractions],
                "dropouts": list(ch.dropouts),
                "clip_v": ch.clip_v,
            }
            for ch in spec.channels
        ],
    }


def regular_contractions(n: int, duration_s: float, period_s: float, first_s: float = 2.0,
                         amplitude_v: float = 300e-6) -> list[ContractionSpec]:
    """``n`` equal contractions every ``period_s`` seconds starting at ``first_s``."""
    return [ContractionSpec(first_s + i * period_s, duration_s, amplitude_v) for i in range(n)]
