from __future__ import annotations

import json

import pytest

from app.analyze import main

from .conftest import standard_spec


def test_cli_text_and_json(write, capsys):
    path, _ = write(standard_spec())
    assert main(["analyze", str(path), "--rpe", "5", "--bfr-aop", "50", "--game-points", "400"]) == 0
    out = capsys.readouterr().out
    assert "Overall performance" in out and "CH1" in out
    # Amplitudes in uV, with a per-contraction table.
    assert "MVC (uV RMS)" in out and "peak uV" in out and "% MVC" in out and "criteria" in out
    assert main(["analyze", str(path), "--json", "--mvc-left", "400"]) == 0
    d = json.loads(capsys.readouterr().out)
    ch1 = d["channels"][0]
    assert ch1["mvc_calculation_method"] == "user_defined" and ch1["mvc_rms_value"] == pytest.approx(400e-6)
    assert ch1["channel_name"] == "CH1" and ch1["signal_flags"] == [] and ch1["usable"] is True
    assert {"start_s", "end_s", "partially_masked", "masked_s"} <= set(ch1["contractions"][0])
    assert d["channels"][1]["signal_flags"] == ["dropout"]  # the standard spec's right channel
    assert "effort" in d["performance"]["components_excluded"]


def test_cli_mvc_in_volts_is_refused(write):
    path, _ = write(standard_spec())
    with pytest.raises(SystemExit, match="uV"):
        main(["analyze", str(path), "--mvc-left", "0.0004"])


def test_cli_plot_writes_a_png(write, tmp_path, capsys):
    path, _ = write(standard_spec())
    out = tmp_path / "analysis.png"
    assert main(["analyze", str(path), "--plot", str(out), "--plot-window", "0:20"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert "plot written" in capsys.readouterr().err


def test_cli_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.c3d"
    bad.write_bytes(b"not a c3d" * 100)
    assert main(["analyze", str(bad)]) == 2
    assert "Not a C3D" in capsys.readouterr().err
