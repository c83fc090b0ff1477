"""StatisticsService (ghostly.statistics.v1): the read-only dashboard read path; the spec and
wiring of the service. The handlers are in servicer.py, the SQL in repository.py, row -> message
conversions in messages.py, the database role and DSN in db.py (README.md).

The pool connects as the read-only role `ghostly_statistics`, on a read replica when
STATISTICS_DATABASE_URL says so (ServiceSpec.dsn), so the process holds no connection with
broader privileges and the health probe checks the connection the RPCs use.
"""

from __future__ import annotations

import gc

import grpc

from ghostly.statistics.v1 import statistics_pb2 as pb
from ghostly.statistics.v1 import statistics_pb2_grpc
from libs import auth
from libs.grpc_server import ServiceContext, ServiceSpec
from services.statistics.db import keep_session, statistics_dsn
from services.statistics.servicer import StatisticsServicer

FULL_NAME = pb.DESCRIPTOR.services_by_name["StatisticsService"].full_name


async def register(server: grpc.aio.Server, context: ServiceContext) -> None:
    statistics_pb2_grpc.add_StatisticsServiceServicer_to_server(StatisticsServicer(context.pool), server)
    # Start-up objects (modules, descriptors, pool) live forever: keep them out of the cyclic
    # GC's full collections, which otherwise show up as multi-millisecond tail latencies.
    gc.collect()
    gc.freeze()


# Every role reads every RPC; a therapist's rows are limited to their own caseload by the
# queries (and by RLS on the read-only role), not by the method.
PERMISSIONS = {m.name: auth.ALL_ROLES for m in pb.DESCRIPTOR.services_by_name["StatisticsService"].methods}

SPEC = ServiceSpec(
    name="statistics",
    full_names=(FULL_NAME,),
    register=register,
    permissions=PERMISSIONS,
    dsn=statistics_dsn,
    pool_options={"reset": keep_session},
)
