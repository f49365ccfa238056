"""The audit log: filtered and paged records, the chain's badge, a full verification on
request, and the export as JSON lines (itself audited)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from reconciler.audit import InvalidRecord, canonical_json
from reconciler.auth.roles import Role
from reconciler.pages.chain_status import badge_of
from reconciler.pages.paging import AUDIT_PAGE, parse_audit_query, parse_positive
from reconciler.pages.routes.context import Pages


def add(router: APIRouter, pages: Pages) -> None:
    audit, chain, need, render = pages.audit, pages.chain, pages.need, pages.render

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
        await pages.posted(request, Role.VIEWER)
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
            now=pages.cfg.clock(),
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
