"""Every RPC of ingest, statistics, jit_signal and export with random and edge-case request fields,
against real servers on loopback (their own fresh database): a user's bad input must never
come back INTERNAL or UNKNOWN (nor hang until the deadline), and every server is still SERVING
at the end.

Requests are generated from the proto descriptors, so new fields are fuzzed automatically:
strings (empty, huge, non-UUID, traversal, NUL, unicode, plus real ids so deeper code runs),
numbers (negative, 0, extremes, NaN, ±inf), enums out of range, random bytes as chunks,
timestamps out of range, repeated and oneof fields."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import uuid
from typing import Any, Literal

import asyncpg
import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghostly.export.v1 import export_pb2
from ghostly.ingest.v1 import ingest_pb2
from ghostly.jit_signal.v1 import jit_signal_pb2
from ghostly.statistics.v1 import statistics_pb2
from libs.db.migrate import migrate
from libs.grpc_server import start_service
from services.export.server import SPEC as EXPORT
from services.ingest.server import SPEC as INGEST
from services.jit_signal.server import SPEC as JIT
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import make_config, register_patient_at, synthetic_file, upload_messages

EXAMPLES = 60  # per RPC
RPC_TIMEOUT_S = 10.0
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
PROTOS = {"ingest": ingest_pb2, "statistics": statistics_pb2, "jit_signal": jit_signal_pb2, "export": export_pb2}

EDGE_STRINGS = [
    "",
    " ",
    "a" * 100_000,
    "not-a-uuid",
    "00000000-0000-0000-0000-000000000000",
    "../../etc/passwd",
    "/etc/passwd",
    "P001/../x.c3d",
    "x.c3d",
    "a/b/c.c3d",
    "\x00",
    "\u202e💥",
    "' OR 1=1 --",
    "%s%n%x",
    "Ghostly_Emg_20230321_17-50-17-0881.c3d",
    "left",
    "CH1",
    "*",
    "-1",
    "NaN",
]
EDGE_FLOATS = [0.0, -0.0, -1.0, 1e-300, 1e300, -1e300, math.nan, math.inf, -math.inf, 0.5, 100.0, 1e9]
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def _ints(lo: int, hi: int):
    edges = sorted({v for v in (lo, hi, 0, 1, -1, 2, 3, 255, 256, 1000, 10**6, hi // 2) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(max(lo, -5), min(hi, 100)))


def scalar(fd, known_strings: list[str]):
    t = fd.type
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        width: Literal[32, 64] = 32 if t == F.TYPE_FLOAT else 64
        return st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(width=width))
    if t in INT_RANGES:
        return _ints(*INT_RANGES[t])
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_STRING:
        return st.one_of(
            st.sampled_from(EDGE_STRINGS + known_strings), st.sampled_from(known_strings or [""]), st.text(max_size=40)
        )
    if t == F.TYPE_BYTES:
        return st.binary(max_size=4096)
    if t == F.TYPE_ENUM:
        return st.one_of(
            st.sampled_from([v.number for v in fd.enum_type.values]),
            st.integers(-3, 50),
            st.sampled_from([2**31 - 1, -(2**31)]),
        )
    raise AssertionError(fd.type)


def message(desc, known_strings: list[str], depth: int = 0):
    if desc.full_name == "google.protobuf.Timestamp":
        return st.fixed_dictionaries(
            {},
            optional={
                "seconds": st.one_of(
                    st.sampled_from(
                        [
                            0,
                            -1,
                            -62135596800,
                            253402300799,
                            -62135596801,
                            253402300800,
                            2**63 - 1,
                            -(2**63),
                            1_700_000_000,
                        ]
                    ),
                    st.integers(-(2**63), 2**63 - 1),
                ),
                "nanos": st.sampled_from([0, 1, 999_999_999, -1, 10**9, 2**31 - 1]),
            },
        ).map(lambda d: _build(desc, d))
    fields: dict[str, Any] = {}
    for fd in desc.fields:
        if fd.type == F.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if fd.message_type.GetOptions().map_entry:
                key_fd, val_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
                inner = st.dictionaries(
                    scalar(key_fd, known_strings),
                    message(val_fd.message_type, known_strings, depth + 1)
                    if val_fd.type == F.TYPE_MESSAGE
                    else scalar(val_fd, known_strings),
                    max_size=3,
                )
                fields[fd.name] = inner
                continue
            inner = message(fd.message_type, known_strings, depth + 1)
        else:
            inner = scalar(fd, known_strings)
        fields[fd.name] = st.lists(inner, max_size=4) if fd.is_repeated else inner
    return st.fixed_dictionaries({}, optional=fields).map(lambda d: _build(desc, d))


def _build(desc, values: dict) -> Message:
    from google.protobuf import message_factory

    msg = message_factory.GetMessageClass(desc)()
    for name, value in values.items():
        fd = desc.fields_by_name[name]
        try:
            if fd.type == F.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
                target = getattr(msg, name)
                for k, v in value.items():
                    if isinstance(v, Message):
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif fd.is_repeated:
                target = getattr(msg, name)
                if fd.type == F.TYPE_MESSAGE:
                    for v in value:
                        target.add().CopyFrom(v)
                else:
                    target.extend(value)
            elif fd.type == F.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        except (ValueError, TypeError):
            pass  # a value the protobuf runtime itself refuses never reaches the server
    return msg


@pytest.fixture(scope="module")
async def stack(db_factory, tmp_path_factory):
    dsn = await db_factory.create("fuzz")
    await migrate(dsn)
    tmp = tmp_path_factory.mktemp("rpcfuzz")
    cfg = make_config(dsn, tmp, ingest_workers=1, max_upload_bytes=1 << 20)
    patient = await register_patient_at(dsn)
    servers = {}
    for spec in (INGEST, STATISTICS, JIT):
        servers[spec.name] = await start_service(spec, cfg, port=0, metrics_port=0)
    ports = dict(cfg.ports, **{name: s.port for name, s in servers.items()})
    servers["export"] = await start_service(EXPORT, dataclasses.replace(cfg, ports=ports), port=0, metrics_port=0)
    name, data = synthetic_file(tmp, 2024)
    async with grpc.aio.insecure_channel(servers["ingest"].address) as ch:
        from ghostly.ingest.v1 import ingest_pb2_grpc

        reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(upload_messages(data, name, patient), timeout=30)
    conn = await asyncpg.connect(dsn)
    try:
        therapist = str(await conn.fetchval("SELECT therapist_id FROM patients WHERE patient_code = $1", patient))
    finally:
        await conn.close()
    known = [
        reply.session_id,
        patient,
        therapist,
        reply.file_path,
        reply.file_hash,
        name,
        str(uuid.uuid4()),
        "CH1",
        "CH2",
        "left_quadriceps",
        "right_quadriceps",
    ]
    yield servers, known, patient, (reply.session_id, name, data)
    for s in reversed(list(servers.values())):
        await s.stop(0)


def _methods(service_name: str):
    module = PROTOS[service_name]
    return [(svc.full_name, m) for svc in module.DESCRIPTOR.services_by_name.values() for m in svc.methods]


CASES = [(name, m.name) for name in ("ingest", "statistics", "jit_signal", "export") for _, m in _methods(name)]


def _sanitize(service: str, method: str, req, patient: str):
    # Keep Reprocess scoped to the fuzz patient (never "all": that would reprocess every row).
    if service == "ingest" and method == "Reprocess" and req.WhichOneof("scope") == "all":
        req.patient_code = patient
    return req


def valid_request(method, valid):
    """A request that succeeds (or nearly), to mutate one field at a time: reaches deeper code."""
    session_id, _, _ = valid
    cls = _msg_class(method.input_type)
    fields = method.input_type.fields_by_name
    if "session_id" in fields and fields["session_id"].type == F.TYPE_STRING:
        return cls(session_id=session_id)
    return cls()


def one_field_mutation(method, known, valid):
    """The valid request with ONE field replaced by a random value (or cleared)."""
    base = valid_request(method, valid)
    names = [fd.name for fd in method.input_type.fields]

    def apply(args):
        rnd, name = args
        out = type(base)()
        out.CopyFrom(base)
        out.ClearField(name)
        fd = method.input_type.fields_by_name[name]
        value = getattr(rnd, name)
        try:
            if fd.is_repeated or fd.type == F.TYPE_MESSAGE:
                if fd.is_repeated or rnd.HasField(name):
                    if fd.is_repeated:
                        getattr(out, name).MergeFrom(value)
                    else:
                        getattr(out, name).CopyFrom(value)
            else:
                setattr(out, name, value)
        except (ValueError, TypeError):
            pass
        return out

    return st.tuples(message(method.input_type, known), st.sampled_from(names)).map(apply)


def upload_of_mutated_c3d(patient: str, valid):
    """Upload the fuzz patient's real C3D bytes after a C3D mutation (whole ingest path)."""
    from tests.fuzz.test_c3d_fuzz import mutate, mutations

    _, name, data = valid
    counter = iter(range(10**9))

    def build(mutation):
        body = mutate(data, mutation)
        file_name = f"fz{next(counter)}_{uuid.uuid4().hex[:6]}_{name}"
        return [
            ingest_pb2.UploadRequest(
                metadata=ingest_pb2.UploadMetadata(
                    file_name=file_name, session=ingest_pb2.SessionMetadata(patient_code=patient)
                )
            ),
            *(ingest_pb2.UploadRequest(chunk=body[i : i + 65536]) for i in range(0, len(body), 65536)),
        ]

    return mutations.map(build)


