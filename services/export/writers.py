"""Format writers: ExportDocument -> bytes in JSON, tidy CSV, Excel (.xlsx) or MATLAB (.mat v5).

Layouts are described in services/export/README.md. All writers are pure (no I/O besides the
temporary files xlsxwriter uses in constant_memory mode) and deterministic for a given document.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from services.export.model import BOOL, FLOAT, INT, LIST_SEPARATOR, TEXT, TEXT_LIST, ExportDocument, SignalSet

# Excel 2007+ worksheet limits.
EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_COLS = 16_384

CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "excel": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "matlab": "application/x-matlab-data",
}
EXTENSIONS = {"json": "json", "csv": "csv", "excel": "xlsx", "matlab": "mat"}


class FormatLimitError(ValueError):
    """The document does not fit the format (e.g. more rows than an Excel sheet holds)."""


# --------------------------------------------------------------------------- helpers


def _f32_strings(values: np.ndarray) -> list[str]:
    """Shortest decimal strings that round-trip to the same float32; NaN/inf -> ''."""
    v = np.asarray(values, dtype=np.float32)
    out = v.astype(str).tolist()
    if not np.isfinite(v).all():
        bad = np.flatnonzero(~np.isfinite(v))
        for i in bad.tolist():
            out[i] = ""
    return out


def _f64_strings(values: np.ndarray) -> list[str]:
    """Shortest round-trip decimal strings of float64 values."""
    return np.asarray(values, dtype=np.float64).astype(str).tolist()


def _int_strings(values: np.ndarray) -> list[str]:
    return np.asarray(values, dtype=np.int64).astype(str).tolist()


def _joined(value: Any) -> str:
    """A TEXT_LIST value as one text cell: the strings joined by ';' ('' for an empty list)."""
    return LIST_SEPARATOR.join(str(x) for x in value)


_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(text: str) -> str:
    """A text cell a spreadsheet will not run: one starting with = + - @ tab or CR gets a
    leading apostrophe (OWASP CSV injection rule). Numbers are written as numbers, never here."""
    return "'" + text if text.startswith(_FORMULA_TRIGGERS) else text


def _cell(value: Any, kind: str) -> str:
    """One CSV cell: '' for missing, shortest repr for floats, true/false for booleans, lists
    joined by ';'."""
    if value is None:
        return ""
    if kind == TEXT_LIST or isinstance(value, (list, tuple)):
        return csv_safe(_joined(value))
    if kind == BOOL or isinstance(value, bool):
        return "true" if value else "false"
    if kind == FLOAT:
        f = float(value)
        return repr(f) if math.isfinite(f) else ""
    if kind == INT or isinstance(value, int):
        return str(value)
    return csv_safe(str(value))


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return value


def _json_array(strings: list[str]) -> str:
    return "[" + ",".join(s if s else "null" for s in strings) + "]"


def flatten(meta: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metadata -> [('a.b', value)]; lists of scalars become comma-joined text."""
    out: list[tuple[str, Any]] = []
    for k, v in meta.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flatten(v, key + ".")
        elif isinstance(v, (list, tuple)):
            if all(not isinstance(x, (dict, list, tuple)) for x in v):
                out.append((key, ", ".join("" if x is None else str(x) for x in v)))
            else:
                out.append((key, json.dumps(v, default=str)))
        else:
            out.append((key, v))
    return out


def column_dictionary(doc: ExportDocument) -> list[tuple[str, str, str, str, str]]:
    """(table, column, kind, unit, description) of every exported column."""
    rows = [(t.name, c.name, c.kind, c.unit, c.description) for t in doc.tables for c in t.columns]
    if doc.signals is not None:
        for name, kind, unit, desc in signal_columns(doc.signals):
            rows.append(("signals", name, kind, unit, desc))
    return rows


def signal_columns(signals: SignalSet) -> list[tuple[str, str, str, str]]:
    """Columns of the tabular (CSV/Excel) signal layout: wide for one time base, else long."""
    if signals.same_time_base:
        cols = [
            ("sample_index", INT, "", "original sample index (0-based)"),
            ("time_s", FLOAT, "s", "time from the first sample = sample_index / rate"),
        ]
        for t in signals.traces:
            cols.append((f"{t.label}_{t.unit}", FLOAT, t.unit, f"{t.kind} EMG of {t.channel}, float32"))
        return cols
    unit = signals.traces[0].unit if signals.traces else "V"
    return [
        ("channel", TEXT, "", "muscle channel"),
        ("kind", TEXT, "", "raw / filtered / envelope"),
        ("sample_index", INT, "", "original sample index (0-based)"),
        ("time_s", FLOAT, "s", "time from the first sample = sample_index / rate"),
        (f"value_{unit}", FLOAT, unit, "signal value, float32"),
    ]


