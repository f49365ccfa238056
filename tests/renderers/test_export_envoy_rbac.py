"""The Envoy RBAC the exporter writes decides like the proxy: a small evaluator of Envoy's
RBAC semantics (envoy.config.rbac.v3, as documented) runs over the exported filters and must
agree with `proxy_runtime.config.evaluate` - allow/deny and the AUDIT hits - on thousands of
random requests against every inbound listener of the golden cases."""

from __future__ import annotations

import ipaddress
import random
import re
from pathlib import Path
from typing import Any

import pytest

from proxy_runtime.config import AuthzRequest, compile_policies, evaluate
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers import default_fleet, render
from renderers.exporters.envoy import rbac_rules

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p.parent.name for p in GOLDEN.glob("*/input"))


# --- Envoy's RBAC, evaluated on the exported dicts -----------------------------------------


def string_match(m: dict[str, Any], value: str | None) -> bool:
    if value is None:
        return False
    v, fold = (value.lower(), True) if m.get("ignore_case") else (value, False)

    def f(x: str) -> str:
        return x.lower() if fold else x

    if "exact" in m:
        return v == f(m["exact"])
    if "prefix" in m:
        return v.startswith(f(m["prefix"]))
    if "suffix" in m:
        return v.endswith(f(m["suffix"]))
    if "safe_regex" in m:
        return re.fullmatch(m["safe_regex"]["regex"], value) is not None
    raise AssertionError(f"unknown string matcher {m}")


def cidr(c: dict[str, Any], ip: str | None) -> bool:
    if ip is None:
        return False
    net = ipaddress.ip_network(f"{c['address_prefix']}/{c['prefix_len']}", strict=False)
    addr = ipaddress.ip_address(ip)
    return addr.version == net.version and addr in net


def header(h: dict[str, Any], req: AuthzRequest) -> bool:
    name = h["name"]
    value = {":method": req.method, ":authority": req.host}.get(name, req.headers.get(name))
    return string_match(h["string_match"], value)


def permission(p: dict[str, Any], req: AuthzRequest, port: int) -> bool:
    (kind, v), = p.items()
    if kind == "any":
        return bool(v)
    if kind == "and_rules":
        return all(permission(x, req, port) for x in v["rules"])
    if kind == "or_rules":
        return any(permission(x, req, port) for x in v["rules"])
    if kind == "not_rule":
        return not permission(v, req, port)
    if kind == "header":
        return not req.is_tcp and header(v, req)
    if kind == "url_path":
        return not req.is_tcp and string_match(v["path"], req.path)
    if kind == "destination_port":
        return v == port
    if kind == "destination_ip":
        return cidr(v, req.destination_ip)
    if kind == "requested_server_name":
        return string_match(v, req.sni or "")
    raise AssertionError(f"unknown permission {kind}")


def principal(p: dict[str, Any], req: AuthzRequest) -> bool:
    (kind, v), = p.items()
    if kind == "any":
        return bool(v)
    if kind == "and_ids":
        return all(principal(x, req) for x in v["ids"])
    if kind == "or_ids":
        return any(principal(x, req) for x in v["ids"])
    if kind == "not_id":
        return not principal(v, req)
    if kind == "authenticated":
        return req.principal is not None and string_match(
            v["principal_name"], "spiffe://" + req.principal)
    if kind == "direct_remote_ip":
        return cidr(v, req.source_ip)
    if kind == "remote_ip":
        return cidr(v, req.remote_ip or req.source_ip)
    if kind == "header":
        return not req.is_tcp and header(v, req)
    raise AssertionError(f"unknown principal {kind}")


def matching(rules: dict[str, Any], req: AuthzRequest, port: int) -> set[str]:
    return {
        name for name, pol in rules.get("policies", {}).items()
        if any(permission(p, req, port) for p in pol["permissions"])
        and any(principal(p, req) for p in pol["principals"])
    }


def envoy_decides(chain: list[dict[str, Any]], req: AuthzRequest, port: int) -> tuple[bool, set[str]]:
    audit: set[str] = set()
    allowed = True
    for rules in chain:
        hits = matching(rules, req, port)
        if rules["action"] == "LOG":
            audit |= hits
        elif (rules["action"] == "DENY") == bool(hits):  # a DENY hit, or no ALLOW hit
            allowed = False
            break
    return allowed, audit


