"""Server interceptor: maps domain errors to gRPC status codes, logs one line per RPC,
records its Prometheus metrics (libs/grpc_server/metrics.py) and, when tracing is on, its
OpenTelemetry server span (libs/tracing.py; the access line then carries its trace_id).

Every RPC gets a request id (the caller's `x-request-id` metadata, or a new one), echoed in
the trailing metadata and present in every log line written while it runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import grpc

from libs import auth, errors, tracing
from libs.grpc_server import metrics
from libs.logs import REQUEST_ID

log = logging.getLogger("ghostly.rpc")

# The per-RPC access lines are written in batches, at most ACCESS_LOG_DELAY_S after the call
# ended (or as soon as ACCESS_LOG_BATCH lines wait), not inline: formatting and writing a line
# costs about as much CPU as a statistics point read's own Python work, and this single-threaded
# server would spend it on the critical path of nearly every call. Lines keep their order;
# RunningService.stop() writes what is still waiting.
ACCESS_LOG_DELAY_S = 0.01
ACCESS_LOG_BATCH = 256
_pending: list[tuple[int, dict]] = []
_flush_handle: asyncio.TimerHandle | None = None
_flush_loop: asyncio.AbstractEventLoop | None = None  # the loop _flush_handle belongs to


def flush_access_log() -> None:
    """Write the access lines still waiting."""
    global _flush_handle
    if _flush_handle is not None:
        _flush_handle.cancel()
        _flush_handle = None
    batch = _pending[:]
    _pending.clear()
    for level, fields in batch:
        log.log(level, "rpc", extra={"fields": fields})


def _access_log(level: int, fields: dict) -> None:
    global _flush_handle, _flush_loop
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a generator finalised at interpreter exit): now
        loop = None
    if _flush_handle is not None and _flush_loop is not loop:
        flush_access_log()  # lines left by a loop that has gone (tests run several)
    _pending.append((level, fields))
    if loop is None or len(_pending) >= ACCESS_LOG_BATCH:
        flush_access_log()
    elif _flush_handle is None:
        _flush_handle, _flush_loop = loop.call_later(ACCESS_LOG_DELAY_S, flush_access_log), loop


# Errors that mean the database connection itself is gone (not a bad query). OperatorIntervention
# covers 57P01 admin shutdown / 57P02 crash shutdown / 57P03 cannot connect now (the server is
# restarting); InternalClientError: asyncpg found the connection mid-operation, seen when the
# server went away during a query; the connection is unusable, a retry on a fresh one works.
# Socket failures (refused, reset, broken pipe, unknown host) are connection failures too: the
# database is the only server a handler opens sockets to. Any other OSError is one only when the
# database driver raised it (is_connection_error): a content-store or file error is not.
CONNECTION_ERRORS = (
    ConnectionError,
    socket.gaierror,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InternalClientError,
)

# Exception class -> status, first match wins. Then an OSError (TimeoutError included) that is
# not in this table: see status_for.
STATUS_OF: list[tuple[type[BaseException] | tuple[type[BaseException], ...], grpc.StatusCode]] = [
    # The content store failed (libs/storage wraps its OSErrors): never "database unavailable".
    # An immutable path holding other bytes is the store's state; a full disk is the documented
    # case of RESOURCE_EXHAUSTED; any other store failure is the server's (INTERNAL, with the
    # store's message).
    (errors.StoreConflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StoreFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StoreError, grpc.StatusCode.INTERNAL),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DataLoss, grpc.StatusCode.DATA_LOSS),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    # The database went away mid-request (CONNECTION_ERRORS), or refuses more clients: retryable.
    (CONNECTION_ERRORS, grpc.StatusCode.UNAVAILABLE),
    (asyncpg.TooManyConnectionsError, grpc.StatusCode.UNAVAILABLE),
    # The generated servicer base raises this for RPCs a service does not implement.
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
]


# A request string PostgreSQL cannot hold (a NUL character, 22021/22P05): the caller's input.
_BAD_TEXT = (asyncpg.exceptions.CharacterNotInRepertoireError, asyncpg.exceptions.UntranslatableCharacterError)


def raised_by_database_driver(exc: BaseException) -> bool:
    """True when asyncpg raised `exc` (or it passed through asyncpg: connect, acquire, query)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("asyncpg"):
            return True
        tb = tb.tb_next
    return False


