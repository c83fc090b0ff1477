"""The format-independent shape of an export: metadata + named tables of typed columns.

Layouts (services/export/layouts.py) turn downstream replies into an `ExportDocument`; writers
(services/export/writers.py) turn a document into JSON, CSV, Excel or MATLAB bytes. Signal
exports carry a `SignalSet` instead of (or next to) tables, because their natural shapes
(matrix + time base) differ per format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Column kinds: how a writer stores the values. TEXT_LIST: a list of strings (JSON: a list;
# CSV/Excel/MATLAB: one text cell, the strings joined by ';', empty when the list is).
TEXT, INT, FLOAT, BOOL, TEXT_LIST = "text", "int", "float", "bool", "text_list"
LIST_SEPARATOR = ";"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = FLOAT
    unit: str = ""  # physical unit ("V", "s", "%AOP", ...), "" when dimensionless
    description: str = ""


@dataclass
class Table:
    """Tidy table: one row per observation. `rows` are tuples in column order; None = missing."""

    name: str
    columns: list[Column]
    rows: list[tuple] = field(default_factory=list)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column_values(self, index: int) -> list:
        return [r[index] for r in self.rows]


@dataclass
class SignalTrace:
    """One (channel, kind) signal. `sample_index` is None for contiguous full-resolution data,
    whose sample i is at t0_s + i / rate_hz."""

    channel: str
    kind: str  # "raw", "filtered", "envelope"
    unit: str  # "V"
    rate_hz: float
    t0_s: float
    values: np.ndarray  # float32
    sample_index: np.ndarray | None = None  # uint32/int64 original sample indices (downsampled)
    expected_points: int | None = None  # StreamInfo.points_per_channel, for validation

    @property
    def label(self) -> str:
        return f"{self.channel}_{self.kind}"

    def time_s(self) -> np.ndarray:
        if self.sample_index is not None:
            return self.sample_index.astype(np.float64) / self.rate_hz
        first = round(self.t0_s * self.rate_hz)
        return (first + np.arange(len(self.values), dtype=np.float64)) / self.rate_hz

    def index(self) -> np.ndarray:
        if self.sample_index is not None:
            return self.sample_index.astype(np.int64)
        first = round(self.t0_s * self.rate_hz)
        return first + np.arange(len(self.values), dtype=np.int64)


@dataclass
class SignalSet:
    traces: list[SignalTrace]
    full_resolution: bool

    @property
    def same_time_base(self) -> bool:
        """True when every trace has the same sample instants (full resolution, one window)."""
        if not self.traces:
            return True
        if not self.full_resolution:
            first = self.traces[0]
            return all(
                t.sample_index is not None
                and first.sample_index is not None
                and np.array_equal(t.sample_index, first.sample_index)
                for t in self.traces
            )
        n = len(self.traces[0].values)
        t0 = self.traces[0].t0_s
        return all(len(t.values) == n and t.t0_s == t0 for t in self.traces)

    def rows_long(self) -> int:
        return sum(len(t.values) for t in self.traces)

    def rows_wide(self) -> int:
        return max((len(t.values) for t in self.traces), default=0)


@dataclass
class ExportDocument:
    export_type: str
    metadata: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    signals: SignalSet | None = None
    # The table single-table formats (CSV) write instead of tables[0], e.g. the clinical
    # summary's sessions x channels join.
    csv_override: Table | None = None

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    def units(self) -> dict[str, dict[str, str]]:
        return {t.name: {c.name: c.unit for c in t.columns} for t in self.tables}


def check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    """One validation check (export_history.validation_checks, ExportCompleted)."""
    return {"name": name, "passed": bool(passed), "detail": detail}


@dataclass
class Outcome:
    doc: ExportDocument
    checks: list[dict] = field(default_factory=list)
    expected_rows: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # "id: reason" of sessions not exported
    session_id: str | None = None  # single-session exports
