"""Service checks: duplicate ports and subsets (MCD121), endpoint addresses (MCD129),
subsets that select no static endpoint (MCD112), egress references (MCD128), and services
nothing may call under default-deny (MCD118, computed in authorization.py)."""

from __future__ import annotations

import ipaddress
import re
from functools import partial

from reconciler.language.checks.context import CheckContext
from reconciler.language.model import Endpoint, Service

_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_DOTTED_NUMBERS = re.compile(r"^[0-9.]+$")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# The common case, decided by one regex: a valid IPv4 address and port.
_IPV4_HOSTPORT = re.compile(rf"^{_OCTET}(?:\.{_OCTET}){{3}}:{_PORT}$")


def endpoint_problem(ep: Endpoint) -> str | None:
    """Why `ep.address` is not a usable host:port, or None when it is."""
    if _IPV4_HOSTPORT.match(ep.address):
        return None
    hp = ep.split()
    if hp is None:
        return "want host:port with a port from 1 to 65535 (IPv6 in brackets: [::1]:8080)"
    host = hp[0]
    if ep.address.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        return None
    if _DOTTED_NUMBERS.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in name.split(".")):
        return f"{host!r} is neither an IP address nor a DNS name"
    return None


def _check_local(ctx: CheckContext, svc: Service) -> None:
    """The checks of one Service that look at nothing else."""
    port_names: dict[str, int] = {}
    port_numbers: dict[int, int] = {}
    for i, port in enumerate(svc.ports):
        if port.name in port_names:
            ctx.add(
                "MCD121",
                f"duplicate port name {port.name!r} (also ports[{port_names[port.name]}])",
                ctx.at(svc, "ports", i, "name"),
            )
        else:
            port_names[port.name] = i
        if port.number in port_numbers:
            ctx.add(
                "MCD121",
                f"duplicate port number {port.number} (also ports[{port_numbers[port.number]}])",
                ctx.at(svc, "ports", i, "number"),
            )
        else:
            port_numbers[port.number] = i

    subset_names: dict[str, int] = {}
    for i, subset in enumerate(svc.subsets):
        if subset.name in subset_names:
            ctx.add(
                "MCD121",
                f"duplicate subset name {subset.name!r} (also subsets[{subset_names[subset.name]}])",
                ctx.at(svc, "subsets", i, "name"),
            )
        else:
            subset_names[subset.name] = i

    for i, ep in enumerate(svc.endpoints):
        problem = endpoint_problem(ep)
        if problem is not None:
            ctx.add(
                "MCD129",
                f"endpoint address {ep.address!r}: {problem}",
                ctx.at(svc, "endpoints", i, "address"),
            )

    if svc.endpoints:
        for i, subset in enumerate(svc.subsets):
            want = subset.labels  # equal labels first: the common case, and a fast compare
            if not any(ep.labels == want for ep in svc.endpoints) and not any(
                ep.in_subset(subset) for ep in svc.endpoints
            ):
                shown = ", ".join(f"{k}={v}" for k, v in want.items())
                ctx.add(
                    "MCD112",
                    f"subset {subset.name!r} selects no static endpoint of {svc.name!r} "
                    f"(none has labels {shown})",
                    ctx.at(svc, "subsets", i, "labels"),
                )


def _check_egress(ctx: CheckContext, svc: Service) -> None:
    own = svc.ref
    ports = ctx.port_numbers
    for i, ref in enumerate(svc.egress or ()):
        if ref.key in ports and ref != own:
            continue
        if ref == own:
            ctx.add(
                "MCD128",
                f"egress names the service itself ({ref}); a service never needs egress to itself",
                ctx.at(svc, "egress", i),
            )
        else:
            ctx.add(
                "MCD128",
                f"egress names unknown service {ref}",
                ctx.at(svc, "egress", i),
            )


def check(ctx: CheckContext) -> None:
    for svc in ctx.model.services:
        ctx.local(svc, partial(_check_local, ctx, svc))
        if svc.egress:
            _check_egress(ctx, svc)
