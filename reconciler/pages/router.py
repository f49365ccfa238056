"""The web pages: `make_pages_router(data, audit, tokens, settings)` -> an APIRouter.

Mounted at `/` by the controller (`app.include_router(...)`); it serves its own static
files under `/static`. Every page needs a signed-in session (a token typed into the sign-in
form); every POST needs the session's CSRF token; rollout actions need the operator role,
token management the admin role. Pages are rendered on the server (Jinja2); the live parts
are small fragments that htmx polls.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from reconciler.audit import AuditLog, InvalidRecord, canonical_json
from reconciler.auth.csrf import CSRF_FIELD, CSRF_HEADER, csrf_matches
from reconciler.auth.ratelimit import DEFAULT_MAX_FAILURES, DEFAULT_WINDOW_S, SignInLimiter
from reconciler.auth.roles import ROLES, Role
from reconciler.auth.tokens import DEFAULT_SESSION_TTL, ApiTokens, Session
from reconciler.pages.actions import available_actions, describe, parse_action
from reconciler.pages.chain_status import ChainStatus, badge_of
from reconciler.pages.chart import Chart, line_chart
from reconciler.pages.folding import DIFF_FOLD_BYTES, fold_text, summarise_blast
from reconciler.pages.paging import AUDIT_PAGE, parse_audit_query, parse_positive
from reconciler.pages.readmodel import FLEET_SORTS, Action, PagesData, RevisionDetail, Signals

SESSION_COOKIE = "meshcd_session"
LOGIN_CSRF_COOKIE = "meshcd_signin"
_HERE = Path(__file__).parent
_STATIC = {
    "htmx.min.js": "text/javascript",
    "pages.css": "text/css",
}
_MAX_FORM_BYTES = 16 * 1024
REVISIONS_PAGE = 50
FLEET_PAGE = 100
_OUTCOMES = ("deployed", "deploying", "planned", "rejected", "failed", "invalid", "superseded")
_NOTICES = {
    "signed-out": "You are signed out.",
    "token-revoked": "Token revoked.",
}


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
    limiter = SignInLimiter(cfg.signin_max_failures, cfg.signin_window_s)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals["roles"] = ROLES
    templates.env.filters["when"] = _when
    templates.env.filters["pct"] = lambda v: f"{v * 100:.2f}%"
    templates.env.filters["p99"] = p99_text
    templates.env.filters["denied"] = denied_text
    templates.env.filters["side"] = side_text
    templates.env.filters["limit"] = limit_text
    router = APIRouter(include_in_schema=False, route_class=_html_errors_route(templates))
    router.state_chain = chain  # type: ignore[attr-defined]  # for tests and the controller

    # -- helpers ---------------------------------------------------------------------------

    def secure(request: Request) -> bool:
        if cfg.secure_cookies is not None:
            return cfg.secure_cookies
        return request.url.scheme == "https"

    def session_of(request: Request) -> Session | None:
        return tokens.session(request.cookies.get(SESSION_COOKIE), now=cfg.clock())

    def need(request: Request, role: Role = Role.VIEWER) -> Session:
        session = session_of(request)
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
        request: Request, name: str, session: Session | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        response = templates.TemplateResponse(
            request,
            name,
            {
                "session": session,
                "me": session.principal if session else None,
                "csrf": session.csrf if session else "",
                "csrf_field": CSRF_FIELD,
                "poll": cfg.poll_seconds,
                "path": request.url.path,
                **ctx,
            },
            status_code=status,
        )
        _harden(response)
        return response

    async def form_of(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
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

    async def posted(request: Request, role: Role) -> tuple[Session, dict[str, str]]:
        """A POST's session (with `role`) and form, after the CSRF check."""
        session = await run_in_threadpool(need, request, role)
        form = await form_of(request)
        submitted = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not csrf_matches(session.csrf, submitted):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return session, form

    # -- static ----------------------------------------------------------------------------

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

    # -- signing in and out ----------------------------------------------------------------

    @router.get("/signin")
    def signin_form(request: Request, next: str = "/") -> Response:
        nonce = secrets.token_urlsafe(24)
        response = render(
            request, "signin.html", None, next=_safe_next(next), login_csrf=nonce, error=None
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            max_age=3600,
            path="/signin",
        )
        return response

    def signin_again(request: Request, form: dict[str, str], status: int, error: str) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = render(
            request,
            "signin.html",
            None,
            status=status,
            next=_safe_next(form.get("next", "/")),
            login_csrf=nonce,
            error=error,
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            max_age=3600,
            path="/signin",
        )
        return response

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        form = await form_of(request)
        client = _client(request)
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
            {"role": principal.role.value, "client": _client(request)},
            now=now,
        )
        redirect = RedirectResponse(_safe_next(form.get("next", "/")), status_code=303)
        redirect.set_cookie(
            SESSION_COOKIE,
            session_id,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            max_age=int(cfg.session_ttl.total_seconds()),
            path="/",
        )
        redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/signin")
        return redirect

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        await posted(request, Role.VIEWER)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        await run_in_threadpool(tokens.end_session, cookie)
        response = RedirectResponse("/signin?notice=signed-out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- overview --------------------------------------------------------------------------

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

    # -- revisions -------------------------------------------------------------------------

    @router.get("/revisions")
    def revisions_page(request: Request, outcome: str = "", before: str | None = None) -> Response:
        session = need(request)
        chosen = outcome if outcome in _OUTCOMES else None
        before_id = parse_positive(before, default=0, maximum=2**62) or None
        rows = data.revisions(outcome=chosen, before_id=before_id, limit=REVISIONS_PAGE + 1)
        more = len(rows) > REVISIONS_PAGE
        rows = rows[:REVISIONS_PAGE]
        next_link = None
        if more and rows:
            next_link = "?" + urlencode(
                {**({"outcome": chosen} if chosen else {}), "before": rows[-1].id}
            )
        return render(
            request,
            "revisions.html",
            session,
            rows=rows,
            outcome=chosen,
            outcomes=_OUTCOMES,
            next_link=next_link,
            paged=before_id is not None,
        )

    @router.get("/revisions/{revision_id}")
    def revision_page(request: Request, revision_id: int) -> Response:
        session = need(request)
        detail = data.revision(revision_id)
        if detail is None:
            return render(
                request,
                "error.html",
                session,
                status=404,
                title="Not found",
                message=f"There is no revision {revision_id}.",
            )
        return render(
            request, "revision.html", session, **_revision_ctx(detail, cfg.diff_fold_bytes)
        )

    @router.get("/revisions/{revision_id}/diff.txt")
    def revision_diff(request: Request, revision_id: int) -> Response:
        need(request)
        detail = data.revision(revision_id)
        if detail is None:
            raise HTTPException(404, "no such revision")
        response = PlainTextResponse(detail.resource_diff)
        _harden(response)
        return response

    # -- fleet -----------------------------------------------------------------------------

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

    # -- audit log -------------------------------------------------------------------------

    @router.get("/audit")
    def audit_page(request: Request) -> Response:
        session = need(request)
        query, errors = parse_audit_query(request.query_params)
        try:
            records = audit.list(
                kind=query.kind,
                actor=query.actor,
                subject=query.subject,
                since=query.since,
                until=query.until,
                before_seq=query.before,
                limit=AUDIT_PAGE + 1,
            )
        except InvalidRecord as exc:
            errors.append(str(exc))
            records = []
        more = len(records) > AUDIT_PAGE
        records = records[:AUDIT_PAGE]
        chain.refresh_if_stale()
        rows = [(r, canonical_json(r.data).decode("utf-8")) for r in records]
        return render(
            request,
            "audit.html",
            session,
            rows=rows,
            query=query,
            errors=errors,
            next_link=query.link(before=records[-1].seq) if more and records else None,
            first_link=query.link() if query.before else None,
            badge=badge_of(chain.verdict()),
        )

    @router.get("/live/audit-badge")
    def audit_badge(request: Request) -> Response:
        session = need(request)
        chain.refresh_if_stale()
        return render(request, "_badge.html", session, badge=badge_of(chain.verdict()))

    @router.post("/audit/verify")
    async def audit_verify(request: Request) -> Response:
        await posted(request, Role.VIEWER)
        chain.refresh(full=True)
        return RedirectResponse("/audit", status_code=303)

    @router.get("/audit/export.jsonl")
    def audit_export(
        request: Request, start: str | None = None, end: str | None = None
    ) -> Response:
        session = need(request)
        first = parse_positive(start, default=1, maximum=2**62) or 1
        last = parse_positive(end, default=0, maximum=2**62) or None
        audit.append(
            session.principal.actor,
            "audit.exported",
            "",
            {"start": first, "end": last},
            now=cfg.clock(),
        )

        def lines() -> Iterator[bytes]:
            for record in audit.iter_records(start=first, end=last, batch=5000):
                yield canonical_json(record.to_dict()) + b"\n"

        return StreamingResponse(
            lines(),
            media_type="application/jsonl",
            headers={
                "Content-Disposition": 'attachment; filename="meshcd-audit.jsonl"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    # -- actions ---------------------------------------------------------------------------

    @router.get("/actions/{name}")
    def confirm_action(request: Request, name: str) -> Response:
        session = need(request, Role.OPERATOR)
        action = parse_action(name)
        if action is None:
            raise HTTPException(404, "no such action")
        overview = data.overview()
        if action not in available_actions(overview):
            return render(
                request,
                "error.html",
                session,
                status=409,
                title="Not now",
                message=f"{action.value.title()} does not apply to the current state.",
            )
        targets = data.rollback_targets(limit=50) if action is Action.ROLLBACK else []
        return render(
            request,
            "confirm.html",
            session,
            action=action,
            description=describe(action),
            ov=overview,
            targets=targets,
        )

    @router.post("/actions/{name}")
    async def do_action(request: Request, name: str) -> Response:
        session, form = await posted(request, Role.OPERATOR)
        action = parse_action(name)
        if action is None:
            raise HTTPException(404, "no such action")
        if form.get("confirm") != "yes":
            raise HTTPException(400, "the action was not confirmed")
        target: int | None = None
        if action is Action.ROLLBACK:
            raw = form.get("target", "")
            if not raw.isdigit():
                raise HTTPException(400, "choose the revision to roll back to")
            target = int(raw)
        actor = session.principal.actor
        reason = " ".join(form.get("reason", "").split())[:500]
        fast = action is Action.ROLLBACK and form.get("fast") == "yes"

        def run() -> Any:
            overview = data.overview()
            subject = f"revision {overview.rollout.revision_id}" if overview.rollout else ""
            if target is not None:
                subject = f"revision {target}"
            result = data.act(
                action, actor=actor, target_revision=target, reason=reason, fast=fast
            )
            audit.append(
                actor,
                f"action.{action.value}",
                subject,
                {
                    "ok": result.ok,
                    "message": result.message,
                    "target_revision": target,
                    "reason": reason,
                    "fast": fast,
                    "via": "page",
                    "role": session.principal.role.value,
                },
                now=cfg.clock(),
            )
            return result

        result = await run_in_threadpool(run)
        if not result.ok:
            return render(
                request, "error.html", session, status=409, title="Not done", message=result.message
            )
        return RedirectResponse("/?" + urlencode({"done": result.message}), status_code=303)

    # -- tokens (admin) --------------------------------------------------------------------

    @router.get("/tokens")
    def tokens_page(request: Request, notice: str | None = None) -> Response:
        session = need(request, Role.ADMIN)
        return render(
            request,
            "tokens.html",
            session,
            tokens=tokens.list(),
            created=None,
            notice=_NOTICES.get(notice or ""),
        )

    @router.post("/tokens")
    async def create_token(request: Request) -> Response:
        session, form = await posted(request, Role.ADMIN)
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
        session, _ = await posted(request, Role.ADMIN)
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
                    _harden(response)
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


def _revision_ctx(detail: RevisionDetail, fold_bytes: int) -> dict[str, Any]:
    return {
        "d": detail,
        "diff": fold_text(detail.resource_diff, fold_bytes),
        "blast": summarise_blast(detail.blast_radius),
        "charts": rollout_charts(detail),
    }


def rollout_charts(detail: RevisionDetail) -> list[Chart]:
    """Error rate, p99 and denials, canary vs baseline, with the strictest threshold any
    stage was judged by. Seconds without requests have no p99 (a gap, not a zero). When the
    points carry the denial rate (the controller's do), the third chart is the rate the
    judge tests; otherwise denials per second."""
    points = detail.series
    if not points:
        return []
    thresholds: dict[str, float] = {}
    if detail.rollout is not None:
        for stage in detail.rollout.stages:
            for key, value in stage.thresholds.items():
                thresholds[key] = min(thresholds.get(key, value), value)

    def side(get: Callable[[Signals], float | None], baseline: bool) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        for p in points:
            sig = p.baseline if baseline else p.canary
            value = get(sig) if sig is not None else None
            if value is not None:
                out.append((p.t, value))
        return out

    def pct(get: Callable[[Signals], float | None]) -> Callable[[Signals], float | None]:
        def scaled(s: Signals) -> float | None:
            v = get(s)
            return None if v is None else v * 100

        return scaled

    def limit(key: str, scale: float = 1.0) -> float | None:
        return thresholds[key] * scale if key in thresholds else None

    error_rate = pct(lambda s: s.error_rate)
    p99 = lambda s: s.p99_ms  # noqa: E731
    charts = [
        line_chart("Error rate", "%", side(error_rate, False), side(error_rate, True),
                   threshold=limit("error_rate", 100)),
        line_chart("p99 latency", "ms", side(p99, False), side(p99, True),
                   threshold=limit("p99_ms")),
    ]
    if all(p.canary.denial_rate is not None for p in points):
        denial_rate = pct(lambda s: s.denial_rate)
        charts.append(line_chart("Denial rate", "%", side(denial_rate, False),
                                 side(denial_rate, True), threshold=limit("denial_rate", 100)))
    else:
        denials = lambda s: s.denials  # noqa: E731
        charts.append(line_chart("Denials", "/s", side(denials, False), side(denials, True),
                                 threshold=limit("denials")))
    return charts


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


def _harden(response: Response) -> None:
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-cache")


def _safe_next(target: str) -> str:
    """Only local paths: an open redirect after sign-in would be a phishing aid."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"
