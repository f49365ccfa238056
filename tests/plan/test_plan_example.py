"""Plan on two commits of the example repo, read back from a real Git repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plan_git import commit, example_files, new_repo

from proxy_runtime.config import AuthzRequest, evaluate
from reconciler.language import model as sm
from reconciler.language.validate import ValidationCache, validate
from reconciler.plan import Plan, PlanLimits, format_plan, plan
from reconciler.source.tree import GitTreeSource
from renderers import default_fleet, render
from renderers.native import proxy_policies

WEIGHTS_AND_PATH = {
    # cart: 90/10 -> 80/20 on both rules
    "routes/cart.yaml": lambda t: t.replace("weight: 90}", "weight: 80}").replace("weight: 10}", "weight: 20}"),
    # catalog: cart may now also GET /reviews/*
    "policies/catalog.yaml": lambda t: t.replace('paths: ["/products/*"]', 'paths: ["/products/*", "/reviews/*"]'),
}


def two_commits(tmp_path: Path, edits: dict[str, object]) -> tuple[object, str, str]:
    repo = new_repo(tmp_path / "repo.git")
    files = example_files()
    base = commit(repo, files, "base")
    changed = dict(files)
    for path, edit in edits.items():
        if edit is None:
            changed.pop(path)
        elif callable(edit):
            new = edit(changed[path])
            assert new != changed[path], f"edit of {path} changed nothing"
            changed[path] = new
        else:
            changed[path] = str(edit)
    head = commit(repo, changed, "change")
    return repo, base, head


def plan_between(repo: object, a: str | None, b: str) -> Plan:
    cache = ValidationCache()
    old = validate(GitTreeSource(repo, a), cache).model if a else None
    new = validate(GitTreeSource(repo, b), cache)
    assert new.ok, new.errors
    return plan(old, new.model, from_rev=a, to_rev=b)


@pytest.fixture(scope="module")
def weights_plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    repo, a, b = two_commits(tmp_path_factory.mktemp("p"), WEIGHTS_AND_PATH)
    return plan_between(repo, a, b)


def test_resource_diff_is_field_level_with_locations(weights_plan: Plan) -> None:
    rs = {(r.kind, r.name): r for r in weights_plan.resources}
    assert set(rs) == {("Route", "cart"), ("AuthorizationPolicy", "catalog-allow-cart")}
    route = rs[("Route", "cart")]
    assert route.change == "changed" and route.file == "routes/cart.yaml:2"
    assert [(f.path, f.old, f.new) for f in route.fields] == [
        ("spec.rules[0].destinations[0].weight", 90, 80),
        ("spec.rules[0].destinations[1].weight", 10, 20),
        ("spec.rules[1].destinations[0].weight", 90, 80),
        ("spec.rules[1].destinations[1].weight", 10, 20),
    ]
    assert route.fields[0].location == "routes/cart.yaml:15"
    pol = rs[("AuthorizationPolicy", "catalog-allow-cart")]
    assert [(f.path, f.old, f.new) for f in pol.fields] == [
        ("spec.rules[0].to[0].operation.paths", ["/products/*"], ["/products/*", "/reviews/*"])
    ]
    assert pol.fields[0].location == "policies/catalog.yaml:33"


def test_proxy_diff_is_the_blast_radius(weights_plan: Plan) -> None:
    pd = weights_plan.proxies
    assert pd.total == 10
    assert {c.proxy for c in pd.changes} == {
        "frontend.shop-0", "frontend.shop-1", "checkout.shop-0",  # call cart
        "catalog.shop-0", "catalog.shop-1", "catalog.shop-2",  # enforce the catalog policy
    }
    assert all(c.change == "changed" for c in pd.changes)
    assert pd.unchanged == 4
    assert {s.service: s.changed for s in pd.services} == {
        "catalog.shop": 3, "checkout.shop": 1, "frontend.shop": 2,
    }
    # static proxies differ in their ports, but change the same way: two distinct changes
    assert pd.distinct_changes == 2
    first, second = pd.diffs
    assert (first.proxies, first.services) == (3, ("checkout.shop", "frontend.shop"))
    assert '-                "weight": 90' in first.diff and '+                "weight": 80' in first.diff
    assert second.services == ("catalog.shop",) and '+                    "/reviews/*"' in second.diff
    assert '"version"' not in first.diff


def test_access_diff_lists_what_flips(weights_plan: Plan) -> None:
    ad = weights_plan.access
    assert ad.revoked == ()
    assert len(ad.granted) == 1
    flip = ad.granted[0]
    assert (flip.destination, flip.port, flip.method, flip.path) == ("catalog.shop", 8080, "GET", "/reviews/*")
    assert flip.sources == ("ns/shop/sa/cart",)
    assert flip.before == "denied (no ALLOW policy matched)"
    assert flip.after == "allowed by shop/catalog-allow-cart"
    # only catalog's inputs changed: every other destination was skipped without evaluating
    assert (ad.destinations, ad.changed_destinations, ad.groups) == (5, 1, 1)


def test_access_diff_agrees_with_the_rendered_policies(weights_plan: Plan) -> None:
    model = weights_plan.render.state.model
    catalog = model.service(sm.ServiceRef("catalog", "shop"))
    assert catalog is not None
    from proxy_runtime.config import compile_policies

    compiled = compile_policies(proxy_policies(model, catalog), default_deny=True)
    inbound = weights_plan.render.snapshots["catalog.shop-0"].snapshot.inbound
    assert inbound is not None and inbound.policies == proxy_policies(model, catalog)
    req = AuthzRequest(principal="shop.example/ns/shop/sa/cart", destination_port=8080,
                       method="GET", path="/reviews/42", host="catalog")
    assert evaluate(compiled, req).allowed


def test_revoking_a_policy_shows_allowed_to_denied(tmp_path: Path) -> None:
    text = example_files()["policies/cart.yaml"]
    only_frontend = text.split("---")[0]
    repo, a, b = two_commits(tmp_path, {"policies/cart.yaml": only_frontend})
    p = plan_between(repo, a, b)
    assert [r.change for r in p.resources] == ["removed"]
    assert p.access.granted == ()
    revoked = {(f.method, f.sources, f.after) for f in p.access.revoked}
    assert revoked == {
        ("GET", ("ns/shop/sa/checkout",), "denied (no ALLOW policy matched)"),
        ("DELETE", ("ns/shop/sa/checkout",), "denied (no ALLOW policy matched)"),
    }
    assert {f.before for f in p.access.revoked} == {"allowed by shop/cart-allow-checkout"}


def test_relaxing_mtls_lets_plaintext_in(tmp_path: Path) -> None:
    repo, a, b = two_commits(tmp_path, {
        "mesh.yaml": lambda t: t.replace("mode: STRICT", "mode: PERMISSIVE"),
    })
    p = plan_between(repo, a, b)
    plain = [f for f in p.access.granted if f.sources == ("(plaintext)",)]
    # frontend allows anyone GET/HEAD/POST outside /admin*: now plaintext callers too
    assert {f.destination for f in plain} == {"frontend.shop"}
    assert {f.method for f in plain} == {"GET", "HEAD", "POST"}
    assert all(f.before == "refused (mTLS STRICT)" for f in plain)
    assert "/admin*" not in {f.path for f in plain}
    # payments pins STRICT in its TrafficPolicy: untouched
    assert all(f.destination != "payments.shop" for f in p.access.flips)
    assert p.access.revoked == ()
    # every proxy's listeners change mode except payments
    assert {c.service for c in p.proxies.changes} == {"cart.shop", "catalog.shop", "checkout.shop", "frontend.shop"}


def test_plan_against_nothing(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r.git")
    head = commit(repo, example_files(), "first")
    p = plan_between(repo, None, head)
    assert {r.change for r in p.resources} == {"added"}
    assert len(p.resources) == len(list(p.render.state.model.resources())) == 26
    assert p.proxies.total == 10 and {c.change for c in p.proxies.changes} == {"added"}
    assert p.access.revoked == ()
    granted = {(f.sources, f.destination) for f in p.access.granted}
    assert (("ns/shop/sa/frontend",), "cart.shop") in granted
    assert (("ns/shop/sa/checkout",), "payments.shop") in granted
    assert all(f.before == "absent (no such service)" for f in p.access.granted)
    assert all("/dev/null" in d.diff for d in p.proxies.diffs)


def test_no_change_is_an_empty_plan(tmp_path: Path) -> None:
    repo, a, b = two_commits(tmp_path, {"README.md": "moved nothing\n"})
    p = plan_between(repo, a, b)
    assert p.empty and p.access.evaluations == 0


def test_caps_fold_large_plans(tmp_path: Path) -> None:
    repo, a, b = two_commits(tmp_path, {
        "mesh.yaml": lambda t: t.replace("accessLogSamplingPercent: 100", "accessLogSamplingPercent: 50"),
    })
    cache = ValidationCache()
    old = validate(GitTreeSource(repo, a), cache).model
    new = validate(GitTreeSource(repo, b), cache).model
    p = plan(old, new, limits=PlanLimits(max_diffs=1, max_diff_lines=4, max_proxies=2))
    assert len(p.proxies.changes) == 10
    assert len(p.proxies.diffs) == 1 and p.proxies.diffs[0].truncated
    assert "more lines of this diff not shown" in p.proxies.diffs[0].diff
    doc = p.to_json()
    assert len(doc["proxies"]["proxies"]) == 2 and doc["proxies"]["proxies_left_out"] == 8
    assert "(+8 more)" in format_plan(p, "text")


def test_formats(weights_plan: Plan) -> None:
    text = format_plan(weights_plan, "text")
    assert "Resources: 0 added, 2 changed, 0 removed" in text
    assert "Proxies: 6 of 10 change; 4 unchanged" in text
    assert "+ ns/shop/sa/cart -> catalog.shop [8080 GET /reviews/*]" in text
    md = format_plan(weights_plan, "markdown")
    assert md.count("<details>") == 3 and "```diff" in md and "| \u2705 granted |" in md
    doc = json.loads(format_plan(weights_plan, "json"))
    assert set(doc) == {"from", "to", "resources", "proxies", "access"}
    assert doc["access"]["granted"][0]["path"] == "/reviews/*"


def test_plan_reuses_a_previous_render(tmp_path: Path) -> None:
    repo, a, b = two_commits(tmp_path, WEIGHTS_AND_PATH)
    cache = ValidationCache()
    old = validate(GitTreeSource(repo, a), cache).model
    new = validate(GitTreeSource(repo, b), cache).model
    old_render = render(old, default_fleet(old))
    p = plan(old, new, old_render=old_render)
    assert p.render.rendered == 6 and p.render.reused == 4
