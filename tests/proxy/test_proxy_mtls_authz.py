"""Inbound mTLS per mode, SPIFFE identity, authorization end to end, proxy-to-proxy mTLS
(HTTP and TCP) with the peer's SPIFFE ID checked. The tests taking `dataplane` run on both data
planes (builtin, envoy; tests/proxy/dataplanes.py); proxy-to-proxy pairs the plane under test
with a builtin peer, so Envoy is checked against the builtin proxy both ways."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from dataplanes import BuiltinPlane, Plane, PlaneFactory
from proxy_harness import (
    Backend,
    Client,
    client_tls,
    cluster,
    get,
    identity,
    inbound,
    inbound_listener,
    route,
    run,
)

from proxy_runtime.config import (
    AuthorizationPolicy,
    Operation,
    Outbound,
    Rule,
    Snapshot,
    Source,
    TcpListener,
    UpstreamTls,
    VirtualHost,
    snapshot_to_json,
)
from proxy_runtime.runtime import Ack, ProxyRuntime


async def _inbound_proxy(make: PlaneFactory, pki: Any, app: Backend, mode: str,
                         policies: tuple[Any, ...] = ()) -> tuple[Plane, int]:
    snap = Snapshot(
        identity=identity(pki.ca.pem, pki.server, pki.server_id),
        inbound=inbound("cart", "shop", [inbound_listener(app.address, mode)], policies),
    )
    rt = await make()
    res = await rt.apply(snapshot_to_json(snap))
    assert isinstance(res, Ack), res
    return rt, rt.port("inbound-http")


async def _refused(port: int, ctx: ssl.SSLContext | None) -> bool:
    """True if no HTTP response comes back (handshake refused or connection dropped)."""
    try:
        r = await asyncio.wait_for(get(port, "/x", ssl_ctx=ctx), 5)
    except (ssl.SSLError, ConnectionError, OSError, asyncio.IncompleteReadError):
        return True
    return r.status == 0


def test_strict_accepts_a_valid_svid_and_passes_the_principal(pki: Any, dataplane: PlaneFactory) -> None:
    async def body() -> None:
        app = await Backend("app").start()
        rt, port = await _inbound_proxy(dataplane, pki, app, "STRICT")
        r = await get(port, "/hello", ssl_ctx=client_tls(pki.ca.pem, pki.client))
        assert r.status == 200 and r.json()["path"] == "/hello"
        await rt.aclose()

    run(body)


@pytest.mark.parametrize("who", ["plaintext", "no-client-cert", "other-ca", "expired"])
def test_strict_refuses(pki: Any, who: str, dataplane: PlaneFactory) -> None:
    async def body() -> None:
        app = await Backend("app").start()
        rt, port = await _inbound_proxy(dataplane, pki, app, "STRICT")
        ctx = {
            "plaintext": None,
            "no-client-cert": client_tls(pki.ca.pem, None),
            "other-ca": client_tls(pki.ca.pem, pki.stranger),
            "expired": client_tls(pki.ca.pem, pki.expired),
        }[who]
        assert await _refused(port, ctx)
        assert app.seen == []
        # and a good client still gets through afterwards
        assert (await get(port, "/ok", ssl_ctx=client_tls(pki.ca.pem, pki.client))).status == 200
        await rt.aclose()

    run(body)


def test_permissive_accepts_both_and_disable_accepts_plaintext_only(pki: Any, dataplane: PlaneFactory) -> None:
    async def body() -> None:
        app = await Backend("app").start()
        rt, port = await _inbound_proxy(dataplane, pki, app, "PERMISSIVE")
        assert (await get(port, "/plain")).status == 200
        assert (await get(port, "/tls", ssl_ctx=client_tls(pki.ca.pem, pki.client))).status == 200
        assert await _refused(port, client_tls(pki.ca.pem, pki.stranger))
        await rt.aclose()
        rt, port = await _inbound_proxy(dataplane, pki, app, "DISABLE")
        assert (await get(port, "/plain")).status == 200
        assert await _refused(port, client_tls(pki.ca.pem, pki.client))
        await rt.aclose()

    run(body)


def test_authorization_end_to_end(pki: Any, dataplane: PlaneFactory) -> None:
    policies = (
        AuthorizationPolicy(
            name="shop/allow-web",
            action="ALLOW",
            rules=(Rule(sources=(Source(principals=("td/ns/shop/sa/web",)),),
                        operations=(Operation(methods=("GET",), paths=("/ok*",)),)),),
        ),
        AuthorizationPolicy(
            name="shop/deny-admin",
            action="DENY",
            rules=(Rule(operations=(Operation(paths=("/ok/admin",)),)),),
        ),
    )

    async def body() -> None:
        app = await Backend("app").start()
        rt, port = await _inbound_proxy(dataplane, pki, app, "PERMISSIVE", policies)
        web = client_tls(pki.ca.pem, pki.client)
        evil = client_tls(pki.ca.pem, pki.intruder)
        c = Client(port, web)
        assert (await c.request(path="/ok/1")).status == 200
        denied = await c.request(path="/other")
        assert denied.status == 403 and denied.body == b"RBAC: access denied"
        early = await c.request("POST", "/ok/1", body=b"x")
        assert early.status == 403
        if rt.name == "envoy":  # denied before its body was read: Envoy closes the connection
            assert early.headers["connection"] == "close"
            await c.close()
            c = Client(port, web)
        assert (await c.request(path="/ok/admin")).status == 403  # DENY wins over ALLOW
        await c.close()
        assert (await get(port, "/ok/1", ssl_ctx=evil)).status == 403  # wrong principal
        assert (await get(port, "/ok/1")).status == 403  # plaintext: no principal
        assert [s.path for s in app.seen] == ["/ok/1"]
        if isinstance(rt, BuiltinPlane):
            assert sum(rt.rt.stats.denied.values()) == 5
        await rt.aclose()

    run(body)


def _mesh_pair(pki: Any, app: Backend, expected: str, *, tcp: bool = False,
               policies: tuple[Any, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Server proxy (inbound STRICT in front of app) and client proxy (outbound, mTLS origination)."""
    server = Snapshot(
        identity=identity(pki.ca.pem, pki.server, pki.server_id),
        inbound=inbound("cart", "shop", [inbound_listener(app.address, "STRICT", "tcp" if tcp else "http")],
                        policies),
    )
    return snapshot_to_json(server), {}  # the client side needs the server's port: built later


