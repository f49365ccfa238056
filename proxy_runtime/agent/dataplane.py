"""The seam between the fleet agent and the data plane it drives: the builtin proxy
(`ProxyRuntime`) or Envoy (`proxy_runtime.envoy.dataplane.EnvoyDataPlane`). Both apply a
document (the snapshot with our identity) and answer Ack/Nack, and keep the per-second stats
window the agent streams to the controller."""

from __future__ import annotations

from typing import Any, Protocol

from proxy_runtime.config import snapshot_to_json
from proxy_runtime.metrics import Stats
from proxy_runtime.runtime import Ack, Nack

DATAPLANES = ("envoy", "builtin")


class DataPlane(Protocol):
    stats: Stats

    async def apply(self, document: dict[str, Any]) -> Ack | Nack: ...


def running_document(plane: Any) -> dict[str, Any] | None:
    """The document the data plane serves now (identity included), or None."""
    running = getattr(plane, "running_document", None)
    if running is not None:
        doc: dict[str, Any] | None = running()
        return doc
    active = getattr(plane, "active", None)
    return snapshot_to_json(active.compiled.snapshot) if active is not None else None


def default_dataplane() -> str:
    """envoy where an envoy binary is found, else builtin."""
    from proxy_runtime.envoy.binary import find_envoy

    try:
        return "envoy" if find_envoy() is not None else "builtin"
    except FileNotFoundError:
        return "envoy"  # MESHCD_ENVOY set but wrong: say so when starting, do not hide it
