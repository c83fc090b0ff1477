"""Configuration from the environment (12-factor). Every variable has a documented default.

load() checks every variable it is given (unset or empty: the default): a value that is not
allowed raises ConfigError, which names each such variable, its value and what is allowed
("GHOSTLY_AUTH_MODE='jtw' is not allowed: one of dev, jwt"), all of them at once. Ports are
1-65535 (metrics ports 0-65535, 0 = off), pool sizes, limits and intervals positive (cache and
memory budgets may be 0 = nothing kept), DATABASE_URLs postgresql:// or postgres://, directories
paths that are not existing files; the service entry point and `ghostly` print the message and
exit non-zero.

| variable                    | default                          | meaning                                   |
|-----------------------------|----------------------------------|-------------------------------------------|
| DATABASE_URL                | (unset: embedded PostgreSQL)     | PostgreSQL DSN shared by all services     |
| STATISTICS_DATABASE_URL     | DATABASE_URL                     | read replica / read-only role for reads   |
| GHOSTLY_DATA_DIR            | <project>/var                    | root of local state (store, cache)        |
| GHOSTLY_STORE_DIR           | $GHOSTLY_DATA_DIR/c3d-store      | content store root for C3D files          |
| GHOSTLY_STORE_URL           | file://$GHOSTLY_STORE_DIR        | content store: `file:///dir` or `s3://bucket/prefix` (S3-compatible; endpoint, credentials, region from the AWS_* variables below) |
| GHOSTLY_EVENTS_URL          | (unset: no bucket-event consumer) | NATS server(s) with JetStream, `nats://host:4222[,nats://...]`: ingest consumes S3 bucket notifications from it; `ghostly up` starts an embedded nats-server and sets it when unset |
| GHOSTLY_EVENTS_STREAM       | GHOSTLY_BUCKET_EVENTS            | JetStream stream of the bucket events (created by ingest when missing; it also keeps the dead letters) |
| GHOSTLY_EVENTS_SUBJECT      | ghostly.bucket.events            | subject the bucket notifications are published on; dead letters go to `<subject>.dead` |
| GHOSTLY_EVENTS_CONSUMER     | ghostly-ingest                   | durable JetStream consumer shared by all ingest replicas (each event goes to one of them) |
| GHOSTLY_EVENTS_MAX_DELIVER  | 5                                | deliveries of one event before it goes to the dead-letter subject |
| GHOSTLY_EVENTS_RETRY_DELAY_S | 1.0                             | first redelivery delay after a failure (doubled each time, at most 60 s) |
| GHOSTLY_NATS_PORT           | 54222                            | port (127.0.0.1) of the nats-server `ghostly up` starts when GHOSTLY_EVENTS_URL is unset (libs.events) |
| GHOSTLY_NATS_BIN            | PATH, else /usr/sbin/nats-server | the nats-server executable (embedded broker) |
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
| GHOSTLY_INGEST_DB_PASSWORD  | (unset: not changed)             | password `ghostly migrate --set-role-passwords` sets for ghostly_ingest |
| GHOSTLY_STATISTICS_DB_PASSWORD | (unset: not changed)          | ... for ghostly_statistics                |
| GHOSTLY_JIT_SIGNAL_DB_PASSWORD | (unset: not changed)          | ... for ghostly_jit_signal                |
| GHOSTLY_EXPORT_DB_PASSWORD  | (unset: not changed)             | ... for ghostly_export                    |
| GHOSTLY_DEVICE_TIMEZONE     | UTC                              | time zone of the tablets' C3D clock times |
| GHOSTLY_INGEST_WORKERS      | number of CPUs                   | analysis worker processes of ingest       |
| GHOSTLY_INGEST_CLAIM_LEASE_S | 60                              | ingest: a 'processing' session whose owner has not renewed its lease for this long is taken over and processed by another ingest process (heartbeat every third of it) |
| GHOSTLY_INGEST_SWEEP_GRACE_S | 3600 (1 h)                      | ingest: staging files and files ingest stored without registering a session are removed after this long |
| EMG_ANALYSIS_THREADS        | 1                                | threads per analysis for the channels (read by libs/emg in each worker process) |
| GHOSTLY_JIT_SIGNAL_MEMORY_BYTES | 268435456 (256 MiB)          | jit_signal: processed recordings kept in memory |
| GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB | 2048                       | memory one analysis may use (MiB): a C3D whose analysis (ingest) or processing (jit_signal) needs more, estimated from its header and parameters before any data is read (libs.emg.estimate_analysis_bytes), is refused with RESOURCE_EXHAUSTED; 0 = no limit |
| GHOSTLY_JIT_COLD_COMPUTATIONS | 2                             | jit_signal: recordings processed at once (C3D read + filters); further cold requests wait; worst-case memory ~ this x the analysis budget + GHOSTLY_JIT_SIGNAL_MEMORY_BYTES |
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
| GHOSTLY_TLS_CERT / _KEY     | (unset: plaintext gRPC)          | servers: PEM certificate chain and key (TLS on every port) |
| GHOSTLY_TLS_CA              | (unset: plaintext clients)       | clients: CA that signs the servers' certificates; servers with client auth: CA of client certificates |
| GHOSTLY_TLS_CLIENT_AUTH     | none                             | `require`: servers accept only clients with a certificate from GHOSTLY_TLS_CA (mutual TLS) |
| GHOSTLY_TLS_CLIENT_CERT / _KEY | (unset)                       | clients (export, CLI, probe): certificate and key presented for mutual TLS |

The S3 content store (libs/storage/s3.py) reads the standard AWS variables, through botocore:
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (unset: AWS; set: path-style addressing, for MinIO,
Ceph, moto...), `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (or any other botocore credential
source), `AWS_DEFAULT_REGION` (default us-east-1).

Tracing (OpenTelemetry, libs/tracing.py) uses the standard OTEL_* variables, read at service start
by tracing.setup() and the OpenTelemetry SDK, not by load(); off by default:

| variable                      | default                | meaning                                  |
|-------------------------------|------------------------|------------------------------------------|
| `OTEL_TRACES_EXPORTER`        | none (tracing off)     | `otlp`, `console` or both comma-separated; a value not allowed stops the service (exit 2) |
| `OTEL_SERVICE_NAME`           | ghostly-<service>      | service.name of the spans (`OTEL_RESOURCE_ATTRIBUTES` adds attributes) |
| `OTEL_EXPORTER_OTLP_ENDPOINT` | http://localhost:4317  | OTLP collector; also `_TRACES_ENDPOINT`, `_HEADERS`, `_INSECURE`, `_CERTIFICATE`, `_TIMEOUT` (read by the SDK) |
| `OTEL_EXPORTER_OTLP_PROTOCOL` | grpc                   | `grpc` (installed); `http/protobuf` needs opentelemetry-exporter-otlp-proto-http |
| `OTEL_TRACES_SAMPLER` / `_ARG` | parentbased_always_on | sampling (SDK); `OTEL_BSP_*` tune the batching; `OTEL_SDK_DISABLED=true`: off |
| `OTEL_PROPAGATORS`            | tracecontext,baggage   | how the trace context travels in the gRPC metadata (W3C `traceparent`) |
"""

