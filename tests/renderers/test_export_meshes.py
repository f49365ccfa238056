"""The Istio, Linkerd and Gateway API exporters on small repos: what they write, and the
warnings (naming the resource and field) for what they cannot express."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.language.model import ConfigModel
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers.exporters import FORMATS, export
from renderers.exporters.common import Export, duration
from renderers.exporters.gateway_api import export_gateway_api
from renderers.exporters.istio import export_istio
from renderers.exporters.linkerd import export_linkerd, identity, namespace_identity
from renderers.targets import default_fleet

MESH = """apiVersion: meshcd.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec: {trustDomain: td.example%s}
---
apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: ns}
spec:
  ports: [{name: http, number: 8080}]
  subsets: [{name: v1, labels: {v: "1"}}, {name: v2, labels: {v: "2"}}]
  endpoints: [{address: "127.0.0.1:9500", labels: {v: "1"}}]
"""


def model_of(tmp_path: Path, *docs: str, mesh_extra: str = "") -> ConfigModel:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "all.yaml").write_text("\n---\n".join([MESH % mesh_extra, *docs]))
    result = validate(DirectorySource(repo))
    assert result.ok, [str(f) for f in result.errors]
    return result.model


def doc(ex: Export, path: str) -> Any:
    return yaml.safe_load(ex.files[path])


def warned(ex: Export, resource: str, *words: str) -> bool:
    return any(w.resource == resource and all(x in w.message for x in words) for w in ex.warnings)


ROUTE = """apiVersion: meshcd.dev/v1alpha1
kind: Route
metadata: {name: api, namespace: ns}
spec:
  host: api
  rules:
    - name: tests
      matches:
        - headers: [{name: x-test, present: true}]
          queryParams: [{name: q, present: true}]
          path: {prefix: /a.b}
          methods: [GET, POST]
      destinations: [{service: api, subset: v2, port: 8080}]
      retries: {attempts: 2, retryOn: [reset]}
      fault: {abort: {httpStatus: 500, percent: 1}}
    - destinations:
        - {service: api, subset: v1, port: 8080, weight: 75}
        - {service: api, subset: v2, port: 8080, weight: 25}
      timeout: 1500ms
      mirror: {service: api, subset: v2, percent: 0.5}
      headers: {request: {add: {x-a: "1"}, remove: [x-b]}}
"""


def test_istio_virtual_service_is_the_route_and_disables_istios_default_retries(tmp_path: Path) -> None:
    ex = export_istio(model_of(tmp_path, ROUTE))
    vs = doc(ex, "ns/virtualservice-api.yaml")
    assert vs["apiVersion"] == "networking.istio.io/v1" and vs["spec"]["hosts"] == ["api.ns.svc.cluster.local"]
    first, second = vs["spec"]["http"]
    assert first["match"][0]["uri"] == {"prefix": "/a.b"}
    assert first["match"][0]["method"] == {"regex": "GET|POST"}
    assert first["match"][0]["headers"] == {"x-test": {"regex": ".*"}}
    assert first["retries"] == {"attempts": 2, "retryOn": "reset"}
    assert first["fault"] == {"abort": {"httpStatus": 500, "percentage": {"value": 1.0}}}
    assert second["retries"] == {"attempts": 0}  # meshcd never retries unless asked
    assert [r["weight"] for r in second["route"]] == [75, 25]
    assert second["timeout"] == "1500ms"
    assert second["mirrorPercentage"] == {"value": 0.5}
    assert second["headers"] == {"request": {"add": {"x-a": "1"}, "remove": ["x-b"]}}
    dr = doc(ex, "ns/destinationrule-api.yaml")
    assert [s["labels"] for s in dr["spec"]["subsets"]] == [{"v": "1"}, {"v": "2"}]


def test_istio_policies_keep_istio_semantics(tmp_path: Path) -> None:
    policy = """apiVersion: meshcd.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: ns}
spec:
  selector: {services: [api]}
  action: DENY
  rules:
    - from: [{source: {notPrincipals: ["*"], ipBlocks: [10.0.0.0/8]}}]
      to: [{operation: {notPaths: [/ok*]}}]
      when: [{key: source.namespace, notValues: [kube-system]}]
