"""A picture of one analysis: ``ghostly analyze FILE --plot out.png``.

Per muscle channel two panels sharing the time axis:
- raw EMG (uV) with the artefact spans shaded red;
- the envelope (uV) after the chain (notch included when mains was found), the onset and
  offset thresholds, every contraction shaded (green: meets intensity and duration; amber:
  one criterion; grey: neither; hatched: partially masked) with I/D marks for the criteria
  met, the device's activation channel (when the file has one) as a dashed line, and the
  channel's signal flags in the title.
matplotlib is imported here only (Agg backend, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .analysis import SessionAnalysis
from .c3d_reader import Recording, muscle_channels
from .pipeline import chain_1d
from .settings import ProcessingParams

_UV = 1e6


def _contraction_colour(good: bool, intensity: bool, duration: bool) -> str:
    if good:
        return "#2ca02c"
    if intensity or duration:
        return "#ff9f1c"
    return "#9e9e9e"


def plot_analysis(
    rec: Recording, res: SessionAnalysis, path: str | Path, *, dpi: int = 80, t_range: tuple[float, float] | None = None
) -> Path:
    """Write the figure of ``res`` (the analysis of ``rec``) to ``path`` (PNG); returns the path.
    ``t_range`` (seconds) zooms on part of the recording."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    muscles = {m.name: m for m in muscle_channels(rec, res.parameters["settings"].get("channel_map"))}
    params = _params(res)
    n_ch = len(res.channels)
    fig, axes = plt.subplots(
        2 * n_ch, 1, figsize=(20, 2.6 * 2 * n_ch), sharex=True, gridspec_kw={"height_ratios": [1, 1.4] * n_ch}
    )
    t = np.arange(rec.n_samples) / rec.rate
    for k, ch in enumerate(res.channels):
        mc = muscles[ch.channel_name]
        raw = rec.channel(mc.raw_index)
        _, env = chain_1d(raw, rec.rate, params)
        ax_raw, ax_env = axes[2 * k], axes[2 * k + 1]
        ax_raw.plot(t, raw * _UV, lw=0.3, color="#1f77b4")
        ok = np.ones(raw.size, dtype=bool)
        for a in ch.quality.artifacts:  # the rails and fills would flatten the picture
            ok[int(a.start_s * rec.rate) : int(np.ceil(a.end_s * rec.rate))] = False
        lim = max(float(np.percentile(np.abs(raw[ok]), 99.95)) * _UV * 1.3 if ok.any() else 1.0, 1.0)
        ax_raw.set_ylim(-lim, lim)
        ax_raw.set_ylabel("raw (uV)")
        for a in ch.quality.artifacts:
            for ax in (ax_raw, ax_env):
                ax.axvspan(a.start_s, max(a.end_s, a.start_s + 1.0 / rec.rate), color="#d62728", alpha=0.35, lw=0)
        flags = ", ".join(ch.signal_flags) or "no flags"
        side = f" ({ch.side})" if ch.side else ""
        ax_raw.set_title(
            f"{ch.channel_name}{side}: {ch.total_contractions} contractions, "
            f"{ch.good_contractions_both} good | flags: {flags}" + ("" if ch.usable else " | EXCLUDED from scoring"),
            loc="left",
            fontsize=10,
        )
        ax_env.plot(t, env * _UV, lw=0.7, color="#1f77b4", label="envelope")
        if mc.activated_index is not None:
            ax_env.plot(
                t, rec.channel(mc.activated_index) * _UV, lw=0.9, color="#e377c2", alpha=0.9, label="device activation"
            )
        det = ch.detection
        ax_env.axhline(det["threshold_v"] * _UV, color="#d62728", lw=0.8, label="onset threshold")
        ax_env.axhline(det["offset_threshold_v"] * _UV, color="#d62728", lw=0.8, ls=":", label="offset threshold")
        ax_env.axhline(
            ch.mvc_threshold_percentage * ch.mvc_rms_value * _UV,
            color="#2ca02c",
            lw=0.8,
            ls="-.",
            label=f"{ch.mvc_threshold_percentage:.0%} MVC",
        )
        top = max(float(env.max()) * _UV * 1.15, det["threshold_v"] * _UV * 2, 1.0)
        for c in ch.contractions:
            colour = _contraction_colour(c.good, c.meets_intensity, c.meets_duration)
            ax_env.axvspan(
                c.start_s, c.end_s, color=colour, alpha=0.3, lw=0, hatch="///" if c.partially_masked else None
            )
            marks = ("I" if c.meets_intensity else "") + ("D" if c.meets_duration else "")
            if marks:
                ax_env.text(
                    (c.start_s + c.end_s) / 2, top * 0.93, marks, ha="center", va="top", fontsize=7, clip_on=True
                )
        ax_env.set_ylim(0, top)
        ax_env.set_ylabel("envelope (uV)")
        if k == 0:
            handles, labels = ax_env.get_legend_handles_labels()
    handles += [
        Patch(color="#2ca02c", alpha=0.3),
        Patch(color="#ff9f1c", alpha=0.3),
        Patch(color="#9e9e9e", alpha=0.3),
        Patch(color="#d62728", alpha=0.35),
    ]
    labels += ["contraction: intensity + duration (I D)", "one criterion", "neither", "artefact (masked)"]
    fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=len(labels), frameon=False)
    axes[-1].set_xlabel("time (s)")
    if t_range is not None:
        axes[-1].set_xlim(*t_range)
    r = res.recording
    p = res.performance
    score = "not scored" if p.overall_performance_score is None else f"P_overall {p.overall_performance_score:.1f}"
    fig.suptitle(
        f"{r['file_name']}  {r['rate_hz']:g} Hz, {r['duration_s']:.1f} s  |  {score}  |  "
        f"analysis {res.processing_version}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    out = Path(path)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _params(res: SessionAnalysis) -> ProcessingParams:
    return ProcessingParams(**res.parameters["settings"]["processing"])
