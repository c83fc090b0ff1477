"""OpenTelemetry tracing: a span for every RPC, its database queries and content-store calls,
one trace across the services (W3C `traceparent` in the gRPC metadata).

Off unless `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`; `none`, the default,
is off). When off nothing is hooked in at all: the server interceptor checks one module global
per RPC, pools keep asyncpg's own connection class, stores are not wrapped and channels get no
client interceptor; the OpenTelemetry SDK is not even imported. Set up once per process by the
service entry point (app/service_main.py -> setup); tests use install() / uninstall().

What is traced:
  * server spans, one per RPC (libs/grpc_server/interceptor.py: server_span / end_server_span),
    continuing the caller's trace when its metadata carries `traceparent`;
  * client spans for the calls a service makes to another one (client_interceptors(), used by
    services/export/downstream.py), which inject `traceparent` (the standard propagator,
    OTEL_PROPAGATORS: tracecontext,baggage by default);
  * database spans, one per statement (libs/db/pool.py gives the pool the connection class of
    traced_connection_class()), only inside a traced RPC: health probes and background work make
    no root spans;
  * content-store spans (traced_store(), applied by libs.storage.open_store): stat, exists,
    delete, read (local_path, while the object is held) and commit of an upload.

The standard variables configure the rest through the SDK: OTEL_SERVICE_NAME (default
ghostly-<service>), OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_ENDPOINT / _TRACES_ENDPOINT,
_HEADERS, _INSECURE, _CERTIFICATE, _TIMEOUT, OTEL_EXPORTER_OTLP_PROTOCOL (grpc, the default;
http/protobuf needs opentelemetry-exporter-otlp-proto-http), OTEL_TRACES_SAMPLER / _ARG,
OTEL_BSP_* (batching), OTEL_SDK_DISABLED=true (off whatever the exporter).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("ghostly.tracing")

EXPORTERS = ("none", "otlp", "console")

# The standard variables this module reads itself (the names of
# opentelemetry.sdk.environment_variables, not imported: tracing off imports no SDK); the SDK
# reads the others. They are OpenTelemetry's, not the project's settings: documented in
# libs/config.py next to its table, but not read by config.load().
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"

# The tracer of this process; None = tracing off (the only thing the hot path looks at).
TRACER: Any = None
_provider: Any = None
# The OpenTelemetry API names the hooks use, bound by install() (not imported while off).
context: Any = None
propagate: Any = None
trace: Any = None
SpanKind: Any = None
Status: Any = None
StatusCode: Any = None
_RUNTIME_CONTEXT: Any = None


def _bind_api() -> None:
    global context, propagate, trace, SpanKind, Status, StatusCode, _RUNTIME_CONTEXT
    import opentelemetry.context as context_mod
    from opentelemetry import propagate as propagate_mod
    from opentelemetry import trace as trace_mod

    context, propagate, trace = context_mod, propagate_mod, trace_mod
    SpanKind, Status, StatusCode = trace_mod.SpanKind, trace_mod.Status, trace_mod.StatusCode
    # (not context.detach: that logs an error when a closed stream generator is finalised from
    # another context, which the interceptor already tolerates)
    _RUNTIME_CONTEXT = context_mod._RUNTIME_CONTEXT


class TracingConfigError(ValueError):
    """An OTEL_* setting this process cannot honour (message names the variable)."""


def enabled() -> bool:
    return TRACER is not None


def install(provider) -> None:
    """Trace with `provider` (an opentelemetry.sdk.trace.TracerProvider) from now on. Only this
    project's instrumentation uses it; setup() also makes it the global provider."""
    global TRACER, _provider
    _bind_api()
    _provider = provider
    TRACER = provider.get_tracer("ghostly", schema_url="https://opentelemetry.io/schemas/1.26.0")


def uninstall() -> None:
    """Tracing off again (tests). Hooks already in place (traced pool connections, wrapped
    stores, client interceptors) become no-ops."""
    global TRACER, _provider
    TRACER, _provider = None, None


