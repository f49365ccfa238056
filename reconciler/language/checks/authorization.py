"""AuthorizationPolicy checks.

- MCD113 unknown service in `selector.services`.
- MCD114 a namespace with no services: named in `namespaces`/`notNamespaces`, in an exact
  principal (`<td>/ns/<ns>/sa/<sa>`), in a `source.namespace` condition, or the policy's own
  namespace when it has no selector (it then selects nothing).
- MCD115 principal or namespace matching on a target whose effective inbound mTLS (the Mesh's
  mode, overridden by its TrafficPolicy, the weakest of its subsets) is not STRICT: plaintext
  callers carry no identity, so such rules never match them.
- MCD116 / MCD125 a DENY / ALLOW rule using HTTP-only fields (hosts, methods, paths and their
  not- forms, `request.headers[...]` conditions) that applies to a tcp port of a target: Istio
  ignores those fields in a DENY (the deny widens to the whole port) and drops such an ALLOW
  rule (it allows less). A rule whose `ports` only name http ports is not reported.
- MCD117 an ALLOW policy with no rules (info: it denies everything to what it selects).
- MCD118 a service nothing may call under default-deny. Reported only when the Mesh says
  `authorization: {default: deny}` and no ALLOW policy with at least one rule selects the
  service (by name, namespace-wide, or mesh-wide from the rootNamespace). An entry point that
  "nobody calls" inside the mesh (a frontend behind the ingress) still needs an ALLOW policy
  under default-deny, so it is reported too: give it one (e.g. a rule with only `to`).
- MCD126 an unsupported `when` key; MCD127 an invalid IP or CIDR in ipBlocks or an IP condition.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import partial

from reconciler.language.checks.context import STRICT, CheckContext, names
from reconciler.language.model import AuthorizationPolicy, AuthorizationRule, RuleOperation, Service

_HEADER_KEY = re.compile(r"^request\.headers\[[^\[\]]+\]$")
SUPPORTED_KEYS = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
_IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})
_IDENTITY_KEYS = frozenset({"source.principal", "source.namespace"})
_HTTP_FIELDS = (
    ("hosts", "hosts"),
    ("not_hosts", "notHosts"),
    ("methods", "methods"),
    ("not_methods", "notMethods"),
    ("paths", "paths"),
    ("not_paths", "notPaths"),
)
_SOURCE_IDENTITY_FIELDS = (
    ("principals", "principals"),
    ("not_principals", "notPrincipals"),
    ("namespaces", "namespaces"),
    ("not_namespaces", "notNamespaces"),
)
_PRINCIPAL = re.compile(r"^(?:spiffe://)?[^/*]+/ns/(?P<ns>[^/*]+)/sa/[^/]+$")


def key_supported(key: str) -> bool:
    return key in SUPPORTED_KEYS or bool(_HEADER_KEY.match(key))


def istio_match(pattern: str, value: str) -> bool:
    """Istio string matching: exact, prefix `abc*`, suffix `*abc`, presence `*`."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def valid_ip_or_cidr(text: str) -> bool:
    try:
        if "/" in text:
            ipaddress.ip_network(text, strict=False)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class _Indexes:
    """Per-run lookups that would otherwise be rebuilt for every policy."""

    def __init__(self, ctx: CheckContext) -> None:
        self.namespaces = ctx.model.namespaces
        self.tcp_ports: dict[tuple[str, str], frozenset[int]] = {}
        self.tcp_all: list[Service] = []
        self.tcp_by_ns: dict[str, list[Service]] = {}
        self.weak_all: list[Service] = []
        self.weak_by_ns: dict[str, list[Service]] = {}
        for key, svc in ctx.model.services_by_key.items():
            tcp = frozenset(p.number for p in svc.ports if p.protocol == "tcp")
            self.tcp_ports[key] = tcp
            if tcp:
                self.tcp_all.append(svc)
                self.tcp_by_ns.setdefault(svc.namespace, []).append(svc)
            if ctx.effective_mtls(key) != STRICT:
                self.weak_all.append(svc)
                self.weak_by_ns.setdefault(svc.namespace, []).append(svc)
        self.tcp_keys = {(s.namespace, s.name) for s in self.tcp_all}
        self.weak_keys = {(s.namespace, s.name) for s in self.weak_all}
        self._ns_patterns: dict[str, bool] = {}
        self._principal_ns: dict[str, str | None] = {}
        self._keys: dict[str, bool] = {}

    def key_supported(self, key: str) -> bool:
        hit = self._keys.get(key)
        if hit is None:
            hit = self._keys[key] = key_supported(key)
        return hit

    def principal_namespace(self, principal: str) -> str | None:
        """The namespace an exact principal names (None for patterns and other shapes)."""
        if principal in self._principal_ns:
            return self._principal_ns[principal]
        m = _PRINCIPAL.match(principal)
        ns = m.group("ns") if m else None
        self._principal_ns[principal] = ns
        return ns

    def namespace_known(self, pattern: str) -> bool:
        hit = self._ns_patterns.get(pattern)
        if hit is None:
            if "*" in pattern:
                hit = any(istio_match(pattern, ns) for ns in self.namespaces)
            else:
                hit = pattern in self.namespaces
            self._ns_patterns[pattern] = hit
        return hit


