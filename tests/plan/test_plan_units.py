"""Resource diff and access matrix on small models built in memory."""

from __future__ import annotations

import dataclasses

from reconciler.language import model as sm
from reconciler.language.model import Positions, ServiceRef
from reconciler.plan import access_diff, resource_diff
from reconciler.plan.access import OTHER, identities

MESH = sm.Mesh(name="mesh", trust_domain="t.example", authorization=sm.AuthorizationSettings("deny"))


def svc(name: str, ns: str = "a", sa: str | None = None, tcp: bool = False) -> sm.Service:
    ports = (sm.Port("http", 8080),) + ((sm.Port("db", 5432, "tcp"),) if tcp else ())
    return sm.Service(name=name, namespace=ns, ports=ports, identity=sm.Identity(sa or name))


def allow(name: str, target: str, *, principals: tuple[str, ...] = (), namespaces: tuple[str, ...] = (),
          methods: tuple[str, ...] = (), paths: tuple[str, ...] = (), ns: str = "a",
          action: str = "ALLOW") -> sm.AuthorizationPolicy:
    op = sm.RuleOperation(methods=methods, paths=paths)
    return sm.AuthorizationPolicy(
        name=name, namespace=ns, action=action, selector=sm.Selector((ServiceRef(target, ns),)),
        rules=(sm.AuthorizationRule(
            from_=(sm.RuleFrom(sm.RuleSource(principals=principals, namespaces=namespaces)),)
            if principals or namespaces else (),
            to=(sm.RuleTo(op),) if methods or paths else (),
        ),),
    )


def model(*resources: sm.Resource) -> sm.ConfigModel:
    return sm.ConfigModel.from_resources([MESH, *resources])


def test_moved_document_is_not_a_change() -> None:
    s = svc("x")
    moved = dataclasses.replace(s, positions=Positions("elsewhere.yaml", {(): (9, 1, 9, 1)}))
    assert resource_diff(model(s), model(moved)) == ()


def test_field_changes_use_yaml_names_and_durations() -> None:
    rule = sm.RouteRule(destinations=(sm.Destination(ServiceRef("x", "a")),), timeout=2.0,
                        retries=sm.Retries(1, per_try_timeout=0.25))
    r1 = sm.Route(name="x", namespace="a", host=ServiceRef("x", "a"), rules=(rule,))
    r2 = dataclasses.replace(r1, rules=(dataclasses.replace(rule, timeout=3.0, retries=sm.Retries(1, 0.5)),))
    (change,) = resource_diff(model(svc("x"), r1), model(svc("x"), r2))
    assert [(f.path, f.old, f.new) for f in change.fields] == [
        ("spec.rules[0].retries.perTryTimeout", "250ms", "500ms"),
        ("spec.rules[0].timeout", "2s", "3s"),
    ]


def test_identity_classes_do_not_enumerate_every_source() -> None:
    callers = [svc(f"c{i}") for i in range(50)]
    target = svc("t")
    before = model(target, *callers, allow("t-1", "t", principals=("t.example/ns/a/sa/c1",)))
    after = model(target, *callers, allow("t-1", "t", principals=("t.example/ns/a/sa/c1", "t.example/ns/a/sa/c2")))
    diff = access_diff(before, after)
    assert [(f.sources, f.granted) for f in diff.flips] == [(("ns/a/sa/c2",), True)]
    # classes: c1, c2, everyone else (49 callers + OTHER), at two revisions: 3 x 2 evaluations
    assert diff.evaluations == 6
    assert diff.identities == 52


def test_a_wildcard_grant_covers_the_unnamed_class() -> None:
    target, c = svc("t"), svc("c", ns="b")
    before = model(target, c, allow("t-1", "t", principals=("t.example/ns/b/sa/c",)))
    after = model(target, c, allow("t-1", "t", namespaces=("*",)))
    flips = access_diff(before, after).granted
    assert len(flips) == 1
    assert set(flips[0].sources) == {"ns/a/sa/t", OTHER}


def test_methods_and_paths_are_classes_only_when_used() -> None:
    target, c = svc("t"), svc("c")
    before = model(target, c, allow("t-1", "t", principals=("t.example/ns/a/sa/c",), methods=("GET",)))
    after = model(target, c, allow("t-1", "t", principals=("t.example/ns/a/sa/c",), methods=("GET", "POST"),
                                   paths=("/api/*", "/health")))
    diff = access_diff(before, after)
    got = {(f.method, f.path, f.granted) for f in diff.flips if f.sources == ("ns/a/sa/c",)}
    assert got == {
        ("GET", "other", False), ("POST", "/api/*", True), ("POST", "/health", True),
    }


