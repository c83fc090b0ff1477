"""Shared fixtures: real samples folder (skipped cleanly when absent) and synthetic files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from libs.emg.synthetic import (
    ChannelSpec,
    ContractionSpec,
    SyntheticSpec,
    ghostly_file_name,
    regular_contractions,
    write_synthetic_c3d,
)

SAMPLES = Path(os.environ.get("GHOSTLY_SAMPLES") or Path(__file__).resolve().parents[2].parent / "shared" / "samples")
SAMPLE_FILES = sorted(SAMPLES.glob("*.c3d")) if SAMPLES.is_dir() else []
LARGEST = SAMPLES / "Ghostly_Emg_20230321_17-50-17-0881.c3d"

needs_samples = pytest.mark.skipif(not SAMPLE_FILES, reason=f"real samples not found in {SAMPLES}")


def standard_spec(rate: float = 990.0, **kw) -> SyntheticSpec:
    """Left: 12 contractions of 2.5 s; right: 10 of 1.0 s plus two dropouts between them."""
    return SyntheticSpec(
        rate=rate,
        duration_s=kw.pop("duration_s", 60.0),
        channels=[
            ChannelSpec(contractions=regular_contractions(12, 2.5, 4.5)),
            ChannelSpec(contractions=regular_contractions(10, 1.0, 5.0), dropouts=[(4.0, 270), (30.2, 270)]),
        ],
        **kw,
    )


@pytest.fixture
def write(tmp_path):
    def _write(spec: SyntheticSpec, name: str | None = None):
        path = tmp_path / (name or ghostly_file_name(spec))
        return path, write_synthetic_c3d(path, spec)

    return _write


__all__ = ["ChannelSpec", "ContractionSpec", "SyntheticSpec", "regular_contractions"]
