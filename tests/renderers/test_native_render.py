"""The native renderer on the example repo and on small hand-written repos."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from proxy_runtime.config import (
    AuthzRequest,
    Identity,
    compile_snapshot,
    evaluate,
    parse_snapshot,
    select_route,
    snapshot_to_json,
)
from proxy_runtime.config import model as pc
from proxy_runtime.config.routing import choose_cluster
from reconciler.language.model import ConfigModel, FrozenDict, ServiceRef
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers import Fleet, InboundPort, Proxy, RenderResult, default_fleet, render

EXAMPLE = Path(__file__).resolve().parents[2] / "repo_layout_example"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
TD = "shop.example"


def example_model() -> ConfigModel:
    result = validate(DirectorySource(EXAMPLE))
    assert result.ok, result.errors
    return result.model


def model_of(tmp_path: Path, text: str) -> ConfigModel:
    """A repo of one file; must validate without errors."""
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "repo" / "all.yaml").write_text(text)
    result = validate(DirectorySource(tmp_path / "repo"))
    assert result.ok, [str(f) for f in result.errors]
    return result.model


def with_identity(snapshot: pc.Snapshot, sa: str = "x") -> pc.Snapshot:
    """What the controller does at send time: add the proxy's identity."""
    return dataclasses.replace(snapshot, identity=Identity(
        spiffe_id=f"spiffe://{TD}/ns/shop/sa/{sa}", certificate_pem=PEM_CERT,
        private_key_pem=PEM_KEY, trust_bundle_pem=PEM_CERT,
    ))


def managed_fleet(model: ConfigModel, per_service: int = 3) -> Fleet:
    return Fleet.of(
        Proxy(f"{s.name}.{s.namespace}-{i}", s.ref, FrozenDict({"version": f"v{i % 2 + 1}"}))
        for s in model.services_by_key.values()
        for i in range(per_service)
    )


@pytest.fixture(scope="module")
def example() -> tuple[ConfigModel, RenderResult]:
    model = example_model()
    return model, render(model, default_fleet(model))


def test_default_fleet_has_one_proxy_per_static_endpoint(example: tuple[ConfigModel, RenderResult]) -> None:
    model, result = example
    assert sorted(result.snapshots) == [
        "cart.shop-0", "cart.shop-1", "catalog.shop-0", "catalog.shop-1", "catalog.shop-2",
        "checkout.shop-0", "frontend.shop-0", "frontend.shop-1", "payments.shop-0", "payments.shop-1",
    ]
    fleet = default_fleet(model)
    cart0 = fleet.get("cart.shop-0")
    assert cart0 is not None and cart0.labels == {"version": "v1"} and cart0.ports is not None
    assert cart0.ports.inbound[0].listen == 9121
    listener = result.snapshots["cart.shop-0"].snapshot.inbound.listeners[0]  # type: ignore[union-attr]
    assert (listener.port, listener.local_address, listener.service_port) == (9121, "127.0.0.1:10121", 8080)


def test_every_snapshot_is_normal_form_and_compiles(example: tuple[ConfigModel, RenderResult]) -> None:
    _, result = example
    for pid, rs in result.snapshots.items():
        assert snapshot_to_json(rs.snapshot) == rs.json, pid
        assert rs.json["version"] == rs.version
        doc = json.loads(rs.canonical())
        assert parse_snapshot(doc) == rs.snapshot  # parse checks the version against the content
        assert rs.snapshot.identity is None  # identity is added at send time, not rendered
        compiled = compile_snapshot(with_identity(rs.snapshot))
        assert compiled.inbound is not None
        # managed mode: identity held outside the snapshot; the proxy's version is the rendered one
        ident = with_identity(rs.snapshot).identity
        assert compile_snapshot(rs.snapshot, identity=ident).version == rs.version


