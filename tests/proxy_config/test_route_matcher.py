"""The outbound route matcher and the weighted cluster choice."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from proxy_runtime.config import (
    SnapshotError,
    choose_cluster,
    find_virtual_host,
    load_config,
    select_route,
)
from proxy_runtime.config.routing import CompiledOutbound


def _outbound(
    virtual_hosts: list[dict[str, Any]], clusters: tuple[str, ...] = ("a", "b", "c", "d")
) -> CompiledOutbound:
    cfg = load_config(
        {
            "outbound": {"port": 15001, "virtualHosts": virtual_hosts},
            "clusters": [{"name": n} for n in clusters],
        }
    )
    assert cfg.outbound is not None
    return cfg.outbound


def _route(name: str, match: dict[str, Any] | None = None, cluster: str = "a") -> dict[str, Any]:
    r: dict[str, Any] = {"name": name, "clusters": [{"cluster": cluster}]}
    if match is not None:
        r["match"] = match
    return r


def _pick(
    ob: CompiledOutbound,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str = "svc",
) -> str | None:
    hit = select_route(ob, host, method, path, headers or {})
    return None if hit is None else hit[1].name


def test_first_match_wins() -> None:
    ob = _outbound(
        [
            {
                "name": "svc",
                "domains": ["svc"],
                "routes": [
                    _route("api-v1", {"path": {"prefix": "/api/v1"}}),
                    _route("api", {"path": {"prefix": "/api"}}),
                    _route("api-v1-never", {"path": {"prefix": "/api/v1"}}),
                    _route("default"),
                ],
            }
        ]
    )
    assert _pick(ob, "/api/v1/x") == "api-v1"
    assert _pick(ob, "/api/v2") == "api"
    assert _pick(ob, "/other") == "default"


def test_no_matching_route_is_none() -> None:
    ob = _outbound(
        [{"name": "svc", "domains": ["svc"], "routes": [_route("x", {"path": {"exact": "/x"}})]}]
    )
    assert _pick(ob, "/y") is None


PATH_CASES = [
    ({"exact": "/a"}, "/a", True),
    ({"exact": "/a"}, "/a/", False),
    ({"exact": "/a"}, "/a?x=1", True),  # the query string is not part of the path
    ({"prefix": "/api"}, "/apix", True),  # plain string prefix
    ({"prefix": "/api/"}, "/api", False),
    ({"regex": "/items/[0-9]+"}, "/items/42", True),
    ({"regex": "/items/[0-9]+"}, "/items/42/x", False),  # the regex must match the whole path
    ({"regex": "/items/[0-9]+"}, "/v1/items/42", False),
]


@pytest.mark.parametrize(("path_match", "path", "hit"), PATH_CASES)
def test_path_match(path_match: dict[str, str], path: str, hit: bool) -> None:
    ob = _outbound(
        [{"name": "svc", "domains": ["svc"], "routes": [_route("r", {"path": path_match})]}]
    )
    assert (_pick(ob, path) == "r") is hit


def test_methods() -> None:
    ob = _outbound(
        [{"name": "svc", "domains": ["svc"], "routes": [_route("r", {"methods": ["GET", "HEAD"]})]}]
    )
    assert _pick(ob, "/", "HEAD") == "r"
    assert _pick(ob, "/", "POST") is None
    assert _pick(ob, "/", "get") is None


HEADER_CASES = [
    ({"name": "X-Canary", "exact": "1"}, {"x-canary": "1"}, True),
    ({"name": "x-canary", "exact": "1"}, {"x-canary": "10"}, False),
    ({"name": "x-canary", "exact": ""}, {"x-canary": ""}, True),
    ({"name": "user-agent", "prefix": "curl/"}, {"user-agent": "curl/8.1"}, True),
    ({"name": "user-agent", "prefix": "curl/"}, {}, False),
    ({"name": "x-user", "regex": "u-[0-9]{3}"}, {"x-user": "u-123"}, True),
    ({"name": "x-user", "regex": "u-[0-9]{3}"}, {"x-user": "u-1234"}, False),
    ({"name": "x-debug", "present": True}, {"x-debug": ""}, True),
    ({"name": "x-debug", "present": True}, {}, False),
    ({"name": "x-debug", "present": False}, {}, True),
    ({"name": "x-debug", "present": False}, {"x-debug": "1"}, False),
]


@pytest.mark.parametrize(("header", "headers", "hit"), HEADER_CASES)
def test_header_match(header: dict[str, Any], headers: dict[str, str], hit: bool) -> None:
    ob = _outbound(
        [{"name": "svc", "domains": ["svc"], "routes": [_route("r", {"headers": [header]})]}]
    )
    assert (_pick(ob, "/", headers=headers) == "r") is hit


QUERY_CASES = [
    ({"name": "debug", "present": True}, "/p?debug", True),
    ({"name": "debug", "present": True}, "/p?debugx=1", False),
    ({"name": "debug", "present": False}, "/p?x=1", True),
    ({"name": "debug", "present": False}, "/p?debug=0", False),
    # values are compared as received, as Envoy does: + is not a space, nothing is decoded
    ({"name": "v", "exact": "a b"}, "/p?v=a+b", False),
    ({"name": "v", "exact": "a+b"}, "/p?v=a+b", True),
    ({"name": "v", "exact": "a/b"}, "/p?v=a%2Fb", False),
    ({"name": "v", "exact": "a%2Fb"}, "/p?v=a%2Fb", True),
    ({"name": "v", "exact": "1"}, "/p?v=1&v=2", True),  # first value counts
    ({"name": "v", "exact": "2"}, "/p?v=1&v=2", False),
    ({"name": "v", "regex": "[a-z]+"}, "/p?v=abc", True),
    ({"name": "v", "regex": "[a-z]+"}, "/p?v=abc1", False),
    ({"name": "v", "exact": "1"}, "/p", False),
]


@pytest.mark.parametrize(("query", "path", "hit"), QUERY_CASES)
def test_query_param_match(query: dict[str, Any], path: str, hit: bool) -> None:
    ob = _outbound(
        [{"name": "svc", "domains": ["svc"], "routes": [_route("r", {"queryParams": [query]})]}]
    )
    assert (_pick(ob, path) == "r") is hit


def test_all_conditions_of_a_match_are_anded() -> None:
    ob = _outbound(
        [
            {
                "name": "svc",
                "domains": ["svc"],
                "routes": [
                    _route(
                        "canary",
                        {
                            "path": {"prefix": "/api"},
                            "methods": ["GET"],
                            "headers": [{"name": "x-canary", "exact": "1"}],
                            "queryParams": [{"name": "beta", "present": True}],
                        },
                    ),
                    _route("default"),
                ],
            }
        ]
    )
    assert _pick(ob, "/api/x?beta", headers={"x-canary": "1"}) == "canary"
    assert _pick(ob, "/api/x", headers={"x-canary": "1"}) == "default"
    assert _pick(ob, "/api/x?beta", "POST", headers={"x-canary": "1"}) == "default"
    assert _pick(ob, "/web?beta", headers={"x-canary": "1"}) == "default"


def test_host_lookup() -> None:
    ob = _outbound(
        [
            {
                "name": "cart",
                "domains": ["cart", "cart.shop", "cart.shop:8080"],
                "routes": [_route("cart")],
            },
            {"name": "pay", "domains": ["pay.shop:9000"], "routes": [_route("pay")]},
        ]
    )
    assert _pick(ob, "/", host="cart") == "cart"
    assert _pick(ob, "/", host="CART.Shop") == "cart"  # case-insensitive
    assert _pick(ob, "/", host="cart.shop:8080") == "cart"
    assert (
        _pick(ob, "/", host="cart:1234") == "cart"
    )  # port stripped only if the full host is unknown
    assert _pick(ob, "/", host="pay.shop:9000") == "pay"
    assert _pick(ob, "/", host="pay.shop") is None  # a domain with a port needs that port
    assert _pick(ob, "/", host="unknown") is None  # the data plane answers 404
    assert _pick(ob, "/", host="") is None
    assert find_virtual_host(ob, "cart.shop") is ob.hosts["cart"]


def test_wildcard_virtual_host_catches_the_rest() -> None:
    ob = _outbound(
        [
            {"name": "cart", "domains": ["cart"], "routes": [_route("cart")]},
            {"name": "any", "domains": ["*"], "routes": [_route("fallback")]},
        ]
    )
    assert _pick(ob, "/", host="cart:80") == "cart"
    assert _pick(ob, "/", host="elsewhere") == "fallback"


def _weighted(weights: list[int]) -> Any:
    names = ["a", "b", "c", "d"][: len(weights)]
    ob = _outbound(
        [
            {
                "name": "svc",
                "domains": ["svc"],
                "routes": [
                    {
                        "name": "split",
                        "clusters": [
                            {"cluster": n, "weight": w} for n, w in zip(names, weights, strict=True)
                        ],
                    }
                ],
            }
        ]
    )
    hit = select_route(ob, "svc", "GET", "/", {})
    assert hit is not None
    return hit[1]


@pytest.mark.parametrize("weights", [[90, 10], [70, 20, 10], [1, 1, 1, 1], [50, 0, 50]])
def test_weighted_choice_proportions(weights: list[int]) -> None:
    route = _weighted(weights)
    rng = random.Random(20261125)
    n = 10_000
    counts = Counter(choose_cluster(route, rng.random()) for _ in range(n))
    total = sum(weights)
    for name, w in zip(["a", "b", "c", "d"], weights, strict=False):
        share = counts[name] / n
        assert abs(share - w / total) <= 0.03, (name, share, w / total)
        if w == 0:
            assert counts[name] == 0


def test_weighted_choice_boundaries() -> None:
    route = _weighted([90, 0, 10])
    assert choose_cluster(route, 0.0) == "a"
    assert choose_cluster(route, 0.8999) == "a"
    assert choose_cluster(route, 0.9) == "c"  # the zero-weight cluster is never chosen
    assert choose_cluster(route, 0.999999) == "c"


def test_bad_header_regex_names_its_path() -> None:
    with pytest.raises(SnapshotError) as e:
        _outbound(
            [
                {
                    "name": "svc",
                    "domains": ["svc"],
                    "routes": [
                        _route("ok"),
                        _route("bad", {"headers": [{"name": "x", "regex": "(("}]}),
                    ],
                }
            ]
        )
    assert e.value.path == "outbound.virtualHosts[0].routes[1].match.headers[0].regex"
    assert e.value.message == "missing )"
