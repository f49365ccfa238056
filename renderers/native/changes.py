"""What a change between two models touches, as dependency tokens.

Every rendered piece records the tokens it was built from; a token names a *target* (a
service, the routes of a host, the policies selecting a service) rather than a document, so a
document that appears, disappears or moves to another target invalidates the right pieces:

- ("mesh",)                 the Mesh (everything depends on it)
- ("svc", ns, name)         a Service document; ("svc-any",) any Service
- ("identities",)           a Service added or removed, or its service account changed
- ("reach", ns, name)       what the policies let a service without `egress` call moved
                            (derived by the renderer, see reach.py); ("reach-all",) for all
- ("route", ns, name)       the Route(s) of a host
- ("tp", ns, name)          the TrafficPolicy of a service; ("tp-any",) any TrafficPolicy
- ("authz-svc", ns, name)   policies whose selector names the service
- ("authz-ns", ns)          namespace-wide policies of a namespace
- ("authz-mesh",)           mesh-wide policies (rootNamespace, no selector)
- ("authz-any",)            any authorization policy
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from reconciler.language import model as sm

Token = tuple[str, ...]
ResourceKey = tuple[str, str, str]  # (kind, namespace, name)


@lru_cache(maxsize=4)  # a model is diffed as the new one, then again as the old one
def resources_by_key(model: sm.ConfigModel) -> dict[ResourceKey, sm.Resource]:
    """Every resource by (kind, namespace, name); the first of duplicates wins, as in the model.
    Cached: read only."""
    out: dict[ResourceKey, sm.Resource] = {}
    for r in model.resources():
        out.setdefault(r.key, r)
    return out


def changed_keys(
    old: dict[ResourceKey, sm.Resource], new: dict[ResourceKey, sm.Resource]
) -> list[ResourceKey]:
    """Keys added, removed or changed (positions never count), in sorted order."""
    out = [k for k, r in new.items() if (o := old.get(k)) is None or (o is not r and o != r)]
    out.extend(k for k in old if k not in new)
    return sorted(out)


def _tokens(r: sm.Resource, root_ns: str) -> Iterator[Token]:
    if isinstance(r, sm.Mesh):
        yield ("mesh",)
    elif isinstance(r, sm.Service):
        yield ("svc", r.namespace, r.name)
        yield ("svc-any",)
    elif isinstance(r, sm.Route):
        yield ("route", *r.host.key)
    elif isinstance(r, sm.TrafficPolicy):
        yield ("tp", *r.service.key)
        yield ("tp-any",)
    elif isinstance(r, sm.AuthorizationPolicy):
        yield ("authz-any",)
        if r.selector is not None and r.selector.services:
            for ref in r.selector.services:
                yield ("authz-svc", *ref.key)
        elif r.namespace == root_ns:
            yield ("authz-mesh",)
        else:
            yield ("authz-ns", r.namespace)


def changed_tokens(old: sm.ConfigModel, new: sm.ConfigModel) -> frozenset[Token]:
    """The tokens a change from `old` to `new` touches (both sides of every changed document)."""
    old_by, new_by = resources_by_key(old), resources_by_key(new)
    old_root = old.mesh.root_namespace if old.mesh else "meshcd-system"
    new_root = new.mesh.root_namespace if new.mesh else "meshcd-system"
    out: set[Token] = set()
    for key in changed_keys(old_by, new_by):
        o, n = old_by.get(key), new_by.get(key)
        if o is not None:
            out.update(_tokens(o, old_root))
        if n is not None:
            out.update(_tokens(n, new_root))
        same_identity = (
            isinstance(o, sm.Service) and isinstance(n, sm.Service)
            and o.service_account == n.service_account
        )
        if key[0] == "Service" and not same_identity:
            out.add(("identities",))  # a service (so an identity) came, went or changed
    return frozenset(out)


def inbound_tokens(svc: sm.Service) -> frozenset[Token]:
    return frozenset({
        ("mesh",), ("svc", *svc.ref.key), ("tp", *svc.ref.key), ("authz-svc", *svc.ref.key),
        ("authz-ns", svc.namespace), ("authz-mesh",),
    })


__all__ = ["changed_keys", "changed_tokens", "inbound_tokens", "resources_by_key"]