def _exporter_names(environ) -> list[str]:
    raw = (environ.get(OTEL_TRACES_EXPORTER) or "none").strip().lower()
    names = [n.strip() for n in raw.split(",") if n.strip()]
    bad = [n for n in names if n not in EXPORTERS]
    if bad:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={raw!r} is not allowed: a comma-separated list of {', '.join(EXPORTERS)}"
        )
    return [n for n in names if n != "none"]


def _otlp_exporter(environ):
    protocol = (
        (environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) or environ.get(OTEL_EXPORTER_OTLP_PROTOCOL) or "grpc")
        .strip()
        .lower()
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]  # optional package, not installed here
                OTLPSpanExporter,
            )
        except ImportError:
            raise TracingConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf needs the package "
                "opentelemetry-exporter-otlp-proto-http (grpc is built in)"
            ) from None
    else:
        raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not allowed: grpc or http/protobuf")
    return OTLPSpanExporter()  # endpoint, headers, TLS, timeout: the OTEL_EXPORTER_OTLP_* variables


def setup(service: str, environ=None) -> bool:
    """Set up tracing for this process from the OTEL_* variables; True when it is on. Raises
    TracingConfigError for a setting it cannot honour."""
    environ = os.environ if environ is None else environ
    if (environ.get(OTEL_SDK_DISABLED) or "").strip().lower() == "true":
        return False
    names = _exporter_names(environ)
    if not names:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporters = [_otlp_exporter(environ) if n == "otlp" else ConsoleSpanExporter() for n in names]
    name = (environ.get(OTEL_SERVICE_NAME) or "").strip() or f"ghostly-{service}"
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the sampler comes from
    # OTEL_TRACES_SAMPLER, the batching from OTEL_BSP_*.
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing on", extra={"fields": {"service": service, "service_name": name, "exporters": names}})
    return True


def shutdown() -> None:
    """Export what is still buffered (the SDK also does this at interpreter exit)."""
    if _provider is not None:
        _provider.shutdown()


# -- server side -----------------------------------------------------------------------------
# rpc.grpc.status_code values that make a server span an error (OpenTelemetry RPC conventions).
_SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})


def _carrier(metadata) -> dict[str, str]:
    return {key: value for key, value in metadata if isinstance(value, str)}


def server_span(method: str, service: str, metadata, peer: str, request_id: str):
    """Start the span of one incoming RPC (`method` = /pkg.Service/Method), child of the caller's
    span when its metadata has `traceparent`, and make it current. -> (span, token), for
    end_server_span. Only called when TRACER is set."""
    parent = propagate.extract(_carrier(metadata))
    rpc_service, _, rpc_method = method.lstrip("/").partition("/")
    span = TRACER.start_span(
        method.lstrip("/"),
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": rpc_service,
            "rpc.method": rpc_method,
            "network.peer.address": peer,
            "ghostly.service": service,
            "ghostly.request_id": request_id,
        },
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_server_span(span, token, code_name: str, code_value: int, error: str) -> None:
    span.set_attribute("rpc.grpc.status_code", code_value)
    if code_name in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, f"{code_name}: {error}" if error else code_name))
    span.end()
    try:
        _RUNTIME_CONTEXT.detach(token)
    except (ValueError, RuntimeError):  # another context, or already reset
        pass


def trace_id_hex(span) -> str:
    return format(span.get_span_context().trace_id, "032x")


# -- client side -----------------------------------------------------------------------------
def client_interceptors() -> list:
    """Interceptors for a grpc.aio channel to another service: a CLIENT span per call, and
    `traceparent` injected into its metadata. [] when tracing is off (nothing is added)."""
    if TRACER is None:
        return []
    unary_unary, unary_stream = _client_classes()
    return [unary_unary(), unary_stream()]