def _client_snapshot(pki: Any, server_port: int, expected: str, tcp: bool) -> dict[str, Any]:
    tls = UpstreamTls(mode="MUTUAL", peer_spiffe_ids=(expected,))
    c = cluster("cart", f"127.0.0.1:{server_port}", tls=tls, protocol="tcp" if tcp else "http")
    snap = Snapshot(
        identity=identity(pki.ca.pem, pki.client, pki.client_id),
        outbound=None if tcp else Outbound(port=0, virtual_hosts=(VirtualHost("cart", ("cart",), (route("cart"),)),)),
        tcp=(TcpListener(port=0, cluster="cart", bind_address="127.0.0.1"),) if tcp else (),
        clusters=(c,),
    )
    return snapshot_to_json(snap)


def test_proxy_to_proxy_mtls_checks_the_peer_spiffe_id(pki: Any, dataplane: PlaneFactory) -> None:
    # the plane under test is the client (mTLS origination); the server is a builtin proxy
    async def body() -> None:
        app = await Backend("app").start()
        server_snap, _ = _mesh_pair(pki, app, pki.server_id)
        srv = ProxyRuntime(asyncio.get_running_loop())
        assert isinstance(await srv.apply(server_snap), Ack)
        sport = srv.port_of("inbound-http", 0)
        assert sport
        cli = await dataplane()
        assert isinstance(await cli.apply(_client_snapshot(pki, sport, pki.server_id, False)), Ack)
        cport = cli.port("outbound")
        r = await get(cport, "/via-mesh", host="cart")
        assert r.status == 200 and r.json()["path"] == "/via-mesh"
        # re-applying with the same identity keeps the warm mTLS connection to the server
        snap2 = _client_snapshot(pki, sport, pki.server_id, False)
        snap2["revision"] = "again"
        assert isinstance(await cli.apply(snap2), Ack)
        assert (await get(cport, "/again", host="cart")).status == 200
        if isinstance(cli, BuiltinPlane):
            assert cli.rt.stats.upstream_connections == {"cart": 1}
        # the client proxy expects another identity: it refuses the server
        assert isinstance(await cli.apply(_client_snapshot(pki, sport, "spiffe://td/ns/shop/sa/other", False)), Ack)
        r = await get(cport, "/wrong-id", host="cart")
        assert r.status == 503
        # the builtin names the SPIFFE ID; Envoy's 503 is its generic upstream connect error
        assert (b"upstream connect error" if cli.name == "envoy" else b"SPIFFE ID") in r.body
        assert all(s.path != "/wrong-id" for s in app.seen)
        # the SPIFFE ID was the only reason: expecting the right one again gets through
        assert isinstance(await cli.apply(_client_snapshot(pki, sport, pki.server_id, False)), Ack)
        assert (await get(cport, "/right-id", host="cart")).status == 200
        await cli.aclose()
        await srv.aclose()

    run(body)


