"""Hosts on one network, on one machine: Linux network namespaces joined by veth pairs to one
bridge (issue 19, item 4). Each host has its own network stack (its own 127.0.0.1, its own
ports), its own IP on 10.77.N.0/24 and its own host name (a UTS namespace), and shares nothing
with the others but that network (and the file system: give each host its own directory).
The process that builds the network (the test, the bench) sits on the bridge at 10.77.N.1 and
reaches every host over it, as a client on the same LAN would.

    with Network() as net:
        pg = net.add_host("pg")                       # namespace gmh-<pid>-pg, 10.77.N.10
        proc = pg.popen(["postgres", ...], log=path)  # runs inside it, as its own process group
        ...
    # every process started in a namespace is killed, the namespaces, veths and bridge removed

Root only, with `ip netns` (iproute2), `unshare` and `setpriv` (util-linux): `available()` says
why not otherwise. Clean-up runs on exit from the block whatever happened, at interpreter exit
for a network not closed, and at the next Network() for the leftovers of a process that was
killed (namespaces named after a pid that no longer runs).

Also here: the multi-host GHOSTLY+ cluster built on it (`Cluster`): PostgreSQL, optionally an
S3 server (moto) and a NATS JetStream broker, two ingest replicas, statistics, jit_signal and
export, each on its own host; used by tests/ops/test_multihost.py and bench/multihost.py.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

PREFIX = "gmh"  # namespaces gmh-<owner pid>-<host>, bridge gmb<pid>, veths gmv<pid>h<i>
SUPERNET = ipaddress.IPv4Network("10.77.0.0/16")
PG_DIR_PREFIX = "ghostly-mh-pg-"  # /tmp/ghostly-mh-pg-<owner pid>-XXXX: a Cluster's PostgreSQL data
ROOT = Path(__file__).resolve().parents[2]


class NetnsError(RuntimeError):
    pass


def _run(*argv: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def available() -> str | None:
    """None when namespaces can be made here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (iproute2 / util-linux)"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    try:
        inside = _run("ip", "netns", "exec", probe, "ip", "link", "set", "lo", "up", check=False)
        if inside.returncode != 0:
            return f"`ip netns exec` does not work here: {inside.stderr.strip()}"
        veth = _run(
            "ip",
            "link",
            "add",
            f"{PREFIX}p{os.getpid()}",
            "type",
            "veth",
            "peer",
            "name",
            f"{PREFIX}q{os.getpid()}",
            check=False,
        )
        if veth.returncode != 0:
            return f"veth pairs cannot be made here: {veth.stderr.strip()}"
        _run("ip", "link", "del", f"{PREFIX}p{os.getpid()}", check=False)
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns_pids(ns: str) -> list[int]:
    out = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def _remove_namespace(ns: str) -> None:
    """Kill what still runs in `ns` (processes started there by this module), then delete it."""
    for pid in _ns_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _ns_pids(ns) and time.monotonic() < deadline:
        time.sleep(0.05)
    _run("ip", "netns", "del", ns, check=False)


