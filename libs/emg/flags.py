"""Machine-readable per-channel signal flags (``ChannelAnalysis.signal_flags``).

The vocabulary is closed: every flag the analysis can raise is listed here with its meaning,
and the same strings are stored in ``emg_statistics.signal_flags``, served as
``ChannelStatistics.signal_flags`` and written in every export. Flags are sorted in the order
of ``SIGNAL_FLAGS`` so equal analyses give equal lists.
"""

from __future__ import annotations

MAINS_INTERFERENCE = "mains_interference"
SATURATION = "saturation"
DROPOUT = "dropout"
WEAK_SIGNAL = "weak_signal"
NO_USABLE_EMG = "no_usable_emg"
PARTIALLY_MASKED = "partially_masked"

SIGNAL_FLAGS: dict[str, str] = {
    MAINS_INTERFERENCE: "power-line interference (50 or 60 Hz and harmonics) found in the rest periods; "
    "removed by a zero-phase notch before the envelope",
    SATURATION: "the raw signal sat at (or within the tolerance of) the ADC rail; those spans are artefacts",
    DROPOUT: "constant-value fills (data loss, e.g. a wireless dropout); those spans are artefacts",
    WEAK_SIGNAL: "the channel's strongest activity is too weak to tell contractions from noise; "
    "excluded from symmetry and the overall score",
    NO_USABLE_EMG: "flat, disconnected or hum-only channel: no muscle activity can be measured; "
    "excluded from symmetry and the overall score",
    PARTIALLY_MASKED: "at least one contraction overlapped an artefact: only its uncorrupted part was kept, "
    "or it was not counted (see the warnings for count and seconds)",
}

# Flags that make a channel unusable for scoring (the patient is never scored 0 for them).
EXCLUDING_FLAGS = frozenset({WEAK_SIGNAL, NO_USABLE_EMG})


def ordered(flags: set[str] | list[str]) -> list[str]:
    """``flags`` in vocabulary order; unknown strings are a programming error."""
    unknown = set(flags) - set(SIGNAL_FLAGS)
    if unknown:
        raise ValueError(f"unknown signal flag(s): {', '.join(sorted(unknown))}")
    return [f for f in SIGNAL_FLAGS if f in flags]
