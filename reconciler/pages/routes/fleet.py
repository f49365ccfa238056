"""The fleet: every proxy, filtered by state, service and search, sorted and paged."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from reconciler.pages.paging import parse_positive
from reconciler.pages.readmodel import FLEET_SORTS
from reconciler.pages.routes.context import Pages

FLEET_PAGE = 100


def add(router: APIRouter, pages: Pages) -> None:
    data, need, render = pages.data, pages.need, pages.render

    @router.get("/fleet")
    def fleet_page(
        request: Request,
        state: str = "",
        service: str = "",
        q: str = "",
        sort: str = "proxy",
        order: str = "asc",
        offset: str | None = None,
    ) -> Response:
        session = need(request)
        sort = sort if sort in FLEET_SORTS else "proxy"
        descending = order == "desc"
        start = parse_positive(offset, default=0, maximum=10_000_000)
        page = data.fleet(
            state=state if state in ("SYNCED", "STALE", "NACKED", "DISCONNECTED") else None,
            service=service.strip()[:128] or None,
            search=q.strip()[:128] or None,
            sort=sort,
            descending=descending,
            offset=start,
            limit=FLEET_PAGE,
        )
        base = {
            k: v
            for k, v in {
                "state": state,
                "service": service,
                "q": q,
                "sort": sort,
                "order": order,
            }.items()
            if v
        }

        def link(**changes: Any) -> str:
            return "?" + urlencode({**base, **changes})

        sort_links = {
            key: link(
                sort=key, order="desc" if (key == sort and not descending) else "asc", offset=0
            )
            for key in FLEET_SORTS
        }
        return render(
            request,
            "fleet.html",
            session,
            page=page,
            state=state,
            service=service,
            q=q,
            sort=sort,
            descending=descending,
            start=start,
            sort_links=sort_links,
            prev_link=link(offset=max(start - FLEET_PAGE, 0)) if start > 0 else None,
            next_link=link(offset=start + FLEET_PAGE) if start + FLEET_PAGE < page.total else None,
        )
