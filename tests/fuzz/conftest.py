"""Bad-input campaign: counts of inputs tried, reported whatever the capture mode.

Each fuzz test calls `fuzz_count(name, n)`; the totals go into the JUnit report
(`record_property`, e.g. `--junitxml`) and are printed in the terminal summary (visible without
`-s`)."""

from __future__ import annotations

from collections import Counter

import pytest

COUNTS: Counter[str] = Counter()


@pytest.fixture
def fuzz_count(record_property):
    local: Counter[str] = Counter()

    def add(name: str, n: int = 1) -> None:
        COUNTS[name] += n
        local[name] += n

    yield add
    for name, n in sorted(local.items()):
        record_property(f"fuzz_inputs[{name}]", n)
    record_property("fuzz_inputs_total", sum(local.values()))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not COUNTS:
        return
    terminalreporter.section("fuzz inputs tried")
    for name, n in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{name:<45} {n:>7}")
    terminalreporter.write_line(f"{'total':<45} {sum(COUNTS.values()):>7}")
