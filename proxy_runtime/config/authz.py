"""Istio authorization, evaluated exactly: the proxy runs it per request, the plan millions of times.

`compile_policies` turns the policies of one workload into predicates once (string matchers split
into exact/prefix/suffix sets, CIDRs into integer ranges, one variant for HTTP and one for TCP
ports); `evaluate` and `is_allowed` then only call closures. Semantics: docs/proxy-snapshot.md,
"Authorization policies".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple

from .errors import SnapshotError
from .matchers import IpPred, StrPred, ip_matcher, istio_string_matcher, parse_cidr
from .model import Action, AuthorizationPolicy, Condition, Operation, Rule, Source

DEFAULT_DENY_POLICY = "(mesh default deny)"

HTTP_ONLY_OPERATION_FIELDS = ("hosts", "not_hosts", "methods", "not_methods", "paths", "not_paths")


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True, init=False)  # hand-written __init__: this is built once per request
class AuthzRequest:
    """What the evaluator sees of a request or TCP connection.

    principal: the peer's SPIFFE ID without `spiffe://` (`td/ns/<ns>/sa/<sa>`), None for a
    plaintext peer. namespace: parsed from the principal when not given. remote_ip: the
    original client; None means the source ip. headers: lowercased names, several values
    joined with ",". path: as received; a query string is dropped here. destination_port: the
    listener's service port. is_tcp: a TCP connection (HTTP-only fields of ALLOW rules drop the
    rule; of DENY/AUDIT rules are ignored). With dataclasses.replace, pass namespace=None along
    with a new principal, or the old derived namespace is kept.
    """

    principal: str | None
    source_ip: str | None
    remote_ip: str | None
    destination_ip: str | None
    destination_port: int
    host: str
    method: str
    path: str
    headers: Mapping[str, str]
    sni: str | None
    is_tcp: bool
    namespace: str | None

    def __init__(
        self,
        principal: str | None = None,
        source_ip: str | None = None,
        remote_ip: str | None = None,
        destination_ip: str | None = None,
        destination_port: int = 0,
        host: str = "",
        method: str = "",
        path: str = "",
        headers: Mapping[str, str] = _NO_HEADERS,
        sni: str | None = None,
        is_tcp: bool = False,
        namespace: str | None = None,
    ) -> None:
        # Normalize once here so that every matcher is a plain attribute read.
        if principal is not None:
            if principal.startswith("spiffe://"):
                principal = principal[9:]
            if not principal:
                principal = None
            elif namespace is None:
                namespace = namespace_of(principal)
        q = path.find("?")
        if q != -1:
            path = path[:q]
        self.principal = principal
        self.source_ip = source_ip
        self.remote_ip = remote_ip
        self.destination_ip = destination_ip
        self.destination_port = destination_port
        self.host = host
        self.method = method
        self.path = path
        self.headers = headers
        self.sni = sni or None
        self.is_tcp = is_tcp
        self.namespace = namespace


@lru_cache(maxsize=4096)  # peers repeat: a cache hit is cheaper than splitting
def namespace_of(principal: str) -> str | None:
    """`td/ns/<ns>/sa/<sa>` -> `<ns>`; None if the principal is not in that form."""
    parts = principal.split("/")
    if len(parts) >= 5 and parts[1] == "ns" and parts[3] == "sa" and parts[2]:
        return parts[2]
    return None


class RuleRef(NamedTuple):
    """A policy rule that matched: the policy name and the rule's index in `rules`."""

    policy: str
    rule: int


class AuthzDecision(NamedTuple):  # a tuple, mostly prepared at compile time
    """allowed, and why. reason is one of:

    - "deny": a DENY policy matched (policy/rule name it)
    - "allow": an ALLOW policy matched (policy/rule name it)
    - "no-allow-policy": nothing denied and the workload has no ALLOW policy
    - "no-allow-match": the workload has ALLOW policies and none matched
    audit: the AUDIT policy rules that matched (first matching rule per policy).
    """

    allowed: bool
    reason: str
    policy: str | None = None
    rule: int | None = None
    audit: tuple[RuleRef, ...] = ()


ReqPred = Callable[[AuthzRequest], bool]


@dataclass(frozen=True, slots=True)
class _CompiledPolicy:
    name: str
    action: Action
    # (index in the source policy, predicate, the decision it makes when nothing is audited)
    rules: tuple[tuple[int, ReqPred, AuthzDecision], ...]

    def first_match(self, req: AuthzRequest) -> int | None:
        for index, pred, _ in self.rules:
            if pred(req):
                return index
        return None


def _make_policy(
    name: str, action: Action, rules: Sequence[tuple[int, ReqPred]]
) -> _CompiledPolicy:
    reason = "deny" if action == "DENY" else "allow"
    allowed = action != "DENY"
    return _CompiledPolicy(
        name,
        action,
        tuple((i, pred, AuthzDecision(allowed, reason, name, i)) for i, pred in rules),
    )


