"""#17 finding 4: an X509-SVID carries exactly one URI SAN, a SPIFFE ID (X509-SVID spec 4.1).
A peer certificate with two URI SANs, or none that is a SPIFFE ID, is refused after a real
mTLS handshake: by an inbound listener (HTTP and TCP) and by an mTLS upstream cluster."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from hardening_support import harness_backend, running_proxy
from proxy_harness import client_tls, cluster, get, identity, inbound, inbound_listener, route, run

from proxy_runtime.config import (
    AuthorizationPolicy,
    Outbound,
    Rule,
    Snapshot,
    Source,
    UpstreamTls,
    VirtualHost,
    snapshot_to_json,
)

WEB = "spiffe://td/ns/shop/sa/web"
ADMIN = "spiffe://td/ns/shop/sa/admin"

# who -> the URI SANs of the client certificate (and DNS SANs)
BAD = {
    "two-spiffe-ids": ((WEB, ADMIN), ()),
    "spiffe-id-and-https-uri": ((WEB, "https://web.shop/"), ()),
    "https-uri-only": (("https://web.shop/",), ()),
    "no-uri-san": ((), ("web.shop",)),
}

_ALLOW_WEB = (AuthorizationPolicy(name="shop/allow-web", action="ALLOW",
                                  rules=(Rule(sources=(Source(principals=("td/ns/shop/sa/web",)),)),)),)


def test_svid_spiffe_id_takes_exactly_one_uri_san() -> None:
    from proxy_runtime.dataplane.tls import svid_spiffe_id

    assert svid_spiffe_id({"subjectAltName": (("URI", WEB),)}) == WEB
    assert svid_spiffe_id({"subjectAltName": (("DNS", "x"), ("URI", WEB))}) == WEB
    assert svid_spiffe_id({"subjectAltName": (("URI", WEB), ("URI", ADMIN))}) is None
    assert svid_spiffe_id({"subjectAltName": (("URI", WEB), ("URI", "https://x/"))}) is None
    assert svid_spiffe_id({"subjectAltName": (("URI", "https://x/"),)}) is None
    assert svid_spiffe_id({"subjectAltName": (("DNS", "x"),)}) is None
    assert svid_spiffe_id({}) is None
    assert svid_spiffe_id(None) is None


async def _no_response(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        r = await asyncio.wait_for(get(port, "/x", ssl_ctx=ctx), 5)
    except (ssl.SSLError, ConnectionError, OSError, asyncio.IncompleteReadError):
        return True
    return r.status == 0


@pytest.mark.parametrize("who", sorted(BAD))
def test_inbound_http_refuses_a_certificate_that_is_not_an_svid(pki: Any, who: str) -> None:
    uris, dns = BAD[who]
    cert = pki.ca.svid(WEB, uris=uris, dns=dns)

    async def body() -> None:
        async with harness_backend("app") as app:
            snap = snapshot_to_json(Snapshot(
                identity=identity(pki.ca.pem, pki.server, pki.server_id),
                inbound=inbound("cart", "shop", [inbound_listener(app.address, "STRICT")], _ALLOW_WEB),
            ))
            async with running_proxy(snap) as rt:
                port = rt.port_of("inbound-http", 0)
                assert port
                assert await _no_response(port, client_tls(pki.ca.pem, cert))
                assert app.seen == []
                # a proper SVID still gets through
                r = await get(port, "/ok", ssl_ctx=client_tls(pki.ca.pem, pki.client))
                assert r.status == 200
                assert [s.path for s in app.seen] == ["/ok"]

    run(body)


def test_inbound_tcp_refuses_two_spiffe_ids(pki: Any) -> None:
    cert = pki.ca.svid(WEB, uris=(WEB, ADMIN))
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.append(data)
            writer.write(data.upper())
        writer.close()

    async def body() -> None:
        echo = await asyncio.start_server(handle, "127.0.0.1", 0)
        try:
            app = f"127.0.0.1:{echo.sockets[0].getsockname()[1]}"
            snap = snapshot_to_json(Snapshot(
                identity=identity(pki.ca.pem, pki.server, pki.server_id),
                inbound=inbound("cart", "shop", [inbound_listener(app, "STRICT", "tcp")], _ALLOW_WEB),
            ))
            async with running_proxy(snap) as rt:
                port = rt.port_of("inbound-tcp", 0)
                assert port
                for ctx, expect in ((client_tls(pki.ca.pem, cert), b""),
                                    (client_tls(pki.ca.pem, pki.client), b"HELLO")):
                    got = b""
                    try:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
                        try:
                            writer.write(b"hello")
                            got = await asyncio.wait_for(reader.read(100), 5)
                        finally:
                            writer.close()
                    except (ssl.SSLError, ConnectionError, OSError):
                        pass
                    assert got == expect
                assert seen == [b"hello"]  # only the proper SVID's bytes reached the app
        finally:
            echo.close()

    run(body)


def test_upstream_refuses_a_server_certificate_with_two_spiffe_ids(pki: Any) -> None:
    # the server presents the expected ID and another one: not an SVID, refused
    two = pki.ca.svid(pki.server_id, uris=(pki.server_id, ADMIN))

    async def body() -> None:
        async with harness_backend("app") as app:
            server = snapshot_to_json(Snapshot(
                identity=identity(pki.ca.pem, two, pki.server_id),
                inbound=inbound("cart", "shop", [inbound_listener(app.address, "STRICT")]),
            ))
            async with running_proxy(server) as srv:
                sport = srv.port_of("inbound-http", 0)
                assert sport
                tls = UpstreamTls(mode="MUTUAL", peer_spiffe_ids=(pki.server_id,))
                client = snapshot_to_json(Snapshot(
                    identity=identity(pki.ca.pem, pki.client, pki.client_id),
                    outbound=Outbound(port=0, virtual_hosts=(VirtualHost("cart", ("cart",), (route("cart"),)),)),
                    clusters=(cluster("cart", f"127.0.0.1:{sport}", tls=tls),),
                ))
                async with running_proxy(client) as cli:
                    cport = cli.port_of("outbound", 0)
                    assert cport
                    r = await get(cport, "/via-mesh", host="cart")
                    assert r.status == 503 and b"SPIFFE" in r.body, (r.status, r.body)
                    assert app.seen == []

    run(body)
