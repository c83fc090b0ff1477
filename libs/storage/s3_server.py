"""A throwaway S3-protocol server on loopback for tests and benches: moto's standalone server
(`moto[server]`, a dev dependency installed by scripts/setup), started like the embedded
PostgreSQL (libs.db.embedded): a free port on 127.0.0.1, stopped (and its state gone) at the end.

    with EmbeddedS3() as s3:
        s3.create_bucket("ghostly-test")
        os.environ.update(s3.env())      # AWS_ENDPOINT_URL_S3, credentials, region
        store = S3ContentStore("s3://ghostly-test/c3d")

Only for tests: moto keeps every object in memory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO

START_TIMEOUT_S = 30.0
ACCESS_KEY = "ghostly-test-key"
SECRET_KEY = "ghostly-test-secret"
REGION = "us-east-1"


class EmbeddedS3Error(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedS3:
    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard variables a client (libs.storage.s3, botocore) reads to reach it."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def start(self) -> str:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise EmbeddedS3Error("moto[server] is not installed (pip install -e '.[dev]', scripts/setup)") from exc
        env = dict(os.environ, MOTO_ALLOW_NONEXISTENT_REGION="true")
        # Its request log goes to a file (a pipe nobody reads would fill and stall it).
        log = self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server (closed by stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")[-2000:]
                self.proc = None
                raise EmbeddedS3Error(f"moto server exited at start: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedS3Error(f"moto server did not listen on {self.endpoint} in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        return self.endpoint

    def client(self):
        """A synchronous boto3 client on this server (set-up: buckets, inspection)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedS3:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
