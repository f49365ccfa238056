"""#17 finding 3: the path is normalized (proxy_runtime.config.paths) before authorization
and routing, and the normalized path is what goes upstream. A DENY on /admin* is not
bypassed by another spelling of /admin."""

from __future__ import annotations

from typing import Any

import pytest
from hardening_support import harness_backend, running_proxy, status_of
from proxy_harness import (
    cluster,
    identity,
    inbound,
    inbound_listener,
    outbound_snapshot,
    raw,
    route,
    run,
)

from proxy_runtime.config import (
    AuthorizationPolicy,
    Operation,
    PathMatch,
    RouteMatch,
    Rule,
    Snapshot,
    snapshot_to_json,
)

_DENY_ADMIN = (AuthorizationPolicy(name="shop/deny-admin", action="DENY",
                                   rules=(Rule(operations=(Operation(paths=("/admin*",)),)),)),)


def _inbound_snapshot(pki: Any, app_address: str) -> dict[str, Any]:
    return snapshot_to_json(Snapshot(
        identity=identity(pki.ca.pem, pki.server, pki.server_id),
        inbound=inbound("frontend", "shop", [inbound_listener(app_address, "PERMISSIVE")], _DENY_ADMIN),
    ))


def _request(target: bytes, host: bytes = b"frontend.shop") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"


BYPASSES = [b"/admin", b"//admin", b"/./admin", b"/%61dmin", b"/x/../admin", b"/%2e/admin",
            b"/%2E%2E/admin", b"/\\admin", b"///admin/../admin/x", b"http://frontend.shop/admin",
            b"http://frontend.shop//admin/./panel"]


@pytest.mark.parametrize("target", BYPASSES, ids=[t.decode() for t in BYPASSES])
def test_deny_admin_is_not_bypassed_by_another_spelling(pki: Any, target: bytes) -> None:
    async def body() -> None:
        async with harness_backend("app") as app, running_proxy(_inbound_snapshot(pki, app.address)) as rt:
            port = rt.port_of("inbound-http", 0)
            assert port
            out = await raw(port, _request(target))
            assert status_of(out) == 403, out[:200]
            assert app.seen == []

    run(body)


@pytest.mark.parametrize("target", [b"/%2fadmin", b"/%5Cadmin", b"/adm%00in", b"/%zz/admin", b"*",
                                    b"frontend.shop:80", b"http://user@frontend.shop/admin"])
def test_targets_that_cannot_be_normalized_are_refused(pki: Any, target: bytes) -> None:
    async def body() -> None:
        async with harness_backend("app") as app, running_proxy(_inbound_snapshot(pki, app.address)) as rt:
            port = rt.port_of("inbound-http", 0)
            assert port
            out = await raw(port, _request(target))
            assert status_of(out) == 400, out[:200]
            assert b"connection: close" in out.lower()
            assert app.seen == []

    run(body)


def test_the_normalized_path_is_forwarded_and_semicolons_are_kept(pki: Any) -> None:
    async def body() -> None:
        async with harness_backend("app") as app, running_proxy(_inbound_snapshot(pki, app.address)) as rt:
            port = rt.port_of("inbound-http", 0)
            assert port
            out = await raw(port, _request(b"/pub/./x/%7e/..//y%3b?q=%2e%2e/"))
            assert status_of(out) == 200, out[:200]
            # as Envoy: ';' is an ordinary path character, so /;/admin is not /admin
            out = await raw(port, _request(b"/;/admin"))
            assert status_of(out) == 200, out[:200]
            assert [s.path for s in app.seen] == ["/pub/x/y%3B?q=%2e%2e/", "/;/admin"]

    run(body)


def test_routing_uses_the_normalized_path_and_the_absolute_form_authority() -> None:
    async def body() -> None:
        async with harness_backend("admin") as admin, harness_backend("web") as web:
            snap = outbound_snapshot(
                [route("admin", match=RouteMatch(path=PathMatch(prefix="/admin"))), route("web")],
                [cluster("admin", admin.address), cluster("web", web.address)],
            )
            async with running_proxy(snap) as rt:
                port = rt.port_of("outbound", 0)
                assert port
                out = await raw(port, _request(b"//x/../admin/%70anel", host=b"svc"))
                assert status_of(out) == 200 and b'"backend": "admin"' in out, out
                # absolute-form: its authority is the Host (the Host line is ignored)
                out = await raw(port, _request(b"http://svc/y", host=b"nobody.example"))
                assert status_of(out) == 200 and b'"backend": "web"' in out, out
            assert [s.path for s in admin.seen] == ["/admin/panel"]
            assert [(s.path, s.headers["host"]) for s in web.seen] == [("/y", "svc")]

    run(body)
