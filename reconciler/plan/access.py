"""Access-matrix diff: who may call whom at one revision but not at the other.

For every (source identity -> destination service, port, method class, path class) the
authorization policies of the destination are evaluated at both revisions with the proxy's own
evaluator (proxy_runtime.config.evaluate), on the policies exactly as the renderer puts them in
the destination's snapshot. What flips is reported: denied->allowed (granted) and
allowed->denied (revoked).

Nothing is enumerated naively:
- a destination whose decision inputs (policies, default-deny, mTLS mode, ports, trust domain)
  are the same at both revisions cannot flip and is skipped;
- destinations with the same inputs at both revisions form one group, evaluated once;
- within a group, identities are split into classes by which principal/namespace patterns of
  the group's policies they match; every identity no pattern names falls in one class. One
  representative per class is evaluated;
- methods, paths and hosts are dimensions only when some policy of the group looks at them:
  the classes are the values and patterns named (paths also from the destinations' routes)
  plus "other"; otherwise a single "*".

Sources are every service identity of both revisions, "(any other identity)" (an mTLS peer no
service of the repo has) and "(plaintext)" when the destination's mTLS mode is not STRICT at
some revision. A destination in DISABLE mode sees every caller as plaintext. Requests carry no
headers and no source IP: a rule that needs a header value or an ipBlock does not match in the
matrix (a `notValues` / `notIpBlocks` rule does); destinations whose policies have such
conditions are listed in `conditional`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from proxy_runtime.config import (
    AuthzRequest,
    CompiledPolicies,
    SnapshotError,
    compile_policies,
    evaluate,
)
from proxy_runtime.config import model as pc
from proxy_runtime.config.authz import DEFAULT_DENY_POLICY
from proxy_runtime.config.matchers import istio_string_matcher
from reconciler.language import model as sm
from renderers.native import proxy_policies, service_mtls

PLAINTEXT = "(plaintext)"
OTHER = "(any other identity)"
_OTHER_NS = "(other)"
MAX_SOURCES_LISTED = 20


@dataclass(frozen=True, slots=True)
class Identity:
    label: str  # ns/<ns>/sa/<sa>, OTHER or PLAINTEXT
    namespace: str | None
    account: str | None
    services: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """Everything that decides access to one destination at one revision."""

    exists: bool
    trust_domain: str = ""
    ports: tuple[tuple[int, bool], ...] = ()  # (number, is_tcp)
    policies: tuple[pc.AuthorizationPolicy, ...] = ()
    default_deny: bool = False
    mtls: str = "STRICT"

    def port(self, number: int) -> bool | None:
        """is_tcp of a port, or None when the port does not exist."""
        for n, tcp in self.ports:
            if n == number:
                return tcp
        return None


ABSENT = Profile(exists=False)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    text: str


_NO_MATCH = Decision(False, "denied (no ALLOW policy matched)")
_DEFAULT_DENIED = Decision(False, f"denied {DEFAULT_DENY_POLICY}")  # no ALLOW but the implicit one


@dataclass(frozen=True, slots=True)
class AccessFlip:
    destination: str  # name.namespace
    port: int
    method: str  # a class: GET, other, *
    path: str  # a class: /charge*, /checkout, other, *
    host: str  # a class, * unless a policy matches on hosts
    sources: tuple[str, ...]  # identity labels (at most MAX_SOURCES_LISTED)
    source_count: int
    granted: bool  # denied -> allowed (else allowed -> denied)
    before: str
    after: str

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(frozen=True)
class AccessDiff:
    flips: tuple[AccessFlip, ...]
    destinations: int  # compared
    changed_destinations: int  # whose inputs differ between revisions
    groups: int
    evaluations: int
    conditional: tuple[str, ...] = ()
    identities: int = 0

    @property
    def granted(self) -> tuple[AccessFlip, ...]:
        return tuple(f for f in self.flips if f.granted)

    @property
    def revoked(self) -> tuple[AccessFlip, ...]:
        return tuple(f for f in self.flips if not f.granted)

    def to_json(self) -> dict[str, Any]:
        return {
            "destinations": self.destinations,
            "changed_destinations": self.changed_destinations,
            "groups": self.groups,
            "evaluations": self.evaluations,
            "identities": self.identities,
            "conditional": list(self.conditional),
            "granted": [f.to_json() for f in self.granted],
            "revoked": [f.to_json() for f in self.revoked],
        }


# --- profiles and identities ----------------------------------------------------------------


def profile(model: sm.ConfigModel | None, ref: sm.ServiceRef) -> Profile:
    svc = model.service(ref) if model is not None else None
    if model is None or svc is None:
        return ABSENT
    mesh = model.mesh
    return Profile(
        exists=True,
        trust_domain=mesh.trust_domain if mesh else "",
        ports=tuple(sorted((p.number, p.protocol == "tcp") for p in svc.ports)),
        policies=proxy_policies(model, svc),
        default_deny=bool(mesh and mesh.default_deny),
        mtls=service_mtls(model, ref.key),
    )


def identities(models: Iterable[sm.ConfigModel | None]) -> list[Identity]:
    """Every (namespace, service account) of the models' services, then OTHER."""
    found: dict[tuple[str, str], set[str]] = {}
    for m in models:
        if m is None:
            continue
        for svc in m.services_by_key.values():
            found.setdefault((svc.namespace, svc.service_account), set()).add(str(svc.ref))
    out = [
        Identity(f"ns/{ns}/sa/{sa}", ns, sa, tuple(sorted(svcs)))
        for (ns, sa), svcs in sorted(found.items())
    ]
    out.append(Identity(OTHER, _OTHER_NS, _OTHER_NS))
    return out


