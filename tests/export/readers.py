"""Open exported files with the standard readers (csv, json, openpyxl, scipy.io.loadmat)."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np


def tables(payload: bytes, fmt: str) -> dict[str, list[dict]]:
    """Every table of a file as a list of row dicts. CSV: the single table under 'csv'."""
    if fmt == "csv":
        return {"csv": list(csv.DictReader(io.StringIO(payload.decode("utf-8"))))}
    if fmt == "json":
        data = json.loads(payload)
        return {k: v for k, v in data.items() if isinstance(v, list) and k != "columns"}
    if fmt == "excel":
        import openpyxl

        wb = openpyxl.load_workbook(io.BytesIO(payload), read_only=True)
        out = {}
        for ws in wb.worksheets:
            rows = list(ws.iter_rows(values_only=True))
            head = rows[0]
            out[ws.title] = [dict(zip(head, r)) for r in rows[1:]]
        return out
    if fmt == "matlab":
        from scipy.io import loadmat

        g = loadmat(io.BytesIO(payload), squeeze_me=False, struct_as_record=False)["ghostly"][0, 0]
        out = {}
        for name in g._fieldnames:
            t = getattr(g, name)
            if (
                name in ("metadata", "column_units")
                or t.dtype != object
                or not t.size
                or not hasattr(t[0, 0], "_fieldnames")
            ):
                continue
            t = t[0, 0]
            cols = {f: getattr(t, f) for f in t._fieldnames}  # each n x 1
            n = next(iter(cols.values())).shape[0]
            out[name] = [{f: _mat_cell(v[i, 0]) for f, v in cols.items()} for i in range(n)]
        return out
    raise ValueError(fmt)


def _mat_cell(v):
    """One element of an n x 1 column: a number, or a cell holding a char array."""
    if isinstance(v, np.ndarray):  # cell element: char array (1,) or empty (0,)
        return str(v[0]) if v.size else None
    return _mat_scalar(v)


def _mat_scalar(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.size == 0:
        return None
    return v


def num(v) -> float | None:
    """A cell as float; None for missing ('', None, NaN)."""
    if v is None or v == "":
        return None
    if isinstance(v, str):
        v = float(v)
    f = float(v)
    return None if math.isnan(f) else f


def text(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.ndarray) and v.size == 0:
        return None
    s = str(v)
    return s or None


def boolean(v) -> bool | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        return {"true": True, "false": False}[v]
    if isinstance(v, float) and math.isnan(v):
        return None
    return bool(v)


def metadata(payload: bytes, fmt: str) -> dict:
    if fmt == "json":
        return json.loads(payload)["metadata"]
    if fmt == "excel":
        import openpyxl

        wb = openpyxl.load_workbook(io.BytesIO(payload), read_only=True)
        return {k: v for k, v in list(wb["metadata"].iter_rows(values_only=True))[1:]}
    if fmt == "matlab":
        from scipy.io import loadmat

        g = loadmat(io.BytesIO(payload), squeeze_me=True, struct_as_record=False)["ghostly"]
        return g.metadata
    raise ValueError(fmt)
