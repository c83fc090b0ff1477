"""Plumbing shared by the client commands: stubs on the configured addresses carrying
$GHOSTLY_TOKEN, one way of reporting a failure, and the API's units formatted for people
(volts -> uV, enums -> words, timestamps -> UTC).

Nothing heavy is imported at module level: grpc and the generated code are imported when a
command runs (``Client``), never while the parser is built.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys

TIMEOUT_S = 30.0
EXIT_ERROR = 2


class CommandError(Exception):
    """A failure reported as the one line ``error: <message>`` with exit code 2."""


class _Stub:
    """A gRPC stub whose calls carry the token and a deadline (``stub.Method(request)``)."""

    def __init__(self, stub, metadata, timeout: float):
        self._stub, self._metadata, self._timeout = stub, metadata, timeout

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)

        def call(request, timeout: float | None = None):
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)

        return call


class Client:
    """Blocking channels to the services, opened on first use (addresses: cfg.target(name),
    i.e. GHOSTLY_<NAME>_ADDRESS or 127.0.0.1:<port>)."""

    def __init__(self, timeout: float = TIMEOUT_S):
        from libs import auth
        from libs import config as config_mod

        self._cfg = config_mod.load()
        self._metadata = auth.client_metadata()
        self._timeout = timeout
        self._channels: dict = {}

    def target(self, service: str) -> str:
        return self._cfg.target(service)

    def _channel(self, service: str):
        if service not in self._channels:
            from libs.tls import channel

            self._channels[service] = channel(self.target(service), self._cfg.tls)
        return self._channels[service]

    def _stub(self, service: str, stub_class) -> _Stub:
        return _Stub(stub_class(self._channel(service)), self._metadata, self._timeout)

    @property
    def patients(self) -> _Stub:
        from ghostly.ingest.v1 import ingest_pb2_grpc

        return self._stub("ingest", ingest_pb2_grpc.PatientServiceStub)

    @property
    def ingest(self) -> _Stub:
        from ghostly.ingest.v1 import ingest_pb2_grpc

        return self._stub("ingest", ingest_pb2_grpc.IngestServiceStub)

    @property
    def statistics(self) -> _Stub:
        from ghostly.statistics.v1 import statistics_pb2_grpc

        return self._stub("statistics", statistics_pb2_grpc.StatisticsServiceStub)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rpc_error_line(exc) -> str:
    """``<STATUS>: <message>`` of a gRPC error, on one line."""
    code = exc.code()
    details = " ".join((exc.details() or "").split())
    return f"{code.name if code is not None else 'UNKNOWN'}: {details}"


def command(func):
    """Wrap ``func(args, client)`` as an argparse handler: a gRPC error or a CommandError is
    printed as one line ``error: ...`` on stderr and the exit code is 2."""

    @functools.wraps(func)
    def run(args) -> int:
        import grpc

        try:
            with Client(timeout=getattr(args, "timeout", None) or TIMEOUT_S) as client:
                return func(args, client) or 0
        except grpc.RpcError as exc:
            print(f"error: {rpc_error_line(exc)}", file=sys.stderr)
            return EXIT_ERROR
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return run


def add_timeout(parser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_S,
        metavar="S",
        help=f"deadline of each call in seconds (default {TIMEOUT_S:g})",
    )


# --------------------------------------------------------------------------- formatting


def optional(msg, field: str):
    """The value of an `optional` proto field, or None when unset."""
    return getattr(msg, field) if msg.HasField(field) else None


def uv(volts: float | None, spec: str = ".1f") -> str:
    """Volts (the API's unit) as a number of microvolts; '-' for none."""
    return "-" if volts is None else format(volts * 1e6, spec)


def num(value, spec: str = "g", unit: str = "") -> str:
    return "-" if value is None else format(value, spec) + unit


def score(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def when(ts, date_only: bool = False) -> str:
    """A protobuf Timestamp in UTC ('-' when unset)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return "-"
    d = dt.datetime.fromtimestamp(ts.seconds, tz=dt.UTC)
    return d.strftime("%Y-%m-%d" if date_only else "%Y-%m-%d %H:%M:%S")


def _enum_word(enum, value: int, prefix: str) -> str:
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    word = name.removeprefix(prefix).lower()
    return "-" if word == "unspecified" else word


def status_word(value: int) -> str:
    from ghostly.common.v1 import common_pb2

    return _enum_word(common_pb2.ProcessingStatus, value, "PROCESSING_STATUS_")


def session_type_word(value: int) -> str:
    from ghostly.common.v1 import common_pb2

    return _enum_word(common_pb2.SessionType, value, "SESSION_TYPE_")


def calibration_source_word(value: int) -> str:
    from ghostly.common.v1 import common_pb2

    return _enum_word(common_pb2.CalibrationSource, value, "CALIBRATION_SOURCE_")


def exclusions(mapping) -> str:
    """components_excluded / excluded_components as 'effort (post-session RPE missing); ...'."""
    return "; ".join(f"{k} ({v})" if v else k for k, v in sorted(dict(mapping).items())) or "none"


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), *(fmt.format(*map(str, r)).rstrip() for r in rows)]
