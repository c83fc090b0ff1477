"""The embedded default: a PostgreSQL cluster the project starts itself in a directory it owns.

Used when DATABASE_URL is not set (`ghostly up`, `ghostly serve`, `ghostly migrate`, the test
suite). PostgreSQL refuses to run as root, so as root every server command runs as the
`postgres` OS user (`runuser`) and the data directory is handed to that user.

Where: $GHOSTLY_PGDATA, else $GHOSTLY_DATA_DIR/pgdata (also as root: the `pgdata` directory
is chowned to postgres; every directory above it must be traversable by postgres), else
<project>/var/pgdata. Only as root and without GHOSTLY_DATA_DIR: a cluster made by an earlier
version in /var/lib/ghostly/pgdata-<tag> keeps being used, and that location is the fallback
when postgres cannot reach <project>/var (a checkout under /root).

Authentication (pg_hba.conf, written by this module):
* TCP, 127.0.0.1 only (the only address listened on): scram-sha-256 password for every role.
  The password is generated at initdb, kept in <data dir>/ghostly-password (mode 0600, owned by
  the user running ghostly, or by postgres as root: root reads it anyway), and put in every DSN
  this module builds (dsn, admin_dsn, role_dsn). The service roles of migration 010 are given
  the same password (created here when missing, with that migration's attributes), so the
  statistics service's read-only role works too: ensure_database() sets its DSN.
* Unix socket (in the data directory, mode 0700): the postgres OS user only (peer).
* Throwaway clusters (ephemeral=True, tests and benches: /tmp, a random port, removed at the
  end) authenticate `postgres` the same way but let the four service roles in without a
  password, because the test suite migrates its databases itself and connects as those roles
  with passwordless DSNs (libs.db.dsn.with_user); those roles are not superusers and only
  see synthetic test data.
A cluster made by an earlier version (trust authentication, no password file) is converted on
its next start: a password is set over a socket-only start, then pg_hba.conf is replaced.

Who stops it (non-ephemeral clusters). Every process using the cluster through this module
(`ghostly up`, each `ghostly serve` / `python -m services.NAME`, `ghostly migrate`, ...) holds
a shared lock on <data dir>.users.lock while it runs. When one of them exits it stops the
cluster only when no other such process holds that lock AND a ghostly process started the
running server (marker <data dir>/ghostly.started, matched against postmaster.pid: a server an
operator started with pg_ctl is never stopped). So one `ghostly serve` stopping never takes
the database away from the others, and the last one out stops it. Starting and stopping are
serialised by <data dir>.start.lock.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import glob
import hashlib
import hmac
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from libs.config import PROJECT_ROOT, Config

log = logging.getLogger("ghostly.embedded_pg")

PASSWORD_FILE = "ghostly-password"  # in the data directory, mode 0600
STARTED_FILE = "ghostly.started"  # "<postmaster pid> <start time>" of a server ghostly started
# The per-service roles of migration 010 (created there when missing; here too, with a password).
SERVICE_ROLES = ("ghostly_ingest", "ghostly_statistics", "ghostly_jit_signal", "ghostly_export")
STATISTICS_ROLE = "ghostly_statistics"  # services/statistics/db.py ROLE
LOCK_TIMEOUT_S = 120.0


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
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise EmbeddedPostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the 'postgresql' package "
        "(scripts/setup does it), set GHOSTLY_PG_BIN, or set DATABASE_URL to use an existing server"
    )


# --------------------------------------------------------------------------- ports
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def bind_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now ("in use by pid 12 (cmd)", "permission
    denied"), or None when it could. Tried as servers bind (SO_REUSEADDR, no SO_REUSEPORT: a
    gRPC server's SO_REUSEPORT would otherwise let a second one share the port silently)."""
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"in use by {port_holder(port) or 'another process'}"
                if exc.errno == errno.EADDRNOTAVAIL:  # e.g. ::1 on a host without IPv6
                    continue
                return exc.strerror or str(exc)
    return None


