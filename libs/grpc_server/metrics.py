"""Prometheus metrics of the gRPC servers, recorded by the interceptor, served over HTTP.

One set of collectors per process (the default registry); every sample is labelled with the
service (`ingest`, `statistics`, `jit_signal`, `export`) and the RPC method name, so several
services sharing one process (tests, embedding) stay distinguishable.

    ghostly_rpc_handled_total{service,method,code}   RPCs finished, by final status code
    ghostly_rpc_errors_total{service,method,code}    the non-OK subset of the above
    ghostly_rpc_duration_seconds{service,method}     latency histogram (streams: until the end)
    ghostly_rpc_in_flight{service,method}            RPCs running now
    ghostly_service_serving{service}                 1 when health reports SERVING, else 0

Health checks and reflection (`/grpc.*`) are not counted; neither are calls rejected by gRPC
itself before reaching a handler (e.g. a message over GHOSTLY_MAX_MESSAGE_BYTES).

The HTTP endpoint (`/metrics`) is started per process on GHOSTLY_<NAME>_METRICS_PORT (0 = off).
Servers of one process asking for the same port share one endpoint (reference counted); a
port held by another process is logged as a warning and metrics stay off for that service —
the gRPC service itself never fails to start because of its metrics port.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("ghostly.metrics")

# 0.5 ms (a cached statistics read) ... 30 s (a large upload or a full-resolution stream).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

RPC_HANDLED = Counter("ghostly_rpc_handled", "RPCs completed, by gRPC status code", ["service", "method", "code"])
RPC_ERRORS = Counter("ghostly_rpc_errors", "RPCs completed with a non-OK status code", ["service", "method", "code"])
RPC_DURATION = Histogram(
    "ghostly_rpc_duration_seconds",
    "RPC latency in seconds (server side; streaming RPCs until completion)",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)
RPC_IN_FLIGHT = Gauge("ghostly_rpc_in_flight", "RPCs currently being handled", ["service", "method"])
SERVING = Gauge("ghostly_service_serving", "1 when the service reports SERVING (database reachable)", ["service"])


# labels() costs a lock and a dict lookup per call: keep the children per label set (the set
# of services, methods and codes is small and fixed).
_children: dict[tuple, object] = {}


def _child(metric, *labels):
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def rpc_started(service: str, method: str) -> None:
    _child(RPC_IN_FLIGHT, service, method).inc()


def rpc_finished(service: str, method: str, code_name: str, seconds: float) -> None:
    _child(RPC_IN_FLIGHT, service, method).dec()
    _child(RPC_HANDLED, service, method, code_name).inc()
    if code_name != "OK":
        _child(RPC_ERRORS, service, method, code_name).inc()
    _child(RPC_DURATION, service, method).observe(seconds)


# -- HTTP endpoint ---------------------------------------------------------------------------
_lock = threading.Lock()
_servers: dict[tuple[str, int], list] = {}  # (host, port) -> [http server, thread, users]


class MetricsEndpoint:
    """A handle on the process's /metrics server for one (host, port); release() when done."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._released = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _lock:
            entry = _servers.get((self.host, self.port))
            if entry is None:
                return
            entry[2] -= 1
            if entry[2] > 0:
                return
            del _servers[(self.host, self.port)]
        server, thread = entry[0], entry[1]
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def open_endpoint(host: str, port: int) -> MetricsEndpoint | None:
    """Serve /metrics on host:port (shared within the process). None when port is 0 or the
    port is taken by another process (logged)."""
    if not port:
        return None
    key = (host, port)
    with _lock:
        entry = _servers.get(key)
        if entry is None:
            try:
                server, thread = start_http_server(port, addr=host)
            except OSError as exc:
                log.warning("metrics endpoint disabled: cannot bind %s:%d (%s)", host, port, exc)
                return None
            entry = _servers[key] = [server, thread, 0]
        entry[2] += 1
    return MetricsEndpoint(host, port)
