"""ExportService server wiring (ghostly.export.v1).

Downstream addresses come from the service's Config: config.target('statistics') and
config.target('jit_signal') (GHOSTLY_STATISTICS_ADDRESS / GHOSTLY_JIT_SIGNAL_ADDRESS, default
127.0.0.1:<port>).
Tests and embedders that start the services on ephemeral ports pass a Config whose `ports`
hold the actual ports (dataclasses.replace(cfg, ports={...})).
"""

from __future__ import annotations

import logging

import grpc

from ghostly.export.v1 import export_pb2, export_pb2_grpc
from libs.db import access
from libs.db.dsn import service_dsn
from libs.grpc_server import ServiceContext, ServiceSpec
from services.export.downstream import Downstream
from services.export.history import History
from services.export.permissions import PERMISSIONS
from services.export.servicer import ExportServicer

log = logging.getLogger("ghostly.export")
FULL_NAME = export_pb2.DESCRIPTOR.services_by_name["ExportService"].full_name


async def register(server: grpc.aio.Server, context: ServiceContext) -> None:
    cfg = context.config
    downstream = Downstream(cfg.target("statistics"), cfg.target("jit_signal"), cfg.max_message_bytes, cfg.tls)
    context.on_stop.append(downstream.close)
    history = History(context.pool)
    try:  # rows left 'in progress' by a process that died (startup sweep)
        closed = await history.sweep_stale()
        if closed:
            log.info("closed %d export(s) left in progress by a stopped process", closed)
    except Exception:
        log.warning("could not sweep stale exports", exc_info=True)
    export_pb2_grpc.add_ExportServiceServicer_to_server(
        ExportServicer(history, downstream, cfg.export_session_concurrency), server
    )


ROLE = "ghostly_export"

SPEC = ServiceSpec(
    name="export",
    full_names=(FULL_NAME,),
    register=register,
    permissions=PERMISSIONS,
    dsn=lambda c: service_dsn(c.database_url, ROLE, c.role_passwords.get(ROLE)),  # its own role, RLS in force
    pool_options={"reset": access.reset_connection},
)  # identity settings reset with the connection
