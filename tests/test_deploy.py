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


def _compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMPOSE, "-f", str(ROOT / "docker-compose.yml"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (scripts/setup installs it)")
def test_compose_file_is_valid_and_complete():
    valid = _compose("config", "-q")
    assert valid.returncode == 0, valid.stderr
    services = _compose("config", "--services").stdout.split()
    assert sorted(services) == ["export", "ingest", "jit_signal", "migrate", "postgres", "statistics"]
    rendered = _compose("config").stdout
    for name in ("ingest", "statistics", "jit_signal", "export"):
        assert f"libs.healthcheck\n      - {name}" in rendered or f"- libs.healthcheck\n      - {name}" in rendered, name
    assert rendered.count("condition: service_completed_successfully") == 4
    assert "c3d-store:/data/c3d-store" in rendered.replace("source: c3d-store\n        target: ", "c3d-store:")


async def test_health_probe_exit_codes(database_url, tmp_path):
    server = await start_service(STATISTICS, make_config(database_url, tmp_path), port=0)
    try:
        ok = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "libs.healthcheck", server.address],
                                     cwd=ROOT, capture_output=True)
        assert ok.returncode == 0
    finally:
        await server.stop(0)
    down = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "libs.healthcheck", server.address],
                                   cwd=ROOT, capture_output=True)
    assert down.returncode == 1
