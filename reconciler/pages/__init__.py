"""The web pages: overview, revisions, revision detail, fleet, audit log, tokens.

    router = make_pages_router(data, audit, tokens, PagesSettings())
    app.include_router(router)          # pages at /, static files at /static

`data` is anything that implements `PagesData` (the controller's read model);
`SqlPagesData` is a table-backed one for tests, demos and the benchmark. See docs/pages.md.
"""

from __future__ import annotations

from reconciler.pages.chain_status import ChainStatus
from reconciler.pages.readmodel import (
    AccessChange,
    Action,
    ActionResult,
    FetchView,
    Finding,
    FleetPage,
    Overview,
    PagesData,
    ProxyRow,
    RevisionDetail,
    RevisionRow,
    RolloutView,
    SeriesPoint,
    Signals,
    StageView,
)
from reconciler.pages.router import PagesSettings, make_pages_router

__all__ = [
    "AccessChange",
    "Action",
    "ActionResult",
    "ChainStatus",
    "FetchView",
    "Finding",
    "FleetPage",
    "Overview",
    "PagesData",
    "PagesSettings",
    "ProxyRow",
    "RevisionDetail",
    "RevisionRow",
    "RolloutView",
    "SeriesPoint",
    "Signals",
    "StageView",
    "make_pages_router",
]