# --- random requests ------------------------------------------------------------------------

TDS = ["shop.example", "corp.example", "data.example", "canary.example", "other.example"]
NSS = ["shop", "bank", "web", "ops", "data", "apps", "kube-system", "ops-team", "webapp", "shopx"]
SAS = ["frontend", "checkout", "cart", "payments-admin", "teller", "ledger", "portal", "app", "x"]
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD"]
PATHS = ["/", "/admin", "/admin/x", "/debug/vars", "/reports/q1", "/x.csv", "/cart/1", "/cart",
         "/charge/9", "/payments/1", "/products/7", "/metrics", "/checkout", "/orders/3", "/a?b=1"]
HOSTS = ["teller.bank", "teller.bank:8080", "TELLER.bank", "portal.web", "x"]
HEADERS = [{}, {"x-tenant": "acme"}, {"x-tenant": "globex-eu"}, {"user-agent": "a-bot-b"},
           {"x-env": "test"}, {"x-env": "prod"}]
IPS = ["10.1.2.3", "10.9.1.1", "192.168.1.7", "172.16.5.5", "172.20.0.1", "8.8.8.8", "::1"]


def random_request(rng: random.Random, service_port: int, tcp: bool) -> AuthzRequest:
    principal_ = None if rng.random() < 0.2 else (
        f"{rng.choice(TDS)}/ns/{rng.choice(NSS)}/sa/{rng.choice(SAS)}")
    return AuthzRequest(
        principal=principal_, source_ip=rng.choice(IPS), destination_ip="127.0.0.1",
        destination_port=service_port, host=rng.choice(HOSTS), method=rng.choice(METHODS),
        path=rng.choice(PATHS), headers=rng.choice(HEADERS),
        sni=rng.choice([None, "portal.web", "other"]), is_tcp=tcp,
    )


@pytest.mark.parametrize("case", CASES)
def test_envoy_rbac_decides_like_the_proxy(case: str) -> None:
    result = validate(DirectorySource(GOLDEN / case / "input"))
    assert result.ok
    rendered = render(result.model, default_fleet(result.model))
    rng = random.Random(f"rbac-{case}")
    checked = 0
    outcomes: set[bool] = set()
    for snap in rendered.distinct().values():
        inbound = snap.snapshot.inbound
        assert inbound is not None
        compiled = compile_policies(inbound.policies, inbound.default_deny)
        for li in inbound.listeners:
            chain = rbac_rules(inbound, li)
            tcp = li.protocol == "tcp"
            for _ in range(1500):
                req = random_request(rng, li.service_port or 0, tcp)
                native = evaluate(compiled, req)
                allowed, audit = envoy_decides(chain, req, li.port)
                assert allowed == native.allowed, (case, li.port, req.__dict__, native, chain)
                assert audit == {f"{r.policy}[{r.rule}]" for r in native.audit}, (case, req.__dict__)
                checked += 1
                outcomes.add(allowed)
    assert checked >= 1500
    if result.model.authorization_policies:
        assert outcomes == {True, False}  # the sample reaches both decisions


def test_the_evaluator_itself_tells_allow_from_deny() -> None:
    """The check above is only as good as this evaluator: it must deny what a policy denies."""
    deny = [{"action": "DENY", "policies": {"p[0]": {
        "permissions": [{"url_path": {"path": {"prefix": "/admin"}}}],
        "principals": [{"not_id": {"authenticated": {"principal_name": {"safe_regex": {"regex": ".+"}}}}}],
    }}}]
    plain = AuthzRequest(path="/admin/x", method="GET")
    mtls = AuthzRequest(principal="td/ns/a/sa/b", path="/admin/x", method="GET")
    assert envoy_decides(deny, plain, 80) == (False, set())
    assert envoy_decides(deny, mtls, 80) == (True, set())
    assert envoy_decides([{"action": "ALLOW"}], mtls, 80) == (False, set())
