"""compile_snapshot: every check, with the JSON path of the culprit, and the compiled form."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from proxy_runtime.config import (
    AuthzRequest,
    Snapshot,
    SnapshotError,
    Telemetry,
    compile_snapshot,
    evaluate,
    load_config,
    parse_snapshot,
)

VH0 = "outbound.virtualHosts[0]"
R0 = f"{VH0}.routes[0]"


def _compile(doc: dict[str, Any]) -> None:
    doc.pop("version", None)
    load_config(doc)


def _error(doc: dict[str, Any]) -> SnapshotError:
    with pytest.raises(SnapshotError) as e:
        _compile(doc)
    return e.value


def test_example_compiles(example: dict[str, Any]) -> None:
    cfg = load_config(example)
    assert cfg.version == example["version"]
    assert cfg.revision == "4f2a9c0d1e"
    assert cfg.tls_ready
    assert cfg.listener_ports() == {
        "inbound.listeners[0]": 15006,
        "inbound.listeners[1]": 15007,
        "outbound": 15001,
        "tcp[0]": 15432,
    }
    # host lookup dict, lowercased domains
    assert cfg.outbound is not None
    assert set(cfg.outbound.hosts) == {"cart", "cart:8080", "cart.shop", "cart.shop:8080"}
    route = cfg.outbound.hosts["cart"].routes[0]
    assert route.cumulative_weights == (90, 100) and route.total_weight == 100
    # policies pre-split by action
    assert cfg.inbound is not None
    authz = cfg.inbound.authz
    assert [p.name for p in authz.http.allow] == ["shop/checkout-allow-frontend"]
    assert [p.name for p in authz.http.deny] == ["shop/checkout-deny-outside"]
    assert authz.http.audit == ()
    # service port used as destination.port; default = the app port
    assert [li.service_port for li in cfg.inbound.listeners] == [8080, 9090]
    assert (cfg.inbound.listeners[0].app_host, cfg.inbound.listeners[0].app_port) == (
        "127.0.0.1",
        8080,
    )
    assert cfg.clusters["cart.shop|8080|v1"].endpoints[0].port == 9101


def test_version_defaults_to_the_content_hash(example: dict[str, Any]) -> None:
    snap = parse_snapshot(example)
    assert compile_snapshot(snap).version == example["version"]


@pytest.mark.parametrize(
    ("where", "path_suffix"),
    [
        ("path", "match.path.regex"),
        ("header", "match.headers[0].regex"),
        ("query", "match.queryParams[0].regex"),
    ],
)
def test_bad_regex(example: dict[str, Any], where: str, path_suffix: str) -> None:
    match = example["outbound"]["virtualHosts"][0]["routes"][0]["match"]
    if where == "path":
        match["path"] = {"regex": "/api/(v1"}
    elif where == "header":
        match["headers"] = [{"name": "x-a", "regex": "a[b"}]
    else:
        match["queryParams"] = [{"name": "q", "regex": "(?P<x"}]
    err = _error(example)
    assert err.path == f"{R0}.{path_suffix}"
    if where == "path":
        assert str(err) == f"{R0}.match.path.regex: missing )"
    else:
        assert err.message  # RE2's reason, e.g. "missing ]"


def test_bad_regex_in_third_virtual_host_names_its_index(example: dict[str, Any]) -> None:
    vhs = example["outbound"]["virtualHosts"]
    for i in (1, 2):
        vh = {
            "name": f"v{i}",
            "domains": [f"v{i}"],
            "routes": [
                {
                    "clusters": [{"cluster": "cart.shop|8080|v1"}],
                    "match": {"path": {"regex": "/ok"}},
                }
            ],
        }
        vhs.append(vh)
    vhs[2]["routes"][0]["match"]["path"]["regex"] = "/(x"
    assert str(_error(example)) == "outbound.virtualHosts[2].routes[0].match.path.regex: missing )"


def test_regex_is_re2_not_python(example: dict[str, Any]) -> None:
    # A backreference is valid Python `re` but not RE2 (no catastrophic backtracking allowed).
    example["outbound"]["virtualHosts"][0]["routes"][0]["match"]["path"] = {"regex": r"/(a)\1"}
    err = _error(example)
    assert err.path == f"{R0}.match.path.regex"
    assert "escape" in err.message


def test_dangling_route_cluster(example: dict[str, Any]) -> None:
    example["outbound"]["virtualHosts"][0]["routes"][1]["clusters"][0]["cluster"] = "nope"
    assert str(_error(example)) == f"{VH0}.routes[1].clusters[0].cluster: unknown cluster 'nope'"


def test_dangling_mirror_cluster(example: dict[str, Any]) -> None:
    example["outbound"]["virtualHosts"][0]["routes"][0]["mirror"]["cluster"] = "gone"
    assert str(_error(example)) == f"{R0}.mirror.cluster: unknown cluster 'gone'"


def test_dangling_tcp_cluster(example: dict[str, Any]) -> None:
    example["tcp"][0]["cluster"] = "db.other|5432"
    assert str(_error(example)) == "tcp[0].cluster: unknown cluster 'db.other|5432'"


def test_tcp_listener_needs_a_tcp_cluster(example: dict[str, Any]) -> None:
    example["tcp"][0]["cluster"] = "cart.shop|8080|v1"
    err = _error(example)
    assert err.path == "tcp[0].cluster"
    assert "has protocol http, tcp needed" in err.message


def test_http_route_to_tcp_cluster(example: dict[str, Any]) -> None:
    example["outbound"]["virtualHosts"][0]["routes"][1]["clusters"][0]["cluster"] = "db.shop|5432"
    assert "has protocol tcp, http needed" in _error(example).message


@pytest.mark.parametrize(
    ("mutate", "path", "other"),
    [
        (lambda d: d["outbound"].update(port=15006), "outbound.port", "inbound.listeners[0].port"),
        (lambda d: d["tcp"][0].update(port=15001), "tcp[0].port", "outbound.port"),
        (
            lambda d: d["inbound"]["listeners"][1].update(port=15006),
            "inbound.listeners[1].port",
            "inbound.listeners[0].port",
        ),
        (lambda d: d["tcp"][0].update(port=15007), "tcp[0].port", "inbound.listeners[1].port"),
    ],
)
def test_duplicate_listener_port(
    example: dict[str, Any], mutate: Any, path: str, other: str
) -> None:
    mutate(example)
    err = _error(example)
    assert err.path == path
    assert err.message.endswith(f"is already used by {other}")


def test_port_zero_never_collides(example: dict[str, Any]) -> None:
    example["outbound"]["port"] = 0
    example["tcp"][0]["port"] = 0
    example["inbound"]["listeners"][0]["port"] = 0
    _compile(example)


def test_weights_must_not_all_be_zero(example: dict[str, Any]) -> None:
    for wc in example["outbound"]["virtualHosts"][0]["routes"][0]["clusters"]:
        wc["weight"] = 0
    assert str(_error(example)) == f"{R0}.clusters: weights must sum to more than 0"


def test_duplicate_domain(example: dict[str, Any]) -> None:
    example["outbound"]["virtualHosts"].append(
        {"name": "other", "domains": ["other", "CART.shop"], "routes": []}
    )
    err = _error(example)
    assert err.path == "outbound.virtualHosts[1].domains[1]"
    assert "already a domain of 'cart.shop:8080'" in err.message


def test_duplicate_cluster_name(example: dict[str, Any]) -> None:
    example["clusters"][1]["name"] = example["clusters"][0]["name"]
    assert str(_error(example)) == "clusters[1].name: duplicate cluster name 'cart.shop|8080|v1'"


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("ipBlocks", ["10.0.0.0/33"], "from[0].source.ipBlocks[0]"),
        ("notIpBlocks", ["10.0.0.0/8", "not-an-ip"], "from[0].source.notIpBlocks[1]"),
        ("remoteIpBlocks", ["300.1.1.1"], "from[0].source.remoteIpBlocks[0]"),
        ("notRemoteIpBlocks", ["fe80::/200"], "from[0].source.notRemoteIpBlocks[0]"),
    ],
)
def test_bad_cidr_in_source(
    example: dict[str, Any], field: str, value: list[str], path: str
) -> None:
    example["inbound"]["policies"][1]["rules"][0]["from"][0]["source"] = {field: value}
    err = _error(example)
    assert err.path == f"inbound.policies[1].rules[0].{path}"
    assert "is not a CIDR or IP address" in err.message


def test_bad_cidr_in_when(example: dict[str, Any]) -> None:
    example["inbound"]["policies"][0]["rules"][0]["when"] = [
        {"key": "source.ip", "values": ["10.0.0.1"], "notValues": ["10.0.0.0/x"]}
    ]
    err = _error(example)
    assert err.path == "inbound.policies[0].rules[0].when[0].notValues[0]"


@pytest.mark.parametrize("port", ["0", "65536"])
def test_bad_port_in_policy(example: dict[str, Any], port: str) -> None:
    example["inbound"]["policies"][0]["rules"][0]["to"][0]["operation"]["ports"] = ["8080", port]
    err = _error(example)
    assert err.path == "inbound.policies[0].rules[0].to[0].operation.ports[1]"
    assert "is not a port" in err.message


def test_bad_destination_port_in_when(example: dict[str, Any]) -> None:
    example["inbound"]["policies"][0]["rules"][0]["when"] = [
        {"key": "destination.port", "values": ["http"]}
    ]
    assert _error(example).path == "inbound.policies[0].rules[0].when[0].values[0]"


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE"])
def test_mtls_needs_identity(example: dict[str, Any], mode: str) -> None:
    del example["identity"]["privateKeyPem"]
    for li in example["inbound"]["listeners"]:
        li["mtlsMode"] = "DISABLE"
    example["inbound"]["listeners"][1]["mtlsMode"] = mode
    err = _error(example)
    assert err.path == "inbound.listeners[1].mtlsMode"
    assert err.message.startswith(f"{mode} needs identity.certificatePem")


def test_tls_origination_needs_identity(example: dict[str, Any]) -> None:
    del example["identity"]
    for li in example["inbound"]["listeners"]:
        li["mtlsMode"] = "DISABLE"
    err = _error(example)
    assert err.path == "clusters[0].tls.mode"
    del example["clusters"][0]["tls"]
    cfg = load_config(example)  # plaintext-only proxy without identity
    assert not cfg.tls_ready


def test_identity_must_be_pem(example: dict[str, Any]) -> None:
    example["identity"]["trustBundlePem"] = "MIIB..."
    err = _error(example)
    assert err.path == "identity.trustBundlePem"
    assert "is not PEM" in err.message


def test_checks_also_apply_to_snapshots_built_in_python(example: dict[str, Any]) -> None:
    snap = parse_snapshot(example)
    bad = dataclasses.replace(snap, telemetry=Telemetry(tracing_sampling_percent=150.0))
    with pytest.raises(
        SnapshotError, match=r"^telemetry.tracingSamplingPercent: 150 is out of range"
    ):
        compile_snapshot(bad)
    assert compile_snapshot(Snapshot()).outbound is None


def test_compiled_inbound_authorizes_like_the_policies(example: dict[str, Any]) -> None:
    cfg = load_config(example)
    assert cfg.inbound is not None
    ok = AuthzRequest(
        principal="shop.example/ns/shop/sa/frontend",
        source_ip="10.0.0.3",
        destination_port=8080,
        method="POST",
        path="/api/orders",
        headers={"x-env": "prod"},
    )
    assert evaluate(cfg.inbound.authz, ok).allowed
    outside = dataclasses.replace(
        ok, principal="shop.example/ns/web/sa/frontend", source_ip="192.168.0.1", namespace=None
    )
    d = evaluate(cfg.inbound.authz, outside)
    assert (d.allowed, d.policy) == (False, "shop/checkout-deny-outside")


def test_duplicate_policy_name(example: dict[str, Any]) -> None:
    example["inbound"]["policies"][1]["name"] = example["inbound"]["policies"][0]["name"]
    err = _error(example)
    assert (
        str(err) == "inbound.policies[1].name: duplicate policy name 'shop/checkout-allow-frontend'"
    )


def test_wildcard_domains_other_than_star_are_refused(example: dict[str, Any]) -> None:
    example["outbound"]["virtualHosts"][0]["domains"].append("*.shop")
    err = _error(example)
    assert err.path == "outbound.virtualHosts[0].domains[4]"
    assert "only the catch-all domain" in err.message


def test_policies_are_hashable_for_grouping(example: dict[str, Any]) -> None:
    a = parse_snapshot(example).inbound
    b = parse_snapshot(example).inbound
    assert a is not None and b is not None
    assert a.policies[0] is not b.policies[0]
    assert {a.policies[0], b.policies[0], a.policies[1]} == {a.policies[0], a.policies[1]}


def test_compile_policies_cached_reuses_identical_policy_sets(example: dict[str, Any]) -> None:
    from proxy_runtime.config.authz import compile_policies_cached

    a = parse_snapshot(example).inbound
    b = parse_snapshot(example).inbound
    assert a is not None and b is not None
    first = compile_policies_cached(a.policies, False)
    assert compile_policies_cached(b.policies, False) is first  # equal content, one compile
    assert compile_policies_cached(b.policies, True) is not first


def test_identity_held_outside_the_snapshot(example: dict[str, Any]) -> None:
    """Managed mode: the snapshot names the SPIFFE ID only; the agent supplies cert and key."""
    from proxy_runtime.config import Identity

    full = example["identity"]
    example["identity"] = {"spiffeId": full["spiffeId"]}
    del example["version"]
    snap = parse_snapshot(example)
    with pytest.raises(SnapshotError, match=r"needs identity\.certificatePem"):
        compile_snapshot(snap)
    outside = Identity(
        certificate_pem=full["certificatePem"],
        private_key_pem=full["privateKeyPem"],
        trust_bundle_pem=full["trustBundlePem"],
    )
    cfg = compile_snapshot(snap, identity=outside)
    assert cfg.tls_ready
    assert cfg.identity is not None and cfg.identity.spiffe_id == full["spiffeId"]
    assert (
        cfg.version
        == compile_snapshot(
            snap,
            identity=dataclasses.replace(
                outside,
                private_key_pem="-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
            ),
        ).version
    )
    with pytest.raises(SnapshotError, match=r"^identity.privateKeyPem: is not PEM"):
        compile_snapshot(snap, identity=dataclasses.replace(outside, private_key_pem="oops"))


def test_empty_retry_conditions_in_a_built_model_are_refused(example: dict[str, Any]) -> None:
    snap = parse_snapshot(example)
    assert snap.outbound is not None
    vh = snap.outbound.virtual_hosts[0]
    route = vh.routes[0]
    assert route.retries is not None
    bad_route = dataclasses.replace(route, retries=dataclasses.replace(route.retries, retry_on=()))
    bad = dataclasses.replace(
        snap,
        outbound=dataclasses.replace(
            snap.outbound,
            virtual_hosts=(dataclasses.replace(vh, routes=(bad_route, *vh.routes[1:])),),
        ),
    )
    with pytest.raises(SnapshotError) as e:
        compile_snapshot(bad)
    assert e.value.path == f"{R0}.retries.retryOn"
