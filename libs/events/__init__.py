"""Bucket events over NATS JetStream: the embedded nats-server and the client helpers.

* EmbeddedNats: a nats-server with JetStream that the project starts itself (Debian's
  `nats-server` package, /usr/sbin/nats-server; $GHOSTLY_NATS_BIN overrides), listening on
  127.0.0.1 only, like the embedded PostgreSQL (libs.db.embedded): `ghostly up` (through
  ensure_broker) when GHOSTLY_EVENTS_URL is not set, and the tests (ephemeral=True: a
  random port, a temporary store directory, removed at stop).
* connect / ensure_stream / bucket_event / publish_bucket_event: what the ingest consumer
  (services/ingest/bucket_events.py), the tests and the benches share.

Stream layout: stream GHOSTLY_EVENTS_STREAM (default GHOSTLY_BUCKET_EVENTS) holds subject
GHOSTLY_EVENTS_SUBJECT (default ghostly.bucket.events; where MinIO / S3 bridges publish the
standard S3 event JSON) and its dead letters `<subject>.dead`; the durable pull consumer
GHOSTLY_EVENTS_CONSUMER (default ghostly-ingest) filters the subject and is shared by every
ingest replica, so each event is handled by one of them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger("ghostly.events")

DEFAULT_NATS_BIN = "/usr/sbin/nats-server"
DEFAULT_NATS_PORT = 54222  # `ghostly up`'s embedded nats-server (GHOSTLY_NATS_PORT)
START_TIMEOUT_S = 15.0


class EmbeddedNatsError(RuntimeError):
    pass


def find_nats_server() -> str:
    explicit = os.environ.get("GHOSTLY_NATS_BIN", "").strip()
    for candidate in (explicit, shutil.which("nats-server"), DEFAULT_NATS_BIN):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedNatsError(
        "nats-server not found: install Debian's 'nats-server' package (scripts/setup does "
        "it), set GHOSTLY_NATS_BIN, or set GHOSTLY_EVENTS_URL to use an existing server"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepting(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedNats:
    """A nats-server -js on 127.0.0.1:<port> with its JetStream store in ``store_dir``.

    ephemeral=True (tests, benches): a free port and a temporary directory, removed at stop.
    Otherwise (ghostly up): $GHOSTLY_DATA_DIR/nats (streams survive restarts), port
    GHOSTLY_NATS_PORT (default 54222). Only the process that started the server stops it."""

    def __init__(self, store_dir: str | os.PathLike | None = None, *, port: int | None = None, ephemeral: bool = False):
        self.ephemeral = ephemeral
        self._tmp = None
        if store_dir is None:
            if ephemeral:
                self._tmp = tempfile.mkdtemp(prefix="ghostly-nats-")
                store_dir = self._tmp
            else:
                from libs.config import PROJECT_ROOT

                data = os.environ.get("GHOSTLY_DATA_DIR", "").strip() or str(PROJECT_ROOT / "var")
                store_dir = Path(data) / "nats"
        self.store_dir = Path(store_dir)
        env_port = os.environ.get("GHOSTLY_NATS_PORT", "").strip()
        self.port = port or (_free_port() if ephemeral else int(env_port or DEFAULT_NATS_PORT))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            return self.url
        binary = find_nats_server()
        if _accepting(self.port):
            if self.running():
                # Left running by an earlier `ghostly up` that was killed: used as it is (and
                # not stopped by this process, which did not start it).
                log.info("embedded nats-server already running on %s (store %s): reused", self.url, self.store_dir)
                return self.url
            raise EmbeddedNatsError(
                f"cannot start nats-server: 127.0.0.1:{self.port} is in use "
                "(set GHOSTLY_NATS_PORT, or GHOSTLY_EVENTS_URL to use that server)"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        cmd = [
            binary,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
            "-l",
            str(log_file),
            "--pid",
            str(self.store_dir / "nats-server.pid"),
        ]
        with open(self.store_dir / "nats-server.stderr", "ab") as err_file:  # (a pipe could fill)
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepting(self.port):
            if self.proc.poll() is not None:
                err = (self.store_dir / "nats-server.stderr").read_text(errors="replace")[-2000:].strip()
                tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
                self.proc = None
                raise EmbeddedNatsError(f"nats-server exited at start: {err or tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedNatsError(
                    f"nats-server did not listen on 127.0.0.1:{self.port} within {START_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.02)
        log.info("embedded nats-server (JetStream) on %s, store %s", self.url, self.store_dir)
        return self.url

    def running(self) -> bool:
        """A nats-server started by this module on this store directory runs (its pid file):
        start() reuses it (and stop() leaves it to the process that started it)."""
        try:
            pid = int((self.store_dir / "nats-server.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return False
        return any(a.endswith(b"nats-server") for a in cmdline) and str(self.store_dir).encode() in cmdline

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # lame-duck free, flushes the JetStream store
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_broker(cfg):
    """(cfg, EmbeddedNats or None): ``cfg`` as it is when GHOSTLY_EVENTS_URL is set; else an
    embedded nats-server is started ($GHOSTLY_DATA_DIR/nats, 127.0.0.1:$GHOSTLY_NATS_PORT)
    and cfg.events_url points at it. The caller stops the server returned (its children must
    get GHOSTLY_EVENTS_URL=cfg.events_url in their environment)."""
    if cfg.events_url:
        return cfg, None
    broker = EmbeddedNats(Path(cfg.data_dir) / "nats")
    broker.start()
    return dataclasses.replace(cfg, events_url=broker.url), broker


# -- client side -------------------------------------------------------------------------------
def dead_subject(subject: str) -> str:
    return f"{subject}.dead"


async def connect(url: str, **options):
    """A NATS connection (nats-py) that keeps reconnecting (the consumer outlives outages)."""
    import nats

    defaults = {
        "name": f"ghostly-{socket.gethostname()[:40]}-{os.getpid()}",
        "connect_timeout": 5,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
    }
    defaults.update(options)
    return await nats.connect(servers=[u.strip() for u in url.split(",") if u.strip()], **defaults)


async def ensure_stream(js, stream: str, subject: str) -> None:
    """The stream holding ``subject`` and its dead letters (created when missing; a stream
    that exists keeps its own settings, the two subjects are added when it lacks them)."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    subjects = [subject, dead_subject(subject)]
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        try:
            await js.add_stream(StreamConfig(name=stream, subjects=subjects, storage=StorageType.FILE))
        except Exception:  # another replica created it meanwhile  # noqa: BLE001
            await js.stream_info(stream)
        return
    have = list(info.config.subjects or [])
    missing = [s for s in subjects if s not in have]
    if missing:
        info.config.subjects = have + missing
        await js.update_stream(info.config)


