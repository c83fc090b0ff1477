"""`ghostly up` checks every port it needs (gRPC, metrics, embedded PostgreSQL) before it starts
anything: a taken one -> exit at once, non-zero, naming the port and what holds it, nothing left
running (a second `ghostly up` used to show the first stack's SERVING, then die piecemeal)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from libs import config as config_mod
from libs.db.embedded import bind_problem, free_port
from tests.helpers import ROOT, subprocess_env


def _up_env(data: Path, **ports: int) -> dict[str, str]:
    """Every port `ghostly up` needs set to a free one (or as given), embedded database."""
    env = subprocess_env(
        GHOSTLY_DATA_DIR=str(data),
        GHOSTLY_PG_PORT=str(ports.pop("pg", free_port())),
        GHOSTLY_SHUTDOWN_GRACE_S="1",
        GHOSTLY_INGEST_WORKERS="1",
    )
    for var, _ in (*config_mod.SERVICE_PORTS.values(), *config_mod.METRICS_PORTS.values()):
        env[var] = str(ports.pop(var, free_port()))
    assert not ports, ports
    for k in ("DATABASE_URL", "STATISTICS_DATABASE_URL", "GHOSTLY_PGDATA"):
        env.pop(k, None)
    return env


def _process_group(pgid: int) -> list[str]:
    """Processes still in process group `pgid` (from /proc: field 5 of stat), as 'pid cmdline'."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            left.append(f"{stat.parent.name} {cmd}")
    return left


def _run_up(env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float, int]:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "up"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise AssertionError(f"ghostly up still running after 30 s\n{out}\n{err}") from exc
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - t0, proc.pid


@pytest.fixture
def data_dir():
    d = Path(tempfile.mkdtemp(prefix="ghostly-test-up-", dir="/tmp"))
    d.chmod(0o755)  # reachable by the postgres user, should anything start there
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.mark.parametrize("what", ["GHOSTLY_STATISTICS_PORT", "GHOSTLY_EXPORT_METRICS_PORT", "pg"])
@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound"])
def test_up_refuses_a_taken_port_before_starting_anything(data_dir, what, listening):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    if listening:
        holder.listen()
    taken = holder.getsockname()[1]
    try:
        result, seconds, pgid = _run_up(_up_env(data_dir, **{what: taken}))
    finally:
        holder.close()
    assert result.returncode != 0, result
    assert seconds < 10, seconds
    assert f"port {taken}" in result.stderr, result.stderr
    label = "GHOSTLY_PG_PORT" if what == "pg" else what
    assert label in result.stderr, result.stderr
    # A listening socket is in /proc/net/tcp: its holder is named. A socket only bound is not
    # listed there (nor by ss): the message falls back to "another process".
    holder_named = f"in use by pid {os.getpid()} (" if listening else "in use by another process"
    assert holder_named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "SERVING" not in result.stdout, result
    assert _process_group(pgid) == [], "ghostly up left processes behind"
    assert not (data_dir / "pgdata" / "PG_VERSION").exists(), "the database was initialised anyway"
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


def test_up_refuses_two_services_on_one_port(data_dir):
    port = free_port()
    result, seconds, pgid = _run_up(_up_env(data_dir, GHOSTLY_INGEST_PORT=port, GHOSTLY_JIT_SIGNAL_METRICS_PORT=port))
    assert result.returncode != 0 and seconds < 10, result
    assert f"port {port}" in result.stderr and "also configured for ingest gRPC" in result.stderr, result.stderr
    assert _process_group(pgid) == []


async def test_a_grpc_server_holding_a_port_is_seen_despite_so_reuseport():
    """gRPC binds with SO_REUSEPORT, so a second gRPC server on the same port would start and
    share it; the check binds without it and sees the first one."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        problem = bind_problem("127.0.0.1", port)
        assert problem is not None and f"pid {os.getpid()}" in problem, problem
    finally:
        await server.stop(0)
    assert bind_problem("127.0.0.1", port) is None
