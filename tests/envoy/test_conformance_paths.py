"""Path normalization on both data planes, Envoy's answers being the reference: a DENY on
`/admin*` holds against path tricks, and an allowed path reaches the app normalized.

The builtin proxy normalizes as Istio's MERGE_SLASHES level does (proxy_runtime.config.paths),
so both planes answer every case alike."""

from __future__ import annotations

from typing import Any

import dataplanes
import pytest
from dataplanes import PlaneFactory
from proxy_harness import Backend, inbound, inbound_listener, raw, run

from proxy_runtime.config import AuthorizationPolicy, Operation, Rule, Snapshot, snapshot_to_json
from proxy_runtime.runtime import Ack

dataplane, envoy_host = dataplanes.dataplane, dataplanes.envoy_host  # the fixtures

# (request target, Envoy's status, the path the app sees or None)
CASES = [
    ("/admin", 403, None),
    ("//admin", 403, None),
    ("/./admin", 403, None),
    ("/x/../admin", 403, None),
    ("/%2e/admin", 403, None),
    ("/%61dmin", 403, None),
    ("http://cart/admin", 403, None),
    ("/public", 200, "/public"),
    ("//public//x", 200, "/public/x"),
    ("/a/./b/../public", 200, "/a/public"),
    ("http://cart/public?q=1", 200, "/public?q=1"),
]


def _doc(app: Backend) -> dict[str, Any]:
    deny = AuthorizationPolicy(name="shop/deny-admin", action="DENY",
                               rules=(Rule(operations=(Operation(paths=("/admin*",)),)),))
    return snapshot_to_json(Snapshot(inbound=inbound(
        "cart", "shop", [inbound_listener(app.address, "DISABLE")], (deny,))))


@pytest.mark.parametrize(("target", "status", "seen"), CASES, ids=[c[0] for c in CASES])
def test_paths_are_normalized_before_authorization_and_forwarding(
        target: str, status: int, seen: str | None, dataplane: PlaneFactory) -> None:
    async def body() -> tuple[int, list[str]]:
        app = await Backend("app").start()
        plane = await dataplane()
        try:
            assert isinstance(await plane.apply(_doc(app)), Ack)
            out = await raw(plane.port("inbound-http"),
                            f"GET {target} HTTP/1.1\r\nHost: cart\r\nConnection: close\r\n\r\n".encode())
            return int(out.split(b" ", 2)[1]), [s.path for s in app.seen]
        finally:
            await plane.aclose()
            await app.stop()

    got, paths = run(body)
    assert (got, paths) == (status, [] if seen is None else [seen])
