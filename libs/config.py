"""Configuration from the environment (12-factor). Every variable has a documented default.

| variable                    | default                          | meaning                                   |
|-----------------------------|----------------------------------|-------------------------------------------|
| DATABASE_URL                | (unset: embedded PostgreSQL)     | PostgreSQL DSN shared by all services     |
| STATISTICS_DATABASE_URL     | DATABASE_URL                     | read replica / read-only role for reads   |
| GHOSTLY_DATA_DIR            | <project>/var                    | root of local state (store, cache)        |
| GHOSTLY_STORE_DIR           | $GHOSTLY_DATA_DIR/c3d-store      | content store root for C3D files          |
| GHOSTLY_CACHE_DIR           | $GHOSTLY_DATA_DIR/signal-cache   | JIT signal cache payloads                 |
| GHOSTLY_CACHE_MAX_BYTES     | 1073741824 (1 GiB)               | size limit of the signal cache directory  |
| GHOSTLY_PGDATA              | see libs.db.embedded             | embedded cluster's data directory         |
| GHOSTLY_PG_PORT             | 55432                            | embedded cluster's TCP port (127.0.0.1)   |
| GHOSTLY_PG_BIN              | PATH, else newest /usr/lib/postgresql/*/bin | where initdb/pg_ctl are (embedded cluster) |
| GHOSTLY_HOST                | 127.0.0.1                        | address the gRPC servers bind             |
| GHOSTLY_INGEST_PORT         | 50051                            | IngestService port                        |
| GHOSTLY_STATISTICS_PORT     | 50052                            | StatisticsService port                    |
| GHOSTLY_JIT_SIGNAL_PORT     | 50053                            | JitSignalService port                     |
| GHOSTLY_EXPORT_PORT         | 50054                            | ExportService port                        |
| GHOSTLY_INGEST_METRICS_PORT | 9101                             | Prometheus /metrics of ingest (0 = off)   |
| GHOSTLY_STATISTICS_METRICS_PORT | 9102                         | Prometheus /metrics of statistics         |
| GHOSTLY_JIT_SIGNAL_METRICS_PORT | 9103                         | Prometheus /metrics of jit_signal         |
| GHOSTLY_EXPORT_METRICS_PORT | 9104                             | Prometheus /metrics of export             |
| GHOSTLY_<NAME>_ADDRESS      | 127.0.0.1:<that service's port>  | where clients (export, CLI) reach NAME    |
| GHOSTLY_MAX_MESSAGE_BYTES   | 4194304 (4 MiB)                  | gRPC max receive/send message size (one   |
|                             |                                  | Upload chunk, one stream message); larger |
|                             |                                  | is RESOURCE_EXHAUSTED, refused by gRPC    |
| GHOSTLY_MAX_UPLOAD_BYTES    | 268435456 (256 MiB)              | largest C3D accepted by Upload            |
| GHOSTLY_EVENT_SECRET        | (unset: events not signed)       | HMAC-SHA256 secret of storage events      |
| GHOSTLY_DEVICE_TIMEZONE     | UTC                              | time zone of the tablets' C3D clock times |
| GHOSTLY_INGEST_WORKERS      | number of CPUs                   | analysis worker processes of ingest       |
| EMG_ANALYSIS_THREADS        | 1                                | threads per analysis for the channels (read by libs/emg in each worker process) |
| GHOSTLY_JIT_SIGNAL_MEMORY_BYTES | 268435456 (256 MiB)          | jit_signal: processed recordings kept in memory |
| GHOSTLY_JIT_PAYLOAD_MEMORY_BYTES | 67108864 (64 MiB)           | jit_signal: decoded plot payloads kept in memory |
| GHOSTLY_EXPORT_SESSION_CONCURRENCY | 16                        | export: sessions fetched at once in multi-session exports |
| GHOSTLY_DB_POOL_MIN / MAX   | 1 / 10                           | asyncpg pool size per service             |
| GHOSTLY_HEALTH_INTERVAL_S   | 2.0                              | database health probe period              |
| GHOSTLY_SHUTDOWN_GRACE_S    | 10.0                             | drain time on SIGTERM                     |
| GHOSTLY_LOG_LEVEL           | INFO                             | logging level                             |
| GHOSTLY_EVENT_LOOP          | uvloop                           | event loop of the service processes: `uvloop` or `asyncio` (the standard loop) |
| GHOSTLY_AUTH_MODE           | jwt                              | `jwt`: bearer token required; `dev`: calls without a token act as a local admin (`ghostly up` default) |
| GHOSTLY_JWT_ALGORITHM       | HS256                            | HS256 (shared secret) or RS256 (public key) |
| GHOSTLY_JWT_SECRET          | (unset)                          | HS256 verification secret                 |
| GHOSTLY_JWT_PUBLIC_KEY      | (unset)                          | RS256 public key PEM, or @/path/to/key.pem|
| GHOSTLY_JWT_ISSUER          | ghostly                          | required `iss` claim                      |
| GHOSTLY_JWT_AUDIENCE        | ghostly-backend                  | required `aud` claim                      |
| GHOSTLY_TOKEN               | (unset)                          | bearer token the `ghostly` client commands send |
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from libs.auth import AuthSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"

# Service name -> (environment variable of its port, default port).
SERVICE_PORTS: dict[str, tuple[str, int]] = {
    "ingest": ("GHOSTLY_INGEST_PORT", 50051),
    "statistics": ("GHOSTLY_STATISTICS_PORT", 50052),
    "jit_signal": ("GHOSTLY_JIT_SIGNAL_PORT", 50053),
    "export": ("GHOSTLY_EXPORT_PORT", 50054),
}
# Service name -> (environment variable of its Prometheus /metrics port, default; 0 = off).
METRICS_PORTS: dict[str, tuple[str, int]] = {
    "ingest": ("GHOSTLY_INGEST_METRICS_PORT", 9101),
    "statistics": ("GHOSTLY_STATISTICS_METRICS_PORT", 9102),
    "jit_signal": ("GHOSTLY_JIT_SIGNAL_METRICS_PORT", 9103),
    "export": ("GHOSTLY_EXPORT_METRICS_PORT", 9104),
}


@dataclass(frozen=True)
class Config:
    database_url: str | None
    statistics_database_url: str | None
    data_dir: Path
    store_dir: Path
    cache_dir: Path
    cache_max_bytes: int = 1 << 30
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    max_message_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = 256 * 1024 * 1024
    event_secret: str | None = None
    device_timezone: str = "UTC"
    ingest_workers: int = 0
    jit_signal_memory_bytes: int = 256 << 20
    jit_payload_memory_bytes: int = 64 << 20
    export_session_concurrency: int = 16
    db_pool_min: int = 1
    db_pool_max: int = 10
    health_interval_s: float = 2.0
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    event_loop: str = "uvloop"
    auth: AuthSettings = field(default_factory=AuthSettings)

    def port(self, service: str) -> int:
        return self.ports[service]

    def metrics_port(self, service: str) -> int:
        """Port of the service's /metrics endpoint (0 = no endpoint)."""
        return self.metrics_ports.get(service, 0)

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    def target(self, service: str) -> str:
        """Address a client uses to reach `service` (another host in a deployment)."""
        return self.targets.get(service) or f"127.0.0.1:{self.ports[service]}"

    def with_database(self, url: str) -> "Config":
        """Same config pointed at another database (used by the embedded default)."""
        return replace(self, database_url=url,
                       statistics_database_url=self.statistics_database_url or url)


