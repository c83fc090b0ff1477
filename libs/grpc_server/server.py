"""Start a service: gRPC aio server + database pool + health + reflection + graceful stop.

A service module only describes itself with a ServiceSpec (its name, the proto services it
implements, and a `register` callback adding servicers); everything operational lives here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from libs import auth, tls
from libs.config import Config
from libs.db.pool import create_pool
from libs.grpc_server import metrics
from libs.grpc_server.interceptor import ErrorAndLoggingInterceptor, flush_access_log
from libs.storage import collect_opened

log = logging.getLogger("ghostly.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServiceContext:
    """What a servicer gets: configuration, the database pool, and clean-up hooks."""

    config: Config
    pool: asyncpg.Pool | None
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The content stores the service opened while registering (libs.storage.open_store): the
    # health probe checks them next to the database.
    stores: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # "ingest", "statistics", "jit_signal", "export"
    full_names: tuple[str, ...]  # proto service names, e.g. ghostly.ingest.v1.IngestService
    register: Callable[[grpc.aio.Server, ServiceContext], Awaitable[None]]
    # Method name -> roles allowed to call it (libs.auth.ROLES); unlisted: every role.
    permissions: dict[str, frozenset[str]] = field(default_factory=dict)
    # The DSN the service's pool connects with (e.g. a read-only role or a read replica).
    dsn: Callable[[Config], str | None] = lambda config: config.database_url
    # Extra asyncpg pool options (e.g. a cheaper `reset` for a read-only service).
    pool_options: dict[str, Any] = field(default_factory=dict)


def server_options(config: Config) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


class RunningService:
    def __init__(
        self,
        spec: ServiceSpec,
        server: grpc.aio.Server,
        port: int,
        health_servicer: health.aio.HealthServicer,
        context: ServiceContext,
        owns_pool: bool,
    ):
        self.spec, self.server, self.port = spec, server, port
        self.health, self.context, self._owns_pool = health_servicer, context, owns_pool
        self._monitor: asyncio.Task | None = None
        self.serving: bool | None = None
        self.health_detail: str | None = None  # why it is NOT_SERVING (None while SERVING)
        self.metrics: metrics.MetricsEndpoint | None = None  # the /metrics endpoint, if any

    @property
    def address(self) -> str:
        return f"{self.context.config.host}:{self.port}"

    async def set_serving(self, ok: bool, detail: str | None = None) -> None:
        changed = ok != self.serving or (not ok and detail != self.health_detail)
        self.health_detail = None if ok else detail
        if not changed:
            return
        if ok != self.serving:
            self.serving = ok
            metrics.SERVING.labels(self.spec.name).set(1 if ok else 0)
            status = SERVING if ok else NOT_SERVING
            for name in ("", *self.spec.full_names):
                await self.health.set(name, status)
        log.log(
            logging.INFO if ok else logging.WARNING,
            "health changed",
            extra={"fields": {"service": self.spec.name, "serving": ok, "reason": self.health_detail}},
        )

    async def probe(self) -> str | None:
        """None when the service can serve, else why not: the database first, then each
        content store it uses."""
        if not await self.probe_database():
            return "database unreachable"
        return await self.probe_stores()

    async def probe_stores(self) -> str | None:
        for store in self.context.stores:
            try:
                async with asyncio.timeout(max(1.0, self.context.config.health_interval_s)):
                    problem = await store.check()
            except TimeoutError:
                problem = "content store did not answer its health probe in time"
            except Exception as exc:  # noqa: BLE001 - any failure means "not serving"
                problem = f"content store health probe failed: {exc.__class__.__name__}: {exc}"
            if problem:
                return problem
        return None

    async def update_health(self) -> None:
        problem = await self.probe()
        await self.set_serving(problem is None, problem)

    async def probe_database(self) -> bool:
        pool = self.context.pool
        if pool is None:
            return True
        try:
            async with asyncio.timeout(max(1.0, self.context.config.health_interval_s)):
                async with pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not serving"
            # The database restarted or went away: the pool's idle connections are broken
            # too. Expire them all, so the first RPCs after recovery get fresh connections
            # instead of failing one by one on dead sockets.
            await pool.expire_connections()
            return False

    async def _monitor_loop(self) -> None:
        while True:
            await self.update_health()
            await asyncio.sleep(self.context.config.health_interval_s)

    def start_monitor(self) -> None:
        self._monitor = asyncio.create_task(self._monitor_loop(), name=f"{self.spec.name}-health")

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING (load balancers stop routing), let in-flight RPCs finish
        within the grace period, then cancel the rest and release resources."""
        if self._monitor:
            self._monitor.cancel()
            try:
                await self._monitor
            except asyncio.CancelledError:
                pass
        await self.health.enter_graceful_shutdown()
        grace = self.context.config.shutdown_grace_s if grace is None else grace
        try:
            await self.server.stop(grace)
            for hook in reversed(self.context.on_stop):
                await hook()
            if self._owns_pool and self.context.pool is not None:
                await self.context.pool.close()
        finally:
            flush_access_log()  # the access lines of the drained calls
            if self.metrics is not None:
                self.metrics.release()  # after the drain: the last scrape sees the final counts
                self.metrics = None


async def start_service(
    spec: ServiceSpec,
    config: Config,
    *,
    port: int | None = None,
    pool: asyncpg.Pool | None = None,
    metrics_port: int | None = None,
) -> RunningService:
    """Start `spec` on config.host:port (port 0 = any free port). Uses `pool` if given.

    `metrics_port`: where /metrics is served (None = config, GHOSTLY_<NAME>_METRICS_PORT;
    0 = no endpoint; metrics are recorded either way)."""
    owns_pool = pool is None
    dsn = spec.dsn(config)
    if pool is None and dsn:
        pool = await create_pool(
            dsn,
            min_size=config.db_pool_min,
            max_size=config.db_pool_max,
            application_name=f"ghostly-{spec.name}",
            **spec.pool_options,
        )
    context = ServiceContext(config=config, pool=pool)
    expire = pool.expire_connections if pool is not None else None
    interceptor = ErrorAndLoggingInterceptor(spec.name, expire, auth.Authenticator(config.auth), spec.permissions)
    server = grpc.aio.server(interceptors=[interceptor], options=server_options(config))
    with collect_opened() as stores:
        await spec.register(server, context)
    context.stores.extend(stores)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*spec.full_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    wanted = config.port(spec.name) if port is None else port
    creds = tls.server_credentials(config.tls)
    address = f"{config.host}:{wanted}"
    bound = server.add_secure_port(address, creds) if creds is not None else server.add_insecure_port(address)
    if bound == 0:
        raise RuntimeError(f"{spec.name}: cannot bind {config.host}:{wanted}")
    await server.start()
    running = RunningService(spec, server, bound, health_servicer, context, owns_pool)
    await running.update_health()
    running.start_monitor()
    mport = config.metrics_port(spec.name) if metrics_port is None else metrics_port
    running.metrics = metrics.open_endpoint(config.host, mport)
    log.info(
        "service started",
        extra={
            "fields": {
                "service": spec.name,
                "address": running.address,
                "metrics": running.metrics.url if running.metrics else None,
            }
        },
    )
    return running


async def serve(spec: ServiceSpec, config: Config) -> None:
    """Run until SIGTERM/SIGINT, then drain gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before starting: the server reports SERVING inside start_service, and a SIGTERM sent as
    # soon as it does must drain it, not kill the process.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_service(spec, config)
    await stop.wait()
    log.info("shutting down", extra={"fields": {"service": spec.name}})
    await running.stop()