def _client_start(details):
    import grpc

    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    rpc_service, _, rpc_method = method.lstrip("/").partition("/")
    tracer = TRACER
    if tracer is None:  # switched off after the channel was made
        return None, details
    span = tracer.start_span(
        method.lstrip("/"),
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": rpc_method},
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    metadata = list(details.metadata or ())
    metadata.extend(carrier.items())
    details = grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )
    return span, details


def _client_end(span, code, details: str = "") -> None:
    import grpc

    if code is None:
        span.set_status(Status(StatusCode.ERROR, "CANCELLED"))
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.CANCELLED.value[0])
    else:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}" if details else code.name))
    span.end()


@functools.cache
def _client_classes():
    """The grpc.aio interceptor classes (built on first use: grpc is imported only then)."""
    import grpc

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, client_call_details, request):
            span, details = _client_start(client_call_details)
            if span is None:
                return await continuation(details, request)
            try:
                call = await continuation(details, request)
                await call  # the response (or the AioRpcError), so the span covers the call
            except grpc.aio.AioRpcError as exc:
                _client_end(span, exc.code(), exc.details() or "")
                raise
            except BaseException:  # cancelled
                _client_end(span, None)
                raise
            _client_end(span, grpc.StatusCode.OK)
            return call  # (done: the caller's await returns its response)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, client_call_details, request):
            span, details = _client_start(client_call_details)
            if span is None:
                return await continuation(details, request)
            try:
                call = await continuation(details, request)
            except BaseException:
                _client_end(span, None)
                raise
            # A stream ends when its caller has read it: end the span then (status read in a task,
            # the call's code() being a coroutine).
            call.add_done_callback(lambda c: _finish_stream(span, c))
            return call

    return UnaryUnary, UnaryStream


def _finish_stream(span, call) -> None:
    import asyncio

    async def finish():
        try:
            code, details = await call.code(), await call.details()
        except BaseException:  # noqa: BLE001 - a cancelled call has no status to read
            code, details = None, ""
        _client_end(span, code, details)

    try:
        task = asyncio.get_running_loop().create_task(finish())
    except RuntimeError:  # no loop any more: end it without a status
        span.end()
        return
    _finishing.add(task)  # (a strong reference until it ran)
    task.add_done_callback(_finishing.discard)


_finishing: set = set()


# -- database --------------------------------------------------------------------------------
# The asyncpg Connection methods that run a statement (the pool's proxy and Pool.fetch... call
# these; transactions' BEGIN/COMMIT go through execute). Prepared statements and cursors
# (unused by the services) are not traced.
DB_METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany")


@contextlib.contextmanager
def _db_span(conn, query: str) -> Iterator[None]:
    tracer = TRACER
    if tracer is None:
        yield
        return
    if not trace.get_current_span().is_recording():
        # Outside a traced RPC (health probe, start-up, background work): no root span; in an
        # RPC the sampler dropped: nothing to record either.
        yield
        return
    text = query if isinstance(query, str) else str(query)
    words = text.split(None, 1)
    operation = words[0].upper() if words else "postgresql"
    attributes: dict[str, Any] = {
        "db.system.name": "postgresql",
        "db.system": "postgresql",
        "db.operation.name": operation,
        "db.query.text": text[:2000],
    }
    params: Any = getattr(conn, "_params", None)
    if getattr(params, "database", None):
        attributes["db.namespace"] = params.database
    addr = getattr(conn, "_addr", None)
    if isinstance(addr, tuple) and len(addr) >= 2:
        attributes["server.address"], attributes["server.port"] = str(addr[0]), int(addr[1])
    span = tracer.start_span(operation, kind=SpanKind.CLIENT, attributes=attributes)
    try:
        yield
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.set_attribute("error.type", type(exc).__name__)
        raise
    finally:
        span.end()


_connection_classes: dict[type, type] = {}


