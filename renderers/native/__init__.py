"""The native renderer: one proxy_runtime snapshot per proxy (see render.py, docs/plan.md)."""

from __future__ import annotations

from .outbound import cluster_name, domains
from .policies import proxy_mtls, proxy_policies, selected_policies, service_mtls, subset_mtls
from .reach import callees, reachable
from .render import (
    MANAGED_INBOUND_BASE,
    MANAGED_OUTBOUND_PORT,
    RenderedSnapshot,
    RenderKey,
    RenderResult,
    RenderState,
    render,
)

__all__ = [
    "MANAGED_INBOUND_BASE",
    "MANAGED_OUTBOUND_PORT",
    "RenderKey",
    "RenderResult",
    "RenderState",
    "RenderedSnapshot",
    "callees",
    "cluster_name",
    "domains",
    "proxy_mtls",
    "proxy_policies",
    "reachable",
    "render",
    "selected_policies",
    "service_mtls",
    "subset_mtls",
]
