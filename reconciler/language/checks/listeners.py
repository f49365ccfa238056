"""Listener ports the proxies of static endpoints would claim twice (MCD132).

Every static endpoint gets a proxy (renderers/targets.py `default_fleet`, docs/plan.md "Port
layout"): services in (namespace, name) order, endpoints in their order, the n-th proxy of that
walk listening

- for Service port k on the endpoint's port + k (the app behind it on + k + APP_PORT_OFFSET),
- for outbound HTTP on the Mesh's `outboundPortBase` (default 20000) + n,

on the endpoint's host. A port claimed twice on one host is a snapshot the proxy refuses (its
own inbound and outbound listeners on one port: "port ... is already used") or a listener that
cannot bind (two proxies on one host); a port past 65535 is a snapshot the proxy refuses. All of
that is known from the config alone, so validation says it, at the endpoint's address.

The layout constants are the renderer's; the spec may not import renderers, so
APP_PORT_OFFSET is repeated here and tests/spec keeps the two in step. Endpoints with an invalid address (MCD129)
get no proxy and claim nothing, as in `default_fleet`.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.language.checks.context import CheckContext, where
from reconciler.language.findings import Location
from reconciler.language.model import DEFAULT_OUTBOUND_PORT_BASE, Service

APP_PORT_OFFSET = 1000
OUTBOUND_BASE = DEFAULT_OUTBOUND_PORT_BASE
MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class _Claim:
    proxy: int  # the proxy's index in the walk
    owner: str  # "the proxy of web.prod endpoint 0 (127.0.0.1:8080)"
    label: str  # "inbound port http" | "outbound port"
    location: Location


def _ports_label(svc: Service, k: int) -> str:
    return f"inbound port {svc.ports[k].name}"


def check(ctx: CheckContext) -> None:
    model = ctx.model
    outbound_base = model.mesh.outbound_port_base if model.mesh is not None else OUTBOUND_BASE
    claims: dict[tuple[str, int], _Claim] = {}
    index = 0
    for svc in sorted(model.services_by_key.values(), key=lambda s: s.ref.key):
        for n, ep in enumerate(svc.endpoints):
            hp = ep.split()
            if hp is None:
                continue  # MCD129: no proxy
            host, port = hp
            host = host.lower()
            owner = f"the proxy of {svc.name}.{svc.namespace} endpoint {n} ({ep.address})"
            at = ctx.at(svc, "endpoints", n, "address")
            mine: list[tuple[int, str]] = [
                (port + k, _ports_label(svc, k)) for k in range(len(svc.ports))
            ]
            mine.append((outbound_base + index, "outbound port"))
            me = index
            index += 1
            last = port + len(svc.ports) - 1
            if svc.ports and last + APP_PORT_OFFSET > MAX_PORT:
                too_far = "its listeners" if last > MAX_PORT else "its app's ports"
                ctx.add(
                    "MCD132",
                    f"{owner}: {too_far} would go past port {MAX_PORT} (the proxy listens on "
                    f"{port}..{last}, its app on {port + APP_PORT_OFFSET}.."
                    f"{last + APP_PORT_OFFSET}); the proxy would refuse its snapshot",
                    at,
                )
            for number, label in mine:
                if number > MAX_PORT:
                    continue
                key = (host, number)
                earlier = claims.get(key)
                if earlier is None:
                    claims[key] = _Claim(me, owner, label, at)
                elif earlier.proxy == me:
                    ctx.add(
                        "MCD132",
                        f"{owner}: its {label} and its {earlier.label} are both port {number}; "
                        "the proxy would refuse its snapshot",
                        at,
                    )
                else:
                    ctx.add(
                        "MCD132",
                        f"{owner}: its {label} is port {number} on {host}, already the "
                        f"{earlier.label} of {earlier.owner} ({where(earlier.location)}); "
                        "the two proxies cannot both listen there",
                        at,
                    )