def table_rows(doc: ExportDocument) -> dict[str, int]:
    """Data rows (header excluded) of every sheet the tabular formats write."""
    out = {t.name: len(t.rows) for t in doc.tables}
    if doc.signals is not None:
        s = doc.signals
        out["signals"] = s.rows_wide() if s.same_time_base else s.rows_long()
    return out


def check_excel_rows(rows: dict[str, int]) -> None:
    for name, n in rows.items():
        if n + 1 > EXCEL_MAX_ROWS:
            raise FormatLimitError(
                f"the '{name}' sheet would need {n + 1:,} rows (header included) but an Excel sheet "
                f"holds at most {EXCEL_MAX_ROWS:,}; export as csv or matlab instead, or request fewer "
                f"channels / points / sessions"
            )


# --------------------------------------------------------------------------- JSON


def write_json(doc: ExportDocument) -> bytes:
    parts: list[str] = ['{"metadata":', json.dumps(_jsonable(doc.metadata), default=str, allow_nan=False)]
    parts.append(',"columns":')
    parts.append(
        json.dumps([dict(table=t, column=c, kind=k, unit=u, description=d) for t, c, k, u, d in column_dictionary(doc)])
    )
    for t in doc.tables:
        names = t.column_names
        records = [{n: _json_value(v) for n, v in zip(names, r)} for r in t.rows]
        parts.append(f",{json.dumps(t.name)}:")
        parts.append(json.dumps(records, default=str, allow_nan=False))
    if doc.signals is not None:
        s = doc.signals
        parts.append(',"signals":{')
        parts.append(f'"full_resolution":{json.dumps(s.full_resolution)},')
        parts.append(f'"same_time_base":{json.dumps(s.same_time_base)},')
        if s.same_time_base and s.traces:
            first = s.traces[0]
            parts.append(f'"rate_hz":{json.dumps(first.rate_hz)},')
            parts.append('"sample_index":' + _json_array(_int_strings(first.index())) + ",")
            parts.append('"time_s":' + _json_array(_f64_strings(first.time_s())) + ",")
        parts.append('"traces":[')
        for i, tr in enumerate(s.traces):
            if i:
                parts.append(",")
            head = {
                "channel": tr.channel,
                "kind": tr.kind,
                "label": tr.label,
                "unit": tr.unit,
                "rate_hz": tr.rate_hz,
                "points": len(tr.values),
            }
            parts.append(json.dumps(head)[:-1])
            if not s.same_time_base:
                parts.append(',"sample_index":' + _json_array(_int_strings(tr.index())))
                parts.append(',"time_s":' + _json_array(_f64_strings(tr.time_s())))
            parts.append(',"values":' + _json_array(_f32_strings(tr.values)) + "}")
        parts.append("]}")
    parts.append("}")
    return "".join(parts).encode("utf-8")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return _json_value(obj)


# --------------------------------------------------------------------------- CSV


def write_csv(doc: ExportDocument) -> bytes:
    """One tidy table with one header row: the signals (when present) or doc.csv_table."""
    if doc.signals is not None:
        return _signals_csv(doc.signals).encode("utf-8")
    table = doc.csv_override if doc.csv_override is not None else doc.tables[0]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_safe(n) for n in table.column_names])
    kinds = [c.kind for c in table.columns]
    w.writerows([_cell(v, k) for v, k in zip(r, kinds)] for r in table.rows)
    return buf.getvalue().encode("utf-8")


def _signal_string_columns(signals: SignalSet) -> list[list[str]]:
    """String columns of the tabular signal layout (see signal_columns)."""
    traces = signals.traces
    if signals.same_time_base:
        first = traces[0]
        cols = [_int_strings(first.index()), _f64_strings(first.time_s())]
        cols += [_f32_strings(t.values) for t in traces]
        return cols
    channel, kind, index, time, value = [], [], [], [], []
    for t in traces:
        n = len(t.values)
        channel += [_csv_field(csv_safe(t.channel))] * n
        kind += [_csv_field(csv_safe(t.kind))] * n
        index += _int_strings(t.index())
        time += _f64_strings(t.time_s())
        value += _f32_strings(t.values)
    return [channel, kind, index, time, value]