def test_snapshot_without_identity_is_refused_by_the_proxy_under_strict(example: tuple[ConfigModel, RenderResult]) -> None:
    from proxy_runtime.config import SnapshotError

    _, result = example
    with pytest.raises(SnapshotError, match="mtlsMode"):
        compile_snapshot(result.snapshots["cart.shop-0"].snapshot)


def _vhosts(result: RenderResult, pid: str) -> list[str]:
    out = result.snapshots[pid].snapshot.outbound
    return [v.name for v in out.virtual_hosts] if out else []


def test_outbound_is_scoped_to_egress(example: tuple[ConfigModel, RenderResult]) -> None:
    _, result = example
    assert _vhosts(result, "frontend.shop-0") == ["cart.shop:8080", "catalog.shop:8080", "checkout.shop:8080"]
    assert _vhosts(result, "checkout.shop-0") == ["cart.shop:8080", "payments.shop:8080"]
    assert _vhosts(result, "cart.shop-0") == ["catalog.shop:8080"]
    assert result.snapshots["catalog.shop-0"].snapshot.outbound is None  # egress: []
    assert result.snapshots["payments.shop-0"].snapshot.clusters == ()
    names = {c.name for c in result.snapshots["frontend.shop-0"].snapshot.clusters}
    assert not any(n.startswith("payments") for n in names)


def test_inbound_policies_are_the_selected_ones(example: tuple[ConfigModel, RenderResult]) -> None:
    _, result = example
    ib = result.snapshots["payments.shop-1"].snapshot.inbound
    assert ib is not None and ib.default_deny is True
    assert [p.name for p in ib.policies] == [
        "shop/payments-allow-checkout", "shop/payments-audit", "shop/payments-deny-refunds",
    ]
    cart = result.snapshots["cart.shop-0"].snapshot.inbound
    assert cart is not None
    assert [p.name for p in cart.policies] == ["shop/cart-allow-checkout", "shop/cart-allow-frontend"]


def test_default_deny_and_policies_decide_in_the_rendered_config(example: tuple[ConfigModel, RenderResult]) -> None:
    _, result = example
    compiled = compile_snapshot(with_identity(result.snapshots["cart.shop-0"].snapshot))
    assert compiled.inbound is not None
    authz = compiled.inbound.authz

    def call(sa: str | None, method: str, path: str) -> bool:
        req = AuthzRequest(principal=f"{TD}/ns/shop/sa/{sa}" if sa else None, destination_port=8080,
                           method=method, path=path, host="cart")
        return evaluate(authz, req).allowed

    assert call("frontend", "GET", "/cart/1")
    assert not call("frontend", "GET", "/other")  # policy allows /cart* only
    assert call("checkout", "DELETE", "/anything")
    assert not call("catalog", "GET", "/cart/1")  # default deny: nobody else
    assert not call(None, "GET", "/cart/1")


def test_weighted_subsets_and_cluster_endpoints(example: tuple[ConfigModel, RenderResult]) -> None:
    _, result = example
    snap = result.snapshots["frontend.shop-0"].snapshot
    compiled = compile_snapshot(with_identity(snap))
    assert compiled.outbound is not None
    hit = select_route(compiled.outbound, "cart", "GET", "/cart/42", {})
    assert hit is not None
    vh, route = hit
    assert vh.name == "cart.shop:8080" and route.name == "read-canary"
    assert [(c.cluster, c.weight) for c in route.route.clusters] == [
        ("cart.shop|8080|v1", 90), ("cart.shop|8080|v2", 10),
    ]
    assert choose_cluster(route, 0.5) == "cart.shop|8080|v1"
    assert choose_cluster(route, 0.95) == "cart.shop|8080|v2"
    clusters = {c.name: c for c in snap.clusters}
    assert [e.address for e in clusters["cart.shop|8080|v1"].endpoints] == ["127.0.0.1:9121"]
    assert [e.address for e in clusters["cart.shop|8080|v2"].endpoints] == ["127.0.0.1:9122"]
    assert clusters["cart.shop|8080|v1"].lb_policy == "consistent_hash"
    assert clusters["cart.shop|8080|v1"].hash_key == pc.HashKey(header="x-user")
    # the writes rule mirrors to v2; its cluster is present
    writes = select_route(compiled.outbound, "cart.shop:8080", "POST", "/cart", {})
    assert writes is not None and writes[1].route.mirror == pc.Mirror("cart.shop|8080|v2", 5.0)
    assert writes[1].route.timeout_ms == 3000
    assert select_route(compiled.outbound, "payments.shop", "POST", "/charge", {}) is None  # not in egress


