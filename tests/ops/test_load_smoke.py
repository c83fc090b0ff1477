"""The load test script itself works (a short, small run; the real one is bench/load_test.py
for 30 s with 50 callers + 10 streams + ingest)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_load_test_short_run_has_no_errors():
    run = subprocess.run(
        [sys.executable, "load_test.py", "--duration", "3", "--callers", "8", "--streams", "2"],
        cwd=ROOT / "bench",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "errors: 0" in run.stdout
    served = {
        line.split()[0]: int(line.split()[1])
        for line in run.stdout.splitlines()
        if line.split() and line.split()[0] in ("GetPerformanceScore", "StreamSignals", "Upload")
    }
    assert served.get("GetPerformanceScore", 0) > 0 and served.get("StreamSignals", 0) > 0
    assert served.get("Upload", 0) > 0
