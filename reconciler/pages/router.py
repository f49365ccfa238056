"""The web pages: `make_pages_router(data, audit, tokens, settings)` -> an APIRouter.

Mounted at `/` by the controller (`app.include_router(...)`); it serves its own static
files under `/static`. Every page needs a signed-in session (a token typed into the sign-in
form); every POST needs the session's CSRF token; rollout actions need the operator role,
token management the admin role. Pages are rendered on the server (Jinja2); the live parts
are small fragments that htmx polls. Each page is one module of `reconciler.pages.routes`;
this module assembles them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from reconciler.audit import AuditLog
from reconciler.auth.ratelimit import SignInLimiter
from reconciler.auth.roles import ROLES
from reconciler.auth.tokens import ApiTokens
from reconciler.pages.chain_status import ChainStatus
from reconciler.pages.readmodel import PagesData
from reconciler.pages.routes import actions as actions_page
from reconciler.pages.routes import audit as audit_page
from reconciler.pages.routes import fleet as fleet_page
from reconciler.pages.routes import overview as overview_page
from reconciler.pages.routes import revisions as revisions_page
from reconciler.pages.routes import signin as signin_page
from reconciler.pages.routes import tokens as tokens_page
from reconciler.pages.routes.context import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Pages,
    PagesSettings,
    denied_text,
    harden,
    limit_text,
    p99_text,
    side_text,
    when_text,
)
from reconciler.pages.routes.fleet import FLEET_PAGE
from reconciler.pages.routes.revisions import REVISIONS_PAGE, rollout_charts

__all__ = [
    "FLEET_PAGE",
    "LOGIN_CSRF_COOKIE",
    "REVISIONS_PAGE",
    "SESSION_COOKIE",
    "PagesSettings",
    "denied_text",
    "limit_text",
    "make_pages_router",
    "p99_text",
    "rollout_charts",
    "side_text",
]

_HERE = Path(__file__).parent
_STATIC = {
    "htmx.min.js": "text/javascript",
    "pages.css": "text/css",
}


def make_pages_router(
    data: PagesData,
    audit: AuditLog,
    tokens: ApiTokens,
    settings: PagesSettings | None = None,
    *,
    chain: ChainStatus | None = None,
) -> APIRouter:
    """The pages as a router to `include_router` at `/` (static files under /static)."""
    cfg = settings or PagesSettings()
    chain = chain or ChainStatus(
        audit, max_age=cfg.verify_max_age, full_every=cfg.full_verify_every, clock=cfg.clock
    )
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals["roles"] = ROLES
    templates.env.filters["when"] = when_text
    templates.env.filters["pct"] = lambda v: f"{v * 100:.2f}%"
    templates.env.filters["p99"] = p99_text
    templates.env.filters["denied"] = denied_text
    templates.env.filters["side"] = side_text
    templates.env.filters["limit"] = limit_text
    router = APIRouter(include_in_schema=False, route_class=_html_errors_route(templates))
    router.state_chain = chain  # type: ignore[attr-defined]  # for tests and the controller
    pages = Pages(data, audit, tokens, cfg, chain,
                  SignInLimiter(cfg.signin_max_failures, cfg.signin_window_s), templates)

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        media = _STATIC.get(name)
        if media is None:
            raise HTTPException(404, "no such file")
        return FileResponse(
            _HERE / "static" / name,
            media_type=media,
            headers={"Cache-Control": "public, max-age=3600"},
        )

    for page in (signin_page, overview_page, revisions_page, fleet_page, audit_page,
                 actions_page, tokens_page):
        page.add(router, pages)
    return router


def _html_errors_route(templates: Jinja2Templates) -> type[APIRoute]:
    """A route class that answers refusals (HTTPException) with a page, not JSON.

    303 becomes a redirect (to sign in), 401 for an htmx poll keeps its HX-Redirect header,
    everything else renders error.html with the status code and the reason.
    """

    class HtmlErrorsRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def wrapped(request: Request) -> Response:
                try:
                    return await handler(request)
                except HTTPException as exc:
                    headers = dict(exc.headers or {})
                    if exc.status_code == 303:
                        return RedirectResponse(headers.get("Location", "/signin"), status_code=303)
                    if "HX-Redirect" in headers:
                        return Response(
                            str(exc.detail), status_code=exc.status_code, headers=headers
                        )
                    response = templates.TemplateResponse(
                        request,
                        "error.html",
                        {
                            "me": None,
                            "path": request.url.path,
                            "title": _TITLES.get(exc.status_code, "Refused"),
                            "message": str(exc.detail),
                        },
                        status_code=exc.status_code,
                        headers={
                            k: v for k, v in headers.items() if k.lower() == "www-authenticate"
                        },
                    )
                    harden(response)
                    return response

            return wrapped

    return HtmlErrorsRoute


_TITLES = {
    400: "Bad request",
    401: "Sign in",
    403: "Not allowed",
    404: "Not found",
    409: "Not now",
    413: "Too large",
    429: "Too many attempts",
    415: "Unsupported",
}
