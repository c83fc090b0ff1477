"""Audit trail, failure handling, format limits, deadline/request-id propagation and the CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sys
import uuid

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ghostly.export.v1 import export_pb2 as pb
from ghostly.export.v1 import export_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2 as spb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from libs.grpc_server import start_service
from services.export import writers
from services.export.model import ExportDocument, SignalSet, SignalTrace
from tests.helpers import ROOT, free_port, new_patient, run_export, upload, wait_for


@pytest.fixture(scope="module")
async def audit_world(ingest_stub, db, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export-audit")
    patient = await new_patient(db)
    ids = []
    for seed in (31, 32):
        spec = SyntheticSpec(
            duration_s=40.0,
            seed=seed,
            time=(2024, 7, 1, 10, seed - 30),
            channels=[ChannelSpec(contractions=regular_contractions(6, 2.0, 5.0)), ChannelSpec()],
        )
        path = tmp / ghostly_file_name(spec, seconds=seed)
        write_synthetic_c3d(path, spec)
        ids.append((await upload(ingest_stub, path.read_bytes(), path.name, patient, rpe_post_session=5)).session_id)
    return {"patient": patient, "ids": ids, "tmp": tmp}


async def export_service_with(stack, **ports):
    from services.export.server import SPEC

    cfg = dataclasses.replace(stack.cfg, ports=dict(stack.cfg.ports, **ports))
    return await start_service(SPEC, cfg, port=0)


# --------------------------------------------------------------------------- downstream down


@pytest.mark.parametrize(
    "down, export_type, needle",
    [
        ("statistics", pb.EXPORT_TYPE_STATISTICS_ONLY, "statistics service unavailable"),
        ("statistics", pb.EXPORT_TYPE_CLINICAL_SUMMARY, "statistics service unavailable"),
        ("jit_signal", pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL, "jit_signal service unavailable"),
    ],
)
async def test_downstream_down_is_unavailable_with_a_failed_row(
    stack, db, audit_world, researcher, down, export_type, needle
):
    server = await export_service_with(stack, **{down: free_port()})  # nothing listens there
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = export_pb2_grpc.ExportServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await run_export(
                    stub,
                    type=export_type,
                    format=pb.EXPORT_FORMAT_CSV,
                    session_ids=audit_world["ids"][:1],
                    exported_by=researcher,
                )
    finally:
        await server.stop(0)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert needle in info.value.details() and "recorded as failed" in info.value.details()
    export_id = info.value.details().split("(export ")[1].split(" ")[0]
    row = await db.fetchrow("SELECT * FROM export_history WHERE id = $1::uuid", export_id)
    assert row["export_status"] == "failed" and needle in row["error_message"]
    assert row["export_hash"] is None and row["file_size_bytes"] is None
    assert str(row["session_id"]) == audit_world["ids"][0] and str(row["exported_by"]) == researcher
    assert row["processing_time_ms"] is not None


# --------------------------------------------------------------------------- Excel limit


def test_excel_writer_refuses_more_rows_than_a_sheet_holds():
    n = writers.EXCEL_MAX_ROWS  # + header = one row too many
    trace = SignalTrace("CH1", "raw", "V", 990.0, 0.0, np.zeros(n, dtype=np.float32))
    doc = ExportDocument("signals_research_full", {}, signals=SignalSet([trace], True))
    with pytest.raises(writers.FormatLimitError, match="csv or matlab"):
        writers.write_excel(doc)
    trace.values = trace.values[:-1]  # exactly 1,048,576 rows with the header: allowed by the check
    writers.check_excel_rows(writers.table_rows(doc))


async def test_excel_limit_end_to_end(export_stub, ingest_stub, db, audit_world):
    # 1,060 s at 990 Hz = 1,049,400 samples per channel: one Excel sheet cannot hold it.
    spec = SyntheticSpec(
        duration_s=1060.0,
        seed=40,
        time=(2024, 8, 1, 9, 0),
        with_points=False,
        channels=[ChannelSpec(contractions=regular_contractions(12, 2.0, 60.0)), ChannelSpec()],
    )
    path = audit_world["tmp"] / ghostly_file_name(spec, seconds=40)
    write_synthetic_c3d(path, spec)
    sid = (await upload(ingest_stub, path.read_bytes(), path.name, audit_world["patient"])).session_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(
            export_stub, type=pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL, format=pb.EXPORT_FORMAT_EXCEL, session_ids=[sid]
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1,048,576" in info.value.details() and "csv or matlab" in info.value.details()
    export_id = info.value.details().split("(export ")[1].split(" ")[0]
    row = await db.fetchrow("SELECT * FROM export_history WHERE id = $1::uuid", export_id)
    assert row["export_status"] == "failed" and "1,049,401 rows" in row["error_message"]
    # Downsampled long layout: 2 channels x 600,000 points do not fit either.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_export(
            export_stub,
            type=pb.EXPORT_TYPE_SIGNALS_VISUALIZATION,
            format=pb.EXPORT_FORMAT_EXCEL,
            session_ids=[sid],
            max_points=600_000,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The suggested alternative works.
    _started, payload, completed, n = await run_export(
        export_stub,
        type=pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL,
        format=pb.EXPORT_FORMAT_MATLAB,
        session_ids=[sid],
        channels=["CH1"],
    )
    assert completed.status == pb.EXPORT_STATUS_SUCCESS and n > 1
    import io

    from scipy.io import loadmat

    g = loadmat(io.BytesIO(payload), squeeze_me=True, struct_as_record=False)["ghostly"]
    assert g.data.shape == (1_049_400,)


# --------------------------------------------------------------------------- ListExportHistory


async def test_list_export_history_filters_and_pagination(export_stub, db, audit_world):
    me = uuid.uuid4()
    await db.execute("INSERT INTO researcher_profiles (id, full_name, institution) VALUES ($1, 'L', 'I')", me)
    a, b = audit_world["ids"]
    before = Timestamp()
    before.GetCurrentTime()
    made = []
    for export_type, fmt, ids in [
        (pb.EXPORT_TYPE_STATISTICS_ONLY, pb.EXPORT_FORMAT_CSV, [a]),
        (pb.EXPORT_TYPE_STATISTICS_ONLY, pb.EXPORT_FORMAT_JSON, [b]),
        (pb.EXPORT_TYPE_PERFORMANCE_REPORT, pb.EXPORT_FORMAT_CSV, [a]),
        (pb.EXPORT_TYPE_CLINICAL_SUMMARY, pb.EXPORT_FORMAT_EXCEL, [a, b]),
        (pb.EXPORT_TYPE_PERFORMANCE_REPORT, pb.EXPORT_FORMAT_MATLAB, [b]),
    ]:
        started, *_ = await run_export(export_stub, type=export_type, format=fmt, session_ids=ids, exported_by=str(me))
        made.append(started.export_id)
    with pytest.raises(grpc.aio.AioRpcError):
        await run_export(
            export_stub,
            type=pb.EXPORT_TYPE_STATISTICS_ONLY,
            format=pb.EXPORT_FORMAT_CSV,
            session_ids=[str(uuid.uuid4())],
            exported_by=str(me),
        )

    async def ids_of(**f):
        out, token = [], ""
        while True:
            page = await export_stub.ListExportHistory(pb.ListExportHistoryRequest(page_token=token, **f))
            out += [r.id for r in page.records]
            token = page.next_page_token
            if not token:
                return out

    mine = await ids_of(exported_by=str(me))
    assert len(mine) == 6 and mine[1:] == made[::-1], "newest first"
    assert await ids_of(exported_by=str(me), page_size=2) == mine  # cursor pagination, 3 pages
    assert await ids_of(exported_by=str(me), type=pb.EXPORT_TYPE_PERFORMANCE_REPORT) == [made[4], made[2]]
    assert await ids_of(exported_by=str(me), format=pb.EXPORT_FORMAT_CSV) == [mine[0], made[2], made[0]]
    assert await ids_of(exported_by=str(me), status=pb.EXPORT_STATUS_FAILED) == [mine[0]]
    assert await ids_of(exported_by=str(me), status=pb.EXPORT_STATUS_SUCCESS) == made[::-1]
    # Session filter: single-session rows and the multi-session clinical summary listing it.
    assert await ids_of(exported_by=str(me), session_id=a) == [made[3], made[2], made[0]]
    assert await ids_of(session_id=b, exported_by=str(me), type=pb.EXPORT_TYPE_CLINICAL_SUMMARY) == [made[3]]
    after = Timestamp()
    after.GetCurrentTime()
    assert await ids_of(exported_by=str(me), to=before) == []
    setattr_from = pb.ListExportHistoryRequest(exported_by=str(me), page_size=10)
    getattr(setattr_from, "from").CopyFrom(before)
    setattr_from.to.CopyFrom(after)
    page = await export_stub.ListExportHistory(setattr_from)
    assert [r.id for r in page.records] == mine

    rec = (
        await export_stub.ListExportHistory(
            pb.ListExportHistoryRequest(exported_by=str(me), page_size=1, status=pb.EXPORT_STATUS_SUCCESS)
        )
    ).records[0]
    row = await db.fetchrow("SELECT * FROM export_history WHERE id = $1::uuid", rec.id)
    assert rec.export_hash == row["export_hash"] and rec.file_size_bytes == row["file_size_bytes"]
    assert rec.processing_method == "database_query" and rec.data_source == "cached_statistics"
    assert rec.format == pb.EXPORT_FORMAT_MATLAB and rec.session_id == b and rec.exported_by == str(me)
    assert {c.name for c in rec.validation_checks} >= {"row_count", "hash_verified"}
    assert json.loads(rec.export_options_json)["session_ids"] == [b]

    page = await export_stub.ListExportHistory(pb.ListExportHistoryRequest(exported_by=str(me), page_size=2))
    for bad in [
        pb.ListExportHistoryRequest(page_token="garbage"),
        pb.ListExportHistoryRequest(page_token=page.next_page_token, type=pb.EXPORT_TYPE_STATISTICS_ONLY),
        pb.ListExportHistoryRequest(page_size=501),
        pb.ListExportHistoryRequest(session_id="x"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await export_stub.ListExportHistory(bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- deadline + request id


class RecordingStatistics(statistics_pb2_grpc.StatisticsServiceServicer):
    """A stand-in StatisticsService that records what the export service sends it."""

    def __init__(self):
        self.seen: list[tuple[str, str | None, float | None]] = []

    def _note(self, method, context):
        rid = dict(context.invocation_metadata()).get("x-request-id")
        self.seen.append((method, rid, context.time_remaining()))

    async def GetSession(self, request, context):
        self._note("GetSession", context)
        return spb.Session(id=request.session_id, session_label="fake", patient_id="P1", processing_version="t")

    async def GetEmgStatistics(self, request, context):
        self._note("GetEmgStatistics", context)
        return spb.GetEmgStatisticsResponse(
            channels=[
                spb.ChannelStatistics(
                    session_id=request.session_id, channel_name="CH1", mvc_peak_value=1.5e-4, total_contractions=3
                )
            ]
        )

    async def BatchGetSessionStatistics(self, request, context):
        self._note("BatchGetSessionStatistics", context)
        out = spb.BatchGetSessionStatisticsResponse()
        for sid in request.session_ids:
            out.sessions.add(
                session=spb.Session(id=sid, session_label="fake", patient_id="P1", processing_version="t"),
                channels=[
                    spb.ChannelStatistics(
                        session_id=sid, channel_name="CH1", mvc_peak_value=1.5e-4, total_contractions=3
                    )
                ],
            )
        return out


async def test_deadline_and_request_id_are_passed_on(stack):
    fake = RecordingStatistics()
    server = grpc.aio.server()
    statistics_pb2_grpc.add_StatisticsServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    export = await export_service_with(stack, statistics=port)
    try:
        async with grpc.aio.insecure_channel(export.address) as ch:
            stub = export_pb2_grpc.ExportServiceStub(ch)
            _, payload, completed, _ = await run_export(
                stub,
                type=pb.EXPORT_TYPE_STATISTICS_ONLY,
                format=pb.EXPORT_FORMAT_CSV,
                session_ids=[str(uuid.uuid4())],
                timeout=7,
                metadata=(("x-request-id", "trace-abc-123"),),
            )
    finally:
        await export.stop(0)
        await server.stop(0)
    assert completed.status == pb.EXPORT_STATUS_SUCCESS
    assert b"1.5e-04" in payload or b"0.00015" in payload
    # Statistics exports read many sessions per call (BatchGetSessionStatistics).
    assert {m for m, _, _ in fake.seen} == {"BatchGetSessionStatistics"}
    for method, rid, remaining in fake.seen:
        assert rid == "trace-abc-123", method
        # (gRPC rounds deadlines on the wire: a few ms above the caller's 7 s are seen)
        assert remaining is not None and 5 < remaining <= 7.1, (method, remaining)


# --------------------------------------------------------------------------- cancellation


async def test_client_cancel_mid_stream_is_recorded_failed(export_stub, db, audit_world):
    call = export_stub.CreateExport(
        pb.CreateExportRequest(
            type=pb.EXPORT_TYPE_SIGNALS_RESEARCH_FULL,
            format=pb.EXPORT_FORMAT_JSON,
            session_ids=audit_world["ids"][:1],
            signal_kinds=["raw", "filtered", "envelope"],
        )
    )
    export_id = None
    async for msg in call:
        if msg.WhichOneof("body") == "started":
            export_id = msg.started.export_id
        elif msg.WhichOneof("body") == "data":
            call.cancel()
            break

    async def cancelled():
        row = await db.fetchrow("SELECT * FROM export_history WHERE id = $1::uuid", export_id)
        return row if "cancelled" in (row["error_message"] or "") else None

    row = await wait_for(cancelled, timeout=10)
    assert row["export_status"] == "failed" and row["export_hash"] is None


# --------------------------------------------------------------------------- least privilege


async def test_history_sql_runs_as_the_ghostly_export_role(database_url, researcher, audit_world):
    """Every statement of services/export/history.py works with migration 010's ghostly_export grants."""
    import asyncpg

    from libs.db.dsn import with_user
    from libs.db.pool import init_connection
    from services.export.history import History

    dsn = with_user(database_url, "ghostly_export")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, init=init_connection)
    try:
        assert await pool.fetchval("SELECT current_user") == "ghostly_export"
        h = History(pool)
        eid = uuid.uuid4()
        from libs import auth  # outside an RPC: the caller is set explicitly (fail closed otherwise)

        acting = auth.acting_as(auth.Identity(subject=researcher, role="researcher"))
        acting.__enter__()
        started = await h.start(
            export_id=eid,
            session_id=uuid.UUID(audit_world["ids"][0]),
            export_type="statistics_only",
            channels=None,
            data_format="csv",
            options={"session_ids": audit_world["ids"][:1]},
            processing_method="database_query",
            data_source="cached_statistics",
            exported_by=uuid.UUID(researcher),
        )
        assert str(started.exported_by) == researcher
        await h.finish(
            eid,
            status="success",
            processing_time_ms=1,
            size=3,
            sha256="ab",
            checks=[],
            error_message=None,
            options={"session_ids": audit_world["ids"][:1]},
        )
        rows = await h.list(
            session_id=uuid.UUID(audit_world["ids"][0]),
            exported_by=uuid.UUID(researcher),
            export_type="statistics_only",
            data_format="csv",
            status="success",
            time_from=None,
            time_to=None,
            cursor=None,
            limit=100,
        )
        assert eid in [r["id"] for r in rows]
        acting.__exit__(None, None, None)
    finally:
        await pool.close()


