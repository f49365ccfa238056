"""Plan: what a revision changes (resources, proxies, access matrix), pure. See docs/plan.md."""

from __future__ import annotations

from .access import AccessDiff, AccessFlip, access_diff
from .plan import Plan, PlanLimits, plan
from .proxies import ProxyChange, ProxyDiff, SnapshotDiff, proxy_diff
from .report import format_plan
from .resources import FieldChange, ResourceChange, resource_diff

__all__ = [
    "AccessDiff",
    "AccessFlip",
    "FieldChange",
    "Plan",
    "PlanLimits",
    "ProxyChange",
    "ProxyDiff",
    "ResourceChange",
    "SnapshotDiff",
    "access_diff",
    "format_plan",
    "plan",
    "proxy_diff",
    "resource_diff",
]
