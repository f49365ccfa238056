"""The revisions list (filtered by outcome, paged by id), one revision's page (plan,
diff, blast radius, the rollout's charts) and its diff as text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response

from reconciler.pages.chart import Chart, line_chart
from reconciler.pages.folding import fold_text, summarise_blast
from reconciler.pages.paging import parse_positive
from reconciler.pages.readmodel import RevisionDetail, Signals
from reconciler.pages.routes.context import Pages, harden

REVISIONS_PAGE = 50
OUTCOMES = ("deployed", "deploying", "planned", "rejected", "failed", "invalid", "superseded")


def add(router: APIRouter, pages: Pages) -> None:
    data, need, render = pages.data, pages.need, pages.render

    @router.get("/revisions")
    def revisions_page(request: Request, outcome: str = "", before: str | None = None) -> Response:
        session = need(request)
        chosen = outcome if outcome in OUTCOMES else None
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
            outcomes=OUTCOMES,
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
            request, "revision.html", session, **revision_ctx(detail, pages.cfg.diff_fold_bytes)
        )

    @router.get("/revisions/{revision_id}/diff.txt")
    def revision_diff(request: Request, revision_id: int) -> Response:
        need(request)
        detail = data.revision(revision_id)
        if detail is None:
            raise HTTPException(404, "no such revision")
        response = PlainTextResponse(detail.resource_diff)
        harden(response)
        return response


def revision_ctx(detail: RevisionDetail, fold_bytes: int) -> dict[str, Any]:
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
