"""gRPC server bootstrap shared by all services (health, reflection, shutdown, errors, logs)."""

from libs.grpc_server.server import RunningService, ServiceContext, ServiceSpec, serve, start_service

__all__ = ["RunningService", "ServiceContext", "ServiceSpec", "serve", "start_service"]
