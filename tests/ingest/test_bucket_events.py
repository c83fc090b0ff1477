"""Event-driven ingest (services/ingest/bucket_events.py): S3 bucket notifications from NATS
JetStream into ingest, against real servers started by the test itself: nats-server -js
(libs.events.EmbeddedNats), an S3-protocol server (moto, libs.storage.s3_server), PostgreSQL.
At-least-once, idempotent by content hash, bounded retries, dead letters, metrics, several
replicas sharing one durable consumer."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import uuid
from pathlib import Path

import grpc
import pytest

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from libs.events import EmbeddedNats, bucket_event, connect, dead_subject, publish_bucket_event
from libs.grpc_server import start_service
from libs.storage.s3_server import EmbeddedS3
from services.ingest import bucket_events as be
from services.ingest.server import SPEC
from tests.helpers import add_patient, add_therapist, make_config, register_patient, wait_for


def synthetic(tmp: Path, seed: int | None = None) -> tuple[bytes, str]:
    """A small synthetic C3D with bytes no other test has (sessions are deduplicated by hash)."""
    seed = random.randrange(1, 1 << 30) if seed is None else seed
    spec = SyntheticSpec(
        duration_s=20.0,
        seed=seed,
        channels=[
            ChannelSpec(contractions=regular_contractions(4, 2.0, 4.0)),
            ChannelSpec(contractions=regular_contractions(3, 1.0, 5.0, amplitude_v=200e-6)),
        ],
    )
    path = tmp / f"{seed}-{ghostly_file_name(spec, seconds=seed % 60)}"
    write_synthetic_c3d(path, spec)
    return path.read_bytes(), path.name


@pytest.fixture(scope="module")
def s3():
    with EmbeddedS3() as server:
        env = server.env()
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield server
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def broker():
    with EmbeddedNats(ephemeral=True) as server:
        yield server


@pytest.fixture(scope="module")
def bucket(s3) -> str:
    name = f"ghostly-ev-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def events_cfg(database_url, tmp_path_factory, bucket, broker):
    tag = uuid.uuid4().hex[:8]
    cfg = make_config(database_url, tmp_path_factory.mktemp("ev-data"))
    return dataclasses.replace(
        cfg,
        store_url=f"s3://{bucket}/c3d",
        events_url=broker.url,
        events_stream=f"EV_{tag}",
        events_subject=f"test.{tag}.bucket",
        events_consumer=f"ingest-{tag}",
        events_max_deliver=3,
        events_retry_delay_s=0.1,
        ingest_workers=1,
    )


@pytest.fixture(scope="module")
async def ingest_replicas(events_cfg):
    """Two ingest servers (replicas) sharing the store, the database and the consumer."""
    servers = [await start_service(SPEC, events_cfg, port=0) for _ in range(2)]
    await wait_for(lambda: _all_started(servers), timeout=20)
    yield servers
    for s in servers:
        await s.stop(0)


async def _all_started(servers):
    return all(
        getattr(s.context, "bucket_events", None) is not None and s.context.bucket_events.js is not None
        for s in servers
    )


@pytest.fixture
async def js(broker):
    nc = await connect(broker.url)
    yield nc.jetstream()
    await nc.close()


async def notify(js, cfg, bucket: str, key: str, **kw):
    await publish_bucket_event(js, cfg.events_subject, bucket_event(bucket, key, **kw))


async def session_of(db, path: str):
    return await db.fetchrow("SELECT id, processing_status, file_hash FROM therapy_sessions WHERE file_path = $1", path)


async def settled(js, cfg):
    """Every event handled: nothing pending or unacknowledged on the shared consumer."""
    info = await js.consumer_info(cfg.events_stream, cfg.events_consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0


def metric(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_object_created_event_ingests_once_and_duplicates_are_idempotent(
    ingest_replicas, events_cfg, s3, bucket, js, db, tmp_path
):
    patient = await register_patient(db, "E")
    data, name = synthetic(tmp_path)
    key = f"c3d/{patient}/{name}"
    s3.client().put_object(Bucket=bucket, Key=key, Body=data)  # straight into the bucket (a tablet)
    before = metric("ghostly_bucket_events_total", outcome="completed")
    await notify(js, events_cfg, bucket, key, size=len(data))
    row = await wait_for(lambda: _completed(db, f"{patient}/{name}"), timeout=60)
    assert row["processing_status"] == "completed"
    # (counted once acknowledged, just after the session is written)
    await wait_for(lambda: _true(metric("ghostly_bucket_events_total", outcome="completed") == before + 1), timeout=10)
    assert metric("ghostly_bucket_event_lag_seconds_count") >= 1
    # The same notification again (at-least-once delivery) and the same bytes under another key.
    dup = metric("ghostly_bucket_events_total", outcome="duplicate")
    s3.client().put_object(Bucket=bucket, Key=f"c3d/{patient}/copy-{name}", Body=data)
    await notify(js, events_cfg, bucket, key)
    await notify(js, events_cfg, bucket, f"c3d/{patient}/copy-{name}")
    await wait_for(lambda: _true(metric("ghostly_bucket_events_total", outcome="duplicate") == dup + 2), timeout=30)
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE file_hash = $1", row["file_hash"]) == 1
    await wait_for(lambda: settled(js, events_cfg), timeout=10)


async def _true(value):
    return value


async def _completed(db, path):
    row = await session_of(db, path)
    return row if row is not None and row["processing_status"] in ("completed", "failed") else None


async def test_events_not_for_the_store_are_acknowledged_and_ignored(ingest_replicas, events_cfg, bucket, js):
    ignored = metric("ghostly_bucket_events_total", outcome="ignored")
    await notify(js, events_cfg, "another-bucket", "c3d/P1/a.c3d")
    await notify(js, events_cfg, bucket, "elsewhere/P1/a.c3d")  # outside the prefix
    await notify(js, events_cfg, bucket, "c3d/P1/a.c3d", event_name="s3:ObjectRemoved:Delete")
    await notify(js, events_cfg, bucket, "c3d/P1/.hidden")  # not a store path
    await wait_for(lambda: _true(metric("ghostly_bucket_events_total", outcome="ignored") == ignored + 4), timeout=20)
    await wait_for(lambda: settled(js, events_cfg), timeout=10)


async def test_failing_events_are_retried_then_dead_lettered(ingest_replicas, events_cfg, bucket, js, db):
    nc = await connect(events_cfg.events_url)
    dead = await nc.subscribe(dead_subject(events_cfg.events_subject))
    dead_before = metric("ghostly_bucket_events_total", outcome="dead_lettered")
    patient = await register_patient(db, "E")
    key = f"c3d/{patient}/never-uploaded.c3d"
    await notify(js, events_cfg, bucket, key)  # object missing: NotFound
    msg = await dead.next_msg(timeout=30)
    letter = json.loads(msg.data)
    assert letter["deliveries"] == events_cfg.events_max_deliver == 3
    assert letter["records"] == [{"bucket": bucket, "key": key, "eventName": "ObjectCreated:Put"}]
    assert letter["error"].startswith("NotFound") and letter["event"]["Records"][0]["s3"]["object"]["key"] == key
    # (counted once the event is acknowledged, just after its dead letter is stored)
    await wait_for(
        lambda: _true(metric("ghostly_bucket_events_total", outcome="dead_lettered") == dead_before + 1), timeout=10
    )
    assert metric("ghostly_bucket_event_failures_total", reason="NotFound") >= 3
    # Not JSON at all: no retry can help, dead-lettered at once.
    await js.publish(events_cfg.events_subject, b"not json")
    letter = json.loads((await dead.next_msg(timeout=10)).data)
    assert letter["deliveries"] == 1 and letter["error"].startswith("unreadable event")
    await nc.close()
    await wait_for(lambda: settled(js, events_cfg), timeout=10)


async def test_a_retry_succeeds_once_the_cause_is_fixed(ingest_replicas, events_cfg, s3, bucket, js, db, tmp_path):
    """An object whose notification arrives before the patient is registered (FAILED_PRECONDITION):
    registered before the retries run out, the event completes."""
    cfg = dataclasses.replace(events_cfg)
    code = f"L{uuid.uuid4().hex[:7].upper()}"
    data, name = synthetic(tmp_path)
    s3.client().put_object(Bucket=bucket, Key=f"c3d/{code}/{name}", Body=data)
    retried = metric("ghostly_bucket_events_total", outcome="retried")
    await notify(js, cfg, bucket, f"c3d/{code}/{name}")
    await wait_for(lambda: _true(metric("ghostly_bucket_events_total", outcome="retried") > retried), timeout=20)
    tid, _ = await add_therapist(db, last="Late")
    await add_patient(db, tid, code, last="Late")
    row = await wait_for(lambda: _completed(db, f"{code}/{name}"), timeout=60)
    assert row["processing_status"] == "completed"


async def test_unreadable_file_is_a_failed_session_not_a_dead_letter(ingest_replicas, events_cfg, s3, bucket, js, db):
    patient = await register_patient(db, "E")
    key = f"c3d/{patient}/garbage-{uuid.uuid4().hex[:6]}.c3d"
    s3.client().put_object(Bucket=bucket, Key=key, Body=os.urandom(5000))
    failed = metric("ghostly_bucket_events_total", outcome="failed")
    await notify(js, events_cfg, bucket, key)
    row = await wait_for(lambda: _completed(db, key.removeprefix("c3d/")), timeout=60)
    assert row["processing_status"] == "failed"
    await wait_for(lambda: _true(metric("ghostly_bucket_events_total", outcome="failed") == failed + 1), timeout=10)
    await wait_for(lambda: settled(js, events_cfg), timeout=10)


async def test_replicas_share_the_events_each_handled_once(ingest_replicas, events_cfg, s3, bucket, js, db, tmp_path):
    patient = await register_patient(db, "E")
    dup = metric("ghostly_bucket_events_total", outcome="duplicate")
    keys = []
    for _ in range(6):
        data, name = synthetic(tmp_path)
        keys.append(f"c3d/{patient}/{name}")
        s3.client().put_object(Bucket=bucket, Key=keys[-1], Body=data)
    for key in keys:
        await notify(js, events_cfg, bucket, key)
    for path in [k.removeprefix("c3d/") for k in keys]:
        await wait_for(lambda path=path: _completed(db, path), timeout=90)
    assert await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE patient_id = $1", patient) == 6
    assert metric("ghostly_bucket_events_total", outcome="duplicate") == dup  # none handled twice
    await wait_for(lambda: settled(js, events_cfg), timeout=10)


async def test_push_path_ingest_stored_file_still_works_with_the_s3_store(ingest_replicas, s3, bucket, db, tmp_path):
    """IngestStoredFile (callers that push) and Upload, with GHOSTLY_STORE_URL=s3://..."""
    patient = await register_patient(db, "E")
    data, name = synthetic(tmp_path)
    s3.client().put_object(Bucket=bucket, Key=f"c3d/{patient}/{name}", Body=data)
    async with grpc.aio.insecure_channel(ingest_replicas[0].address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        reply = await stub.IngestStoredFile(ingest_pb2.IngestStoredFileRequest(file_path=f"{patient}/{name}"))
        assert reply.created and reply.status == common_pb2.PROCESSING_STATUS_COMPLETED
        data2, name2 = synthetic(tmp_path)
        from tests.helpers import upload_messages

        up = await stub.Upload(upload_messages(data2, name2, patient))
        assert up.created and up.file_path == f"{patient}/{name2}"
    head = s3.client().head_object(Bucket=bucket, Key=f"c3d/{patient}/{name2}")
    import hashlib

    assert head["Metadata"]["sha256"] == hashlib.sha256(data2).hexdigest()


def test_parse_records_reads_the_standard_s3_event_json():
    ev = bucket_event("b1", "c3d/P 1/a+b.c3d", size=3)
    assert ev["Records"][0]["s3"]["object"]["key"] == "c3d/P+1/a%2Bb.c3d"  # as S3 encodes keys
    (r,) = be.parse_records(json.dumps(ev).encode())
    assert (r.bucket, r.key, r.event_name) == ("b1", "c3d/P 1/a+b.c3d", "ObjectCreated:Put") and r.event_time
    with pytest.raises(ValueError, match="no Records"):
        be.parse_records(b'{"EventName": "x"}')


async def test_ensure_broker_starts_an_embedded_jetstream_server_when_no_url(tmp_path, monkeypatch):
    """What `ghostly up` does without GHOSTLY_EVENTS_URL (libs.events.ensure_broker)."""
    from libs.db.embedded import free_port
    from libs.events import ensure_broker, ensure_stream

    port = free_port()
    monkeypatch.setenv("GHOSTLY_NATS_PORT", str(port))
    cfg = make_config(None, tmp_path)
    assert cfg.events_url is None
    given = dataclasses.replace(cfg, events_url="nats://elsewhere:4222")
    assert ensure_broker(given) == (given, None)
    started, broker = ensure_broker(cfg)
    try:
        assert started.events_url == f"nats://127.0.0.1:{port}" and broker.store_dir == tmp_path / "nats"
        nc = await connect(started.events_url)
        js = nc.jetstream()
        await ensure_stream(js, started.events_stream, started.events_subject)
        await ensure_stream(js, started.events_stream, started.events_subject)  # idempotent
        info = await js.stream_info(started.events_stream)
        assert info.config.subjects == ["ghostly.bucket.events", "ghostly.bucket.events.dead"]
        await nc.close()
    finally:
        broker.stop()
    assert broker.proc is None and (tmp_path / "nats" / "jetstream").is_dir()  # kept for the next start


async def test_broker_down_at_start_the_consumer_connects_when_it_comes_up(events_cfg, s3, bucket, db, tmp_path):
    """Ingest serves without its broker (Upload works) and consumes once the broker is up."""
    from libs.db.embedded import free_port

    port = free_port()
    tag = uuid.uuid4().hex[:6]
    cfg = dataclasses.replace(
        events_cfg,
        events_url=f"nats://127.0.0.1:{port}",
        events_stream=f"LATE_{tag}",
        events_subject=f"late.{tag}",
        events_consumer=f"late-{tag}",
    )
    server = await start_service(SPEC, cfg, port=0)
    try:
        consumer = server.context.bucket_events
        assert consumer.js is None  # not connected: nothing listens there yet
        with EmbeddedNats(tmp_path / "late-nats", port=port) as late:
            await wait_for(lambda: _true(consumer.js is not None), timeout=30)
            patient = await register_patient(db, "E")
            data, name = synthetic(tmp_path)
            s3.client().put_object(Bucket=bucket, Key=f"c3d/{patient}/{name}", Body=data)
            nc = await connect(late.url)
            await notify(nc.jetstream(), cfg, bucket, f"c3d/{patient}/{name}")
            await nc.close()
            row = await wait_for(lambda: _completed(db, f"{patient}/{name}"), timeout=60)
            assert row["processing_status"] == "completed"
    finally:
        await server.stop(0)
