"""ExportService server wiring (ghostly.export.v1)."""
from __future__ import annotations

import grpc

from ghostly.export.v1 import export_pb2, export_pb2_grpc
from libs.grpc_server import ServiceContext, ServiceSpec

FULL_NAME = export_pb2.DESCRIPTOR.services_by_name["ExportService"].full_name


async def register(server: grpc.aio.Server, context: ServiceContext) -> None:
    # The RPCs are implemented by a later issue; until then the generated base answers
    # UNIMPLEMENTED, while health and reflection already work.
    export_pb2_grpc.add_ExportServiceServicer_to_server(export_pb2_grpc.ExportServiceServicer(), server)


SPEC = ServiceSpec(name="export", full_names=(FULL_NAME,), register=register)
