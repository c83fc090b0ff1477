"""The row_count validation check: the rendered file is re-opened with its format's reader
(csv module, json, scipy.io.loadmat, the xlsx sheet dimensions) and the rows it holds are
compared with the counts taken from the downstream replies (Outcome.expected_rows)."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import numpy as np

from services.export import writers
from services.export.model import ExportDocument, Outcome, check


def readback_checks(payload: bytes, fmt: str, outcome: Outcome) -> list[dict]:
    """Re-open the rendered bytes with the format's reader and count what it holds."""
    expected = outcome.expected_rows
    try:
        found = _readback_rows(payload, fmt, outcome.doc)
    except Exception as exc:  # noqa: BLE001 - a file that does not open is a failed check
        return [check("readback", False, f"the rendered {fmt} file does not open: {exc}")]
    if fmt == "csv":
        name = (
            "signals"
            if outcome.doc.signals is not None
            else (outcome.doc.csv_override.name if outcome.doc.csv_override is not None else outcome.doc.tables[0].name)
        )
        expected = {name: expected.get(name, -1)}
    else:
        written = {t.name for t in outcome.doc.tables} | ({"signals"} if outcome.doc.signals is not None else set())
        expected = {k: v for k, v in expected.items() if k in written}
    ok = all(found.get(k) == v for k, v in expected.items()) and all(v > 0 for v in expected.values())
    detail = ", ".join(f"{k}: {found.get(k)} rows (expected {v})" for k, v in expected.items())
    return [check("row_count", ok, f"read back from the {fmt} file: {detail}")]


def _readback_rows(payload: bytes, fmt: str, doc: ExportDocument) -> dict[str, int]:
    if fmt == "csv":
        if doc.signals is not None:  # numbers only, no quoted newlines
            return {"signals": payload.count(b"\n") - 1}
        name = doc.csv_override.name if doc.csv_override is not None else doc.tables[0].name
        rows = list(csv.reader(io.StringIO(payload.decode("utf-8"))))
        return {name: len(rows) - 1}
    if fmt == "json":
        data = json.loads(payload)
        out = {t.name: len(data[t.name]) for t in doc.tables}
        if doc.signals is not None:
            s = data["signals"]
            lengths = [len(t["values"]) for t in s["traces"]]
            out["signals"] = max(lengths, default=0) if s["same_time_base"] else sum(lengths)
        return out
    if fmt == "matlab":
        from scipy.io import loadmat

        m = loadmat(io.BytesIO(payload), squeeze_me=False, struct_as_record=False)["ghostly"][0, 0]
        out = {}
        for t in doc.tables:
            tab = getattr(m, writers.mat_field(t.name))[0, 0]
            first = writers.mat_field(t.columns[0].name)
            out[t.name] = getattr(tab, first).shape[0]
        if doc.signals is not None:
            data = m.data
            if doc.signals.same_time_base:
                out["signals"] = data.shape[0] if data.size else 0
            else:
                out["signals"] = int(np.isfinite(m.sample_index).sum())
        return out
    if fmt == "excel":
        out = {}
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            wb = z.read("xl/workbook.xml").decode()
            names = re.findall(r'<sheet name="([^"]+)" sheetId="(\d+)"', wb)
            for name, sid in names:
                xml = z.read(f"xl/worksheets/sheet{sid}.xml")
                m = re.search(rb'<dimension ref="[A-Z]+\d+(?::[A-Z]+(\d+))?"', xml)
                last = int(m.group(1)) if m and m.group(1) else 1
                out[name] = last - 1
        return out
    raise ValueError(fmt)
