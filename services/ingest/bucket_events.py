"""Event-driven ingest: S3 bucket notifications from NATS JetStream.

On when GHOSTLY_EVENTS_URL is set (`ghostly up` sets it to its embedded nats-server). Each
ingest replica pulls from one durable consumer (GHOSTLY_EVENTS_CONSUMER, default
ghostly-ingest) of stream GHOSTLY_EVENTS_STREAM filtered on GHOSTLY_EVENTS_SUBJECT, so every
event is handled by one replica. The message is the standard S3/MinIO event JSON:

    {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "...",
                  "s3": {"bucket": {"name": "ghostly"}, "object": {"key": "c3d/P005/a.c3d", ...}}}]}

* The object key (URL-decoded, as S3 encodes it) minus the store URL's prefix is the
  store-relative path; the patient is its first folder (<patient>/<file>.c3d), as for
  IngestStoredFile without session fields. Records for another bucket, outside the prefix,
  with a path the store refuses, or not ObjectCreated:* are acknowledged and ignored (logged).
  With a local store (file://, e.g. `ghostly up`'s default) no bucket is checked and the key is
  the store-relative path (a bucket served from that directory).
* At-least-once: a message is acknowledged only once every record has a session (completed,
  or failed when the file cannot be analysed: that is its outcome); idempotent by content
  hash: a file whose SHA-256 already has a session is not ingested again (redeliveries,
  duplicate notifications, the same bytes under two keys).
* Bounded retries: a failure (object missing, unknown patient, database or store outage...)
  is redelivered after GHOSTLY_EVENTS_RETRY_DELAY_S x 2^(attempt-1) (at most 60 s); the
  GHOSTLY_EVENTS_MAX_DELIVER-th failed delivery (default 5) publishes a dead letter on
  `<subject>.dead` ({"event", "error", "deliveries", "records"}) and acknowledges the event.
  A message that arrives more often than that (its handler kept dying) is dead-lettered
  without another attempt. While a file is being processed the message's ack deadline is
  extended (in-progress acks), so slow analyses are not redelivered to another replica.
* Metrics (prometheus default registry, the ingest /metrics endpoint):
    ghostly_bucket_events_total{outcome}      completed | failed | duplicate | ignored | retried | dead_lettered
    ghostly_bucket_event_failures_total{reason}   failed attempts, by error class
    ghostly_bucket_event_lag_seconds           histogram, eventTime -> session stored (event-to-completed)
    ghostly_bucket_events_pending              events waiting in the consumer (num_pending + unacknowledged)
    ghostly_bucket_events_oldest_lag_seconds   age of the oldest event handled in the last refresh interval
`IngestStoredFile` (callers that push) is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from prometheus_client import Counter, Gauge, Histogram

from ghostly.ingest.v1 import ingest_pb2
from libs import auth
from libs.errors import InvalidArgument
from libs.events import connect, dead_subject, ensure_stream
from libs.storage import validate_relative_path
from services.ingest import repository as repo

log = logging.getLogger("ghostly.ingest.bucket_events")

ACK_WAIT_S = 30.0  # redelivered when not acknowledged (nor in progress) for this long
MAX_RETRY_DELAY_S = 60.0
PENDING_REFRESH_S = 5.0
START_WAIT_S = 5.0  # at service start: connect before SERVING, at most this long
SERVICE_IDENTITY = auth.Identity(subject="ghostly-bucket-events", role="service")

EVENTS = Counter("ghostly_bucket_events", "Bucket events handled by ingest, by outcome", ["outcome"])
FAILURES = Counter("ghostly_bucket_event_failures", "Failed attempts at a bucket event, by error class", ["reason"])
LAG = Histogram(
    "ghostly_bucket_event_lag_seconds",
    "Bucket event time to its session stored (completed or failed)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
PENDING = Gauge("ghostly_bucket_events_pending", "Bucket events not yet acknowledged by the ingest consumer")
OLDEST = Gauge("ghostly_bucket_events_oldest_lag_seconds", "Lag of the oldest bucket event finished recently")


@dataclass
class Record:
    bucket: str
    key: str
    event_name: str
    event_time: float | None  # Unix seconds


def parse_records(body: bytes) -> list[Record]:
    """The records of an S3 event notification; ValueError when it is not one."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("Records"), list):
        raise ValueError("not an S3 event notification (no Records list)")
    out = []
    for r in doc["Records"]:
        try:
            s3 = r["s3"]
            name = str(r.get("eventName", ""))
            bucket = str(s3["bucket"]["name"])
            key = unquote_plus(str(s3["object"]["key"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"S3 event record without {exc}") from None
        when = None
        if r.get("eventTime"):
            with contextlib.suppress(ValueError):
                when = datetime.fromisoformat(str(r["eventTime"]).replace("Z", "+00:00")).timestamp()
        out.append(Record(bucket, key, name, when))
    return out


class BucketEventConsumer:
    def __init__(self, servicer, config, store):
        self.servicer, self.cfg, self.store = servicer, config, store
        inner = getattr(store, "wrapped", store)  # a TracedStore's own store
        self.bucket = getattr(inner, "bucket", None)  # None: a local store (no bucket check)
        self.prefix = getattr(inner, "prefix", "")
        self.subject = config.events_subject
        self.nc: Any = None
        self.js: Any = None
        self.sub: Any = None
        self.concurrency = max(1, getattr(servicer.analysis, "workers", 1) or 1)
        self.tasks: set[asyncio.Task] = set()
        self._oldest = 0.0

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self.nc = await connect(self.cfg.events_url)
        self.js = self.nc.jetstream()
        await ensure_stream(self.js, self.cfg.events_stream, self.subject)
        config = ConsumerConfig(
            durable_name=self.cfg.events_consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=self.subject,
            ack_wait=ACK_WAIT_S,
            max_deliver=-1,  # bounded here: dead letters
            max_ack_pending=10_000,
        )
        try:
            await self.js.add_consumer(self.cfg.events_stream, config)
        except Exception as exc:  # noqa: BLE001 - exists with other settings: bound as it is
            log.info("bucket events: consumer %s kept as it is (%s)", self.cfg.events_consumer, exc)
        self.sub = await self.js.pull_subscribe_bind(durable=self.cfg.events_consumer, stream=self.cfg.events_stream)
        log.info(
            "bucket events: consuming %s (stream %s, consumer %s) on %s for %s",
            self.subject,
            self.cfg.events_stream,
            self.cfg.events_consumer,
            self.cfg.events_url,
            self.store.identity(),
        )

    async def run(self) -> None:
        """Fetch and handle events until cancelled; at most `concurrency` at once."""
        from nats.errors import TimeoutError as NatsTimeout

        refresher = asyncio.create_task(self._refresh_pending())
        try:
            while True:
                free = self.concurrency - len(self.tasks)
                if free <= 0:
                    await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    msgs = await self.sub.fetch(batch=free, timeout=2.0)
                except (TimeoutError, NatsTimeout):
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - broker away: nats-py reconnects
                    log.debug("bucket events: fetch failed: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self.handle(msg))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        finally:
            refresher.cancel()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let handlers in flight finish (unacknowledged ones are redelivered anyway)."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)
            for t in list(self.tasks):
                t.cancel()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def disconnect(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None

    async def _refresh_pending(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                info = await self.js.consumer_info(self.cfg.events_stream, self.cfg.events_consumer)
                PENDING.set((info.num_pending or 0) + (info.num_ack_pending or 0))
                OLDEST.set(self._oldest)
                self._oldest = 0.0
            await asyncio.sleep(PENDING_REFRESH_S)

    # -- one message --------------------------------------------------------------------
    async def handle(self, msg) -> None:
        delivered = msg.metadata.num_delivered or 1
        max_deliver = self.cfg.events_max_deliver
        try:
            records = parse_records(msg.data)
        except ValueError as exc:  # can never succeed: straight to the dead letters
            FAILURES.labels("BadEvent").inc()
            await self._dead_letter(msg, f"unreadable event: {exc}", delivered, [])
            return
        if delivered > max_deliver:  # earlier deliveries died with their process
            await self._dead_letter(msg, f"delivered {delivered} times without being acknowledged", delivered, records)
            return
        keepalive = asyncio.create_task(self._keep_in_progress(msg))
        try:
            with auth.acting_as(SERVICE_IDENTITY):
                outcomes = [await self.ingest(r) for r in records]
        except asyncio.CancelledError:
            raise  # service stopping: not acknowledged, redelivered
        except Exception as exc:  # noqa: BLE001 - every failure is retried, then dead-lettered
            FAILURES.labels(type(exc).__name__).inc()
            error = f"{type(exc).__name__}: {exc}"
            if delivered >= max_deliver:
                await self._dead_letter(msg, error, delivered, records)
            else:
                delay = min(MAX_RETRY_DELAY_S, self.cfg.events_retry_delay_s * 2 ** (delivered - 1))
                log.warning(
                    "bucket event %s (delivery %d of %d) failed, retried in %.1f s: %s",
                    _keys(records),
                    delivered,
                    max_deliver,
                    delay,
                    error,
                )
                EVENTS.labels("retried").inc()
                with contextlib.suppress(Exception):
                    await msg.nak(delay=delay)
            return
        finally:
            keepalive.cancel()
        await msg.ack()
        now = time.time()
        for r, outcome in zip(records, outcomes):
            EVENTS.labels(outcome).inc()
            if outcome in ("completed", "failed") and r.event_time:
                LAG.observe(max(0.0, now - r.event_time))
                self._oldest = max(self._oldest, now - r.event_time)

    async def _keep_in_progress(self, msg) -> None:
        while True:
            await asyncio.sleep(ACK_WAIT_S / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _dead_letter(self, msg, error: str, delivered: int, records: list[Record]) -> None:
        body = {
            "error": error,
            "deliveries": delivered,
            "subject": msg.subject,
            "records": [{"bucket": r.bucket, "key": r.key, "eventName": r.event_name} for r in records],
        }
        try:
            body["event"] = json.loads(msg.data)
        except ValueError:
            body["event_raw"] = msg.data.decode(errors="replace")
        await self.js.publish(dead_subject(self.subject), json.dumps(body).encode())
        await msg.ack()  # (after the dead letter is stored: never lost in between)
        EVENTS.labels("dead_lettered").inc()
        log.error(
            "bucket event %s dead-lettered on %s after %d deliveries: %s",
            _keys(records),
            dead_subject(self.subject),
            delivered,
            error,
        )

    def path_of(self, record: Record) -> str | None:
        """The store-relative path of a record's object, or None (and why) when not ours."""
        if self.bucket is not None and record.bucket != self.bucket:
            return None
        if not record.key.startswith(self.prefix):
            return None
        try:
            return validate_relative_path(record.key[len(self.prefix) :])
        except InvalidArgument:
            return None

    async def ingest(self, record: Record) -> str:
        """Ingest one record's object; its outcome (completed, failed, duplicate, ignored).
        Raises on what a retry may fix."""
        if not record.event_name.startswith(("ObjectCreated", "s3:ObjectCreated")):
            log.info(
                "bucket event %s for %s/%s ignored (not an object creation)",
                record.event_name,
                record.bucket,
                record.key,
            )
            return "ignored"
        path = self.path_of(record)
        if path is None:
            log.info(
                "bucket event for %s/%s ignored: not under the content store %s",
                record.bucket,
                record.key,
                self.store.identity(),
            )
            return "ignored"
        if "/" not in path:
            log.info("bucket event for %s ignored: not in a <patient>/ folder", path)
            return "ignored"
        s = self.servicer
        obj = await self.store.stat(path)  # NotFound: retried (the object may not be visible yet)
        async with s.db.acquire() as conn:
            found = await repo.find_by_hash(conn, obj.sha256)
        if found is not None:
            return "duplicate"
        async with s.db.acquire() as conn:
            registered = await repo.find_by_path(conn, path)
        if registered:
            raise InvalidArgument(
                f"{path} is already registered (session {registered[0]}) with different "
                "content: stored C3D files are immutable"
            )
        from services.ingest.options import settings_from_request
        from services.ingest.servicer import bfr_row

        meta = ingest_pb2.SessionMetadata(patient_code=path.split("/")[0])
        patient, therapist = await s._people(meta.patient_code, "")
        try:
            reply = await s._register_and_process(
                obj, meta, settings_from_request(meta), bfr_row(meta), patient, therapist
            )
        except InvalidArgument:
            async with s.db.acquire() as conn:
                found = await repo.find_by_hash(conn, obj.sha256)
            if found is not None and found.status == "failed":
                log.warning("bucket event: %s recorded as failed (session %s): %s", path, found.id, found.error_message)
                return "failed"  # the file's outcome: acknowledged, not retried
            raise
        if not reply.created:
            return "duplicate"
        return "completed"


def _keys(records: list[Record]) -> str:
    return ", ".join(f"{r.bucket}/{r.key}" for r in records) or "(no records)"


async def start_consumer(servicer, ctx) -> BucketEventConsumer | None:
    """Start the consumer of a service (GHOSTLY_EVENTS_URL set) as a background task stopped
    with the service; None when events are off."""
    cfg = ctx.config
    if not cfg.events_url:
        return None
    consumer = BucketEventConsumer(servicer, cfg, servicer.store)
    loop = asyncio.get_running_loop()
    # Connected before the service reports SERVING when the broker is up (then the stream and
    # the consumer exist: publishers may start); else in the background, retried.
    try:
        await asyncio.wait_for(consumer.start(), START_WAIT_S)
        started = True
    except Exception as exc:  # noqa: BLE001 - TimeoutError, broker down: retried below
        log.warning("bucket events: cannot reach %s yet (%s); retrying in the background", cfg.events_url, exc)
        await consumer.disconnect()
        started = False

    async def run() -> None:
        delay = 0.5
        while not started:  # the broker may not be up yet: the service serves Upload meanwhile
            try:
                await consumer.start()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.warning("bucket events: cannot reach %s yet (%s); retrying", cfg.events_url, exc)
                await consumer.disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        await consumer.run()

    task = loop.create_task(run(), name="bucket-event-consumer")

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop(min(5.0, cfg.shutdown_grace_s))

    ctx.on_stop.append(stop)
    ctx.bucket_events = consumer
    return consumer
