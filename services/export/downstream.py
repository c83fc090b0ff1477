"""gRPC clients of the services an export reads from, with deadline and request-id propagation.

Every outgoing call gets
  * timeout = the incoming RPC's context.time_remaining() (DEFAULT_TIMEOUT_S when the caller
    set no deadline), so a caller's deadline bounds the whole fan-out;
  * metadata x-request-id = the incoming request id (libs.logs.REQUEST_ID, set by the
    interceptor), so one export can be followed through the logs of all three services;
  * with tracing on, a client span and the W3C `traceparent` of the current trace (the
    channels' interceptors, libs.tracing.client_interceptors): one trace across the services.
Downstream failures are turned into domain errors (libs/errors.py) with the service named.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc

from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from ghostly.jit_signal.v1 import jit_signal_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2 as spb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs import auth, errors, tracing
from libs.logs import REQUEST_ID
from libs.tls import aio_channel, channel_credentials

DEFAULT_TIMEOUT_S = 300.0


class DownstreamError(Exception):
    """A downstream failure with no better mapping (INTERNAL/UNKNOWN): reported as INTERNAL."""


_MAP = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.DATA_LOSS: errors.DataLoss,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
}


def translate(exc: grpc.aio.AioRpcError, service: str, address: str) -> Exception:
    code, details = exc.code(), exc.details() or ""
    if code in _MAP:
        return _MAP[code](f"{service}: {details}")
    if code is grpc.StatusCode.UNAVAILABLE:
        return errors.Unavailable(f"{service} service unavailable at {address}: {details}")
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return errors.Unavailable(f"{service} service at {address} does not implement this RPC yet: {details}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(f"deadline exceeded waiting for the {service} service at {address}")
    return DownstreamError(f"{service} service failed ({code.name}): {details}")


class CallOptions:
    """Timeout and metadata of outgoing calls, derived from the incoming RPC."""

    def __init__(self, context: grpc.aio.ServicerContext | None, default_timeout: float = DEFAULT_TIMEOUT_S):
        self.context = context
        self.default_timeout = default_timeout
        self.request_id = REQUEST_ID.get() or uuid.uuid4().hex
        # The caller's identity travels with every downstream call (row-level access applies).
        self.metadata = (("x-request-id", self.request_id), *auth.current().metadata())

    def timeout(self, what: str) -> float:
        remaining = self.context.time_remaining() if self.context is not None else None
        if remaining is None:
            return self.default_timeout
        if remaining <= 0:
            raise TimeoutError(f"deadline exceeded before calling {what}")
        return remaining


def _channel(address: str, tls_settings, options) -> grpc.aio.Channel:
    """libs.tls.aio_channel, plus the tracing interceptors when tracing is on."""
    interceptors = tracing.client_interceptors()
    if not interceptors:
        return aio_channel(address, tls_settings, options)
    creds = channel_credentials(tls_settings)
    if creds is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, creds, options=options, interceptors=interceptors)


class Downstream:
    """Long-lived channels to StatisticsService and JitSignalService."""

    def __init__(
        self, statistics_address: str, jit_signal_address: str, max_message_bytes: int = 4 << 20, tls_settings=None
    ):
        opts = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
        ]
        self.statistics_address = statistics_address
        self.jit_signal_address = jit_signal_address
        self._stats_channel = _channel(statistics_address, tls_settings, opts)
        self._jit_channel = _channel(jit_signal_address, tls_settings, opts)
        self.stats = statistics_pb2_grpc.StatisticsServiceStub(self._stats_channel)
        self.jit = jit_signal_pb2_grpc.JitSignalServiceStub(self._jit_channel)

    async def close(self) -> None:
        await self._stats_channel.close()
        await self._jit_channel.close()

    # -- statistics -------------------------------------------------------------------------
    async def _stats(self, method: str, request, call: CallOptions):
        try:
            return await getattr(self.stats, method)(
                request, timeout=call.timeout(f"statistics.{method}"), metadata=call.metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "statistics", self.statistics_address) from None

    async def get_session(self, session_id: str, call: CallOptions) -> spb.Session:
        return await self._stats("GetSession", spb.GetSessionRequest(session_id=session_id), call)

    async def list_sessions(self, request: spb.ListSessionsRequest, call: CallOptions) -> spb.ListSessionsResponse:
        return await self._stats("ListSessions", request, call)

    async def emg_statistics(
        self, session_id: str, channels: list[str], call: CallOptions
    ) -> spb.GetEmgStatisticsResponse:
        return await self._stats(
            "GetEmgStatistics", spb.GetEmgStatisticsRequest(session_id=session_id, channels=channels), call
        )

    async def performance(self, session_id: str, call: CallOptions) -> spb.PerformanceScore:
        return await self._stats("GetPerformanceScore", spb.SessionKey(session_id=session_id), call)

    async def batch_statistics(
        self, session_ids: list[str], channels: list[str], call: CallOptions
    ) -> spb.BatchGetSessionStatisticsResponse:
        return await self._stats(
            "BatchGetSessionStatistics",
            spb.BatchGetSessionStatisticsRequest(session_ids=session_ids, channels=channels),
            call,
        )

    async def bfr(self, session_id: str, call: CallOptions) -> spb.BfrMonitoring:
        return await self._stats("GetBfrMonitoring", spb.SessionKey(session_id=session_id), call)

    async def settings(self, session_id: str, call: CallOptions) -> spb.SessionSettings:
        return await self._stats("GetSessionSettings", spb.SessionKey(session_id=session_id), call)

    # -- jit signal -------------------------------------------------------------------------
    async def list_channels(self, session_id: str, call: CallOptions) -> jpb.ListChannelsResponse:
        try:
            return await self.jit.ListChannels(
                jpb.ListChannelsRequest(session_id=session_id),
                timeout=call.timeout("jit_signal.ListChannels"),
                metadata=call.metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "jit_signal", self.jit_signal_address) from None

    async def stream_signals(
        self, request: jpb.StreamSignalsRequest, call: CallOptions
    ) -> AsyncIterator[jpb.SignalChunk]:
        stream = self.jit.StreamSignals(
            request, timeout=call.timeout("jit_signal.StreamSignals"), metadata=call.metadata
        )
        try:
            async for chunk in stream:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "jit_signal", self.jit_signal_address) from None
        finally:
            stream.cancel()