_NO_ALLOW_POLICY = AuthzDecision(True, "no-allow-policy")
_NO_ALLOW_MATCH = AuthzDecision(False, "no-allow-match")


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The policies of one workload for one kind of port (HTTP or TCP), split by action."""

    deny: tuple[_CompiledPolicy, ...]
    allow: tuple[_CompiledPolicy, ...]
    audit: tuple[_CompiledPolicy, ...]


@dataclass(frozen=True, slots=True)
class CompiledPolicies:
    policies: tuple[AuthorizationPolicy, ...]
    default_deny: bool
    http: PolicySet
    tcp: PolicySet

    def for_request(self, req: AuthzRequest) -> PolicySet:
        return self.tcp if req.is_tcp else self.http


# --- compiling ------------------------------------------------------------------------------


def _always(_: AuthzRequest) -> bool:
    return True


def _all_of(preds: Sequence[ReqPred]) -> ReqPred:
    if not preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) and b(r)
    ps = tuple(preds)

    def all_of(r: AuthzRequest) -> bool:
        for p in ps:  # noqa: SIM110 - a loop beats all(<genexpr>) on the hot path
            if not p(r):
                return False
        return True

    return all_of


def _any_of(preds: Sequence[ReqPred]) -> ReqPred:
    if len(preds) == 1:
        return preds[0]
    ps = tuple(preds)

    def any_of(r: AuthzRequest) -> bool:
        for p in ps:  # noqa: SIM110 - a loop beats any(<genexpr>) on the hot path
            if p(r):
                return True
        return False

    return any_of


def _values_pred(get: Callable[[AuthzRequest], str | None], match: StrPred) -> ReqPred:
    """One of the patterns matches; an absent value never does."""

    def pred(r: AuthzRequest) -> bool:
        v = get(r)
        return v is not None and match(v)

    return pred


def _not_values_pred(get: Callable[[AuthzRequest], str | None], match: StrPred) -> ReqPred:
    """None of the patterns matches; an absent value satisfies it (Envoy: NOT of a miss)."""

    def pred(r: AuthzRequest) -> bool:
        v = get(r)
        return v is None or not match(v)

    return pred


def _ip_pred(get: Callable[[AuthzRequest], str | None], match: IpPred, negate: bool) -> ReqPred:
    if negate:
        return lambda r: not match(get(r))
    return lambda r: match(get(r))


def _cidrs(values: Sequence[str], path: str) -> IpPred:
    return ip_matcher([parse_cidr(v, f"{path}[{i}]") for i, v in enumerate(values)])


def _ports(values: Sequence[str], path: str) -> frozenset[int]:
    out: set[int] = set()
    for i, v in enumerate(values):
        if not v.isdigit() or not 1 <= int(v) <= 65535:
            raise SnapshotError(f"{path}[{i}]", f"{v!r} is not a port (1-65535)")
        out.add(int(v))
    return frozenset(out)


def _host_matcher(patterns: Sequence[str]) -> StrPred:
    """Case-insensitive Istio string match on the whole Host header, port included, exactly as
    Istio does (istio/istio#44080): `cart` does not match `cart:8080`; write `cart:*` too."""
    m = istio_string_matcher(patterns, lower=True)
    return lambda host: m(host.lower())


_get_principal: Callable[[AuthzRequest], str | None] = attrgetter("principal")


_get_namespace: Callable[[AuthzRequest], str | None] = attrgetter("namespace")


_get_source_ip: Callable[[AuthzRequest], str | None] = attrgetter("source_ip")


def _get_remote_ip(r: AuthzRequest) -> str | None:
    return r.remote_ip if r.remote_ip is not None else r.source_ip


_get_destination_ip: Callable[[AuthzRequest], str | None] = attrgetter("destination_ip")


_get_host: Callable[[AuthzRequest], str | None] = attrgetter("host")


_get_method: Callable[[AuthzRequest], str | None] = attrgetter("method")


_get_path: Callable[[AuthzRequest], str | None] = attrgetter("path")


_get_sni: Callable[[AuthzRequest], str | None] = attrgetter("sni")


def _compile_source(src: Source, path: str) -> ReqPred:
    preds: list[ReqPred] = []
    strs: tuple[tuple[str, Callable[[AuthzRequest], str | None]], ...] = (
        ("principals", _get_principal),
        ("namespaces", _get_namespace),
    )
    for name, get in strs:
        values: tuple[str, ...] = getattr(src, name)
        not_values: tuple[str, ...] = getattr(src, "not_" + name)
        if values:
            preds.append(_values_pred(get, istio_string_matcher(values)))
        if not_values:
            preds.append(_not_values_pred(get, istio_string_matcher(not_values)))
    ips: tuple[tuple[str, str, Callable[[AuthzRequest], str | None]], ...] = (
        ("ip_blocks", "IpBlocks", _get_source_ip),
        ("remote_ip_blocks", "RemoteIpBlocks", _get_remote_ip),
    )
    for name, camel, get in ips:
        values = getattr(src, name)
        not_values = getattr(src, "not_" + name)
        json_name = camel[0].lower() + camel[1:]
        if values:
            preds.append(_ip_pred(get, _cidrs(values, f"{path}.{json_name}"), negate=False))
        if not_values:
            preds.append(_ip_pred(get, _cidrs(not_values, f"{path}.not{camel}"), negate=True))
    return _all_of(preds)


def _compile_operation(op: Operation, path: str, tcp: bool) -> ReqPred:
    preds: list[ReqPred] = []
    if op.ports:
        ports = _ports(op.ports, f"{path}.ports")
        preds.append(lambda r: r.destination_port in ports)
    if op.not_ports:
        not_ports = _ports(op.not_ports, f"{path}.notPorts")
        preds.append(lambda r: r.destination_port not in not_ports)
    if not tcp:  # on TCP the HTTP-only fields were dropped (ALLOW) or are ignored (DENY/AUDIT)
        if op.hosts:
            preds.append(_values_pred(_get_host, _host_matcher(op.hosts)))
        if op.not_hosts:
            preds.append(_not_values_pred(_get_host, _host_matcher(op.not_hosts)))
        for name, get in (("methods", _get_method), ("paths", _get_path)):
            values: tuple[str, ...] = getattr(op, name)
            not_values: tuple[str, ...] = getattr(op, "not_" + name)
            if values:
                preds.append(_values_pred(get, istio_string_matcher(values)))
            if not_values:
                preds.append(_not_values_pred(get, istio_string_matcher(not_values)))
    return _all_of(preds)


def _header_getter(name: str) -> Callable[[AuthzRequest], str | None]:
    return lambda r: r.headers.get(name)


_STRING_KEYS: dict[str, Callable[[AuthzRequest], str | None]] = {
    "source.principal": _get_principal,
    "source.namespace": _get_namespace,
    "connection.sni": _get_sni,
}
_IP_KEYS: dict[str, Callable[[AuthzRequest], str | None]] = {
    "source.ip": _get_source_ip,
    "remote.ip": _get_remote_ip,
    "destination.ip": _get_destination_ip,
}


def _compile_condition(cond: Condition, path: str) -> ReqPred:
    key = cond.key
    preds: list[ReqPred] = []
    if key in _IP_KEYS:
        get = _IP_KEYS[key]
        if cond.values:
            preds.append(_ip_pred(get, _cidrs(cond.values, f"{path}.values"), negate=False))
        if cond.not_values:
            preds.append(_ip_pred(get, _cidrs(cond.not_values, f"{path}.notValues"), negate=True))
        return _all_of(preds)
    if key == "destination.port":
        if cond.values:
            ports = _ports(cond.values, f"{path}.values")
            preds.append(lambda r: r.destination_port in ports)
        if cond.not_values:
            not_ports = _ports(cond.not_values, f"{path}.notValues")
            preds.append(lambda r: r.destination_port not in not_ports)
        return _all_of(preds)
    if key in _STRING_KEYS:
        get = _STRING_KEYS[key]
    elif key.startswith("request.headers[") and key.endswith("]"):
        get = _header_getter(key[len("request.headers[") : -1].lower())
    else:
        raise SnapshotError(f"{path}.key", f"unsupported condition key {key!r}")
    if cond.values:
        preds.append(_values_pred(get, istio_string_matcher(cond.values)))
    if cond.not_values:
        preds.append(_not_values_pred(get, istio_string_matcher(cond.not_values)))
    return _all_of(preds)


def _is_http_condition(cond: Condition) -> bool:
    return cond.key.startswith("request.")


def rule_uses_http_fields(rule: Rule) -> bool:
    return any(getattr(op, f) for op in rule.operations for f in HTTP_ONLY_OPERATION_FIELDS) or any(
        _is_http_condition(c) for c in rule.when
    )


def _compile_rule(rule: Rule, path: str, tcp: bool) -> ReqPred:
    preds: list[ReqPred] = []
    if rule.sources:
        preds.append(
            _any_of(
                [_compile_source(s, f"{path}.from[{i}].source") for i, s in enumerate(rule.sources)]
            )
        )
    if rule.operations:
        ops = [
            _compile_operation(o, f"{path}.to[{i}].operation", tcp)
            for i, o in enumerate(rule.operations)
        ]
        # An ignored (all-HTTP) operation matches everything; one such makes `to` match everything.
        preds.append(_always if _always in ops else _any_of(ops))
    for i, cond in enumerate(rule.when):
        if tcp and _is_http_condition(cond):
            continue  # ignored on TCP (only reached for DENY/AUDIT; ALLOW rules were dropped)
        preds.append(_compile_condition(cond, f"{path}.when[{i}]"))
    return _all_of(preds)


def _compile_policy(policy: AuthorizationPolicy, path: str, tcp: bool) -> _CompiledPolicy:
    rules: list[tuple[int, ReqPred]] = []
    for i, rule in enumerate(policy.rules):
        if tcp and policy.action == "ALLOW" and rule_uses_http_fields(rule):
            continue  # Istio: an ALLOW rule with HTTP-only fields is dropped on TCP (allows less)
        rules.append((i, _compile_rule(rule, f"{path}.rules[{i}]", tcp)))
    return _make_policy(policy.name, policy.action, rules)


def _policy_set(
    policies: Sequence[AuthorizationPolicy], default_deny: bool, path: str, tcp: bool
) -> PolicySet:
    by_action: dict[Action, list[_CompiledPolicy]] = {"ALLOW": [], "DENY": [], "AUDIT": []}
    seen: set[str] = set()
    for i, p in enumerate(policies):
        if p.name in seen:  # decisions name the policy: the name must say which one
            raise SnapshotError(f"{path}[{i}].name", f"duplicate policy name {p.name!r}")
        seen.add(p.name)
        by_action[p.action].append(_compile_policy(p, f"{path}[{i}]", tcp))
    if default_deny:
        by_action["ALLOW"].append(_make_policy(DEFAULT_DENY_POLICY, "ALLOW", ()))
    return PolicySet(
        deny=tuple(by_action["DENY"]),
        allow=tuple(by_action["ALLOW"]),
        audit=tuple(by_action["AUDIT"]),
    )


def compile_policies(
    policies: Sequence[AuthorizationPolicy],
    default_deny: bool = False,
    path: str = "inbound.policies",
) -> CompiledPolicies:
    """Compile the policies of one workload. Raises SnapshotError (bad CIDR, port, key)."""
    policies = tuple(policies)
    return CompiledPolicies(
        policies=policies,
        default_deny=default_deny,
        http=_policy_set(policies, default_deny, path, tcp=False),
        tcp=_policy_set(policies, default_deny, path, tcp=True),
    )


@lru_cache(maxsize=4096)
def compile_policies_cached(
    policies: tuple[AuthorizationPolicy, ...], default_deny: bool = False
) -> CompiledPolicies:
    """compile_policies memoized on the (hashable) policies: for callers that meet the same
    policy set again and again, like the plan computing an access matrix over many workloads."""
    return compile_policies(policies, default_deny)


# --- evaluating -----------------------------------------------------------------------------


def evaluate(compiled: CompiledPolicies, req: AuthzRequest) -> AuthzDecision:
    """Istio order: a matching DENY denies; no ALLOW policy allows; a matching ALLOW allows;
    otherwise deny. AUDIT policies are only reported."""
    ps = compiled.tcp if req.is_tcp else compiled.http
    if ps.audit:
        hits = []
        for p in ps.audit:
            i = p.first_match(req)
            if i is not None:
                hits.append(RuleRef(p.name, i))
        if hits:
            return _decide(ps, req)._replace(audit=tuple(hits))
    return _decide(ps, req)


def _decide(ps: PolicySet, req: AuthzRequest) -> AuthzDecision:
    # Decisions are built at compile time: the hot path returns a prepared tuple.
    for p in ps.deny:
        for _, pred, decision in p.rules:
            if pred(req):
                return decision
    if not ps.allow:
        return _NO_ALLOW_POLICY
    for p in ps.allow:
        for _, pred, decision in p.rules:
            if pred(req):
                return decision
    return _NO_ALLOW_MATCH


def is_allowed(compiled: CompiledPolicies, req: AuthzRequest) -> bool:
    """`evaluate(...).allowed` without building a decision or checking AUDIT: the hot path."""
    ps = compiled.tcp if req.is_tcp else compiled.http
    for p in ps.deny:
        for _, pred, _d in p.rules:
            if pred(req):
                return False
    if not ps.allow:
        return True
    for p in ps.allow:
        for _, pred, _d in p.rules:
            if pred(req):
                return True
    return False


__all__ = [
    "DEFAULT_DENY_POLICY",
    "AuthzDecision",
    "AuthzRequest",
    "CompiledPolicies",
    "PolicySet",
    "RuleRef",
    "compile_policies",
    "compile_policies_cached",
    "evaluate",
    "is_allowed",
    "namespace_of",
    "rule_uses_http_fields",
]
