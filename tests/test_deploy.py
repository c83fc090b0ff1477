"""docker-compose.yml validated without an engine (Debian's docker-compose `config`), and the
container health probe against a real server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import pytest

from libs.grpc_server import start_service
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import ROOT, make_config

COMPOSE = shutil.which("docker-compose")


SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-for-tests",
    "GHOSTLY_INGEST_DB_PASSWORD": "ingest-secret-1",
    "GHOSTLY_STATISTICS_DB_PASSWORD": "statistics-secret-1",
    "GHOSTLY_JIT_SIGNAL_DB_PASSWORD": "jit-secret-1",
    "GHOSTLY_EXPORT_DB_PASSWORD": "export-secret-1",
}


def _compose(*args: str, secrets: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    assert COMPOSE is not None  # the tests calling this are skipped without docker-compose
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update(SECRETS if secrets is None else secrets)
    return subprocess.run(
        [COMPOSE, "-f", str(ROOT / "docker-compose.yml"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (scripts/setup installs it)")
def test_compose_file_is_valid_and_complete():
    valid = _compose("config", "-q")
    assert valid.returncode == 0, valid.stderr
    services = _compose("config", "--services").stdout.split()
    assert sorted(services) == ["export", "ingest", "jit_signal", "migrate", "postgres", "statistics"]
    rendered = _compose("config").stdout
    for name in ("ingest", "statistics", "jit_signal", "export"):
        assert f"app.healthcheck\n      - {name}" in rendered or f"- app.healthcheck\n      - {name}" in rendered, name
    assert rendered.count("condition: service_completed_successfully") == 4
    assert "c3d-store:/data/c3d-store" in rendered.replace("source: c3d-store\n        target: ", "c3d-store:")
    # The role passwords reach the migrate job; the statistics role connects with its own.
    assert "--set-role-passwords" in rendered and SECRETS["GHOSTLY_INGEST_DB_PASSWORD"] in rendered
    assert f"ghostly_statistics:{SECRETS['GHOSTLY_STATISTICS_DB_PASSWORD']}@postgres" in rendered
    # Metrics are not published on the host (only gRPC ports are).
    for port in ("9101", "9102", "9103", "9104"):
        assert f"published: {port}" not in rendered and f"{port}:{port}" not in rendered, port


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (scripts/setup installs it)")
@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing):
    """No default passwords: every secret must be given."""
    result = _compose("config", "-q", secrets={k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0 and missing in result.stderr, result.stderr


def test_dockerfile_prepares_volumes_for_the_service_user():
    text = (ROOT / "Dockerfile").read_text()
    assert "--uid 10001" in text and "chown -R ghostly /data" in text
    assert "/data/c3d-store" in text and "/data/signal-cache" in text


async def test_health_probe_exit_codes(database_url, tmp_path):
    server = await start_service(STATISTICS, make_config(database_url, tmp_path), port=0)
    try:
        ok = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "app.healthcheck", server.address], cwd=ROOT, capture_output=True
        )
        assert ok.returncode == 0
    finally:
        await server.stop(0)
    down = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app.healthcheck", server.address], cwd=ROOT, capture_output=True
    )
    assert down.returncode == 1
