"""Check a parsed snapshot completely and turn it into the form the data plane runs.

Everything that could fail at request time fails here instead, with the JSON path of the
culprit: regexes (RE2), cluster references, listener ports, weights, CIDRs, ports in policies,
TLS without an identity. The result holds precompiled matchers, the host lookup dict, cumulative
weights and the policies split by action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy_runtime.protocol.canonical import compute_version

from .authz import CompiledPolicies, compile_policies
from .errors import SnapshotError
from .model import (
    Cluster,
    Endpoint,
    Identity,
    Inbound,
    InboundListener,
    Protocol,
    Snapshot,
    TcpListener,
    Telemetry,
)
from .parse import parse_snapshot, snapshot_version
from .routing import CompiledOutbound, compile_outbound


@dataclass(frozen=True, slots=True)
class CompiledEndpoint:
    endpoint: Endpoint
    host: str  # IPv6 without brackets
    port: int


@dataclass(frozen=True, slots=True)
class CompiledCluster:
    cluster: Cluster
    endpoints: tuple[CompiledEndpoint, ...]

    @property
    def name(self) -> str:
        return self.cluster.name


@dataclass(frozen=True, slots=True)
class CompiledInboundListener:
    listener: InboundListener
    app_host: str
    app_port: int
    service_port: int  # destination.port for authorization


@dataclass(frozen=True, slots=True)
class CompiledInbound:
    inbound: Inbound
    listeners: tuple[CompiledInboundListener, ...]
    authz: CompiledPolicies


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    snapshot: Snapshot
    version: str
    identity: Identity | None  # the snapshot's, completed by any identity passed to compile
    tls_ready: bool  # identity has certificate, key and trust bundle
    inbound: CompiledInbound | None
    outbound: CompiledOutbound | None
    tcp: tuple[TcpListener, ...]
    clusters: Mapping[str, CompiledCluster]
    telemetry: Telemetry

    @property
    def revision(self) -> str | None:
        return self.snapshot.revision

    def listener_ports(self) -> dict[str, int]:
        """JSON path of every listener -> its port (what a config swap compares)."""
        out: dict[str, int] = {}
        if self.inbound is not None:
            for i, cl in enumerate(self.inbound.listeners):
                out[f"inbound.listeners[{i}]"] = cl.listener.port
        if self.outbound is not None:
            out["outbound"] = self.outbound.outbound.port
        for i, t in enumerate(self.tcp):
            out[f"tcp[{i}]"] = t.port
        return out


def split_host_port(address: str, path: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SnapshotError(path, f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise SnapshotError(path, f"{address!r}: write IPv6 addresses as [addr]:port")
    return host, int(port)


def _check_percent(value: float, path: str) -> None:
    if not 0.0 <= value <= 100.0:
        raise SnapshotError(path, f"{value:g} is out of range (0..100)")


def _compile_clusters(snapshot: Snapshot) -> dict[str, CompiledCluster]:
    out: dict[str, CompiledCluster] = {}
    for i, c in enumerate(snapshot.clusters):
        path = f"clusters[{i}]"
        if c.name in out:
            raise SnapshotError(f"{path}.name", f"duplicate cluster name {c.name!r}")
        eps = tuple(
            CompiledEndpoint(ep, *split_host_port(ep.address, f"{path}.endpoints[{j}].address"))
            for j, ep in enumerate(c.endpoints)
        )
        for j, ep in enumerate(c.endpoints):
            if ep.weight < 1:
                raise SnapshotError(f"{path}.endpoints[{j}].weight", "must be at least 1")
        if (c.lb_policy == "consistent_hash") != (c.hash_key is not None):
            raise SnapshotError(
                f"{path}.hashKey", "is required with, and only with, consistent_hash"
            )
        if c.outlier_detection is not None:
            _check_percent(
                c.outlier_detection.max_ejection_percent,
                f"{path}.outlierDetection.maxEjectionPercent",
            )
        out[c.name] = CompiledCluster(c, eps)
    return out


def _ref(clusters: Mapping[str, CompiledCluster], name: str, path: str, protocol: Protocol) -> None:
    c = clusters.get(name)
    if c is None:
        raise SnapshotError(path, f"unknown cluster {name!r}")
    if c.cluster.protocol != protocol:
        raise SnapshotError(
            path, f"cluster {name!r} has protocol {c.cluster.protocol}, {protocol} needed here"
        )


def _check_ports(snapshot: Snapshot) -> None:
    used: dict[int, str] = {}

    def claim(port: int, path: str) -> None:
        if port == 0:  # "any free port": never collides
            return
        if port in used:
            raise SnapshotError(path, f"port {port} is already used by {used[port]}")
        used[port] = path

    if snapshot.inbound is not None:
        for i, li in enumerate(snapshot.inbound.listeners):
            claim(li.port, f"inbound.listeners[{i}].port")
    if snapshot.outbound is not None:
        claim(snapshot.outbound.port, "outbound.port")
    for i, t in enumerate(snapshot.tcp):
        claim(t.port, f"tcp[{i}].port")


def _check_identity(identity: Identity | None) -> None:
    """PEM framing only; the data plane's TLS context load checks the cryptography."""
    if identity is None:
        return
    checks = (
        ("certificatePem", identity.certificate_pem, "-----BEGIN CERTIFICATE-----"),
        ("privateKeyPem", identity.private_key_pem, "PRIVATE KEY-----"),
        ("trustBundlePem", identity.trust_bundle_pem, "-----BEGIN CERTIFICATE-----"),
    )
    for name, pem, marker in checks:
        if pem is not None and marker not in pem:
            raise SnapshotError(f"identity.{name}", f"is not PEM (no {marker!r} block)")


