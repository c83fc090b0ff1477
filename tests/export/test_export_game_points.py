"""A game score that was never given is missing in every export format (empty cell, null, NaN),
never 0: performance_scores.game_points_achieved is NOT NULL and holds 0 when the points were
not reported; the score row's performance_weights says so ("excluded": {"game": ...}).

Sessions are inserted with SQL (real statistics and export services on loopback read them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ghostly.export.v1 import export_pb2 as pb
from ghostly.statistics.v1 import statistics_pb2 as spb
from tests.export.readers import num, tables, text
from tests.helpers import new_patient, run_export
from tests.statistics.test_statistics_service import T0, add_session

FORMATS = {
    "json": pb.EXPORT_FORMAT_JSON,
    "csv": pb.EXPORT_FORMAT_CSV,
    "excel": pb.EXPORT_FORMAT_EXCEL,
    "matlab": pb.EXPORT_FORMAT_MATLAB,
}
REQUESTED = {"compliance": 0.4, "symmetry": 0.25, "effort": 0.2, "game": 0.15}


@pytest.fixture(scope="module")
async def game_world(db):
    patient = await new_patient(db)
    ids = {}
    for i, case in enumerate(("missing", "legacy_known", "given", "real_zero")):
        ids[case] = str(await add_session(db, patient, date=T0 + dt.timedelta(hours=i), day=1, score=60.0))
    # No points reported: excluded, the NOT NULL column holds 0 (what ingest writes).
    excluded = {
        "compliance": 0.4 / 0.85,
        "symmetry": 0.25 / 0.85,
        "effort": 0.2 / 0.85,
        "game": 0,
        "requested": REQUESTED,
        "excluded": {"game": "game points missing"},
    }
    await db.execute(
        "UPDATE performance_scores SET game_points_achieved = 0, game_score = 0, "
        "performance_weights = $2 WHERE session_id = $1::uuid",
        ids["missing"],
        excluded,
    )
    # Legacy: points known, but no maximum score -> game excluded, the points are real.
    legacy = dict(excluded, excluded={"game": "no maximum game score in legacy data"})
    await db.execute(
        "UPDATE performance_scores SET game_points_achieved = 420, game_score = 0, "
        "performance_weights = $2 WHERE session_id = $1::uuid",
        ids["legacy_known"],
        legacy,
    )
    # A patient who really scored 0 points: game included, S_game 0.
    await db.execute(
        "UPDATE performance_scores SET game_points_achieved = 0, game_score = 0 WHERE session_id = $1::uuid",
        ids["real_zero"],
    )
    return {"patient": patient, "ids": ids}


EXPECTED = {"missing": (None, None), "legacy_known": (420, None), "given": (700, 70.0), "real_zero": (0, 0.0)}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("export_type", ["performance_report", "clinical_summary"])
async def test_missing_game_points_are_empty_not_zero(export_stub, stats_stub, game_world, fmt, export_type):
    ids = game_world["ids"]
    # The statistics API itself still says 0 (PerformanceScore.game_points_achieved is a plain int32).
    missing = await stats_stub.GetPerformanceScore(spb.SessionKey(session_id=ids["missing"]))
    assert missing.game_points_achieved == 0 and not missing.HasField("game_score")
    assert "game" in missing.excluded_components

    kind = pb.EXPORT_TYPE_PERFORMANCE_REPORT if export_type == "performance_report" else pb.EXPORT_TYPE_CLINICAL_SUMMARY
    _, payload, completed, _ = await run_export(
        export_stub, type=kind, format=FORMATS[fmt], session_ids=list(ids.values())
    )
    assert completed.status == pb.EXPORT_STATUS_SUCCESS
    got = tables(payload, fmt)
    name = "csv" if fmt == "csv" else ("performance" if export_type == "performance_report" else "sessions")
    rows: dict[str | None, Any] = {}
    for r in got[name]:
        rows.setdefault(text(r["session_id"]), r)  # CSV summary: one row per channel, same session columns
    assert set(rows) == set(ids.values())
    for case, (points, score) in EXPECTED.items():
        r = rows[ids[case]]
        assert num(r["game_points_achieved"]) == points, (case, r["game_points_achieved"])
        assert num(r["game_score"]) == score, (case, r["game_score"])
        assert num(r["game_points_maximum"]) == 1000
    if fmt in ("csv", "excel"):
        cell = rows[ids["missing"]]["game_points_achieved"]
        assert cell in ("", None)  # an empty cell, not "0"
    if fmt == "json":
        assert (
            rows[ids["missing"]]["game_points_achieved"] is None and rows[ids["real_zero"]]["game_points_achieved"] == 0
        )