from __future__ import annotations

import math
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
    store_url: str | None = None  # None: file://<store_dir> (store_location)
    events_url: str | None = None
    events_stream: str = "GHOSTLY_BUCKET_EVENTS"
    events_subject: str = "ghostly.bucket.events"
    events_consumer: str = "ghostly-ingest"
    events_max_deliver: int = 5
    events_retry_delay_s: float = 1.0
    cache_max_bytes: int = 1 << 30
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    max_message_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = 256 * 1024 * 1024
    event_secret: str | None = None
    # Passwords `ghostly migrate --set-role-passwords` gives the per-service roles (unset: kept).
    role_passwords: dict[str, str] = field(default_factory=dict)
    device_timezone: str = "UTC"
    ingest_workers: int = 0
    ingest_claim_lease_s: float = 60.0
    ingest_sweep_grace_s: float = 3600.0
    jit_signal_memory_bytes: int = 256 << 20
    jit_payload_memory_bytes: int = 64 << 20
    analysis_memory_budget_mb: int = 2048
    jit_cold_computations: int = 2
    export_session_concurrency: int = 16
    db_pool_min: int = 1
    db_pool_max: int = 10
    health_interval_s: float = 2.0
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    event_loop: str = "uvloop"
    auth: AuthSettings = field(default_factory=AuthSettings)
    tls: TlsSettings = field(default_factory=lambda: TlsSettings())

    def port(self, service: str) -> int:
        return self.ports[service]

    @property
    def store_location(self) -> str:
        """GHOSTLY_STORE_URL, else file://<GHOSTLY_STORE_DIR> (what libs.storage.open_store takes)."""
        return self.store_url or f"file://{self.store_dir}"

    @property
    def analysis_memory_budget_bytes(self) -> int:
        """GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB (MiB) in bytes (0 = no limit)."""
        return self.analysis_memory_budget_mb << 20

    def metrics_port(self, service: str) -> int:
        """Port of the service's /metrics endpoint (0 = no endpoint)."""
        return self.metrics_ports.get(service, 0)

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    def target(self, service: str) -> str:
        """Address a client uses to reach `service` (another host in a deployment)."""
        return self.targets.get(service) or f"127.0.0.1:{self.ports[service]}"

    def with_database(self, url: str) -> Config:
        """Same config pointed at another database (used by the embedded default)."""
        return replace(self, database_url=url, statistics_database_url=self.statistics_database_url or url)