def _targets(
    ctx: CheckContext,
    pol: AuthorizationPolicy,
    selected: list[Service],
    everything: list[Service],
    by_ns: dict[str, list[Service]],
    keys: set[tuple[str, str]],
) -> list[Service]:
    """Among `everything` (whose keys are `keys`), the services `pol` applies to."""
    if pol.selector is not None and pol.selector.services:
        return [s for s in selected if (s.namespace, s.name) in keys]
    if pol.namespace == ctx.root_namespace:
        return everything
    return by_ns.get(pol.namespace, [])


def _tcp_affected(
    idx: _Indexes, targets: Sequence[Service], op: RuleOperation | None
) -> list[str]:
    """Targets with a tcp port that `op` (None: the whole rule, any port) applies to."""
    out = []
    for svc in targets:
        tcp = idx.tcp_ports.get((svc.namespace, svc.name), frozenset())
        if op is not None and op.ports:
            tcp = tcp & {int(p) for p in op.ports if p.isdigit()}
        if op is not None and op.not_ports:
            tcp = tcp - {int(p) for p in op.not_ports if p.isdigit()}
        if tcp:
            out.append(f"{svc.name}.{svc.namespace} port {min(tcp)}")
            if len(out) > 3:
                break
    return out


def _check_namespaces(
    ctx: CheckContext, idx: _Indexes, pol: AuthorizationPolicy, i: int, rule: AuthorizationRule
) -> None:
    """MCD114 for one rule: namespaces, principals' namespaces, source.namespace values."""
    for j, f in enumerate(rule.from_):
        src = f.source
        if src.namespaces or src.not_namespaces:
            for yaml_name, values in (("namespaces", src.namespaces), ("notNamespaces", src.not_namespaces)):
                for k, ns in enumerate(values):
                    if not idx.namespace_known(ns):
                        ctx.add(
                            "MCD114",
                            f"namespace {ns!r} has no services",
                            ctx.at(pol, "rules", i, "from", j, "source", yaml_name, k),
                        )
        if src.principals or src.not_principals:
            for yaml_name, values in (("principals", src.principals), ("notPrincipals", src.not_principals)):
                for k, pr in enumerate(values):
                    ns_ = idx.principal_namespace(pr)
                    if ns_ is not None and not idx.namespace_known(ns_):
                        ctx.add(
                            "MCD114",
                            f"principal {pr!r} names namespace {ns_!r}, which has no services",
                            ctx.at(pol, "rules", i, "from", j, "source", yaml_name, k),
                        )
    for w, cond in enumerate(rule.when):
        if cond.key == "source.namespace":
            for yaml_name, values in (("values", cond.values), ("notValues", cond.not_values)):
                for k, v in enumerate(values):
                    if not idx.namespace_known(v):
                        ctx.add(
                            "MCD114",
                            f"namespace {v!r} has no services",
                            ctx.at(pol, "rules", i, "when", w, yaml_name, k),
                        )


