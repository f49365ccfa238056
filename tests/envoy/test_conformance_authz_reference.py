"""The authorization reference suite (tests/proxy_config/test_authz_reference.py: random policies
from a small vocabulary, decided by a naive reference written from the documented rules) run
through real sockets on both data planes. The requests are the ones this host can make: the
peer is 127.0.0.1 (no forwarded remote address), the destination 127.0.0.1; principal (mTLS),
SNI, Service port, host, method, path, headers and TCP vary as in the pure suite."""

from __future__ import annotations

from typing import Any

import dataplanes
import test_authz_reference as reference
from dataplanes import PlaneFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_harness import Backend, run
from test_conformance_authz import PKI, echo_server, http_decision, snapshot, tcp_decision, tls_for

from proxy_runtime.runtime import Ack

dataplane, envoy_host = dataplanes.dataplane, dataplanes.envoy_host  # the fixtures
PKI_ = PKI()


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    r = draw(reference.REQUEST)
    r.update(source_ip="127.0.0.1", remote_ip=None, destination_ip="127.0.0.1")
    if r["principal"] is None:
        r["sni"] = None  # an SNI needs TLS, and TLS here a client certificate
    return r


def as_case(raw: list[dict[str, Any]], default_deny: bool, r: dict[str, Any]) -> dict[str, Any]:
    req = {k: v for k, v in r.items() if v is not None and k not in ("source_ip", "remote_ip",
                                                                     "destination_ip")}
    if not req.get("tcp"):
        req.pop("tcp", None)
    return {"policies": [{k: v for k, v in p.items() if k != "name"} for p in raw],
            "defaultDeny": default_deny, "request": req}


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=reference.policies(), default_deny=st.booleans(), r=requests())
def test_real_data_plane_agrees_with_the_reference(dataplane: PlaneFactory, raw: list[dict[str, Any]],
                                                   default_deny: bool, r: dict[str, Any]) -> None:
    want = "allow" if reference.ref_evaluate(raw, default_deny, r)[0] else "deny"
    case = as_case(raw, default_deny, r)
    req = case["request"]

    async def body() -> None:
        if req.get("tcp"):
            echo, app_port = await echo_server()
        else:
            app = await Backend("app").start()
            app_port = app.port
        plane = await dataplane()
        res = await plane.apply(snapshot(PKI_, case, app_port))
        assert isinstance(res, Ack), res
        ctx = tls_for(PKI_, req)
        if req.get("tcp"):
            got = await tcp_decision(plane.port("inbound-tcp"), ctx, req.get("sni"))
            echo.close()
        else:
            got = await http_decision(plane.port("inbound-http"), ctx, req, app)
            await app.stop()
        await plane.aclose()
        assert got == want, (plane.name, case)

    run(body)