# --------------------------------------------------------------------------- CLI


async def _cli(*args: str) -> tuple[int | None, str, str]:
    # The servers run on this test's event loop: the CLI must run as a subprocess awaited
    # asynchronously, never with a blocking subprocess.run.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.client.export",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_downloads_verifies_and_writes_the_csv_sidecar(stack, audit_world, researcher, tmp_path):
    out = tmp_path / "stats.csv"
    code, stdout, stderr = await _cli(
        "--type",
        "statistics_only",
        "--format",
        "csv",
        "--session",
        audit_world["ids"][0],
        "-o",
        str(out),
        "--exported-by",
        researcher,
        "--address",
        stack.address("export"),
    )
    assert code == 0, stderr
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256 {sha} (verified)" in stdout and "status success" in stdout
    assert "B/s" in stderr  # tqdm progress bar in bytes
    meta = json.loads((tmp_path / "stats.csv.meta.json").read_text())
    assert meta["sha256"] == sha and meta["units"]["amplitudes"].startswith("V")
    assert {"table": "statistics", "column": "mvc_peak_value_v", "unit": "V"} in meta["columns"]
    assert not list(tmp_path.glob("*.part"))
    code, stdout, stderr = await _cli(
        "--type",
        "statistics_only",
        "--format",
        "csv",
        "--session",
        str(uuid.uuid4()),
        "-o",
        str(tmp_path / "nope.csv"),
        "-q",
        "--address",
        stack.address("export"),
    )
    assert code == 1 and "NOT_FOUND" in stderr and not (tmp_path / "nope.csv").exists()
    code, stdout, stderr = await _cli(
        "--type",
        "signals_visualization",
        "--format",
        "matlab",
        "--session",
        audit_world["ids"][0],
        "--kind",
        "raw",
        "--kind",
        "envelope",
        "--max-points",
        "300",
        "-o",
        str(tmp_path / "v.mat"),
        "--address",
        stack.address("export"),
    )
    assert code == 0, stderr
    from scipy.io import loadmat

    g = loadmat(tmp_path / "v.mat", squeeze_me=True, struct_as_record=False)["ghostly"]
    assert g.data.shape == (300, 4) and list(g.kinds) == ["raw", "envelope", "raw", "envelope"]