def _principal(ident: Identity, td: str) -> str | None:
    if ident.namespace is None:
        return None
    return f"{td}/ns/{ident.namespace}/sa/{ident.account}"


# --- classes of requests --------------------------------------------------------------------


def _pattern_classes(patterns: Iterable[str], other: tuple[str, str], *, sep: str = "/") -> list[tuple[str, str]]:
    """(label, representative) per Istio pattern: exact -> itself, `p*` -> p + '…',
    `*s` -> sep + '…' + s; plus `other`."""
    out: dict[str, str] = {}
    for p in sorted(set(patterns)):
        if p == "*":
            continue
        if p.endswith("*") and len(p) > 1:
            out[p] = p[:-1] + "\u2026"
        elif p.startswith("*"):
            out[p] = sep + "\u2026" + p[1:]
        else:
            out[p] = p
    return [*out.items(), other]


def _by_signature(classes: list[tuple[str, str]], patterns: list[str]) -> list[tuple[str, list[str]]]:
    """Classes whose representatives match the same patterns decide the same way: evaluate one
    representative per signature, report every label. (representative, labels) pairs."""
    matchers = [istio_string_matcher([p]) for p in sorted(set(patterns))]
    groups: dict[tuple[bool, ...], tuple[str, list[str]]] = {}
    for label, rep in classes:
        groups.setdefault(tuple(m(rep) for m in matchers), (rep, []))[1].append(label)
    return list(groups.values())


def _uses(policies: Sequence[pc.AuthorizationPolicy], *names: str) -> list[str]:
    vals: list[str] = []
    for p in policies:
        for r in p.rules:
            for op in r.operations:
                for n in names:
                    vals.extend(getattr(op, n))
    return vals


def _route_paths(model: sm.ConfigModel | None, ref: sm.ServiceRef) -> list[str]:
    """Route paths as Istio patterns: exact as is, prefix as `prefix*` (regexes are skipped)."""
    route = model.route_for(ref) if model is not None else None
    out: list[str] = []
    if route is not None:
        for rule in route.rules:
            for m in rule.matches:
                if m.path is not None and m.path.exact is not None:
                    out.append(m.path.exact)
                elif m.path is not None and m.path.prefix:
                    out.append(m.path.prefix + "*")
    return out


def _conditional(policies: Sequence[pc.AuthorizationPolicy]) -> bool:
    for p in policies:
        for r in p.rules:
            if any(c.key not in ("source.principal", "source.namespace") for c in r.when):
                return True
            if any(s.ip_blocks or s.not_ip_blocks or s.remote_ip_blocks or s.not_remote_ip_blocks
                   for s in r.sources):
                return True
    return False


