"""Pure functions from the spec model to per-proxy native config, plus exporters."""

from __future__ import annotations

from .native import RenderedSnapshot, RenderKey, RenderResult, RenderState, render
from .targets import Fleet, InboundPort, Proxy, ProxyPorts, default_fleet

__all__ = [
    "Fleet",
    "InboundPort",
    "Proxy",
    "ProxyPorts",
    "RenderKey",
    "RenderResult",
    "RenderState",
    "RenderedSnapshot",
    "default_fleet",
    "render",
]
