"""Start-up time of the `ghostly` CLI: median wall time of a whole process over N runs.

    ghostly --help
    ghostly sessions --help
    ghostly patients list --help
    ghostly sessions list          (a client command to the end: nothing listens, UNAVAILABLE)
    ghostly analyze --help         (reference: the one command that loads the EMG stack)

Target: <= 0.3 s for --help and the client commands (they never import libs.emg, numpy or
scipy; tests/cli/test_cli_startup.py checks that structurally). One warm-up run per command
first, so the figures are for a warm file cache.

Run: .venv/bin/python bench/bench_cli_startup.py [--runs 10] [--limit 0.3] [--module]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ghostly_command(module: bool) -> list[str]:
    script = Path(sys.executable).parent / "ghostly"
    return [str(script)] if script.exists() and not module else [sys.executable, "-m", "app.cli"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_s(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--limit", type=float, default=0.3, help="seconds allowed (default 0.3)")
    ap.add_argument(
        "--module",
        action="store_true",
        help="run `python -m app.cli` from this checkout instead of the installed `ghostly` script",
    )
    args = ap.parse_args()
    ghostly = ghostly_command(args.module)
    env = dict(os.environ, GHOSTLY_STATISTICS_ADDRESS=f"127.0.0.1:{closed_port()}")
    cases = [
        (["--help"], True),
        (["sessions", "--help"], True),
        (["patients", "list", "--help"], True),
        (["sessions", "list", "--timeout", "5"], True),
        (["analyze", "--help"], False),
    ]
    print(f"{' '.join(ghostly)}: median of {args.runs} runs")
    over = False
    python = median_s([sys.executable, "-c", "pass"], args.runs, env)
    for argv, bounded in cases:
        m = median_s([*ghostly, *argv], args.runs, env)
        verdict = ("ok" if m <= args.limit else "OVER") if bounded else "reference (EMG stack)"
        over |= bounded and m > args.limit
        print(f"  ghostly {' '.join(argv):<34} {m * 1000:7.1f} ms   {verdict}")
    print(f"  {'python -c pass (interpreter alone)':<42} {python * 1000:7.1f} ms")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
