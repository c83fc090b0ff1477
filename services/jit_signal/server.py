"""JitSignalService server wiring (ghostly.jit_signal.v1)."""

from __future__ import annotations

import grpc

from ghostly.jit_signal.v1 import jit_signal_pb2, jit_signal_pb2_grpc
from libs.db import access
from libs.db.dsn import service_dsn
from libs.grpc_server import ServiceContext, ServiceSpec

FULL_NAME = jit_signal_pb2.DESCRIPTOR.services_by_name["JitSignalService"].full_name


async def register(server: grpc.aio.Server, context: ServiceContext) -> None:
    from services.jit_signal.servicer import build

    jit_signal_pb2_grpc.add_JitSignalServiceServicer_to_server(await build(context), server)


ROLE = "ghostly_jit_signal"
# Its own role (migration 010), RLS in force: every query carries the caller's identity.
SPEC = ServiceSpec(
    name="jit_signal",
    full_names=(FULL_NAME,),
    register=register,
    dsn=lambda c: service_dsn(c.database_url, ROLE, c.role_passwords.get(ROLE)),
    pool_options={"reset": access.reset_connection},
)
