"""StatisticsService server wiring (ghostly.statistics.v1)."""
from __future__ import annotations

import grpc

from ghostly.statistics.v1 import statistics_pb2, statistics_pb2_grpc
from libs.grpc_server import ServiceContext, ServiceSpec

FULL_NAME = statistics_pb2.DESCRIPTOR.services_by_name["StatisticsService"].full_name


async def register(server: grpc.aio.Server, context: ServiceContext) -> None:
    # The RPCs are implemented by a later issue; until then the generated base answers
    # UNIMPLEMENTED, while health and reflection already work.
    statistics_pb2_grpc.add_StatisticsServiceServicer_to_server(statistics_pb2_grpc.StatisticsServiceServicer(), server)


SPEC = ServiceSpec(name="statistics", full_names=(FULL_NAME,), register=register,
                   dsn_setting="statistics_database_url")
