"""The native renderer: spec model x fleet -> one proxy_runtime snapshot per proxy.

Proxies that would get the same config share one `RenderedSnapshot`: the content depends on
a proxy's service, its inbound mTLS mode (the only thing its labels can change, through a
TrafficPolicy subset override) and its own ports (static mode), and nothing else. That triple
is the `RenderKey`; the renderer builds each distinct key once.

Pieces are cached in the `RenderState` a render returns, each with the dependency tokens it
was built from (see changes.py): the outbound config for calling a service (per caller
namespace), every cluster, every callee set and every snapshot. Rendering again with
`previous=` drops only the pieces whose tokens the change touches and rebuilds those; the
rest is reused as is. A full render is the same code with empty caches, so incremental and
full output are the same by construction (and tested byte for byte).

Identity (certificate, key, trust bundle) is not rendered: the controller adds it per proxy
when it sends a snapshot. `version` here hashes the rendered config only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from proxy_runtime.config import compute_version
from proxy_runtime.config import model as pc
from reconciler.language import model as sm

from ..targets import Fleet, ProxyPorts
from .changes import Token, changed_tokens, inbound_tokens
from .outbound import ClusterPiece, OutboundPiece, build_cluster, build_outbound, tcp_port
from .policies import default_deny, proxy_mtls, proxy_policies, traffic_policy
from .reach import Reach, callees
from .tojson import policy_json, to_json

MANAGED_OUTBOUND_PORT = 15001
MANAGED_INBOUND_BASE = 15006  # inbound listener k of a managed proxy listens on 15006 + k

# Policy-derived reachability is rebuilt from scratch when these change (else updated in place).
_REACH_RESET = frozenset({("mesh",), ("identities",)})


class RenderKey(NamedTuple):  # a tuple: built and hashed once per proxy per render
    """Everything a snapshot's content depends on besides the model."""

    service: tuple[str, str]  # (namespace, name)
    mtls: str
    ports: ProxyPorts | None


