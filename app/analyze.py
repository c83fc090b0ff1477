"""`ghostly analyze FILE.c3d` - run the analysis core on one file and print the result.

``register(subparsers)`` lets the project CLI (app/cli.py) mount the subcommand; this
module is also runnable on its own: ``python -m app.analyze analyze FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from libs.emg.analysis import ChannelAnalysis, SessionAnalysis, analyze
from libs.emg.c3d_reader import read_c3d
from libs.emg.errors import EmgError
from libs.emg.settings import AnalysisSettings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser("analyze", help="analyse one C3D file (statistics + performance score)")
    p.add_argument("file", help="path to a .c3d file")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also write a picture of the analysis (raw, envelope, "
        "thresholds, contractions, artefacts, flags, device activation)",
    )
    p.add_argument("--plot-window", metavar="START:END", help="zoom the plot on START..END seconds")
    p.add_argument("--mvc-left", type=float, help="calibrated MVC of the left muscle (uV, envelope RMS)")
    p.add_argument("--mvc-right", type=float, help="calibrated MVC of the right muscle (uV, envelope RMS)")
    p.add_argument("--rpe", type=int, help="post-session RPE 0-10")
    p.add_argument("--bfr-aop", type=float, help="BFR pressure in %% of arterial occlusion pressure")
    p.add_argument("--duration-threshold", type=float, help="good-duration threshold in seconds (default 2.0)")
    p.add_argument("--target-contractions", type=int, help="target contractions per muscle (default 12)")
    p.add_argument("--game-points", type=int, help="game points achieved")
    p.set_defaults(func=run_analyze)
    return p


def _settings(args: argparse.Namespace) -> AnalysisSettings:
    mvc = {}
    for side, v in (("left", args.mvc_left), ("right", args.mvc_right)):
        if v is None:
            continue
        if not 1.0 <= v <= 1e5:  # 0.0004 is a value in volts: refuse rather than guess
            raise SystemExit(f"error: --mvc-{side} is in uV of the RMS envelope (e.g. 400), got {v:g}")
        mvc[side] = v * 1e-6
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


def _uv(v: float | None, unit: str = "V") -> str:
    """A value in the channel's unit (V, mV, uV) shown in uV."""
    from libs.emg.analysis import _UNIT_SCALE

    return "-" if v is None else f"{v * 1e6 / _UNIT_SCALE.get(unit.upper(), 1.0):.1f}"