def _csv_field(text: str) -> str:
    """``text`` as one CSV field (quoted when it holds a separator, quote or line break)."""
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _signals_csv(signals: SignalSet) -> str:
    header = ",".join(_csv_field(csv_safe(name)) for name, *_ in signal_columns(signals))
    if not signals.traces:
        return header + "\n"
    cols = _signal_string_columns(signals)
    return header + "\n" + "\n".join(map(",".join, zip(*cols))) + "\n"


# --------------------------------------------------------------------------- Excel


def _sheet_name(name: str, used: set[str]) -> str:
    base = re.sub(r"[\[\]:*?/\\]", "_", name)[:31] or "sheet"
    out, i = base, 2
    while out.lower() in used:
        suffix = f"_{i}"
        out, i = base[: 31 - len(suffix)] + suffix, i + 1
    used.add(out.lower())
    return out


def write_excel(doc: ExportDocument) -> bytes:
    import xlsxwriter

    check_excel_rows(table_rows(doc))
    out = io.BytesIO()
    # constant_memory: rows are flushed to a temporary file as they are written (we write in
    # row order), so big signal sheets do not hold every cell object in memory.
    wb = xlsxwriter.Workbook(
        out,
        {"constant_memory": True, "strings_to_numbers": False, "strings_to_formulas": False, "strings_to_urls": False},
    )
    try:
        bold = wb.add_format({"bold": True})
        used: set[str] = set()
        for t in doc.tables:
            ws = wb.add_worksheet(_sheet_name(t.name, used))
            if len(t.columns) > EXCEL_MAX_COLS:
                raise FormatLimitError(
                    f"the '{t.name}' sheet would need {len(t.columns)} columns (Excel: at most {EXCEL_MAX_COLS})"
                )
            ws.write_row(0, 0, t.column_names, bold)
            ws.freeze_panes(1, 0)
            kinds = [c.kind for c in t.columns]
            for i, r in enumerate(t.rows, start=1):
                for j, (v, k) in enumerate(zip(r, kinds)):
                    _xl_write(ws, i, j, v, k)
        if doc.signals is not None and doc.signals.traces:
            ws = wb.add_worksheet(_sheet_name("signals", used))
            cols = signal_columns(doc.signals)
            ws.write_row(0, 0, [c[0] for c in cols], bold)
            ws.freeze_panes(1, 0)
            _excel_signals(ws, doc.signals)
        ws = wb.add_worksheet(_sheet_name("metadata", used))
        ws.write_row(0, 0, ["key", "value"], bold)
        for i, (k, v) in enumerate(flatten(doc.metadata), start=1):
            ws.write_string(i, 0, k)
            _xl_write(ws, i, 1, v, TEXT if isinstance(v, str) else FLOAT)
        ws = wb.add_worksheet(_sheet_name("columns", used))
        ws.write_row(0, 0, ["sheet", "column", "kind", "unit", "description"], bold)
        for i, row in enumerate(column_dictionary(doc), start=1):
            ws.write_row(i, 0, row)
    finally:
        wb.close()
    return out.getvalue()


def _xl_write(ws, r: int, c: int, v: Any, kind: str) -> None:
    if v is None:
        return
    if kind == TEXT_LIST or isinstance(v, (list, tuple)):
        if v:  # an empty list is an empty cell
            ws.write_string(r, c, _joined(v))
        return
    if isinstance(v, bool):
        ws.write_boolean(r, c, v)
    elif isinstance(v, (int, float, np.integer, np.floating)) and kind != TEXT:
        f = float(v)
        if math.isfinite(f):
            ws.write_number(r, c, f)
    else:
        ws.write_string(r, c, str(v))


def _excel_signals(ws, signals: SignalSet) -> None:
    traces = signals.traces
    if signals.same_time_base:
        first = traces[0]
        idx = first.index().tolist()
        time = first.time_s().tolist()
        values = [np.asarray(t.values, dtype=np.float64).tolist() for t in traces]
        write = ws.write_number
        for i in range(len(idx)):
            r = i + 1
            write(r, 0, idx[i])
            write(r, 1, time[i])
            for j, col in enumerate(values, start=2):
                v = col[i]
                if v == v and v not in (math.inf, -math.inf):
                    write(r, j, v)
        return
    r = 1
    for t in traces:
        idx = t.index().tolist()
        time = t.time_s().tolist()
        vals = np.asarray(t.values, dtype=np.float64).tolist()
        for i in range(len(idx)):
            ws.write_string(r, 0, t.channel)
            ws.write_string(r, 1, t.kind)
            ws.write_number(r, 2, idx[i])
            ws.write_number(r, 3, time[i])
            v = vals[i]
            if v == v and v not in (math.inf, -math.inf):
                ws.write_number(r, 4, v)
            r += 1