def test_deny_wins_and_tcp_ignores_http_fields() -> None:
    target, c = svc("t", tcp=True), svc("c")
    base = allow("t-1", "t", principals=("t.example/ns/a/sa/c",))
    deny = allow("t-2", "t", principals=("t.example/ns/a/sa/c",), methods=("DELETE",), action="DENY")
    diff = access_diff(model(target, c, base), model(target, c, base, deny))
    revoked = {(f.port, f.method) for f in diff.revoked}
    # on http: only DELETE is denied; on tcp the HTTP-only DENY applies to the whole port
    assert revoked == {(8080, "DELETE"), (5432, "*")}
    assert all(f.after == "denied by a/t-2" for f in diff.revoked)


def test_removed_service_revokes_everything_it_allowed() -> None:
    target, c = svc("t"), svc("c")
    before = model(target, c, allow("t-1", "t", principals=("t.example/ns/a/sa/c",)))
    diff = access_diff(before, model(c))
    assert [(f.destination, f.sources, f.after) for f in diff.revoked] == [
        ("t.a", ("ns/a/sa/c",), "absent (no such service)")
    ]


def test_shared_service_accounts_are_one_identity() -> None:
    ids = identities([model(svc("x", sa="shared"), svc("y", sa="shared"), svc("z"))])
    assert [(i.label, i.services) for i in ids] == [
        ("ns/a/sa/shared", ("x.a", "y.a")), ("ns/a/sa/z", ("z.a",)), (OTHER, ()),
    ]


def test_reports_cap_long_resource_lists() -> None:
    from reconciler.plan import format_plan, plan
    from reconciler.plan.report import MAX_RESOURCE_LINES

    many = [svc(f"s{i:03d}") for i in range(MAX_RESOURCE_LINES + 5)]
    p = plan(None, model(*many))
    assert len(p.resources) == MAX_RESOURCE_LINES + 6  # the Mesh too
    text = format_plan(p, "text")
    assert "... 6 more resources not shown" in text
    assert text.count("  + Service ") == MAX_RESOURCE_LINES - 1
    assert "more resources not shown." in format_plan(p, "markdown")


def test_markdown_fits_a_pull_request_comment() -> None:
    from reconciler.plan import PlanLimits, format_plan, plan
    from reconciler.plan.report import MAX_MARKDOWN_CHARS

    callers = [svc(f"c{i:03d}") for i in range(120)]
    targets = [svc(f"t{i:03d}") for i in range(60)]
    pols = [allow(f"{t.name}-allow", t.name, principals=tuple(
        f"t.example/ns/a/sa/c{j:03d}" for j in range(i, i + 3)), paths=("/api/*",), methods=("GET",))
        for i, t in enumerate(targets)]
    from renderers import Fleet, Proxy

    fleet = Fleet.of(Proxy(f"{s.name}-0", s.ref) for s in (*callers, *targets))
    p = plan(None, model(*callers, *targets, *pols), new_fleet=fleet,
             limits=PlanLimits(max_diffs=200, max_diff_lines=5000))
    assert len(p.proxies.diffs) == 180
    md = format_plan(p, "markdown")
    assert len(md) < MAX_MARKDOWN_CHARS
    assert "more distinct changes not shown." in md
    assert "#### Access matrix" in md


def test_hosts_are_a_dimension_when_a_policy_names_them() -> None:
    target, c = svc("t"), svc("c")
    base = allow("t-1", "t", principals=("t.example/ns/a/sa/c",))
    rule = base.rules[0]
    hosted = dataclasses.replace(base, rules=(dataclasses.replace(
        rule, to=(sm.RuleTo(sm.RuleOperation(hosts=("t.a", "*.internal"))),)),))
    diff = access_diff(model(target, c, base), model(target, c, hosted))
    revoked = {(f.host, f.sources) for f in diff.revoked}
    # requests to any other host than the two named lose access; named ones keep it
    assert revoked == {("other", ("ns/a/sa/c",))}
    assert diff.granted == ()


def test_a_policy_the_proxy_would_refuse_is_reported_not_raised() -> None:
    target, c = svc("t"), svc("c")
    good = allow("t-1", "t", principals=("t.example/ns/a/sa/c",))
    bad_rule = sm.AuthorizationRule(from_=(sm.RuleFrom(sm.RuleSource(ip_blocks=("10.0.0.0/99",))),))
    bad = dataclasses.replace(good, rules=(*good.rules, bad_rule))
    diff = access_diff(model(target, c, bad), model(target, c, good))  # e.g. an invalid --from
    assert diff.granted and all(f.before.startswith("invalid (the proxy refuses") for f in diff.granted)
