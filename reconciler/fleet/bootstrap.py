"""Joining the fleet: a join token and a CSR in, an X.509-SVID and the trust bundle out.

    POST /bootstrap {"token", "service", "namespace", "csrPem"}
        -> 200 {"chainPem", "trustBundlePem", "fleetUrl", "spiffeId"}
        -> 403 {"error", "reason"}   token unknown, used, expired, revoked or for another service
        -> 400 {"error"}             bad body, bad names, a CSR the CA will not sign
    GET /bundle -> 200 {"trustBundlePem"}   (public: the proxy checks it against its pin)

`BootstrapService.handle` is the logic (no sockets); `BootstrapServer` serves it over
server-authenticated TLS with a minimal HTTP/1.1 reader (one request per connection), and
`bootstrap_router` mounts it in a FastAPI app that already speaks TLS. See docs/fleet.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from reconciler.audit import AuditLog
from reconciler.ca import (
    DEFAULT_SVID_TTL,
    CAError,
    CertificateAuthority,
    JoinTokens,
    ServerCredentials,
    TokenRefused,
    spiffe_id,
)
from reconciler.ca import certs as ca_certs
from reconciler.fleet.tls import server_context
from reconciler.net.limits import BOOTSTRAP_LIMITS, ListenerLimits
from reconciler.net.listener import GuardedListener

log = logging.getLogger("meshcd.fleet.bootstrap")

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
_FIELDS = ("token", "service", "namespace", "csrPem")

Response = tuple[int, dict[str, Any]]


class BootstrapService:
    def __init__(
        self,
        ca: CertificateAuthority,
        tokens: JoinTokens,
        audit: AuditLog | None,
        *,
        clock: Callable[[], datetime],
        fleet_url: str | Callable[[], str],
        svid_ttl: timedelta = DEFAULT_SVID_TTL,
    ) -> None:
        self.ca = ca
        self.tokens = tokens
        self.audit = audit
        self.clock = clock
        self.fleet_url = fleet_url
        self.svid_ttl = svid_ttl

    def bundle(self) -> Response:
        return 200, {"trustBundlePem": self.ca.trust_bundle_pem().decode("ascii")}

    def handle(self, method: str, path: str, body: bytes, peer: str) -> Response:
        """One request. Blocking (database, signing): call it from a worker thread."""
        if path == "/bundle":
            return self.bundle() if method == "GET" else (405, {"error": "use GET"})
        if path != "/bootstrap":
            return 404, {"error": f"no such endpoint {path!r}"}
        if method != "POST":
            return 405, {"error": "use POST"}
        return self.bootstrap(body, peer)

    def bootstrap(self, body: bytes, peer: str) -> Response:
        if len(body) > MAX_BODY:
            return 413, {"error": f"body over {MAX_BODY} bytes"}
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, {"error": "body is not JSON"}
        if not isinstance(doc, dict) or set(doc) != set(_FIELDS) or not all(
            isinstance(doc[k], str) and doc[k] for k in _FIELDS
        ):
            return 400, {"error": f"body must be an object with exactly the strings {', '.join(_FIELDS)}"}
        service, namespace = doc["service"], doc["namespace"]
        try:
            identity = spiffe_id(self.ca.trust_domain, namespace, service)
            _check_csr(doc["csrPem"])
        except (CAError, ValueError) as exc:
            return 400, {"error": str(exc)}
        now = self.clock()
        try:
            info = self.tokens.redeem(doc["token"], service, namespace, now=now)
        except TokenRefused as exc:
            self._audit("token.refused", service, {
                "reason": exc.reason, "token_id": exc.token_id, "service": service,
                "namespace": namespace, "peer": peer}, now)
            return 403, {"error": str(exc), "reason": exc.reason}
        try:
            chain = self.ca.issue_svid(doc["csrPem"], identity, now=now, ttl=self.svid_ttl)
        except (CAError, ValueError) as exc:
            self._audit("token.refused", service, {
                "reason": "csr_rejected", "token_id": info.id, "error": str(exc), "peer": peer}, now)
            return 400, {"error": str(exc)}
        self._audit("token.used", identity, {
            "token_id": info.id, "service": service, "namespace": namespace, "peer": peer}, now)
        url = self.fleet_url() if callable(self.fleet_url) else self.fleet_url
        return 200, {"chainPem": chain.decode("ascii"),
                     "trustBundlePem": self.ca.trust_bundle_pem().decode("ascii"),
                     "fleetUrl": url, "spiffeId": identity}

    def _audit(self, kind: str, subject: str, data: dict[str, Any], now: datetime) -> None:
        if self.audit is not None:
            self.audit.append("bootstrap", kind, subject, data, now=now)


def _check_csr(pem: str) -> None:
    """Refuse a bad CSR before the token is redeemed, so a broken client does not burn it."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
        valid = csr.is_signature_valid
        key = csr.public_key()
    except Exception as exc:
        raise ValueError(f"not a usable PEM certificate signing request: {exc}") from None
    if not valid:
        raise ValueError("the CSR's signature does not verify")
    ca_certs.check_public_key(key)