def port_holder(port: int) -> str | None:
    """'pid N (command line)' of the process holding a TCP socket bound to `port`, from
    /proc/net/tcp{,6} and /proc/*/fd; None when not found: another user's process (not root),
    or a socket only bound, not listening (/proc/net/tcp does not list those)."""
    inodes: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or int(fields[1].rsplit(":", 1)[1], 16) != port or fields[9] == "0":
                continue
            # LISTEN (0A) first: the server, not one of its accepted connections.
            (inodes.insert(0, fields[9]) if fields[3] == "0A" else inodes.append(fields[9]))
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]": rank for rank, inode in enumerate(inodes)}
    best: tuple[int, int] | None = None
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        try:
            links = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in links:
            try:
                rank = wanted.get(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, int(fd_dir.split("/")[2]))
    if best is None:
        return None
    pid = best[1]
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    if len(command) > 100:
        command = command[:97] + "..."
    return f"pid {pid}" + (f" ({command})" if command else "")


def redact(dsn: str) -> str:
    """`dsn` with its password replaced by *** (for printing)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    userinfo, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}"))


def _is_root() -> bool:
    return os.geteuid() == 0


def _postgres_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError as exc:
        raise EmbeddedPostgresError(
            "running as root but there is no 'postgres' OS user; install the postgresql package"
        ) from exc


def _unreachable_ancestor(path: Path, pg: pwd.struct_passwd) -> Path | None:
    """The first existing directory above `path` the postgres user cannot traverse, if any."""
    for parent in reversed(path.parents):
        if not parent.exists():
            break
        st = parent.stat()
        if st.st_uid == pg.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == pg.pw_gid or st.st_gid in os.getgrouplist("postgres", pg.pw_gid):
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return parent
    return None


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677): given to
    ALTER ROLE ... PASSWORD, so the plain password never reaches the server or its log."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def _hba(ephemeral: bool) -> str:
    lines = [
        "# Written by ghostly (libs/db/embedded.py). The server listens on 127.0.0.1 only.",
        "# Unix socket (in the data directory, mode 0700): the postgres OS user only.",
        "local   all   postgres   peer",
    ]
    if ephemeral:
        lines += [
            "# Throwaway test cluster: the service roles (not superusers) without a password.",
            f"host    all   {','.join(SERVICE_ROLES)}   127.0.0.1/32   trust",
        ]
    lines += [
        "# TCP: a password (scram-sha-256) for every role. Anything else is refused.",
        "host    all   all   127.0.0.1/32   scram-sha-256",
    ]
    return "\n".join(lines) + "\n"


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
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"  # field 22: start time in clock ticks


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
        except EmbeddedPostgresError:  # e.g. no binaries: removing the directory still helps
            pass
        shutil.rmtree(parent, ignore_errors=True)
        log.info("removed an orphaned throwaway cluster (%s)", parent)
        removed.append(parent)
    return removed


def _legacy_root_dir() -> Path:
    tag = hashlib.sha1(str(PROJECT_ROOT).encode()).hexdigest()[:8]
    return Path("/var/lib/ghostly") / f"pgdata-{tag}"


def default_data_dir() -> Path:
    """Persistent data directory for `ghostly up` (see the module docstring)."""
    explicit = os.environ.get("GHOSTLY_PGDATA")
    if explicit:
        return Path(explicit)
    data = os.environ.get("GHOSTLY_DATA_DIR")
    if data:
        return Path(data) / "pgdata"
    default = PROJECT_ROOT / "var" / "pgdata"
    if _is_root():
        legacy = _legacy_root_dir()
        if (legacy / "PG_VERSION").exists() and not (default / "PG_VERSION").exists():
            return legacy
        try:
            if _unreachable_ancestor(default, pwd.getpwnam("postgres")) is not None:
                return legacy
        except KeyError:
            pass
    return default


class EmbeddedPostgres:
    """One PostgreSQL cluster listening on 127.0.0.1:<port>, password authentication."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        database: str = "ghostly",
        ephemeral: bool = False,
    ):
        self.ephemeral = ephemeral
        if data_dir is None and ephemeral:
            sweep_orphan_clusters()
            parent = Path(tempfile.mkdtemp(prefix=EPHEMERAL_PREFIX, dir="/tmp"))
            tmp = parent / (OWNER_FILE + ".tmp")  # written whole, then renamed: never half-read
            tmp.write_text(_process_identity(os.getpid()) or str(os.getpid()))
            os.replace(tmp, parent / OWNER_FILE)
            data_dir = parent / "data"
        self.data_dir = Path(data_dir or default_data_dir())
        self.port = port or (free_port() if ephemeral else int(os.environ.get("GHOSTLY_PG_PORT") or 55432))
        self.database = database
        self.bin_dir = find_bin_dir()
        self._started_here = False
        self._password: str | None = None
        self._users_lock: int | None = None  # fd holding the shared "in use" lock

    # -- DSNs ------------------------------------------------------------------------------
    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def password(self) -> str | None:
        """The cluster's generated password (None before the cluster exists)."""
        if self._password is None:
            try:
                self._password = self.password_file.read_text().strip() or None
            except FileNotFoundError:
                return None
            except PermissionError as exc:
                raise EmbeddedPostgresError(
                    f"cannot read {self.password_file}: the embedded cluster belongs to another user; "
                    "run ghostly as that user, set GHOSTLY_DATA_DIR / GHOSTLY_PGDATA, or set DATABASE_URL"
                ) from exc
        return self._password

    def role_dsn(self, role: str = "postgres", database: str | None = None) -> str:
        password = self.password
        auth = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database or self.database}"

    @property
    def dsn(self) -> str:
        return self.role_dsn("postgres", self.database)

    def admin_dsn(self) -> str:
        return self.role_dsn("postgres", "postgres")

    # -- helpers ---------------------------------------------------------------------------
    def _run(
        self, *args: str, check: bool = True, input: str | None = None, password: bool = False
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if _is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        env.pop("PGPASSWORD", None)
        if password and self.password:
            env["PGPASSWORD"] = self.password  # not on the command line (ps shows that)
        proc = subprocess.run(cmd, capture_output=True, text=True, input=input, env=env)
        if check and proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{args[0]} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def _psql(self, sql: str, *, database: str = "postgres", host: str = "127.0.0.1") -> str:
        """Run `sql` (from stdin: never on a command line) as postgres; its output."""
        return self._run(
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            host,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-tA",
            "-f",
            "-",
            input=sql,
            password=host == "127.0.0.1",
        ).stdout.strip()

    def _chown_to_postgres(self, path: Path) -> None:
        if _is_root():
            pg = _postgres_user()
            os.chown(path, pg.pw_uid, pg.pw_gid)

    def _write_private(self, path: Path, text: str) -> None:
        """Create `path` (must not exist) with mode 0600, owned by postgres as root."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        self._chown_to_postgres(path)

    def _prepare_dir(self) -> None:
        missing = [p for p in reversed(self.data_dir.parents) if not p.exists()]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not _is_root():
            return
        pg = _postgres_user()
        for created in missing:  # ours: make sure postgres can pass (a umask of 077 would not)
            os.chmod(created, os.stat(created).st_mode | 0o711)
        if self.ephemeral:
            # mkdtemp made the parent 0700 for root: hand it to postgres.
            os.chown(self.data_dir.parent, pg.pw_uid, pg.pw_gid)
        blocked = _unreachable_ancestor(self.data_dir, pg)
        if blocked is not None:
            raise EmbeddedPostgresError(
                f"the postgres user cannot reach {self.data_dir} ({blocked} is not traversable by it); "
                "set GHOSTLY_DATA_DIR (or GHOSTLY_PGDATA) to a directory outside it, e.g. /var/lib/ghostly"
            )
        self.data_dir.mkdir(exist_ok=True)
        os.chown(self.data_dir, pg.pw_uid, pg.pw_gid)
        os.chmod(self.data_dir, 0o700)

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def port_needed(self) -> int | None:
        """The TCP port start() will have to bind: None when this cluster already runs (it is reused)."""
        return None if self.running() else self.port

    def _server_identity(self) -> str | None:
        """'<pid> <start time>' of the running server, from postmaster.pid."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return f"{lines[0].strip()} {lines[2].strip()}"
        except (OSError, IndexError):
            return None

    def _running_port(self) -> int | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    # -- locks (non-ephemeral clusters: who may stop it) ------------------------------------
    def _lock_path(self, kind: str) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.{kind}.lock"

    @staticmethod
    def _flock(fd: int, how: int, what: str) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, how | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(f"timed out waiting for {what}") from None
                time.sleep(0.05)

    @contextlib.contextmanager
    def _starting_lock(self) -> Iterator[None]:
        """Held while this process starts or stops the cluster (one at a time)."""
        fd = os.open(self._lock_path("start"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._flock(fd, fcntl.LOCK_EX, f"another ghostly process starting/stopping {self.data_dir}")
            yield
        finally:
            os.close(fd)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> str:
        """Initialise if needed, start, create the database; return its DSN (with the password)."""
        self._prepare_dir()
        if self.ephemeral:
            self._start()
            return self.dsn
        with self._starting_lock():
            if self._users_lock is None:
                fd = os.open(self._lock_path("users"), os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_SH)  # nobody holds it exclusively without the start lock
                self._users_lock = fd
            try:
                self._start()
            except BaseException:
                self._release_users_lock()
                raise
        return self.dsn

    def _start(self) -> None:
        if not self.initialized():
            self._initdb()
        elif not self.password_file.exists():
            self._add_password()
        if self.running():
            log.info("embedded PostgreSQL already running in %s", self.data_dir)
            self.port = self._running_port() or self.port
        else:
            if port_in_use(self.port):
                raise EmbeddedPostgresError(
                    f"port {self.port} on 127.0.0.1 is already in use"
                    f" by {port_holder(self.port) or 'another process'}; set GHOSTLY_PG_PORT to a free port "
                    "or DATABASE_URL to use that server"
                )
            self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                f"-p {self.port}",
                "-w",
                "-t",
                "60",
                "start",
            )
            self._started_here = True
            identity = self._server_identity()
            if identity and not self.ephemeral:
                marker = self.data_dir / STARTED_FILE
                marker.unlink(missing_ok=True)
                self._write_private(marker, identity + "\n")
            log.info("embedded PostgreSQL started on 127.0.0.1:%d (%s)", self.port, self.data_dir)
        try:
            self._create_database()
            if not self.ephemeral:
                self._secure_service_roles()
        except BaseException:
            if self.ephemeral:
                self.stop()
            elif self._started_here:
                self._stop_server()
            raise

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(24)
        # initdb wants an empty directory: the password file waits beside it, then moves in.
        staged = self.data_dir.parent / f".{self.data_dir.name}.{secrets.token_hex(4)}.password"
        self._write_private(staged, password + "\n")
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                f"--pwfile={staged}",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            os.replace(staged, self.password_file)
        finally:
            staged.unlink(missing_ok=True)
        self._password = password
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.data_dir}'",
            "password_encryption = 'scram-sha-256'",
            "max_connections = 200",
            "shared_buffers = 128MB",
        ]
        if self.ephemeral:
            # Throwaway test clusters: durability buys nothing, speed does.
            conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.data_dir / "postgresql.auto.conf", "a") as f:
            f.write("\n".join(conf) + "\n")
        self._write_hba()

    def _write_hba(self) -> None:
        path = self.data_dir / "pg_hba.conf"
        tmp = path.with_name("pg_hba.conf.ghostly-tmp")
        tmp.unlink(missing_ok=True)
        self._write_private(tmp, _hba(self.ephemeral))
        os.replace(tmp, path)

    def _add_password(self) -> None:
        """A cluster from before passwords (trust authentication): give postgres a generated
        password, then replace pg_hba.conf. Done over the unix socket of a server started
        without TCP (or over TCP when it already runs: it trusts TCP until the reload)."""
        log.warning(
            "embedded PostgreSQL in %s has no password (an earlier version's cluster): "
            "setting one (%s) and requiring it",
            self.data_dir,
            self.password_file,
        )
        password = secrets.token_urlsafe(24)
        sql = f"ALTER ROLE postgres PASSWORD '{scram_verifier(password)}';\n"
        was_running = self.running()
        if was_running:
            self.port = self._running_port() or self.port
            self._psql(sql)
        else:
            self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                f"-p {self.port} -c listen_addresses=''",
                "-w",
                "-t",
                "60",
                "start",
            )
            try:
                self._psql(sql, host=str(self.data_dir))
            finally:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        self._write_private(self.password_file, password + "\n")
        self._password = password
        self._write_hba()
        if was_running:
            self._run("pg_ctl", "-D", str(self.data_dir), "reload")

    def _create_database(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.database):
            raise EmbeddedPostgresError(f"database name {self.database!r}: letters, digits and _ only")
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if exists != "1":
            self._psql(f'CREATE DATABASE "{self.database}";')

    def _secure_service_roles(self) -> None:
        """The service roles of migration 010, with the cluster's password (see module doc)."""
        statements = "".join(
            f"""
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{role}') THEN
        BEGIN
            CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;   -- created concurrently
        END;
    END IF;
    ALTER ROLE {role} PASSWORD '{scram_verifier(self.password or "")}';"""
            for role in SERVICE_ROLES
        )
        self._psql(f"DO $roles$\nBEGIN{statements}\nEND\n$roles$;\n")

    def _release_users_lock(self) -> None:
        if self._users_lock is not None:
            os.close(self._users_lock)
            self._users_lock = None

    def _stop_server(self) -> None:
        if self.initialized() and self.running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            log.info("embedded PostgreSQL stopped (%s)", self.data_dir)
        (self.data_dir / STARTED_FILE).unlink(missing_ok=True)

    def stop(self) -> None:
        """Ephemeral: stop and remove. Otherwise: stop the server only when no other ghostly
        process is using it and a ghostly process started it (module docstring)."""
        if self.ephemeral:
            if self.initialized() and self.running():
                self._stop_server()
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)
            return
        if self._users_lock is None:  # never started through this object
            return
        with self._starting_lock():
            try:
                fcntl.flock(self._users_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("embedded PostgreSQL left running: other ghostly processes use it (%s)", self.data_dir)
                self._release_users_lock()
                return
            try:
                if self.running() and (self._started_here or self._started_by_ghostly()):
                    self._stop_server()
                elif self.running():
                    log.info("embedded PostgreSQL left running: not started by ghostly (%s)", self.data_dir)
            finally:
                self._release_users_lock()

    def _started_by_ghostly(self) -> bool:
        try:
            recorded = (self.data_dir / STARTED_FILE).read_text().strip()
        except OSError:
            return False
        return recorded == self._server_identity()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_database(cfg: Config, pg: EmbeddedPostgres | None = None) -> tuple[Config, EmbeddedPostgres | None]:
    """(cfg, None) when cfg names a database; otherwise start (or join) the project's own
    embedded cluster (`pg`, or the default one) and return (cfg pointed at it, the cluster);
    the caller calls its stop() when done (which leaves it running for other users). The
    statistics service gets its read-only role's DSN, with the cluster's password."""
    from dataclasses import replace

    if cfg.database_url:
        return cfg, None
    pg = pg or EmbeddedPostgres()
    dsn = pg.start()
    statistics = cfg.statistics_database_url or pg.role_dsn(STATISTICS_ROLE)
    return replace(cfg.with_database(dsn), statistics_database_url=statistics), pg
