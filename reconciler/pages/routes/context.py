"""What every page shares: the settings, `Pages` (read model, audit log, tokens, chain
status, sign-in limiter, templates; sessions, rendering, forms, the CSRF check) and the
response helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from reconciler.audit import AuditLog
from reconciler.auth.csrf import CSRF_FIELD, CSRF_HEADER, csrf_matches
from reconciler.auth.ratelimit import DEFAULT_MAX_FAILURES, DEFAULT_WINDOW_S, SignInLimiter
from reconciler.auth.roles import Role
from reconciler.auth.tokens import DEFAULT_SESSION_TTL, ApiTokens, Session
from reconciler.pages.chain_status import ChainStatus
from reconciler.pages.folding import DIFF_FOLD_BYTES
from reconciler.pages.readmodel import PagesData, Signals

SESSION_COOKIE = "meshcd_session"
LOGIN_CSRF_COOKIE = "meshcd_signin"
MAX_FORM_BYTES = 16 * 1024


@dataclass(frozen=True)
class PagesSettings:
    """How the pages behave. `secure_cookies=None`: Secure exactly when served over TLS."""

    secure_cookies: bool | None = None
    session_ttl: timedelta = DEFAULT_SESSION_TTL
    poll_seconds: float = 1.0
    verify_max_age: float = 10.0
    full_verify_every: float = 600.0
    diff_fold_bytes: int = DIFF_FOLD_BYTES
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Failed sign-ins per client address before 429 (reconciler.auth.ratelimit).
    signin_max_failures: int = DEFAULT_MAX_FAILURES
    signin_window_s: float = DEFAULT_WINDOW_S
    monotonic: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Pages:
    """The parts the pages share, and the steps every page takes."""

    data: PagesData
    audit: AuditLog
    tokens: ApiTokens
    cfg: PagesSettings
    chain: ChainStatus
    limiter: SignInLimiter
    templates: Jinja2Templates

    def secure(self, request: Request) -> bool:
        if self.cfg.secure_cookies is not None:
            return self.cfg.secure_cookies
        return request.url.scheme == "https"

    def session_of(self, request: Request) -> Session | None:
        return self.tokens.session(request.cookies.get(SESSION_COOKIE), now=self.cfg.clock())

    def need(self, request: Request, role: Role = Role.VIEWER) -> Session:
        session = self.session_of(request)
        if session is None:
            if request.headers.get("hx-request"):
                raise HTTPException(401, "signed out", headers={"HX-Redirect": "/signin"})
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(
                303, "sign in first", headers={"Location": f"/signin?next={quote(target)}"}
            )
        if not session.principal.can(role):
            raise HTTPException(403, f"this needs the {role.value} role")
        return session

    def render(
        self, request: Request, name: str, session: Session | None, status: int = 200,
        **ctx: Any
    ) -> HTMLResponse:
        response = self.templates.TemplateResponse(
            request,
            name,
            {
                "session": session,
                "me": session.principal if session else None,
                "csrf": session.csrf if session else "",
                "csrf_field": CSRF_FIELD,
                "poll": self.cfg.poll_seconds,
                "path": request.url.path,
                **ctx,
            },
            status_code=status,
        )
        harden(response)
        return response

    async def form_of(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
        if (
            not request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            )
            and body
        ):
            raise HTTPException(415, "send the form url-encoded")
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    async def posted(self, request: Request, role: Role) -> tuple[Session, dict[str, str]]:
        """A POST's session (with `role`) and form, after the CSRF check."""
        session = await run_in_threadpool(self.need, request, role)
        form = await self.form_of(request)
        submitted = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not csrf_matches(session.csrf, submitted):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return session, form


def harden(response: Response) -> None:
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-cache")


def safe_next(target: str) -> str:
    """Only local paths: an open redirect after sign-in would be a phishing aid."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


# -- template filters ----------------------------------------------------------------------


def when_text(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def p99_text(s: Signals) -> str:
    return "-" if s.p99_ms is None else f"{s.p99_ms:.0f} ms"


def denied_text(s: Signals) -> str:
    """The judge's denial rate when known, else denials per second."""
    if s.denial_rate is not None:
        return f"{s.denial_rate * 100:.2f}%"
    return f"{s.denials:.2f}/s"


def side_text(s: Signals) -> str:
    req = f"{s.requests} requests, " if s.requests is not None else ""
    return f"{req}{s.error_rate * 100:.2f}% errors, p99 {p99_text(s)}, {denied_text(s)} denied"


def limit_text(value: float, key: str) -> str:
    """Threshold keys: rates are fractions (shown as %), `*_ms` milliseconds."""
    if key.endswith("_ms"):
        return f"{value:g} ms"
    if "rate" in key:
        return f"{value * 100:.3g}%"
    return f"{value:g}"
