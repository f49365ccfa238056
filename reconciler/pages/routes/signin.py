"""Signing in (a token typed into the form, rate-limited per client address) and out."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from reconciler.auth.csrf import CSRF_FIELD, csrf_matches
from reconciler.auth.roles import Role
from reconciler.pages.routes.context import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Pages,
    client_of,
    safe_next,
)


def add(router: APIRouter, pages: Pages) -> None:
    cfg, audit, tokens, limiter = pages.cfg, pages.audit, pages.tokens, pages.limiter

    def with_login_csrf(request: Request, response: Response, nonce: str) -> Response:
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=pages.secure(request),
            max_age=3600,
            path="/signin",
        )
        return response

    @router.get("/signin")
    def signin_form(request: Request, next: str = "/") -> Response:
        nonce = secrets.token_urlsafe(24)
        response = pages.render(
            request, "signin.html", None, next=safe_next(next), login_csrf=nonce, error=None
        )
        return with_login_csrf(request, response, nonce)

    def signin_again(request: Request, form: dict[str, str], status: int, error: str) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = pages.render(
            request,
            "signin.html",
            None,
            status=status,
            next=safe_next(form.get("next", "/")),
            login_csrf=nonce,
            error=error,
        )
        return with_login_csrf(request, response, nonce)

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        form = await pages.form_of(request)
        client = client_of(request)
        # Checked before the token is even looked at: a refused client cannot keep guessing.
        # The limiter is used only here, on the event loop: no lock needed.
        refusal = limiter.refuse(client, cfg.monotonic())
        if refusal is not None:
            if refusal.first_of_burst:
                await run_in_threadpool(
                    audit.append,
                    "anonymous",
                    "session.rate_limited",
                    "",
                    {"client": client, "failures": refusal.failures,
                     "window_seconds": cfg.signin_window_s, "retry_after": refusal.retry_after},
                    now=cfg.clock(),
                )
            response = signin_again(
                request, form, 429,
                f"Too many failed sign-ins from your address: try again in "
                f"{refusal.retry_after} s.")
            response.headers["Retry-After"] = str(refusal.retry_after)
            return response
        if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get(CSRF_FIELD)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the sign-in page")
        principal = await run_in_threadpool(tokens.authenticate, form.get("token"))
        now = cfg.clock()
        if principal is None:
            failures = limiter.failed(client, cfg.monotonic())
            await run_in_threadpool(
                audit.append,
                "anonymous",
                "session.refused",
                "",
                {"client": client, "failures": failures},
                now=now,
            )
            return signin_again(
                request, form, 401, "That token is not valid (unknown, revoked, or mistyped).")
        limiter.succeeded(client)
        session_id, _session = await run_in_threadpool(
            lambda: tokens.start_session(principal, now=now, ttl=cfg.session_ttl)
        )
        await run_in_threadpool(
            audit.append,
            principal.actor,
            "session.signed_in",
            principal.name,
            {"role": principal.role.value, "client": client_of(request)},
            now=now,
        )
        redirect = RedirectResponse(safe_next(form.get("next", "/")), status_code=303)
        redirect.set_cookie(
            SESSION_COOKIE,
            session_id,
            httponly=True,
            samesite="strict",
            secure=pages.secure(request),
            max_age=int(cfg.session_ttl.total_seconds()),
            path="/",
        )
        redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/signin")
        return redirect

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        await pages.posted(request, Role.VIEWER)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        await run_in_threadpool(tokens.end_session, cookie)
        response = RedirectResponse("/signin?notice=signed-out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