# --------------------------------------------------------------------------- MATLAB

_MAT_FIELD = re.compile(r"[^A-Za-z0-9_]")


def mat_field(name: str) -> str:
    """A valid MATLAB struct field name (letters first, <= 63 chars)."""
    f = _MAT_FIELD.sub("_", str(name))
    if not f or not f[0].isalpha():
        f = "x" + f
    return f[:63]


def _cellstr(values: Iterable[Any]) -> np.ndarray:
    vals = ["" if v is None else str(v) for v in values]
    arr = np.empty((len(vals), 1), dtype=object)
    for i, v in enumerate(vals):
        arr[i, 0] = v
    return arr


def _mat_row_cell(values: Iterable[Any]) -> np.ndarray:
    vals = ["" if v is None else str(v) for v in values]
    arr = np.empty((1, len(vals)), dtype=object)
    for i, v in enumerate(vals):
        arr[0, i] = v
    return arr


def _mat_value(v: Any) -> Any:
    if v is None:
        return np.empty((0, 0))
    if isinstance(v, dict):
        return {mat_field(k): _mat_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and v:
            return np.asarray(v, dtype=np.float64).reshape(1, -1)
        if all(not isinstance(x, (dict, list, tuple)) for x in v):
            return _mat_row_cell(v)
        return json.dumps(v, default=str)
    if isinstance(v, bool):
        return np.bool_(v)
    return v


def _mat_column(values: list, kind: str) -> np.ndarray:
    if kind in (FLOAT, INT):
        return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64).reshape(-1, 1)
    if kind == BOOL:
        if any(v is None for v in values):  # logical has no missing value: double with NaN
            return np.asarray([np.nan if v is None else float(v) for v in values]).reshape(-1, 1)
        return np.asarray(values, dtype=bool).reshape(-1, 1)
    if kind == TEXT_LIST:  # n x 1 cell of char, the strings joined by ';' ('' = none)
        return _cellstr(None if v is None else _joined(v) for v in values)
    return _cellstr(values)


def write_matlab(doc: ExportDocument) -> bytes:
    from scipy.io import savemat

    root: dict[str, Any] = {"metadata": _mat_value(doc.metadata)}
    units: dict[str, Any] = {}
    for t in doc.tables:
        root[mat_field(t.name)] = {
            mat_field(c.name): _mat_column(t.column_values(i), c.kind) for i, c in enumerate(t.columns)
        }
        units[mat_field(t.name)] = {mat_field(c.name): c.unit for c in t.columns}
    if units:
        root["column_units"] = units
    if doc.signals is not None:
        root.update(_mat_signals(doc.signals))
    out = io.BytesIO()
    savemat(out, {"ghostly": root}, format="5", long_field_names=True, do_compression=False, oned_as="column")
    return out.getvalue()


def _mat_signals(signals: SignalSet) -> dict[str, Any]:
    """data (N x C), time (N x 1, or N x C when the time bases differ), sample_index,
    channels / kinds / labels / units (1 x C cell), rate (Hz). Shorter columns NaN-padded."""
    traces = signals.traces
    n = signals.rows_wide()
    c = len(traces)
    data = np.full((n, c), np.nan, dtype=np.float64)
    for j, t in enumerate(traces):
        data[: len(t.values), j] = t.values
    out: dict[str, Any] = {"data": data}
    if signals.same_time_base and traces:
        out["time"] = traces[0].time_s().reshape(-1, 1)
        out["sample_index"] = traces[0].index().astype(np.float64).reshape(-1, 1)
    else:
        time = np.full((n, c), np.nan)
        idx = np.full((n, c), np.nan)
        for j, t in enumerate(traces):
            time[: len(t.values), j] = t.time_s()
            idx[: len(t.values), j] = t.index()
        out["time"] = time
        out["sample_index"] = idx
    out["channels"] = _mat_row_cell(t.channel for t in traces)
    out["kinds"] = _mat_row_cell(t.kind for t in traces)
    out["labels"] = _mat_row_cell(t.label for t in traces)
    out["units"] = _mat_row_cell(t.unit for t in traces)
    out["rate"] = float(traces[0].rate_hz) if traces else float("nan")
    out["points"] = np.asarray([len(t.values) for t in traces], dtype=np.float64).reshape(1, -1)
    out["full_resolution"] = np.bool_(signals.full_resolution)
    return out


WRITERS = {"json": write_json, "csv": write_csv, "excel": write_excel, "matlab": write_matlab}


def render(doc: ExportDocument, fmt: str) -> bytes:
    return WRITERS[fmt](doc)