class ConfigError(ValueError):
    """Settings that are not allowed, all of them at once: `problems` has one line per variable,
    each "NAME='value' is not allowed: <what is allowed>"."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} settings are not allowed:\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(message)


class _Refused(ValueError):
    """Raised by a parser: its message says what is allowed."""


# -- Parsers: text -> value, or _Refused("what is allowed"). ----------------------------------


def _integer(lo: int | None = None, hi: int | None = None, note: str = ""):
    if lo is not None and hi is not None:
        allowed = f"an integer from {lo} to {hi}"
    elif lo is not None:
        allowed = f"an integer >= {lo}"
    else:
        allowed = "an integer"
    allowed += f" ({note})" if note else ""

    def parse(text: str) -> int:
        try:
            n = int(text.strip())
        except ValueError:
            raise _Refused(allowed) from None
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            raise _Refused(allowed)
        return n

    return parse


def _number(lo: float, *, inclusive: bool, note: str = ""):
    allowed = f"a number {'>=' if inclusive else '>'} {lo:g}" + (f" ({note})" if note else "")

    def parse(text: str) -> float:
        try:
            x = float(text.strip())
        except ValueError:
            raise _Refused(allowed) from None
        if not math.isfinite(x) or x < lo or (x == lo and not inclusive):
            raise _Refused(allowed)
        return x

    return parse


def _choice(*options: str, normalise=str.lower):
    allowed = "one of " + ", ".join(options)

    def parse(text: str) -> str:
        value = normalise(text.strip())
        if value not in options:
            raise _Refused(allowed)
        return value

    return parse


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _boolean(text: str) -> bool:
    """For on/off settings: 1/true/yes/on or 0/false/no/off (any case)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _Refused("a boolean: one of " + ", ".join(_TRUE + _FALSE))


def _text(text: str) -> str:
    """Free text (secrets, issuer, audience): anything non-empty, kept as given."""
    return text


def _readable_file(text: str) -> Path:
    allowed = "a readable file"
    path = Path(text.strip())
    if "\0" in text or not path.is_file():
        raise _Refused(allowed)
    return path


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("none", "require"):
        raise _Refused("one of none, require")
    return value == "require"


def _directory(text: str) -> Path:
    allowed = "a directory path"
    value = text.strip()
    if "\0" in value:
        raise _Refused(allowed)
    path = Path(value)
    try:
        not_a_directory = path.exists() and not path.is_dir()
    except OSError:  # cannot be looked at from here (permissions): left to its user to report
        not_a_directory = False
    if not_a_directory:
        raise _Refused(f"{allowed}; this one exists and is not a directory")
    return path


def _host(text: str) -> str:
    value = text.strip()
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise _Refused("a host name or IP address to bind, e.g. 127.0.0.1, 0.0.0.0 or ::")
    return value


_TARGET_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


def _address(text: str) -> str:
    """host:port (a port from 1 to 65535), or a gRPC target URI (dns:///host:port, unix:/path)."""
    value = text.strip()
    allowed = "host:port with a port from 1 to 65535, or a gRPC target such as dns:///host:port"
    if value.startswith(_TARGET_SCHEMES):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or any(c.isspace() for c in value) or "/" in value:
        raise _Refused(allowed)
    try:
        if not 1 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise _Refused(allowed) from None
    return value


