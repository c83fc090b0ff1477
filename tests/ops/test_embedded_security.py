"""The embedded PostgreSQL cluster (libs/db/embedded.py): password authentication on TCP, a
0600 password file, unix socket for the postgres OS user only, the data directory under
GHOSTLY_DATA_DIR also as root, and who stops a cluster several ghostly processes share."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs import config as config_mod
from libs.db.embedded import (
    PASSWORD_FILE,
    EmbeddedPostgres,
    default_data_dir,
    ensure_database,
    find_bin_dir,
    free_port,
    redact,
)
from libs.db.migrate import migrate
from tests.helpers import ROOT, subprocess_env, wait_for

IS_ROOT = os.geteuid() == 0


def _reachable_tmp_dir() -> Path:
    """A fresh directory the postgres user can traverse (pytest's tmp_path is 0700 for root)."""
    d = Path(tempfile.mkdtemp(prefix="ghostly-test-data-", dir="/tmp"))
    d.chmod(0o755)
    return d


def _stop_and_remove(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    if pg.running():
        pg._run("pg_ctl", "-D", str(data_dir), "-m", "immediate", "-w", "stop", check=False)
    subprocess.run(["rm", "-rf", str(data_dir.parent)], check=False)


async def _refused(dsn: str, **kw) -> Exception:
    try:
        conn = await asyncpg.connect(dsn, timeout=5, **kw)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return exc
    await conn.close()
    raise AssertionError(f"connection accepted: {redact(dsn)}")


def _without_password(dsn: str, user: str = "postgres") -> str:
    host = dsn.rsplit("@", 1)[1]
    return f"postgresql://{user}@{host}"


@pytest.fixture(scope="module")
def persistent(tmp_path_factory):
    """The `ghostly up` kind of cluster (not ephemeral) in GHOSTLY_DATA_DIR, via ensure_database,
    migrated: (cfg, cluster)."""
    data = _reachable_tmp_dir()
    env = {"GHOSTLY_DATA_DIR": str(data), "GHOSTLY_PG_PORT": str(free_port())}
    saved = {k: os.environ.get(k) for k in (*env, "GHOSTLY_PGDATA", "DATABASE_URL", "STATISTICS_DATABASE_URL")}
    os.environ.update(env)
    for k in ("GHOSTLY_PGDATA", "DATABASE_URL", "STATISTICS_DATABASE_URL"):
        os.environ.pop(k, None)
    try:
        cfg, pg = ensure_database(config_mod.load())
        asyncio.run(migrate(cfg.database_url))
        yield cfg, pg
        pg.stop()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _stop_and_remove(data / "pgdata")


async def test_tcp_needs_the_password(persistent):
    cfg, pg = persistent
    assert pg.password and pg.password in cfg.database_url
    # Without a password, with a wrong one: refused. With it: accepted.
    await _refused(_without_password(pg.dsn))
    await _refused(_without_password(pg.dsn), password="not-the-password")
    conn = await asyncpg.connect(pg.dsn)
    try:
        assert await conn.fetchval("SELECT current_user") == "postgres"
        methods = {
            r["auth_method"] for r in await conn.fetch("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host'")
        }
        assert methods == {"scram-sha-256"}
    finally:
        await conn.close()


async def test_every_dsn_carries_the_password_and_the_service_roles_need_it(persistent):
    cfg, pg = persistent
    for dsn in (pg.dsn, pg.admin_dsn(), cfg.database_url):
        conn = await asyncpg.connect(dsn)
        await conn.close()
    # The statistics service's read-only role: its DSN (set by ensure_database) works, the
    # passwordless one that with_user() would build does not.
    from services.statistics.db import statistics_dsn

    stats = statistics_dsn(cfg)
    assert "ghostly_statistics:" in stats and pg.password in stats
    conn = await asyncpg.connect(stats)
    try:
        assert await conn.fetchval("SELECT current_user") == "ghostly_statistics"
        assert await conn.fetchval("SELECT count(*) FROM therapy_sessions") >= 0
    finally:
        await conn.close()
    for role in ("ghostly_statistics", "ghostly_ingest", "ghostly_jit_signal", "ghostly_export"):
        await _refused(_without_password(pg.dsn, role))
    assert pg.password not in redact(pg.dsn) and "***" in redact(pg.dsn)


def test_password_file_is_0600_and_private(persistent):
    _, pg = persistent
    st = pg.password_file.stat()
    assert pg.password_file == pg.data_dir / PASSWORD_FILE
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(pg.data_dir.stat().st_mode) == 0o700
    owner = pwd.getpwnam("postgres").pw_uid if IS_ROOT else os.geteuid()
    assert st.st_uid == owner
    assert pg.password_file.read_text().strip() == pg.password


@pytest.mark.skipif(not IS_ROOT, reason="as root: data directory handed to the postgres user")
def test_data_dir_is_under_ghostly_data_dir_as_root(persistent, monkeypatch):
    _cfg, pg = persistent
    data = Path(os.environ["GHOSTLY_DATA_DIR"])
    assert pg.data_dir == data / "pgdata" == default_data_dir()
    assert pg.data_dir.stat().st_uid == pwd.getpwnam("postgres").pw_uid
    pid = (pg.data_dir / "postmaster.pid").read_text().split()[0]
    user = subprocess.run(["ps", "-o", "user=", "-p", pid], capture_output=True, text=True).stdout.strip()
    assert user == "postgres"
    monkeypatch.delenv("GHOSTLY_DATA_DIR")
    monkeypatch.setenv("GHOSTLY_PGDATA", "/srv/explicit")
    assert default_data_dir() == Path("/srv/explicit")


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run psql both as root and as postgres")
def test_unix_socket_is_for_the_postgres_os_user_only(persistent):
    _, pg = persistent
    psql = [
        str(find_bin_dir() / "psql"),
        "-X",
        "-h",
        str(pg.data_dir),
        "-p",
        str(pg.port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-tAc",
        "SELECT current_user",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    as_root = subprocess.run(psql, capture_output=True, text=True, env=env)
    assert as_root.returncode != 0 and "peer authentication failed" in as_root.stderr.lower(), as_root.stderr
    nobody = subprocess.run(["runuser", "-u", "nobody", "--", *psql], capture_output=True, text=True, env=env)
    assert nobody.returncode != 0, nobody.stdout  # cannot even reach the socket (data dir 0700)
    as_postgres = subprocess.run(["runuser", "-u", "postgres", "--", *psql], capture_output=True, text=True, env=env)
    assert as_postgres.returncode == 0 and as_postgres.stdout.strip() == "postgres", as_postgres.stderr


async def test_throwaway_clusters_need_the_password_for_postgres_too():
    pg = EmbeddedPostgres(ephemeral=True)
    dsn = pg.start()
    try:
        assert pg.password in dsn and pg.password in pg.admin_dsn()
        assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
        await _refused(_without_password(dsn))
        conn = await asyncpg.connect(dsn)
        await conn.close()
    finally:
        pg.stop()


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
async def test_a_cluster_from_before_passwords_is_given_one(running):
    """Earlier versions initialised with --auth=trust and no password file: the next start sets
    a password (with TCP off when the server was stopped; over the still-trusting TCP and then
    a reload when it runs) and replaces pg_hba.conf; the data is kept."""
    data = _reachable_tmp_dir()
    pg_dir = data / "pgdata"
    try:
        old = EmbeddedPostgres(pg_dir, port=free_port())
        old._prepare_dir()
        old._run("initdb", "-D", str(pg_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        (pg_dir / "postgresql.auto.conf").open("a").write(
            f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{pg_dir}'\n"
        )
        assert not (pg_dir / PASSWORD_FILE).exists()
        if running:
            old._run(
                "pg_ctl", "-D", str(pg_dir), "-l", str(pg_dir / "server.log"), "-o", f"-p {old.port}", "-w", "start"
            )
            conn = await asyncpg.connect(_without_password(old.admin_dsn()))  # trust: what is fixed
            await conn.execute("CREATE TABLE kept (x int)")
            await conn.close()
        pg = EmbeddedPostgres(pg_dir, port=old.port)
        dsn = pg.start()
        try:
            assert pg.password and pg.password in dsn
            assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
            await _refused(_without_password(dsn))
            conn = await asyncpg.connect(pg.admin_dsn())
            if running:
                assert await conn.fetchval("SELECT to_regclass('kept') IS NOT NULL")
            await conn.close()
        finally:
            pg.stop()
        assert pg.running() == running, "a server ghostly did not start is left running"
    finally:
        _stop_and_remove(pg_dir)


# --------------------------------------------------------------------------- who stops it


async def test_the_last_user_stops_the_cluster_not_the_first():
    """Two users of one cluster (as two `ghostly serve`): the one that started it leaves it
    running while the other still uses it; the last one out stops it."""
    data = _reachable_tmp_dir()
    pg_dir = data / "pgdata"
    try:
        first = EmbeddedPostgres(pg_dir, port=free_port())
        first.start()
        second = EmbeddedPostgres(pg_dir, port=first.port)
        second.start()
        conn = await asyncpg.connect(second.dsn)
        first.stop()
        assert first.running(), "stopped while another user still had it"
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        second.stop()
        assert not second.running(), "the last user leaves it running"
        # A server an operator started (pg_ctl, not through ghostly) is never stopped by ghostly.
        first._run(
            "pg_ctl", "-D", str(pg_dir), "-l", str(pg_dir / "server.log"), "-o", f"-p {first.port}", "-w", "start"
        )
        joined = EmbeddedPostgres(pg_dir, port=first.port)
        joined.start()
        joined.stop()
        assert joined.running()
    finally:
        _stop_and_remove(pg_dir)


def _serve(name: str, data: Path, pg_port: int, port: int, log: Path) -> subprocess.Popen:
    env = subprocess_env(
        GHOSTLY_DATA_DIR=str(data),
        GHOSTLY_PG_PORT=str(pg_port),
        **{
            f"GHOSTLY_{name.upper()}_PORT": str(port),
            f"GHOSTLY_{name.upper()}_METRICS_PORT": "0",
            "GHOSTLY_SHUTDOWN_GRACE_S": "1",
            "GHOSTLY_HEALTH_INTERVAL_S": "0.2",
        },
    )
    for k in ("DATABASE_URL", "STATISTICS_DATABASE_URL", "GHOSTLY_PGDATA"):
        env.pop(k, None)
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", name],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


async def _health(port: int) -> str:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"


async def test_one_serve_stopping_leaves_the_database_to_the_others(tmp_path):
    """`ghostly serve` A starts the embedded cluster, B joins it; A stops: B keeps serving on
    the same database; B stops too: the cluster is stopped."""
    data = _reachable_tmp_dir()
    pg_port, a_port, b_port = free_port(), free_port(), free_port()
    a = _serve("statistics", data, pg_port, a_port, tmp_path / "a.log")
    b = None
    try:
        await wait_for(lambda: _is_serving(a_port), timeout=60, interval=0.2)
        b = _serve("jit_signal", data, pg_port, b_port, tmp_path / "b.log")
        await wait_for(lambda: _is_serving(b_port), timeout=60, interval=0.2)
        a.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.wait, 30) == 0, (tmp_path / "a.log").read_text()[-2000:]
        cluster = EmbeddedPostgres(data / "pgdata", port=pg_port)
        assert cluster.running(), "the first serve took the database with it"
        await asyncio.sleep(1.0)  # several database probes of B
        assert await _health(b_port) == "SERVING"
        conn = await asyncpg.connect(cluster.dsn)
        await conn.close()
        b.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(b.wait, 30) == 0, (tmp_path / "b.log").read_text()[-2000:]
        assert not cluster.running(), "the last user leaves it running"
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        _stop_and_remove(data / "pgdata")


async def _is_serving(port: int) -> bool:
    return await _health(port) == "SERVING"