def bucket_event(
    bucket: str,
    key: str,
    *,
    size: int = 0,
    etag: str = "",
    event_name: str = "s3:ObjectCreated:Put",
    event_time: datetime | None = None,
    sequencer: str | None = None,
) -> dict:
    """A standard S3 event notification (as S3 and MinIO send them) for one object. The key is
    URL-encoded, as S3 does (spaces as '+')."""
    when = (event_time or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "EventName": event_name,
        "Key": f"{bucket}/{key}",
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "",
                "eventTime": when,
                "eventName": event_name.removeprefix("s3:"),
                "userIdentity": {"principalId": "ghostly"},
                "requestParameters": {},
                "responseElements": {},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "ghostly",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote(key, safe="/").replace("%20", "+"),
                        "size": size,
                        "eTag": etag,
                        "sequencer": sequencer or uuid.uuid4().hex[:16].upper(),
                    },
                },
            }
        ],
    }


async def publish_bucket_event(js, subject: str, event: dict, *, msg_id: str | None = None):
    """Publish ``event`` (bucket_event) to JetStream; msg_id deduplicates re-sends."""
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    return await js.publish(subject, json.dumps(event).encode(), headers=headers)


__all__ = [
    "EmbeddedNats",
    "EmbeddedNatsError",
    "bucket_event",
    "connect",
    "dead_subject",
    "ensure_broker",
    "ensure_stream",
    "find_nats_server",
    "publish_bucket_event",
]