def test_traffic_policy_subset_overrides_and_tls_origination(example: tuple[ConfigModel, RenderResult]) -> None:
    _, result = example
    clusters = {c.name: c for c in result.snapshots["frontend.shop-0"].snapshot.clusters}
    v1, v2 = clusters["catalog.shop|8080|v1"], clusters["catalog.shop|8080|v2"]
    assert v1.connection_pool.max_connections == 1024 and v2.connection_pool.max_connections == 20
    assert v1.lb_policy == v2.lb_policy == "least_request"
    assert v1.outlier_detection == pc.OutlierDetection(5, 10000, 30000, 50.0)
    assert v1.tls == pc.UpstreamTls("MUTUAL", "catalog.shop", ("spiffe://shop.example/ns/shop/sa/catalog",))
    pay = {c.name: c for c in result.snapshots["checkout.shop-0"].snapshot.clusters}["payments.shop|8080|stable"]
    assert pay.tls is not None and pay.tls.peer_spiffe_ids == ("spiffe://shop.example/ns/shop/sa/payments",)
    assert pay.connection_pool == pc.ConnectionPool(50, 20, 100, 1000)


def test_route_details_render(example: tuple[ConfigModel, RenderResult]) -> None:
    _, result = example
    vhosts = {v.name: v for v in result.snapshots["frontend.shop-0"].snapshot.outbound.virtual_hosts}  # type: ignore[union-attr]
    catalog = vhosts["catalog.shop:8080"]
    assert catalog.domains[:2] == ("catalog", "catalog.shop")
    assert "catalog.shop.svc.cluster.local:8080" in catalog.domains
    # "reads" has two match blocks: one proxy route each, same action
    reads = [r for r in catalog.routes if r.name == "reads"]
    assert len(reads) == 2 and reads[0].retries == pc.RetryPolicy(2, 1000, ("5xx", "connect-failure", "reset"))
    assert reads[1].match.path == pc.PathMatch(regex="^/categories/[a-z0-9-]+$")
    cart_read = vhosts["cart.shop:8080"].routes[0]
    assert cart_read.request_headers == pc.HeaderEdits(set={"x-route": "cart-read-canary"})
    assert vhosts["cart.shop:8080"].routes[1].response_headers == pc.HeaderEdits(remove=("x-internal-debug",))
    pay = {v.name: v for v in result.snapshots["checkout.shop-0"].snapshot.outbound.virtual_hosts}  # type: ignore[union-attr]
    default = pay["payments.shop:8080"].routes[-1]
    assert default.fault == pc.Fault(delay=pc.FaultDelay(50, 0.1))


def test_identical_proxies_share_one_snapshot() -> None:
    model = example_model()
    result = render(model, managed_fleet(model, per_service=4))
    assert len(result.snapshots) == 20
    assert result.rendered == 5  # one per service: labels change nothing here
    assert result.snapshots["cart.shop-0"] is result.snapshots["cart.shop-3"]
    assert result.snapshots["cart.shop-0"] is not result.snapshots["catalog.shop-0"]
    ib = result.snapshots["cart.shop-1"].snapshot.inbound
    assert ib is not None and ib.listeners[0].port == 15006  # managed layout