def _postgres_url(text: str) -> str:
    value = text.strip()
    scheme, sep, _rest = value.partition("://")
    if not sep or scheme.lower() not in ("postgres", "postgresql") or any(c.isspace() for c in value):
        raise _Refused("a PostgreSQL URL: postgresql://user:password@host:port/database (or postgres://...)")
    return value


def _store_url(text: str) -> str:
    value = text.strip()
    allowed = "file:///directory or s3://bucket/prefix (bucket: 3-63 of a-z 0-9 . -)"
    if value.startswith("file://") and len(value) > len("file://") and "\0" not in value:
        return value
    if value.startswith("s3://"):
        from libs.storage.s3 import parse_s3_url

        try:
            parse_s3_url(value)
        except Exception:  # noqa: BLE001 - InvalidArgument: what is wrong is in `allowed`
            raise _Refused(allowed) from None
        return value
    raise _Refused(allowed)


def _nats_urls(text: str) -> str:
    value = text.strip()
    allowed = "nats://host:port (or tls://host:port), several comma-separated"
    for url in value.split(","):
        scheme, sep, rest = url.strip().partition("://")
        if not sep or scheme not in ("nats", "tls") or not rest or any(c.isspace() for c in rest):
            raise _Refused(allowed)
    return value


def _subject(text: str) -> str:
    value = text.strip()
    if (
        not value
        or any(c.isspace() or c in "*>" for c in value)
        or value.startswith(".")
        or value.endswith(".")
        or ".." in value
    ):
        raise _Refused("a NATS subject without wildcards, e.g. ghostly.bucket.events")
    return value


def _name(text: str) -> str:
    value = text.strip()
    if not value or not all(c.isalnum() or c in "-_" for c in value):
        raise _Refused("a name of letters, digits, - and _")
    return value


def _timezone(text: str) -> str:
    from zoneinfo import ZoneInfo

    value = text.strip()
    try:
        ZoneInfo(value)
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise _Refused("an IANA time zone name, e.g. UTC or Europe/Brussels") from None
    return value


def _public_key(text: str) -> str:
    if text.startswith("@") and not Path(text[1:].strip()).is_file():
        raise _Refused("a PEM public key, or @/path/to/key.pem naming an existing file")
    return text


_PORT = _integer(1, 65535)
_PORT_OR_OFF = _integer(0, 65535, "0 = no endpoint")
_GRPC_MAX = (1 << 31) - 1  # gRPC channel arguments are 32-bit integers


# Per-service database roles (migration 010) -> the variable holding the password to give it.
ROLE_PASSWORDS = {
    "ghostly_ingest": "GHOSTLY_INGEST_DB_PASSWORD",
    "ghostly_statistics": "GHOSTLY_STATISTICS_DB_PASSWORD",
    "ghostly_jit_signal": "GHOSTLY_JIT_SIGNAL_DB_PASSWORD",
    "ghostly_export": "GHOSTLY_EXPORT_DB_PASSWORD",
}

