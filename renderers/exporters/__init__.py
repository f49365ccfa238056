"""Exporters: a config repo in other formats. `native` and `envoy` are per proxy (from the
native render, so Envoy gets exactly what meshcd's proxy gets); `istio`, `linkerd` and
`gateway-api` are per resource (from the spec model). Each returns an `Export`: files
(relative path -> text) and the warnings about what the format cannot express."""

from __future__ import annotations

from reconciler.language.model import ConfigModel

from ..native import render
from ..targets import Fleet
from .common import Export, ExportWarning
from .envoy import DEFAULT_ROOT, export_envoy
from .gateway_api import export_gateway_api
from .istio import export_istio
from .linkerd import export_linkerd
from .native_files import export_native

FORMATS = ("native", "envoy", "istio", "linkerd", "gateway-api")
PER_PROXY = frozenset({"native", "envoy"})


def export(fmt: str, model: ConfigModel, fleet: Fleet, *, proxy: str | None = None,
           envoy_root: str = DEFAULT_ROOT) -> Export:
    """Render `model` for `fleet` in format `fmt`. `proxy` limits a per-proxy format to one
    proxy (KeyError when the fleet has no such proxy)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt in PER_PROXY:
        if proxy is not None:
            if fleet.get(proxy) is None:
                raise KeyError(proxy)
            fleet = Fleet.of([p for p in fleet if p.id == proxy])
        snapshots = render(model, fleet).snapshots
        if fmt == "native":
            return export_native(snapshots)
        return export_envoy(snapshots, fleet, root=envoy_root)
    if fmt == "istio":
        return export_istio(model)
    if fmt == "linkerd":
        return export_linkerd(model)
    return export_gateway_api(model)


__all__ = [
    "DEFAULT_ROOT",
    "FORMATS",
    "PER_PROXY",
    "Export",
    "ExportWarning",
    "export",
    "export_envoy",
    "export_gateway_api",
    "export_istio",
    "export_linkerd",
    "export_native",
]