def test_rendering_is_deterministic_and_order_independent() -> None:
    model = example_model()
    fleet = managed_fleet(model)
    a = render(model, fleet)
    b = render(example_model(), Fleet.of(reversed(fleet.proxies)))
    assert list(a.snapshots) == list(b.snapshots)
    for pid in a.snapshots:
        assert a.snapshots[pid].canonical() == b.snapshots[pid].canonical()


MESH = """apiVersion: meshcd.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh}}
spec:
  trustDomain: t.example
  mtls: {{mode: {mtls}}}
  authorization: {{default: {default}}}
"""

SVC = """---
apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, number: 8080, protocol: http}}{extra}]
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
  endpoints: [{{address: "10.0.0.{ip}:8080", labels: {{version: v1}}}}]
"""

ALLOW = """---
apiVersion: meshcd.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{services: [{target}]}}
  rules:
    - from: [{{source: {{principals: ["{principal}"]}}}}]
"""


def _repo(mtls: str = "STRICT", default: str = "deny", extra: str = "") -> str:
    return (
        MESH.format(mtls=mtls, default=default)
        + SVC.format(name="a", ns="one", ip=1, extra="")
        + SVC.format(name="b", ns="one", ip=2, extra=", {name: db, number: 5432, protocol: tcp}")
        + SVC.format(name="c", ns="two", ip=3, extra="")
        + extra
    )


def test_without_egress_outbound_follows_what_policies_could_allow(tmp_path: Path) -> None:
    extra = ALLOW.format(name="b-from-a", ns="one", target="b", principal="t.example/ns/one/sa/a")
    extra += ALLOW.format(name="c-from-b", ns="two", target="c", principal="t.example/ns/one/*")
    model = model_of(tmp_path, _repo(extra=extra))
    result = render(model, managed_fleet(model, 1))
    assert result.snapshots["a.one-0"].callees == (ServiceRef("b", "one"), ServiceRef("c", "two"))
    assert result.snapshots["b.one-0"].callees == (ServiceRef("c", "two"),)  # prefix principal
    assert result.snapshots["c.two-0"].callees == ()  # default deny, nothing allows c -> anyone


def test_default_allow_without_policies_means_everyone(tmp_path: Path) -> None:
    model = model_of(tmp_path, _repo(default="allow"))
    result = render(model, managed_fleet(model, 1))
    assert len(result.snapshots["c.two-0"].callees) == 3
    vh = result.snapshots["c.two-0"].snapshot.outbound.virtual_hosts  # type: ignore[union-attr]
    a = next(v for v in vh if v.name == "a.one:8080")
    assert "a" not in a.domains and "a.one" in a.domains  # bare names only within the namespace
    vh_a = result.snapshots["a.one-0"].snapshot.outbound.virtual_hosts  # type: ignore[union-attr]
    assert "b" in next(v for v in vh_a if v.name == "b.one:8080").domains


def test_tcp_ports_get_a_forward_and_a_tcp_cluster(tmp_path: Path) -> None:
    model = model_of(tmp_path, _repo(default="allow"))
    snap = render(model, managed_fleet(model, 1)).snapshots["a.one-0"].snapshot
    assert len(snap.tcp) == 1 and snap.tcp[0].cluster == "b.one|5432"
    assert 30000 <= snap.tcp[0].port < 40000
    tcp_cluster = next(c for c in snap.clusters if c.name == "b.one|5432")
    assert tcp_cluster.protocol == "tcp"
    assert [e.address for e in tcp_cluster.endpoints] == ["10.0.0.2:8081"]  # second port: +1
    compile_snapshot(with_identity(snap))


def test_service_without_route_gets_a_default_route(tmp_path: Path) -> None:
    model = model_of(tmp_path, _repo(default="allow"))
    snap = render(model, managed_fleet(model, 1)).snapshots["a.one-0"].snapshot
    vh = next(v for v in snap.outbound.virtual_hosts if v.name == "c.two:8080")  # type: ignore[union-attr]
    assert vh.routes == (pc.Route(clusters=(pc.WeightedCluster("c.two|8080", 100),), name="default"),)