async def _echo_server() -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _tcp_roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    out = b""
    try:
        while len(out) < len(payload) and (data := await asyncio.wait_for(reader.read(65536), 5)):
            out += data
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return out


def test_tcp_over_mtls_with_l4_authorization(pki: Any, dataplane: PlaneFactory) -> None:
    # the plane under test is the server (mTLS termination, L4 RBAC); the client is builtin
    allow_web = (AuthorizationPolicy(name="shop/tcp", action="ALLOW",
                                     rules=(Rule(sources=(Source(principals=("td/ns/shop/sa/web",)),)),)),)
    allow_other = (AuthorizationPolicy(name="shop/tcp", action="ALLOW",
                                       rules=(Rule(sources=(Source(principals=("td/ns/shop/sa/nobody",)),)),)),)
    # an ALLOW rule with HTTP-only fields is dropped on TCP: allows nothing here
    allow_http_only = (AuthorizationPolicy(name="shop/http", action="ALLOW",
                                           rules=(Rule(sources=(Source(principals=("td/ns/shop/sa/web",)),),
                                                       operations=(Operation(methods=("GET",)),)),)),)

    async def body() -> None:
        echo, eport = await _echo_server()
        app_addr = f"127.0.0.1:{eport}"
        loop = asyncio.get_running_loop()
        for policies, allowed in ((allow_web, True), (allow_other, False), (allow_http_only, False)):
            server = Snapshot(
                identity=identity(pki.ca.pem, pki.server, pki.server_id),
                inbound=inbound("cart", "shop", [inbound_listener(app_addr, "STRICT", "tcp")], policies),
            )
            srv = await dataplane()
            assert isinstance(await srv.apply(snapshot_to_json(server)), Ack)
            sport = srv.port("inbound-tcp")
            cli = ProxyRuntime(loop)
            res = await cli.apply(_client_snapshot(pki, sport, pki.server_id, True))
            assert isinstance(res, Ack), res
            cport = cli.port_of("tcp-out", 0)
            assert cport
            payload = b"hello over mtls " * 1000
            got = await _tcp_roundtrip(cport, payload)
            if allowed:
                assert got == payload.upper()
            else:
                assert got == b""
                if isinstance(srv, BuiltinPlane):
                    assert sum(srv.rt.stats.denied.values()) == 1
            await cli.aclose()
            await srv.aclose()
        echo.close()

    run(body)


def test_audit_policies_only_log_and_access_log_follows_sampling(pki: Any, caplog: Any) -> None:
    import logging

    from proxy_runtime.config import Telemetry

    audit = (AuthorizationPolicy(name="shop/audit-admin", action="AUDIT",
                                 rules=(Rule(operations=(Operation(paths=("/admin*",)),)),)),)

    async def body() -> None:
        app = await Backend("app").start()
        for sampling, expect_lines in ((0.0, 0), (100.0, 2)):
            snap = Snapshot(
                identity=identity(pki.ca.pem, pki.server, pki.server_id),
                inbound=inbound("cart", "shop", [inbound_listener(app.address, "PERMISSIVE")], audit),
                telemetry=Telemetry(access_log_sampling_percent=sampling),
            )
            rt = ProxyRuntime(asyncio.get_running_loop())
            assert isinstance(await rt.apply(snapshot_to_json(snap)), Ack)
            port = rt.port_of("inbound-http", 0)
            assert port
            caplog.clear()
            with caplog.at_level(logging.INFO):
                assert (await get(port, "/admin/x")).status == 200  # AUDIT never denies
                assert (await get(port, "/public")).status == 200
            audits = [r for r in caplog.records if r.name == "meshcd.audit"]
            assert len(audits) == 1 and "shop/audit-admin" in audits[0].getMessage()
            access = [r for r in caplog.records if r.name == "meshcd.access"]
            assert len(access) == expect_lines
            if access:
                line = __import__("json").loads(access[0].getMessage())
                assert line["status"] == 200 and line["direction"] == "inbound"
            await rt.aclose()

    run(body)
