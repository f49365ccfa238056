"""The route-match tables of the pure matcher (tests/proxy_config/test_route_matcher.py: path,
method, header and query-parameter cases, host lookup) through real sockets on both data
planes: a route that matches answers from the backend, no route answers 404. One Envoy serves
the whole module."""

from __future__ import annotations

from typing import Any

import dataplanes
import pytest
import test_route_matcher as table
from dataplanes import PlaneFactory
from proxy_harness import Backend, Client, run

from proxy_runtime.runtime import Ack

dataplane, envoy_host = dataplanes.dataplane, dataplanes.envoy_host  # the fixtures


def _doc(virtual_hosts: list[dict[str, Any]], backend: Backend) -> dict[str, Any]:
    clusters = sorted({c["cluster"] for v in virtual_hosts for r in v["routes"] for c in r["clusters"]})
    return {"outbound": {"port": 0, "bindAddress": "127.0.0.1", "virtualHosts": virtual_hosts},
            "clusters": [{"name": n, "endpoints": [{"address": backend.address}]} for n in clusters]}


async def _hits(make: PlaneFactory, virtual_hosts: list[dict[str, Any]],
                requests: list[dict[str, Any]]) -> list[str | None]:
    """Per request: the route that answered (its name, from a response header), None for 404."""
    for v in virtual_hosts:
        for r in v["routes"]:
            r["responseHeaders"] = {"set": {"x-route": r["name"]}}
    b = await Backend("b").start()
    plane = await make()
    res = await plane.apply(_doc(virtual_hosts, b))
    assert isinstance(res, Ack), res
    out: list[str | None] = []
    for q in requests:
        c = Client(plane.port("outbound"))
        r = await c.request(q.get("method", "GET"), q.get("path", "/"), host=q.get("host", "svc"),
                            headers=q.get("headers"))
        await c.close()
        assert r.status in (200, 404), r
        out.append(r.headers["x-route"] if r.status == 200 else None)
    await plane.aclose()
    await b.stop()
    return out


def _one(match: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "svc", "domains": ["svc"], "routes": [table._route("r", match)]}]


@pytest.mark.parametrize(("path_match", "path", "hit"), table.PATH_CASES)
def test_path_match(path_match: dict[str, str], path: str, hit: bool, dataplane: PlaneFactory) -> None:
    got = run(lambda: _hits(dataplane, _one({"path": path_match}), [{"path": path}]))
    assert got == (["r"] if hit else [None])


@pytest.mark.parametrize(("header", "headers", "hit"), table.HEADER_CASES)
def test_header_match(header: dict[str, Any], headers: dict[str, str], hit: bool,
                      dataplane: PlaneFactory) -> None:
    got = run(lambda: _hits(dataplane, _one({"headers": [header]}), [{"headers": headers}]))
    assert got == (["r"] if hit else [None])


@pytest.mark.parametrize(("query", "path", "hit"), table.QUERY_CASES)
def test_query_param_match(query: dict[str, Any], path: str, hit: bool, dataplane: PlaneFactory) -> None:
    got = run(lambda: _hits(dataplane, _one({"queryParams": [query]}), [{"path": path}]))
    assert got == (["r"] if hit else [None])


def test_methods_and_first_match(dataplane: PlaneFactory) -> None:
    vhosts = [{"name": "svc", "domains": ["svc"], "routes": [
        table._route("api-v1", {"path": {"prefix": "/api/v1"}}),
        table._route("api", {"path": {"prefix": "/api"}, "methods": ["GET", "HEAD"]}),
        table._route("api-v1-never", {"path": {"prefix": "/api/v1"}}),
    ]}]
    got = run(lambda: _hits(dataplane, vhosts, [
        {"path": "/api/v1/x"}, {"path": "/api/v2"}, {"path": "/api/v2", "method": "HEAD"},
        {"path": "/api/v2", "method": "POST"}, {"path": "/other"}]))
    assert got == ["api-v1", "api", "api", None, None]


def test_host_lookup(dataplane: PlaneFactory) -> None:
    vhosts = [
        {"name": "cart", "domains": ["cart", "cart.shop", "cart.shop:8080"],
         "routes": [table._route("cart")]},
        {"name": "pay", "domains": ["pay.shop:9000"], "routes": [table._route("pay")]},
    ]
    hosts = ["cart", "CART.Shop", "cart.shop:8080", "cart:1234", "pay.shop:9000", "pay.shop", "unknown"]
    got = run(lambda: _hits(dataplane, vhosts, [{"host": h} for h in hosts]))
    assert got == ["cart", "cart", "cart", "cart", "pay", None, None]


def test_wildcard_virtual_host_catches_the_rest(dataplane: PlaneFactory) -> None:
    vhosts = [{"name": "cart", "domains": ["cart"], "routes": [table._route("cart")]},
              {"name": "any", "domains": ["*"], "routes": [table._route("fallback")]}]
    got = run(lambda: _hits(dataplane, vhosts, [{"host": "cart:80"}, {"host": "elsewhere"}]))
    assert got == ["cart", "fallback"]
