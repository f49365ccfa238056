"""A plan: what going from one revision to another (or from nothing) would do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.language import model as sm
from renderers import Fleet, RenderResult, default_fleet, render

from .access import AccessDiff, access_diff
from .proxies import ProxyDiff, proxy_diff
from .resources import ResourceChange, resource_diff


@dataclass(frozen=True)
class PlanLimits:
    """Caps that keep a plan readable (and the JSON bounded) whatever the change."""

    max_diffs: int = 20  # distinct snapshot diffs shown
    max_diff_lines: int = 200  # lines per snapshot diff
    max_proxies: int = 500  # proxies listed (the counts always cover all)


@dataclass(frozen=True)
class Plan:
    from_rev: str | None
    to_rev: str | None
    resources: tuple[ResourceChange, ...]
    proxies: ProxyDiff
    access: AccessDiff
    render: RenderResult  # the target revision's render (pass its state on to the next one)
    limits: PlanLimits = PlanLimits()

    @property
    def empty(self) -> bool:
        return not self.resources and not self.proxies.changes and not self.access.flips

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_rev,
            "to": self.to_rev,
            "resources": [r.to_json() for r in self.resources],
            "proxies": self.proxies.to_json(self.limits.max_proxies),
            "access": self.access.to_json(),
        }


def plan(
    old: sm.ConfigModel | None,
    new: sm.ConfigModel,
    *,
    old_fleet: Fleet | None = None,
    new_fleet: Fleet | None = None,
    old_render: RenderResult | None = None,
    new_render: RenderResult | None = None,
    from_rev: str | None = None,
    to_rev: str | None = None,
    limits: PlanLimits = PlanLimits(),
) -> Plan:
    """Diff `old` (None: nothing) against `new`. Fleets default to the static-endpoint fleet of
    each model. Renders are made when not given; the new one incrementally from the old."""
    if old is not None and old_render is None:
        old_render = render(old, old_fleet if old_fleet is not None else default_fleet(old))
    if new_render is None:
        fleet = new_fleet if new_fleet is not None else default_fleet(new)
        new_render = render(new, fleet, previous=old_render.state if old_render else None)
    return Plan(
        from_rev=from_rev,
        to_rev=to_rev,
        resources=resource_diff(old, new),
        proxies=proxy_diff(
            old_render, new_render, max_diffs=limits.max_diffs, max_lines=limits.max_diff_lines
        ),
        access=access_diff(old, new),
        render=new_render,
        limits=limits,
    )


__all__ = ["Plan", "PlanLimits", "plan"]
