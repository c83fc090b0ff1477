"""Ingest's memory budget and its integer-format reader end to end (issue 16, items 2 and 5):
a C3D whose analysis would need more than GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB is refused with
RESOURCE_EXHAUSTED from its header, before a session is claimed (no row, no store file, and
the same upload succeeds under a larger budget); an integer-format C3D is analysed by the
numpy reader, and a truncated one is INVALID_ARGUMENT, never a shorter completed session."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import grpc
import numpy as np
import pytest

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2
from tests.emg.test_c3d_writer import INTEL, MIPS, C3DSpec, build_c3d, layout_of
from tests.helpers import upload_messages
from tests.ingest.test_ingest_service import synthetic_bytes

NAME = "Ghostly_Emg_20240506_14-30-{:02d}-0881.c3d"
LABELS = ["CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated"]


def _int_c3d(seed: int, processor: int = INTEL) -> bytes:
    """A 40 s integer-format GHOSTLY-like recording: two raw channels with bursts (counts of a
    16-bit ADC, scale 1e-7 V/count) and the two device activation channels."""
    rng = np.random.default_rng(seed)
    n = 990 * 40
    raw = rng.normal(0, 40, (2, n))
    t = np.arange(n) / 990
    on = (np.sin(2 * np.pi * t / 8) > 0.6).astype(float)
    raw *= 1 + 25 * on
    act = np.vstack([on, on]) * 1000
    counts = np.clip(np.vstack([raw, act]), -32000, 32000).astype(np.int64)
    return build_c3d(
        C3DSpec(
            counts,
            storage="int",
            processor=processor,
            n_points=1,
            labels=LABELS,
            scale=[1e-7, 1e-7, 1e-3, 1e-3],
            units=["V", "V", "V", "V"],
        )
    )


@pytest.fixture
def budget(ingest_server):
    """Set the ingest server's memory budget (MiB) for one test; restored afterwards."""
    ctx = ingest_server.context
    before = ctx.config

    def set_mb(mb: int) -> None:
        ctx.config = dataclasses.replace(before, analysis_memory_budget_mb=mb)

    yield set_mb
    ctx.config = before


async def test_upload_over_the_memory_budget_is_refused_before_the_claim(
    stub, db, patient, tmp_path, ingest_server, budget
):
    data, name = synthetic_bytes(tmp_path, seed=7301)
    budget(1)  # 1 MiB: below any analysis
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Upload(upload_messages(data, name, patient))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB" in err.value.details() and "MiB" in err.value.details()
    digest = hashlib.sha256(data).hexdigest()
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE file_hash = $1", digest) == 0
    store = Path(ingest_server.context.config.store_dir)
    assert not (store / patient / name).exists()

    budget(2048)  # the default: the same upload goes through
    good = await stub.Upload(upload_messages(data, name, patient))
    assert good.created and good.status == common_pb2.PROCESSING_STATUS_COMPLETED


async def test_reprocess_over_the_budget_keeps_previous_results(stub, db, patient, tmp_path, budget):
    data, name = synthetic_bytes(tmp_path, seed=7302)
    reply = await stub.Upload(upload_messages(data, name, patient))
    budget(1)
    last = None
    async for msg in stub.Reprocess(ingest_pb2.ReprocessRequest(session_id=reply.session_id)):
        last = msg if not msg.done else last
    assert last is not None and last.error_message.startswith("RESOURCE_EXHAUSTED")
    row = await db.fetchrow("SELECT processing_status FROM therapy_sessions WHERE id = $1::uuid", reply.session_id)
    assert row["processing_status"] == "completed"
    assert await db.fetchval("SELECT count(*) FROM emg_statistics WHERE session_id = $1::uuid", reply.session_id) == 2


@pytest.mark.parametrize("processor", [INTEL, MIPS], ids=["intel", "big-endian"])
async def test_integer_c3d_is_analysed_and_a_truncated_one_refused(stub, db, patient, processor):
    blob = _int_c3d(7303 + processor, processor)
    name = NAME.format(processor % 60)
    reply = await stub.Upload(upload_messages(blob, name, patient))
    assert reply.created and reply.status == common_pb2.PROCESSING_STATUS_COMPLETED
    n = await db.fetchval("SELECT count(*) FROM emg_statistics WHERE session_id = $1::uuid", reply.session_id)
    assert n == 2

    where = layout_of(C3DSpec(np.zeros((4, 990 * 40)), storage="int", processor=processor), blob)
    cut = blob[: where.data_start + (where.data_end - where.data_start) // 2]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Upload(upload_messages(cut, NAME.format(processor % 60 + 1), patient))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Truncated C3D file" in err.value.details()
    status = await db.fetchval(
        "SELECT processing_status FROM therapy_sessions WHERE file_hash = $1", hashlib.sha256(cut).hexdigest()
    )
    assert status == "failed"  # recorded with the reader's reason, never a shorter completed session
