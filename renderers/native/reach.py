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
from reconciler.language import model as sm

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


class Reach:
    """Policy-derived reachability for a model: for every destination, the services that could
    be allowed to call it (None: everyone), and inverted, what each service may call.

    `updated` carries it over to the next model, recomputing only the destinations whose
    policies or mTLS mode a change touches, and says which callers' answers moved."""

    def __init__(self, model: sm.ConfigModel,
                 previous: Reach | None = None, dirty: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.model = model
        mesh = model.mesh
        td = mesh.trust_domain if mesh else "cluster.local"
        self.services = sorted(model.services_by_key.values(), key=lambda s: s.ref.key)
        self.everyone = tuple(
            Caller(s.ref.key, f"{td}/ns/{s.namespace}/sa/{s.service_account}") for s in self.services
        )
        by_principal: dict[str, list[Caller]] = {}
        for c in self.everyone:
            by_principal.setdefault(c.principal, []).append(c)
        self.by_principal = {k: tuple(v) for k, v in by_principal.items()}
        self.callers: dict[tuple[str, str], frozenset[tuple[str, str]] | None] = {}
        for dest in self.services:
            k = dest.ref.key
            if previous is not None and k not in dirty and k in previous.callers:
                self.callers[k] = previous.callers[k]
            else:
                self.callers[k] = callers(model, dest, self.everyone, self.by_principal)
        self._may_call: dict[tuple[str, str], list[sm.ServiceRef]] | None = None
        self._open: list[sm.ServiceRef] = []

    def callees_of(self, key: tuple[str, str]) -> tuple[sm.ServiceRef, ...]:
        """What the service `key` may call, sorted."""
        if self._may_call is None:
            may: dict[tuple[str, str], list[sm.ServiceRef]] = {}
            for dest in self.services:
                allowed = self.callers[dest.ref.key]
                if allowed is None:
                    self._open.append(dest.ref)
                else:
                    for src in allowed:
                        may.setdefault(src, []).append(dest.ref)
            self._may_call = may
        return tuple(sorted({*self._may_call.get(key, ()), *self._open}))

    def updated(
        self, model: sm.ConfigModel, changed: frozenset[Token]
    ) -> tuple[Reach, frozenset[tuple[str, str]] | None]:
        """This reachability for `model`, and the callers whose answers changed (None: all).
        Valid only when neither the Mesh nor any service identity changed."""
        dirty = frozenset(
            s.ref.key for s in model.services_by_key.values()
            if ("authz-svc", *s.ref.key) in changed or ("authz-ns", s.namespace) in changed
            or ("authz-mesh",) in changed or ("tp", *s.ref.key) in changed
        )
        new = Reach(model, self, dirty)
        affected: set[tuple[str, str]] = set()
        for k in dirty:
            old, now = self.callers.get(k), new.callers.get(k)
            if old == now:
                continue
            if old is None or now is None:
                return new, None
            affected |= old ^ now
        return new, frozenset(affected)


def callees(
    model: sm.ConfigModel, svc: sm.Service, reach: Reach | None,
) -> tuple[tuple[sm.ServiceRef, ...], frozenset[Token]]:
    """The services `svc` may call, and what that answer depends on. `reach` is needed (only)
    for a service without an egress list."""
    if svc.egress is not None:
        refs = sorted({r for r in svc.egress if model.service(r) is not None})
        deps = {("mesh",), ("svc", *svc.ref.key)} | {("svc", *r.key) for r in svc.egress}
        return tuple(refs), frozenset(deps)
    assert reach is not None
    return reach.callees_of(svc.ref.key), frozenset(
        {("mesh",), ("identities",), ("reach-all",), ("svc", *svc.ref.key), ("reach", *svc.ref.key)}
    )


def reachable(model: sm.ConfigModel) -> dict[tuple[str, str], tuple[sm.ServiceRef, ...]]:
    """For every service without an `egress` list, the services it may call (sorted)."""
    reach = Reach(model)
    return {
        s.ref.key: reach.callees_of(s.ref.key)
        for s in reach.services if s.egress is None
    }


__all__ = ["Reach", "callees", "callers", "reachable"]
