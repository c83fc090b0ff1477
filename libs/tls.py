"""gRPC transport security: one place that turns TlsSettings (libs/config.py) into server
credentials and client channels, so servers, export's downstream calls, the CLI and the
health probe agree. Without settings everything stays plaintext (local development)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from libs.config import TlsSettings


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def server_credentials(tls: TlsSettings | None):
    """grpc.ServerCredentials for the settings, or None for a plaintext port."""
    if tls is None or not tls.server_enabled:
        return None
    import grpc

    return grpc.ssl_server_credentials(
        [(_read(tls.key_file), _read(tls.cert_file))],
        root_certificates=_read(tls.ca_file) if tls.client_auth else None,
        require_client_auth=tls.client_auth,
    )


def channel_credentials(tls: TlsSettings | None):
    """grpc.ChannelCredentials verifying the server with the CA (and presenting the client
    certificate when configured), or None for plaintext."""
    if tls is None or not tls.client_enabled:
        return None
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.client_key_file),
        certificate_chain=_read(tls.client_cert_file),
    )


def aio_channel(target: str, tls: TlsSettings | None, options: list[tuple[str, Any]] | None = None):
    """An asyncio channel to ``target``: TLS when the settings have a CA, else plaintext."""
    import grpc

    creds = channel_credentials(tls)
    if creds is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, creds, options=options)


def channel(target: str, tls: TlsSettings | None, options: list[tuple[str, Any]] | None = None):
    """A blocking channel (the CLI's), same rule as aio_channel."""
    import grpc

    creds = channel_credentials(tls)
    if creds is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, creds, options=options)