async def test_a_nul_in_the_selection_ends_as_a_failed_row_not_in_progress(export_stub, db):
    """A NUL character anywhere in the request: refused, and its audit row closed as failed
    with the reason (PostgreSQL cannot store NUL; before, the closing write failed and the row
    stayed 'in progress' forever)."""
    from services.export.history import IN_PROGRESS

    marker = f"nul-{uuid.uuid4().hex}"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [
            m
            async for m in export_stub.CreateExport(
                pb.CreateExportRequest(
                    type=pb.EXPORT_TYPE_STATISTICS_ONLY,
                    format=pb.EXPORT_FORMAT_CSV,
                    session_ids=[f"{marker}\x00x"],
                    channels=["CH1\x00"],
                )
            )
        ]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    export_id = info.value.details().split("(export ")[1].split(" ")[0]
    row = await db.fetchrow("SELECT * FROM export_history WHERE id = $1::uuid", export_id)
    assert row["export_status"] == "failed" and row["error_message"] != IN_PROGRESS and row["error_message"]
    assert marker in str(row["export_options"])


async def test_sweep_closes_rows_of_a_dead_export_process(db, database_url):
    """A row left 'in progress' by a process that died is closed by the next export process."""
    import asyncpg

    from libs.db.pool import init_connection
    from services.export.history import IN_PROGRESS, History

    eid = uuid.uuid4()
    await db.execute(
        "INSERT INTO export_history (id, export_type, data_format, export_options, processing_method, "
        "data_source, export_status, error_message, export_timestamp) VALUES ($1, 'statistics_only', "
        "'csv', '{}', 'database_query', 'cached_statistics', 'failed', $2, now() - interval '2 hours')",
        eid,
        IN_PROGRESS,
    )
    recent = uuid.uuid4()
    await db.execute(
        "INSERT INTO export_history (id, export_type, data_format, export_options, processing_method, "
        "data_source, export_status, error_message) VALUES ($1, 'statistics_only', 'csv', '{}', "
        "'database_query', 'cached_statistics', 'failed', $2)",
        recent,
        IN_PROGRESS,
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, init=init_connection)
    try:
        assert await History(pool).sweep_stale() >= 1
    finally:
        await pool.close()
    msg = await db.fetchval("SELECT error_message FROM export_history WHERE id = $1", eid)
    assert msg.startswith("the export process ended before completing")
    assert await db.fetchval("SELECT error_message FROM export_history WHERE id = $1", recent) == IN_PROGRESS
