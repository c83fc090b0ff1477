"""CSV cells a spreadsheet would run as formulas are neutralised (OWASP CSV injection rule):
text starting with = + - @ tab or CR gets a leading apostrophe, in every CSV the product
writes (statistics tables and signal tables); numbers stay numbers."""

from __future__ import annotations

import csv
import io
import uuid

import numpy as np
import pytest

from ghostly.statistics.v1 import statistics_pb2 as spb
from services.export import layouts, writers
from services.export.model import SignalSet, SignalTrace

HOSTILE = [
    '=HYPERLINK("http://evil","x")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd",
    "\t=1+1",
    "\r=1+1",
]


def test_csv_safe_rule():
    for text in HOSTILE:
        assert writers.csv_safe(text) == "'" + text
    for text in ("CH1", "ok = fine", "", "1.5", "P005"):
        assert writers.csv_safe(text) == text


def test_statistics_csv_neutralises_hostile_text_but_not_numbers():
    session = spb.Session(id=str(uuid.uuid4()), session_label=HOSTILE[0], patient_id=HOSTILE[1], processing_version="v")
    channels = [
        spb.ChannelStatistics(
            channel_name=HOSTILE[3],
            side="left",
            processing_version="v",
            usable=True,
            mvc_rms_value=-0.5,
            processing_pipeline=HOSTILE[2],
        )
    ]
    doc = layouts.statistics_document(
        "statistics_only", [layouts.SessionBundle(session.id, session=session, channels=channels)], {}
    )
    text = writers.write_csv(doc).decode()
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["channel_name"] == "'" + HOSTILE[3] and row["patient_id"] == "'" + HOSTILE[1]
    assert row["session_label"] == "'" + HOSTILE[0] and row["processing_pipeline"] == "'" + HOSTILE[2]
    assert row["mvc_rms_value_v"] == "-0.5"  # a number, untouched
    for cell in row.values():
        assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell


@pytest.mark.parametrize("same_base", [True, False])
def test_signals_csv_neutralises_hostile_channel_labels(same_base):
    n = 4
    a = SignalTrace(
        channel=HOSTILE[0],
        kind="raw",
        unit="V",
        rate_hz=990.0,
        t0_s=0.0,
        values=np.array([-1e-4, 0, 1e-4, 2e-4], dtype=np.float32),
    )
    b = SignalTrace(
        channel=HOSTILE[4],
        kind="raw",
        unit="V",
        rate_hz=990.0,
        t0_s=0.0 if same_base else 1.0,
        values=np.zeros(n, dtype=np.float32),
    )
    from services.export.model import ExportDocument

    doc = ExportDocument("signals_research_full", {})
    doc.signals = SignalSet([a, b], full_resolution=True)
    rows = list(csv.reader(io.StringIO(writers.write_csv(doc).decode())))
    for cell in (c for r in rows for c in r):
        assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
        if cell.startswith("-"):
            float(cell)  # only numbers may start with a minus sign
    assert any(c.startswith("'=HYPERLINK") for r in rows for c in r)
