"""IngestService server wiring (ghostly.ingest.v1)."""

from __future__ import annotations

import grpc

from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from libs import auth
from libs.db.dsn import service_dsn
from libs.grpc_server import ServiceContext, ServiceSpec

FULL_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
PATIENTS_FULL_NAME = ingest_pb2.DESCRIPTOR.services_by_name["PatientService"].full_name
CLINIC = auth.WRITERS | {"therapist"}
ROLE = "ghostly_ingest"  # therapists: own caseload only (checked by the servicers)


async def register(server: grpc.aio.Server, context: ServiceContext) -> None:
    from services.ingest.bucket_events import start_consumer
    from services.ingest.patients import PatientServicer
    from services.ingest.servicer import build

    servicer = await build(context)
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
    # Event-driven ingest (GHOSTLY_EVENTS_URL set): S3 bucket notifications from NATS JetStream.
    await start_consumer(servicer, context)
    ingest_pb2_grpc.add_PatientServiceServicer_to_server(PatientServicer(context.pool), server)


SPEC = ServiceSpec(
    name="ingest",
    full_names=(FULL_NAME, PATIENTS_FULL_NAME),
    register=register,
    permissions={
        # Only admins and services (the storage-event bridge) ingest; researchers may follow status.
        "Upload": auth.WRITERS,
        "IngestStoredFile": auth.WRITERS,
        "Reprocess": auth.WRITERS,
        "GetProcessingStatus": auth.WRITERS | {"researcher"},
        "RecordSessionOutcome": CLINIC,
        "SetScoringConfig": frozenset({"admin"}),
        # Registry and calibration: therapists for their own caseload; researchers only read.
        "CreateTherapist": auth.WRITERS,
        "CreatePatient": CLINIC,
        "UpdatePatient": CLINIC,
        "DeactivatePatient": CLINIC,
        "SetPatientCalibration": CLINIC,
        "CalibrateFromSession": CLINIC,
    },  # its own role (migration 010): writes exactly what its grants allow, RLS in force
    dsn=lambda c: service_dsn(c.database_url, ROLE, c.role_passwords.get(ROLE)),
)