def test_mtls_disable_renders_plaintext_and_compiles_without_identity(tmp_path: Path) -> None:
    model = model_of(tmp_path, _repo(mtls="DISABLE", default="allow"))
    result = render(model, managed_fleet(model, 1))
    for rs in result.snapshots.values():
        assert all(c.tls is None for c in rs.snapshot.clusters)
        assert all(li.mtls_mode == "DISABLE" for li in rs.snapshot.inbound.listeners)  # type: ignore[union-attr]
        compile_snapshot(rs.snapshot)


def test_subset_mtls_override_is_the_label_that_matters(tmp_path: Path) -> None:
    tp = """---
apiVersion: meshcd.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: a, namespace: one}
spec:
  service: a
  mtls: {mode: STRICT}
  subsets:
    - {name: v2, mtls: {mode: PERMISSIVE}}
"""
    model = model_of(tmp_path, _repo(mtls="STRICT", default="allow", extra=tp))
    fleet = Fleet.of([
        Proxy("a-1", ServiceRef("a", "one"), FrozenDict({"version": "v1"})),
        Proxy("a-2", ServiceRef("a", "one"), FrozenDict({"version": "v2"})),
        Proxy("a-3", ServiceRef("a", "one"), FrozenDict({"version": "v2", "zone": "x"})),
        Proxy("b-1", ServiceRef("b", "one")),
    ])
    result = render(model, fleet)
    modes = {pid: rs.snapshot.inbound.listeners[0].mtls_mode for pid, rs in result.snapshots.items()}  # type: ignore[union-attr]
    assert modes == {"a-1": "STRICT", "a-2": "PERMISSIVE", "a-3": "PERMISSIVE", "b-1": "STRICT"}
    assert result.snapshots["a-2"] is result.snapshots["a-3"]
    assert result.snapshots["a-1"] is not result.snapshots["a-2"]
    # callers of a: the v2 cluster keeps mTLS origination (PERMISSIVE accepts it)
    b = {c.name: c for c in result.snapshots["b-1"].snapshot.clusters}
    assert b["a.one|8080"].tls is not None


def test_unknown_service_and_bad_fleet_input(tmp_path: Path) -> None:
    model = model_of(tmp_path, _repo())
    result = render(model, [Proxy("ghost-0", ServiceRef("ghost", "one")), Proxy("a-0", ServiceRef("a", "one"))])
    assert result.unknown == ("ghost-0",)
    assert list(result.snapshots) == ["a-0"]
    with pytest.raises(ValueError, match="duplicate proxy id"):
        Fleet.of([Proxy("x", ServiceRef("a", "one")), Proxy("x", ServiceRef("b", "one"))])


def test_empty_model_renders_nothing() -> None:
    result = render(ConfigModel(), Fleet())
    assert dict(result.snapshots) == {} and result.rendered == 0


def test_default_fleet_and_clusters_with_ipv6_and_dns_endpoints(tmp_path: Path) -> None:
    text = _repo(default="allow").replace('"10.0.0.1:8080"', '"[::1]:9000"').replace(
        '"10.0.0.3:8080"', '"c.internal:7000"')
    model = model_of(tmp_path, text)
    fleet = default_fleet(model)
    a = fleet.get("a.one-0")
    assert a is not None and a.ports is not None
    assert a.ports.inbound == (InboundPort(9000, "[::1]:10000"),)
    result = render(model, fleet)
    clusters = {c.name: c for c in result.snapshots["b.one-0"].snapshot.clusters}
    assert [e.address for e in clusters["a.one|8080"].endpoints] == ["[::1]:9000"]
    assert [e.address for e in clusters["c.two|8080"].endpoints] == ["c.internal:7000"]
    for rs in result.snapshots.values():
        compile_snapshot(with_identity(rs.snapshot))
