"""The typed model: defaults from the language doc, durations, service references, field
locations, immutability, indexes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reconciler.language import (
    AuthorizationPolicy,
    ConfigModel,
    DirectorySource,
    FrozenDict,
    Location,
    Mesh,
    RolloutPolicy,
    Route,
    Service,
    ServiceRef,
    TrafficPolicy,
    parse_duration,
    resolve_service_ref,
    validate,
)
from reconciler.language.build import build_resource
from reconciler.language.loader import load_yaml
from reconciler.language.model import Endpoint, Match, PathMatch, Port, Resource, Subset

MINIMAL = """\
apiVersion: meshcd.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec: {trustDomain: t.example}
---
apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {name: cart}
spec:
  ports: [{name: http, number: 8080}]
---
apiVersion: meshcd.dev/v1alpha1
kind: Route
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  rules:
    - destinations:
        - {service: cart}
        - {service: other.ns, weight: 0}
      mirror: {service: cart}
      fault: {abort: {httpStatus: 503}}
---
apiVersion: meshcd.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: t}
spec: {service: cart, loadBalancer: {}}
---
apiVersion: meshcd.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec: {}
---
apiVersion: meshcd.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: r}
spec: {stages: [{percent: 100, bake: 2m}]}
"""


def build_all(text: str, file: str = "f.yaml") -> list[Resource]:
    docs, found = load_yaml(file, text.encode())
    assert found == []
    return [build_resource(d.data, d.positions, d.index) for d in docs]


def test_defaults_from_the_language_doc() -> None:
    mesh, svc, route, tp, authz, rollout = build_all(MINIMAL)
    assert isinstance(mesh, Mesh)
    assert (mesh.root_namespace, mesh.mtls.mode, mesh.authorization.default) == (
        "meshcd-system", "STRICT", "allow")
    assert (mesh.telemetry.tracing_sampling_percent, mesh.telemetry.access_log_sampling_percent) == (1, 100)
    assert mesh.default_rollout_policy is None and not mesh.default_deny
    assert isinstance(svc, Service)
    assert svc.namespace == "default"
    assert svc.service_account == "cart"
    assert svc.ports == (Port("http", 8080, "http"),)
    assert svc.egress is None and svc.subsets == () and svc.endpoints == ()
    assert isinstance(route, Route)
    assert route.host == ServiceRef("cart", "shop")
    rule = route.rules[0]
    assert [(d.service, d.weight) for d in rule.destinations] == [
        (ServiceRef("cart", "shop"), 100), (ServiceRef("other", "ns"), 0)]
    assert rule.matches == () and rule.is_catch_all
    assert rule.mirror is not None and rule.mirror.percent == 100
    assert rule.fault is not None and rule.fault.abort is not None and rule.fault.abort.percent == 100
    assert rule.timeout is None and rule.retries is None and rule.headers is None
    assert isinstance(tp, TrafficPolicy)
    assert tp.load_balancer is not None and tp.load_balancer.type == "round_robin"
    assert tp.connection_pool is None and tp.mtls is None
    assert isinstance(authz, AuthorizationPolicy)
    assert (authz.action, authz.selector, authz.rules) == ("ALLOW", None, ())
    assert isinstance(rollout, RolloutPolicy)
    assert rollout.stages[0].bake == 120.0 and rollout.stages[0].count is None
    assert (rollout.on_failure, rollout.on_new_commit, rollout.analysis.on_inconclusive) == (
        "rollback", "restart", "pause")
    assert rollout.services == ()


def test_every_field_of_the_full_example_reaches_the_model() -> None:
    from test_schema_spec import FULL  # the one example that uses every field

    mesh, svc, route, tp, authz, rollout = build_all(FULL)
    assert isinstance(mesh, Mesh) and mesh.default_deny and mesh.default_rollout_policy == "standard"
    assert mesh.principal("shop", "cart") == "shop.example/ns/shop/sa/cart"
    assert mesh.spiffe_id("shop", "cart") == "spiffe://shop.example/ns/shop/sa/cart"
    assert isinstance(svc, Service)
    assert svc.labels == {"team": "web", "app.kubernetes.io/name": "cart"}
    assert svc.port(5432) == Port("db", 5432, "tcp") and svc.port_named("http") is not None
    assert svc.service_account == "cart-sa"
    assert svc.egress == (ServiceRef("catalog", "shop"), ServiceRef("payments", "shop"))
    assert svc.endpoints[1].split() == ("::1", 9102)
    assert svc.endpoints_in("v1") == (svc.endpoints[0],)
    assert isinstance(route, Route)
    rule = route.rules[0]
    assert rule.name == "api-canary" and rule.timeout == 3.0
    m = rule.matches[0]
    assert m.path == PathMatch(prefix="/api") and m.path.type == "prefix" and m.path.value == "/api"
    assert m.methods == ("GET", "HEAD")
    assert [(h.name, h.type) for h in m.headers] == [("x-canary", "exact"), ("x-debug", "present")]
    assert [(q.name, q.type) for q in m.query_params] == [("debug", "present"), ("v", "regex")]
    assert rule.retries is not None
    assert (rule.retries.attempts, rule.retries.per_try_timeout, rule.retries.retry_on) == (
        2, 1.0, ("5xx", "connect-failure"))
    assert rule.fault is not None and rule.fault.delay is not None
    assert (rule.fault.delay.fixed, rule.fault.delay.percent) == (0.1, 5.0)
    assert rule.mirror is not None and (rule.mirror.subset, rule.mirror.port, rule.mirror.percent) == ("v2", 8080, 10.0)
    assert rule.headers is not None
    assert rule.headers.request.add == {"x-a": "1"} and rule.headers.request.remove == ("x-c",)
    assert not rule.is_catch_all and route.rules[1].is_catch_all
    assert isinstance(tp, TrafficPolicy)
    assert tp.load_balancer is not None and tp.load_balancer.hash_on is not None
    assert tp.load_balancer.hash_on.header == "x-user"
    assert tp.connection_pool is not None and tp.connection_pool.connect_timeout == 1.0
    assert tp.connection_pool.max_requests_per_connection == 0
    assert tp.outlier_detection is not None and tp.outlier_detection.base_ejection_time == 30.0
    assert tp.mtls is not None and tp.mtls.mode == "PERMISSIVE"
    assert tp.subsets[0].connection_pool is not None and tp.subsets[0].connection_pool.max_connections == 10
    assert isinstance(authz, AuthorizationPolicy)
    assert authz.selector is not None and authz.selector.services == (ServiceRef("payments", "shop"),)
    r = authz.rules[0]
    src = r.from_[0].source
    assert src.principals == ("shop.example/ns/shop/sa/checkout",) and src.not_ip_blocks == ("10.1.0.0/16",)
    op = r.to[0].operation
    assert op.ports == ("8080",) and op.not_paths == ("/admin*",) and op.uses_http_fields
    assert r.when[0].key == "request.headers[x-env]" and r.when[0].not_values == ("test",)
    assert isinstance(rollout, RolloutPolicy)
    assert [(s.count, s.percent, s.bake) for s in rollout.stages] == [
        (1, None, 30.0), (None, 10.0, 30.0), (None, 100.0, 60.0)]
    assert rollout.analysis.confidence == 0.95 and rollout.analysis.min_requests == 50
    assert rollout.services == (ServiceRef("cart", "shop"), ServiceRef("checkout", "shop"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1.5s", 1.5), ("3s", 3.0), ("2m", 120.0), ("1h", 3600.0), ("0s", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "3", "s", "-1s", "1.s", "1d", "1 s", "1m30s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_service_refs() -> None:
    assert resolve_service_ref("cart", "shop") == ServiceRef("cart", "shop")
    assert resolve_service_ref("cart.other", "shop") == ServiceRef("cart", "other")
    assert str(ServiceRef("cart", "shop")) == "cart.shop"
    assert ServiceRef("cart", "shop").key == ("shop", "cart")


def test_locations_of_nested_fields_with_ancestor_fallback() -> None:
    [_, _, route, *_] = build_all(MINIMAL, "routes/x.yaml")
    assert route.location == Location("routes/x.yaml", 12, 1)
    assert route.loc(("spec", "rules", 0, "destinations", 1, "weight")) == Location("routes/x.yaml", 20, 31)
    assert route.value_loc(("spec", "rules", 0, "destinations", 1, "weight")) == Location("routes/x.yaml", 20, 39)
    # not written in YAML (a default): the nearest ancestor that is
    assert route.loc(("spec", "rules", 0, "destinations", 0, "weight")) == Location("routes/x.yaml", 19, 11)
    assert route.loc(("spec", "rules", 3)) == route.loc(("spec", "rules"))
    assert route.file == "routes/x.yaml"


def test_resources_are_immutable_and_hashable() -> None:
    svc = build_all(MINIMAL)[1]
    assert isinstance(svc, Service)
    with pytest.raises(dataclasses.FrozenInstanceError):
        svc.name = "x"  # type: ignore[misc]
    assert isinstance(svc.ports, tuple)
    assert hash(svc) == hash(build_all(MINIMAL)[1])
    labels = FrozenDict({"a": "b"})
    with pytest.raises(TypeError):
        labels["a"] = "c"  # type: ignore[index]
    assert labels == {"a": "b"} and hash(labels) == hash(FrozenDict([("a", "b")]))


def test_equality_ignores_positions() -> None:
    a = build_all(MINIMAL, "a.yaml")
    b = build_all("# moved down\n\n" + MINIMAL, "b.yaml")
    assert a == b
    assert a[2].loc(("spec", "host")) != b[2].loc(("spec", "host"))


def test_model_indexes() -> None:
    model = ConfigModel.from_resources(build_all(MINIMAL))
    assert model.mesh is not None and model.mesh.trust_domain == "t.example"
    assert model.service(ServiceRef("cart", "default")) is model.services[0]
    assert model.service(("default", "cart")) is model.services[0]
    assert model.service(ServiceRef("cart", "shop")) is None
    assert model.route_for(ServiceRef("cart", "shop")) is model.routes[0]
    assert model.routes_by_host[("shop", "cart")] == (model.routes[0],)
    assert model.traffic_policies_by_service[("default", "cart")] == (model.traffic_policies[0],)
    assert model.authorization_policies_by_namespace["shop"] == (model.authorization_policies[0],)
    assert model.namespaces == frozenset({"default"})
    assert len(list(model.resources())) == 6
    # no policy covers the service and the Mesh names no default
    assert model.rollout_policy_for(ServiceRef("cart", "default")) is None


def test_rollout_policy_lookup_uses_mesh_default() -> None:
    text = MINIMAL.replace("spec: {trustDomain: t.example}",
                           "spec: {trustDomain: t.example, defaultRolloutPolicy: r}")
    model = ConfigModel.from_resources(build_all(text))
    assert model.rollout_policy_for(ServiceRef("cart", "default")) is model.rollout_policies[0]


def test_duplicates_keep_the_first_in_indexes() -> None:
    text = MINIMAL + "---\n" + MINIMAL.split("---\n")[1]
    model = ConfigModel.from_resources(build_all(text))
    assert len(model.services) == 2
    assert model.services_by_key[("default", "cart")] is model.services[0]


def test_endpoint_address_parsing() -> None:
    assert Endpoint("127.0.0.1:80").split() == ("127.0.0.1", 80)
    assert Endpoint("db.internal:5432").split() == ("db.internal", 5432)
    assert Endpoint("[fe80::1]:443").split() == ("fe80::1", 443)
    for bad in ("127.0.0.1", "host:0", "host:99999", ":80", "a b:80", "::1:80"):
        assert Endpoint(bad).split() is None, bad
    e = Endpoint("1.2.3.4:9", FrozenDict({"v": "1"}))
    assert e.in_subset(Subset("s", FrozenDict({"v": "1"}))) and not e.in_subset(Subset("s", FrozenDict({"v": "2"})))


def test_match_catch_all() -> None:
    assert Match().is_catch_all and Match(path=PathMatch(prefix="/")).is_catch_all
    assert not Match(path=PathMatch(prefix="/a")).is_catch_all
    assert not Match(methods=("GET",)).is_catch_all


def test_example_repo_builds_a_model() -> None:
    root = Path(__file__).resolve().parents[2] / "repo_layout_example"
    result = validate(DirectorySource(root))
    assert result.model.mesh is not None
    assert len(result.model.services) >= 5
    for r in result.model.resources():
        assert r.location.line >= 1 and r.file.endswith((".yaml", ".yml"))


@pytest.mark.parametrize("seed", range(3))
def test_every_schema_valid_mutation_builds(seed: int) -> None:
    """The builder relies on the schema only: whatever passes it must build without error."""
    import random

    from test_schema_spec import FULL, _mutations

    from reconciler.language.loader import Document
    from reconciler.language.model import Positions
    from reconciler.language.schema import check_envelope, fast_check

    rng = random.Random(seed)
    docs, _ = load_yaml("f.yaml", FULL.encode())
    built = 0
    for _ in range(400):
        d = rng.choice(docs)
        data = _mutations(d.data, rng)
        if rng.random() < 0.5:
            data = _mutations(data, rng)
        kind = data.get("kind") if isinstance(data, dict) else None
        if not isinstance(kind, str) or kind not in schema_kinds():
            continue
        doc = Document("f.yaml", 0, data, Positions("f.yaml"))
        _, env = check_envelope(doc)
        if env or not fast_check(kind)(data):
            continue
        r = build_resource(data, Positions("f.yaml"))
        assert r.kind == kind
        built += 1
    assert built > 20


def schema_kinds() -> set[str]:
    from reconciler.language.model import KINDS

    return set(KINDS)
