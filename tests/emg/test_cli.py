from __future__ import annotations

import json

from libs.emg.cli import main

from .conftest import standard_spec


def test_cli_text_and_json(write, capsys):
    path, _ = write(standard_spec())
    assert main(["analyze", str(path), "--rpe", "5", "--bfr-aop", "50", "--game-points", "400"]) == 0
    out = capsys.readouterr().out
    assert "Overall performance" in out and "CH1" in out
    assert main(["analyze", str(path), "--json", "--mvc-left", "0.0004"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["channels"][0]["mvc_calculation_method"] == "user_defined"
    assert "effort" in d["performance"]["components_excluded"]


def test_cli_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.c3d"
    bad.write_bytes(b"not a c3d" * 100)
    assert main(["analyze", str(bad)]) == 2
    assert "Not a C3D" in capsys.readouterr().err