def status_for(exc: BaseException, deadline_passed: bool = False) -> tuple[grpc.StatusCode, str]:
    """The status and message of an exception. `deadline_passed`: the call's deadline has
    expired (a TimeoutError is then DEADLINE_EXCEEDED whatever raised it)."""
    if isinstance(exc, _BAD_TEXT):
        return grpc.StatusCode.INVALID_ARGUMENT, f"a text field holds a character that cannot be stored: {exc}"
    kind = errors.foreign_kind(exc)  # e.g. the EMG core's errors (libs/errors.py FOREIGN)
    for cls, code in STATUS_OF:
        if isinstance(exc, cls) or (kind is not None and isinstance(cls, type) and issubclass(kind, cls)):
            if code is grpc.StatusCode.UNAVAILABLE and kind is None and not isinstance(exc, errors.DomainError):
                return code, f"database unavailable: {exc.__class__.__name__}: {exc}"
            return code, str(exc) or exc.__class__.__name__
    if isinstance(exc, OSError):
        from_database = raised_by_database_driver(exc)
        if isinstance(exc, TimeoutError) and (deadline_passed or not from_database):
            # A deadline or timeout of the call's own (e.g. a downstream call's deadline).
            return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "deadline exceeded"
        if from_database:
            # Connecting to or waiting for the database failed (e.g. a connect timeout).
            return grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc.__class__.__name__}: {exc}"
    # Anything else, other OSErrors included (a file the handler opened itself): INTERNAL.
    return grpc.StatusCode.INTERNAL, ""


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean the database connection itself is gone: CONNECTION_ERRORS, or
    an OSError (a connect timeout...) raised by the database driver. Never a DomainError (e.g. a
    StoreError, even though it may also be an OSError)."""
    if isinstance(exc, errors.DomainError):
        return False
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    return isinstance(exc, OSError) and raised_by_database_driver(exc)


def _request_id(metadata) -> str:
    for key, value in metadata:
        if key == "x-request-id" and value:
            return str(value)[:128]
    return uuid.uuid4().hex


class _Call:
    """Book-keeping of one RPC: request id, timing, final status, and the log line."""

    def __init__(
        self,
        service: str,
        method: str,
        short_method: str,
        context: grpc.aio.ServicerContext,
        on_connection_error: Callable[[], Awaitable[None]] | None = None,
    ):
        self.service, self.method, self.short_method, self.context = service, method, short_method, context
        self.on_connection_error = on_connection_error
        self.metadata = context.invocation_metadata() or ()  # (a new tuple on every read)
        self.request_id = _request_id(self.metadata)
        self.token = REQUEST_ID.set(self.request_id)
        self.started = time.perf_counter()
        remaining = context.time_remaining()
        # Absolute deadline, to tell a passed deadline from a client cancel afterwards.
        self.deadline = None if remaining is None else self.started + remaining
        self._finished = False
        metrics.rpc_started(service, self.short_method)
        # Read now: after a cancelled stream the call object is gone and peer() would crash.
        self.peer = context.peer()
        self.code = grpc.StatusCode.OK
        self.error = ""
        self.role = ""
        self._identity_token: contextvars.Token[auth.Identity | None] | None = None
        # Tracing off (the default): one global read, nothing else.
        self.span = None
        if tracing.TRACER is not None:
            self.span, self._span_token = tracing.server_span(
                method, service, self.metadata, self.peer, self.request_id
            )
        try:
            context.set_trailing_metadata((("x-request-id", self.request_id),))
        except Exception:  # noqa: BLE001  # pragma: no cover - trailing metadata is best effort
            pass

    def authenticate(self, authenticator: auth.Authenticator | None, allowed: frozenset[str]) -> None:
        """Who is calling, and may they call this method (`allowed` roles)? (raises
        Unauthenticated / PermissionDenied, mapped like any domain error). Sets
        libs.auth.current()."""
        if authenticator is None:  # no identity is set: anything needing one is refused (fail closed)
            return
        identity = authenticator.authenticate(self.metadata)
        self.role = identity.role
        auth.authorize(identity, allowed, self.method)
        self._identity_token = auth.set_current(identity)

    async def fail(self, exc: BaseException) -> None:
        """Turn an exception into the RPC's status (re-raises the abort)."""
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            # The client went away or its deadline passed: nothing to answer; re-raise.
            self.cancelled()
            raise exc
        if isinstance(exc, grpc.aio.AbortError):
            code = self.context.code() if hasattr(self.context, "code") else None
            self.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            self.error = self.context.details() if hasattr(self.context, "details") else ""
            raise exc
        code, message = status_for(exc, self.deadline_passed())
        if self.on_connection_error is not None and is_connection_error(exc):
            # Broken or refused connection: drop the pool's idle connections too (they are
            # most likely broken the same way, e.g. after a database restart).
            try:
                await self.on_connection_error()
            except Exception:
                log.warning("could not expire database connections", exc_info=True)
        if code is grpc.StatusCode.INTERNAL:
            log.error("unhandled error in %s", self.method, exc_info=exc)
            if self.span is not None:
                self.span.record_exception(exc)
            # A store failure says what failed (its message names store-relative paths only);
            # anything else is not shown to the caller.
            message = (
                f"{message} (request id {self.request_id})"
                if isinstance(exc, errors.StoreError)
                else f"internal error (request id {self.request_id})"
            )
        self.code, self.error = code, message
        await self.context.abort(code, message)

    def deadline_passed(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline - 0.001

    def cancelled(self) -> None:
        self.code = grpc.StatusCode.DEADLINE_EXCEEDED if self.deadline_passed() else grpc.StatusCode.CANCELLED

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        elapsed = time.perf_counter() - self.started
        metrics.rpc_finished(self.service, self.short_method, self.code.name, elapsed)
        level = logging.ERROR if self.code is grpc.StatusCode.INTERNAL else logging.INFO
        if log.isEnabledFor(level):
            fields = {
                # Explicit: the line is written after this RPC's context (REQUEST_ID) is gone.
                "request_id": self.request_id,
                "service": self.service,
                "method": self.method,
                "status": self.code.name,
                "duration_ms": round(elapsed * 1000, 3),
                "peer": self.peer,
            }
            if self.role:
                fields["role"] = self.role
            if self.error:
                fields["error"] = self.error
            if self.span is not None:
                fields["trace_id"] = tracing.trace_id_hex(self.span)
            _access_log(level, fields)
        if self.span is not None:
            tracing.end_server_span(self.span, self._span_token, self.code.name, self.code.value[0], self.error)
        try:
            REQUEST_ID.reset(self.token)
        except ValueError:
            pass  # a closed stream generator may be finalised from another context
        if self._identity_token is not None:
            auth.reset_current(self._identity_token)


class ErrorAndLoggingInterceptor(grpc.aio.ServerInterceptor):
    """`on_connection_error`: awaited when an RPC failed because the database connection is
    gone (start_service passes the pool's expire_connections). `authenticator` and
    `permissions` (method name -> roles allowed; unlisted methods: every role) guard every RPC
    except health and reflection."""

    def __init__(
        self,
        service: str,
        on_connection_error: Callable[[], Awaitable[None]] | None = None,
        authenticator: auth.Authenticator | None = None,
        permissions: dict[str, frozenset[str]] | None = None,
    ):
        self.service = service
        self.on_connection_error = on_connection_error
        self.authenticator = authenticator
        self.permissions = permissions or {}
        self._wrapped: dict[str, tuple] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith("/grpc."):
            # Health and reflection: infrastructure, polled constantly; not wrapped or logged.
            return handler
        # The wrapped handler of a method never changes: build it once, not on every call.
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler):
        service, hook, authenticator = self.service, self.on_connection_error, self.authenticator
        short = method.rsplit("/", 1)[-1]
        allowed = self.permissions.get(short, auth.ALL_ROLES)

        def unary_response(behavior):
            async def wrapper(request, context):
                call = _Call(service, method, short, context, hook)
                try:
                    call.authenticate(authenticator, allowed)
                    return await behavior(request, context)
                except BaseException as exc:  # noqa: BLE001 - mapped, logged, re-raised
                    await call.fail(exc)
                finally:
                    call.finish()

            return wrapper

        def stream_response(behavior):
            async def wrapper(request, context):
                call = _Call(service, method, short, context, hook)
                try:
                    call.authenticate(authenticator, allowed)
                    async for item in behavior(request, context):
                        yield item
                except GeneratorExit:
                    # Closed by grpc after a cancel: no await is allowed here.
                    call.cancelled()
                    raise
                except BaseException as exc:  # noqa: BLE001 - CancelledError is re-raised
                    await call.fail(exc)
                finally:
                    call.finish()

            return wrapper

        kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kw)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kw)
        return handler
