"""The fleet a render is for: which proxies exist, the service each fronts, its labels.

In Kubernetes mode proxies come from the API (another part of meshcd builds that Fleet). To run
without Kubernetes (`meshcd plan`, the demo), `default_fleet(model)` derives one proxy per
static endpoint of every Service. Static proxies share one host, so each carries its own
ports (`ProxyPorts`); a proxy without ports uses the managed layout (see docs/plan.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from reconciler.language.model import (
    DEFAULT_OUTBOUND_PORT_BASE,
    EMPTY,
    ConfigModel,
    FrozenDict,
    ServiceRef,
)

# Static mode: the app behind a proxy listens this far above the proxy's inbound port, and the
# app's outbound port (where it sends its calls) is the Mesh's `outboundPortBase` (default
# OUTBOUND_BASE) + the proxy's index.
APP_PORT_OFFSET = 1000
OUTBOUND_BASE = DEFAULT_OUTBOUND_PORT_BASE


@dataclass(frozen=True, slots=True)
class InboundPort:
    """Where the proxy listens for one Service port, and where the app behind it listens."""

    listen: int
    app_address: str  # host:port


@dataclass(frozen=True, slots=True)
class ProxyPorts:
    """A proxy's own ports (static mode): one InboundPort per Service port, in the Service's
    port order, and the port the app sends its outbound HTTP to."""

    inbound: tuple[InboundPort, ...]
    outbound: int


@dataclass(frozen=True, slots=True)
class Proxy:
    id: str
    service: ServiceRef
    labels: FrozenDict[str, str] = EMPTY
    ports: ProxyPorts | None = None  # None: the managed (one proxy per pod) layout


@dataclass(frozen=True)
class Fleet:
    """Proxies by id. Iteration is in id order, so everything built from a fleet is ordered."""

    proxies: tuple[Proxy, ...] = ()
    by_id: Mapping[str, Proxy] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.proxies, key=lambda p: p.id))
        by_id: dict[str, Proxy] = {}
        for p in ordered:
            if p.id in by_id:
                raise ValueError(f"duplicate proxy id {p.id!r}")
            by_id[p.id] = p
        object.__setattr__(self, "proxies", ordered)
        object.__setattr__(self, "by_id", by_id)

    @classmethod
    def of(cls, proxies: Iterable[Proxy]) -> Fleet:
        return cls(tuple(proxies))

    def __iter__(self) -> Iterator[Proxy]:
        return iter(self.proxies)

    def __len__(self) -> int:
        return len(self.proxies)

    def get(self, proxy_id: str) -> Proxy | None:
        return self.by_id.get(proxy_id)


def default_fleet(model: ConfigModel) -> Fleet:
    """One proxy per static endpoint: id `<service>.<namespace>-<n>` (n from 0, in endpoint
    order), the endpoint's labels. The endpoint's address is where the proxy listens for the
    Service's first port (port k of the Service: the endpoint port + k); the app listens
    APP_PORT_OFFSET above each; outbound ports are the Mesh's `outboundPortBase` (default
    OUTBOUND_BASE) + the proxy's index."""
    mesh = model.mesh
    base = mesh.outbound_port_base if mesh is not None else OUTBOUND_BASE
    proxies: list[Proxy] = []
    for svc in sorted(model.services_by_key.values(), key=lambda s: s.ref.key):
        for n, ep in enumerate(svc.endpoints):
            hp = ep.split()
            if hp is None:
                continue  # an invalid address is finding MCD129; it gets no proxy
            host, port = hp
            host_text = f"[{host}]" if ":" in host else host
            inbound = tuple(
                InboundPort(port + k, f"{host_text}:{port + k + APP_PORT_OFFSET}")
                for k in range(len(svc.ports))
            )
            proxies.append(Proxy(
                id=f"{svc.name}.{svc.namespace}-{n}",
                service=svc.ref,
                labels=ep.labels,
                ports=ProxyPorts(inbound, base + len(proxies)),
            ))
    return Fleet.of(proxies)


__all__ = [
    "APP_PORT_OFFSET",
    "OUTBOUND_BASE",
    "Fleet",
    "InboundPort",
    "Proxy",
    "ProxyPorts",
    "default_fleet",
]
