"""The authorization table (tests/proxy_config/authz_cases.yaml, the pure evaluator's
conformance cases) run through real sockets on both data planes: each case's policies go into
an inbound listener's snapshot, its request is made for real (HTTP, or a TCP connection; mTLS
with an SVID of the case's principal, plaintext without one; the case's SNI; the case's port as
the listener's Service port) and the answer must be the case's: 200 from the app or Envoy's
`403 RBAC: access denied`; on TCP the echo, or a connection closed with nothing.

A case whose request cannot be made from this host is skipped with the reason: a peer address
(source/remote IP) other than 127.0.0.1's. One Envoy serves the whole module."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import dataplanes
import pytest
import yaml
from dataplanes import PlaneFactory
from proxy_harness import Backend, Client, client_tls, identity, run
from proxy_pki import CA, Cert

from proxy_runtime.config import Inbound, InboundListener, Snapshot, snapshot_to_json
from proxy_runtime.runtime import Ack

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "proxy_config" / "authz_cases.yaml").read_text("utf-8"))
SERVER_ID = "spiffe://td/ns/shop/sa/cart"
dataplane, envoy_host = dataplanes.dataplane, dataplanes.envoy_host  # the fixtures


def why_not(case: dict[str, Any]) -> str | None:
    req = case["request"]
    if "source_ip" in req or "remote_ip" in req:
        return "needs a peer address other than this host's"
    return None


class PKI:
    def __init__(self) -> None:
        self.ca = CA("authz table CA")
        self.server = self.ca.svid(SERVER_ID)
        self._svids: dict[str, Cert] = {}

    def svid(self, principal: str) -> Cert:
        uri = principal if principal.startswith("spiffe://") else f"spiffe://{principal}"
        if uri not in self._svids:
            self._svids[uri] = self.ca.svid(uri)
        return self._svids[uri]


@pytest.fixture(scope="module")
def table_pki() -> PKI:
    return PKI()


def snapshot(pki: PKI, case: dict[str, Any], app_port: int) -> dict[str, Any]:
    req = case["request"]
    li = InboundListener(port=0, local_address=f"127.0.0.1:{app_port}", mtls_mode="PERMISSIVE",
                         protocol="tcp" if req.get("tcp") else "http", bind_address="127.0.0.1",
                         service_port=req.get("port"))
    doc = snapshot_to_json(Snapshot(
        identity=identity(pki.ca.pem, pki.server, SERVER_ID),
        inbound=Inbound(service="cart", namespace="shop", listeners=(li,),
                        default_deny=bool(case.get("defaultDeny")))))
    doc["inbound"]["policies"] = [{"name": f"ns/p{i}", **p} for i, p in enumerate(case["policies"])]
    doc.pop("version")  # no longer the content's hash; the proxy hashes it itself
    return doc


def tls_for(pki: PKI, req: dict[str, Any]) -> ssl.SSLContext | None:
    principal = req.get("principal")
    if principal is None and "sni" in req:
        principal = "td/ns/shop/sa/a"  # SNI needs TLS; no case with an SNI looks at the principal
    return None if principal is None else client_tls(pki.ca.pem, pki.svid(principal))


class SniClient(Client):
    def __init__(self, port: int, ssl_ctx: ssl.SSLContext | None, sni: str | None) -> None:
        super().__init__(port, ssl_ctx)
        self.sni = sni

    async def connect(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.ssl_ctx,
            server_hostname=self.sni if self.ssl_ctx is not None else None)
        return self


async def http_decision(port: int, ctx: ssl.SSLContext | None, req: dict[str, Any],
                        app: Backend) -> str:
    c = SniClient(port, ctx, req.get("sni"))
    try:
        r = await c.request(req.get("method", "GET"), req.get("path", "/"),
                            host=req.get("host", "cart.shop"), headers=req.get("headers"))
    finally:
        await c.close()
    if r.status == 403 and not app.seen:
        assert r.body == b"RBAC: access denied", r.body
        return "deny"
    if r.status == 400 and not app.seen:  # the HTTP codec refused it (e.g. a method `get`)
        return "deny"
    assert r.status == 200 and len(app.seen) == 1, (r, app.seen)
    return "allow"


async def tcp_decision(port: int, ctx: ssl.SSLContext | None, sni: str | None) -> str:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=(sni or "") if ctx is not None else None)
    # at least a TLS record header's 5 bytes: Envoy's TLS inspector (PERMISSIVE) waits for
    # that many before it calls a connection plaintext
    writer.write(b"ping-pong")
    await writer.drain()
    try:
        got = await asyncio.wait_for(reader.read(100), 5)
    except (ConnectionError, ssl.SSLError):
        got = b""
    writer.close()
    assert got in (b"PING-PONG", b""), got
    return "allow" if got == b"PING-PONG" else "deny"


async def echo_server() -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_authorization_case_on_a_real_data_plane(case: dict[str, Any], dataplane: PlaneFactory,
                                                 table_pki: PKI) -> None:
    reason = why_not(case)
    if reason:
        pytest.skip(reason)
    req = case["request"]

    async def body() -> None:
        if req.get("tcp"):
            echo, app_port = await echo_server()
        else:
            app = await Backend("app").start()
            app_port = app.port
        plane = await dataplane()
        res = await plane.apply(snapshot(table_pki, case, app_port))
        assert isinstance(res, Ack), res
        ctx = tls_for(table_pki, req)
        if req.get("tcp"):
            got = await tcp_decision(plane.port("inbound-tcp"), ctx, req.get("sni"))
            echo.close()
        else:
            got = await http_decision(plane.port("inbound-http"), ctx, req, app)
            await app.stop()
        await plane.aclose()
        assert got == case["expect"], (plane.name, case["name"])

    run(body)


def test_most_of_the_table_runs_on_real_sockets() -> None:
    assert len(CASES) >= 98
    assert sum(why_not(c) is None for c in CASES) >= 80