def sweep_leftovers() -> list[str]:
    """Remove the namespaces and bridges of Networks whose owner process is gone."""
    removed = []
    listed = _run("ip", "netns", "list", check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ")[0].strip()
        m = re.fullmatch(rf"{PREFIX}-(\d+)-[\w.-]+", name)
        if m and not _pid_alive(int(m.group(1))):
            _remove_namespace(name)
            removed.append(name)
    for path in Path("/tmp").glob(PG_DIR_PREFIX + "*"):  # Cluster's PostgreSQL data directories
        m = re.match(rf"{PG_DIR_PREFIX}(\d+)-", path.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    links = _run("ip", "-o", "link", "show", check=False).stdout
    for m in re.finditer(rf"^\d+: ({PREFIX}b(\d+))[:@]", links, re.M):
        if not _pid_alive(int(m.group(2))):
            _run("ip", "link", "del", m.group(1), check=False)
            removed.append(m.group(1))
    return removed


def _free_subnet() -> ipaddress.IPv4Network:
    used = _run("ip", "-4", "-o", "addr", "show", check=False).stdout
    taken = set()
    for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/(\d+)", used):
        taken.add(ipaddress.ip_interface(f"{m.group(1)}/{m.group(2)}").network)
    for net in SUPERNET.subnets(new_prefix=24):
        if not any(net.overlaps(t) for t in taken):
            return net
    raise NetnsError(f"no free /24 in {SUPERNET}")


class Host:
    """One namespace: name, IP, and the processes started in it."""

    def __init__(self, network: Network, name: str, ip: str, index: int):
        self.network, self.name, self.ip, self.index = network, name, ip, index
        self.ns = f"{PREFIX}-{network.owner}-{name}"
        self.procs: list[subprocess.Popen] = []

    def command(self, argv: list[str], user: str | None = None) -> list[str]:
        """argv run inside this host: its network namespace, its own host name (a UTS
        namespace), optionally as `user`. Every step execs the next: the process started is
        the program itself (its pid is the one to signal)."""
        prefix = [
            "ip",
            "netns",
            "exec",
            self.ns,
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.name,
        ]
        if user:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        return prefix + list(argv)

    def popen(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        user: str | None = None,
        cwd: Path | str | None = None,
    ) -> subprocess.Popen:
        """Start argv on this host (own process group; stdout and stderr to `log`)."""
        with open(log, "ab") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
            proc = subprocess.Popen(
                self.command(argv, user),
                env=env,
                cwd=cwd or ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: float = 120,
        cwd: Path | str | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(argv, user), env=env, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout
        )

    def stop(self, proc: subprocess.Popen, grace_s: float = 5.0) -> None:
        """SIGTERM to its process group, then SIGKILL after `grace_s`."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc, grace_s=2.0)
        _remove_namespace(self.ns)

    def __repr__(self) -> str:
        return f"Host({self.name} {self.ip} ns={self.ns})"


class Network:
    """A bridge with an address in the caller's namespace and hosts attached to it by veths."""

    def __init__(self, subnet: str | None = None):
        reason = available()
        if reason:
            raise NetnsError(reason)
        sweep_leftovers()
        self.owner = os.getpid()
        self.subnet = ipaddress.ip_network(subnet) if subnet else _free_subnet()
        self.bridge = f"{PREFIX}b{self.owner}"
        self.gateway = str(self.subnet.network_address + 1)
        self.hosts: dict[str, Host] = {}
        self._closed = False
        atexit.register(self.close)
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, name: str, last_octet: int | None = None) -> Host:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,20}", name) or name in self.hosts:
            raise ValueError(f"host name {name!r}: lower-case letters, digits and -, unique")
        index = len(self.hosts)
        ip = str(self.subnet.network_address + (last_octet or 10 + index))
        host = Host(self, name, ip, index)
        outside, inside = f"{PREFIX}v{self.owner}h{index}", f"{PREFIX}i{self.owner}h{index}"
        self.hosts[name] = host
        _run("ip", "netns", "add", host.ns)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", host.ns)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        ns = ("ip", "netns", "exec", host.ns)
        _run(*ns, "ip", "link", "set", inside, "name", "eth0")
        _run(*ns, "ip", "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
        _run(*ns, "ip", "link", "set", "eth0", "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "ip", "route", "add", "default", "via", self.gateway)
        return host

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for host in reversed(list(self.hosts.values())):
            try:
                host.close()
            except Exception as exc:  # noqa: BLE001 - clean up the others anyway
                print(f"netns: cleaning up {host}: {exc}", file=sys.stderr)
        _run("ip", "link", "del", self.bridge, check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# =========================================================================== the cluster
PG_PORT = 5432
S3_PORT = 5000
NATS_PORT = 4222
SERVICE_PORTS = {"ingest": 50051, "statistics": 50052, "jit_signal": 50053, "export": 50054}
ROLES = {
    "ingest": "ghostly_ingest",
    "statistics": "ghostly_statistics",
    "jit_signal": "ghostly_jit_signal",
    "export": "ghostly_export",
}
# Hosts and their last octet on the subnet.
LAYOUT = {
    "pg": 10,
    "s3": 11,
    "broker": 12,
    "migrate": 13,
    "ingest-a": 21,
    "ingest-b": 22,
    "statistics": 31,
    "jit-signal": 32,
    "export": 33,
}
BUCKET = "ghostly-c3d"
S3_PREFIX = "store"
# Variables of the caller's environment that must not leak into the hosts (each host gets only
# what it is given, as a separate machine would).
_PRIVATE = re.compile(r"^(GHOSTLY_|DATABASE_URL$|STATISTICS_DATABASE_URL$|PG|AWS_|OTEL_|NATS_)")


def pg_bin() -> Path:
    from libs.db.embedded import find_bin_dir

    return find_bin_dir()


@dataclass
class Service:
    name: str  # ingest-a, statistics, ...
    kind: str  # ingest, statistics, jit_signal, export
    host: Host
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host.ip}:{SERVICE_PORTS[self.kind]}"


@dataclass
class Cluster:
    """The GHOSTLY+ stack over a Network, one host per component:

    pg          PostgreSQL (initdb here, listening on its IP only; scram-sha-256 for the subnet)
    s3, broker  moto's S3 server and nats-server with JetStream (events=True)
    migrate     the one-shot `ghostly migrate --set-role-passwords` job (the owner's DSN)
    ingest-a/-b two ingest replicas; statistics, jit-signal, export: one each

    The services get DATABASE_URL without credentials and log in as their own role (migration
    010) with their own password. Content store: with events=False a directory every C3D
    reader mounts (the ReadWriteMany volume of deploy/k8s), with events=True the S3 bucket
    (each host then has only its own local directory)."""

    root: Path
    events: bool = False
    lease_s: float = 2.0
    workers: int = 1
    log_level: str = "WARNING"
    network: Network | None = None
    services: dict[str, Service] = field(default_factory=dict)
    owner_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    role_passwords: dict[str, str] = field(
        default_factory=lambda: {role: secrets.token_urlsafe(18) for role in ROLES.values()}
    )
    s3_keys: tuple[str, str] = ("ghostlytest", "ghostlytestsecret")
    timings: dict[str, float] = field(default_factory=dict)
    _pg_dir: Path | None = None
    _t_s3: float = 0.0

    # -- addresses ---------------------------------------------------------------------------
    def host(self, name: str) -> Host:
        assert self.network is not None
        return self.network.hosts[name]

    @property
    def owner_dsn(self) -> str:
        from urllib.parse import quote

        return f"postgresql://postgres:{quote(self.owner_password, safe='')}@{self.host('pg').ip}:{PG_PORT}/ghostly"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host('s3').ip}:{S3_PORT}"

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host('broker').ip}:{NATS_PORT}"

    def address(self, service: str) -> str:
        return self.services[service].address

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Cluster:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # postgres must traverse it
        (self.root / "logs").mkdir(exist_ok=True)
        self.network = Network()
        names = [n for n in LAYOUT if self.events or n not in ("s3", "broker")]
        for name in names:
            self.network.add_host(name, LAYOUT[name])
        self.timings["network_s"] = time.monotonic() - t0
        if self.events:
            self._launch_s3_and_broker()  # moto takes seconds to import: meanwhile PostgreSQL
        self._start_postgres()
        t = time.monotonic()
        self._migrate()
        self.timings["migrate_s"] = time.monotonic() - t
        if self.events:
            self._s3_and_broker_ready()
        t = time.monotonic()
        for name, kind in (
            ("ingest-a", "ingest"),
            ("ingest-b", "ingest"),
            ("statistics", "statistics"),
            ("jit-signal", "jit_signal"),
            ("export", "export"),
        ):
            self.add_service(name, kind)
        for svc in self.services.values():
            self.start_service(svc.name)
        for svc in self.services.values():
            self.wait_serving(svc.name)
        self.timings["services_s"] = time.monotonic() - t
        self.timings["start_s"] = time.monotonic() - t0
        return self

    def close(self) -> None:
        if self.network is not None:
            self.network.close()
        if self._pg_dir is not None:
            shutil.rmtree(self._pg_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def logs(self, tail: int = 40) -> str:
        """The last lines of every log (for a failure's message)."""
        out = []
        for path in sorted(self.root.glob("logs/*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)

    # -- PostgreSQL --------------------------------------------------------------------------
    def _start_postgres(self) -> None:
        t = time.monotonic()
        host = self.host("pg")
        # Its own directory in /tmp: the postgres user must traverse every directory above it
        # (pytest's tmp_path is private to root). Removed by close().
        import tempfile

        self._pg_dir = Path(tempfile.mkdtemp(prefix=f"{PG_DIR_PREFIX}{os.getpid()}-", dir="/tmp"))
        os.chmod(self._pg_dir, 0o755)
        data = self._pg_dir / "data"
        import pwd

        pg = pwd.getpwnam("postgres")
        os.chown(data.parent, pg.pw_uid, pg.pw_gid)
        pwfile = data.parent / "pwfile"
        pwfile.write_text(self.owner_password + "\n")
        os.chown(pwfile, pg.pw_uid, pg.pw_gid)
        os.chmod(pwfile, 0o600)
        bindir = pg_bin()
        init = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise NetnsError(f"initdb failed: {init.stderr.strip()}")
        with open(data / "postgresql.auto.conf", "a") as f:
            f.write(
                "\n".join(
                    [
                        f"listen_addresses = '{host.ip}'",
                        f"port = {PG_PORT}",
                        f"unix_socket_directories = '{data}'",
                        "password_encryption = 'scram-sha-256'",
                        "max_connections = 200",
                        "shared_buffers = 128MB",
                        "fsync = off",
                        "synchronous_commit = off",
                        "full_page_writes = off",
                    ]
                )
                + "\n"
            )
        assert self.network is not None
        (data / "pg_hba.conf").write_text(
            "# multi-host test cluster: every host of the subnet, with a password\n"
            "local all postgres peer\n"
            f"host  all all {self.network.subnet} scram-sha-256\n"
        )
        host.popen([str(bindir / "postgres"), "-D", str(data)], user="postgres", log=self.root / "logs" / "pg.log")
        self._wait_tcp(host.ip, PG_PORT, "PostgreSQL", timeout=30)
        import asyncio

        import asyncpg

        async def create():
            deadline = time.monotonic() + 20
            while True:
                try:
                    conn = await asyncpg.connect(self.owner_dsn.rsplit("/", 1)[0] + "/postgres", timeout=2)
                    break
                except (OSError, asyncpg.CannotConnectNowError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            try:
                await conn.execute("CREATE DATABASE ghostly")
            finally:
                await conn.close()

        asyncio.run(create())
        self.timings["postgres_s"] = time.monotonic() - t

    def _wait_tcp(self, ip: str, port: int, what: str, timeout: float) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex((ip, port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise NetnsError(f"{what} did not listen on {ip}:{port} within {timeout:.0f} s\n{self.logs()}")
            assert self.network is not None
            for h in self.network.hosts.values():
                for p in h.procs:
                    if p.poll() is not None and p.returncode not in (0, None) and h.ip == ip:
                        raise NetnsError(f"{what} exited ({p.returncode})\n{self.logs()}")
            time.sleep(0.1)

    # -- S3 and broker -----------------------------------------------------------------------
    def _launch_s3_and_broker(self) -> None:
        self._t_s3 = time.monotonic()
        s3, broker = self.host("s3"), self.host("broker")
        env = self.base_env()
        env.update(AWS_ACCESS_KEY_ID=self.s3_keys[0], AWS_SECRET_ACCESS_KEY=self.s3_keys[1])
        s3.popen(
            [sys.executable, "-m", "moto.server", "-H", s3.ip, "-p", str(S3_PORT)],
            env=env,
            log=self.root / "logs" / "s3.log",
        )
        jsdir = self.root / "broker" / "jetstream"
        jsdir.mkdir(parents=True, exist_ok=True)
        nats = shutil.which("nats-server") or "/usr/sbin/nats-server"
        broker.popen(
            [nats, "-js", "-a", broker.ip, "-p", str(NATS_PORT), "-sd", str(jsdir)],
            env=self.base_env(),
            log=self.root / "logs" / "broker.log",
        )

    def _s3_and_broker_ready(self) -> None:
        self._wait_tcp(self.host("s3").ip, S3_PORT, "the S3 server", timeout=60)
        self._wait_tcp(self.host("broker").ip, NATS_PORT, "nats-server", timeout=30)
        self.s3_client().create_bucket(Bucket=BUCKET)
        self.timings["s3_broker_ready_s"] = time.monotonic() - self._t_s3

    def s3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_keys[0],
            aws_secret_access_key=self.s3_keys[1],
            region_name="us-east-1",
        )

    # -- migrations --------------------------------------------------------------------------
    def _migrate(self) -> None:
        """The migrate job on its own host, as the owner: schema, then the role passwords."""
        env = self.base_env()
        env["DATABASE_URL"] = self.owner_dsn
        for role, var in (
            ("ghostly_ingest", "GHOSTLY_INGEST_DB_PASSWORD"),
            ("ghostly_statistics", "GHOSTLY_STATISTICS_DB_PASSWORD"),
            ("ghostly_jit_signal", "GHOSTLY_JIT_SIGNAL_DB_PASSWORD"),
            ("ghostly_export", "GHOSTLY_EXPORT_DB_PASSWORD"),
        ):
            env[var] = self.role_passwords[role]
        done = self.host("migrate").run(
            [sys.executable, "-m", "app.cli", "migrate", "--set-role-passwords"], env=env, timeout=120
        )
        (self.root / "logs" / "migrate.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise NetnsError(f"migrate failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    # -- services ----------------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not _PRIVATE.match(k)}

    def store_env(self) -> dict[str, str]:
        if self.events:
            return {
                "GHOSTLY_STORE_URL": f"s3://{BUCKET}/{S3_PREFIX}",
                "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
                "AWS_ENDPOINT_URL": self.s3_endpoint,
                "AWS_ACCESS_KEY_ID": self.s3_keys[0],
                "AWS_SECRET_ACCESS_KEY": self.s3_keys[1],
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        shared = self.root / "shared-store"
        shared.mkdir(exist_ok=True)
        return {"GHOSTLY_STORE_DIR": str(shared)}

    def add_service(self, name: str, kind: str) -> Service:
        host = self.host(name)
        env = self.base_env()
        data_dir = self.root / "hosts" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            {
                "GHOSTLY_AUTH_MODE": "dev",
                "GHOSTLY_LOG_LEVEL": self.log_level,
                "GHOSTLY_HOST": host.ip,
                "GHOSTLY_DATA_DIR": str(data_dir),
                "GHOSTLY_HEALTH_INTERVAL_S": "0.5",
                "GHOSTLY_SHUTDOWN_GRACE_S": "1",
                "DATABASE_URL": f"postgresql://{self.host('pg').ip}:{PG_PORT}/ghostly",
                f"GHOSTLY_{kind.upper()}_PORT": str(SERVICE_PORTS[kind]),
            }
        )
        role = ROLES[kind]
        if kind == "statistics":
            env["PGPASSWORD"] = self.role_passwords[role]  # its read-only login (deploy.md)
        else:
            env[f"GHOSTLY_{kind.upper()}_DB_PASSWORD"] = self.role_passwords[role]
        if kind in ("ingest", "jit_signal"):
            env.update(self.store_env())
        if kind == "ingest":
            env.update(GHOSTLY_INGEST_WORKERS=str(self.workers), GHOSTLY_INGEST_CLAIM_LEASE_S=str(self.lease_s))
            if self.events:
                env.update(GHOSTLY_EVENTS_URL=self.nats_url)
        if kind == "export":
            env["GHOSTLY_STATISTICS_ADDRESS"] = f"{self.host('statistics').ip}:{SERVICE_PORTS['statistics']}"
            env["GHOSTLY_JIT_SIGNAL_ADDRESS"] = f"{self.host('jit-signal').ip}:{SERVICE_PORTS['jit_signal']}"
        svc = Service(name, kind, host, env, self.root / "logs" / f"{name}.log")
        self.services[name] = svc
        return svc

    def start_service(self, name: str) -> Service:
        svc = self.services[name]
        svc.proc = svc.host.popen([sys.executable, "-m", f"services.{svc.kind}"], env=svc.env, log=svc.log)
        return svc

    def wait_serving(self, name: str, timeout: float = 60) -> None:
        import asyncio

        from app.healthcheck import check

        svc = self.services[name]
        deadline = time.monotonic() + timeout

        async def poll():
            while not await check(svc.address, timeout=1.0):
                if svc.proc.poll() is not None:
                    raise NetnsError(f"{name} exited ({svc.proc.returncode}) before serving\n{self.logs()}")
                if time.monotonic() > deadline:
                    raise NetnsError(
                        f"{name} did not report SERVING at {svc.address} in {timeout:.0f} s\n{self.logs()}"
                    )
                await asyncio.sleep(0.1)

        asyncio.run(poll())

    def kill(self, name: str) -> None:
        """kill -9 of the service (the process itself: every exec in between kept its pid)."""
        svc = self.services[name]
        assert svc.proc is not None, f"{name} was never started"
        os.kill(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait(10)


def s3_event(bucket: str, key: str, size: int, etag: str, *, event_name: str = "ObjectCreated:Put") -> bytes:
    """A standard S3 bucket notification (what S3 / MinIO / Ceph send for a PUT), one record."""
    from datetime import datetime

    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "ghostly-ingest",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": size, "eTag": etag, "sequencer": f"{time.time_ns():X}"},
        },
    }
    return json.dumps({"Records": [record]}).encode()


# =========================================================================== the scenario
# Steps of the multi-host proof, shared by tests/ops/test_multihost.py (which asserts on what
# they return) and bench/multihost.py (which prints it). Every call goes over the network.


def synthetic_files(directory: Path, n: int, seed0: int = 7100, duration_s: float = 180.0) -> list[tuple[str, bytes]]:
    """n distinct synthetic GHOSTLY recordings (two channels, regular contractions): (file name, bytes)."""
    from libs.emg.synthetic import (
        ChannelSpec,
        SyntheticSpec,
        ghostly_file_name,
        regular_contractions,
        write_synthetic_c3d,
    )

    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        seed = seed0 + i
        spec = SyntheticSpec(
            duration_s=duration_s,
            seed=seed,
            channels=[
                ChannelSpec(contractions=regular_contractions(4, 2.0, 6.0)),
                ChannelSpec(contractions=regular_contractions(3, 1.5, 8.0, amplitude_v=200e-6)),
            ],
        )
        name = ghostly_file_name(spec, seconds=i % 60, frac=f"{i:04d}")
        path = directory / f"{i:04d}-{name}"
        write_synthetic_c3d(path, spec)
        out.append((name, path.read_bytes()))
    return out


async def seed_people(cluster: Cluster, code: str = "P077") -> tuple[str, str]:
    """A therapist, their patient `code` and a researcher, as the owner: (patient code, researcher id)."""
    import uuid

    import asyncpg

    conn = await asyncpg.connect(cluster.owner_dsn)
    try:
        from tests.helpers import add_patient, add_therapist

        therapist, _ = await add_therapist(conn, first="M", last="Host")
        await add_patient(conn, therapist, code, first="M", last="Host")
        researcher = uuid.uuid4()
        await conn.execute(
            "INSERT INTO researcher_profiles (id, full_name, institution) VALUES ($1, 'R', 'I')", researcher
        )
        return code, str(researcher)
    finally:
        await conn.close()


async def ingest_by_upload(cluster: Cluster, files: list[tuple[str, bytes]], patient: str) -> dict[str, str]:
    """Upload every file, alternately to ingest-a and ingest-b, two at a time: {name: session id}."""
    import asyncio

    import grpc

    from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc

    out: dict[str, str] = {}
    channels = {n: grpc.aio.insecure_channel(cluster.address(n)) for n in ("ingest-a", "ingest-b")}
    try:
        stubs = [ingest_pb2_grpc.IngestServiceStub(channels[n]) for n in ("ingest-a", "ingest-b")]

        def messages(name: str, data: bytes):
            yield ingest_pb2.UploadRequest(
                metadata=ingest_pb2.UploadMetadata(
                    file_name=name,
                    expected_size_bytes=len(data),
                    session=ingest_pb2.SessionMetadata(patient_code=patient),
                )
            )
            for i in range(0, len(data), 1 << 20):
                yield ingest_pb2.UploadRequest(chunk=data[i : i + (1 << 20)])

        async def one(i: int, name: str, data: bytes):
            reply = await stubs[i % 2].Upload(messages(name, data), timeout=120)
            out[name] = reply.session_id

        sem = asyncio.Semaphore(2)

        async def bounded(i, name, data):
            async with sem:
                await one(i, name, data)

        await asyncio.gather(*(bounded(i, n, d) for i, (n, d) in enumerate(files)))
    finally:
        for ch in channels.values():
            await ch.close()
    return out


async def ingest_by_bucket_events(
    cluster: Cluster, files: list[tuple[str, bytes]], patient: str, *, duplicates: bool = True, timeout: float = 120
) -> dict[str, str]:
    """The storage side: PUT each file into the bucket under <prefix>/<patient>/<name>, then
    publish its S3 event (twice with `duplicates`: delivery is at least once); wait until
    every file has a completed session: {name: session id}."""
    import asyncio

    import nats

    s3 = cluster.s3_client()
    events = []
    for name, data in files:
        key = f"{S3_PREFIX}/{patient}/{name}"
        put = await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key=key, Body=data)
        events.append(s3_event(BUCKET, key, len(data), put["ETag"].strip('"')))
    nc = await nats.connect(cluster.nats_url, connect_timeout=5)
    try:
        js = nc.jetstream()
        subject = "ghostly.bucket.events"
        for body in events + (events if duplicates else []):
            await js.publish(subject, body, timeout=10)
    finally:
        await nc.drain()
    return await wait_sessions(cluster, {f"{patient}/{name}": name for name, _ in files}, timeout=timeout)


async def wait_sessions(cluster: Cluster, paths: dict[str, str], timeout: float) -> dict[str, str]:
    """Wait until every store path in `paths` ({path: name}) has a session that is no longer
    processing: {name: session id}."""
    import asyncio

    import asyncpg

    conn = await asyncpg.connect(cluster.owner_dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = await conn.fetch(
                "SELECT id, file_path, processing_status FROM therapy_sessions WHERE file_path = ANY($1::text[])",
                list(paths),
            )
            settled = {r["file_path"]: str(r["id"]) for r in rows if r["processing_status"] != "processing"}
            if len(settled) == len(paths):
                return {paths[p]: sid for p, sid in settled.items()}
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(settled)}/{len(paths)} files ingested from the bucket events in "
                    f"{timeout:.0f} s\n{cluster.logs()}"
                )
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def _forkserver_tree(pid: int) -> set[int]:
    """The analysis fork server under `pid` and its workers (same test as test_crash_recovery)."""

    def children(p: int) -> set[int]:
        out: set[int] = set()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                out.update(map(int, (task / "children").read_text().split()))
        return out

    for child in children(pid):
        with contextlib.suppress(OSError):
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                tree, todo = {child}, [child]
                while todo:
                    for c in children(todo.pop()):
                        if c not in tree:
                            tree.add(c)
                            todo.append(c)
                return tree
    return set()


async def reprocess_killing(
    cluster: Cluster,
    *,
    via: str = "ingest-a",
    victim: str = "ingest-b",
    victim_done_first: int = 3,
    timeout: float = 120,
) -> dict:
    """Reprocess(all) through `via`; once `victim` (the other replica) has finished
    `victim_done_first` items (at least one; fewer when the queue is nearly empty) and runs one more, its analysis workers are frozen (so that item
    cannot finish) and it is killed with SIGKILL, mid-item. Returns the progress messages, the
    item the victim held, and timings."""
    import asyncio

    import asyncpg
    import grpc

    from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc

    db = await asyncpg.connect(cluster.owner_dsn)
    proc = cluster.services[victim].proc
    assert proc is not None, f"{victim} is not running"
    owner_like = f"{victim}:{proc.pid}:%"
    msgs: list = []
    facts: dict = {"victim": victim, "via": via}
    t0 = time.monotonic()
    try:
        async with grpc.aio.insecure_channel(cluster.address(via)) as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)

            async def stream():
                async for m in stub.Reprocess(ingest_pb2.ReprocessRequest(all=True), timeout=timeout):
                    msgs.append(m)

            call = asyncio.ensure_future(stream())
            try:
                deadline = time.monotonic() + timeout
                frozen: set[int] = set()
                while True:
                    if call.done():
                        call.result()
                        items = [
                            dict(r)
                            for r in await db.fetch(
                                "SELECT id, status, claimed_by, attempts FROM reprocess_items ORDER BY id"
                            )
                        ]
                        raise AssertionError(
                            f"the Reprocess ended before {victim} ({owner_like}) ran a second item: {items}"
                        )
                    row = await db.fetchrow(
                        "SELECT count(*) FILTER (WHERE status = 'done' AND claimed_by LIKE $1) AS done, "
                        "min(id) FILTER (WHERE status = 'running' AND claimed_by LIKE $1) AS running, "
                        "count(*) FILTER (WHERE status = 'queued') AS queued FROM reprocess_items",
                        owner_like,
                    )
                    # mid-run: the victim has done its share (or the queue is nearly empty) and runs an item
                    if (
                        row["running"] is not None
                        and row["done"] >= 1
                        and (row["done"] >= victim_done_first or row["queued"] <= 2 or frozen)
                    ):
                        if not frozen:
                            frozen = _forkserver_tree(proc.pid)
                            for pid in frozen:
                                with contextlib.suppress(ProcessLookupError):
                                    os.kill(pid, signal.SIGSTOP)
                            await asyncio.sleep(0.3)  # an item that finished meanwhile: the next one is stuck
                            continue
                        facts["killed_item"] = row["running"]
                        facts["victim_done_before_kill"] = row["done"]
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{victim} never ran an item\n{cluster.logs()}")
                    await asyncio.sleep(0.01)
                facts["kill_at_s"] = time.monotonic() - t0
                facts["frozen_workers"] = len(frozen)
                cluster.kill(victim)
                await call
            finally:
                if not call.done():
                    call.cancel()
        facts["reprocess_s"] = time.monotonic() - t0
        facts["messages"] = msgs
        facts["items"] = [
            dict(r)
            for r in await db.fetch(
                "SELECT id, session_id::text AS session_id, status, claimed_by, attempts FROM reprocess_items ORDER BY id"
            )
        ]
        return facts
    finally:
        await db.close()


async def export_all(cluster: Cluster, session_ids: list[str], researcher: str) -> dict:
    """Through export (which calls statistics and jit_signal on their hosts): the statistics of
    every session as CSV, and one session's signals (JIT, from the content store) as JSON."""
    import grpc

    from ghostly.export.v1 import export_pb2 as epb
    from ghostly.export.v1 import export_pb2_grpc

    out: dict = {}
    t0 = time.monotonic()
    async with grpc.aio.insecure_channel(cluster.address("export")) as ch:
        stub = export_pb2_grpc.ExportServiceStub(ch)
        for label, req in (
            (
                "statistics_csv",
                epb.CreateExportRequest(
                    type=epb.EXPORT_TYPE_STATISTICS_ONLY,
                    format=epb.EXPORT_FORMAT_CSV,
                    session_ids=session_ids,
                    exported_by=researcher,
                ),
            ),
            (
                "signals_json",
                epb.CreateExportRequest(
                    type=epb.EXPORT_TYPE_SIGNALS_VISUALIZATION,
                    format=epb.EXPORT_FORMAT_JSON,
                    session_ids=session_ids[:1],
                    exported_by=researcher,
                ),
            ),
        ):
            data, completed = bytearray(), None
            async for chunk in stub.CreateExport(req, timeout=120):
                kind = chunk.WhichOneof("body")
                if kind == "data":
                    data += chunk.data
                elif kind == "completed":
                    completed = chunk.completed
            out[label] = {"bytes": bytes(data), "completed": completed}
    out["export_s"] = time.monotonic() - t0
    return out


async def consistency(cluster: Cluster) -> dict[str, int]:
    """Counts that must hold after the run (read as the owner)."""
    import asyncpg

    conn = await asyncpg.connect(cluster.owner_dsn)
    try:
        return {
            k: await conn.fetchval(q)
            for k, q in {
                "sessions": "SELECT count(*) FROM therapy_sessions",
                "distinct_files": "SELECT count(DISTINCT file_hash) FROM therapy_sessions",
                "completed": "SELECT count(*) FROM therapy_sessions WHERE processing_status = 'completed'",
                "processing": "SELECT count(*) FROM therapy_sessions WHERE processing_status = 'processing'",
                "without_2_statistics": "SELECT count(*) FROM therapy_sessions s WHERE (SELECT count(*) "
                "FROM emg_statistics e WHERE e.session_id = s.id) <> 2",
                "without_score": "SELECT count(*) FROM therapy_sessions s WHERE NOT EXISTS "
                "(SELECT 1 FROM performance_scores p WHERE p.session_id = s.id)",
                "reprocess_items": "SELECT count(*) FROM reprocess_items",
                "reprocess_items_not_done": "SELECT count(*) FROM reprocess_items WHERE status <> 'done'",
                "exports": "SELECT count(*) FROM export_history",
                "exports_not_success": "SELECT count(*) FROM export_history WHERE export_status <> 'success'",
            }.items()
        }
    finally:
        await conn.close()


def metrics(cluster: Cluster, service: str) -> dict[str, float]:
    """The Prometheus samples of a service's /metrics endpoint (on its host, default port),
    "name{labels}" -> value."""
    import urllib.request

    from libs.config import METRICS_PORTS

    svc = cluster.services[service]
    port = METRICS_PORTS[svc.kind][1]
    text = urllib.request.urlopen(f"http://{svc.host.ip}:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def bucket_event_outcomes(cluster: Cluster, services=("ingest-a", "ingest-b")) -> dict[str, dict[str, float]]:
    """ghostly_bucket_events_total by outcome, per ingest replica (a replica that is not running: {})."""
    out: dict[str, dict[str, float]] = {}
    for name in services:
        svc = cluster.services[name]
        if svc.proc is None or svc.proc.poll() is not None:
            out[name] = {}
            continue
        samples = metrics(cluster, name)
        out[name] = {
            m.group(1): v
            for k, v in samples.items()
            if (m := re.fullmatch(r'ghostly_bucket_events_total\{outcome="(\w+)"\}', k))
        }
    return out


async def dead_letters(cluster: Cluster, subject: str = "ghostly.bucket.events") -> int:
    """Messages on the dead-letter subject of the bucket-event stream."""
    import nats

    nc = await nats.connect(cluster.nats_url, connect_timeout=5)
    try:
        js = nc.jetstream()
        info = await js.stream_info("GHOSTLY_BUCKET_EVENTS", subjects_filter=f"{subject}.dead")
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


async def events_drained(
    cluster: Cluster, timeout: float = 30, stream: str = "GHOSTLY_BUCKET_EVENTS", consumer: str = "ghostly-ingest"
) -> dict:
    """Wait until the shared durable consumer has every event delivered and acknowledged."""
    import asyncio

    import nats

    nc = await nats.connect(cluster.nats_url, connect_timeout=5)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            info = await js.consumer_info(stream, consumer)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return {"delivered": info.delivered.stream_seq, "redelivered": info.num_redelivered}
            if time.monotonic() > deadline:
                raise TimeoutError(f"bucket events not drained in {timeout:.0f} s: {info}")
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


def problems(
    sids: dict[str, str],
    rep: dict,
    exp: dict,
    counts: dict,
    n: int,
    victim: str = "ingest-b",
    survivor: str = "ingest-a",
) -> list[str]:
    """What is wrong with a run (empty: every file one session, completed exactly once by the
    Reprocess in spite of the killed replica, and exported), one line each."""
    import csv
    import io

    out: list[str] = []

    def want(ok: bool, what: str) -> None:
        if not ok:
            out.append(what)

    # one session per file, completed, with its statistics (two channels) and its score
    want(len(set(sids.values())) == len(sids) == n, f"{len(set(sids.values()))} distinct sessions for {n} files")
    want(
        counts["sessions"] == counts["distinct_files"] == counts["completed"] == n,
        f"sessions/distinct files/completed {counts['sessions']}/{counts['distinct_files']}/{counts['completed']}, "
        f"expected {n}",
    )
    for k in ("processing", "without_2_statistics", "without_score"):
        want(counts[k] == 0, f"{counts[k]} sessions {k.replace('_', ' ')}")
    # the Reprocess: every session reported exactly once, all done, none failed
    msgs = rep["messages"]
    final = msgs[-1] if msgs else None
    want(
        final is not None and final.done and final.done_count == final.total_count == n and final.failed_count == 0,
        f"final Reprocess progress {final}",
    )
    reported = [m.session_id for m in msgs[:-1]]
    want(
        sorted(reported) == sorted(sids.values()),
        f"Reprocess reported {len(reported)} sessions ({len(set(reported))} distinct) for {n}",
    )
    # its items: one per session, all done; the victim did some before it was killed; the item
    # it held then was finished by the survivor on a second attempt; nothing else ran twice
    items = rep["items"]
    want(len(items) == n and {i["session_id"] for i in items} == set(sids.values()), f"{len(items)} items for {n}")
    want(counts["reprocess_items_not_done"] == 0, f"{counts['reprocess_items_not_done']} items not done")
    by_victim = [i for i in items if (i["claimed_by"] or "").startswith(victim + ":")]
    want(
        len(by_victim) == rep.get("victim_done_before_kill", -1) >= 1,
        f"{victim} finished {len(by_victim)} items (at the kill: {rep.get('victim_done_before_kill')})",
    )
    killed = [i for i in items if i["id"] == rep.get("killed_item")]
    want(
        len(killed) == 1 and killed[0]["attempts"] == 2 and killed[0]["claimed_by"].startswith(survivor + ":"),
        f"the item {victim} held when killed: {killed}",
    )
    want(
        sorted(i["attempts"] for i in items) == [1] * (n - 1) + [2], f"attempts {sorted(i['attempts'] for i in items)}"
    )
    # the exports, through export -> statistics and export -> jit_signal on their hosts
    table = exp["statistics_csv"]["bytes"].decode(errors="replace")
    rows = list(csv.reader(io.StringIO(table)))
    missing = [sid for sid in sids.values() if sid not in table]
    want(not missing and len(rows) > n, f"statistics CSV: {len(rows)} rows, {len(missing)} sessions missing")
    try:
        signals = json.loads(exp["signals_json"]["bytes"])
    except ValueError as exc:
        signals = None
        out.append(f"signals export is not JSON: {exc}")
    want(bool(signals), "empty signals export")
    want(
        counts["exports"] == 2 and counts["exports_not_success"] == 0,
        f"export_history: {counts['exports']} rows, {counts['exports_not_success']} not success",
    )
    return out


async def kill_mid_claim(
    cluster: Cluster, victim: str = "ingest-b", *, after_completed: int = 1, timeout: float = 120
) -> dict:
    """Once `victim` has completed `after_completed` sessions and holds the claim of another
    ('processing', its lease), freeze its analysis workers (the claim cannot finish) and kill it
    with SIGKILL. Returns the session it held."""
    import asyncio

    import asyncpg

    proc = cluster.services[victim].proc
    assert proc is not None, f"{victim} is not running"
    owner_like = f"{victim}:{proc.pid}:%"
    db = await asyncpg.connect(cluster.owner_dsn)
    frozen: set[int] = set()
    try:
        deadline = time.monotonic() + timeout
        while True:
            held = await db.fetchval(
                "SELECT id::text FROM therapy_sessions WHERE processing_status = 'processing' AND claimed_by LIKE $1 "
                "ORDER BY id LIMIT 1",
                owner_like,
            )
            completed = await db.fetchval("SELECT count(*) FROM therapy_sessions WHERE processing_status = 'completed'")
            if held and (completed >= after_completed or frozen):
                if not frozen:
                    frozen = _forkserver_tree(proc.pid)
                    for pid in frozen:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGSTOP)
                    await asyncio.sleep(0.3)
                    continue
                cluster.kill(victim)
                return {"held_session": held, "completed_before_kill": completed, "frozen_workers": len(frozen)}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{victim} never held a claim\n{cluster.logs()}")
            await asyncio.sleep(0.01)
    finally:
        await db.close()


async def connections(cluster: Cluster) -> dict[str, set[str]]:
    """Who is logged in to the database from where: {host name: {role}} (by client address)."""
    import asyncpg

    assert cluster.network is not None
    by_ip = {h.ip: h.name for h in cluster.network.hosts.values()}
    by_ip[cluster.network.gateway] = "harness"
    conn = await asyncpg.connect(cluster.owner_dsn)
    try:
        rows = await conn.fetch(
            "SELECT usename, host(client_addr) AS ip FROM pg_stat_activity WHERE datname = 'ghostly' "
            "AND client_addr IS NOT NULL"
        )
    finally:
        await conn.close()
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(by_ip.get(r["ip"], r["ip"]), set()).add(r["usename"])
    return out


EXPECTED_LOGINS = {
    "ingest-a": {"ghostly_ingest"},
    "ingest-b": {"ghostly_ingest"},
    "statistics": {"ghostly_statistics"},
    "jit-signal": {"ghostly_jit_signal"},
    "export": {"ghostly_export"},
    "harness": {"postgres"},
}
