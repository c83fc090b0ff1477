"""`ghostly analyze FILE.c3d` - run the analysis core on one file and print the result.

``register(subparsers)`` lets the project CLI (libs/cli.py) mount the subcommand; this
module is also runnable on its own: ``python -m libs.emg.cli analyze FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys

from .analysis import SessionAnalysis, analyze_file
from .errors import EmgError
from .settings import AnalysisSettings


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("analyze", help="analyse one C3D file (statistics + performance score)")
    p.add_argument("file", help="path to a .c3d file")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--mvc-left", type=float, help="user MVC of the left muscle (V, envelope RMS)")
    p.add_argument("--mvc-right", type=float, help="user MVC of the right muscle (V, envelope RMS)")
    p.add_argument("--rpe", type=int, help="post-session RPE 0-10")
    p.add_argument("--bfr-aop", type=float, help="BFR pressure in %% of arterial occlusion pressure")
    p.add_argument("--duration-threshold", type=float, help="good-duration threshold in seconds (default 2.0)")
    p.add_argument("--target-contractions", type=int, help="target contractions per muscle (default 12)")
    p.add_argument("--game-points", type=int, help="game points achieved")
    p.set_defaults(func=run_analyze)
    return p


def _settings(args: argparse.Namespace) -> AnalysisSettings:
    mvc = {k: v for k, v in (("left", args.mvc_left), ("right", args.mvc_right)) if v is not None}
    kwargs = {"mvc_user": mvc, "rpe": args.rpe, "bfr_pressure_aop": args.bfr_aop, "game_points": args.game_points}
    if args.duration_threshold is not None:
        kwargs["duration_threshold_s"] = args.duration_threshold
    if args.target_contractions is not None:
        kwargs["target_contractions"] = args.target_contractions
    return AnalysisSettings(**kwargs)


def _fmt(v: object, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def format_text(res: SessionAnalysis) -> str:
    r, m, perf = res.recording, res.metadata, res.performance
    lines = [
        f"File: {r['file_name']}  ({r['reader']} reader, {r['rate_hz']:g} Hz, {r['duration_s']:.1f} s, "
        f"{r['n_samples']} samples)",
        f"Game: {m['game_name']} level {m['game_level']}  player {m['player_name']}  score {m['game_score']}  "
        f"time {m['session_datetime']}",
        f"Processing: {res.parameters['pipeline']}  version {res.processing_version}  {res.processing_time_ms:.1f} ms",
        "",
    ]
    rows = [
        ("side", "side", "s"), ("contractions", "total_contractions", "d"),
        ("good intensity", "good_contractions_intensity", "d"), ("good duration", "good_contractions_duration", "d"),
        ("good both", "good_contractions_both", "d"), ("completion rate", "completion_rate", ".2f"),
        ("intensity rate", "intensity_rate", ".2f"), ("duration rate", "duration_rate", ".2f"),
        ("muscle compliance", "muscle_compliance_score", ".2f"), ("MVC (V RMS)", "mvc_rms_value", ".3g"),
        ("MVC method", "mvc_calculation_method", "s"), ("MVC confidence", "mvc_confidence_score", ".2f"),
        ("max peak (V)", "mvc_peak_value", ".3g"), ("threshold (V)", "detection_threshold_v", ".3g"),
        ("artifacts", "artifacts_detected", "d"), ("noise (dBuV)", "noise_level_db", ".1f"),
        ("signal quality", "signal_quality_score", ".2f"), ("processing conf.", "processing_confidence", ".2f"),
    ]
    width = max(len(k) for k, _, _ in rows) + 2
    lines.append(" " * width + "".join(f"{c.channel_name:>22}" for c in res.channels))
    for label, attr, spec in rows:
        vals = "".join(f"{_fmt(getattr(c, attr), spec if spec not in ('s', 'd') else ''):>22}" for c in res.channels)
        lines.append(f"{label:<{width}}{vals}")
    for label, key in (("MDF (Hz)", "median_frequency_hz"), ("MNF (Hz)", "mean_frequency_hz"),
                       ("fatigue (Hz/min)", "fatigue_index_hz_per_min")):
        vals = "".join(f"{_fmt(getattr(c.descriptors, key), '.1f'):>22}" for c in res.channels)
        lines.append(f"{label:<{width}}{vals}")
    lines += ["", f"Overall performance: {perf.overall_performance_score:.1f} / 100"]
    for comp in ("compliance", "symmetry", "effort", "game"):
        score = getattr(perf, f"{comp}_score")
        if comp in perf.effective_weights:
            lines.append(f"  {comp:<11}{_fmt(score, '.1f'):>7}  weight {perf.effective_weights[comp]:.3f}")
        else:
            lines.append(f"  {comp:<11}{'-':>7}  excluded: {perf.components_excluded.get(comp)}")
    lines += [f"  ! {f}" for f in perf.flags]
    if res.warnings:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in res.warnings]
    return "\n".join(lines)


def run_analyze(args: argparse.Namespace) -> int:
    try:
        res = analyze_file(args.file, _settings(args))
    except EmgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print(format_text(res))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ghostly")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
