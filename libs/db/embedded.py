"""The embedded default: a PostgreSQL cluster the project starts itself in a directory it owns.

Used when DATABASE_URL is not set (`ghostly up`, the test suite). PostgreSQL refuses to run
as root, so as root every server command runs as the `postgres` OS user (`runuser`), on a data
directory that user owns and can reach (never under /root).
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from libs.config import PROJECT_ROOT

log = logging.getLogger("ghostly.embedded_pg")


class EmbeddedPostgresError(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl: $GHOSTLY_PG_BIN, PATH, or the newest Debian install."""
    explicit = os.environ.get("GHOSTLY_PG_BIN")
    if explicit:
        return Path(explicit)
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent  # /usr/local/bin/pg_ctl may be a lone symlink
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    raise EmbeddedPostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the 'postgresql' package "
        "(scripts/setup does it), set GHOSTLY_PG_BIN, or set DATABASE_URL to use an existing server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _is_root() -> bool:
    return os.geteuid() == 0


# --------------------------------------------------------------------------- throwaway clusters
# An ephemeral cluster lives in /tmp/ghostly-pg-XXXX/data and is removed by stop(). A process
# killed before stop() (pytest interrupted, a bench killed) leaves its cluster running; the
# next ephemeral start removes such orphans. The owner is recorded as "pid start-time" (the
# start time tells a reused pid from the original process).
EPHEMERAL_PREFIX = "ghostly-pg-"
OWNER_FILE = "owner"


def _process_identity(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"   # field 22: start time in clock ticks


def _owner_alive(parent: Path) -> bool:
    """False only when the recorded owner is certainly gone; a record that cannot be judged
    (no /proc start time, unreadable, being written) counts as alive."""
    try:
        pid, start = (parent / OWNER_FILE).read_text().split()
        pid_number = int(pid)
    except (OSError, ValueError):
        return True
    return _process_identity(pid_number) == f"{pid} {start}"


def sweep_orphan_clusters(tmp: Path = Path("/tmp")) -> list[Path]:
    """Stop and remove ephemeral clusters whose owner process is gone; returns their dirs.
    Directories without an owner record are left alone (not ours to judge)."""
    removed = []
    for parent in sorted(tmp.glob(EPHEMERAL_PREFIX + "*")):
        if not (parent / OWNER_FILE).exists() or _owner_alive(parent):
            continue
        orphan = EmbeddedPostgres(parent / "data", ephemeral=True)
        try:
            if orphan.running():
                orphan._run("pg_ctl", "-D", str(orphan.data_dir), "-m", "immediate", "-w", "stop", check=False)
        except EmbeddedPostgresError:   # e.g. no binaries: removing the directory still helps
            pass
        shutil.rmtree(parent, ignore_errors=True)
        log.info("removed an orphaned throwaway cluster (%s)", parent)
        removed.append(parent)
    return removed


def default_data_dir() -> Path:
    """Persistent data directory for `ghostly up` (override with GHOSTLY_PGDATA)."""
    explicit = os.environ.get("GHOSTLY_PGDATA")
    if explicit:
        return Path(explicit)
    if _is_root():
        # The postgres user must be able to reach it: keep it out of /root and the checkout.
        tag = hashlib.sha1(str(PROJECT_ROOT).encode()).hexdigest()[:8]
        return Path("/var/lib/ghostly") / f"pgdata-{tag}"
    data = os.environ.get("GHOSTLY_DATA_DIR")
    return (Path(data) if data else PROJECT_ROOT / "var") / "pgdata"


class EmbeddedPostgres:
    """One PostgreSQL cluster listening on 127.0.0.1:<port> with trust auth for `postgres`."""

    def __init__(self, data_dir: Path | None = None, *, port: int | None = None,
                 database: str = "ghostly", ephemeral: bool = False):
        self.ephemeral = ephemeral
        if data_dir is None and ephemeral:
            sweep_orphan_clusters()
            parent = Path(tempfile.mkdtemp(prefix=EPHEMERAL_PREFIX, dir="/tmp"))
            tmp = parent / (OWNER_FILE + ".tmp")     # written whole, then renamed: never half-read
            tmp.write_text(_process_identity(os.getpid()) or str(os.getpid()))
            os.replace(tmp, parent / OWNER_FILE)
            data_dir = parent / "data"
        self.data_dir = Path(data_dir or default_data_dir())
        self.port = port or (free_port() if ephemeral else int(os.environ.get("GHOSTLY_PG_PORT") or 55432))
        self.database = database
        self.bin_dir = find_bin_dir()
        self._started_here = False

    # -- helpers ---------------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if _is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{args[0]} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def _prepare_dir(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not _is_root():
            return
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise EmbeddedPostgresError("running as root but there is no 'postgres' OS user; "
                                        "install the postgresql package") from exc
        if self.ephemeral:
            # mkdtemp made the parent 0700 for root: hand it to postgres.
            os.chown(self.data_dir.parent, pg.pw_uid, pg.pw_gid)
        # Every ancestor must be traversable by postgres.
        for parent in self.data_dir.parents:
            if not parent.exists():
                continue
            st = parent.stat()
            if not (st.st_mode & 0o001) and st.st_uid != pg.pw_uid:
                raise EmbeddedPostgresError(
                    f"the postgres user cannot reach {self.data_dir} ({parent} is not traversable); "
                    "set GHOSTLY_PGDATA to a directory outside it, e.g. /var/lib/ghostly/pgdata")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.data_dir, pg.pw_uid, pg.pw_gid)
        os.chmod(self.data_dir, 0o700)

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> str:
        """Initialise if needed, start, create the database; return its DSN."""
        self._prepare_dir()
        if not self.initialized():
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--locale=C", "--no-sync")
            conf = [
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{self.data_dir}'",
                "max_connections = 200",
                "shared_buffers = 128MB",
            ]
            if self.ephemeral:
                # Throwaway test clusters: durability buys nothing, speed does.
                conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
            with open(self.data_dir / "postgresql.auto.conf", "a") as f:
                f.write("\n".join(conf) + "\n")
        if self.running():
            log.info("embedded PostgreSQL already running in %s", self.data_dir)
            self.port = self._running_port() or self.port
        else:
            if port_in_use(self.port):
                raise EmbeddedPostgresError(
                    f"port {self.port} on 127.0.0.1 is already in use; set GHOSTLY_PG_PORT to a free port "
                    "or DATABASE_URL to use that server")
            self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
                      "-o", f"-p {self.port}", "-w", "-t", "60", "start")
            self._started_here = True
            log.info("embedded PostgreSQL started on 127.0.0.1:%d (%s)", self.port, self.data_dir)
        try:
            self._create_database()
        except BaseException:
            self.stop()
            raise
        return self.dsn

    def _create_database(self) -> None:
        exists = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d",
                           "postgres", "-tAc",
                           f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'").stdout.strip()
        if exists != "1":
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database)

    def _running_port(self) -> int | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the cluster (fast shutdown) if this object started it; remove it if ephemeral."""
        if self.initialized() and (self._started_here or self.ephemeral) and self.running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            log.info("embedded PostgreSQL stopped (%s)", self.data_dir)
        if self.ephemeral:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> "EmbeddedPostgres":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_database(cfg):
    """(cfg, None) when cfg names a database; otherwise start the project's own embedded cluster
    and return (cfg pointed at it, the cluster), which the caller stops when done."""
    if cfg.database_url:
        return cfg, None
    pg = EmbeddedPostgres()
    return cfg.with_database(pg.start()), pg