@dataclass(frozen=True, eq=False)
class RenderedSnapshot:
    """One rendered config. `json` is the normal form (with `version`) that
    `snapshot_to_json(snapshot)` gives; it shares structure with other snapshots: read only."""

    key: RenderKey
    snapshot: pc.Snapshot
    json: Mapping[str, Any]
    version: str
    callees: tuple[sm.ServiceRef, ...]
    deps: frozenset[Token] = field(repr=False)

    @property
    def service(self) -> sm.ServiceRef:
        return sm.ServiceRef(self.key.service[1], self.key.service[0])

    def canonical(self) -> bytes:
        """Canonical JSON bytes of the whole document (version included)."""
        return json.dumps(self.json, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode("utf-8")

    def pretty(self) -> str:
        """Sorted keys, two-space indent: what diffs are made of."""
        return json.dumps(self.json, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@dataclass
class RenderState:
    """Caches of one render, to pass as `previous` to the next one. Treat as opaque."""

    model: sm.ConfigModel
    fleet: Fleet
    snapshots: dict[RenderKey, RenderedSnapshot] = field(default_factory=dict)
    outbound: dict[tuple[tuple[str, str], bool], tuple[OutboundPiece, list[Any], list[str]]] = (
        field(default_factory=dict)
    )
    clusters: dict[str, tuple[ClusterPiece, dict[str, Any]]] = field(default_factory=dict)
    callees: dict[tuple[str, str], tuple[tuple[sm.ServiceRef, ...], frozenset[Token]]] = field(
        default_factory=dict
    )
    reach: Reach | None = None
    # Which proxies got which key, and the answer itself: reused as is when a change cannot
    # move a proxy to another key (no Service, TrafficPolicy or Mesh changed).
    members: dict[RenderKey, list[str]] = field(default_factory=dict)
    assigned: dict[str, RenderedSnapshot] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class RenderResult:
    """`snapshots`: proxy id -> its snapshot (shared between identical proxies). `unknown`:
    proxies whose service is not in the model (they get nothing). `rendered`/`reused`: distinct
    snapshots built by this call / taken from `previous`."""

    snapshots: Mapping[str, RenderedSnapshot]
    state: RenderState
    unknown: tuple[str, ...] = ()
    rendered: int = 0
    reused: int = 0

    def distinct(self) -> dict[str, RenderedSnapshot]:
        """Each distinct snapshot once, by version."""
        return {s.version: s for s in self.snapshots.values()}

    def versions(self) -> dict[str, str]:
        return {pid: s.version for pid, s in self.snapshots.items()}


# --- the renderer ---------------------------------------------------------------------------


class _Renderer:
    def __init__(self, model: sm.ConfigModel, state: RenderState) -> None:
        self.model = model
        self.state = state
        mesh = model.mesh
        tel = mesh.telemetry if mesh else sm.Telemetry()
        self.telemetry = pc.Telemetry(
            tracing_sampling_percent=float(tel.tracing_sampling_percent),
            access_log_sampling_percent=float(tel.access_log_sampling_percent),
        )
        self.telemetry_json = to_json(self.telemetry)
        self.default_deny = default_deny(model)
        self.rendered = 0

    def callee_set(self, svc: sm.Service) -> tuple[tuple[sm.ServiceRef, ...], frozenset[Token]]:
        hit = self.state.callees.get(svc.ref.key)
        if hit is None:
            if svc.egress is None and self.state.reach is None:
                self.state.reach = Reach(self.model)
            hit = callees(self.model, svc, self.state.reach)
            self.state.callees[svc.ref.key] = hit
        return hit

    def outbound(self, callee: sm.Service, caller_ns: str) -> tuple[OutboundPiece, list[Any], list[str]]:
        # The pieces differ only in the bare-name domains, present for same-namespace callers.
        k = (callee.ref.key, caller_ns == callee.namespace)
        hit = self.state.outbound.get(k)
        if hit is None:
            piece, used = build_outbound(self.model, callee, caller_ns)
            for ref, port, subset in used:
                self.cluster(ref, port, subset)
            hit = (piece, [to_json(v) for v in piece.virtual_hosts], list(piece.clusters))
            self.state.outbound[k] = hit
        return hit

    def cluster(self, ref: sm.ServiceRef, port: int, subset: str | None) -> tuple[ClusterPiece, dict[str, Any]]:
        from .outbound import cluster_name

        name = cluster_name(ref, port, subset)
        hit = self.state.clusters.get(name)
        if hit is None:
            piece = build_cluster(self.model, ref, port, subset)
            hit = (piece, to_json(piece.cluster))
            self.state.clusters[name] = hit
        return hit

    def inbound(self, svc: sm.Service, key: RenderKey) -> pc.Inbound:
        listeners = []
        for k, port in enumerate(svc.ports):
            if key.ports is not None and k < len(key.ports.inbound):
                listen, app = key.ports.inbound[k].listen, key.ports.inbound[k].app_address
            else:
                listen, app = MANAGED_INBOUND_BASE + k, f"127.0.0.1:{port.number}"
            listeners.append(pc.InboundListener(
                port=listen,
                local_address=app,
                protocol="tcp" if port.protocol == "tcp" else "http",
                mtls_mode="PERMISSIVE" if key.mtls == "PERMISSIVE"
                else "DISABLE" if key.mtls == "DISABLE" else "STRICT",
                service_port=port.number,
            ))
        return pc.Inbound(
            service=svc.name,
            namespace=svc.namespace,
            listeners=tuple(sorted(listeners, key=lambda li: li.port)),
            policies=proxy_policies(self.model, svc),
            default_deny=self.default_deny,
        )

    def snapshot(self, svc: sm.Service, key: RenderKey) -> RenderedSnapshot:
        hit = self.state.snapshots.get(key)
        if hit is not None:
            return hit
        self.rendered += 1
        inbound = self.inbound(svc, key)
        refs, deps_callees = self.callee_set(svc)
        deps: set[Token] = set(inbound_tokens(svc)) | deps_callees
        vhosts: list[pc.VirtualHost] = []
        vhosts_json: list[tuple[str, Any]] = []
        cluster_names: set[str] = set()
        tcp_wanted: list[tuple[sm.ServiceRef, int, str]] = []
        for ref in refs:
            callee = self.model.service(ref)
            if callee is None:
                continue
            piece, vjson, names = self.outbound(callee, svc.namespace)
            deps |= piece.deps
            vhosts.extend(piece.virtual_hosts)
            vhosts_json.extend(zip((v.name for v in piece.virtual_hosts), vjson, strict=True))
            cluster_names.update(names)
            tcp_wanted.extend((ref, port, cname) for port, cname in piece.tcp)
        out_port = key.ports.outbound if key.ports is not None else MANAGED_OUTBOUND_PORT
        taken = {li.port for li in inbound.listeners} | {out_port}
        tcp = tuple(
            pc.TcpListener(port=tcp_port(ref, port, taken), cluster=cname)
            for ref, port, cname in tcp_wanted
        )
        tcp = tuple(sorted(tcp, key=lambda t: t.port))
        order = sorted(range(len(vhosts)), key=lambda i: vhosts[i].name)
        outbound = (
            pc.Outbound(port=out_port, virtual_hosts=tuple(vhosts[i] for i in order))
            if vhosts else None
        )
        clusters = [self.state.clusters[n] for n in sorted(cluster_names)]
        snap = pc.Snapshot(
            inbound=inbound,
            outbound=outbound,
            tcp=tcp,
            clusters=tuple(c[0].cluster for c in clusters),
            telemetry=self.telemetry,
        )
        # Assemble the normal form from cached fragments, in the schema's field order.
        inbound_json = to_json(dataclasses.replace(inbound, policies=()))
        if inbound.policies:
            inbound_json["policies"] = [policy_json(p) for p in inbound.policies]
        body: dict[str, Any] = {"inbound": inbound_json}
        if outbound is not None:
            body["outbound"] = {**to_json(pc.Outbound(port=out_port)),
                                "virtualHosts": [vhosts_json[i][1] for i in order]}
        if tcp:
            body["tcp"] = to_json(tcp)
        if clusters:
            body["clusters"] = [c[1] for c in clusters]
        body["telemetry"] = self.telemetry_json
        version = compute_version(body)
        rs = RenderedSnapshot(key, snap, {"version": version, **body}, version, refs, frozenset(deps))
        self.state.snapshots[key] = rs
        return rs


def _keep(cache: dict[Any, Any], changed: frozenset[Token], deps_of: Any) -> dict[Any, Any]:
    return {k: v for k, v in cache.items() if changed.isdisjoint(deps_of(v))}


_ASSIGNMENT_TOKENS = frozenset({"mesh", "svc", "svc-any", "tp", "tp-any"})


def _carry_over(
    previous: RenderState, model: sm.ConfigModel, fleet: Fleet
) -> tuple[RenderState, bool]:
    """The previous caches minus whatever the change from previous.model to `model` touches,
    and whether every proxy keeps its RenderKey."""
    if previous.model is model:
        changed: frozenset[Token] = frozenset()
    else:
        changed = changed_tokens(previous.model, model)
    if ("mesh",) in changed:
        return RenderState(model, fleet), False
    reach = None
    if previous.reach is not None and changed.isdisjoint(_REACH_RESET):
        reach, moved = previous.reach.updated(model, changed)
        extra = {("reach-all",)} if moved is None else {("reach", *k) for k in moved}
        changed = changed | extra
    state = RenderState(
        model=model,
        fleet=fleet,
        snapshots=_keep(previous.snapshots, changed, lambda s: s.deps),
        outbound=_keep(previous.outbound, changed, lambda o: o[0].deps),
        clusters=_keep(previous.clusters, changed, lambda c: c[0].deps),
        callees=_keep(previous.callees, changed, lambda c: c[1]),
        reach=reach,
    )
    same_keys = previous.fleet is fleet and not any(t[0] in _ASSIGNMENT_TOKENS for t in changed)
    return state, same_keys


def render(
    model: sm.ConfigModel, fleet: Fleet | Iterable[Any], *, previous: RenderState | None = None
) -> RenderResult:
    """Render a snapshot for every proxy of `fleet`. Pure: same inputs, byte-identical output.
    With `previous` (the `state` of an earlier result) only what changed is rebuilt."""
    if not isinstance(fleet, Fleet):
        fleet = Fleet.of(fleet)
    if previous is None:
        state, same_keys = RenderState(model, fleet), False
    else:
        state, same_keys = _carry_over(previous, model, fleet)
    r = _Renderer(model, state)
    if same_keys and previous is not None:
        # Every proxy keeps its key: only the keys whose snapshot was dropped are rebuilt.
        out = dict(previous.assigned)
        state.members, state.unknown = previous.members, previous.unknown
        for key, pids in previous.members.items():
            if key not in state.snapshots:
                snap = r.snapshot(model.services_by_key[key.service], key)
                for pid in pids:
                    out[pid] = snap
        state.assigned = out
        reused = len(previous.members) - r.rendered
        return RenderResult(out, state, state.unknown, r.rendered, reused)
    out = {}
    unknown: list[str] = []
    members: dict[RenderKey, list[str]] = {}
    # Per service: the Service and its inbound mode when no subset override can change it.
    info: dict[tuple[str, str], tuple[sm.Service, str | None] | None] = {}
    for proxy in fleet:
        skey = proxy.service.key
        if skey in info:
            hit = info[skey]
        else:
            svc_ = model.services_by_key.get(skey)
            if svc_ is None:
                hit = None
            else:
                tp = traffic_policy(model, skey)
                overrides = tp is not None and any(sp.mtls for sp in tp.subsets)
                hit = (svc_, None if overrides else proxy_mtls(model, svc_, {}))
            info[skey] = hit
        if hit is None:
            unknown.append(proxy.id)
            continue
        svc, mode = hit
        key = RenderKey(skey, mode or proxy_mtls(model, svc, proxy.labels), proxy.ports)
        out[proxy.id] = state.snapshots.get(key) or r.snapshot(svc, key)
        members.setdefault(key, []).append(proxy.id)
    # Snapshots no proxy uses any more are dropped, so the state does not grow without bound.
    state.snapshots = {k: s for k, s in state.snapshots.items() if k in members}
    state.members, state.assigned, state.unknown = members, out, tuple(unknown)
    return RenderResult(out, state, tuple(unknown), r.rendered, len(members) - r.rendered)


__all__ = [
    "MANAGED_INBOUND_BASE",
    "MANAGED_OUTBOUND_PORT",
    "RenderKey",
    "RenderResult",
    "RenderState",
    "RenderedSnapshot",
    "render",
]
