"""Start-up of the `ghostly` CLI (structural, not timed; bench/bench_cli_startup.py times it):
`ghostly --help` and the client commands never import the EMG stack (libs.emg, numpy, scipy),
because app/cli.py imports only the module of the command being run and the client modules
import grpc and the generated code only when a command runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from libs.db.embedded import free_port
from tests.helpers import ROOT

HEAVY = ("libs.emg", "numpy", "scipy")

PROBE = r"""
import json, sys
from app import cli
try:
    code = cli.main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "scipy") or m == "libs.emg"
               or m.startswith("libs.emg."))
loaded = {"grpc": "grpc" in sys.modules, "jwt": "jwt" in sys.modules}
print("\nPROBE " + json.dumps({"code": code, "heavy": heavy, **loaded}))
"""


def probe(argv: list[str], **env: str) -> dict:
    import os

    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("PROBE ")]
    assert line, proc.stdout + proc.stderr
    return {**json.loads(line[-1][6:]), "stdout": proc.stdout, "stderr": proc.stderr}


CLIENT_HELP = [
    ["--help"],
    ["sessions", "--help"],
    ["sessions", "list", "--help"],
    ["sessions", "show", "--help"],
    ["patients", "--help"],
    ["patients", "list", "--help"],
    ["patients", "add", "--help"],
    ["patients", "show", "--help"],
    ["patients", "calibrate", "--help"],
    ["patients", "deactivate", "--help"],
    ["therapists", "--help"],
    ["therapists", "add", "--help"],
    ["outcome", "--help"],
    ["ingest", "--help"],
    ["export", "--help"],
    ["status", "--help"],
    ["token", "--help"],
]


@pytest.mark.parametrize("argv", CLIENT_HELP, ids=" ".join)
def test_help_does_not_import_the_emg_stack(argv):
    r = probe(argv)
    assert r["code"] == 0, r["stderr"]
    assert "usage: ghostly" in r["stdout"]
    assert r["heavy"] == [], f"`ghostly {' '.join(argv)}` imported {r['heavy'][:8]}"
    assert not r["grpc"] and not r["jwt"], "parsing --help needs neither grpc nor PyJWT"


@pytest.mark.parametrize(
    "argv",
    [
        ["sessions", "list"],
        ["sessions", "show", "00000000-0000-0000-0000-000000000001"],
        ["patients", "list"],
        ["patients", "show", "P001"],
        ["outcome", "00000000-0000-0000-0000-000000000001", "--rpe", "5"],
    ],
    ids=" ".join,
)
def test_client_commands_run_without_the_emg_stack(argv):
    """Run to the end (nothing listens at the address: UNAVAILABLE, one line, exit 2)."""
    closed = f"127.0.0.1:{free_port()}"
    r = probe([*argv, "--timeout", "5"], GHOSTLY_INGEST_ADDRESS=closed, GHOSTLY_STATISTICS_ADDRESS=closed)
    assert r["code"] == 2 and r["stderr"].startswith("error: UNAVAILABLE: "), r
    assert len(r["stderr"].strip().splitlines()) == 1
    assert r["heavy"] == [] and r["grpc"]


def test_analyze_still_loads_its_real_parser():
    """The probe would see the EMG stack: `analyze` imports libs.emg (and its options are there)."""
    r = probe(["analyze", "--help"])
    assert r["code"] == 0 and "--mvc-left" in r["stdout"] and "libs.emg" in r["heavy"]


def test_placeholder_help_lines_equal_the_modules_own():
    """`ghostly --help` shows the help lines of app.cli.COMMANDS without importing the modules;
    they must say what the modules themselves register."""
    from app import cli

    def help_lines(parser) -> dict[str, str]:
        (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        return {a.dest: a.help for a in sub._choices_actions}

    lazy, full = help_lines(cli.build_parser(["--help"])), help_lines(cli.build_parser())
    assert lazy == full
    assert set(cli.COMMANDS) <= set(full)