# Scalar settings: field -> (environment variable, parser). Unset or empty: the field's default
# (Config / AuthSettings above), so every default is written once.
_SETTINGS = {
    "cache_max_bytes": ("GHOSTLY_CACHE_MAX_BYTES", _integer(0, note="0 = nothing kept on disk")),
    "host": ("GHOSTLY_HOST", _host),
    "max_message_bytes": ("GHOSTLY_MAX_MESSAGE_BYTES", _integer(1024, _GRPC_MAX)),
    "max_upload_bytes": ("GHOSTLY_MAX_UPLOAD_BYTES", _integer(1)),
    "event_secret": ("GHOSTLY_EVENT_SECRET", _text),
    "store_url": ("GHOSTLY_STORE_URL", _store_url),
    "events_url": ("GHOSTLY_EVENTS_URL", _nats_urls),
    "events_stream": ("GHOSTLY_EVENTS_STREAM", _name),
    "events_subject": ("GHOSTLY_EVENTS_SUBJECT", _subject),
    "events_consumer": ("GHOSTLY_EVENTS_CONSUMER", _name),
    "events_max_deliver": ("GHOSTLY_EVENTS_MAX_DELIVER", _integer(1)),
    "events_retry_delay_s": ("GHOSTLY_EVENTS_RETRY_DELAY_S", _number(0, inclusive=True, note="seconds")),
    "device_timezone": ("GHOSTLY_DEVICE_TIMEZONE", _timezone),
    "ingest_workers": ("GHOSTLY_INGEST_WORKERS", _integer(0, note="0 = number of CPUs")),
    "ingest_claim_lease_s": ("GHOSTLY_INGEST_CLAIM_LEASE_S", _number(0, inclusive=False, note="seconds")),
    "ingest_sweep_grace_s": ("GHOSTLY_INGEST_SWEEP_GRACE_S", _number(0, inclusive=True, note="seconds")),
    "jit_signal_memory_bytes": ("GHOSTLY_JIT_SIGNAL_MEMORY_BYTES", _integer(0, note="0 = nothing kept")),
    "jit_payload_memory_bytes": ("GHOSTLY_JIT_PAYLOAD_MEMORY_BYTES", _integer(0, note="0 = nothing kept")),
    "analysis_memory_budget_mb": ("GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB", _integer(0, note="MiB, 0 = no limit")),
    "jit_cold_computations": ("GHOSTLY_JIT_COLD_COMPUTATIONS", _integer(1)),
    "export_session_concurrency": ("GHOSTLY_EXPORT_SESSION_CONCURRENCY", _integer(1)),
    "db_pool_min": ("GHOSTLY_DB_POOL_MIN", _integer(0)),
    "db_pool_max": ("GHOSTLY_DB_POOL_MAX", _integer(1)),
    "health_interval_s": ("GHOSTLY_HEALTH_INTERVAL_S", _number(0, inclusive=False, note="seconds")),
    "shutdown_grace_s": ("GHOSTLY_SHUTDOWN_GRACE_S", _number(0, inclusive=True, note="seconds")),
    "log_level": ("GHOSTLY_LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", normalise=str.upper)),
    "event_loop": ("GHOSTLY_EVENT_LOOP", _choice("uvloop", "asyncio")),
}
_TLS_SETTINGS = {
    "cert_file": ("GHOSTLY_TLS_CERT", _readable_file),
    "key_file": ("GHOSTLY_TLS_KEY", _readable_file),
    "ca_file": ("GHOSTLY_TLS_CA", _readable_file),
    "client_auth": ("GHOSTLY_TLS_CLIENT_AUTH", _on_off),
    "client_cert_file": ("GHOSTLY_TLS_CLIENT_CERT", _readable_file),
    "client_key_file": ("GHOSTLY_TLS_CLIENT_KEY", _readable_file),
}

_AUTH_SETTINGS = {
    "mode": ("GHOSTLY_AUTH_MODE", _choice("dev", "jwt")),
    "algorithm": ("GHOSTLY_JWT_ALGORITHM", _choice("HS256", "RS256", normalise=str.upper)),
    "secret": ("GHOSTLY_JWT_SECRET", _text),
    "public_key": ("GHOSTLY_JWT_PUBLIC_KEY", _public_key),
    "issuer": ("GHOSTLY_JWT_ISSUER", _text),
    "audience": ("GHOSTLY_JWT_AUDIENCE", _text),
}
# Read where they are used (libs.db.embedded, libs.emg.analysis, libs.auth), checked here too so
# that a bad value is refused at start-up like the others.
_CHECKED_ONLY = {
    "GHOSTLY_PGDATA": _directory,
    "GHOSTLY_PG_PORT": _PORT,
    "GHOSTLY_PG_BIN": _directory,
    "GHOSTLY_NATS_PORT": _PORT,
    "GHOSTLY_NATS_BIN": _readable_file,
    "EMG_ANALYSIS_THREADS": _integer(1),
    "GHOSTLY_TOKEN": _text,
}


def _shown(var: str, value: str) -> str:
    """The value as an error message shows it: a URL's password is masked."""
    if var.endswith("DATABASE_URL"):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            if parts.password:
                value = value.replace(f":{parts.password}@", ":***@", 1)
        except ValueError:
            pass
    return repr(value)


