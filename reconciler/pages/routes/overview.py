"""The overview (`/`) and its live fragments: the overview itself and the actions offered."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from reconciler.auth.roles import Role
from reconciler.auth.tokens import Session
from reconciler.pages.actions import available_actions
from reconciler.pages.routes.context import Pages


def add(router: APIRouter, pages: Pages) -> None:
    data, need, render = pages.data, pages.need, pages.render

    def overview_ctx(session: Session) -> dict[str, Any]:
        overview = data.overview()
        actions = available_actions(overview) if session.principal.can_act else []
        return {"ov": overview, "actions": actions}

    @router.get("/")
    def overview_page(request: Request, done: str | None = None) -> Response:
        session = need(request)
        return render(request, "overview.html", session, notice=done, **overview_ctx(session))

    @router.get("/live/overview")
    def overview_live(request: Request) -> Response:
        session = need(request)
        return render(request, "_overview_live.html", session, **overview_ctx(session))

    @router.get("/live/actions")
    def actions_live(request: Request, have: str = "") -> Response:
        """The actions offered now; 204 (htmx swaps nothing) when they are those the page
        already shows, so a focused button is not replaced while nothing changed."""
        session = need(request, Role.OPERATOR)
        actions = available_actions(data.overview())
        if ",".join(a.value for a in actions) == have:
            return Response(status_code=204)
        return render(request, "_actions.html", session, actions=actions)
