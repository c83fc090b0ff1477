"""The signal cache maintenance (JitSignalServicer.sweep): run at start and periodically by the
service; expired rows are marked, files of rows no longer valid removed, old invalid rows dropped."""

from __future__ import annotations

import uuid

from tests.helpers import caseload_with_session

INSERT = """
INSERT INTO signal_processing_cache (session_id, processing_request_hash, processing_version, cache_type,
                                     expires_at, cache_valid, invalidated_reason, invalidated_at)
VALUES ($1, $2, 'v', 'envelope_rms', now() + make_interval(days => $3), $4, $5, now() - make_interval(days => $6))
"""


async def test_the_sweep_runs_with_the_service(servicer):
    assert servicer._sweeper is not None and not servicer._sweeper.done()


async def test_sweep_marks_expired_removes_invalid_files_and_drops_old_rows(db, servicer):
    _, _, sid = await caseload_with_session(db, "Sweep", "W")
    keys = {name: uuid.uuid4().hex for name in ("fresh", "expired", "invalid_recent", "invalid_old")}
    rows = {  # name: (expires in days, valid, reason, invalidated days ago)
        "fresh": (7, True, None, 0),
        "expired": (-1, True, None, 0),
        "invalid_recent": (7, False, "session_reprocessed", 1),
        "invalid_old": (7, False, "session_reprocessed", 40),
    }
    for name, (expires, valid, reason, ago) in rows.items():
        await db.execute(INSERT, sid, keys[name], expires, valid, reason, ago)
        servicer.disk.put(keys[name], b"payload")

    counts = await servicer.sweep()

    assert counts["expired"] >= 1 and counts["files_removed"] >= 3 and counts["rows_deleted"] >= 1
    left = {
        r["processing_request_hash"]: r
        for r in await db.fetch("SELECT * FROM signal_processing_cache WHERE session_id = $1", sid)
    }
    assert set(left) == {keys["fresh"], keys["expired"], keys["invalid_recent"]}
    assert left[keys["fresh"]]["cache_valid"] and left[keys["fresh"]]["invalidated_reason"] is None
    assert not left[keys["expired"]]["cache_valid"] and left[keys["expired"]]["invalidated_reason"] == "expired"
    assert servicer.disk.path(keys["fresh"]).is_file()
    for name in ("expired", "invalid_recent", "invalid_old"):
        assert not servicer.disk.path(keys[name]).exists(), name
    # Nothing left to do: a second sweep finds none of these rows.
    again = await servicer.sweep()
    assert again["files_removed"] == 0 and again["expired"] == 0