def _merge_identity(outside: Identity, inside: Identity | None) -> Identity:
    if inside is None:
        return outside
    return Identity(
        spiffe_id=outside.spiffe_id or inside.spiffe_id,
        certificate_pem=outside.certificate_pem or inside.certificate_pem,
        private_key_pem=outside.private_key_pem or inside.private_key_pem,
        trust_bundle_pem=outside.trust_bundle_pem or inside.trust_bundle_pem,
    )


def _tls_ready(identity: Identity | None) -> bool:
    return (
        identity is not None
        and identity.certificate_pem is not None
        and identity.private_key_pem is not None
        and identity.trust_bundle_pem is not None
    )


_NEEDS_IDENTITY = (
    "needs identity.certificatePem, identity.privateKeyPem and identity.trustBundlePem"
)


def compile_snapshot(
    snapshot: Snapshot, version: str | None = None, identity: Identity | None = None
) -> CompiledConfig:
    """Check everything and compile. Raises SnapshotError.

    version: the snapshot's version if the caller already knows it (computed from the content
    otherwise). identity: identity material held outside the snapshot (managed mode: the agent
    owns the private key, the controller's snapshot is shared by identical proxies); fields it
    leaves None are taken from snapshot.identity.
    """
    if identity is not None:
        identity = _merge_identity(identity, snapshot.identity)
    else:
        identity = snapshot.identity
    _check_identity(identity)
    tls_ready = _tls_ready(identity)
    clusters = _compile_clusters(snapshot)
    _check_ports(snapshot)

    inbound: CompiledInbound | None = None
    if snapshot.inbound is not None:
        ib = snapshot.inbound
        listeners = []
        for i, li in enumerate(ib.listeners):
            path = f"inbound.listeners[{i}]"
            host, port = split_host_port(li.local_address, f"{path}.localAddress")
            if li.mtls_mode != "DISABLE" and not tls_ready:
                raise SnapshotError(f"{path}.mtlsMode", f"{li.mtls_mode} {_NEEDS_IDENTITY}")
            listeners.append(CompiledInboundListener(li, host, port, li.service_port or port))
        authz = compile_policies(ib.policies, ib.default_deny, "inbound.policies")
        inbound = CompiledInbound(ib, tuple(listeners), authz)

    outbound: CompiledOutbound | None = None
    if snapshot.outbound is not None:
        outbound = compile_outbound(snapshot.outbound, "outbound")
        for i, vh in enumerate(snapshot.outbound.virtual_hosts):
            for j, r in enumerate(vh.routes):
                path = f"outbound.virtualHosts[{i}].routes[{j}]"
                for k, wc in enumerate(r.clusters):
                    if wc.weight < 0:
                        raise SnapshotError(f"{path}.clusters[{k}].weight", "must be >= 0")
                    _ref(clusters, wc.cluster, f"{path}.clusters[{k}].cluster", "http")
                if r.retries is not None and not r.retries.retry_on:  # would mean the default
                    raise SnapshotError(f"{path}.retries.retryOn", "needs at least 1 item(s)")
                if r.mirror is not None:
                    _ref(clusters, r.mirror.cluster, f"{path}.mirror.cluster", "http")
                    _check_percent(r.mirror.percent, f"{path}.mirror.percent")
                if r.fault is not None and r.fault.delay is not None:
                    _check_percent(r.fault.delay.percent, f"{path}.fault.delay.percent")
                if r.fault is not None and r.fault.abort is not None:
                    _check_percent(r.fault.abort.percent, f"{path}.fault.abort.percent")

    for i, t in enumerate(snapshot.tcp):
        _ref(clusters, t.cluster, f"tcp[{i}].cluster", "tcp")

    for i, c in enumerate(snapshot.clusters):
        if c.tls is not None and c.tls.mode == "MUTUAL" and not tls_ready:
            raise SnapshotError(f"clusters[{i}].tls.mode", f"MUTUAL {_NEEDS_IDENTITY}")

    tel = snapshot.telemetry
    _check_percent(tel.tracing_sampling_percent, "telemetry.tracingSamplingPercent")
    _check_percent(tel.access_log_sampling_percent, "telemetry.accessLogSamplingPercent")

    return CompiledConfig(
        snapshot=snapshot,
        version=version if version is not None else snapshot_version(snapshot),
        identity=identity,
        tls_ready=tls_ready,
        inbound=inbound,
        outbound=outbound,
        tcp=snapshot.tcp,
        clusters=clusters,
        telemetry=tel,
    )


def load_config(obj: object) -> CompiledConfig:
    """parse_snapshot + compile_snapshot: what a proxy does with a snapshot it is sent."""
    snapshot = parse_snapshot(obj)
    assert isinstance(obj, dict)  # parse_snapshot refuses anything else
    return compile_snapshot(snapshot, compute_version(obj))