"""
    ex = export_istio(model_of(tmp_path, policy, mesh_extra=", authorization: {default: deny}"))
    ap = doc(ex, "ns/authorizationpolicy-p.yaml")["spec"]
    assert ap["selector"] == {"matchLabels": {"app": "api"}}
    assert ap["action"] == "DENY"
    assert ap["rules"] == [{
        "from": [{"source": {"notPrincipals": ["*"], "ipBlocks": ["10.0.0.0/8"]}}],
        "to": [{"operation": {"notPaths": ["/ok*"]}}],
        "when": [{"key": "source.namespace", "notValues": ["kube-system"]}],
    }]
    # default deny: an ALLOW policy without rules in the root namespace
    deny_all = doc(ex, "meshcd-system/authorizationpolicy-meshcd-default-deny.yaml")
    assert deny_all["spec"] == {}
    assert doc(ex, "meshcd-system/peerauthentication-default.yaml")["spec"] == {"mtls": {"mode": "STRICT"}}
    assert ex.warnings == []


def test_linkerd_has_no_deny_and_says_so(tmp_path: Path) -> None:
    policies = """apiVersion: meshcd.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: ns}
spec:
  selector: {services: [api]}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
---
apiVersion: meshcd.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: ns}
spec:
  selector: {services: [api]}
  rules:
    - from: [{source: {principals: [td.example/ns/ns/sa/web]}}, {source: {notNamespaces: [x]}}]
      to: [{operation: {methods: [GET], paths: [/items/*]}}]
"""
    ex = export_linkerd(model_of(tmp_path, policies))
    assert warned(ex, "AuthorizationPolicy ns/no-admin", "no DENY", "allows what this policy denies")
    assert warned(ex, "AuthorizationPolicy ns/allow", "spec.rules[0].from[1]", "notNamespaces")
    assert not any(p.endswith("no-admin.yaml") or "no-admin-" in p for p in ex.files)
    server = doc(ex, "ns/server-api.http.yaml")["spec"]
    assert server == {"podSelector": {"matchLabels": {"app": "api"}}, "port": 8080,
                      "proxyProtocol": "HTTP/1", "accessPolicy": "deny"}
    route = doc(ex, "ns/httproute-allow.r0.api.http.yaml")["spec"]
    assert route["rules"][0]["matches"] == [
        {"path": {"type": "RegularExpression", "value": "/items/.*"}, "method": "GET"}]
    # a Server with routes answers 404 to what no route matches: a catch-all route is added
    assert doc(ex, "ns/httproute-api.http.default.yaml")["spec"]["rules"] == [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]
    ap = doc(ex, "ns/authorizationpolicy-allow.r0.s0.api.http.yaml")["spec"]
    assert ap["targetRef"] == {"group": "policy.linkerd.io", "kind": "HTTPRoute",
                               "name": "allow.r0.api.http"}
    (ref,) = ap["requiredAuthenticationRefs"]
    ids = doc(ex, f"ns/meshtlsauthentication-{ref['name']}.yaml")["spec"]["identities"]
    assert ids == ["web.ns.serviceaccount.identity.linkerd.td.example"]


def test_linkerd_without_allow_policy_allows_by_mtls_mode(tmp_path: Path) -> None:
    ex = export_linkerd(model_of(tmp_path))
    assert doc(ex, "ns/server-api.http.yaml")["spec"]["accessPolicy"] == "all-authenticated"
    ex = export_linkerd(model_of(tmp_path, mesh_extra=", mtls: {mode: PERMISSIVE}"))
    assert doc(ex, "ns/server-api.http.yaml")["spec"]["accessPolicy"] == "all-unauthenticated"
    ex = export_linkerd(model_of(tmp_path, mesh_extra=", authorization: {default: deny}"))
    assert doc(ex, "ns/server-api.http.yaml")["spec"]["accessPolicy"] == "deny"
    ex = export_linkerd(model_of(tmp_path, mesh_extra=", mtls: {mode: DISABLE}"))
    assert warned(ex, "Service ns/api", "DISABLE")


def test_linkerd_identities() -> None:
    assert identity("td/ns/a/sa/b") == "b.a.serviceaccount.identity.linkerd.td"
    assert identity("*") == "*"
    assert identity("td/ns/a/sa/b*") is None
    assert identity("not-a-principal") is None
    assert namespace_identity("a", "td") == "*.a.serviceaccount.identity.linkerd.td"
    assert namespace_identity("a*", "td") is None


def test_gateway_api_httproute_attaches_to_the_service_and_warns(tmp_path: Path) -> None:
    ex = export_gateway_api(model_of(tmp_path, ROUTE))
    hr = doc(ex, "ns/httproute-api.yaml")["spec"]
    assert hr["parentRefs"] == [{"group": "", "kind": "Service", "name": "api"}]
    first, second = hr["rules"]
    # a plain string prefix is not Gateway API's segment prefix: a regex; methods split
    assert first["matches"] == [
        {"path": {"type": "RegularExpression", "value": r"/a\.b.*"},
         "headers": [{"name": "x-test", "type": "RegularExpression", "value": ".*"}],
         "queryParams": [{"name": "q", "type": "RegularExpression", "value": ".*"}], "method": m}
        for m in ("GET", "POST")]
    assert first["backendRefs"] == [{"name": "api-v2", "port": 8080}]
    assert second["backendRefs"] == [{"name": "api-v1", "port": 8080, "weight": 75},
                                     {"name": "api-v2", "port": 8080, "weight": 25}]
    assert second["timeouts"] == {"request": "1500ms"}
    mirror = next(f for f in second["filters"] if f["type"] == "RequestMirror")["requestMirror"]
    assert mirror["fraction"] == {"numerator": 5000, "denominator": 1000000}
    r = "Route ns/api"
    assert warned(ex, r, "spec.rules[0].retries", "no retries")
    assert warned(ex, r, "spec.rules[0].fault", "no fault injection")
    assert warned(ex, r, "spec.rules[1]", "spec.rules[0]", "most specific") is False  # catch-all last
    # one Service per subset a route sends to
    svc = doc(ex, "ns/service-api-v2.yaml")["spec"]
    assert svc["selector"] == {"app": "api", "v": "2"} and svc["ports"][0]["port"] == 8080


def test_every_format_is_deterministic_and_bad_format_is_refused(tmp_path: Path) -> None:
    model = model_of(tmp_path, ROUTE)
    fleet = default_fleet(model)
    for fmt in FORMATS:
        a, b = export(fmt, model, fleet), export(fmt, model, fleet)
        assert a.files == b.files and a.warnings == b.warnings and a.files
    with pytest.raises(ValueError, match="unknown format"):
        export("consul", model, fleet)
    with pytest.raises(KeyError):
        export("envoy", model, fleet, proxy="nobody")
    assert list(export("native", model, fleet, proxy="api.ns-0").files) == ["api.ns-0.json"]


def test_durations() -> None:
    assert duration(3.0) == "3s"
    assert duration(0.25) == "250ms"
    assert duration(1.5) == "1500ms"


def test_gateway_api_warns_when_two_rules_with_conditions_may_swap(tmp_path: Path) -> None:
    route = """apiVersion: meshcd.dev/v1alpha1
kind: Route
metadata: {name: api, namespace: ns}
spec:
  host: api
  rules:
    - name: by-header
      matches: [{headers: [{name: x-a, exact: "1"}]}]
      destinations: [{service: api, subset: v2}]
    - name: by-path
      matches: [{path: {exact: /x}}]
      destinations: [{service: api, subset: v1}]
"""
    ex = export_gateway_api(model_of(tmp_path, route))
    assert warned(ex, "Route ns/api", "spec.rules[1] (by-path) follows spec.rules[0] (by-header)",
                  "most specific")


def test_generated_names_cannot_collide_with_real_ones(tmp_path: Path) -> None:
    # `allow` selecting two services must not clash with a policy really named `allow-web`
    policies = """apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: ns}
spec: {ports: [{name: http, number: 80}]}
---
apiVersion: meshcd.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: ns}
spec:
  selector: {services: [api, web]}
  rules: [{from: [{source: {namespaces: [ns]}}]}]
---
apiVersion: meshcd.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: ns}
spec:
  selector: {services: [web]}
  rules: [{from: [{source: {namespaces: [ns]}}]}]
"""
    model = model_of(tmp_path, policies)
    istio = export_istio(model)
    assert {"ns/authorizationpolicy-allow.web.yaml", "ns/authorizationpolicy-allow-web.yaml",
            "ns/authorizationpolicy-allow.api.yaml"} <= set(istio.files)
    linkerd = export_linkerd(model)
    assert "ns/authorizationpolicy-allow.web.r0.s0.web.http.yaml" in linkerd.files
    assert "ns/authorizationpolicy-allow-web.r0.s0.web.http.yaml" in linkerd.files


def test_k8s_names_stay_within_kubernetes_limits() -> None:
    from renderers.exporters.common import k8s_name
    assert k8s_name("a", "B_c") == "a.b-c"
    long = k8s_name("x" * 200, "y" * 100)
    assert len(long) == 253 and long != k8s_name("x" * 200, "z" * 100)