class _Reader:
    """Reads variables from `env`, collecting every refusal instead of stopping at the first."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.problems: list[str] = []
        self.refused: set[str] = set()

    def get(self, var: str, parse, default=None):
        text = self.env.get(var)
        if text is None or not text.strip():
            return default
        try:
            return parse(text)
        except _Refused as exc:
            self.problems.append(f"{var}={_shown(var, text)} is not allowed: {exc}")
            self.refused.add(var)
            return default

    def table(self, table: dict) -> dict:
        out = {}
        for name, (var, parse) in table.items():
            value = self.get(var, parse)
            if value is not None:
                out[name] = value
        return out


def load(env: dict[str, str] | None = None) -> Config:
    """The configuration from `env` (default: the process environment). Every variable is
    checked; ConfigError lists all the values that are not allowed."""
    env = dict(os.environ if env is None else env)
    read = _Reader(env)
    data_dir = read.get("GHOSTLY_DATA_DIR", _directory, PROJECT_ROOT / "var")
    db = read.get("DATABASE_URL", _postgres_url)
    statistics_db = read.get("STATISTICS_DATABASE_URL", _postgres_url, db)
    store_dir = read.get("GHOSTLY_STORE_DIR", _directory, data_dir / "c3d-store")
    cache_dir = read.get("GHOSTLY_CACHE_DIR", _directory, data_dir / "signal-cache")
    ports = {name: read.get(var, _PORT, default) for name, (var, default) in SERVICE_PORTS.items()}
    metrics_ports = {name: read.get(var, _PORT_OR_OFF, default) for name, (var, default) in METRICS_PORTS.items()}
    targets = {}
    for name in SERVICE_PORTS:
        address = read.get(f"GHOSTLY_{name.upper()}_ADDRESS", _address)
        if address:
            targets[name] = address
    role_passwords = {}
    for role, var in ROLE_PASSWORDS.items():
        pw = read.get(var, _text)
        if pw:
            role_passwords[role] = pw
    auth = read.table(_AUTH_SETTINGS)
    tls = read.table(_TLS_SETTINGS)
    for a, b in (("GHOSTLY_TLS_CERT", "GHOSTLY_TLS_KEY"), ("GHOSTLY_TLS_CLIENT_CERT", "GHOSTLY_TLS_CLIENT_KEY")):
        if bool((env.get(a) or "").strip()) != bool((env.get(b) or "").strip()):
            read.problems.append(f"{a} and {b} must be set together")
    if tls.get("client_auth") and not tls.get("ca_file"):
        read.problems.append("GHOSTLY_TLS_CLIENT_AUTH=require needs GHOSTLY_TLS_CA (the CA of the client certificates)")
    if tls.get("client_auth") and not tls.get("cert_file"):
        read.problems.append("GHOSTLY_TLS_CLIENT_AUTH=require needs the server's GHOSTLY_TLS_CERT and GHOSTLY_TLS_KEY")
    settings = read.table(_SETTINGS)
    for var, parse in _CHECKED_ONLY.items():
        read.get(var, parse)
    lo = settings.get("db_pool_min", Config.db_pool_min)
    hi = settings.get("db_pool_max", Config.db_pool_max)
    if lo > hi and "GHOSTLY_DB_POOL_MAX" not in read.refused:  # (then MIN was given: default 1)
        read.problems.append(
            f"GHOSTLY_DB_POOL_MIN={env['GHOSTLY_DB_POOL_MIN'].strip()!r} is not allowed: "
            f"at most GHOSTLY_DB_POOL_MAX ({hi})"
        )
    if read.problems:
        raise ConfigError(read.problems)
    return Config(
        database_url=db,
        statistics_database_url=statistics_db,
        data_dir=data_dir,
        store_dir=store_dir,
        cache_dir=cache_dir,
        ports=ports,
        metrics_ports=metrics_ports,
        targets=targets,
        role_passwords=role_passwords,
        auth=AuthSettings(**auth),
        tls=TlsSettings(**tls),
        **settings,
    )


@dataclass(frozen=True)
class TlsSettings:
    """gRPC transport security (libs/tls.py). Servers: a certificate and key (TLS on every
    port); with client_auth, a client certificate signed by ``ca_file`` is required (mutual TLS).
    Clients (export's downstream calls, the CLI, the health probe): verify servers with
    ``ca_file``; present ``client_cert_file``/``client_key_file`` for mutual TLS."""

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    client_auth: bool = False
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    @property
    def server_enabled(self) -> bool:
        return self.cert_file is not None

    @property
    def client_enabled(self) -> bool:
        return self.ca_file is not None