def traced_connection_class(base: type) -> type:
    """A subclass of `base` (asyncpg.Connection or a subclass) whose DB_METHODS each record a
    CLIENT span, a child of the current span (none outside a traced RPC). libs/db/pool.py uses it
    as the pool's connection_class when tracing is on."""
    cls = _connection_classes.get(base)
    if cls is not None:
        return cls

    def traced(name: str):
        inner = getattr(base, name)

        async def method(self, query, *args, **kwargs):
            if TRACER is None:
                return await inner(self, query, *args, **kwargs)
            with _db_span(self, query):
                return await inner(self, query, *args, **kwargs)

        method.__name__ = method.__qualname__ = name
        method.__doc__ = inner.__doc__
        return method

    cls = type(f"Traced{base.__name__}", (base,), {name: traced(name) for name in DB_METHODS})
    _connection_classes[base] = cls
    return cls


# -- content store ---------------------------------------------------------------------------
@contextlib.contextmanager
def _store_span(name: str, path: str | None = None) -> Iterator[Any]:
    """A span for one store operation, only inside a traced (and sampled) RPC (else None)."""
    tracer = TRACER
    if tracer is None:
        yield None
        return
    if not trace.get_current_span().is_recording():  # (as _db_span)
        yield None
        return
    attributes = {"ghostly.store.operation": name.rsplit(".", 1)[-1]}
    if path is not None:
        attributes["ghostly.store.path"] = str(path)
    # Not made current: spans started while a local_path is held are not its children.
    span = tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
    try:
        yield span
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.set_attribute("error.type", type(exc).__name__)
        raise
    finally:
        span.end()


class TracedStore:
    """A ContentStore whose stat / exists / delete / local_path / staging commit make spans.
    Everything else (check, identity, sweep_staging, attributes) is the wrapped store's."""

    def __init__(self, store):
        self.wrapped = store

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"TracedStore({self.wrapped!r})"

    async def stat(self, path: str):
        with _store_span("store.stat", path) as span:
            obj = await self.wrapped.stat(path)
            if span is not None:
                span.set_attribute("ghostly.store.size_bytes", obj.size_bytes)
            return obj

    async def exists(self, path: str) -> bool:
        with _store_span("store.exists", path):
            return await self.wrapped.exists(path)

    async def delete(self, path: str) -> None:
        with _store_span("store.delete", path):
            return await self.wrapped.delete(path)

    def local_path(self, path: str):
        return _TracedLocalPath(self.wrapped, path)

    @contextlib.asynccontextmanager
    async def staging(self):
        async with self.wrapped.staging() as staging:
            yield _TracedStaging(staging)


class _TracedLocalPath:
    """store.read span around the wrapped store's local_path, ``with`` or ``async with``."""

    def __init__(self, store, path: str):
        self.store, self.path = store, path
        self._stack: contextlib.ExitStack | None = None
        self._astack: contextlib.AsyncExitStack | None = None

    def __enter__(self):
        with contextlib.ExitStack() as stack:
            stack.enter_context(_store_span("store.read", self.path))
            local = stack.enter_context(self.store.local_path(self.path))
            self._stack = stack.pop_all()
        return local

    def __exit__(self, *exc):
        stack, self._stack = self._stack, None
        assert stack is not None
        return stack.__exit__(*exc)

    async def __aenter__(self):
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(_store_span("store.read", self.path))
            local = await stack.enter_async_context(self.store.local_path(self.path))
            self._astack = stack.pop_all()
        return local

    async def __aexit__(self, *exc):
        stack, self._astack = self._astack, None
        assert stack is not None
        return await stack.__aexit__(*exc)


class _TracedStaging:
    def __init__(self, staging):
        self.wrapped = staging

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    async def commit(self, path: str):
        with _store_span("store.commit", path) as span:
            obj = await self.wrapped.commit(path)
            if span is not None:
                span.set_attribute("ghostly.store.size_bytes", obj.size_bytes)
            return obj


def traced_store(store):
    """`store` with spans for its operations when tracing is on; the store itself when off."""
    if TRACER is None or isinstance(store, TracedStore):
        return store
    return TracedStore(store)
