"""The snapshot model's normal JSON form, fast.

proxy_runtime.config.snapshot_to_json defines the normal form; this writes the same thing
(tests compare the two on every rendered snapshot) with the per-class field lists and JSON
names worked out once, because the renderer converts hundreds of thousands of objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from functools import lru_cache
from typing import Any

from proxy_runtime.config import model as pc

_RENAMED = {"sources": "from", "operations": "to"}
_WRAP = {"sources": "source", "operations": "operation"}  # Rule.from[i] = {"source": ...}


def _camel(snake: str) -> str:
    if snake in _RENAMED:
        return _RENAMED[snake]
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_PLAN: dict[type, tuple[tuple[str, str, str | None], ...]] = {}


def _plan(cls: type) -> tuple[tuple[str, str, str | None], ...]:
    plan = _PLAN.get(cls)
    if plan is None:
        plan = tuple(
            (f.name, _camel(f.name), _WRAP.get(f.name) if cls is pc.Rule else None)
            for f in fields(cls)
        )
        _PLAN[cls] = plan
    return plan


def to_json(value: Any) -> Any:
    """A model object (or tuple/mapping/scalar) as normal-form JSON: None and empty lists or
    maps left out, maps with sorted keys."""
    cls = type(value)
    if cls is tuple:
        return [to_json(v) for v in value]
    if cls in _SCALARS:
        return value
    plan = _PLAN.get(cls)
    if plan is None and is_dataclass(value) and not isinstance(value, type):
        plan = _plan(cls)
    if plan is not None:
        out: dict[str, Any] = {}
        for attr, name, wrap in plan:
            v = getattr(value, attr)
            if v is None or (type(v) in (tuple, dict) and not v):
                continue
            if wrap is not None:
                out[name] = [{wrap: to_json(x)} for x in v]
            else:
                out[name] = to_json(v)
        return out
    if isinstance(value, Mapping):
        return {k: value[k] for k in sorted(value)}
    if isinstance(value, tuple):
        return [to_json(v) for v in value]
    return value


@lru_cache(maxsize=65536)
def policy_json(policy: pc.AuthorizationPolicy) -> dict[str, Any]:
    """A policy's JSON, cached: the same policy object lands in every replica's snapshot.
    Shared between snapshots: read only."""
    out: dict[str, Any] = to_json(policy)
    return out


_SCALARS: frozenset[type] = frozenset({str, int, float, bool})

__all__ = ["policy_json", "to_json"]
