"""Validation of contraction detection against exact synthetic truth and the GHOSTLY device.

Run: .venv/bin/python bench/validate_detection.py [--plot DIR] [--samples DIR] [--cases a,b] [--keep DIR]

1. Synthetic suite (libs.emg.validation.synthetic_suite): each case is written as a C3D
   and analysed with the public API (libs.emg.analyze_file); detections are matched one to
   one with the truth (overlap or onsets within 300 ms). Targets: event F1 >= 0.95 per case
   and pooled, median |onset error| <= 50 ms, and each channel's flag/usable expectations.
2. Real recordings ($GHOSTLY_SAMPLES or ../shared/samples; skipped when absent): our
   detections vs the device's 'activated' events (runs > 0 joined across < 200 ms gaps,
   runs < 100 ms dropped; both sides without events touching an artefact span + margin).
   Target: pooled F1 >= 0.90. The device envelope is causal, ours zero-phase: the device's
   onsets lag ours, so onset errors vs the device are reported but not a target.

Prints the tables, the processing parameters and PASS/FAIL; exit code 0 on PASS, 1 on FAIL.
``--plot DIR`` writes one PNG per case and per real file (raw, envelope, truth/device spans,
detections).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SAMPLES
from libs.emg import PROCESSING_VERSION, AnalysisSettings, ProcessingParams, analyze_file
from libs.emg import validation as v

_UV = 1e6


def _params_of(res) -> ProcessingParams:
    try:
        return ProcessingParams(**res.parameters["settings"]["processing"])
    except Exception:  # noqa: BLE001 - an older/newer analysis: plot with the defaults
        return ProcessingParams()


def _envelope(raw: np.ndarray, rate: float, params: ProcessingParams) -> np.ndarray:
    from libs.emg import envelope

    return envelope(raw, rate, params)


def _lane(ax, rows: list[tuple[str, list[tuple[float, float]], str]]) -> None:
    """Event lane: one row of bars per (label, intervals, colour)."""
    for k, (_label, ivs, colour) in enumerate(rows):
        if ivs:
            ax.broken_barh([(s, max(e - s, 0.02)) for s, e in ivs], (k + 0.1, 0.8), color=colour)
    ax.set_yticks([k + 0.5 for k in range(len(rows))])
    ax.set_yticklabels([r[0] for r in rows], fontsize=7)
    ax.set_ylim(0, len(rows))


def plot_case(result: v.CaseResult, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = result.truth
    assert truth is not None, "a case without its ground truth is not plotted"
    rate, n_ch = truth["rate"], len(truth["channels"])
    params = _params_of(result.analysis) if result.analysis is not None else ProcessingParams()
    t = np.arange(truth["n_samples"]) / rate
    fig, axes = plt.subplots(
        3 * n_ch, 1, sharex=True, figsize=(20, 3.0 * 2.2 * n_ch), gridspec_kw={"height_ratios": [1, 1.3, 0.7] * n_ch}
    )
    for i, (tc, score) in enumerate(zip(truth["channels"], result.channels)):
        raw = truth["analogs"][i]
        ax_raw, ax_env, ax_ev = axes[3 * i], axes[3 * i + 1], axes[3 * i + 2]
        ax_raw.plot(t, raw * _UV, lw=0.3, color="#1f77b4")
        for a in tc["artifacts"]:
            ax_raw.axvspan(a["start_s"], a["end_s"], color="#9467bd", alpha=0.3, lw=0)
        ok = np.abs(raw) < 5e-3
        lim = float(np.percentile(np.abs(raw[ok]), 99.9)) * _UV * 1.3 if ok.any() else 1.0
        ax_raw.set_ylim(-max(lim, 1.0), max(lim, 1.0))
        ax_raw.set_ylabel("raw (uV)")
        m = score.match
        ax_raw.set_title(
            f"{result.name} / {score.channel} [{tc['status']}]: truth {m.n_truth}, detected "
            f"{m.n_detected}, TP {m.tp} FP {m.fp} FN {m.fn}, F1 {m.f1:.3f}, median |onset| "
            f"{v._fmt_ms(m.median_abs_onset_ms)} ms | flags: {', '.join(score.flags) or '-'}"
            + ("" if not score.failures else " | " + "; ".join(f.split(": ", 1)[-1] for f in score.failures)),
            loc="left",
            fontsize=9,
        )
        env = _envelope(raw, rate, params)
        ax_env.plot(t, env * _UV, lw=0.7, color="#1f77b4")
        if result.analysis is not None:
            det_info = v._channel_of(result.analysis, i).detection
            for key, ls in (("threshold_v", "-"), ("offset_threshold_v", ":")):
                if isinstance(det_info, dict) and det_info.get(key):
                    ax_env.axhline(det_info[key] * _UV, color="#d62728", lw=0.8, ls=ls, label=key)
        good = env[np.isfinite(env) & (np.abs(raw) < 5e-3)]
        ax_env.set_ylim(0, max(float(np.percentile(good, 99.9)) * _UV * 1.2 if good.size else 1.0, 1.0))
        ax_env.set_ylabel("envelope (uV)")
        det = v.intervals(v._channel_of(result.analysis, i).contractions) if result.analysis is not None else []
        exp = tc["expected"]
        tp_d = {d for d, _ in m.pairs}
        fn_t = set(m.unmatched_truth)
        _lane(
            ax_ev,
            [
                ("artefact", [(a["start_s"], a["end_s"]) for a in tc["artifacts"]], "#9467bd"),
                ("background", [(b["start_s"], b["end_s"]) for b in tc["background"]], "#ff9f1c"),
                ("excluded", tc["excluded"], "#9e9e9e"),
                ("truth", [e for j, e in enumerate(exp) if j not in fn_t], "#2ca02c"),
                ("truth FN", [e for j, e in enumerate(exp) if j in fn_t], "#d62728"),
                ("det TP", [e for j, e in enumerate(det) if j in tp_d], "#1f77b4"),
                ("det FP", [e for j, e in enumerate(det) if j not in tp_d], "#d62728"),
            ],
        )
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"{result.name}: {result.case.description}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out = out_dir / f"{result.name}.png"
    fig.savefig(out, dpi=70)
    plt.close(fig)
    return out


def plot_real(path: Path, rows: list[v.DeviceAgreement], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from libs.emg import read_c3d
    from libs.emg.c3d_reader import muscle_channels

    rec = read_c3d(path)
    res = analyze_file(path)
    params = _params_of(res)
    margin = v._margin_s(res)
    muscles = {m.name: m for m in muscle_channels(rec)}
    t = np.arange(rec.n_samples) / rec.rate
    fig, axes = plt.subplots(
        2 * len(rows),
        1,
        sharex=True,
        figsize=(22, 3.0 * 1.9 * len(rows)),
        gridspec_kw={"height_ratios": [1.4, 0.6] * len(rows)},
    )
    for k, r in enumerate(rows):
        mc = muscles[r.channel]
        assert mc.activated_index is not None  # a device row: the channel has its activated channel
        ch = res.channel(r.channel)
        raw, act = rec.channel(mc.raw_index), rec.channel(mc.activated_index)
        env = _envelope(raw, rec.rate, params)
        ax, ax_ev = axes[2 * k], axes[2 * k + 1]
        ax.plot(t, env * _UV, lw=0.7, color="#1f77b4", label="envelope (ours)")
        ax.plot(t, act * _UV, lw=0.8, color="#e377c2", label="device activated")
        det = ch.detection if isinstance(ch.detection, dict) else {}
        if det.get("threshold_v"):
            ax.axhline(det["threshold_v"] * _UV, color="#d62728", lw=0.8, label="our onset threshold")
        ok = np.abs(raw) < 5e-3
        ax.set_ylim(
            0,
            max(
                float(np.percentile(env[ok], 99.9)) * _UV * 1.2 if ok.any() else 1.0, float(act.max()) * _UV * 1.1, 1.0
            ),
        )
        ax.legend(loc="upper right", fontsize=7)
        m = r.match
        ax.set_title(
            f"{path.name} / {r.channel}: device {m.n_truth}, detected {m.n_detected}, TP {m.tp} FP {m.fp} "
            f"FN {m.fn}, F1 {m.f1:.3f} | flags: {', '.join(r.flags) or '-'}",
            loc="left",
            fontsize=9,
        )
        dev_all = v.device_events(act, rec.rate)
        windows = [(a.start_s - margin, a.end_s + margin) for a in ch.quality.artifacts]
        _lane(
            ax_ev,
            [
                ("artefact+margin", windows, "#9467bd"),
                ("device", dev_all, "#e377c2"),
                ("ours", v.intervals(ch.contractions), "#1f77b4"),
            ],
        )
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    out = out_dir / f"real_{path.stem}.png"
    fig.savefig(out, dpi=60)
    plt.close(fig)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plot", type=Path, help="write one PNG per case / real file into this directory")
    ap.add_argument(
        "--samples", type=Path, help="real samples directory (default $GHOSTLY_SAMPLES or ../shared/samples)"
    )
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--keep", type=Path, help="write the synthetic C3D files here (default: a temporary directory)")
    args = ap.parse_args()
    if args.plot:
        args.plot.mkdir(parents=True, exist_ok=True)

    print(f"analysis {PROCESSING_VERSION}; processing parameters (settings.processing):")
    for k, val in asdict(AnalysisSettings().processing).items():
        print(f"  {k} = {val!r}")
    print(
        f"targets: synthetic event F1 >= {v.TARGET_EVENT_F1} per case and pooled, median |onset error| <= "
        f"{v.TARGET_ONSET_MS:g} ms; real pooled F1 vs device >= {v.TARGET_DEVICE_F1}; matching: overlap or "
        f"onsets within {v.MAX_ONSET_S * 1e3:.0f} ms, greedy one-to-one"
    )

    cases = v.synthetic_suite()
    if args.cases:
        wanted = {c.strip() for c in args.cases.split(",")}
        unknown = wanted - {c.name for c in cases}
        if unknown:
            print(f"unknown case(s): {', '.join(sorted(unknown))}; known: {', '.join(c.name for c in cases)}")
            return 2
        cases = [c for c in cases if c.name in wanted]
    print("\nsynthetic cases:")
    for c in cases:
        print(f"  {c.name} ({c.spec.duration_s:g} s, seed {c.spec.seed}): {c.description}")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        suite = v.run_suite(directory, cases)
        if args.plot:
            for r in suite.cases:
                if r.truth is not None:
                    plot_case(r, args.plot)
    print(f"\nSYNTHETIC ({time.perf_counter() - t0:.1f} s)")
    print(v.format_suite(suite))
    problems = suite.failures + [f for r in suite.cases for f in r.failures]
    for failure in problems:
        print(f"  FAIL {failure}")
    ok = suite.passed

    files = v.sample_files(args.samples or SAMPLES)
    if not files:
        where = args.samples or SAMPLES
        print(f"\nREAL: skipped (no C3D files in {where}; set GHOSTLY_SAMPLES)")
    else:
        rows: list[v.DeviceAgreement] = []
        for f in files:
            got = v.device_agreement(f)
            rows += got
            if args.plot:
                plot_real(f, got, args.plot)
        pooled = v.pool(r.match for r in rows)
        print(f"\nREAL vs device activated channel ({len(files)} files)")
        print(v.format_device(rows, pooled))
        print(
            "\n  device channel: threshold = value of the first non-zero sample of each raw run (median, p10-p90);"
            "\n  signed onset = ours - device (negative: we see the onset first)"
        )
        for row in rows:
            d = row.device
            thr = d["threshold_p10_p90_v"]
            dur = d["event_duration_s"]
            signed = np.median(row.match.onset_errors_s) * 1e3 if row.match.onset_errors_s else float("nan")
            print(
                f"  {row.file} {row.channel}: zeros {d['zero_fraction']:.1%}, raw runs {d['raw_runs']} "
                f"({d['raw_runs_under_100ms']} < 100 ms), threshold {d['threshold_v'] * _UV:.1f} uV "
                f"({thr[0] * _UV:.1f}-{thr[1] * _UV:.1f}), peak {d['peak_v'] * _UV:.0f} uV, events {d['events']}, "
                f"duration median {dur['median'] * 1e3:.0f} ms (p10 {dur['p10'] * 1e3:.0f}, p90 "
                f"{dur['p90'] * 1e3:.0f}, max {dur['max'] * 1e3:.0f}), signed onset {signed:+.0f} ms"
            )
        real_ok = pooled.f1 >= v.TARGET_DEVICE_F1
        print(
            f"  real pooled F1 {pooled.f1:.3f} {'>=' if real_ok else '<'} {v.TARGET_DEVICE_F1}: "
            f"{'PASS' if real_ok else 'FAIL'}"
        )
        ok = ok and real_ok

    if args.plot:
        print(f"\nplots in {args.plot}")
    p = suite.pooled
    print(
        f"\nsynthetic pooled F1 {p.f1:.3f}, median |onset| {v._fmt_ms(p.median_abs_onset_ms)} ms; "
        f"cases passed {sum(r.passed for r in suite.cases)}/{len(suite.cases)}"
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
