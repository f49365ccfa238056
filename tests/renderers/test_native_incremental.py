"""Incremental rendering gives exactly what a full render gives, and re-renders only what a
change touches."""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.language import model as sm
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers import Fleet, Proxy, RenderResult, default_fleet, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "repo_layout_example"


def _load_synth() -> Any:
    """bench/ is scripts, not a package: load the generator from its file."""
    spec = importlib.util.spec_from_file_location("bench_synth", ROOT / "bench" / "synth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_synth"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


generate = _load_synth().generate


@pytest.fixture(scope="module")
def synth_model(tmp_path_factory: pytest.TempPathFactory) -> sm.ConfigModel:
    root = tmp_path_factory.mktemp("synth")
    generate(root, services=40, routes=120, policies=90, seed=3)
    result = validate(DirectorySource(root))
    assert result.ok, result.errors[:3]
    # Open up a few services' egress so the policy-driven reachability is exercised too.
    services = tuple(
        dataclasses.replace(s, egress=None) if i % 4 == 0 else s
        for i, s in enumerate(result.model.services)
    )
    return dataclasses.replace(result.model, services=services)


def fleet_for(model: sm.ConfigModel) -> Fleet:
    proxies = [
        Proxy(f"{s.name}.{s.namespace}-m{i}", s.ref, sm.FrozenDict({"version": f"v{1 + i % 2}"}))
        for s in model.services_by_key.values()
        for i in range(3)
    ]
    return Fleet.of([*proxies, *default_fleet(model)])  # managed and static proxies mixed


def _swap_weights(rule: sm.RouteRule, rng: random.Random) -> sm.RouteRule:
    if len(rule.destinations) == 2:
        w = rng.choice([50, 70, 99])
        d0, d1 = rule.destinations
        return dataclasses.replace(rule, destinations=(
            dataclasses.replace(d0, weight=w), dataclasses.replace(d1, weight=100 - w)))
    return dataclasses.replace(rule, timeout=rng.choice([1.0, 2.5, 7.0]))


def mutate(model: sm.ConfigModel, rng: random.Random) -> sm.ConfigModel:
    """One random edit, of the kinds commits make."""
    kind = rng.choice(["route", "route-remove", "policy", "policy-remove", "egress", "endpoints",
                       "traffic", "service-remove", "policy-add"])
    routes, pols = list(model.routes), list(model.authorization_policies)
    svcs, tps = list(model.services), list(model.traffic_policies)
    if kind == "route":
        i = rng.randrange(len(routes))
        r = routes[i]
        rules = list(r.rules)
        j = rng.randrange(len(rules))
        rules[j] = _swap_weights(rules[j], rng)
        routes[i] = dataclasses.replace(r, rules=tuple(rules))
    elif kind == "route-remove":
        routes.pop(rng.randrange(len(routes)))
    elif kind == "policy":
        i = rng.randrange(len(pols))
        p = pols[i]
        pols[i] = dataclasses.replace(p, action="DENY" if p.action == "ALLOW" else "ALLOW")
    elif kind == "policy-remove":
        pols.pop(rng.randrange(len(pols)))
    elif kind == "policy-add":
        target, caller = rng.choice(svcs), rng.choice(svcs)
        mesh = model.mesh
        assert mesh is not None
        pols.append(sm.AuthorizationPolicy(
            name=f"added-{rng.randrange(10**6)}", namespace=target.namespace,
            selector=sm.Selector((target.ref,)),
            rules=(sm.AuthorizationRule(from_=(sm.RuleFrom(sm.RuleSource(
                principals=(mesh.principal(caller.namespace, caller.service_account),))),)),),
        ))
    elif kind == "egress":
        i = rng.randrange(len(svcs))
        s = svcs[i]
        others = [o.ref for o in svcs if o is not s]
        svcs[i] = dataclasses.replace(s, egress=tuple(rng.sample(others, 2)) if rng.random() < 0.7 else None)
    elif kind == "endpoints":
        i = rng.randrange(len(svcs))
        s = svcs[i]
        svcs[i] = dataclasses.replace(s, endpoints=(
            *s.endpoints, sm.Endpoint(f"127.0.0.2:{rng.randrange(2000, 3000)}", sm.FrozenDict({"version": "v2"}))))
    elif kind == "traffic":
        if tps and rng.random() < 0.5:
            i = rng.randrange(len(tps))
            tps[i] = dataclasses.replace(tps[i], load_balancer=sm.LoadBalancer(type="random"),
                                         mtls=sm.MtlsSettings(rng.choice(["PERMISSIVE", "DISABLE"])))
        else:
            s = rng.choice(svcs)
            tps.append(sm.TrafficPolicy(name=f"tp-{s.name}", namespace=s.namespace, service=s.ref,
                                        subsets=(sm.SubsetPolicy("v2", mtls=sm.MtlsSettings("PERMISSIVE")),)))
    else:
        svcs.pop(rng.randrange(len(svcs)))
    return dataclasses.replace(model, routes=tuple(routes), authorization_policies=tuple(pols),
                               services=tuple(svcs), traffic_policies=tuple(tps))


def assert_same(a: RenderResult, b: RenderResult) -> None:
    assert list(a.snapshots) == list(b.snapshots)
    assert a.unknown == b.unknown
    for pid, s in a.snapshots.items():
        assert s.canonical() == b.snapshots[pid].canonical(), pid


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_incremental_equals_full_after_random_changes(synth_model: sm.ConfigModel, seed: int) -> None:
    rng = random.Random(seed)
    fleet = fleet_for(synth_model)
    model = synth_model
    state = render(model, fleet).state
    for _ in range(6):
        model = mutate(model, rng)
        incremental = render(model, fleet, previous=state)
        full = render(model, fleet)
        assert_same(incremental, full)
        state = incremental.state  # chain: the next step builds on the incremental state


def test_mesh_change_rerenders_everything_correctly(synth_model: sm.ConfigModel) -> None:
    fleet = fleet_for(synth_model)
    before = render(synth_model, fleet)
    mesh = synth_model.meshes[0]
    changed = dataclasses.replace(synth_model, meshes=(dataclasses.replace(
        mesh, telemetry=sm.Telemetry(tracing_sampling_percent=5.0)),))
    inc = render(changed, fleet, previous=before.state)
    assert_same(inc, render(changed, fleet))
    assert inc.reused == 0


def test_unchanged_model_reuses_every_snapshot(synth_model: sm.ConfigModel) -> None:
    fleet = fleet_for(synth_model)
    first = render(synth_model, fleet)
    again = render(synth_model, fleet, previous=first.state)
    assert again.rendered == 0
    assert all(again.snapshots[p] is first.snapshots[p] for p in first.snapshots)


def _example() -> sm.ConfigModel:
    result = validate(DirectorySource(EXAMPLE))
    assert result.ok
    return result.model


def test_a_route_change_rerenders_only_the_callers_of_its_host() -> None:
    model = _example()
    fleet = default_fleet(model)
    before = render(model, fleet)
    cart = model.route_for(sm.ServiceRef("cart", "shop"))
    assert cart is not None
    rule = dataclasses.replace(cart.rules[0], timeout=9.0)
    new_route = dataclasses.replace(cart, rules=(rule, *cart.rules[1:]))
    changed = dataclasses.replace(model, routes=tuple(new_route if r is cart else r for r in model.routes))
    after = render(changed, fleet, previous=before.state)
    # frontend (2 proxies) and checkout (1) call cart; cart's own proxies do not.
    assert after.rendered == 3
    moved = {p for p in after.snapshots if after.snapshots[p].version != before.snapshots[p].version}
    assert moved == {"frontend.shop-0", "frontend.shop-1", "checkout.shop-0"}
    assert after.snapshots["cart.shop-0"] is before.snapshots["cart.shop-0"]
    assert_same(after, render(changed, fleet))


def test_a_policy_change_rerenders_the_selected_service_only() -> None:
    model = _example()
    fleet = default_fleet(model)
    before = render(model, fleet)
    pol = next(p for p in model.authorization_policies if p.name == "catalog-allow-cart")
    changed = dataclasses.replace(model, authorization_policies=tuple(
        dataclasses.replace(p, action="AUDIT") if p is pol else p for p in model.authorization_policies))
    after = render(changed, fleet, previous=before.state)
    assert after.rendered == 3  # the three catalog proxies (every caller has an egress list)
    assert_same(after, render(changed, fleet))


def test_reachability_follows_a_traffic_policy_mtls_change() -> None:
    """A callee going plaintext (DISABLE) can no longer match principal rules: callers without
    an egress list lose the route, incrementally as in a full render."""
    mesh = sm.Mesh(name="mesh", trust_domain="t.example", authorization=sm.AuthorizationSettings("deny"))

    def svc(name: str) -> sm.Service:
        return sm.Service(name=name, namespace="a", ports=(sm.Port("http", 8080),),
                          identity=sm.Identity(name))

    policy = sm.AuthorizationPolicy(
        name="b-from-a", namespace="a", selector=sm.Selector((sm.ServiceRef("b", "a"),)),
        rules=(sm.AuthorizationRule(from_=(sm.RuleFrom(sm.RuleSource(principals=("t.example/ns/a/sa/a",))),)),),
    )
    before = sm.ConfigModel.from_resources([mesh, svc("a"), svc("b"), policy])
    tp = sm.TrafficPolicy(name="b", namespace="a", service=sm.ServiceRef("b", "a"), mtls=sm.MtlsSettings("DISABLE"))
    after = sm.ConfigModel.from_resources([mesh, svc("a"), svc("b"), policy, tp])
    fleet = Fleet.of([Proxy("a-0", sm.ServiceRef("a", "a")), Proxy("b-0", sm.ServiceRef("b", "a"))])
    first = render(before, fleet)
    assert first.snapshots["a-0"].callees == (sm.ServiceRef("b", "a"),)
    inc = render(after, fleet, previous=first.state)
    assert inc.snapshots["a-0"].callees == ()
    assert_same(inc, render(after, fleet))


def test_policy_change_moves_only_the_callers_it_concerns() -> None:
    """Without egress lists, a policy change re-renders the selected service (inbound) and the
    services whose policy-derived callee set moved, nobody else."""
    mesh = sm.Mesh(name="mesh", trust_domain="t.example", authorization=sm.AuthorizationSettings("deny"))

    def svc(name: str) -> sm.Service:
        return sm.Service(name=name, namespace="a", ports=(sm.Port("http", 8080),), identity=sm.Identity(name))

    def allow(target: str, *callers: str) -> sm.AuthorizationPolicy:
        src = sm.RuleSource(principals=tuple(f"t.example/ns/a/sa/{c}" for c in callers))
        return sm.AuthorizationPolicy(name=f"{target}-allow", namespace="a",
                                      selector=sm.Selector((sm.ServiceRef(target, "a"),)),
                                      rules=(sm.AuthorizationRule(from_=(sm.RuleFrom(src),)),))

    services = [svc(n) for n in "abcd"]
    before = sm.ConfigModel.from_resources([mesh, *services, allow("b", "a"), allow("c", "b"), allow("d", "c")])
    after = sm.ConfigModel.from_resources([mesh, *services, allow("b", "a"), allow("c", "b", "a"), allow("d", "c")])
    fleet = Fleet.of(Proxy(f"{s.name}-0", s.ref) for s in services)
    first = render(before, fleet)
    inc = render(after, fleet, previous=first.state)
    assert inc.rendered == 2  # c (its policies) and a (may now call c)
    moved = {p for p in inc.snapshots if inc.snapshots[p] is not first.snapshots[p]}
    assert moved == {"a-0", "c-0"}
    assert inc.snapshots["a-0"].callees == (sm.ServiceRef("b", "a"), sm.ServiceRef("c", "a"))
    assert_same(inc, render(after, fleet))


def test_every_synthetic_snapshot_compiles(synth_model: sm.ConfigModel) -> None:
    from proxy_runtime.config import Identity, compile_snapshot, snapshot_to_json

    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
    result = render(synth_model, fleet_for(synth_model))
    tcp_forwards = 0
    for rs in result.distinct().values():
        assert snapshot_to_json(rs.snapshot) == rs.json
        ident = Identity("spiffe://synth.example/ns/x/sa/y", pem, key, pem)
        compile_snapshot(dataclasses.replace(rs.snapshot, identity=ident))
        tcp_forwards += len(rs.snapshot.tcp)
    assert tcp_forwards > 0  # the synthetic repo's tcp ports are exercised
