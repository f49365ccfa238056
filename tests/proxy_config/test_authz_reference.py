"""The compiled evaluator against a naive reference written straight from the documented rules
(docs/proxy-snapshot.md, "Authorization policies"), on random policies and requests."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_runtime.config import AuthzRequest, compile_policies, evaluate, is_allowed, parse_policy

# --- the reference: slow and obvious ------------------------------------------------------

HTTP_OP_FIELDS = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")


def ref_str(pattern: str, value: str) -> bool:
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def ref_ip(cidr: str, ip: str | None) -> bool:
    if ip is None:
        return False
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)


def ref_host(pattern: str, host: str) -> bool:
    return ref_str(pattern.lower(), host.lower())


def field_ok(
    values: list[str] | None, not_values: list[str] | None, value: Any, match: Any
) -> bool:
    if values and not (value is not None and any(match(v, value) for v in values)):
        return False
    return not (not_values and value is not None and any(match(v, value) for v in not_values))


def ref_source(src: dict[str, Any], r: dict[str, Any]) -> bool:
    ns = r["principal"].split("/")[2] if r.get("principal") else None
    remote = r.get("remote_ip") or r.get("source_ip")
    return (
        field_ok(src.get("principals"), src.get("notPrincipals"), r.get("principal"), ref_str)
        and field_ok(src.get("namespaces"), src.get("notNamespaces"), ns, ref_str)
        and field_ok(src.get("ipBlocks"), None, r.get("source_ip"), ref_ip)
        and not any(ref_ip(c, r.get("source_ip")) for c in src.get("notIpBlocks", []))
        and field_ok(src.get("remoteIpBlocks"), None, remote, ref_ip)
        and not any(ref_ip(c, remote) for c in src.get("notRemoteIpBlocks", []))
    )


def ref_operation(op: dict[str, Any], r: dict[str, Any], tcp: bool) -> bool:
    port = str(r.get("port", 0))
    if op.get("ports") and port not in op["ports"]:
        return False
    if port in op.get("notPorts", []):
        return False
    if tcp:
        return True  # HTTP fields ignored (only DENY/AUDIT rules get here on TCP)
    path = r.get("path", "").split("?")[0]
    return (
        field_ok(op.get("hosts"), op.get("notHosts"), r.get("host", ""), ref_host)
        and field_ok(op.get("methods"), op.get("notMethods"), r.get("method", ""), ref_str)
        and field_ok(op.get("paths"), op.get("notPaths"), path, ref_str)
    )


def ref_condition(c: dict[str, Any], r: dict[str, Any]) -> bool:
    key = c["key"]
    ns = r["principal"].split("/")[2] if r.get("principal") else None
    if key in ("source.ip", "remote.ip", "destination.ip"):
        value = {
            "source.ip": r.get("source_ip"),
            "remote.ip": r.get("remote_ip") or r.get("source_ip"),
            "destination.ip": r.get("destination_ip"),
        }[key]
        if c.get("values") and not any(ref_ip(v, value) for v in c["values"]):
            return False
        return not any(ref_ip(v, value) for v in c.get("notValues", []))
    if key == "destination.port":
        port = str(r.get("port", 0))
        return (not c.get("values") or port in c["values"]) and port not in c.get("notValues", [])
    value = {
        "source.principal": r.get("principal"),
        "source.namespace": ns,
        "connection.sni": r.get("sni"),
    }.get(key)
    if key.startswith("request.headers["):
        value = r.get("headers", {}).get(key[16:-1].lower())
    return field_ok(c.get("values"), c.get("notValues"), value, ref_str)


def uses_http(rule: dict[str, Any]) -> bool:
    return any(f in t["operation"] for t in rule.get("to", []) for f in HTTP_OP_FIELDS) or any(
        c["key"].startswith("request.") for c in rule.get("when", [])
    )


def ref_rule(rule: dict[str, Any], r: dict[str, Any], tcp: bool) -> bool:
    if rule.get("from") and not any(ref_source(f["source"], r) for f in rule["from"]):
        return False
    if rule.get("to") and not any(ref_operation(t["operation"], r, tcp) for t in rule["to"]):
        return False
    return all(
        ref_condition(c, r)
        for c in rule.get("when", [])
        if not (tcp and c["key"].startswith("request."))
    )


def ref_first_rule(policy: dict[str, Any], r: dict[str, Any]) -> int | None:
    tcp = bool(r.get("tcp"))
    for i, rule in enumerate(policy.get("rules", [])):
        if tcp and policy["action"] == "ALLOW" and uses_http(rule):
            continue  # dropped
        if ref_rule(rule, r, tcp):
            return i
    return None


def ref_evaluate(
    policies: list[dict[str, Any]], default_deny: bool, r: dict[str, Any]
) -> tuple[bool, str, str | None, int | None]:
    for p in policies:
        if p["action"] == "DENY" and (i := ref_first_rule(p, r)) is not None:
            return False, "deny", p["name"], i
    allows = [p for p in policies if p["action"] == "ALLOW"]
    if not allows and not default_deny:
        return True, "no-allow-policy", None, None
    for p in allows:
        if (i := ref_first_rule(p, r)) is not None:
            return True, "allow", p["name"], i
    return False, "no-allow-match", None, None


# --- random policies and requests from a small vocabulary (so things do match) ---------------

PRINCIPALS = ["td/ns/a/sa/x", "td/ns/b/sa/y", "td/ns/a/*", "*/sa/y", "*", "*a*"]
NAMESPACES = ["a", "b", "*", "c*", "*b"]
CIDRS = ["10.0.0.0/8", "10.1.0.0/16", "192.168.1.1", "fd00::/8"]
PORTS = ["80", "8080"]
HOSTS = ["cart", "cart:8080", "*.shop", "Cart.shop", "cart:*", "*:80"]
METHODS = ["GET", "POST", "P*"]
PATHS = ["/a", "/a/*", "*.json", "*", "/b"]
HEADER_VALUES = ["1", "2*", "*"]


def _vals(options: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(options), min_size=1, max_size=2, unique=True)


def _fields(spec: dict[str, list[str]]) -> st.SearchStrategy[dict[str, list[str]]]:
    return st.fixed_dictionaries({}, optional={k: _vals(v) for k, v in spec.items()})


SOURCE = _fields(
    {
        "principals": PRINCIPALS,
        "notPrincipals": PRINCIPALS,
        "namespaces": NAMESPACES,
        "notNamespaces": NAMESPACES,
        "ipBlocks": CIDRS,
        "notIpBlocks": CIDRS,
        "remoteIpBlocks": CIDRS,
        "notRemoteIpBlocks": CIDRS,
    }
)
OPERATION = _fields(
    {
        "hosts": HOSTS,
        "notHosts": HOSTS,
        "ports": PORTS,
        "notPorts": PORTS,
        "methods": METHODS,
        "notMethods": METHODS,
        "paths": PATHS,
        "notPaths": PATHS,
    }
)
CONDITION_VALUES = {
    "request.headers[x-a]": HEADER_VALUES,
    "source.ip": CIDRS,
    "remote.ip": CIDRS,
    "destination.ip": ["127.0.0.1", "10.0.0.0/8"],
    "source.namespace": NAMESPACES,
    "source.principal": PRINCIPALS,
    "destination.port": PORTS,
    "connection.sni": ["cart.shop", "*.shop"],
}


@st.composite
def condition(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from(sorted(CONDITION_VALUES)))
    opts = CONDITION_VALUES[key]
    c: dict[str, Any] = {"key": key}
    which = draw(st.sampled_from(["values", "notValues", "both"]))
    if which in ("values", "both"):
        c["values"] = draw(_vals(opts))
    if which in ("notValues", "both"):
        c["notValues"] = draw(_vals(opts))
    return c


RULE = st.fixed_dictionaries(
    {},
    optional={
        "from": st.lists(SOURCE.map(lambda s: {"source": s}), min_size=1, max_size=2),
        "to": st.lists(OPERATION.map(lambda o: {"operation": o}), min_size=1, max_size=2),
        "when": st.lists(condition(), min_size=1, max_size=2),
    },
)


@st.composite
def policies(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 4))
    out = []
    for i in range(n):
        out.append(
            {
                "name": f"ns/p{i}",
                "action": draw(st.sampled_from(["ALLOW", "DENY", "AUDIT"])),
                "rules": draw(st.lists(RULE, max_size=3)),
            }
        )
    return out


REQUEST = st.fixed_dictionaries(
    {
        "principal": st.sampled_from([None, "td/ns/a/sa/x", "td/ns/b/sa/y", "td/ns/c/sa/x"]),
        "source_ip": st.sampled_from([None, "10.1.2.3", "10.2.0.1", "192.168.1.1", "fd00::1"]),
        "remote_ip": st.sampled_from([None, "10.1.2.3", "8.8.8.8"]),
        "destination_ip": st.sampled_from([None, "127.0.0.1", "10.9.9.9"]),
        "port": st.sampled_from([80, 8080, 9090]),
        "host": st.sampled_from(["cart", "cart:8080", "x.shop", "cart.shop:80", "CART"]),
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
        "path": st.sampled_from(["/a", "/a/b", "/x.json", "/b?q=1", "/"]),
        "headers": st.sampled_from([{}, {"x-a": "1"}, {"x-a": "22"}]),
        "sni": st.sampled_from([None, "cart.shop", "other"]),
        "tcp": st.booleans(),
    }
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.booleans(), REQUEST)
def test_compiled_evaluator_agrees_with_reference(
    raw: list[dict[str, Any]], default_deny: bool, r: dict[str, Any]
) -> None:
    compiled = compile_policies([parse_policy(p) for p in raw], default_deny)
    req = AuthzRequest(
        principal=r["principal"],
        source_ip=r["source_ip"],
        remote_ip=r["remote_ip"],
        destination_ip=r["destination_ip"],
        destination_port=r["port"],
        host=r["host"],
        method=r["method"],
        path=r["path"],
        headers=r["headers"],
        sni=r["sni"],
        is_tcp=r["tcp"],
    )
    d = evaluate(compiled, req)
    assert (d.allowed, d.reason, d.policy, d.rule) == ref_evaluate(raw, default_deny, r)
    assert is_allowed(compiled, req) is d.allowed
    audits = [
        (p["name"], i)
        for p in raw
        if p["action"] == "AUDIT" and (i := ref_first_rule(p, r)) is not None
    ]
    assert [tuple(a) for a in d.audit] == audits