def _identity_field(rule: AuthorizationRule, i: int) -> tuple[str | int, ...] | None:
    """The path of the first field of `rule` that matches on caller identity, if any."""
    for j, f in enumerate(rule.from_):
        for attr, yaml_name in _SOURCE_IDENTITY_FIELDS:
            if getattr(f.source, attr):
                return ("rules", i, "from", j, "source", yaml_name)
    for w, cond in enumerate(rule.when):
        if cond.key in _IDENTITY_KEYS:
            return ("rules", i, "when", w, "key")
    return None


def _check_mtls(
    ctx: CheckContext, pol: AuthorizationPolicy, i: int, rule: AuthorizationRule, weak_targets: list[Service]
) -> None:
    """MCD115 for one rule whose policy applies to services without STRICT mTLS."""
    field = _identity_field(rule, i)
    if field is None:
        return
    # Only a few targets are named, so a mesh-wide policy costs O(1) here, not O(services).
    shown = weak_targets[:3]
    modes = sorted({ctx.effective_mtls((s.namespace, s.name)) for s in shown})
    more = len(weak_targets) - len(shown)
    ctx.add(
        "MCD115",
        f"matches on caller identity, but mTLS is {'/'.join(modes)} (not STRICT) for "
        f"{', '.join(f'{s.name}.{s.namespace}' for s in shown)}"
        + (f" and {more} more" if more > 0 else "")
        + ": plaintext callers have no identity and never match",
        ctx.at(pol, *field),
    )


def _check_tcp(
    ctx: CheckContext,
    idx: _Indexes,
    pol: AuthorizationPolicy,
    i: int,
    rule: AuthorizationRule,
    tcp_targets: list[Service],
) -> None:
    """MCD116 / MCD125 for one ALLOW or DENY rule of a policy that applies to tcp ports."""
    code = "MCD116" if pol.action == "DENY" else "MCD125"
    effect = (
        "Istio ignores them there, so this deny widens to the whole port"
        if pol.action == "DENY"
        else "Istio drops this rule there, so it allows nothing on that port"
    )
    for k, t in enumerate(rule.to):
        op = t.operation
        if not op.uses_http_fields:
            continue
        affected = _tcp_affected(idx, tcp_targets, op)
        if affected:
            yaml_name = next(y for a, y in _HTTP_FIELDS if getattr(op, a))
            ctx.add(
                code,
                f"{pol.action} rule uses HTTP-only field {yaml_name!r} on a tcp port "
                f"({names(affected)}): {effect}",
                ctx.at(pol, "rules", i, "to", k, "operation", yaml_name),
            )
    header_key = next(
        (w for w, c in enumerate(rule.when) if c.key.startswith("request.headers[")), None
    )
    if header_key is not None:
        ops: list[RuleOperation | None] = [t.operation for t in rule.to] or [None]
        affected = []
        for op_ in ops:
            affected = _tcp_affected(idx, tcp_targets, op_)
            if affected:
                break
        if affected:
            ctx.add(
                code,
                f"{pol.action} rule uses an HTTP-only condition (request.headers) on a tcp "
                f"port ({names(affected)}): {effect}",
                ctx.at(pol, "rules", i, "when", header_key, "key"),
            )


def _check_policy_namespaces(ctx: CheckContext, idx: _Indexes, pol: AuthorizationPolicy) -> None:
    for i, rule in enumerate(pol.rules):
        _check_namespaces(ctx, idx, pol, i, rule)


