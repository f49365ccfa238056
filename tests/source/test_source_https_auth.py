"""https token auth against a local TLS server that always answers 401 (no network).

The fetch runs in a child process because trusting the test CA is a libgit2 process-wide
setting that must not leak into other tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reconciler.source import AuthFailed, GitMirror

TOKEN = "ghp_TOKEN-THAT-MUST-NOT-LEAK-1234"
REPO_ROOT = Path(__file__).resolve().parents[2]


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str | None]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        body = f"denied for {TOKEN}".encode()  # a forge that echoes the token back
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(context: ssl.SSLContext | None) -> tuple[ThreadingHTTPServer, list[str | None]]:
    seen: list[str | None] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def _tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshcd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture
def https_401(tmp_path: Path) -> Iterator[tuple[int, Path, list[str | None]]]:
    ca_file, cert_file, key_file = _tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server, seen = _serve(context)
    yield server.server_address[1], ca_file, seen
    server.shutdown()
    server.server_close()


CHILD = """
import json, sys
import pygit2
from pathlib import Path
from reconciler.source import GitMirror, HttpsToken, SecretRef, SourceError
pygit2.settings.set_ssl_cert_locations(sys.argv[1], None)
mirror = GitMirror(Path(sys.argv[2]), sys.argv[3], HttpsToken(SecretRef(file=Path(sys.argv[4]))))
try:
    mirror.fetch()
    print(json.dumps({"error": None}))
except SourceError as exc:
    print(json.dumps({"error": type(exc).__name__, "temporary": exc.temporary,
                      "message": str(exc), "repr": repr(exc)}))
"""


def test_token_is_sent_as_basic_auth_and_a_401_is_auth_failed(
    tmp_path: Path, https_401: tuple[int, Path, list[str | None]]
) -> None:
    port, ca_file, seen = https_401
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    url = f"https://127.0.0.1:{port}/org/mesh.git"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(ca_file), str(tmp_path / "m.git"), url, str(token_file)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["error"] == "AuthFailed" and result["temporary"] is False
    assert TOKEN not in child.stdout and TOKEN not in child.stderr

    expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert seen[0] is None  # libgit2 sends credentials only when challenged
    assert expected in seen  # the token went to the server, as the https password
    assert len(seen) <= 1 + 3  # bounded retries, no loop


def test_plain_http_401_without_credentials(tmp_path: Path) -> None:
    server, seen = _serve(None)
    try:
        mirror = GitMirror(tmp_path / "m.git", f"http://127.0.0.1:{server.server_address[1]}/r.git")
        with pytest.raises(AuthFailed, match="none are configured"):
            mirror.fetch()
        assert seen and all(h is None for h in seen)
    finally:
        server.shutdown()
        server.server_close()