@dataclass
class _Evaluator:
    compiled: dict[tuple[tuple[pc.AuthorizationPolicy, ...], bool], CompiledPolicies | str] = field(
        default_factory=dict
    )
    count: int = 0

    def policies(self, prof: Profile) -> CompiledPolicies | str:
        """The compiled policies, or why the proxy would refuse them (an invalid revision)."""
        k = (prof.policies, prof.default_deny)  # hashing policies is deep: once per group
        c = self.compiled.get(k)
        if c is None:
            try:
                c = compile_policies(prof.policies, prof.default_deny)
            except SnapshotError as e:
                c = str(e)
            self.compiled[k] = c
        return c

    def decide(self, prof: Profile, compiled: CompiledPolicies | str, ident: Identity, port: int,
               method: str, path: str, host: str) -> Decision:
        if not prof.exists:
            return Decision(False, "absent (no such service)")
        if isinstance(compiled, str):
            return Decision(False, f"invalid (the proxy refuses the policies: {compiled})")
        tcp = prof.port(port)
        if tcp is None:
            return Decision(False, "absent (no such port)")
        plaintext = ident.namespace is None or prof.mtls == "DISABLE"
        if ident.namespace is None and prof.mtls == "STRICT":
            return Decision(False, "refused (mTLS STRICT)")
        self.count += 1
        req = AuthzRequest(
            principal=None if plaintext else _principal(ident, prof.trust_domain),
            destination_port=port, host=host, method=method, path=path, is_tcp=tcp,
        )
        d = evaluate(compiled, req)
        if d.reason == "allow":
            return Decision(True, f"allowed by {d.policy}")
        if d.reason == "no-allow-policy":
            return Decision(True, "allowed (no ALLOW policy)")
        if d.reason == "deny":
            return Decision(False, f"denied by {d.policy}")
        return _NO_MATCH if any(p.action == "ALLOW" for p in prof.policies) else _DEFAULT_DENIED


@dataclass
class _Universe:
    """The identities of a plan, indexed once: by namespace and by principal per trust domain."""

    idents: list[Identity]
    by_value: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    indexed_tds: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for i, ident in enumerate(self.idents):
            if ident.namespace is not None:
                self.by_value.setdefault(("n", ident.namespace), []).append(i)

    def lookup(self, kind: str, value: str, td: str) -> list[int]:
        if kind == "p" and td not in self.indexed_tds:
            self.indexed_tds.add(td)
            for i, ident in enumerate(self.idents):
                if ident.namespace is not None:
                    self.by_value.setdefault(("p", _principal(ident, td) or ""), []).append(i)
        return self.by_value.get((kind, value), [])


@dataclass(frozen=True, slots=True)
class _Class:
    rep: Identity
    labels: tuple[str, ...]  # the first MAX_SOURCES_LISTED, sorted
    count: int


def _source_classes(universe: _Universe, profs: Sequence[Profile], plaintext: bool) -> list[_Class]:
    """Identities split by which principal/namespace patterns of `profs` they match. Only the
    identities some pattern matches are looked at one by one; the rest are one class."""
    patterns: dict[tuple[str, tuple[str, ...]], int] = {}
    for prof in profs:
        for pol in prof.policies:
            for r in pol.rules:
                for s in r.sources:
                    for kind, vals in (("p", s.principals), ("p", s.not_principals),
                                       ("n", s.namespaces), ("n", s.not_namespaces)):
                        if vals:
                            patterns.setdefault((kind, vals), len(patterns))
                for c in r.when:
                    ckind = {"source.principal": "p", "source.namespace": "n"}.get(c.key)
                    for vals in (c.values, c.not_values):
                        if ckind and vals:
                            patterns.setdefault((ckind, vals), len(patterns))
    tds = sorted({p.trust_domain for p in profs if p.exists})
    idents = universe.idents
    sig: dict[int, set[tuple[str, int]]] = {}
    for (kind, vals), pid in patterns.items():
        if all("*" not in v for v in vals):  # exact names: look them up
            for v in vals:
                for td in tds if kind == "p" else [""]:
                    for i in universe.lookup(kind, v, td):
                        sig.setdefault(i, set()).add(("", pid))
            continue
        match = istio_string_matcher(vals)
        for i, ident in enumerate(idents):
            if ident.namespace is None:
                continue
            for td in tds if kind == "p" else [""]:
                value = ident.namespace if kind == "n" else _principal(ident, td) or ""
                if match(value):
                    sig.setdefault(i, set()).add((td, pid))
    grouped: dict[frozenset[tuple[str, int]], list[int]] = {}
    for i in sorted(sig):
        grouped.setdefault(frozenset(sig[i]), []).append(i)
    out = [
        _Class(idents[m[0]], tuple(sorted(idents[i].label for i in m)[:MAX_SOURCES_LISTED]), len(m))
        for m in grouped.values()
    ]
    # Everyone no pattern names: one class, with no need to list them all.
    rest = len(idents) - len(sig)
    if rest:
        first = list(islice((x for i, x in enumerate(idents) if i not in sig), MAX_SOURCES_LISTED))
        labels = tuple(sorted(x.label for x in first))
        out.append(_Class(first[0], labels, rest))
    if plaintext:
        out.append(_Class(Identity(PLAINTEXT, None, None), (PLAINTEXT,), 1))
    return out


