"""Authentication and row-level access through real servers (jwt mode, no dev fallback):
the role x RPC matrix, token failures, therapists limited to their own patients (in the
services' queries, and by RLS as a second wall), exports recording the researcher."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ghostly.export.v1 import export_pb2, export_pb2_grpc
from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from ghostly.jit_signal.v1 import jit_signal_pb2, jit_signal_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2, statistics_pb2_grpc
from libs.auth import AuthSettings, issue_token
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from libs.grpc_server import start_service
from tests import helpers
from tests.helpers import TEST_JWT_SECRET, bearer, make_config

ROLES = ("therapist", "researcher", "admin", "service")
EVERYONE = set(ROLES)
WRITERS = {"admin", "service"}
# Written out by hand (not read from the ServiceSpecs) so a wrong spec fails here.
MATRIX = {
    ("ingest", "Upload"): WRITERS,
    ("ingest", "IngestStoredFile"): WRITERS,
    ("ingest", "Reprocess"): WRITERS,
    ("ingest", "GetProcessingStatus"): WRITERS | {"researcher"},
    # Clinic writes: therapists too (their own caseload, checked by the servicer); scoring: admins.
    ("ingest", "RecordSessionOutcome"): WRITERS | {"therapist"},
    ("ingest", "SetScoringConfig"): {"admin"},
    ("patients", "CreateTherapist"): WRITERS,
    **{
        ("patients", m): WRITERS | {"therapist"}
        for m in (
            "CreatePatient",
            "UpdatePatient",
            "DeactivatePatient",
            "SetPatientCalibration",
            "CalibrateFromSession",
        )
    },
    **{
        ("statistics", m): EVERYONE
        for m in (
            "GetSession",
            "ListSessions",
            "GetEmgStatistics",
            "GetPerformanceScore",
            "GetBfrMonitoring",
            "GetSessionSettings",
            "GetPatientProgress",
            "GetCohortSummary",
            "BatchGetSessionStatistics",
            "GetPatient",
            "ListPatients",
            "ListPatientCalibrations",
            "GetScoringConfig",
        )
    },
    ("jit_signal", "StreamSignals"): EVERYONE,
    ("jit_signal", "ListChannels"): EVERYONE,
    ("export", "CreateExport"): EVERYONE,
    ("export", "ListExportHistory"): {"researcher", "admin", "service"},
}
STUBS = {
    "ingest": (ingest_pb2_grpc.IngestServiceStub, ingest_pb2),
    "patients": (ingest_pb2_grpc.PatientServiceStub, ingest_pb2),
    "statistics": (statistics_pb2_grpc.StatisticsServiceStub, statistics_pb2),
    "jit_signal": (jit_signal_pb2_grpc.JitSignalServiceStub, jit_signal_pb2),
    "export": (export_pb2_grpc.ExportServiceStub, export_pb2),
}


@pytest.fixture(scope="module")
async def stack(database_url, shared_data_dir):
    from services.export.server import SPEC as EXPORT
    from services.ingest.server import SPEC as INGEST
    from services.jit_signal.server import SPEC as JIT
    from services.statistics.server import SPEC as STATS

    cfg = make_config(database_url, shared_data_dir)
    cfg = dataclasses.replace(cfg, auth=AuthSettings(mode="jwt", secret=TEST_JWT_SECRET))
    servers = {
        n: await start_service(spec, cfg, port=0)
        for n, spec in (("ingest", INGEST), ("statistics", STATS), ("jit_signal", JIT))
    }
    # Statistics again, connected as the table owner: RLS does not apply to it, so only the
    # service's own query filters protect it (the first wall, tested on its own).
    servers["statistics_owner"] = await start_service(
        dataclasses.replace(STATS, dsn=lambda c: c.database_url), cfg, port=0
    )
    cfg = dataclasses.replace(cfg, ports=dict(cfg.ports, **{n: s.port for n, s in servers.items() if n in cfg.ports}))
    servers["export"] = await start_service(EXPORT, cfg, port=0)
    channels = {n: grpc.aio.insecure_channel(s.address) for n, s in servers.items()}
    channels["patients"] = grpc.aio.insecure_channel(servers["ingest"].address)  # same server, PatientService
    yield channels
    for ch in channels.values():
        await ch.close()
    for s in servers.values():
        await s.stop(0)


def _stub(stack, service):
    cls, _ = STUBS["statistics" if service == "statistics_owner" else service]
    return cls(stack[service])


async def _call(stack, service: str, method: str, metadata=()):
    """Call with an empty request; returns the status code (OK when it succeeded)."""
    stub_cls, pb = STUBS[service]
    fn = getattr(stub_cls(stack[service]), method)
    request_type = {"Upload": "UploadRequest"}.get(method, f"{method}Request")
    try:
        if method == "Upload":
            await fn(iter([pb.UploadRequest()]), metadata=metadata, timeout=10)
        elif method in ("StreamSignals", "CreateExport", "Reprocess"):
            _ = [m async for m in fn(getattr(pb, request_type)(), metadata=metadata, timeout=10)]
        else:
            req = getattr(pb, request_type, None) or pb.SessionKey
            await fn(req(), metadata=metadata, timeout=10)
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()


@pytest.mark.parametrize("role", (*ROLES, None))
@pytest.mark.parametrize("service,method", sorted(MATRIX))
async def test_role_matrix(stack, service, method, role):
    code, details = await _call(stack, service, method, bearer(role) if role else ())
    if role is None:
        assert code == grpc.StatusCode.UNAUTHENTICATED and "missing bearer token" in details
    elif role in MATRIX[(service, method)]:
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), details
        assert code != grpc.StatusCode.INTERNAL, details
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert f"role {role!r} may not call {method}" in details


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda: issue_token(secret=TEST_JWT_SECRET, subject="u", role="admin", ttl_s=-120), "token expired"),
        (lambda: issue_token(secret=TEST_JWT_SECRET, subject="u", role="admin", audience="other"), "audience"),
        (lambda: issue_token(secret=TEST_JWT_SECRET, subject="u", role="admin", issuer="evil"), "issuer"),
        (lambda: issue_token(secret="another-secret-of-sufficient-length-xx", subject="u", role="admin"), "signature"),
        (lambda: issue_token(secret=TEST_JWT_SECRET, subject="u", role="admin")[:-3] + "abc", "signature"),
        (lambda: "not.a.jwt", "invalid token"),
    ],
)
async def test_bad_tokens_are_unauthenticated(stack, make, expected):
    code, details = await _call(stack, "statistics", "ListSessions", (("authorization", f"Bearer {make()}"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED and expected in details


async def test_malformed_header_and_unknown_role(stack):
    code, details = await _call(stack, "statistics", "ListSessions", (("authorization", "Basic abc"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in details
    import time

    import jwt as pyjwt

    forged = pyjwt.encode(
        {"sub": "u", "role": "superuser", "iss": "ghostly", "aud": "ghostly-backend", "exp": int(time.time()) + 60},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    code, details = await _call(stack, "statistics", "ListSessions", (("authorization", f"Bearer {forged}"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "role must be one of" in details


async def test_health_and_reflection_need_no_token(stack):
    reply = await health_pb2_grpc.HealthStub(stack["statistics"]).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_rs256_tokens(database_url, shared_data_dir):
    from services.statistics.server import SPEC as STATS

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    cfg = dataclasses.replace(
        make_config(database_url, shared_data_dir), auth=AuthSettings(mode="jwt", algorithm="RS256", public_key=public)
    )
    server = await start_service(STATS, cfg, port=0)
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = statistics_pb2_grpc.StatisticsServiceStub(ch)
            good = issue_token(private_key=private, algorithm="RS256", subject="u", role="researcher")
            await stub.ListSessions(
                statistics_pb2.ListSessionsRequest(page_size=1), metadata=(("authorization", f"Bearer {good}"),)
            )
            hs = issue_token(secret=TEST_JWT_SECRET, subject="u", role="researcher")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ListSessions(
                    statistics_pb2.ListSessionsRequest(), metadata=(("authorization", f"Bearer {hs}"),)
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)


# --------------------------------------------------------------------------- row-level access


@pytest.fixture(scope="module")
async def caseloads(stack, database_url, tmp_path_factory):
    """Two therapists with one patient and one ingested session each, and a researcher."""
    conn = await asyncpg.connect(database_url)
    out: dict[str, Any] = {}
    folder = tmp_path_factory.mktemp("auth-c3d")
    try:
        for i, name in enumerate(("a", "b")):
            therapist, user = await helpers.add_therapist(conn, last=name)
            code = await helpers.add_patient(
                conn, therapist, f"A{uuid.uuid4().hex[:6].upper()}", last=name, date_of_birth=dt.date(1941, 2, 3)
            )
            spec = SyntheticSpec(
                duration_s=40.0,
                seed=900 + i,
                channels=[
                    ChannelSpec(contractions=regular_contractions(5, 2.5, 6.0)),
                    ChannelSpec(contractions=regular_contractions(4, 1.0, 7.0)),
                ],
            )
            path = folder / ghostly_file_name(spec, seconds=i)
            write_synthetic_c3d(path, spec)
            data = path.read_bytes()
            msgs = [
                ingest_pb2.UploadRequest(
                    metadata=ingest_pb2.UploadMetadata(
                        file_name=path.name, session=ingest_pb2.SessionMetadata(patient_code=code)
                    )
                )
            ]
            msgs.append(ingest_pb2.UploadRequest(chunk=data))
            reply = await ingest_pb2_grpc.IngestServiceStub(stack["ingest"]).Upload(
                iter(msgs), metadata=bearer("service")
            )
            out[name] = {"user": str(user), "therapist": str(therapist), "patient": code, "session": reply.session_id}
        researcher = uuid.uuid4()
        await conn.execute(
            "INSERT INTO researcher_profiles (id, full_name, institution, created_at, updated_at) "
            "VALUES ($1, 'R', 'Uni', now(), now())",
            researcher,
        )
        out["researcher"] = str(researcher)
    finally:
        await conn.close()
    return out


@pytest.mark.parametrize("statistics", ["statistics", "statistics_owner"])
async def test_therapist_sees_only_own_patients_in_statistics(stack, caseloads, statistics):
    a, b = caseloads["a"], caseloads["b"]
    me = bearer("therapist", a["user"])
    stub = _stub(stack, statistics)
    listed = await stub.ListSessions(statistics_pb2.ListSessionsRequest(page_size=500), metadata=me)
    assert {s.patient_id for s in listed.sessions} == {a["patient"]}
    assert (await stub.GetSession(statistics_pb2.GetSessionRequest(session_id=a["session"]), metadata=me)).id
    for call, req in (
        (stub.GetSession, statistics_pb2.GetSessionRequest(session_id=b["session"])),
        (stub.GetPerformanceScore, statistics_pb2.SessionKey(session_id=b["session"])),
        (stub.GetSessionSettings, statistics_pb2.SessionKey(session_id=b["session"])),
        (stub.GetEmgStatistics, statistics_pb2.GetEmgStatisticsRequest(session_id=b["session"])),
        (stub.GetPatientProgress, statistics_pb2.GetPatientProgressRequest(patient_id=b["patient"])),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(req, metadata=me)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, call
    progress = await stub.GetPatientProgress(
        statistics_pb2.GetPatientProgressRequest(patient_id=a["patient"]), metadata=me
    )
    assert len(progress.points) == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetCohortSummary(statistics_pb2.GetCohortSummaryRequest(therapist_id=b["therapist"]), metadata=me)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    own = await stub.GetCohortSummary(statistics_pb2.GetCohortSummaryRequest(), metadata=me)
    assert own.patient_count == 1 and own.session_count == 1
    # A researcher sees both.
    researcher = bearer("researcher", caseloads["researcher"])
    for who in (a, b):
        await stub.GetSession(statistics_pb2.GetSessionRequest(session_id=who["session"]), metadata=researcher)


async def test_therapist_signals_and_exports_limited(stack, caseloads, database_url):
    a, b = caseloads["a"], caseloads["b"]
    me = bearer("therapist", a["user"])
    jit = jit_signal_pb2_grpc.JitSignalServiceStub(stack["jit_signal"])
    chunks = [
        c async for c in jit.StreamSignals(jit_signal_pb2.StreamSignalsRequest(session_id=a["session"]), metadata=me)
    ]
    assert chunks
    for call in (lambda: jit.ListChannels(jit_signal_pb2.ListChannelsRequest(session_id=b["session"]), metadata=me),):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [
            c
            async for c in jit.StreamSignals(jit_signal_pb2.StreamSignalsRequest(session_id=b["session"]), metadata=me)
        ]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # A foreign session and an unknown one give the same message, whatever case the id is in.
    unknown = str(uuid.uuid4())
    texts = []
    for sid in (b["session"].upper(), unknown.upper()):
        for call in (lambda s=sid: jit.ListChannels(jit_signal_pb2.ListChannelsRequest(session_id=s), metadata=me),):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call()
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            texts.append(info.value.details().replace(sid.lower(), "<id>"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [c async for c in jit.StreamSignals(jit_signal_pb2.StreamSignalsRequest(session_id=sid), metadata=me)]
        texts.append(info.value.details().replace(sid.lower(), "<id>"))
    assert texts[0] == texts[2] and texts[1] == texts[3], texts

    export = export_pb2_grpc.ExportServiceStub(stack["export"])
    req = lambda sid, **kw: export_pb2.CreateExportRequest(  # noqa: E731
        type=export_pb2.EXPORT_TYPE_STATISTICS_ONLY, format=export_pb2.EXPORT_FORMAT_CSV, session_ids=[sid], **kw
    )
    done = [m async for m in export.CreateExport(req(a["session"]), metadata=me)]
    assert done[-1].completed.status == export_pb2.EXPORT_STATUS_SUCCESS
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [m async for m in export.CreateExport(req(b["session"]), metadata=me)]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # the forwarded token applied downstream
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT exported_by, export_options::text AS o FROM export_history WHERE id = $1::uuid",
            done[-1].completed.export_id,
        )
        assert row["exported_by"] is None and a["user"] in row["o"] and "therapist" in row["o"]
        # A researcher's export records them as exported_by; exporting as someone else is refused.
        r = bearer("researcher", caseloads["researcher"])
        done = [m async for m in export.CreateExport(req(b["session"]), metadata=r)]
        who = await conn.fetchval(
            "SELECT exported_by FROM export_history WHERE id = $1::uuid", done[-1].completed.export_id
        )
        assert str(who) == caseloads["researcher"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [m async for m in export.CreateExport(req(b["session"], exported_by=str(uuid.uuid4())), metadata=r)]
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await conn.close()


# --------------------------------------------------------------------------- verified-token cache


def _authenticator(**over):
    from libs.auth import Authenticator

    return Authenticator(AuthSettings(mode="jwt", secret=TEST_JWT_SECRET, **over))


def _md(token: str):
    return (("authorization", f"Bearer {token}"),)


def test_a_verified_token_is_not_verified_again_until_it_expires(monkeypatch):
    import time as _time

    import jwt as pyjwt

    from libs.errors import Unauthenticated

    a = _authenticator(leeway_s=0)
    token = issue_token(secret=TEST_JWT_SECRET, subject=str(uuid.uuid4()), role="researcher", ttl_s=1)
    first = a.authenticate(_md(token))
    calls = []
    real_decode = pyjwt.decode

    def counting_decode(*args, **kw):
        calls.append(1)
        return real_decode(*args, **kw)

    monkeypatch.setattr(pyjwt, "decode", counting_decode)
    assert a.authenticate(_md(token)) is first and calls == []  # served from the cache
    _time.sleep(1.3)  # exp passes (leeway 0)
    with pytest.raises(Unauthenticated, match="expired"):
        a.authenticate(_md(token))
    assert calls == [1]  # re-verified, and refused
    with pytest.raises(Unauthenticated, match="expired"):
        a.authenticate(_md(token))  # not cached after refusal


def test_bad_tokens_are_refused_every_time_and_the_cache_is_bounded(monkeypatch):
    import libs.auth as auth_mod
    from libs.errors import Unauthenticated

    a = _authenticator()
    good = issue_token(secret=TEST_JWT_SECRET, subject=str(uuid.uuid4()), role="therapist")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="signature"):
            a.authenticate(_md(forged))
    assert a.authenticate(_md(good)).role == "therapist"
    other = issue_token(secret="another-secret-of-32-bytes-length!!", subject=str(uuid.uuid4()), role="admin")
    with pytest.raises(Unauthenticated):
        a.authenticate(_md(other))  # signed with another key
    monkeypatch.setattr(auth_mod, "VERIFIED_TOKENS_KEPT", 3)
    tokens = [issue_token(secret=TEST_JWT_SECRET, subject=str(uuid.uuid4()), role="researcher") for _ in range(5)]
    for t in tokens:
        a.authenticate(_md(t))
    assert list(a._verified) == tokens[-3:]


def test_a_cached_token_expires_when_pyjwt_says_so():
    """PyJWT compares int(exp): a fractional exp must not keep a cached token alive longer."""
    import time as _time

    import jwt as pyjwt

    from libs.errors import Unauthenticated

    a = _authenticator(leeway_s=0)
    start = int(_time.time())
    while _time.time() - start > 0.5:  # leave room inside this second
        _time.sleep(0.05)
        start = int(_time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "researcher",
        "iss": "ghostly",
        "aud": "ghostly-backend",
        "iat": start,
        "exp": start + 1.9,
    }
    token = pyjwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")
    assert a.authenticate(_md(token)).role == "researcher"
    _time.sleep(max(0.0, start + 1.2 - _time.time()))  # past int(exp), before exp
    with pytest.raises(Unauthenticated, match="expired"):
        a.authenticate(_md(token))


def test_no_identity_is_no_access():
    """Fail closed: outside an authenticated call there is no implicit admin."""
    import contextvars

    from libs import auth
    from libs.errors import PermissionDenied

    def outside():
        with pytest.raises(PermissionDenied, match="no authenticated caller"):
            auth.current()
        with auth.acting_as(auth.DEV_IDENTITY) as me:
            assert auth.current() is me
        with pytest.raises(PermissionDenied):
            auth.current()

    contextvars.Context().run(outside)  # a fresh context, as a background task or script has