def _contraction_table(ch: ChannelAnalysis) -> list[str]:
    """One line per contraction: start, duration, peak (uV), % of MVC, criteria met."""
    lines = [
        f"  {ch.channel_name}: {len(ch.contractions)} contraction(s); MVC {_uv(ch.mvc_rms_value, ch.unit)} uV "
        f"({ch.mvc_source}), intensity >= {ch.mvc_threshold_percentage:.0%} MVC, "
        f"duration >= {ch.duration_threshold_seconds:g} s"
    ]
    if not ch.contractions:
        return lines
    lines.append(f"  {'#':>4} {'start s':>9} {'dur s':>7} {'peak uV':>9} {'% MVC':>7}  criteria")
    for i, c in enumerate(ch.contractions, 1):
        pct = f"{100 * c.peak_v / ch.mvc_rms_value:.0f}" if ch.mvc_rms_value > 0 else "-"
        met = [name for name, ok in (("intensity", c.meets_intensity), ("duration", c.meets_duration)) if ok]
        note = f" (partially masked: {c.masked_s:.2f} s cut)" if c.partially_masked else ""
        lines.append(
            f"  {i:>4} {c.start_s:>9.2f} {c.duration_s:>7.2f} {_uv(c.peak_v, ch.unit):>9} {pct:>7}  "
            f"{' + '.join(met) or 'none'}{note}"
        )
    return lines


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
    rows: list[tuple[str, Callable[[ChannelAnalysis], object]]] = [
        ("side", lambda c: c.side),
        ("usable", lambda c: "yes" if c.usable else "NO"),
        ("signal flags", lambda c: ",".join(c.signal_flags) or "-"),
        ("contractions", lambda c: c.total_contractions),
        ("good intensity", lambda c: c.good_contractions_intensity),
        ("good duration", lambda c: c.good_contractions_duration),
        ("good both", lambda c: c.good_contractions_both),
        ("completion rate", lambda c: f"{c.completion_rate:.2f}"),
        ("intensity rate", lambda c: f"{c.intensity_rate:.2f}"),
        ("duration rate", lambda c: f"{c.duration_rate:.2f}"),
        ("muscle compliance", lambda c: f"{c.muscle_compliance_score:.2f}"),
        ("MVC (uV RMS)", lambda c: _uv(c.mvc_rms_value, c.unit)),
        ("MVC source", lambda c: c.mvc_source),
        ("MVC confidence", lambda c: f"{c.mvc_confidence_score:.2f}"),
        ("max peak (uV)", lambda c: _uv(c.mvc_peak_value, c.unit)),
        ("onset thr. (uV)", lambda c: _uv(c.detection["threshold_v"], c.unit)),
        ("offset thr. (uV)", lambda c: _uv(c.detection["offset_threshold_v"], c.unit)),
        ("onset rule", lambda c: c.detection["threshold_rule"]),
        ("noise floor (uV)", lambda c: _uv(c.detection["baseline_v"], c.unit)),
        ("strong level (uV)", lambda c: _uv(c.detection["strong_level_v"], c.unit)),
        (
            "mains (Hz)",
            lambda c: _fmt(c.detection["mains"]["frequency_hz"], ".2f") if c.detection["mains"]["present"] else "-",
        ),
        ("artifacts", lambda c: c.artifacts_detected),
        ("noise (dBuV)", lambda c: _fmt(c.noise_level_db, ".1f")),
        ("signal quality", lambda c: f"{c.signal_quality_score:.2f}"),
        ("processing conf.", lambda c: f"{c.processing_confidence:.2f}"),
        ("MDF (Hz)", lambda c: _fmt(c.descriptors.median_frequency_hz, ".1f")),
        ("MNF (Hz)", lambda c: _fmt(c.descriptors.mean_frequency_hz, ".1f")),
        ("fatigue (Hz/min)", lambda c: _fmt(c.descriptors.fatigue_index_hz_per_min, ".1f")),
    ]
    width = max(len(k) for k, _ in rows) + 2
    col = max([22] + [len(",".join(c.signal_flags)) + 2 for c in res.channels])
    lines.append(" " * width + "".join(f"{c.channel_name:>{col}}" for c in res.channels))
    for label, get in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{_fmt(get(c)):>{col}}" for c in res.channels))
    lines += ["", "Contractions:"]
    for c in res.channels:
        lines += _contraction_table(c)
    overall = perf.overall_performance_score
    lines += ["", "Overall performance: " + ("not scored" if overall is None else f"{overall:.1f} / 100")]
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


def _window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        a, b = (float(x) for x in text.split(":"))
    except ValueError:
        raise SystemExit(f"error: --plot-window must be START:END in seconds, got {text!r}") from None
    if not 0 <= a < b:
        raise SystemExit(f"error: --plot-window needs 0 <= START < END, got {text!r}")
    return a, b


def run_analyze(args: argparse.Namespace) -> int:
    window = _window(args.plot_window)
    try:
        rec = read_c3d(args.file)
        res = analyze(rec, _settings(args))
    except EmgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            from libs.emg.plot import plot_analysis
        except ImportError as exc:  # matplotlib is an optional dependency (extra "plot")
            print(f"error: --plot needs matplotlib ({exc}); pip install 'ghostly-emg-backend[plot]'", file=sys.stderr)
            return 2
        out = plot_analysis(rec, res, args.plot, t_range=window)
        print(f"plot written to {out}", file=sys.stderr)
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
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
