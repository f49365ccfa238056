"""Which services a service may call: the outbound half of a proxy's config is only for these.

A Service's `egress` list, when set, is the answer (the services in it that exist). Without
one, the answer is every service whose authorization policies could allow a request from this
service's identity: under no ALLOW policy (and no default-deny) that is everyone; otherwise an
ALLOW rule must be able to match the caller's identity. Only the identity parts of a rule are
evaluated (principals, namespaces and `source.principal`/`source.namespace` conditions, with
the proxy's own evaluator); operations, headers and IPs are assumed to match, so the set errs
on the side of too many routes, never too few. DENY policies are ignored for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy_runtime.config import AuthzRequest, compile_policies, is_allowed
from proxy_runtime.config import model as pc
from reconciler.spec import model as sm

from .policies import default_deny, proxy_policies, service_mtls

Token = tuple[str, ...]
_IDENTITY_KEYS = ("source.principal", "source.namespace")


def _identity_only(rule: pc.Rule) -> pc.Rule | None:
    """The rule cut down to what depends on the caller's identity (None: nothing left that
    could fail, i.e. the rule may match anyone)."""
    sources = tuple(
        pc.Source(principals=s.principals, not_principals=s.not_principals,
                  namespaces=s.namespaces, not_namespaces=s.not_namespaces)
        for s in rule.sources
    )
    if any(s == pc.Source() for s in sources):
        sources = ()  # one unconstrained source: `from` matches everyone
    when = tuple(c for c in rule.when if c.key in _IDENTITY_KEYS)
    if not sources and not when:
        return None
    return pc.Rule(sources=sources, when=when)


def _exact_principals(rule: pc.Rule) -> frozenset[str] | None:
    """When the rule can only match listed exact principals, those; else None (scan)."""
    if rule.when or not rule.sources:
        return None
    out: set[str] = set()
    for s in rule.sources:
        if not s.principals or any("*" in p for p in s.principals):
            return None
        out.update(s.principals)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Caller:
    key: tuple[str, str]
    principal: str


def callers(
    model: sm.ConfigModel, dest: sm.Service, everyone: tuple[Caller, ...],
    by_principal: Mapping[str, tuple[Caller, ...]],
) -> frozenset[tuple[str, str]] | None:
    """Keys of the services that could be allowed to call `dest`; None means everyone."""
    allows = [p for p in proxy_policies(model, dest) if p.action == "ALLOW"]
    if not allows:
        return frozenset() if default_deny(model) else None
    plaintext = service_mtls(model, dest.ref.key) == "DISABLE"  # callers arrive without identity
    out: set[tuple[str, str]] = set()
    for pol in allows:
        for rule in pol.rules:
            cut = _identity_only(rule)
            if cut is None:
                return None
            compiled = compile_policies([pc.AuthorizationPolicy("reach", "ALLOW", (cut,))])
            if plaintext:
                if is_allowed(compiled, AuthzRequest()):
                    return None
                continue
            exact = _exact_principals(cut)
            pool = (
                [c for p in exact for c in by_principal.get(p, ())] if exact is not None else everyone
            )
            for c in pool:
                if c.key not in out and is_allowed(compiled, AuthzRequest(principal=c.principal)):
                    out.add(c.key)
    return frozenset(out)


def reachable(model: sm.ConfigModel) -> dict[tuple[str, str], tuple[sm.ServiceRef, ...]]:
    """For every service without an `egress` list, the services it may call (sorted)."""
    mesh = model.mesh
    services = sorted(model.services_by_key.values(), key=lambda s: s.ref.key)
    open_callers = [s for s in services if s.egress is None]
    if not open_callers:
        return {}
    td = mesh.trust_domain if mesh else "cluster.local"
    everyone = tuple(Caller(s.ref.key, f"{td}/ns/{s.namespace}/sa/{s.service_account}") for s in services)
    by_principal: dict[str, list[Caller]] = {}
    for c in everyone:
        by_principal.setdefault(c.principal, []).append(c)
    frozen = {k: tuple(v) for k, v in by_principal.items()}
    may_call: dict[tuple[str, str], list[sm.ServiceRef]] = {s.ref.key: [] for s in open_callers}
    for dest in services:
        allowed = callers(model, dest, everyone, frozen)
        for src in open_callers:
            if allowed is None or src.ref.key in allowed:
                may_call[src.ref.key].append(dest.ref)
    return {k: tuple(v) for k, v in may_call.items()}


def callees(
    model: sm.ConfigModel, svc: sm.Service,
    open_reach: Mapping[tuple[str, str], tuple[sm.ServiceRef, ...]],
) -> tuple[tuple[sm.ServiceRef, ...], frozenset[Token]]:
    """The services `svc` may call, and what that answer depends on."""
    if svc.egress is not None:
        refs = sorted({r for r in svc.egress if model.service(r) is not None})
        deps = {("mesh",), ("svc", *svc.ref.key)} | {("svc", *r.key) for r in svc.egress}
        return tuple(refs), frozenset(deps)
    return open_reach.get(svc.ref.key, ()), frozenset(
        {("mesh",), ("authz-any",), ("svc-any",), ("tp-any",)}
    )


__all__ = ["callees", "callers", "reachable"]
