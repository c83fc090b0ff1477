"""Container health probe: exit 0 when a local gRPC server reports SERVING.

python -m app.healthcheck ingest        # uses GHOSTLY_INGEST_PORT
python -m app.healthcheck 127.0.0.1:50052
"""

from __future__ import annotations

import asyncio
import sys

from libs import config as config_mod


async def status(address: str, timeout: float = 2.0, tls_settings=None) -> str:
    """The server's overall health: SERVING, NOT_SERVING, ..., UNREACHABLE (no answer), or the
    gRPC status code's name if the health call itself failed otherwise."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from libs.tls import aio_channel

    async with aio_channel(address, tls_settings) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return (
                "UNREACHABLE"
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                else exc.code().name
            )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def check(address: str, timeout: float = 2.0, tls_settings=None) -> bool:
    return await status(address, timeout, tls_settings) == "SERVING"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    target = argv[0]
    try:
        cfg = config_mod.load()
    except config_mod.ConfigError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 2
    if target in config_mod.SERVICE_PORTS:
        target = cfg.target(target)
    return 0 if asyncio.run(check(target, tls_settings=cfg.tls)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
