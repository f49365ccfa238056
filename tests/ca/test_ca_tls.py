"""The CA's certificates in a real mutual-TLS handshake (OpenSSL via the ssl module)."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler.ca import CertificateAuthority, SVIDRejected, spiffe_id

TD = "mesh.example"


def write_svid(
    ca: CertificateAuthority, directory: Path, identity: str, now: datetime
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "svid.pem", directory / "svid.key"
    cert_file.write_bytes(
        ca.issue_svid(csr.public_bytes(serialization.Encoding.PEM), identity, now=now)
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[bytes | None, str | None]:
    """Run one handshake on 127.0.0.1; return the client's leaf (DER) as the server saw it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict[str, bytes | str | None] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert(binary_form=True)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = str(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    error = None
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="controller.local") as tls,
        ):
            assert tls.recv(2) == b"ok"
    except (ssl.SSLError, OSError, AssertionError) as exc:
        error = str(exc)
    thread.join(timeout=10)
    listener.close()
    peer = seen.get("peer")
    return (peer if isinstance(peer, bytes) else None), error


@pytest.mark.parametrize("mode", ["self-signed", "intermediate"])
def test_mutual_tls_with_svids(tmp_path: Path, mode: str) -> None:
    now = datetime.now(UTC)  # OpenSSL checks validity against the real clock
    kwargs = {}
    if mode == "intermediate":
        root_ca = CertificateAuthority.load_or_create(tmp_path / "corp", "corp.example", now=now)
        kwargs = {
            # one PEM file holding both the certificate and the key
            "root_cert_file": tmp_path / "corp" / "ca" / "signing.pem",
            "root_key_file": tmp_path / "corp" / "ca" / "signing.pem",
        }
        assert root_ca.trust_bundle_pem()
    ca = CertificateAuthority.load_or_create(tmp_path / "data", TD, now=now, **kwargs)  # type: ignore[arg-type]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.trust_bundle_pem())

    server = ca.issue_server_cert(["controller.local"], ["127.0.0.1"], now=now)
    (tmp_path / "server.pem").write_bytes(server.cert_chain_pem)
    (tmp_path / "server.key").write_bytes(server.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server_ctx.load_verify_locations(bundle)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    web = spiffe_id(TD, "shop", "web")
    cert_file, key_file = write_svid(ca, tmp_path, web, now)
    client_ctx = ssl.create_default_context(cafile=str(bundle))
    client_ctx.load_cert_chain(cert_file, key_file)

    peer, error = handshake(server_ctx, client_ctx)
    assert error is None
    assert peer is not None
    assert ca.verify_svid([x509.load_der_x509_certificate(peer)], now=now) == web


def test_a_client_from_another_ca_fails_the_handshake(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.load_or_create(tmp_path / "data", TD, now=now)
    other = CertificateAuthority.load_or_create(tmp_path / "other", TD, now=now)
    (tmp_path / "bundle.pem").write_bytes(ca.trust_bundle_pem())
    server = ca.issue_server_cert(["controller.local"], now=now)
    (tmp_path / "server.pem").write_bytes(server.cert_chain_pem)
    (tmp_path / "server.key").write_bytes(server.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server_ctx.load_verify_locations(tmp_path / "bundle.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    (tmp_path / "c").mkdir()
    cert_file, key_file = write_svid(other, tmp_path / "c", spiffe_id(TD, "shop", "web"), now)
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "bundle.pem"))
    client_ctx.load_cert_chain(cert_file, key_file)
    peer, _ = handshake(server_ctx, client_ctx)
    assert peer is None
    with pytest.raises(SVIDRejected):
        ca.verify_svid(cert_file.read_bytes(), now=now + timedelta(seconds=1))
