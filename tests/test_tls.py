"""gRPC over TLS with a throwaway CA made here: servers take a certificate and key, clients a
CA; mutual TLS when the server requires client certificates; export's downstream calls, the
health probe and the CLI use the same settings (libs/tls.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.healthcheck import status
from ghostly.export.v1 import export_pb2, export_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2, statistics_pb2_grpc
from libs.config import TlsSettings
from libs.grpc_server import start_service
from libs.tls import aio_channel
from services.export.server import SPEC as EXPORT
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import ROOT, make_config, subprocess_env


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key, cert) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".pem")
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _ca(tmp: Path, cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert, _write(tmp / cn, key, cert)[0]


def _leaf(tmp: Path, name: str, ca_key, ca_cert, *, server: bool) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return _write(tmp / name, key, b.sign(ca_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert, ca = _ca(tmp, "ghostly-test-ca")
    other_key, other_cert, other_ca = _ca(tmp, "some-other-ca")
    server_cert, server_key = _leaf(tmp, "server", ca_key, ca_cert, server=True)
    client_cert, client_key = _leaf(tmp, "export-client", ca_key, ca_cert, server=False)
    rogue_cert, rogue_key = _leaf(tmp, "rogue-client", other_key, other_cert, server=False)
    return dict(
        ca=ca,
        other_ca=other_ca,
        server=(server_cert, server_key),
        client=(client_cert, client_key),
        rogue=(rogue_cert, rogue_key),
    )


def _server_tls(pki, client_auth=False) -> TlsSettings:
    cert, key = pki["server"]
    return TlsSettings(cert_file=cert, key_file=key, ca_file=pki["ca"], client_auth=client_auth)


def _client_tls(pki, ca="ca", who=None) -> TlsSettings:
    cert, key = pki[who] if who else (None, None)
    return TlsSettings(ca_file=pki[ca], client_cert_file=cert, client_key_file=key)


async def _get_session(address: str, tls: TlsSettings | None):
    async with aio_channel(address, tls) as ch:
        return await statistics_pb2_grpc.StatisticsServiceStub(ch).GetSession(
            statistics_pb2.GetSessionRequest(session_id=str(uuid.uuid4())), timeout=5
        )


async def test_tls_server_and_clients(database_url, tmp_path, pki):
    cfg = dataclasses.replace(make_config(database_url, tmp_path), tls=_server_tls(pki))
    server = await start_service(STATISTICS, cfg, port=0)
    address = f"127.0.0.1:{server.port}"
    try:
        assert await status(address, tls_settings=_client_tls(pki)) == "SERVING"
        with pytest.raises(grpc.aio.AioRpcError) as info:  # verified channel, the RPC itself answers
            await _get_session(address, _client_tls(pki))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # A plaintext client, or one that does not trust the server's CA, gets nowhere.
        assert await status(address) == "UNREACHABLE"
        assert await status(address, tls_settings=_client_tls(pki, ca="other_ca")) == "UNREACHABLE"
        # The container probe and the CLI read the same settings from the environment.
        env = subprocess_env(GHOSTLY_TLS_CA=str(pki["ca"]))
        probe = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app.healthcheck", address],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=30,
        )
        assert probe.returncode == 0, probe.stderr
        plain = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app.healthcheck", address],
            cwd=ROOT,
            env=subprocess_env(),
            capture_output=True,
            timeout=30,
        )
        assert plain.returncode == 1
    finally:
        await server.stop(0)


async def test_mutual_tls_and_export_downstream(database_url, tmp_path, pki):
    """With client_auth the server refuses clients without a certificate from its CA; export,
    configured with its client certificate, reaches statistics over mutual TLS."""
    stats_cfg = dataclasses.replace(make_config(database_url, tmp_path), tls=_server_tls(pki, client_auth=True))
    stats = await start_service(STATISTICS, stats_cfg, port=0)
    address = f"127.0.0.1:{stats.port}"
    try:
        assert await status(address, tls_settings=_client_tls(pki, who="client")) == "SERVING"
        assert await status(address, tls_settings=_client_tls(pki)) == "UNREACHABLE"  # no client cert
        assert await status(address, tls_settings=_client_tls(pki, who="rogue")) == "UNREACHABLE"  # foreign CA
        # Export: its server side plaintext here, its downstream channels mutual TLS.
        cert, key = pki["client"]
        export_cfg = dataclasses.replace(
            make_config(database_url, tmp_path),
            tls=TlsSettings(ca_file=pki["ca"], client_cert_file=cert, client_key_file=key),
            targets={"statistics": address, "jit_signal": address},
        )
        export = await start_service(EXPORT, export_cfg, port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{export.port}") as ch:
                stub = export_pb2_grpc.ExportServiceStub(ch)
                req = export_pb2.CreateExportRequest(
                    type=export_pb2.EXPORT_TYPE_STATISTICS_ONLY,
                    format=export_pb2.EXPORT_FORMAT_JSON,
                    session_ids=[str(uuid.uuid4())],
                )
                # The unknown session is looked up through statistics (mutual TLS): NOT_FOUND
                # from there, not UNAVAILABLE (statistics unreachable).
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    _ = [m async for m in stub.CreateExport(req, timeout=30)]
            assert info.value.code() == grpc.StatusCode.NOT_FOUND and "does not exist" in info.value.details()
        finally:
            await export.stop(0)
    finally:
        await stats.stop(0)