def _check_local(ctx: CheckContext, idx: _Indexes, pol: AuthorizationPolicy) -> None:
    """The checks of one policy that look at nothing else: MCD117, MCD126, MCD127."""
    if pol.action == "ALLOW" and not pol.rules:
        ctx.add(
            "MCD117",
            "ALLOW policy with no rules allows nothing: every request to what it selects"
            " is denied (unless another ALLOW matches)",
            ctx.at(pol, "rules"),
        )
    for i, rule in enumerate(pol.rules):
        for j, f in enumerate(rule.from_):
            src = f.source
            if not (src.ip_blocks or src.not_ip_blocks):
                continue
            for yaml_name, values in (("ipBlocks", src.ip_blocks), ("notIpBlocks", src.not_ip_blocks)):
                for k, block in enumerate(values):
                    if not valid_ip_or_cidr(block):
                        ctx.add(
                            "MCD127",
                            f"{block!r} is not an IP address or CIDR block",
                            ctx.at(pol, "rules", i, "from", j, "source", yaml_name, k),
                        )
        for w, cond in enumerate(rule.when):
            wpath = ("rules", i, "when", w)
            if not idx.key_supported(cond.key):
                ctx.add(
                    "MCD126",
                    f"unsupported condition key {cond.key!r} (supported: request.headers[<name>], "
                    + ", ".join(sorted(SUPPORTED_KEYS))
                    + ")",
                    ctx.at(pol, *wpath, "key"),
                )
            elif cond.key in _IP_KEYS:
                for yaml_name, values in (("values", cond.values), ("notValues", cond.not_values)):
                    for k, v in enumerate(values):
                        if not valid_ip_or_cidr(v):
                            ctx.add(
                                "MCD127",
                                f"{cond.key} value {v!r} is not an IP address or CIDR block",
                                ctx.at(pol, *wpath, yaml_name, k),
                            )


def check(ctx: CheckContext) -> None:
    idx = _Indexes(ctx)
    allowed_all = False
    allowed_ns: set[str] = set()
    allowed: set[tuple[str, str]] = set()

    for pol in ctx.model.authorization_policies:
        selected: list[Service] = []
        if pol.selector is not None and pol.selector.services:
            for k, ref in enumerate(pol.selector.services):
                svc = ctx.service(ref)
                if svc is None:
                    ctx.add(
                        "MCD113",
                        f"selector names unknown service {ref}",
                        ctx.at(pol, "selector", "services", k),
                    )
                else:
                    selected.append(svc)
        elif pol.namespace != ctx.root_namespace and pol.namespace not in idx.namespaces:
            ctx.add(
                "MCD114",
                f"policy without selector in namespace {pol.namespace!r}, which has no services: "
                "it applies to nothing",
                pol.loc(("metadata", "namespace")),
            )

        ctx.local(pol, partial(_check_local, ctx, idx, pol))
        if pol.action == "ALLOW" and pol.rules:
            if pol.selector is not None and pol.selector.services:
                allowed.update((s.namespace, s.name) for s in selected)
            elif pol.namespace == ctx.root_namespace:
                allowed_all = True
            else:
                allowed_ns.add(pol.namespace)

        if not pol.rules:
            continue
        # The targets that matter for MCD115/116/125: only those with weak mTLS or tcp ports.
        weak = (
            _targets(ctx, pol, selected, idx.weak_all, idx.weak_by_ns, idx.weak_keys)
            if idx.weak_all
            else []
        )
        tcp = (
            _targets(ctx, pol, selected, idx.tcp_all, idx.tcp_by_ns, idx.tcp_keys)
            if idx.tcp_all
            else []
        )
        # MCD114 depends on the policy and the set of namespaces only.
        ctx.local(pol, partial(_check_policy_namespaces, ctx, idx, pol), "ns", idx.namespaces)
        if weak:
            for i, rule in enumerate(pol.rules):
                _check_mtls(ctx, pol, i, rule, weak)
        if tcp and pol.action in ("ALLOW", "DENY"):
            for i, rule in enumerate(pol.rules):
                _check_tcp(ctx, idx, pol, i, rule, tcp)

    if ctx.default_deny and not allowed_all:
        for key, svc in ctx.model.services_by_key.items():
            if key not in allowed and svc.namespace not in allowed_ns:
                ctx.add(
                    "MCD118",
                    f"nothing may call {svc.name}.{svc.namespace}: the Mesh is default-deny and no "
                    "ALLOW policy with rules selects it",
                    svc.loc(("metadata", "name")),
                )