def run_campaign(
    address: str, service: str, method_name: str, known: list[str], patient: str, valid
) -> tuple[int, dict, list]:
    """Hypothesis campaign for one RPC (sync client, in a worker thread)."""
    full, method = next((f, m) for f, m in _methods(service) if m.name == method_name)
    req_cls = _msg_class(method.input_type)
    resp_cls = _msg_class(method.output_type)
    path = f"/{full}/{method.name}"
    codes: dict[str, int] = {}
    failures: list[str] = []
    count = [0]
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    if method.client_streaming:
        rpc = channel.stream_unary(
            path, request_serializer=req_cls.SerializeToString, response_deserializer=resp_cls.FromString
        )
        strategy = st.one_of(
            st.lists(message(method.input_type, known), min_size=0, max_size=5), upload_of_mutated_c3d(patient, valid)
        )
    elif method.server_streaming:
        rpc = channel.unary_stream(
            path, request_serializer=req_cls.SerializeToString, response_deserializer=resp_cls.FromString
        )
        strategy = st.one_of(message(method.input_type, known), one_field_mutation(method, known, valid))
    else:
        rpc = channel.unary_unary(
            path, request_serializer=req_cls.SerializeToString, response_deserializer=resp_cls.FromString
        )
        strategy = st.one_of(message(method.input_type, known), one_field_mutation(method, known, valid))

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(req=strategy)
    def one(req):
        count[0] += 1
        try:
            if method.client_streaming:
                msgs = list(req)
                if msgs and msgs[0].WhichOneof("payload") == "metadata" and count[0] % 3 == 0:
                    msgs[0].metadata.session.patient_code = patient  # reach the content checks
                rpc(iter(msgs), timeout=RPC_TIMEOUT_S)
            elif method.server_streaming:
                for i, _ in enumerate(rpc(_sanitize(service, method.name, req, patient), timeout=RPC_TIMEOUT_S)):
                    if i > 200:
                        break
            else:
                rpc(req, timeout=RPC_TIMEOUT_S)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            if code in BAD:
                failures.append(f"{code.name}: {exc.details()} <- {req!r:.600}")
        codes[code.name] = codes.get(code.name, 0) + 1

    try:
        one()
    finally:
        channel.close()
    return count[0], codes, failures


def _msg_class(desc):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


PARAMS = [pytest.param(s, m, id=f"{s}.{m}") for s, m in CASES]


@pytest.mark.parametrize("service,method", PARAMS)
async def test_rpc_bad_inputs(stack, service, method, fuzz_count, caplog):
    import logging

    caplog.set_level(logging.WARNING)
    servers, known, patient, valid = stack
    n, codes, failures = await asyncio.to_thread(
        run_campaign, servers[service].address, service, method, known, patient, valid
    )
    fuzz_count(f"rpc: {service}.{method}", n)
    print(f"\n{service}.{method}: {n} inputs -> {codes}")
    assert not failures, f"{service}.{method}: " + "\n".join(failures[:5])
    # ...and no unexpected failure hidden behind a proper status (e.g. a write that failed
    # and was recorded as "internal error" while the caller saw INVALID_ARGUMENT).
    errors_logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors_logged, errors_logged[:5]
    async with grpc.aio.insecure_channel(servers[service].address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