class BootstrapServer:
    """`BootstrapService` over HTTPS (server-authenticated TLS), one request per connection."""

    def __init__(
        self,
        ca: CertificateAuthority,
        tokens: JoinTokens,
        audit: AuditLog | None,
        *,
        clock: Callable[[], datetime],
        fleet_url: str | Callable[[], str],
        credentials: ServerCredentials | None = None,
        hostnames: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = ("127.0.0.1",),
        svid_ttl: timedelta = DEFAULT_SVID_TTL,
    ) -> None:
        self.service = BootstrapService(ca, tokens, audit, clock=clock, fleet_url=fleet_url,
                                        svid_ttl=svid_ttl)
        creds = credentials or ca.issue_server_cert(hostnames, ips, now=clock())
        self._ssl = server_context(creds, client_ca_pem=None)
        self.listener: GuardedListener | None = None
        self._accepter: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._host = "127.0.0.1"
        self._port = 0

    async def start(self, host: str, port: int, *, advertise: str | None = None,
                    limits: ListenerLimits = BOOTSTRAP_LIMITS) -> None:
        """Listen on host:port behind a `GuardedListener` (caps; an accept loop that backs
        off and resumes when descriptors run out)."""
        listen = socket.create_server((host, port), backlog=1024,
                                      family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener = GuardedListener("bootstrap", listen, limits)
        self._port = listen.getsockname()[1]
        self._host = advertise or ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host)
        self._accepter = asyncio.get_running_loop().create_task(self.listener.serve(self._accepted))

    def _accepted(self, csock: socket.socket, _peer: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(csock))
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def _connect(self, csock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader, self._client), csock,
                ssl=self._ssl, ssl_handshake_timeout=10.0)
        except (OSError, TimeoutError):  # ssl.SSLError is an OSError
            with contextlib.suppress(OSError):
                csock.close()

    async def stop(self) -> None:
        if self._accepter is not None and self.listener is not None:
            self._accepter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepter
            self.listener.sock.close()
            self._accepter = None
        for task in list(self._conns):
            task.cancel()

    @property
    def bound_port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        try:
            status, doc = await asyncio.wait_for(self._request(reader, peer), 15.0)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        body = json.dumps(doc).encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n")
        with contextlib.suppress(OSError):
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5.0)

    async def _request(self, reader: asyncio.StreamReader, peer: str) -> Response:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return 431, {"error": "request head too large"}
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, {"error": "not an HTTP/1.1 request"}
        method, target = parts[0], parts[1].split("?", 1)[0]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return 400, {"error": "bad Content-Length"}
            elif name.strip().lower() == "transfer-encoding":
                return 411, {"error": "send a Content-Length"}
        if length < 0:
            return 400, {"error": "bad Content-Length"}
        if length > MAX_BODY:
            if length <= 16 * MAX_BODY:  # read it, so the client sees our answer, not a reset
                await reader.readexactly(length)
            return 413, {"error": f"body over {MAX_BODY} bytes"}
        body = await reader.readexactly(length) if length else b""
        return await asyncio.to_thread(self.service.handle, method, target, body, peer)


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
            431: "Request Header Fields Too Large"}


def bootstrap_router(service: BootstrapService) -> Any:
    """A FastAPI router with `POST /bootstrap` and `GET /bundle`, for a TLS-serving app."""
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    router = APIRouter()

    @router.post("/bootstrap")
    async def bootstrap(request: Request) -> JSONResponse:
        body = await request.body()
        client = request.client
        peer = f"{client.host}:{client.port}" if client else "unknown"
        status, doc = await asyncio.to_thread(service.handle, "POST", "/bootstrap", body, peer)
        return JSONResponse(doc, status_code=status)

    @router.get("/bundle")
    async def bundle() -> JSONResponse:
        status, doc = service.bundle()
        return JSONResponse(doc, status_code=status)

    return router