# Scalar settings: field -> (environment variable, parser). Unset or empty: the field's default
# (Config / AuthSettings above), so every default is written once.
_SETTINGS = {
    "cache_max_bytes": ("GHOSTLY_CACHE_MAX_BYTES", int),
    "host": ("GHOSTLY_HOST", str),
    "max_message_bytes": ("GHOSTLY_MAX_MESSAGE_BYTES", int),
    "max_upload_bytes": ("GHOSTLY_MAX_UPLOAD_BYTES", int),
    "event_secret": ("GHOSTLY_EVENT_SECRET", str),
    "device_timezone": ("GHOSTLY_DEVICE_TIMEZONE", str),
    "ingest_workers": ("GHOSTLY_INGEST_WORKERS", int),
    "jit_signal_memory_bytes": ("GHOSTLY_JIT_SIGNAL_MEMORY_BYTES", int),
    "jit_payload_memory_bytes": ("GHOSTLY_JIT_PAYLOAD_MEMORY_BYTES", int),
    "export_session_concurrency": ("GHOSTLY_EXPORT_SESSION_CONCURRENCY", int),
    "db_pool_min": ("GHOSTLY_DB_POOL_MIN", int),
    "db_pool_max": ("GHOSTLY_DB_POOL_MAX", int),
    "health_interval_s": ("GHOSTLY_HEALTH_INTERVAL_S", float),
    "shutdown_grace_s": ("GHOSTLY_SHUTDOWN_GRACE_S", float),
    "log_level": ("GHOSTLY_LOG_LEVEL", str.upper),
    "event_loop": ("GHOSTLY_EVENT_LOOP", str.lower),
}
_AUTH_SETTINGS = {
    "mode": ("GHOSTLY_AUTH_MODE", str.lower),
    "algorithm": ("GHOSTLY_JWT_ALGORITHM", str.upper),
    "secret": ("GHOSTLY_JWT_SECRET", str),
    "public_key": ("GHOSTLY_JWT_PUBLIC_KEY", str),
    "issuer": ("GHOSTLY_JWT_ISSUER", str),
    "audience": ("GHOSTLY_JWT_AUDIENCE", str),
}


def _given(env: dict[str, str], table: dict) -> dict:
    return {name: parse(env[var]) for name, (var, parse) in table.items() if env.get(var)}


def load(env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if env is None else env)
    data_dir = Path(env.get("GHOSTLY_DATA_DIR") or PROJECT_ROOT / "var")
    db = env.get("DATABASE_URL") or None
    return Config(
        database_url=db,
        statistics_database_url=env.get("STATISTICS_DATABASE_URL") or db,
        data_dir=data_dir,
        store_dir=Path(env.get("GHOSTLY_STORE_DIR") or data_dir / "c3d-store"),
        cache_dir=Path(env.get("GHOSTLY_CACHE_DIR") or data_dir / "signal-cache"),
        ports={name: int(env.get(var) or default) for name, (var, default) in SERVICE_PORTS.items()},
        metrics_ports={name: int(env[var]) if env.get(var, "").strip() else default
                       for name, (var, default) in METRICS_PORTS.items()},
        targets={name: env[f"GHOSTLY_{name.upper()}_ADDRESS"] for name in SERVICE_PORTS
                 if env.get(f"GHOSTLY_{name.upper()}_ADDRESS")},
        auth=AuthSettings(**_given(env, _AUTH_SETTINGS)),
        **_given(env, _SETTINGS),
    )
