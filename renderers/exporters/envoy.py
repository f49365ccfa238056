"""Envoy: per proxy, a bootstrap plus file-based dynamic resources (LDS, RDS, CDS), translated
from the proxy's native snapshot by `proxy_runtime.envoy.translate`, the same translation the
agent serves its Envoy over ADS, so a rendered file and a managed Envoy never disagree.

Files per proxy id P (all under `P/`): `bootstrap.yaml` (node, admin, `dynamic_resources`
whose `lds_config`/`cds_config` are `path_config_source`s), `lds.yaml` (listeners), `rds.yaml`
(the outbound route configuration, referenced by the outbound listener through RDS with a path
config source) and `cds.yaml` (clusters), each a DiscoveryResponse whose `version_info` is the
native snapshot's version. The paths inside the bootstrap are absolute: `<root>/<P>/...`, where
`root` is where the files will live on the proxy host. The proxy's identity is read from
`<root>/<P>/identity/{cert,key,bundle}.pem` (watched, so rotation needs no restart). See
docs/exporters.md for the field mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy_runtime.envoy.translate import (
    FileSources,
    dur,
    fraction,
    pattern,
    rbac_policy,
    rbac_rules,
    socket_address,
    translate,
)

from ..native import MANAGED_OUTBOUND_PORT, RenderedSnapshot
from ..targets import Fleet, Proxy
from .common import Export, dump_yaml

DEFAULT_ROOT = "/etc/meshcd/envoy"
MANAGED_ADMIN_PORT = 15000
STATIC_ADMIN_OFFSET = 1000  # static mode: admin listens this far above the outbound port


def _path_source(path: str) -> dict[str, Any]:
    return {"path_config_source": {"path": path}, "resource_api_version": "V3"}


# --- per proxy -----------------------------------------------------------------------------


def admin_port(proxy: Proxy) -> int:
    """Managed proxies: 15000 (next to outbound 15001); static proxies, which share a host:
    their outbound port + 1000."""
    return proxy.ports.outbound + STATIC_ADMIN_OFFSET if proxy.ports else MANAGED_ADMIN_PORT


def _discovery(version: str, resources: tuple[dict[str, Any], ...]) -> str:
    return dump_yaml({"version_info": version, "resources": list(resources)})


def export_proxy(proxy: Proxy, rendered: RenderedSnapshot, *, root: str, export: Export) -> None:
    snap = rendered.snapshot
    base_dir = f"{root.rstrip('/')}/{proxy.id}"
    resource = f"proxy {proxy.id}"
    res = translate(snap, sds=False, files=FileSources(rds_path=f"{base_dir}/rds.yaml",
                                                       identity_dir=f"{base_dir}/identity"))
    for message in res.warnings:
        export.warn(resource, message)
    admin = admin_port(proxy)
    taken = {li.port for li in snap.inbound.listeners} if snap.inbound else set()
    taken |= {t.port for t in snap.tcp} | ({snap.outbound.port} if snap.outbound else set())
    if admin in taken:
        export.warn(resource, f"admin port {admin} is also a listener port; Envoy will not start")
    node_cluster = (f"{snap.inbound.service}.{snap.inbound.namespace}" if snap.inbound
                    else str(proxy.service))
    bootstrap: dict[str, Any] = {
        "node": {"id": proxy.id, "cluster": node_cluster,
                 "metadata": {"meshcd_version": rendered.version}},
        "admin": {"address": socket_address("127.0.0.1", admin)},
        "dynamic_resources": {"lds_config": _path_source(f"{base_dir}/lds.yaml"),
                              "cds_config": _path_source(f"{base_dir}/cds.yaml")},
        "stats_flush_interval": dur(round(snap.telemetry.stats_interval_seconds * 1000)),
    }
    base = f"{proxy.id}/"
    export.add(base + "bootstrap.yaml", dump_yaml(bootstrap))
    export.add(base + "lds.yaml", _discovery(rendered.version, res.listeners))
    export.add(base + "rds.yaml", _discovery(rendered.version, res.routes))
    export.add(base + "cds.yaml", _discovery(rendered.version, res.clusters))


def export_envoy(snapshots: Mapping[str, RenderedSnapshot], fleet: Fleet, *,
                 root: str = DEFAULT_ROOT) -> Export:
    """Envoy config for every proxy that has a snapshot (`RenderResult.snapshots`)."""
    export = Export()
    for proxy in fleet:
        rendered = snapshots.get(proxy.id)
        if rendered is not None:
            export_proxy(proxy, rendered, root=root, export=export)
    return export.sorted()


__all__ = [
    "DEFAULT_ROOT",
    "MANAGED_ADMIN_PORT",
    "MANAGED_OUTBOUND_PORT",
    "admin_port",
    "export_envoy",
    "fraction",
    "pattern",
    "rbac_policy",
    "rbac_rules",
]
