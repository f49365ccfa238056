"""API tokens (admin role): the list, creating one (its secret shown once) and revoking."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from reconciler.auth.roles import ROLES, Role
from reconciler.pages.routes.context import Pages

NOTICES = {
    "signed-out": "You are signed out.",
    "token-revoked": "Token revoked.",
}


def add(router: APIRouter, pages: Pages) -> None:
    audit, tokens, cfg, render = pages.audit, pages.tokens, pages.cfg, pages.render

    @router.get("/tokens")
    def tokens_page(request: Request, notice: str | None = None) -> Response:
        session = pages.need(request, Role.ADMIN)
        return render(
            request,
            "tokens.html",
            session,
            tokens=tokens.list(),
            created=None,
            notice=NOTICES.get(notice or ""),
        )

    @router.post("/tokens")
    async def create_token(request: Request) -> Response:
        session, form = await pages.posted(request, Role.ADMIN)
        role = form.get("role", "")
        if role not in ROLES:
            raise HTTPException(400, "choose a role")
        now = cfg.clock()

        def run() -> Any:
            made = tokens.create(role, form.get("name", ""), now=now)
            audit.append(
                session.principal.actor,
                "apitoken.created",
                made.name,
                {"token_id": made.id, "role": made.role.value},
                now=now,
            )
            return made

        try:
            made = await run_in_threadpool(run)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        response = render(
            request,
            "tokens.html",
            session,
            tokens=await run_in_threadpool(tokens.list),
            created=made,
            notice=None,
        )
        response.headers["Cache-Control"] = "no-store"  # the page shows the secret once
        return response

    @router.post("/tokens/{token_id}/revoke")
    async def revoke_token(request: Request, token_id: str) -> Response:
        session, _ = await pages.posted(request, Role.ADMIN)
        now = cfg.clock()

        def run() -> bool:
            done = tokens.revoke(token_id, now=now)
            if done:
                audit.append(
                    session.principal.actor,
                    "apitoken.revoked",
                    token_id,
                    {"token_id": token_id},
                    now=now,
                )
            return done

        if not await run_in_threadpool(run):
            raise HTTPException(404, "no active token with that id")
        return RedirectResponse("/tokens?notice=token-revoked", status_code=303)