def access_diff(old: sm.ConfigModel | None, new: sm.ConfigModel) -> AccessDiff:
    refs = sorted(
        {s.ref for m in (old, new) if m is not None for s in m.services_by_key.values()}
    )
    universe = _Universe(identities([old, new]))
    groups: dict[tuple[Profile, Profile, str], list[sm.ServiceRef]] = {}
    conditional: list[str] = []
    for ref in refs:
        a, b = profile(old, ref), profile(new, ref)
        if a == b:
            continue
        hosts_used = bool(_uses(a.policies, "hosts", "not_hosts") or _uses(b.policies, "hosts", "not_hosts"))
        groups.setdefault((a, b, str(ref) if hosts_used else ""), []).append(ref)
        if _conditional(a.policies) or _conditional(b.policies):
            conditional.append(str(ref))
    ev = _Evaluator()
    flips: list[AccessFlip] = []
    for (a, b, _), dests in groups.items():
        flips.extend(_group_flips(ev, old, new, a, b, dests, universe))
    flips.sort(key=lambda f: (not f.granted, f.destination, f.port, f.method, f.path, f.host, f.sources))
    return AccessDiff(
        flips=tuple(flips),
        destinations=len(refs),
        changed_destinations=sum(len(d) for d in groups.values()),
        groups=len(groups),
        evaluations=ev.count,
        conditional=tuple(conditional),
        identities=len(universe.idents),
    )


def _group_flips(
    ev: _Evaluator, old: sm.ConfigModel | None, new: sm.ConfigModel, a: Profile, b: Profile,
    dests: Sequence[sm.ServiceRef], universe: _Universe,
) -> list[AccessFlip]:
    profs = (a, b)
    pols = a.policies + b.policies
    plaintext_possible = any(p.exists and p.mtls != "STRICT" for p in profs)
    classes = _source_classes(universe, profs, plaintext_possible)
    ca, cb = ev.policies(a), ev.policies(b)
    ports = sorted({n for p in profs for n, _ in p.ports})
    method_patterns = _uses(pols, "methods", "not_methods")
    methods = (
        _by_signature(_pattern_classes(method_patterns, ("other", "(OTHER)")), method_patterns)
        if method_patterns else [("GET", ["*"])]
    )
    path_patterns = _uses(pols, "paths", "not_paths")
    if path_patterns:
        route_paths = [p for r in dests for m in (old, new) for p in _route_paths(m, r)]
        paths = _by_signature(
            _pattern_classes(path_patterns + route_paths, ("other", "/(other)")), path_patterns)
    else:
        paths = [("/", ["*"])]
    host_patterns = _uses(pols, "hosts", "not_hosts")
    out: list[AccessFlip] = []
    for ref in dests:
        hosts = (
            [(rep, [label]) for label, rep in
             _pattern_classes(host_patterns, ("other", "(other-host)"), sep="x")]
            if host_patterns else [(f"{ref.name}.{ref.namespace}", ["*"])]
        )
        for cls in classes:
            for port in ports:
                if a.port(port) is False or b.port(port) is False:  # http at some revision
                    dims = [(m, paths, h) for m in methods for h in hosts]
                else:  # tcp only: methods, paths and hosts do not exist
                    dims = [(("GET", ["*"]), [("/", ["*"])], (f"{ref.name}.{ref.namespace}", ["*"]))]
                for (mr, mls), path_groups, (hr, hls) in dims:
                    decided = [
                        (pls, ev.decide(a, ca, cls.rep, port, mr, pr, hr),
                         ev.decide(b, cb, cls.rep, port, mr, pr, hr))
                        for pr, pls in path_groups
                    ]
                    flipped = [(pls, x, y) for pls, x, y in decided if x.allowed != y.allowed]
                    if len(path_groups) > 1 and len(flipped) == len(decided) and len(
                        {(x, y) for _, x, y in flipped}
                    ) == 1:
                        flipped = [(["*"], flipped[0][1], flipped[0][2])]  # every path alike
                    out.extend(
                        AccessFlip(
                            destination=str(ref), port=port, method=ml, path=pl, host=hl,
                            sources=cls.labels, source_count=cls.count,
                            granted=after.allowed, before=before.text, after=after.text,
                        )
                        for pls, before, after in flipped
                        for ml in mls for pl in pls for hl in hls
                    )
    return out


__all__ = [
    "OTHER",
    "PLAINTEXT",
    "AccessDiff",
    "AccessFlip",
    "Decision",
    "Identity",
    "Profile",
    "access_diff",
    "identities",
    "profile",
]
